/*
 * Errors to errno: the one place where dfs errors become the numbers FUSE returns to
 * applications (STYLE.md: map codes to errno only in mount/).
 *
 * A file system outcome (code FS_ERROR) carries the errno name a local file system would
 * give and travels unchanged to the application. Bad input that slipped past the local
 * checks is EINVAL, an over-long name ENAMETOOLONG, an over-limit body EFBIG, a cluster
 * with no room for the change (NO_SPACE) ENOSPC, as a full local disk gives. Everything
 * else (a cluster that cannot be reached, a deadline, an error we do not recognise) is EIO,
 * which is what a local disk gives when the device fails. The numbers come from
 * fuse-native's exported constants (negative Linux errno values); a name it does not list
 * falls back to Node's table of the same Linux values.
 */
import { constants as osConstants } from 'node:os';
import Fuse from 'fuse-native';
import { DfsError } from '../common/errors';

function fuseConstant(name: string): number | undefined {
  const v = (Fuse as unknown as Record<string, unknown>)[name];
  return typeof v === 'number' && v < 0 ? v : undefined;
}

/** The negative errno for a name such as 'ENOENT', or EIO for a name we do not know. */
export function errnoOf(name: string | undefined): number {
  if (name === undefined || !/^E[A-Z0-9]+$/.test(name)) return EIO;
  const fromFuse = fuseConstant(name);
  if (fromFuse !== undefined) return fromFuse;
  const fromOs = (osConstants.errno as Record<string, number | undefined>)[name];
  return typeof fromOs === 'number' && fromOs > 0 ? -fromOs : EIO;
}

export const EIO = fuseConstant('EIO') ?? -5;
export const ENOENT = errnoOf('ENOENT');
export const EINVAL = errnoOf('EINVAL');
export const EPERM = errnoOf('EPERM');
export const EBADF = errnoOf('EBADF');
export const EFBIG = errnoOf('EFBIG');
export const ENAMETOOLONG = errnoOf('ENAMETOOLONG');
export const EISDIR = errnoOf('EISDIR');
export const ENOSPC = errnoOf('ENOSPC');
export const ENOTDIR = errnoOf('ENOTDIR');

/** The name of a negative errno ('ENOENT' for ENOENT), for a metrics label: a name from
 * Linux's fixed table, or 'EUNKNOWN' for a number it does not hold. */
export function errnoName(code: number): string {
  for (const [name, value] of Object.entries(osConstants.errno)) {
    if (value === -code) return name;
  }
  return 'EUNKNOWN';
}

/** Maps any error thrown while serving a FUSE call to the negative errno FUSE returns. */
export function errnoOfError(err: unknown): number {
  if (err instanceof DfsError) {
    switch (err.code) {
      case 'FS_ERROR':
        return errnoOf(err.errno);
      case 'NAME_TOO_LONG':
        return ENAMETOOLONG;
      case 'BAD_PATH':
      case 'BAD_REQUEST':
        return EINVAL;
      case 'TOO_LARGE':
        return EFBIG;
      case 'NO_SPACE':
        return ENOSPC;
      case 'FORBIDDEN':
        // The mount's certificate is not one the proxy serves (docs/security.md).
        return errnoOf('EACCES');
      default:
        return EIO;
    }
  }
  return EIO;
}

/**
 * The errno that a failed background write reports at the next write, flush, fsync or
 * close of its handle. The data was already acknowledged to the application, so what it
 * learns now is that the data is lost: EIO, as Linux reports a writeback error, except for
 * the outcomes that name the reason a local file system would also report late (no space,
 * over quota, file too big).
 */
export function errnoOfLostWrite(err: unknown): number {
  if (err instanceof DfsError && err.code === 'NO_SPACE') return ENOSPC;
  if (err instanceof DfsError && err.code === 'FS_ERROR') {
    if (err.errno === 'ENOSPC' || err.errno === 'EDQUOT' || err.errno === 'EFBIG') return errnoOf(err.errno);
  }
  return EIO;
}
