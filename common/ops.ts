/*
 * The op: one mutation of the file tree, as it is sequenced, logged, replicated and applied.
 *
 * Every input that the result depends on is in the op (DESIGN.md, Writes): the time is
 * stamped once by the proxy that sequences it (`timeMs`), ownership comes from the client,
 * so every node that applies the op reaches the same brick and the same errno. A write's
 * bytes travel beside the op in the frame (common/frame.ts), never inside the JSON.
 */
import { z } from 'zod';
import { DfsError } from './errors';
import { CallerSchema } from './identity';
import { isWireString, wireByteLength } from './names';
import { validateEntryPath, validatePath } from './paths';
import { SYMLINK_TARGET_BYTES_MAX, WRITE_BYTES_MAX, WRITE_EXTENTS_MAX, XATTR_NAME_BYTES_MAX, XATTR_VALUE_BYTES_MAX } from './limits';

const path = z.string();
const mode = z.number().int().min(0).max(0o7777);
const id = z.number().int().min(0).max(0xffffffff);
const timeMs = z.number().finite();
const nsec = z.number().int().min(0).max(999_999);
const offset = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** The inode an op on an open file addresses (storage/inode-index.ts): when present the op
 * applies wherever that inode is now, and `path` is only where to look first. */
const ino = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional();
/** One range of a write with extents: [offset, length] (validateWriteExtents). */
const extent = z.tuple([offset, z.number().int().min(1).max(WRITE_BYTES_MAX)]);

export const OpSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('mkdir'), path, mode, uid: id, gid: id }),
  // `exclusive` is O_EXCL: EEXIST if the path exists; otherwise an existing file is kept.
  z.object({ type: z.literal('create'), path, mode, uid: id, gid: id, exclusive: z.boolean() }),
  // Without `extents` the data is written at `offset`. With them, the data is the extents'
  // bytes concatenated, each written at its own offset in order (one op for many small
  // dirty ranges of a mount's write buffer); `offset` is then the first extent's.
  // With `append` (an O_APPEND descriptor's writes) the data goes at the end of the file as
  // it stands when the op is applied, the same on every node; `offset` is then 0 and there
  // are no extents.
  z.object({ type: z.literal('write'), path, ino, offset, extents: z.array(extent).min(1).max(WRITE_EXTENTS_MAX).optional(), append: z.literal(true).optional() }),
  z.object({ type: z.literal('truncate'), path, ino, size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) }),
  // fallocate(2): `mode` is the FALLOC_FL_* bits, one of FALLOCATE_MODES.
  z.object({ type: z.literal('fallocate'), path, ino, mode: z.number().int().min(0).max(0xffff), offset, size: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER) }),
  z.object({ type: z.literal('unlink'), path }),
  z.object({ type: z.literal('rmdir'), path }),
  z.object({ type: z.literal('rename'), from: path, to: path }),
  z.object({ type: z.literal('symlink'), path, target: z.string(), uid: id, gid: id }),
  z.object({ type: z.literal('link'), from: path, to: path }),
  z.object({ type: z.literal('chmod'), path, ino, mode }),
  z.object({ type: z.literal('chown'), path, ino, uid: id, gid: id }),
  // Each time: ms since the epoch, 'now' (the op's own time: UTIME_NOW) or null (left as it
  // is: UTIME_OMIT); a time in ms may add nanoseconds within its millisecond (xtimeNsec), so
  // that utimensat(2)'s nanoseconds are kept exactly.
  z.object({
    type: z.literal('utimens'),
    path,
    ino,
    atimeMs: z.union([timeMs, z.literal('now'), z.null()]),
    mtimeMs: z.union([timeMs, z.literal('now'), z.null()]),
    atimeNsec: nsec.optional(),
    mtimeNsec: nsec.optional(),
  }),
  // The file was read (or the directory listed): atime moves to the op's time if relatime
  // says so (relatimeDue); nothing else changes, not even ctime.
  z.object({ type: z.literal('atime'), path, ino }),
  // Only ctime moves to the op's time: chown(f, -1, -1), which POSIX says marks it.
  z.object({ type: z.literal('ctime'), path, ino }),
  // `mode` includes the file type (S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK or S_IFREG).
  z.object({ type: z.literal('mknod'), path, mode: z.number().int().min(0).max(0o177777), rdev: z.number().int().min(0).max(0xffffffff), uid: id, gid: id }),
  // The value travels as the frame's data. `flags`: 0, XATTR_CREATE (1) or XATTR_REPLACE (2).
  z.object({ type: z.literal('setxattr'), path, ino, name: z.string(), flags: z.union([z.literal(0), z.literal(1), z.literal(2)]) }),
  z.object({ type: z.literal('removexattr'), path, ino, name: z.string() }),
  // A slot filled with nothing: a hole claimed by the primary, or a retry's duplicate.
  z.object({ type: z.literal('noop') }),
]);

