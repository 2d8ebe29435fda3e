/*
 * Extended attributes on brick files, without following symlinks. A thin layer over
 * @napi-rs/xattr whose errors carry only the OS errno number in their message ("No data
 * available (os error 61)"): here they become errors with the usual `code` ('ENODATA'), so
 * the brick maps them to errno outcomes like every other file system error.
 */
import { constants as osConstants } from 'node:os';
import * as napi from '@napi-rs/xattr';

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

/** The value, or null when the attribute is absent. (A missing file is also null: callers
 * lstat first.) */
export function xattrGet(path: string, name: string): Buffer | null {
  return withErrno(() => napi.getAttributeSync(path, name));
}

export function xattrSet(path: string, name: string, value: Uint8Array): void {
  withErrno(() => napi.setAttributeSync(path, name, value));
}

export function xattrRemove(path: string, name: string): void {
  withErrno(() => napi.removeAttributeSync(path, name));
}

export function xattrList(path: string): string[] {
  return withErrno(() => napi.listAttributesSync(path));
}
