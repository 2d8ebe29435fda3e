/*
 * Paths deeper than PATH_MAX on a storage node's disk. Linux limits the path of one call to
 * 4095 bytes, not the depth of a tree: from inside a directory a client may build trees far
 * deeper (mkdir and chdir, step by step), and a brick mirrors them (DESIGN.md, The brick).
 * A brick therefore cannot always hand the OS one path from its root. This module turns a
 * cluster path into a path the OS takes, whatever its depth:
 *
 * - A path whose local form (under the base, relative or absolute) fits in PATH_MAX is
 *   handed over as it is: the common case, and it costs nothing more than before.
 * - A longer one is reached through directory descriptors. Its directories are walked one
 *   component at a time, each opened with O_PATH | O_DIRECTORY | O_NOFOLLOW through
 *   `/proc/self/fd/<parent's fd>/<name>` (so every call's path is short), and the answer is
 *   `/proc/self/fd/<fd of its directory>/<last name>`. The kernel resolves the magic link
 *   `/proc/self/fd/N` to the open directory itself, not to a path, so every path-taking
 *   call works on it (open, lstat, mkdir, rename, link, the extended attribute calls of
 *   @napi-rs/xattr…), and the last component is still not followed by the l* calls and
 *   O_NOFOLLOW. O_NOFOLLOW on each directory also means no symlink in the brick can lead a
 *   deep path anywhere: one met on the way is ELOOP, as Brick.checkParents says for short
 *   paths.
 *
 * Why not openat(2) and friends: Node has none, no well-kept npm package exposes them, and
 * a native addon of our own would have to be built on every storage host. /proc/self/fd
 * gives the same walk with Node's own fs calls; it needs /proc, which every Linux host and
 * container has. Measured here: a walk costs about 2 µs a directory (one open, one close).
 *
 * Descriptors are kept between calls on one chain, the directories of the last deep path
 * resolved: the base, every directory CHECKPOINT_BYTES of names further, and the last one.
 * The next deep path starts from the deepest of them it shares, so the calls of one op (a
 * file, its directory, their attributes) walk once, and a path of 64 KiB holds about 35
 * descriptors. A chain is true only while no directory on it moves or goes: its owner calls
 * clear() after every rename and rmdir (Brick.apply is the only writer of a brick). And a
 * path returned names a descriptor the next resolution may close and the OS may then give
 * to another file: use it at once, in synchronous calls, or, for an asynchronous one, never
 * resolve again on the same DeepPaths before it completes (the snapshot walks do so).
 */
import fs, { constants as C } from 'node:fs';
import { bytesToWire, isPlainText, wireByteLength, wireToBytes } from '../common/names';

/** The longest path handed to the OS as it is: PATH_MAX less its NUL. */
export const OS_PATH_BYTES_MAX = 4095;
/** Characters that are surely within OS_PATH_BYTES_MAX (a UTF-16 unit is at most 3 bytes). */
const OS_PATH_CHARS_SURE = Math.floor(OS_PATH_BYTES_MAX / 3);
/** Names walked between two descriptors the chain keeps. */
const CHECKPOINT_BYTES = 2048;
/** Linux's O_PATH (asm-generic/fcntl.h), which Node's constants leave out: a descriptor
 * that only names the directory, needing no read permission on it. */
const O_PATH = 0o10000000;
const DIR_FLAGS = O_PATH | C.O_DIRECTORY | C.O_NOFOLLOW;

/** A path (a wire string) as the file system takes it. */
export function osPath(path: string): string | Buffer {
  return isPlainText(path) ? path : wireToBytes(path);
}

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

interface Checkpoint {
  /** How many components of the chain lead to it (0: the base). */
  depth: number;
  fd: number;
}

export class DeepPaths {
  /** The components of the chain's last directory, below the base. */
  private chain: string[] = [];
  /** Open directories on the chain, by depth. */
  private checkpoints: Checkpoint[] = [];

  /** `base`: the directory cluster paths are under, as the process reaches it: '.' (the
   * working directory) or an absolute path within PATH_MAX. */
  constructor(readonly base: string) {}

  /** The local form of a cluster path ('/' is the base itself). */
  local(path: string): string {
    if (path === '/') return this.base;
    return this.base === '.' ? path.slice(1) : this.base + path;
  }

  /** Whether the OS takes the local form of `path` as it is. */
  isShort(path: string): boolean {
    const local = this.local(path);
    return local.length <= OS_PATH_CHARS_SURE || wireByteLength(local) <= OS_PATH_BYTES_MAX;
  }

  /** A path the OS takes for the cluster path `path` (a wire string: see osPath), at any
   * depth. Walking a deep one fails as the OS would (ENOENT, ENOTDIR, EACCES) or with ELOOP
   * for a symlink among its directories. */
  at(path: string): string {
    if (this.isShort(path)) return this.local(path);
    const parts = path.slice(1).split('/');
    const name = parts.pop()!;
    return `/proc/self/fd/${this.walk(parts)}/${name}`;
  }

