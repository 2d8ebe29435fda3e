/*
 * Open files that lose their last name: POSIX keeps an unlinked file readable and writable
 * through the descriptors open on it until the last one closes, and a rename over a file
 * that another process holds open replaces the name atomically while the holder keeps the
 * old contents.
 *
 * libfuse 2's high-level API does this by "hiding": when the kernel unlinks or renames over
 * a name whose node has open handles, libfuse first renames that name to
 * `.fuse_hidden<node><counter>` in the same directory, sends every later call on the open
 * file with that name, and unlinks it after the last release. Passed to the cluster as is,
 * that leaves a visible `.fuse_hidden…` file behind (an `ls` shows it, `rmdir` of its
 * directory fails with ENOTEMPTY), and a rename over an open file becomes two ops with a
 * moment between them in which the name does not exist at all.
 * (libfuse's `hard_remove` option avoids the hiding but loses the file instead: calls that
 * libfuse routes by path, stat and chmod among them, then fail with ENOENT.)
 *
 * So dfs-mount takes the hiding rename over. The file moves into a directory that the
 * mount never shows, `/.dfs-orphans` at the root of the cluster, under a name of its own
 * (`<host>.<pid>.<n>`), and the hidden name libfuse made up maps to it for every later call.
 * How it moves depends on what the application asked for, which the mount reads from the
 * calling thread's current system call (/proc/<tid>/syscall, proc(5)); the thread is
 * blocked in it while the FUSE request is served:
 *   - unlink: one `rename` op moves the name to the orphan directory; the name is gone
 *     cluster-wide at once;
 *   - rename over an open target: one `link` op gives the file a second name in the orphan
 *     directory, and the name stays; libfuse's next call is the rename itself, which then
 *     replaces the name atomically, as one op (if that rename fails, the name simply stays
 *     and the orphan link goes at the last close).
 * Where /proc cannot tell (an unknown architecture, a process the mount may not inspect),
 * the unlink way is taken: always correct, with the non-atomic moment for a rename.
 *
 * When the last handle open on an orphan closes, the mount unlinks it; libfuse's own unlink
 * of the hidden name then has nothing left to do. An orphan keeps one link the application
 * never made, so fstat reports the link count minus one (0 for an unlinked file, as on a
 * local disk). A mount that dies leaves its orphans behind; the next mount on the same host
 * removes those of processes that no longer run.
 *
 * Limits: an unlinked file stays open only on the mount that has it open (the issue's
 * scope, as NFS's "silly rename" keeps it only on its client); another mount's descriptor
 * loses it.
 */
import { arch, hostname } from 'node:os';
import { isWithin } from '../common/paths';
import { renamePath } from './handles';
import { blockedSyscall } from './proc-syscall';

/** The cluster directory where the open files that lost their names are kept. */
export const ORPHANS_DIR = '/.dfs-orphans';
/** libfuse 2's hide_node names: `.fuse_hidden` and two 8-digit hex numbers. */
const HIDDEN_NAME = /^\.fuse_hidden[0-9a-f]{16}$/;
/** Hidden names whose orphan is already gone, remembered until libfuse unlinks them (and,
 * for files a rename replaced, the names they were replaced at). */
const RETIRED_NAMES_MAX = 1024;

/** Sets `key` in `map`, dropping the oldest entry when it holds RETIRED_NAMES_MAX. */
function addBounded<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  if (map.size >= RETIRED_NAMES_MAX) map.delete(map.keys().next().value!);
  map.set(key, value);
}

/** rename(2), renameat(2) and renameat2(2) by architecture (the kernel's syscall tables). */
const RENAME_SYSCALLS: Record<string, number[]> = {
  x64: [82, 264, 316],
  arm64: [38, 276],
};

/** Whether the thread `tid` is blocked in a rename system call right now; null when /proc
 * cannot say. */
export function inRenameSyscall(tid: number): boolean | null {
  const numbers = RENAME_SYSCALLS[arch()];
  const call = numbers ? blockedSyscall(tid) : null;
  return numbers && call ? numbers.includes(call.number) : null;
}

/** The last component of a path. */
function baseName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

export function isReservedPath(path: string): boolean {
  return path === ORPHANS_DIR || isWithin(path, ORPHANS_DIR);
}

/** The name prefix of the orphans made by the process `pid` on this host. */
export function orphanPrefix(pid: number, host = hostname()): string {
  return `${host.replace(/[^A-Za-z0-9_-]/g, '_')}.${pid}.`;
}

