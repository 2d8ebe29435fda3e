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
 * Identity (DESIGN.md, The brick): what a local file system cannot keep the same on every
 * node lives in one extended attribute per inode, `trusted.dfs.meta`: the cluster-wide
 * inode number (one more than the sequence ID of the op that created the inode, so it is
 * unique, never reused, and never the root's 1) and the access, modification and change
 * times in milliseconds, set from ops exactly where POSIX says they change and never by a
 * local read. Hard links share a local inode and so its attribute. The real mtime and atime are
 * mirrored onto the files as well, so a brick reads sensibly with ordinary tools.
 * `trusted.*` attributes need root (the node needs it for chown anyway), and unlike
 * `user.*` ones they may be set on symlinks.
 *
 * Clients' extended attributes: `user.X` is stored as itself; a client's `trusted.X` as
 * `trusted.dfs.t.X` (brickXattrName), so that no client, root included, can see or touch
 * the cluster's own `trusted.dfs.meta`.
 */
import { createHash } from 'node:crypto';
import fs, { constants as C, promises as fsp } from 'node:fs';
import type { Stats } from 'node:fs';
import type { Attr, DirEntry, ManifestEntry, OpResult, StatFs } from '../common/api';
import { fsError, isErrnoException } from '../common/errors';
import { parentOf } from '../common/paths';
import { relatimeDue, S_IFMT, validateWriteExtents, xattrNamespaceOf, type Op } from '../common/ops';
import { fallocateSync } from './fallocate';
import { READ_BYTES_MAX, XATTR_INODE_BYTES_MAX } from '../common/limits';
import { DfsError } from '../common/errors';
import { useXattrScratchDir, xattrGet, xattrList, xattrRemove, xattrSet } from './xattr';
import { bytesToWire } from '../common/names';
import { DeepPaths, osPath } from './deep-path';

function childOf(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** What applying an op gives: the op's answer but its sequence ID. */
export type ApplyResult = Omit<OpResult, 'seq'>;

export const META_XATTR = 'trusted.dfs.meta';
/** On the brick's root: the last sequence ID applied (Brick.appliedSeqMark). */
const APPLIED_XATTR = 'trusted.dfs.applied';
export const ROOT_INO = 1;

/** pwrite(2) until all `size` bytes from `data[from]` are at `offset` (it may write fewer). */
function writeAllSync(fd: number, data: Buffer, from: number, size: number, offset: number): void {
  let done = 0;
  while (done < size) done += fs.writeSync(fd, data, from + done, size - done, offset + done);
}

/** The inode number of what the op at `seq` creates: sequence IDs start at 1, which is the
 * root's inode number, so every other inode is one past its op. */
export function inoOfSeq(seq: number): number {
  return seq + ROOT_INO;
}

/** The identity of an inode that every node keeps the same (see the header). `kind` is a
 * file type the brick does not hold for real (a FIFO, socket or device is stored as an
 * empty regular file, so no client can plant a device node on a storage host); 0 for
 * everything else. */
export interface Meta {
  ino: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  kind: number;
  rdev: number;
  /** The nanoseconds within the millisecond of each time (utimensat sets them). */
  atimeNsec: number;
  mtimeNsec: number;
  ctimeNsec: number;
}

/** Six float64s (ino, atimeMs, mtimeMs, ctimeMs, kind, rdev) and three uint32s (atimeNsec,
 * mtimeNsec, ctimeNsec), little-endian. Older layouts are read with what they lack as 0. */
const META_BYTES = 60;
const META_BYTES_V2 = 48; // before nanoseconds
const META_BYTES_V1 = 32; // before special files: no kind and rdev

function readMeta(abs: string): Meta | null {
  const buf = xattrGet(abs, META_XATTR);
  if (!buf) return null;
  // A damaged attribute would make nodes disagree silently: refuse to go on instead.
  if (buf.length !== META_BYTES && buf.length !== META_BYTES_V2 && buf.length !== META_BYTES_V1) {
    throw new Error(`${abs}: ${META_XATTR} has ${buf.length} bytes, not ${META_BYTES}`);
  }
  const special = buf.length >= META_BYTES_V2;
  const nsec = buf.length >= META_BYTES;
  return {
    ino: buf.readDoubleLE(0),
    atimeMs: buf.readDoubleLE(8),
    mtimeMs: buf.readDoubleLE(16),
    ctimeMs: buf.readDoubleLE(24),
    kind: special ? buf.readDoubleLE(32) : 0,
    rdev: special ? buf.readDoubleLE(40) : 0,
    atimeNsec: nsec ? buf.readUInt32LE(48) : 0,
    mtimeNsec: nsec ? buf.readUInt32LE(52) : 0,
    ctimeNsec: nsec ? buf.readUInt32LE(56) : 0,
  };
}

function writeMeta(abs: string, m: Meta): void {
  const buf = Buffer.allocUnsafe(META_BYTES);
  buf.writeDoubleLE(m.ino, 0);
  buf.writeDoubleLE(m.atimeMs, 8);
  buf.writeDoubleLE(m.mtimeMs, 16);
  buf.writeDoubleLE(m.ctimeMs, 24);
  buf.writeDoubleLE(m.kind, 32);
  buf.writeDoubleLE(m.rdev, 40);
  buf.writeUInt32LE(m.atimeNsec, 48);
  buf.writeUInt32LE(m.mtimeNsec, 52);
  buf.writeUInt32LE(m.ctimeNsec, 56);
  xattrSet(abs, META_XATTR, buf);
}

/** Attributes as clients see them: the local inode's, with the cluster's identity over it. */
export function attrOf(st: Stats, meta: Meta | null): Attr {
  return {
    ino: meta?.ino ?? st.ino,
    mode: meta?.kind ? meta.kind | (st.mode & 0o7777) : st.mode,
    nlink: st.nlink,
    uid: st.uid,
    gid: st.gid,
    rdev: meta?.kind ? meta.rdev : st.rdev,
    size: st.size,
    blocks: st.blocks,
    atimeMs: meta?.atimeMs ?? st.atimeMs,
    mtimeMs: meta?.mtimeMs ?? st.mtimeMs,
    ctimeMs: meta?.ctimeMs ?? st.ctimeMs,
    atimeNsec: meta?.atimeNsec ?? 0,
    mtimeNsec: meta?.mtimeNsec ?? 0,
    ctimeNsec: meta?.ctimeNsec ?? 0,
  };
}

/** Where the brick keeps the client's `trusted.*` attributes. */
const CLIENT_TRUSTED_PREFIX = 'trusted.dfs.t.';

/** The brick's name for a client's attribute name (validated by validateXattrName). */
export function brickXattrName(name: string): string {
  return name.startsWith('trusted.') ? CLIENT_TRUSTED_PREFIX + name.slice('trusted.'.length) : name;
}

/** The client's name for a brick attribute, or null for the cluster's own. */
export function clientXattrName(brickName: string): string | null {
  if (brickName.startsWith(CLIENT_TRUSTED_PREFIX)) return 'trusted.' + brickName.slice(CLIENT_TRUSTED_PREFIX.length);
  return xattrNamespaceOf(brickName) === 'user.' ? brickName : null;
}

/** The client attribute names of a brick file. */
function clientXattrNames(abs: string): string[] {
  return xattrList(abs).flatMap((n) => clientXattrName(n) ?? []);
}

/** What one extended attribute (a client name) takes in ext4's attribute block, which keeps
 * the namespace as a number (see XATTR_INODE_BYTES_MAX). */
function xattrEntryBytes(name: string, valueBytes: number): number {
  const round4 = (n: number) => (n + 3) & ~3;
  return 16 + round4(Buffer.byteLength(name) - (xattrNamespaceOf(name)?.length ?? 0)) + round4(valueBytes);
}

/** Times to set; a time set without its nanoseconds has none. */
type TimeChange = Partial<Pick<Meta, 'atimeMs' | 'mtimeMs' | 'ctimeMs' | 'atimeNsec' | 'mtimeNsec'>>;

/** pread(2) through the thread pool. */
function readAt(fd: number, buf: Buffer, at: number, size: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, at, size, position, (err, n) => (err ? reject(err) : resolve(n))));
}