export type Op = z.infer<typeof OpSchema>;

/** How old an atime may get before a read moves it even when it is after mtime and ctime. */
export const RELATIME_INTERVAL_MS = 24 * 60 * 60 * 1000;

/** Whether a read at `nowMs` moves atime, as Linux's relatime (the default mount option)
 * decides: when atime is not after mtime or ctime, or is a day old. */
export function relatimeDue(times: { atimeMs: number; mtimeMs: number; ctimeMs: number }, nowMs: number): boolean {
  return times.atimeMs <= times.mtimeMs || times.atimeMs <= times.ctimeMs || nowMs - times.atimeMs >= RELATIME_INTERVAL_MS;
}
export type OpType = Op['type'];

/** What a client sends: the op, its request ID (exactly-once retries) and whom it acts as
 * (common/identity.ts; without it the op is applied as root's: the mount's own, checked by
 * its kernel, and the cluster's; issue 13 item 2 makes the proxy fill it from the client's
 * credential). */
export const ClientOpHeaderSchema = z.object({ reqId: z.string().min(1).max(128), op: OpSchema, caller: CallerSchema.optional() });
export type ClientOpHeader = z.infer<typeof ClientOpHeaderSchema>;

/** What the proxy sends to the primary, and what every log record holds. */
export const SequencedOpHeaderSchema = z.object({
  epoch: z.number().int().min(0),
  seq: z.number().int().min(1),
  reqId: z.string().max(128),
  timeMs,
  op: OpSchema,
  /** Whom the op acts as: every node checks its permissions at apply (storage/permissions.ts). */
  caller: CallerSchema.optional(),
});
export type SequencedOpHeader = z.infer<typeof SequencedOpHeaderSchema>;

/**
 * Checks an op beyond its shape: paths are valid, the data length fits the op. Throws a
 * DfsError (400) so that bad input is refused before a sequence ID is taken.
 */
/** File types a mknod may create (the S_IFMT values of Linux). */
export const S_IFMT = 0o170000;
export const MKNOD_TYPES = new Set([0o100000, 0o010000, 0o020000, 0o060000, 0o140000]);

/** The extended attribute namespaces the cluster stores: `user.` for everyone, `trusted.`
 * for root (the kernel lets only CAP_SYS_ADMIN reach it, before the mount sees the call).
 * `security.` and `system.` (ACLs) are not stored. */
export const XATTR_NAMESPACES = ['user.', 'trusted.'] as const;

/** The namespace of an attribute name the cluster stores, or null. */
export function xattrNamespaceOf(name: string): (typeof XATTR_NAMESPACES)[number] | null {
  for (const ns of XATTR_NAMESPACES) if (name.startsWith(ns) && name.length > ns.length) return ns;
  return null;
}

/** Extended attribute names clients may use (XATTR_NAMESPACES). */
export function validateXattrName(name: string): void {
  if (name.length === 0 || name.includes('\0')) throw new DfsError('BAD_REQUEST', 'attribute name is empty or has NUL');
  if (Buffer.byteLength(name) > XATTR_NAME_BYTES_MAX) throw new DfsError('FS_ERROR', 'attribute name is too long', 'ERANGE');
  if (xattrNamespaceOf(name) === null) throw new DfsError('FS_ERROR', 'only user.* and trusted.* attributes are supported', 'EOPNOTSUPP');
}

/** fallocate(2)'s mode bits (linux/falloc.h). */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;
/**
 * The fallocate modes dfs applies, each the same on every node: allocate (growing the
 * file unless KEEP_SIZE), punch a hole (PUNCH_HOLE needs KEEP_SIZE, as in Linux), zero a
 * range. Any other (COLLAPSE_RANGE, INSERT_RANGE, UNSHARE_RANGE…) is EOPNOTSUPP, as a file
 * system that lacks it answers.
 */
export const FALLOCATE_MODES: ReadonlySet<number> = new Set([
  0,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_ZERO_RANGE,
  FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
]);

