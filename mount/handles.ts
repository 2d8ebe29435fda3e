/*
 * The table of open file handles, keyed by the number FUSE hands back to us on every call
 * (fuse_file_info.fh; fuse-native passes it as a uint32 and treats 0 as "none", so numbers
 * start at 1). A handle remembers its path because the cluster API is path-based: a rename
 * made through this mount moves the paths of the handles open on the renamed file or below
 * the renamed directory (`renamePath`), so their buffered writes and reads follow the file.
 * An open file that is unlinked or renamed over moves to an orphan name the same way
 * (mount/orphans.ts).
 */
import { isWithin } from '../common/paths';

/** The path `path` gets when `from` is renamed to `to`, or null when it is not affected. */
export function renamePath(path: string, from: string, to: string): string | null {
  if (path === from) return to;
  if (from !== '/' && isWithin(path, from)) return to + path.slice(from.length);
  return null;
}

/** Joins a directory path and an entry name. */
export function childPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export interface HandleBase {
  fh: number;
  path: string;
  ino: number;
  /** The path the kernel knows the file by: where it was opened, moved by renames made
   * through this mount only (`path` also follows the file when another mount moves it). */
  kernelPath?: string;
}

/** The most handles open at once; fuse-native's uint32 numbers give plenty of room. */
export const HANDLES_MAX = 1_000_000;

export class HandleTable<H extends HandleBase> {
  private readonly byFh = new Map<number, H>();
  private nextFh = 1;

  get size(): number {
    return this.byFh.size;
  }

  /** Adds a handle made by `make` with a fresh number; null when the table is full. */
  add(make: (fh: number) => H): H | null {
    if (this.byFh.size >= HANDLES_MAX) return null;
    while (this.byFh.has(this.nextFh) || this.nextFh === 0) this.nextFh = (this.nextFh + 1) >>> 0;
    const h = make(this.nextFh);
    this.byFh.set(h.fh, h);
    this.nextFh = (this.nextFh + 1) >>> 0;
    return h;
  }

  get(fh: number): H | undefined {
    return this.byFh.get(fh);
  }

  delete(fh: number): void {
    this.byFh.delete(fh);
  }

  all(): H[] {
    return [...this.byFh.values()];
  }

  /** Handles open on `path`, or on the same inode under another name (a hard link). */
  related(path: string, ino?: number): H[] {
    const out: H[] = [];
    for (const h of this.byFh.values()) if (h.path === path || (ino !== undefined && h.ino === ino)) out.push(h);
    return out;
  }

  /** Handles open on the file the kernel knows as `path`. */
  openAs(path: string): H[] {
    const out: H[] = [];
    for (const h of this.byFh.values()) if (h.kernelPath === path) out.push(h);
    return out;
  }

  /** Handles open on `dir` or anything below it. */
  within(dir: string): H[] {
    const out: H[] = [];
    for (const h of this.byFh.values()) if (isWithin(h.path, dir)) out.push(h);
    return out;
  }

  /** Moves the paths of the handles affected by renaming `from` to `to`. */
  rename(from: string, to: string): void {
    for (const h of this.byFh.values()) {
      const moved = renamePath(h.path, from, to);
      if (moved !== null) h.path = moved;
      const known = h.kernelPath === undefined ? null : renamePath(h.kernelPath, from, to);
      if (known !== null) h.kernelPath = known;
    }
  }
}
