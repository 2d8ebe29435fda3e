/*
 * The brick: a storage node's copy of the file tree, as a directory that mirrors it
 * (like a GlusterFS brick), and the deterministic application of ops to it.
 *
 * Confinement (DESIGN.md, Security): every path has passed common/paths.ts, so it has no
 * `..`; here a path is joined under the brick root and the real path of its parent must be
 * exactly that lexical parent, so no symlink in the brick can lead an op or a read outside
 * it. The last component is never followed either: attributes are lstat's, files are
 * opened with O_NOFOLLOW, ownership and times change through lchown/lutimes. A legitimate
 * client never needs otherwise, because the kernel resolves symlinks before FUSE sees a path.
 *
 * Determinism (DESIGN.md, Writes): an op's outcome depends only on the brick and the op.
 * Times come from the op's `timeMs`, ownership from its uid/gid, and errors are the errno
 * the local file system gives, which is the same on every node holding the same tree.
 * The node's umask is 0 (storage/main.ts) so modes are the op's exactly.
 *
 * Known gaps, each owned by a later issue: inode numbers and ctime are the node's own (the
 * design keeps cluster-wide ones in xattrs); atime moves with local reads.
 */
import fs, { constants as C, promises as fsp } from 'node:fs';
import type { Stats } from 'node:fs';
import nodePath from 'node:path';
import type { Attr, DirEntry, StatFs } from '../common/api';
import { fsError, isErrnoException } from '../common/errors';
import type { Op } from '../common/ops';
import { READ_BYTES_MAX } from '../common/limits';
import { DfsError } from '../common/errors';

export interface ApplyResult {
  errno?: string;
  attr?: Attr;
}

export function attrOf(st: Stats): Attr {
  return {
    ino: st.ino,
    mode: st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    rdev: st.rdev,
    size: st.size,
    blocks: st.blocks,
    atimeMs: st.atimeMs,
    mtimeMs: st.mtimeMs,
    ctimeMs: st.ctimeMs,
  };
}

const DIR_STAT_CONCURRENCY = 64;

export class Brick {
  private constructor(readonly root: string) {}

