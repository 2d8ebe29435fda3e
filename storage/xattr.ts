/*
 * Extended attributes on brick files, without following symlinks. A thin layer over
 * @napi-rs/xattr whose errors carry only the OS errno number in their message ("No data
 * available (os error 61)"): here they become errors with the usual `code` ('ENODATA'), so
 * the brick maps them to errno outcomes like every other file system error.
 *
 * Paths are wire strings (common/names.ts). @napi-rs/xattr takes text paths only, so a
 * path whose bytes are not UTF-8 is reached through a text path to the same inode, for the
 * moment of the call: a directory as `/proc/self/fd/N/.` (N open on it; the magic link is
 * not the last component, so the l* calls act on the directory), anything else through a
 * second hard link in the scratch directory (useXattrScratchDir), removed right after. The
 * scratch directory sits beside the brick on the same file system, never inside it; a link
 * left there by a crash is removed when the brick is opened again.
 */
import fs, { constants as C } from 'node:fs';
import { constants as osConstants } from 'node:os';
import nodePath from 'node:path';
import * as napi from '@napi-rs/xattr';
import { isPlainText, wireToBytes } from '../common/names';

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([name, n]) => [n, name]));

function withErrno<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const m = /\(os error (\d+)\)/.exec((e as Error).message ?? '');
    const name = m ? ERRNO_NAMES.get(Number(m[1])) : undefined;
    if (!name) throw e;
    const err = new Error((e as Error).message) as NodeJS.ErrnoException;
    err.code = name;
    err.errno = -Number(m![1]);
    throw err;
  }
}

let scratchDir: string | null = null;
let scratchCount = 0;

/** Where the second names of non-UTF-8 paths go: made if missing, and emptied. */
export function useXattrScratchDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const name of fs.readdirSync(dir)) fs.unlinkSync(nodePath.join(dir, name));
  scratchDir = dir;
}

/** Runs `fn` with a text path to the inode at the wire path `path`. */
function viaTextPath<T>(path: string, fn: (textPath: string) => T): T {
  if (isPlainText(path)) return fn(path);
  const bytes = wireToBytes(path);
  if (fs.lstatSync(bytes).isDirectory()) {
    const fd = fs.openSync(bytes, C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      return fn(`/proc/self/fd/${fd}/.`);
    } finally {
      fs.closeSync(fd);
    }
  }
  if (scratchDir === null) throw new Error('no scratch directory for extended attributes of non-UTF-8 paths (useXattrScratchDir)');
  const link = nodePath.join(scratchDir, `${process.pid}.${++scratchCount}`);
  fs.linkSync(bytes, link);
  try {
    return fn(link);
  } finally {
    fs.unlinkSync(link);
  }
}

/** The value, or null when the attribute is absent. (A missing file is also null: callers
 * lstat first.) */
export function xattrGet(path: string, name: string): Buffer | null {
  return withErrno(() => viaTextPath(path, (p) => napi.getAttributeSync(p, name)));
}

export function xattrSet(path: string, name: string, value: Uint8Array): void {
  withErrno(() => viaTextPath(path, (p) => napi.setAttributeSync(p, name, value)));
}

export function xattrRemove(path: string, name: string): void {
  withErrno(() => viaTextPath(path, (p) => napi.removeAttributeSync(p, name)));
}

export function xattrList(path: string): string[] {
  return withErrno(() => viaTextPath(path, (p) => napi.listAttributesSync(p)));
}