export function validateOp(op: Op, dataBytes: number): void {
  if (op.type !== 'write' && op.type !== 'setxattr' && dataBytes !== 0) throw new DfsError('BAD_REQUEST', `${op.type} carries no data`);
  switch (op.type) {
    case 'noop':
      return;
    case 'rename':
    case 'link':
      validateEntryPath(op.from, 'from');
      validateEntryPath(op.to, 'to');
      return;
    case 'symlink':
      validateEntryPath(op.path);
      if (op.target.length === 0 || op.target.includes('\0')) throw new DfsError('BAD_PATH', 'symlink target is empty or has NUL');
      if (!isWireString(op.target)) throw new DfsError('BAD_PATH', 'symlink target has a lone surrogate that stands for no byte');
      if (wireByteLength(op.target) > SYMLINK_TARGET_BYTES_MAX) throw new DfsError('NAME_TOO_LONG', 'symlink target is too long');
      return;
    case 'write':
      validateEntryPath(op.path);
      if (dataBytes > WRITE_BYTES_MAX) throw new DfsError('TOO_LARGE', `a write carries at most ${WRITE_BYTES_MAX} bytes`);
      if (op.extents) validateWriteExtents(op.offset, op.extents, dataBytes);
      if (op.append && (op.extents || op.offset !== 0)) throw new DfsError('BAD_REQUEST', 'an append has no offset and no extents');
      return;
    case 'chmod':
    case 'chown':
    case 'utimens':
    case 'atime':
    case 'ctime':
      validatePath(op.path); // the root's attributes may change
      return;
    case 'mknod':
      validateEntryPath(op.path);
      if (!MKNOD_TYPES.has(op.mode & S_IFMT)) throw new DfsError('FS_ERROR', 'mknod of an unknown file type', 'EINVAL');
      return;
    case 'setxattr':
      validatePath(op.path);
      validateXattrName(op.name);
      if (dataBytes > XATTR_VALUE_BYTES_MAX) throw new DfsError('FS_ERROR', `an attribute value holds at most ${XATTR_VALUE_BYTES_MAX} bytes`, 'E2BIG');
      return;
    case 'removexattr':
      validatePath(op.path);
      validateXattrName(op.name);
      return;
    case 'fallocate':
      validateEntryPath(op.path);
      if (!FALLOCATE_MODES.has(op.mode)) throw new DfsError('FS_ERROR', `fallocate mode ${op.mode.toString(16)} is not supported`, 'EOPNOTSUPP');
      if (!Number.isSafeInteger(op.offset + op.size)) throw new DfsError('FS_ERROR', 'fallocate range ends past the largest file offset', 'EFBIG');
      return;
    default:
      validateEntryPath(op.path);
  }
}

/**
 * The extents of a write: at least one and at most WRITE_EXTENTS_MAX, the first at the
 * op's `offset`, each non-empty, sorted and not overlapping (so that the order they are
 * written in never matters), ending within a safe integer, and their lengths adding up to
 * the data. Throws a DfsError (400) otherwise.
 */
export function validateWriteExtents(offset: number, extents: ReadonlyArray<readonly [number, number]>, dataBytes: number): void {
  if (extents.length === 0 || extents.length > WRITE_EXTENTS_MAX) throw new DfsError('BAD_REQUEST', `a write carries 1 to ${WRITE_EXTENTS_MAX} extents`);
  if (extents[0]![0] !== offset) throw new DfsError('BAD_REQUEST', "a write's first extent is not at its offset");
  let end = 0;
  let total = 0;
  for (const [at, size] of extents) {
    if (!Number.isSafeInteger(at) || !Number.isSafeInteger(size) || at < 0 || size < 1) throw new DfsError('BAD_REQUEST', 'a write extent is not [offset ≥ 0, length ≥ 1]');
    if (at < end) throw new DfsError('BAD_REQUEST', "a write's extents are not sorted or overlap");
    end = at + size;
    if (!Number.isSafeInteger(end)) throw new DfsError('BAD_REQUEST', 'a write extent ends past the largest file offset');
    total += size;
  }
  if (total !== dataBytes) throw new DfsError('BAD_REQUEST', `a write's extents hold ${total} bytes, its data ${dataBytes}`);
}

export function parseClientOpHeader(json: unknown): ClientOpHeader {
  const r = ClientOpHeaderSchema.safeParse(json);
  if (!r.success) throw new DfsError('BAD_REQUEST', `invalid op: ${r.error.issues[0]?.message ?? 'malformed'}`);
  return r.data;
}

export function parseSequencedOpHeader(json: unknown): SequencedOpHeader {
  const r = SequencedOpHeaderSchema.safeParse(json);
  if (!r.success) throw new DfsError('BAD_REQUEST', `invalid sequenced op: ${r.error.issues[0]?.message ?? 'malformed'}`);
  return r.data;
}