/** A long listing yields to the event loop every so many entries. */
const DIR_ENTRIES_PER_YIELD = 256;

export class Brick {
  /** What a brick path starts from: '.' when the process works in the brick root, else
   * the root itself. */
  private readonly base: string;
  /** Every path the OS is given comes from here (storage/deep-path.ts): as it is when it
   * fits in PATH_MAX, else through directory descriptors, so a tree may be of any depth. */
  private readonly paths: DeepPaths;

  private constructor(
    readonly root: string,
    private readonly relative: boolean,
  ) {
    this.base = relative ? '.' : root;
    this.paths = new DeepPaths(this.base);
  }

  /**
   * Opens (creating if needed) the brick at `dir`; the root is kept as its real path.
   * With `relativeToCwd` the process moves into the brick root and every brick path is
   * relative to it (storage/main.ts: one brick a process), so the paths that go to the OS
   * as they are reach as deep as they can; without it paths are absolute, for several
   * bricks in one process (tests). Either way a path too long for the OS is reached through
   * directory descriptors (storage/deep-path.ts).
   */
  static async open(dir: string, opts: { relativeToCwd?: boolean } = {}): Promise<Brick> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o755 });
    const root = await fsp.realpath(dir);
    useXattrScratchDir(`${root}.xattr-scratch`);
    try {
      // Every node starts from the same root: inode 1, times 0, until ops change them.
      if (!readMeta(root)) {
        writeMeta(root, { ino: ROOT_INO, atimeMs: 0, mtimeMs: 0, ctimeMs: 0, kind: 0, rdev: 0, atimeNsec: 0, mtimeNsec: 0, ctimeNsec: 0 });
        fs.lutimesSync(root, 0, 0);
      }
    } catch (e) {
      throw new Error(`the brick ${root} cannot keep ${META_XATTR} extended attributes (the node needs root and a file system with xattrs): ${(e as Error).message}`);
    }
    if (opts.relativeToCwd) process.chdir(root);
    return new Brick(root, opts.relativeToCwd === true);
  }

  /**
   * After a full sync renamed a copied brick onto this one's path (storage/full-sync.ts):
   * the process's working directory is still the old directory, so move into the new one.
   */
  async reattach(): Promise<void> {
    const root = await fsp.realpath(this.root);
    if (root !== this.root) throw new Error(`the brick moved: ${root}, was ${this.root}`);
    if (!readMeta(root)) throw new Error(`the brick ${root} has no ${META_XATTR}`);
    this.paths.clear(); // its descriptors are of the old directory's tree
    if (this.relative) process.chdir(root);
  }

  /** The path the OS takes for a validated cluster path (a wire string), at any depth.
   * Use it at once: a deep one names a descriptor the next resolution may close. */
  private at(path: string): string {
    return this.paths.at(path);
  }

  /** The same, as the fs calls take it (bytes where the name is not UTF-8). */
  private os(path: string): string | Buffer {
    return osPath(this.paths.at(path));
  }

  /**
   * A validated cluster path with its parents checked. Apply runs one op at a time, so its
   * file system calls are synchronous: each is a few microseconds, far cheaper than a
   * thread-pool round trip per call. Helpers take cluster paths and resolve them at each
   * call (at, os).
   */
  private resolveSync(path: string): string {
    if (path !== '/') this.checkParents(parentOf(path));
    return path;
  }

  /**
   * No symlink among a path's directories: the kernel would have resolved it, so such a
   * request did not come from a mount; refuse rather than follow it anywhere. realpath
   * shows it in one call, unless the path or its real path is longer than PATH_MAX (a
   * deep tree): then its directories are walked with O_NOFOLLOW (DeepPaths.checkDir).
   */
  private checkParents(dir: string): void {
    if (!this.paths.isShort(dir)) return this.paths.checkDir(dir);
    let real: string;
    try {
      real = bytesToWire(fs.realpathSync.native(osPath(this.paths.local(dir)), { encoding: 'buffer' }));
    } catch (e) {
      if (!isErrnoException(e) || e.code !== 'ENAMETOOLONG') throw e;
      return this.paths.checkDir(dir);
    }
    if (real !== (dir === '/' ? this.root : this.root + dir)) throw fsError('ELOOP', 'path crosses a symlink');
  }

  private attrAt(abs: string): Attr {
    return attrOf(fs.lstatSync(this.os(abs)), readMeta(this.at(abs)));
  }

  /** The attributes of the directory holding `abs`, as an op that changed its entries left
   * them (the mount caches them: OpResult.parent). */
  private parentAttrOf(abs: string): Attr {
    return this.attrAt(parentOf(abs));
  }

  /**
   * The group and extra mode bits of a new inode: in a setgid directory it takes the
   * directory's group, and a new subdirectory keeps the setgid bit (Linux inode_init_owner).
   */
  private inherit(abs: string, gid: number, isDir: boolean): { gid: number; modeBits: number } {
    const parent = fs.lstatSync(this.os(parentOf(abs)));
    if (!(parent.mode & 0o2000)) return { gid, modeBits: 0 };
    return { gid: parent.gid, modeBits: isDir ? 0o2000 : 0 };
  }

  /** A new inode: its identity, and its real times mirrored. */
  private born(abs: string, ino: number, timeMs: number, kind = 0, rdev = 0): void {
    writeMeta(this.at(abs), { ino, atimeMs: timeMs, mtimeMs: timeMs, ctimeMs: timeMs, kind, rdev, atimeNsec: 0, mtimeNsec: 0, ctimeNsec: 0 });
    fs.lutimesSync(this.os(abs), timeMs / 1000, timeMs / 1000);
  }

  /** Changes some of an inode's times (and mirrors atime and mtime onto the real file). */
  private stamp(abs: string, change: TimeChange): void {
    const st = fs.lstatSync(this.os(abs));
    const m = readMeta(this.at(abs)) ?? { ino: st.ino, atimeMs: st.atimeMs, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, kind: 0, rdev: 0, atimeNsec: 0, mtimeNsec: 0, ctimeNsec: 0 };
    const next = { ...m, ...change };
    if (change.atimeMs !== undefined) next.atimeNsec = change.atimeNsec ?? 0;
    if (change.mtimeMs !== undefined) next.mtimeNsec = change.mtimeNsec ?? 0;
    if (change.ctimeMs !== undefined) next.ctimeNsec = 0;
    writeMeta(this.at(abs), next);
    if (change.atimeMs !== undefined || change.mtimeMs !== undefined) fs.lutimesSync(this.os(abs), next.atimeMs / 1000, next.mtimeMs / 1000);
  }

  /** An entry was added to or removed from the directory holding `abs` (POSIX: the
   * directory's mtime and ctime change). */
  private dirChanged(abs: string, timeMs: number): void {
    this.stamp(abs === '/' ? abs : parentOf(abs), { mtimeMs: timeMs, ctimeMs: timeMs });
  }

  /**
   * Applies one committed op, the one at sequence ID `seq` (which numbers any inode it
   * creates). File system outcomes become `errno`; anything else (a bug, a failing disk)
   * propagates, and the node crashes rather than diverge silently. `beforeMark` sees the
   * outcome before the applied mark moves (the request-ID journal is written there, so a
   * crash either replays the op or finds its line).
   */
  apply(op: Op, data: Buffer, timeMs: number, seq: number, beforeMark?: (result: ApplyResult) => void): ApplyResult {
    let result: ApplyResult;
    try {
      result = this.applyOrThrow(op, data, timeMs, seq);
    } catch (e) {
      if (e instanceof DfsError && e.code === 'FS_ERROR') result = { errno: e.errno! };
      else if (isErrnoException(e) && e.code !== 'EIO' && e.code !== 'ENOSPC' && e.code !== 'EROFS') result = { errno: e.code };
      else throw e;
    }
    beforeMark?.(result);
    this.markApplied(seq);
    return result;
  }

  /**
   * The last sequence ID applied to this brick, kept in an extended attribute of its root
   * and set after every op, in the same synchronous step: a node killed between an op and
   * the next save of its state file (which is asynchronous) would otherwise replay ops its
   * brick already holds, and a run of ops is not idempotent (rename a b, then create a:
   * replayed, the new a would be renamed over b). One op replayed is: its outcome on the
   * brick is the same the second time. 0 when the brick never applied one.
   */
  appliedSeqMark(): number {
    const buf = xattrGet(this.base, APPLIED_XATTR);
    return buf && buf.length === 8 ? Number(buf.readBigUInt64LE(0)) : 0;
  }

  private markApplied(seq: number): void {
    const buf = Buffer.allocUnsafe(8);
    buf.writeBigUInt64LE(BigInt(seq), 0);
    xattrSet(this.base, APPLIED_XATTR, buf);
  }

  private withFd<T>(abs: string, flags: number, fn: (fd: number) => T): T {
    const fd = fs.openSync(this.os(abs), flags);
    try {
      return fn(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  private applyOrThrow(op: Op, data: Buffer, t: number, seq: number): ApplyResult {
    switch (op.type) {
      case 'noop':
        return {};
      case 'mkdir': {
        const abs = this.resolveSync(op.path);
        const own = this.inherit(abs, op.gid, true);
        fs.mkdirSync(this.os(abs), op.mode);
        fs.lchownSync(this.os(abs), op.uid, own.gid);
        fs.chmodSync(this.os(abs), op.mode | own.modeBits); // after chown, which may clear setgid
        this.born(abs, inoOfSeq(seq), t);
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'create': {
        const abs = this.resolveSync(op.path);
        let fd: number;
        try {
          fd = fs.openSync(this.os(abs), C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, op.mode);
        } catch (e) {
          if (op.exclusive || !isErrnoException(e) || e.code !== 'EEXIST') throw e;
          // open(O_CREAT) without O_EXCL on an existing file opens it and changes nothing.
          const st = fs.lstatSync(this.os(abs));
          if (st.isDirectory()) throw fsError('EISDIR');
          if (st.isSymbolicLink()) throw fsError('ELOOP');
          return { attr: attrOf(st, readMeta(this.at(abs))) };
        }
        try {
          fs.fchownSync(fd, op.uid, this.inherit(abs, op.gid, false).gid);
          fs.fchmodSync(fd, op.mode); // after chown, which clears setuid and setgid
        } finally {
          fs.closeSync(fd);
        }
        this.born(abs, inoOfSeq(seq), t);
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'write': {
        const abs = this.resolveSync(op.path);
        this.refuseSpecial(abs);
        // Checked at the edges already (validateOp); a bad list here is a bug, and refusing
        // it before the first pwrite keeps a write from being applied halfway.
        if (op.extents) validateWriteExtents(op.offset, op.extents, data.length);
        this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW, (fd) => {
          if (!op.extents) return writeAllSync(fd, data, 0, data.length, op.offset);
          // The extents' bytes, concatenated in order: each goes to its own offset.
          let at = 0;
          for (const [offset, size] of op.extents) {
            writeAllSync(fd, data, at, size, offset);
            at += size;
          }
        });
        this.stamp(abs, { mtimeMs: t, ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'truncate': {
        const abs = this.resolveSync(op.path);
        this.refuseSpecial(abs);
        this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW, (fd) => fs.ftruncateSync(fd, op.size));
        this.stamp(abs, { mtimeMs: t, ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'fallocate': {
        // The modes are the same on every node (validateOp keeps to FALLOCATE_MODES), and
        // so are the outcomes: the size as the mode says, a punched or zeroed range reading
        // back zeros, blocks reserved for an allocated one (the nodes' own layouts differ,
        // which only st_blocks shows). As ext4, mtime and ctime move whatever the mode,
        // even when the size stays.
        const abs = this.resolveSync(op.path);
        this.refuseSpecial(abs);
        if (fs.lstatSync(this.os(abs)).isDirectory()) throw fsError('EISDIR');
        this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW, (fd) => fallocateSync(fd, op.mode, op.offset, op.size));
        this.stamp(abs, { mtimeMs: t, ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'unlink': {
        const abs = this.resolveSync(op.path);
        const st = fs.lstatSync(this.os(abs));
        if (st.isDirectory()) throw fsError('EISDIR');
        // The inode's other names see its link count, and so its ctime, change.
        if (st.nlink > 1) this.stamp(abs, { ctimeMs: t });
        fs.unlinkSync(this.os(abs));
        this.dirChanged(abs, t);
        return { parent: this.parentAttrOf(abs) };
      }
      case 'rmdir': {
        const abs = this.resolveSync(op.path);
        fs.rmdirSync(this.os(abs));
        this.paths.clear(); // a directory went
        this.dirChanged(abs, t);
        return { parent: this.parentAttrOf(abs) };
      }
      case 'rename': {
        const from = this.resolveSync(op.from);
        const to = this.resolveSync(op.to);
        const src = fs.lstatSync(this.os(from));
        let dst: fs.Stats | null = null;
        try {
          dst = fs.lstatSync(this.os(to));
        } catch (e) {
          if (!isErrnoException(e) || e.code !== 'ENOENT') throw e;
        }
        // POSIX: renaming one name of a file onto another name of the same file does nothing.
        if (dst && dst.ino === src.ino && dst.dev === src.dev) return { attr: attrOf(src, readMeta(this.at(from))) };
        if (dst && !dst.isDirectory() && dst.nlink > 1 && !src.isDirectory()) this.stamp(to, { ctimeMs: t });
        const source = this.paths.pin(from);
        try {
          fs.renameSync(osPath(source.path), this.os(to));
        } finally {
          source.release();
        }
        this.paths.clear(); // a directory may have moved
        this.stamp(to, { ctimeMs: t }); // Linux changes the moved inode's ctime
        this.dirChanged(from, t);
        this.dirChanged(to, t);
        return dst ? { attr: this.attrAt(to), replacedMode: dst.mode } : { attr: this.attrAt(to) };
      }
      case 'symlink': {
        const abs = this.resolveSync(op.path);
        fs.symlinkSync(osPath(op.target), this.os(abs));
        const { gid } = this.inherit(abs, op.gid, false); // before os(abs): a path from at() is used at once
        fs.lchownSync(this.os(abs), op.uid, gid);
        this.born(abs, inoOfSeq(seq), t);
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'link': {
        const from = this.resolveSync(op.from);
        const to = this.resolveSync(op.to);
        if (fs.lstatSync(this.os(from)).isDirectory()) throw fsError('EPERM', 'hard links to directories are not allowed');
        const source = this.paths.pin(from);
        try {
          fs.linkSync(osPath(source.path), this.os(to));
        } finally {
          source.release();
        }
        this.stamp(to, { ctimeMs: t });
        this.dirChanged(to, t);
        return { attr: this.attrAt(to), parent: this.parentAttrOf(to) };
      }
      case 'chmod': {
        const abs = this.resolveSync(op.path);
        if (fs.lstatSync(this.os(abs)).isSymbolicLink()) throw fsError('EOPNOTSUPP', 'symlinks have no mode of their own');
        fs.chmodSync(this.os(abs), op.mode);
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'chown': {
        const abs = this.resolveSync(op.path);
        fs.lchownSync(this.os(abs), op.uid, op.gid);
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'utimens': {
        const abs = this.resolveSync(op.path);
        const time = (v: number | 'now' | null, ns: number | undefined) => (v === 'now' ? { v: t, ns: 0 } : v === null ? null : { v, ns: ns ?? 0 });
        const a = time(op.atimeMs, op.atimeNsec);
        const m = time(op.mtimeMs, op.mtimeNsec);
        if (!a && !m) return { attr: this.attrAt(abs) }; // both left alone: nothing changes
        this.stamp(abs, { ...(a ? { atimeMs: a.v, atimeNsec: a.ns } : {}), ...(m ? { mtimeMs: m.v, mtimeNsec: m.ns } : {}), ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'ctime': {
        const abs = this.resolveSync(op.path);
        fs.lstatSync(this.os(abs));
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'atime': {
        const abs = this.resolveSync(op.path);
        if (relatimeDue(this.attrAt(abs), t)) this.stamp(abs, { atimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'mknod': {
        const abs = this.resolveSync(op.path);
        const kind = op.mode & S_IFMT;
        const fd = fs.openSync(this.os(abs), C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, op.mode & 0o7777);
        try {
          fs.fchownSync(fd, op.uid, this.inherit(abs, op.gid, false).gid);
          fs.fchmodSync(fd, op.mode & 0o7777);
        } finally {
          fs.closeSync(fd);
        }
        const special = kind !== 0o100000;
        this.born(abs, inoOfSeq(seq), t, special ? kind : 0, special ? op.rdev : 0);
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'setxattr': {
        const abs = this.resolveSync(op.path);
        fs.lstatSync(this.os(abs)); // ENOENT before anything else, as getxattr(2) on a missing path
        const exists = xattrGet(this.at(abs), brickXattrName(op.name)) !== null;
        if (op.flags === 1 && exists) throw fsError('EEXIST');
        if (op.flags === 2 && !exists) throw fsError('ENODATA');
        let room = XATTR_INODE_BYTES_MAX - xattrEntryBytes(op.name, data.length);
        for (const name of clientXattrNames(this.at(abs))) {
          if (name !== op.name) room -= xattrEntryBytes(name, xattrGet(this.at(abs), brickXattrName(name))?.length ?? 0);
        }
        if (room < 0) throw fsError('ENOSPC', 'no room for more extended attributes on this inode');
        xattrSet(this.at(abs), brickXattrName(op.name), data);
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
      case 'removexattr': {
        const abs = this.resolveSync(op.path);
        fs.lstatSync(this.os(abs));
        xattrRemove(this.at(abs), brickXattrName(op.name));
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
    }
  }

  /** A FIFO, socket or device holds no data of its own on a brick. */
  private refuseSpecial(abs: string): void {
    if (readMeta(this.at(abs))?.kind) throw fsError('EINVAL', 'not a regular file');
  }

  // ---- reads: never mutate, never follow the last component ----

  async attr(path: string): Promise<Attr> {
    return this.mapFs(async () => this.attrAt(this.resolveSync(path)));
  }

  async dir(path: string): Promise<DirEntry[]> {
    return this.mapFs(async () => {
      const abs = this.resolveSync(path);
      // readdir follows a symlink; a listing is only ever of a real directory in the brick.
      if (fs.lstatSync(this.os(abs)).isSymbolicLink()) throw fsError('ELOOP', 'path is a symlink');
      const names = (await this.readdirBytes(abs)).map(bytesToWire);
      const entries: DirEntry[] = [];
      for (const [i, name] of names.entries()) {
        if (i > 0 && i % DIR_ENTRIES_PER_YIELD === 0) await new Promise((r) => setImmediate(r));
        try {
          entries.push({ name, attr: this.attrAt(childOf(abs, name)) });
        } catch (e) {
          // An entry removed between readdir and lstat is simply not listed.
          if (!isErrnoException(e) || e.code !== 'ENOENT') throw e;
        }
      }
      return entries;
    });
  }

  /** A directory's names, off the main thread when its path goes to the OS as it is; a
   * deep one's path names a descriptor, so it is listed at once (see at()). */
  private async readdirBytes(path: string): Promise<Buffer[]> {
    const p = this.os(path);
    return this.paths.isShort(path) ? fsp.readdir(p, { encoding: 'buffer' }) : fs.readdirSync(p, { encoding: 'buffer' });
  }

  async read(path: string, offset: number, size: number): Promise<Buffer> {
    if (size > READ_BYTES_MAX) throw new DfsError('TOO_LARGE', `a read asks for at most ${READ_BYTES_MAX} bytes`);
    return this.mapFs(async () => {
      const abs = this.resolveSync(path);
      this.refuseSpecial(abs);
      // Opened at once, as every other call on a path here (a few microseconds); the reads
      // go through the thread pool.
      const fd = fs.openSync(this.os(abs), C.O_RDONLY | C.O_NOFOLLOW);
      try {
        const buf = Buffer.allocUnsafe(size);
        let done = 0;
        while (done < size) {
          const bytesRead = await readAt(fd, buf, done, size - done, offset + done);
          if (bytesRead === 0) break;
          done += bytesRead;
        }
        return buf.subarray(0, done);
      } finally {
        fs.closeSync(fd);
      }
    });
  }

  /** One client attribute's value; ENODATA when it has none of that name. */
  async xattr(path: string, name: string): Promise<Buffer> {
    return this.mapFs(async () => {
      const abs = this.resolveSync(path);
      fs.lstatSync(this.os(abs));
      const v = xattrNamespaceOf(name) === null ? null : xattrGet(this.at(abs), brickXattrName(name));
      if (!v) throw fsError('ENODATA');
      return v;
    });
  }

  /** The names of a file's client attributes (the cluster's own are not listed). */
  async xattrNames(path: string): Promise<string[]> {
    return this.mapFs(async () => {
      const abs = this.resolveSync(path);
      fs.lstatSync(this.os(abs));
      // Sorted: every node answers the same whatever order its file system keeps.
      return clientXattrNames(this.at(abs)).sort();
    });
  }

  /** The whole brick as `dfs verify` compares it, in path order. The caller holds the
   * apply loop still (Replica.holdAt) so that the walk sees one point of the history. */
  async manifest(): Promise<ManifestEntry[]> {
    const out: ManifestEntry[] = [];
    // Depth first with a stack of listings, not recursion: a tree may be thousands deep.
    const stack: Array<{ path: string; names: string[]; next: number }> = [];
    const enter = async (path: string) => {
      const names = (await this.readdirBytes(path)).map(bytesToWire).sort();
      out.push(await this.manifestEntry(path));
      stack.push({ path, names, next: 0 });
    };
    await enter('/');
    while (stack.length > 0) {
      const top = stack[stack.length - 1]!;
      if (top.next === top.names.length) {
        stack.pop();
        continue;
      }
      const child = childOf(top.path, top.names[top.next++]!);
      if (fs.lstatSync(this.os(child)).isDirectory()) await enter(child);
      else out.push(await this.manifestEntry(child));
    }
    return out;
  }

  private async manifestEntry(path: string): Promise<ManifestEntry> {
    const { blocks: _blocks, ...attr } = this.attrAt(path);
    const kind = attr.mode & S_IFMT;
    if (kind === 0o040000) attr.size = 0; // a directory's size is the local layout's
    const e: ManifestEntry = { path, attr };
    if (kind === 0o120000) e.target = bytesToWire(fs.readlinkSync(this.os(path), { encoding: 'buffer' }));
    else if (kind === 0o100000) {
      const hash = createHash('sha256');
      const fd = fs.openSync(this.os(path), C.O_RDONLY | C.O_NOFOLLOW);
      try {
        for await (const chunk of fs.createReadStream('', { fd, autoClose: false })) hash.update(chunk as Buffer);
      } finally {
        fs.closeSync(fd);
      }
      e.sha256 = hash.digest('hex');
    }
    // A symlink may carry trusted.* ones.
    const at = this.at(path);
    const names = clientXattrNames(at).sort();
    if (names.length > 0) e.xattrs = Object.fromEntries(names.map((n) => [n, createHash('sha256').update(xattrGet(at, brickXattrName(n)) ?? Buffer.alloc(0)).digest('hex')]));
    return e;
  }

  async readlink(path: string): Promise<string> {
    return this.mapFs(async () => bytesToWire(fs.readlinkSync(this.os(this.resolveSync(path)), { encoding: 'buffer' })));
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
