/*
 * Operational errors and their mappings.
 *
 * One error class with a code union (STYLE.md): services throw DfsError, the Hono edge maps
 * the code to an HTTP status (`httpStatusOf`), and only mount/ maps it to an errno. A file
 * system outcome such as "no such file" is code FS_ERROR with the errno name that a local
 * file system would give, so it travels unchanged from the brick to the application.
 * Broken invariants are not DfsErrors: they are assertions and crash the process.
 */

export type ErrorCode =
  | 'FS_ERROR' // a file system outcome; `errno` says which
  | 'BAD_REQUEST' // malformed body, missing or invalid field
  | 'BAD_PATH' // `..`, `.`, NUL, relative, empty component
  | 'NAME_TOO_LONG' // component > 255 bytes or path > 4095 bytes
  | 'TOO_LARGE' // body over the configured limit
  | 'NOT_PRIMARY' // a mutation reached a node that is not the primary of its epoch
  | 'STALE_EPOCH' // the sender's epoch is older than the receiver's
  | 'SLOT_TAKEN' // the sequence ID already holds an op (or a no-op): sequence it again
  | 'GAP' // a replication batch does not continue the receiver's log
  | 'BARRIER_TIMEOUT' // a read could not reach its barrier in time
  | 'UNAVAILABLE' // a dependency (Redis, primary, replicas) cannot be reached
  | 'TIMEOUT' // a deadline passed
  | 'NO_SPACE' // a node has no room to log the op (docs/space.md): ENOSPC at the mount
  | 'FORBIDDEN' // the caller's certificate does not allow this endpoint (docs/security.md)
  | 'INTERNAL';

export class DfsError extends Error {
  readonly code: ErrorCode;
  readonly errno?: string;

  constructor(code: ErrorCode, message: string, errno?: string) {
    super(message);
    this.name = 'DfsError';
    this.code = code;
    if (errno !== undefined) this.errno = errno;
  }

  toJSON(): ErrorBody {
    return { code: this.code, message: this.message, ...(this.errno ? { errno: this.errno } : {}) };
  }
}

/** The JSON body of every error response, from proxy and node alike. */
export interface ErrorBody {
  code: ErrorCode;
  message: string;
  errno?: string;
}

export function fsError(errno: string, message = errno): DfsError {
  return new DfsError('FS_ERROR', message, errno);
}

const FS_ERRNO_STATUS: Record<string, number> = { ENOENT: 404, EACCES: 403, EPERM: 403 };

export function httpStatusOf(err: DfsError): number {
  switch (err.code) {
    case 'FS_ERROR':
      return FS_ERRNO_STATUS[err.errno ?? ''] ?? 409;
    case 'BAD_REQUEST':
    case 'BAD_PATH':
    case 'NAME_TOO_LONG':
      return 400;
    case 'TOO_LARGE':
      return 413;
    case 'NOT_PRIMARY':
    case 'STALE_EPOCH':
      return 421; // Misdirected Request: the sender should refresh membership and retry
    case 'SLOT_TAKEN':
    case 'GAP':
      return 409; // Conflict: the sender re-sequences (SLOT_TAKEN) or resends from the receiver's log end (GAP)
    case 'BARRIER_TIMEOUT':
    case 'UNAVAILABLE':
      return 503;
    case 'TIMEOUT':
      return 504;
    case 'NO_SPACE':
      return 507; // Insufficient Storage (RFC 4918 §11.5)
    case 'FORBIDDEN':
      return 403;
    case 'INTERNAL':
      return 500;
  }
}

/** Rebuilds a DfsError from an error response body, tolerating bodies that are not ours. */
export function errorFromBody(status: number, body: unknown): DfsError {
  if (body && typeof body === 'object' && 'code' in body && typeof (body as ErrorBody).code === 'string') {
    const b = body as ErrorBody;
    return new DfsError(b.code, b.message ?? b.code, b.errno);
  }
  return new DfsError(status >= 500 ? 'UNAVAILABLE' : 'BAD_REQUEST', `HTTP ${status}`);
}

/** Node's fs errors carry `code: 'ENOENT'`; anything else is not a file system outcome. */
export function isErrnoException(e: unknown): e is NodeJS.ErrnoException & { code: string } {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && /^E[A-Z0-9]+$/.test((e as NodeJS.ErrnoException).code!);
}
