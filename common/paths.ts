/*
 * Path validation: the one place where a path from the network is checked (DESIGN.md,
 * Security). A valid path is absolute, has no empty, `.` or `..` component, no NUL, no
 * component over NAME_BYTES_MAX bytes and is at most PATH_BYTES_MAX bytes long. Anything
 * else is refused before it reaches a sequencer or a disk; storage/brick.ts additionally
 * keeps every resolved path inside the brick. Lengths count the bytes the path stands for
 * (a name is any bytes but '/' and NUL: common/names.ts); a string that stands for no byte
 * string is refused.
 */
import { DfsError } from './errors';
import { NAME_BYTES_MAX, PATH_BYTES_MAX } from './limits';
import { isWireString, wireByteLength } from './names';

export function validatePath(path: unknown, what = 'path'): string {
  if (typeof path !== 'string' || path.length === 0) throw new DfsError('BAD_PATH', `${what} is missing`);
  if (path.includes('\0')) throw new DfsError('BAD_PATH', `${what} contains NUL`);
  if (!path.startsWith('/')) throw new DfsError('BAD_PATH', `${what} must be absolute`);
  if (!isWireString(path)) throw new DfsError('BAD_PATH', `${what} has a lone surrogate that stands for no byte`);
  if (wireByteLength(path) > PATH_BYTES_MAX) {
    throw new DfsError('NAME_TOO_LONG', `${what} is longer than ${PATH_BYTES_MAX} bytes`);
  }
  if (path === '/') return path;
  const parts = path.slice(1).split('/');
  for (const part of parts) {
    if (part === '' || part === '.' || part === '..') {
      throw new DfsError('BAD_PATH', `${what} has an empty, '.' or '..' component`);
    }
    if (wireByteLength(part) > NAME_BYTES_MAX) {
      throw new DfsError('NAME_TOO_LONG', `${what} has a component longer than ${NAME_BYTES_MAX} bytes`);
    }
  }
  return path;
}

/** A path that names an entry (anything but the root itself). */
export function validateEntryPath(path: unknown, what = 'path'): string {
  const p = validatePath(path, what);
  if (p === '/') throw new DfsError('BAD_PATH', `${what} must not be the root`);
  return p;
}

export function parentOf(path: string): string {
  const i = path.lastIndexOf('/');
  return i <= 0 ? '/' : path.slice(0, i);
}

/** True when `path` is `dir` or lies below it. */
export function isWithin(path: string, dir: string): boolean {
  return path === dir || dir === '/' || path.startsWith(dir + '/');
}