  /** As at(), for a call that takes a second path as well (rename, link): the directory
   * gets a descriptor of its own, which resolving the second path cannot close. Call
   * release() once the call is done. */
  pin(path: string): { path: string; release: () => void } {
    if (this.isShort(path)) return { path: this.local(path), release: () => undefined };
    const parts = path.slice(1).split('/');
    const name = parts.pop()!;
    const fd = fs.openSync(`/proc/self/fd/${this.walk(parts)}`, O_PATH | C.O_DIRECTORY);
    return { path: `/proc/self/fd/${fd}/${name}`, release: () => fs.closeSync(fd) };
  }

  /** Checks that every component of the directory `dir` is a real directory, at any depth
   * (ELOOP for a symlink). For short paths Brick does this with one realpath. */
  checkDir(dir: string): void {
    if (dir !== '/') this.walk(dir.slice(1).split('/'));
  }

  /** Closes every descriptor: after anything that may move or remove a directory. */
  clear(): void {
    for (const c of this.checkpoints) fs.closeSync(c.fd);
    this.checkpoints = [];
    this.chain = [];
  }

  /** A descriptor of the directory with components `dirs`. */
  private walk(dirs: string[]): number {
    let shared = 0;
    while (shared < dirs.length && shared < this.chain.length && dirs[shared] === this.chain[shared]) shared++;
    while (this.checkpoints.length > 0 && this.checkpoints[this.checkpoints.length - 1]!.depth > shared) fs.closeSync(this.checkpoints.pop()!.fd);
    if (this.checkpoints.length === 0) this.checkpoints.push({ depth: 0, fd: fs.openSync(osPath(this.base), O_PATH | C.O_DIRECTORY) });
    const from = this.checkpoints[this.checkpoints.length - 1]!;
    this.chain = dirs.slice(0, from.depth);
    let fd = from.fd;
    let bytes = 0;
    try {
      for (let i = from.depth; i < dirs.length; i++) {
        const next = this.openDir(fd, dirs[i]!);
        bytes += wireByteLength(dirs[i]!) + 1;
        if (fd !== this.checkpoints[this.checkpoints.length - 1]!.fd) fs.closeSync(fd);
        fd = next;
        if (bytes >= CHECKPOINT_BYTES || i === dirs.length - 1) {
          this.checkpoints.push({ depth: i + 1, fd });
          bytes = 0;
        }
      }
    } catch (e) {
      if (fd !== this.checkpoints[this.checkpoints.length - 1]!.fd) fs.closeSync(fd);
      this.clear();
      throw e;
    }
    this.chain = dirs.slice();
    return fd;
  }

  private openDir(parentFd: number, name: string): number {
    const p = `/proc/self/fd/${parentFd}/${name}`;
    try {
      return fs.openSync(osPath(p), DIR_FLAGS);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOTDIR' && fs.lstatSync(osPath(p)).isSymbolicLink()) throw errnoError('ELOOP', 'path crosses a symlink');
      throw e;
    }
  }
}

const REMOVE_STEPS_PER_YIELD = 64;

/**
 * Removes a tree of any depth (fs.rm gives ENAMETOOLONG past PATH_MAX): depth first through
 * a DeepPaths of its own, yielding to the event loop every so many entries. A missing tree
 * is no error.
 */
export async function removeTree(root: string): Promise<void> {
  try {
    await fs.promises.rm(root, { recursive: true, force: true });
    return;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENAMETOOLONG') throw e;
  }
  const paths = new DeepPaths(root);
  try {
    /** Directories to empty and then remove, the deepest last. */
    const stack: string[] = ['/'];
    let steps = 0;
    while (stack.length > 0) {
      if (++steps % REMOVE_STEPS_PER_YIELD === 0) await new Promise((r) => setImmediate(r));
      const dir = stack[stack.length - 1]!;
      const names = fs.readdirSync(osPath(paths.at(dir)), { encoding: 'buffer' });
      let descended = false;
      for (const raw of names) {
        const child = (dir === '/' ? '/' : dir + '/') + bytesToWire(raw);
        const p = osPath(paths.at(child));
        if (fs.lstatSync(p).isDirectory()) {
          stack.push(child);
          descended = true;
          break;
        }
        fs.unlinkSync(p);
      }
      if (descended) continue;
      stack.pop();
      if (dir === '/') fs.rmdirSync(osPath(root));
      // The chain may keep the removed directory's descriptor; the next walk, of its
      // parent, shares less and closes it.
      else fs.rmdirSync(osPath(paths.at(dir)));
    }
  } finally {
    paths.clear();
  }
}