  /** Opens (creating if needed) the brick at `dir`; the root is kept as its real path. */
  static async open(dir: string): Promise<Brick> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    return new Brick(await fsp.realpath(dir));
  }

  /**
   * The absolute brick path of a validated cluster path, with its parent checked. Apply
   * runs one op at a time, so its file system calls are synchronous: each is a few
   * microseconds, far cheaper than a thread-pool round trip per call.
   */
  private resolveSync(path: string): string {
    if (path === '/') return this.root;
    const abs = this.root + path;
    const parent = nodePath.dirname(abs);
    const real = fs.realpathSync.native(parent);
    // A symlink among the parents: the kernel would have resolved it, so this request did
    // not come from a mount. Refuse rather than follow it anywhere.
    if (real !== parent) throw fsError('ELOOP', 'path crosses a symlink');
    return abs;
  }

  private async resolve(path: string): Promise<string> {
    if (path === '/') return this.root;
    const abs = this.root + path;
    const parent = nodePath.dirname(abs);
    if ((await fsp.realpath(parent)) !== parent) throw fsError('ELOOP', 'path crosses a symlink');
    return abs;
  }

  private touchDirOf(abs: string, timeMs: number): void {
    const parent = abs === this.root ? abs : nodePath.dirname(abs);
    const st = fs.lstatSync(parent);
    fs.lutimesSync(parent, st.atimeMs / 1000, timeMs / 1000);
  }

  private attrAt(abs: string): Attr {
    return attrOf(fs.lstatSync(abs));
  }

  /**
   * Applies one committed op. File system outcomes become `errno`; anything else (a bug,
   * a failing disk) propagates, and the node crashes rather than diverge silently.
   */
  apply(op: Op, data: Buffer, timeMs: number): ApplyResult {
    try {
      return this.applyOrThrow(op, data, timeMs);
    } catch (e) {
      if (e instanceof DfsError && e.code === 'FS_ERROR') return { errno: e.errno! };
      if (isErrnoException(e) && e.code !== 'EIO' && e.code !== 'ENOSPC' && e.code !== 'EROFS') return { errno: e.code };
      throw e;
    }
  }

  private withFd<T>(abs: string, flags: number, fn: (fd: number) => T): T {
    const fd = fs.openSync(abs, flags);
    try {
      return fn(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private applyOrThrow(op: Op, data: Buffer, timeMs: number): ApplyResult {
    const t = timeMs / 1000;
    switch (op.type) {
      case 'noop':
        return {};
      case 'mkdir': {
        const abs = this.resolveSync(op.path);
        fs.mkdirSync(abs, op.mode);
        fs.chmodSync(abs, op.mode); // mkdir(2) ignores setuid/setgid/sticky bits in mode
        fs.lchownSync(abs, op.uid, op.gid);
        fs.lutimesSync(abs, t, t);
        this.touchDirOf(abs, timeMs);
        return { attr: this.attrAt(abs) };
      }
      case 'create': {
        const abs = this.resolveSync(op.path);
        let fd: number;
        try {
          fd = fs.openSync(abs, C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, op.mode);
        } catch (e) {
          if (op.exclusive || !isErrnoException(e) || e.code !== 'EEXIST') throw e;
          // open(O_CREAT) without O_EXCL on an existing file opens it and changes nothing.
          const st = fs.lstatSync(abs);
          if (st.isDirectory()) throw fsError('EISDIR');
          if (st.isSymbolicLink()) throw fsError('ELOOP');
          return { attr: attrOf(st) };
        }
        try {
          fs.fchmodSync(fd, op.mode);
          fs.fchownSync(fd, op.uid, op.gid);
          fs.futimesSync(fd, t, t);
        } finally {
          fs.closeSync(fd);
        }
        this.touchDirOf(abs, timeMs);
        return { attr: this.attrAt(abs) };
      }
      case 'write': {
        const abs = this.resolveSync(op.path);
        return this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW, (fd) => {
          let done = 0;
          while (done < data.length) done += fs.writeSync(fd, data, done, data.length - done, op.offset + done);
          const st = fs.fstatSync(fd);
          fs.futimesSync(fd, st.atimeMs / 1000, t);
          return { attr: attrOf(fs.fstatSync(fd)) };
        });
      }
      case 'truncate': {
        const abs = this.resolveSync(op.path);
        return this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW, (fd) => {
          fs.ftruncateSync(fd, op.size);
          const st = fs.fstatSync(fd);
          fs.futimesSync(fd, st.atimeMs / 1000, t);
          return { attr: attrOf(fs.fstatSync(fd)) };
        });
      }
      case 'unlink': {
        const abs = this.resolveSync(op.path);
        fs.unlinkSync(abs);
        this.touchDirOf(abs, timeMs);
        return {};
      }
      case 'rmdir': {
        const abs = this.resolveSync(op.path);
        fs.rmdirSync(abs);
        this.touchDirOf(abs, timeMs);
        return {};
      }
      case 'rename': {
        const from = this.resolveSync(op.from);
        const to = this.resolveSync(op.to);
        fs.renameSync(from, to);
        this.touchDirOf(from, timeMs);
        this.touchDirOf(to, timeMs);
        return { attr: this.attrAt(to) };
      }
      case 'symlink': {
        const abs = this.resolveSync(op.path);
        fs.symlinkSync(op.target, abs);
        fs.lchownSync(abs, op.uid, op.gid);
        fs.lutimesSync(abs, t, t);
        this.touchDirOf(abs, timeMs);
        return { attr: this.attrAt(abs) };
      }
      case 'link': {
        const from = this.resolveSync(op.from);
        const to = this.resolveSync(op.to);
        if (fs.lstatSync(from).isDirectory()) throw fsError('EPERM', 'hard links to directories are not allowed');
        fs.linkSync(from, to);
        this.touchDirOf(to, timeMs);
        return { attr: this.attrAt(to) };
      }
      case 'chmod': {
        const abs = this.resolveSync(op.path);
        if (fs.lstatSync(abs).isSymbolicLink()) throw fsError('EOPNOTSUPP', 'symlinks have no mode of their own');
        fs.chmodSync(abs, op.mode);
        return { attr: this.attrAt(abs) };
      }
      case 'chown': {
        const abs = this.resolveSync(op.path);
        fs.lchownSync(abs, op.uid, op.gid);
        return { attr: this.attrAt(abs) };
      }
      case 'utimens': {
        const abs = this.resolveSync(op.path);
        fs.lutimesSync(abs, op.atimeMs / 1000, op.mtimeMs / 1000);
        return { attr: this.attrAt(abs) };
      }
    }
  }

  // ---- reads: never mutate, never follow the last component ----

  async attr(path: string): Promise<Attr> {
    return this.mapFs(async () => attrOf(await fsp.lstat(await this.resolve(path))));
  }

  async dir(path: string): Promise<DirEntry[]> {
    return this.mapFs(async () => {
      const abs = await this.resolve(path);
      // readdir follows a symlink; a listing is only ever of a real directory in the brick.
      if ((await fsp.lstat(abs)).isSymbolicLink()) throw fsError('ELOOP', 'path is a symlink');
      const names = await fsp.readdir(abs);
      const entries: DirEntry[] = [];
      for (let i = 0; i < names.length; i += DIR_STAT_CONCURRENCY) {
        const chunk = names.slice(i, i + DIR_STAT_CONCURRENCY);
        const stats = await Promise.allSettled(chunk.map((name) => fsp.lstat(nodePath.join(abs, name))));
        stats.forEach((r, j) => {
          // An entry removed between readdir and lstat is simply not listed.
          if (r.status === 'fulfilled') entries.push({ name: chunk[j]!, attr: attrOf(r.value) });
        });
      }
      return entries;
    });
  }

  async read(path: string, offset: number, size: number): Promise<Buffer> {
    if (size > READ_BYTES_MAX) throw new DfsError('TOO_LARGE', `a read asks for at most ${READ_BYTES_MAX} bytes`);
    return this.mapFs(async () => {
      const abs = await this.resolve(path);
      const fh = await fsp.open(abs, C.O_RDONLY | C.O_NOFOLLOW);
      try {
        const buf = Buffer.allocUnsafe(size);
        let done = 0;
        while (done < size) {
          const { bytesRead } = await fh.read(buf, done, size - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return buf.subarray(0, done);
      } finally {
        await fh.close();
      }
    });
  }

  async readlink(path: string): Promise<string> {
    return this.mapFs(async () => fsp.readlink(await this.resolve(path)));
  }

  async statfs(): Promise<StatFs> {
    const s = await fsp.statfs(this.root);
    return { bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, namemax: 255 };
  }

  private async mapFs<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (isErrnoException(e)) throw fsError(e.code);
      throw e;
    }
  }
}