/** The pid that made an orphan, when it was made on this host; null otherwise. */
export function orphanOwner(name: string, host = hostname()): number | null {
  const prefix = orphanPrefix(0, host).slice(0, -2); // "<host>."
  if (!name.startsWith(prefix)) return null;
  const m = /^(\d+)\.\d+$/.exec(name.slice(prefix.length));
  return m ? Number(m[1]) : null;
}

export class OrphanTable {
  /** hidden path → orphan path */
  private readonly byHidden = new Map<string, string>();
  /** hidden paths whose orphan the mount removed before libfuse unlinked them */
  private readonly retired = new Set<string>();
  /** hidden path → the path a rename replaced the hidden file at, for the newest hides */
  private readonly renamedOver = new Map<string, string>();
  private count = 0;

  constructor(private readonly prefix: string) {}

  /** A fresh orphan path. */
  nextPath(): string {
    this.count++;
    return `${ORPHANS_DIR}/${this.prefix}${this.count}`;
  }

  /** Whether `path` is a name libfuse made up to hide an open file. */
  static isHiddenName(path: string): boolean {
    return HIDDEN_NAME.test(baseName(path));
  }

  /** libfuse hid the open file now kept as `orphan` under `hiddenPath`; `renamedOver` is
   * the path it was hidden from when a rename replaced it there, null for an unlink. */
  add(hiddenPath: string, orphan: string, renamedOver: string | null): void {
    this.retired.delete(hiddenPath);
    this.byHidden.set(hiddenPath, orphan);
    if (renamedOver !== null) addBounded(this.renamedOver, hiddenPath, renamedOver);
  }

  /** What a path from the kernel stands for: the orphan of a hidden name; once that is
   * gone, for a file a rename replaced, the path it was replaced at (a call that was on its
   * way to the replaced file when its last descriptor closed reaches what the name holds
   * now, as mount/replaced-alias.ts does for a file nobody had open); otherwise the path
   * itself. Hidden paths are kept whole and follow the renames made through this mount
   * (`rename`), as libfuse's do. */
  resolve(path: string): string {
    if (!HIDDEN_NAME.test(baseName(path))) return path;
    return this.byHidden.get(path) ?? this.renamedOver.get(path) ?? path;
  }

  /** resolve() for a path a rename or link takes from: a hidden name only while its orphan
   * exists (moving the name it was replaced at instead would move another file). */
  resolveSource(path: string): string {
    return this.byHidden.get(path) ?? path;
  }

  /** The orphan of a hidden name while it exists. */
  orphanOf(hiddenPath: string): string | undefined {
    return this.byHidden.get(hiddenPath);
  }

  /** Whether `hiddenPath` names a file a rename replaced (its orphan may be gone). */
  wasRenamedOver(hiddenPath: string): boolean {
    return this.renamedOver.has(hiddenPath);
  }

  isOrphan(path: string): boolean {
    return isWithin(path, ORPHANS_DIR);
  }

  /** Forgets an orphan's hidden name outright (libfuse is unlinking that name now). */
  forget(orphan: string): void {
    for (const [hidden, o] of this.byHidden) if (o === orphan) this.byHidden.delete(hidden);
  }

  /** The hidden name of an orphan is done with: its file was removed at the last close. */
  retire(orphan: string): void {
    for (const [hidden, o] of this.byHidden) {
      if (o !== orphan) continue;
      this.byHidden.delete(hidden);
      if (this.retired.size >= RETIRED_NAMES_MAX) this.retired.delete(this.retired.values().next().value!);
      this.retired.add(hidden);
    }
  }

  /** libfuse unlinks a hidden name after the last release: true when that name belonged to
   * an orphan the mount has already removed (nothing left to do), and forgets it. */
  takeRetired(hiddenPath: string): boolean {
    return this.retired.delete(hiddenPath);
  }

  /** A rename through this mount moved `from` to `to`: the hidden names below it moved too. */
  rename(from: string, to: string): void {
    const moved = (p: string): string => renamePath(p, from, to) ?? p;
    for (const table of [this.byHidden, this.renamedOver]) {
      for (const [hidden, value] of [...table]) {
        const now = moved(hidden);
        if (now === hidden && moved(value) === value) continue;
        table.delete(hidden);
        table.set(now, table === this.renamedOver ? moved(value) : value);
      }
    }
    for (const hidden of [...this.retired]) {
      const now = moved(hidden);
      if (now === hidden) continue;
      this.retired.delete(hidden);
      this.retired.add(now);
    }
  }

  get size(): number {
    return this.byHidden.size;
  }
}
