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
 *
 * Identity (DESIGN.md, The brick): everything about an inode that clients see and the
 * brick's host must not act on lives in one extended attribute per inode, `user.dfs.meta`
 * (Meta): the cluster-wide inode number (one more than the sequence ID of the op that
 * created the inode, so it is unique, never reused, and never the root's 1); the access,
 * modification and change times, set from ops exactly where POSIX says they change and
 * never by a local read; the owner, group and permission bits (setuid, setgid and sticky
 * included); and the file type of anything that is not a directory or a regular file.
 * Hard links share a local inode and so its attribute. The real mtime and atime are
 * mirrored onto the files as well, so a brick reads sensibly with ordinary tools.
 *
 * Safe for its host (DESIGN.md, Security): on the brick itself every directory is 0700 and
 * every file 0600, owned by the node's own user. So no setuid or setgid file, device node,
 * FIFO or symlink ever exists as such on a brick (a FIFO, socket, device or symlink is a
 * regular file with its type in Meta.kind, a symlink's target its content), nothing a
 * client made is reachable by another local user, and the node needs no privilege: `user.*`
 * attributes are the owner's to write, and it never chowns. The brick root is 0700 too.
 *
 * Clients' extended attributes live in the same `user.*` namespace, under names that never
 * meet the cluster's own `user.dfs.` ones (brickXattrName): a client's `trusted.X` as
 * `user.dfs.t.X`, a client's `user.dfs.X` as `user.dfs.u.X`, any other `user.X` as itself.
 * So no client, root included, can see or touch `user.dfs.meta`. A brick name is at most
 * 255 bytes (XATTR_NAME_MAX), so a client's `trusted.*` name gives up 3 bytes of it and a
 * `user.dfs.*` one 2.
 *
 * Older bricks (identity in `trusted.dfs.meta`, real owners and modes on the files) are
 * refused when opened, with the way out (docs/cluster.md, Brick format): empty the brick
 * and let the node copy a peer's by full sync.
 */
import { createHash } from 'node:crypto';
import fs, { constants as C, promises as fsp } from 'node:fs';
import type { Stats } from 'node:fs';
import type { Attr, DirEntry, ManifestEntry, ManifestProgress, OpResult, StatFs } from '../common/api';
import { fsError, isErrnoException } from '../common/errors';
import { parentOf } from '../common/paths';
import { relatimeDue, S_IFMT, validateWriteExtents, xattrNamespaceOf, type Op } from '../common/ops';
import { fallocateSync } from './fallocate';
import { alignedBuffer, DIRECT_ALIGN, roundDown, roundUp } from './direct-io';
import { READ_BYTES_MAX, XATTR_INODE_BYTES_MAX } from '../common/limits';
import { DfsError } from '../common/errors';
import { useXattrScratchDir, xattrGet, xattrList, xattrRemove, xattrSet } from './xattr';
import { bytesToWire } from '../common/names';
import { DeepPaths, osPath } from './deep-path';
import type { Caller } from '../common/identity';
import { InodeIndex } from './inode-index';
import { inGroup, isOwnerOrRoot, mayAccess, stickyForbids, W_OK, X_OK, type InodeIdentity } from './permissions';

/** Directories whose identity the permission checks keep at hand (Brick.dirIdentity). */
const DIR_IDENTITY_CACHE_MAX = 4096;

function childOf(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/** What applying an op gives: the op's answer but its sequence ID. */
export type ApplyResult = Omit<OpResult, 'seq'>;

export const META_XATTR = 'user.dfs.meta';
/** On the brick's root: the last sequence ID applied (Brick.appliedSeqMark). */
const APPLIED_XATTR = 'user.dfs.applied';
/** Where the identity lived before bricks were safe for their host (refused by open). */
const OLD_META_XATTR = 'trusted.dfs.meta';
export const ROOT_INO = 1;
/** The modes of everything on a brick, whatever the cluster's modes are (see the header). */
const BRICK_DIR_MODE = 0o700;
const BRICK_FILE_MODE = 0o600;
const S_IFLNK = 0o120000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

/** A write's data from this size on has its block-aligned middle written with O_DIRECT
 * (Brick.writeData); smaller writes, and the partial blocks at either end of a large one,
 * go through the page cache. */
const DIRECT_WRITE_BYTES_MIN = 128 * 1024;
/** The brick's O_DIRECT staging buffer; a larger write goes through it in pieces. */
const DIRECT_STAGE_BYTES = 1024 * 1024;

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
 * file type the brick does not hold for real (a FIFO, socket, device or symlink is stored
 * as a regular file, so no client can plant a device node on a storage host); 0 for a
 * directory or a regular file. */
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
  /** The permission bits (0o7777: setuid, setgid and sticky included). */
  mode: number;
  uid: number;
  gid: number;
}

/** Who an inode belongs to and its permission bits, as an op gives them. */
export interface Owner {
  mode: number;
  uid: number;
  gid: number;
}

/** Six float64s (ino, atimeMs, mtimeMs, ctimeMs, kind, rdev) and six uint32s (atimeNsec,
 * mtimeNsec, ctimeNsec, mode, uid, gid), little-endian. */
const META_BYTES = 72;

export function readMeta(abs: string): Meta | null {
  const buf = xattrGet(abs, META_XATTR);
  if (!buf) return null;
  // A damaged attribute would make nodes disagree silently: refuse to go on instead.
  if (buf.length !== META_BYTES) throw new Error(`${abs}: ${META_XATTR} has ${buf.length} bytes, not ${META_BYTES}`);
  return {
    ino: buf.readDoubleLE(0),
    atimeMs: buf.readDoubleLE(8),
    mtimeMs: buf.readDoubleLE(16),
    ctimeMs: buf.readDoubleLE(24),
    kind: buf.readDoubleLE(32),
    rdev: buf.readDoubleLE(40),
    atimeNsec: buf.readUInt32LE(48),
    mtimeNsec: buf.readUInt32LE(52),
    ctimeNsec: buf.readUInt32LE(56),
    mode: buf.readUInt32LE(60),
    uid: buf.readUInt32LE(64),
    gid: buf.readUInt32LE(68),
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
  buf.writeUInt32LE(m.mode, 60);
  buf.writeUInt32LE(m.uid, 64);
  buf.writeUInt32LE(m.gid, 68);
  xattrSet(abs, META_XATTR, buf);
}

/** Attributes as clients see them: the local inode's size, links and blocks, with the
 * cluster's identity over the rest. */
export function attrOf(st: Stats, meta: Meta | null): Attr {
  const type = meta?.kind ? meta.kind : st.mode & S_IFMT;
  return {
    ino: meta?.ino ?? st.ino,
    mode: type | (meta ? meta.mode : st.mode & 0o7777),
    nlink: st.nlink,
    uid: meta?.uid ?? st.uid,
    gid: meta?.gid ?? st.gid,
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

/** The cluster's own attribute names on a brick start so; clients' never do as stored. */
const CLUSTER_XATTR_PREFIX = 'user.dfs.';
/** Where the brick keeps a client's `trusted.X` and a client's `user.dfs.X` (see the header). */
const CLIENT_TRUSTED_PREFIX = 'user.dfs.t.';
const CLIENT_RESERVED_PREFIX = 'user.dfs.u.';

/** The brick's name for a client's attribute name (validated by validateXattrName). */
export function brickXattrName(name: string): string {
  if (name.startsWith('trusted.')) return CLIENT_TRUSTED_PREFIX + name.slice('trusted.'.length);
  if (name.startsWith(CLUSTER_XATTR_PREFIX)) return CLIENT_RESERVED_PREFIX + name.slice(CLUSTER_XATTR_PREFIX.length);
  return name;
}

/** The client's name for a brick attribute, or null for the cluster's own. */
export function clientXattrName(brickName: string): string | null {
  if (brickName.startsWith(CLIENT_TRUSTED_PREFIX)) return 'trusted.' + brickName.slice(CLIENT_TRUSTED_PREFIX.length);
  if (brickName.startsWith(CLIENT_RESERVED_PREFIX)) return CLUSTER_XATTR_PREFIX + brickName.slice(CLIENT_RESERVED_PREFIX.length);
  if (brickName.startsWith(CLUSTER_XATTR_PREFIX)) return null;
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

/** A brick that open() will not serve: its format is not this version's. */
export class BrickFormatError extends Error {}

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
  /** Where each inode is now, for ops and reads that address one by number
   * (storage/inode-index.ts). */
  readonly inodes: InodeIndex = new InodeIndex({
    inoAt: (path) => {
      try {
        return readMeta(this.at(path))?.ino ?? null;
      } catch (e) {
        if (isErrnoException(e)) return null; // nothing there (ENOENT, ENOTDIR)
        throw e;
      }
    },
    entriesOf: (dir) =>
      fs.readdirSync(this.os(dir), { withFileTypes: true, encoding: 'buffer' }).map((d) => ({ name: bytesToWire(d.name), isDir: d.isDirectory() })),
  });

  /** Where a large write's aligned middle is staged for O_DIRECT (writeData); null where
   * the file system refuses O_DIRECT, or when opened with `direct: false`. */
  private directStage: Buffer | null = null;

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
  static async open(dir: string, opts: { relativeToCwd?: boolean; direct?: boolean } = {}): Promise<Brick> {
    await fsp.mkdir(dir, { recursive: true, mode: BRICK_DIR_MODE });
    const root = await fsp.realpath(dir);
    await fsp.chmod(root, BRICK_DIR_MODE); // private, whatever made it
    useXattrScratchDir(`${root}.xattr-scratch`);
    try {
      // Every node starts from the same root: inode 1, times 0, 0755, owned by the user
      // the nodes run as, until ops change them.
      if (!readMeta(root)) {
        Brick.refuseOldFormat(root);
        writeMeta(root, { ino: ROOT_INO, atimeMs: 0, mtimeMs: 0, ctimeMs: 0, kind: 0, rdev: 0, atimeNsec: 0, mtimeNsec: 0, ctimeNsec: 0, mode: 0o755, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
        fs.lutimesSync(root, 0, 0);
      }
    } catch (e) {
      if (e instanceof BrickFormatError) throw e;
      throw new Error(`the brick ${root} cannot keep ${META_XATTR} extended attributes (it needs a file system with user.* xattrs): ${(e as Error).message}`);
    }
    // The probe file sits beside the brick, never in it; if the brick itself refuses
    // O_DIRECT after all (another file system mounted there), writeData finds out and
    // falls back to the page cache.
    const stage = opts.direct === false ? null : await alignedBuffer(`${root}.direct-probe`, DIRECT_STAGE_BYTES);
    if (opts.relativeToCwd) process.chdir(root);
    const brick = new Brick(root, opts.relativeToCwd === true);
    brick.directStage = stage;
    return brick;
  }

  /** A brick with entries but no identity on its root is of the old format (or not a
   * brick): refuse it rather than serve a tree whose owners and modes are lost. */
  private static refuseOldFormat(root: string): void {
    let old = false;
    try {
      old = xattrGet(root, OLD_META_XATTR) !== null;
    } catch {
      // trusted.* cannot be read without privilege: the listing below decides.
    }
    if (old || fs.readdirSync(root).length > 0) {
      throw new BrickFormatError(
        `the brick ${root} is of an older format (identity in ${OLD_META_XATTR}, owners and modes on the files) or not a brick: ` +
          "stop the node, move its data directory aside, and start it again with an empty one: it copies a peer's brick by full sync (docs/cluster.md, Brick format)",
      );
    }
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
    this.dirIdentities.clear();
    this.inodes.reset();
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
    const parent = this.metaAt(parentOf(abs));
    if (!(parent.mode & 0o2000)) return { gid, modeBits: 0 };
    return { gid: parent.gid, modeBits: isDir ? 0o2000 : 0 };
  }

  /** The identity of an inode that exists: every inode of a brick has one. */
  private metaAt(abs: string): Meta {
    const m = readMeta(this.at(abs));
    if (m) return m;
    fs.lstatSync(this.os(abs)); // ENOENT, ENOTDIR: an outcome
    throw new Error(`${abs} has no ${META_XATTR}`);
  }

  /** A new inode: its identity, and its real times mirrored. */
  private born(abs: string, ino: number, timeMs: number, owner: Owner, kind = 0, rdev = 0): void {
    writeMeta(this.at(abs), { ino, atimeMs: timeMs, mtimeMs: timeMs, ctimeMs: timeMs, kind, rdev, atimeNsec: 0, mtimeNsec: 0, ctimeNsec: 0, ...owner });
    fs.lutimesSync(this.os(abs), timeMs / 1000, timeMs / 1000);
  }

  /** A new regular file on the brick (a file, or what stands for a special file or a
   * symlink), with `content` if any. */
  private makeFile(abs: string, content?: Buffer | string): void {
    const fd = fs.openSync(this.os(abs), C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, BRICK_FILE_MODE);
    try {
      if (content !== undefined) {
        const bytes = typeof content === 'string' ? Buffer.from(content) : content;
        writeAllSync(fd, bytes, 0, bytes.length, 0);
      }
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Changes some of an inode's times (and mirrors atime and mtime onto the real file). */
  private stamp(abs: string, change: TimeChange, owner?: Partial<Owner>): void {
    const m = this.metaAt(abs);
    const next = { ...m, ...change, ...owner };
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
  apply(op: Op, data: Buffer, timeMs: number, seq: number, beforeMark?: (result: ApplyResult) => void, caller?: Caller): ApplyResult {
    let result: ApplyResult;
    try {
      // An op on an open file names its inode: it applies wherever that inode is now
      // (storage/inode-index.ts), the same place on every node at this sequence ID.
      const placed = this.placed(op);
      // The op's caller's permissions against the brick as it stands now, at this
      // sequence ID: the same on every node (storage/permissions.ts). An op without one is
      // the cluster's own or from before callers travelled: applied as root's.
      result = this.applyOrThrow(caller ? this.checkOp(placed, caller) : placed, data, timeMs, seq);
      this.forgetIdentities(placed);
      this.indexApplied(placed, result);
      if ('ino' in placed && placed.ino !== undefined) result = { ...result, path: placed.path };
    } catch (e) {
      if (e instanceof DfsError && e.code === 'FS_ERROR') result = { errno: e.errno! };
      else if (isErrnoException(e) && e.code !== 'EIO' && e.code !== 'ENOSPC' && e.code !== 'EROFS') result = { errno: e.code };
      else throw e;
      if (result.errno === 'ENOTDIR' && this.crossesSymlink(op)) result = { errno: 'ELOOP' };
    }
    beforeMark?.(result);
    this.markApplied(seq);
    return result;
  }

  /** `op` with its path set to where its inode is now, when it names one. */
  private placed(op: Op): Op {
    if (!('ino' in op) || op.ino === undefined) return op;
    return { ...op, path: this.placeOf(op.ino, op.path) };
  }

  /** Where inode `ino` is now, `hint` tried first (storage/inode-index.ts). An inode with
   * no name left (another mount unlinked it, or renamed another file over it) is reached by
   * `hint` as before inodes travelled: whatever is there now, or ENOENT. */
  placeOf(ino: number, hint: string): string {
    return this.inodes.resolve(ino, hint) ?? hint;
  }

  /** Keeps the inode index in step with an op that applied. */
  private indexApplied(op: Op, result: ApplyResult): void {
    if (result.errno) return;
    switch (op.type) {
      case 'create':
      case 'mkdir':
      case 'mknod':
      case 'symlink':
        if (result.attr) this.inodes.created(result.attr.ino, op.path);
        return;
      case 'rename':
        this.inodes.renamed(op.from, op.to);
        return;
    }
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

  /**
   * Writes `size` bytes from `data[from]` at `offset` of the file open as `fd`. A large
   * write's block-aligned middle goes with O_DIRECT through the staging buffer, so it costs
   * a copy into memory in use instead of new page-cache pages (storage/direct-io.ts); the
   * partial blocks at its ends, and small writes, go through the page cache. The kernel
   * keeps the two coherent (a direct write flushes and drops cached pages it overlaps), and
   * the brick's durability is the op log's either way: a crash replays the log. A file
   * system that refuses O_DIRECT on the brick (EINVAL) turns it off for good, and the
   * write is done through the page cache.
   */
  private writeData(abs: string, fd: number, data: Buffer, from: number, size: number, offset: number): void {
    const stage = this.directStage;
    const begin = roundUp(offset, DIRECT_ALIGN);
    const end = roundDown(offset + size, DIRECT_ALIGN);
    if (stage === null || size < DIRECT_WRITE_BYTES_MIN || end - begin < DIRECT_ALIGN) {
      writeAllSync(fd, data, from, size, offset);
      return;
    }
    try {
      this.withFd(abs, C.O_WRONLY | C.O_NOFOLLOW | C.O_DIRECT, (direct) => {
        for (let at = begin; at < end; ) {
          const n = Math.min(stage.length, end - at);
          const src = from + (at - offset);
          data.copy(stage, 0, src, src + n);
          for (let done = 0; done < n; ) {
            const written = fs.writeSync(direct, stage, done, n - done, at + done);
            if (written <= 0 || written % DIRECT_ALIGN !== 0) throw new Error(`brick: O_DIRECT wrote ${written} of ${n - done} bytes`);
            done += written;
          }
          at += n;
        }
      });
    } catch (e) {
      if (!isErrnoException(e) || e.code !== 'EINVAL') throw e;
      this.directStage = null;
      writeAllSync(fd, data, from, size, offset);
      return;
    }
    if (begin > offset) writeAllSync(fd, data, from, begin - offset, offset);
    if (offset + size > end) writeAllSync(fd, data, from + (end - offset), offset + size - end, end);
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
        fs.mkdirSync(this.os(abs), BRICK_DIR_MODE);
        this.born(abs, inoOfSeq(seq), t, { mode: op.mode | own.modeBits, uid: op.uid, gid: own.gid });
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'create': {
        const abs = this.resolveSync(op.path);
        try {
          this.makeFile(abs);
        } catch (e) {
          if (op.exclusive || !isErrnoException(e) || e.code !== 'EEXIST') throw e;
          // open(O_CREAT) without O_EXCL on an existing file opens it and changes nothing.
          const st = fs.lstatSync(this.os(abs));
          if (st.isDirectory()) throw fsError('EISDIR');
          const meta = readMeta(this.at(abs));
          if (meta?.kind === S_IFLNK) throw fsError('ELOOP');
          return { attr: attrOf(st, meta) };
        }
        this.born(abs, inoOfSeq(seq), t, { mode: op.mode, uid: op.uid, gid: this.inherit(abs, op.gid, false).gid });
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
          // An append goes at the end as this node's copy stands at this sequence ID, which
          // is the same on every node: appends from any number of mounts land whole, one
          // after another, in sequence order.
          if (op.append) return this.writeData(abs, fd, data, 0, data.length, fs.fstatSync(fd).size);
          if (!op.extents) return this.writeData(abs, fd, data, 0, data.length, op.offset);
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
        const replacedMode = dst ? attrOf(dst, readMeta(this.at(to))).mode : 0;
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
        return dst ? { attr: this.attrAt(to), replacedMode } : { attr: this.attrAt(to) };
      }
      case 'symlink': {
        // A regular file holding the target's bytes (see the header): a symlink's mode is
        // 0777 and its size the target's length, as lstat(2) gives them.
        const abs = this.resolveSync(op.path);
        const { gid } = this.inherit(abs, op.gid, false);
        this.makeFile(abs, osPath(op.target));
        this.born(abs, inoOfSeq(seq), t, { mode: 0o777, uid: op.uid, gid }, S_IFLNK);
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
        if (this.metaAt(abs).kind === S_IFLNK) throw fsError('EOPNOTSUPP', 'symlinks have no mode of their own');
        this.stamp(abs, { ctimeMs: t }, { mode: op.mode });
        return { attr: this.attrAt(abs) };
      }
      case 'chown': {
        // As Linux's chown(2): on anything but a directory it clears setuid, and setgid
        // where the group may execute (a setgid file without it is mandatory locking's mark).
        const abs = this.resolveSync(op.path);
        const m = this.metaAt(abs);
        const isDir = m.kind === 0 && fs.lstatSync(this.os(abs)).isDirectory();
        const kill = isDir ? 0 : 0o4000 | (m.mode & 0o010 ? 0o2000 : 0);
        this.stamp(abs, { ctimeMs: t }, { uid: op.uid, gid: op.gid, mode: m.mode & ~kill });
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
        this.makeFile(abs);
        const special = kind !== S_IFREG;
        this.born(abs, inoOfSeq(seq), t, { mode: op.mode & 0o7777, uid: op.uid, gid: this.inherit(abs, op.gid, false).gid }, special ? kind : 0, special ? op.rdev : 0);
        this.dirChanged(abs, t);
        return { attr: this.attrAt(abs), parent: this.parentAttrOf(abs) };
      }
      case 'setxattr': {
        const abs = this.resolveSync(op.path);
        this.refuseUserXattrOnSymlink(abs, op.name); // and ENOENT before anything else
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
        this.refuseUserXattrOnSymlink(abs, op.name);
        xattrRemove(this.at(abs), brickXattrName(op.name));
        this.stamp(abs, { ctimeMs: t });
        return { attr: this.attrAt(abs) };
      }
    }
  }

  /**
   * Whether a path of the op goes through a symlink among its directories. The brick's
   * stand-in for a symlink is a regular file, so the OS says ENOTDIR there; a symlink a real
   * brick held said ELOOP (checkParents), and so does this one. Only on that error's path.
   */
  private crossesSymlink(op: Op | { path: string }): boolean {
    const paths = 'from' in op ? [op.from, op.to] : 'path' in op ? [op.path] : [];
    return paths.some((path) => {
      for (let dir = parentOf(path); dir !== '/'; dir = parentOf(dir)) {
        try {
          if (readMeta(this.at(dir))?.kind === S_IFLNK) return true;
        } catch {
          // Not there, or not reachable: not this one.
        }
      }
      return false;
    });
  }

  // ---- permissions (storage/permissions.ts) ----

  /** The identity of directories the checks walked, by path: a path's directories are
   * searched on every op, and their identity changes only by chmod, chown, rename and rmdir
   * (forgetIdentities), so each is read once, not once per op. */
  private readonly dirIdentities = new Map<string, InodeIdentity>();

  private dirIdentity(dir: string): InodeIdentity | null {
    const cached = this.dirIdentities.get(dir);
    if (cached) return cached;
    let m: Meta | null;
    try {
      m = readMeta(this.at(dir));
    } catch (e) {
      if (isErrnoException(e)) return null; // not there: the op's own call says so
      throw e;
    }
    if (!m) return null;
    const id = { mode: m.mode, uid: m.uid, gid: m.gid, isDir: m.kind === 0 };
    if (this.dirIdentities.size >= DIR_IDENTITY_CACHE_MAX) this.dirIdentities.clear();
    this.dirIdentities.set(dir, id);
    return id;
  }

  /** An op changed what dirIdentities may hold. */
  private forgetIdentities(op: Op): void {
    if (op.type === 'rename' || op.type === 'rmdir') this.dirIdentities.clear();
    else if (op.type === 'chmod' || op.type === 'chown') this.dirIdentities.delete(op.path);
  }

  /** The identity of the inode at `path`, or null when there is none. */
  private identityAt(path: string): InodeIdentity | null {
    let st: Stats;
    try {
      st = fs.lstatSync(this.os(path));
    } catch (e) {
      if (isErrnoException(e)) return null;
      throw e;
    }
    const m = readMeta(this.at(path));
    if (!m) return null;
    return { mode: m.mode, uid: m.uid, gid: m.gid, isDir: st.isDirectory() };
  }

  /** Search permission on every directory of `path` (EACCES), from the root down. */
  private checkSearch(caller: Caller, path: string): void {
    if (path === '/') return;
    const dirs: string[] = [];
    for (let dir = parentOf(path); ; dir = parentOf(dir)) {
      dirs.push(dir);
      if (dir === '/') break;
    }
    for (let i = dirs.length - 1; i >= 0; i--) {
      const id = this.dirIdentity(dirs[i]!);
      if (!id) return;
      if (!mayAccess(caller, id, X_OK)) throw fsError('EACCES', `search permission on ${dirs[i]}`);
    }
  }

  /** Write and search permission on the directory an entry of `path` is added to or
   * removed from. */
  private checkDirWrite(caller: Caller, path: string): InodeIdentity | null {
    const dir = this.dirIdentity(parentOf(path));
    if (dir && !mayAccess(caller, dir, W_OK | X_OK)) throw fsError('EACCES', `write permission on ${parentOf(path)}`);
    return dir;
  }

  /** A new inode is the caller's, in the caller's group or one of theirs (a setgid
   * directory's group is given by inherit()). */
  private checkNewOwner(caller: Caller, uid: number, gid: number): void {
    if (caller.uid !== 0 && (uid !== caller.uid || !inGroup(caller, gid))) throw fsError('EPERM', 'a new inode is its creator\'s');
  }

  /** Removing or renaming the entry at `path` (the sticky rule). */
  private checkSticky(caller: Caller, path: string, dir: InodeIdentity | null): void {
    if (!dir || !(dir.mode & 0o1000)) return;
    const entry = this.identityAt(path);
    if (entry && stickyForbids(caller, dir, entry)) throw fsError('EPERM', `${parentOf(path)} is sticky`);
  }

  /** The permission checks of an op; throws the errno Linux gives (see permissions.ts).
   * The op to apply: a chmod by one outside the file's group loses setgid (setattr_prepare). */
  private checkOp(op: Op, caller: Caller): Op {
    // Root passes every check an op makes (permissions.ts): no lookups for it.
    if (caller.uid === 0) return op;
    this.checkOpOrThrow(op, caller);
    if (op.type === 'chmod' && caller.uid !== 0 && op.mode & 0o2000) {
      const f = this.identityAt(op.path);
      if (f && !inGroup(caller, f.gid)) return { ...op, mode: op.mode & ~0o2000 };
    }
    return op;
  }

  private checkOpOrThrow(op: Op, caller: Caller): void {
    switch (op.type) {
      case 'noop':
        return;
      case 'mkdir':
      case 'create':
      case 'mknod':
      case 'symlink': {
        this.checkSearch(caller, op.path);
        // What exists: EEXIST, or (create without O_EXCL) the file as it is, which changes
        // nothing; open(2)'s own checks of it are the mount's kernel's.
        if (this.identityAt(op.path)) return;
        this.checkDirWrite(caller, op.path);
        this.checkNewOwner(caller, op.uid, op.gid);
        return;
      }
      case 'unlink':
      case 'rmdir': {
        this.checkSearch(caller, op.path);
        const dir = this.checkDirWrite(caller, op.path);
        this.checkSticky(caller, op.path, dir);
        return;
      }
      case 'rename': {
        this.checkSearch(caller, op.from);
        this.checkSearch(caller, op.to);
        const from = this.checkDirWrite(caller, op.from);
        const to = this.checkDirWrite(caller, op.to);
        this.checkSticky(caller, op.from, from);
        this.checkSticky(caller, op.to, to);
        const moved = this.identityAt(op.from);
        // A directory that changes parent has its `..` rewritten: write permission on it.
        if (moved?.isDir && parentOf(op.from) !== parentOf(op.to) && !mayAccess(caller, moved, W_OK)) throw fsError('EACCES', `write permission on ${op.from}`);
        return;
      }
      case 'link':
        this.checkSearch(caller, op.from);
        this.checkSearch(caller, op.to);
        this.checkDirWrite(caller, op.to);
        return;
      case 'write':
      case 'truncate':
      case 'fallocate': {
        this.checkSearch(caller, op.path);
        const f = this.identityAt(op.path);
        if (f && !f.isDir && !mayAccess(caller, f, W_OK)) throw fsError('EACCES');
        return;
      }
      case 'chmod': {
        this.checkSearch(caller, op.path);
        const f = this.identityAt(op.path);
        if (f && !isOwnerOrRoot(caller, f)) throw fsError('EPERM');
        return;
      }
      case 'chown': {
        this.checkSearch(caller, op.path);
        const f = this.identityAt(op.path);
        if (!f || caller.uid === 0) return;
        if (op.uid !== f.uid || (op.gid !== f.gid && (caller.uid !== f.uid || !inGroup(caller, op.gid)))) throw fsError('EPERM');
        return;
      }
      case 'utimens': {
        this.checkSearch(caller, op.path);
        const f = this.identityAt(op.path);
        if (!f || isOwnerOrRoot(caller, f)) return;
        const explicit = (v: number | 'now' | null) => v !== 'now' && v !== null;
        if (explicit(op.atimeMs) || explicit(op.mtimeMs)) throw fsError('EPERM');
        if (!mayAccess(caller, f, W_OK)) throw fsError('EACCES');
        return;
      }
      case 'atime':
      case 'ctime':
        this.checkSearch(caller, op.path);
        return;
      case 'setxattr':
      case 'removexattr': {
        this.checkSearch(caller, op.path);
        const f = this.identityAt(op.path);
        if (!f) return;
        if (xattrNamespaceOf(op.name) === 'trusted.') {
          if (caller.uid !== 0) throw fsError('EPERM', 'trusted.* attributes are root\'s');
          return;
        }
        if (f.isDir && f.mode & 0o1000 && !isOwnerOrRoot(caller, f)) throw fsError('EPERM');
        if (!mayAccess(caller, f, W_OK)) throw fsError('EACCES');
        return;
      }
    }
  }

  /** A read on behalf of `caller` (storage/app.ts): search permission on the path's
   * directories, and `want` (R_OK, or 0) on the inode itself. */
  checkRead(caller: Caller, path: string, want: number): void {
    // Root searches every directory and reads everything: no lookups for it (the mount's
    // reads are root's).
    if (caller.uid === 0) return;
    this.checkSearch(caller, path);
    if (want === 0) return;
    const f = this.identityAt(path);
    if (f && !mayAccess(caller, f, want)) throw fsError('EACCES');
  }

  /** A FIFO, socket or device holds no data of its own on a brick; a symlink is not
   * opened (O_NOFOLLOW: ELOOP). */
  private refuseSpecial(abs: string): void {
    const kind = readMeta(this.at(abs))?.kind;
    if (kind === S_IFLNK) throw fsError('ELOOP', 'path is a symlink');
    if (kind) throw fsError('EINVAL', 'not a regular file');
  }

  /** Linux keeps `user.*` attributes off symlinks (EPERM); `trusted.*` ones are allowed. */
  private refuseUserXattrOnSymlink(abs: string, name: string): void {
    if (this.metaAt(abs).kind === S_IFLNK && xattrNamespaceOf(name) === 'user.') throw fsError('EPERM', 'user.* attributes are not allowed on symlinks');
  }

  /** A symlink's target, from the file that stands for it; EINVAL for anything else, as
   * readlink(2) answers. */
  private targetOf(abs: string): string {
    if (this.metaAt(abs).kind !== S_IFLNK) throw fsError('EINVAL', 'not a symlink');
    return bytesToWire(this.withFd(abs, C.O_RDONLY | C.O_NOFOLLOW, (fd) => fs.readFileSync(fd)));
  }

  // ---- reads: never mutate, never follow the last component ----

  async attr(path: string): Promise<Attr> {
    return this.mapFs(path, async () => this.attrAt(this.resolveSync(path)));
  }

  async dir(path: string): Promise<DirEntry[]> {
    return this.mapFs(path, async () => {
      const abs = this.resolveSync(path);
      // opendir(O_NOFOLLOW): a symlink is not listed through.
      if (readMeta(this.at(abs))?.kind === S_IFLNK) throw fsError('ELOOP', 'path is a symlink');
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
    return this.mapFs(path, async () => {
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
    return this.mapFs(path, async () => {
      const abs = this.resolveSync(path);
      fs.lstatSync(this.os(abs));
      const v = xattrNamespaceOf(name) === null ? null : xattrGet(this.at(abs), brickXattrName(name));
      if (!v) throw fsError('ENODATA');
      return v;
    });
  }

  /** The names of a file's client attributes (the cluster's own are not listed). */
  async xattrNames(path: string): Promise<string[]> {
    return this.mapFs(path, async () => {
      const abs = this.resolveSync(path);
      fs.lstatSync(this.os(abs));
      // Sorted: every node answers the same whatever order its file system keeps.
      return clientXattrNames(this.at(abs)).sort();
    });
  }

  /** The whole brick as `dfs verify` compares it, in path order. The caller holds the
   * apply loop still (Replica.holdAt) so that the walk sees one point of the history.
   * Two passes: the listing with every entry's attributes (cheap: it sets the totals in
   * `progress`), then the hashes of the files' bytes (the long part: `progress` counts
   * entries done and bytes hashed as it goes, for `dfs verify`'s progress bar). */
  async manifest(progress: ManifestProgress = { entries: 0, bytes: 0, totalEntries: null, totalBytes: null }): Promise<ManifestEntry[]> {
    const out: ManifestEntry[] = [];
    // Depth first with a stack of listings, not recursion: a tree may be thousands deep.
    const stack: Array<{ path: string; names: string[]; next: number }> = [];
    const enter = async (path: string) => {
      const names = (await this.readdirBytes(path)).map(bytesToWire).sort();
      out.push(this.manifestEntry(path));
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
      else out.push(this.manifestEntry(child));
    }
    progress.totalEntries = out.length;
    progress.totalBytes = out.reduce((sum, e) => sum + (e.sha256 !== undefined ? e.attr.size : 0), 0);
    for (const e of out) {
      if (e.sha256 !== undefined) {
        const hash = createHash('sha256');
        const fd = fs.openSync(this.os(e.path), C.O_RDONLY | C.O_NOFOLLOW);
        try {
          for await (const chunk of fs.createReadStream('', { fd, autoClose: false })) {
            hash.update(chunk as Buffer);
            progress.bytes += (chunk as Buffer).length;
          }
        } finally {
          fs.closeSync(fd);
        }
        e.sha256 = hash.digest('hex');
      }
      progress.entries++;
    }
    return out;
  }

  /** An entry of the manifest; a regular file's `sha256` is left empty for the caller to
   * fill in (in its place among the keys, which the comparison's JSON keeps). */
  private manifestEntry(path: string): ManifestEntry {
    const { blocks: _blocks, ...attr } = this.attrAt(path);
    const kind = attr.mode & S_IFMT;
    if (kind === S_IFDIR) attr.size = 0; // a directory's size is the local layout's
    const e: ManifestEntry = { path, attr };
    if (kind === S_IFLNK) e.target = this.targetOf(path);
    else if (kind === S_IFREG) e.sha256 = '';
    // A symlink may carry trusted.* ones.
    const at = this.at(path);
    const names = clientXattrNames(at).sort();
    if (names.length > 0) e.xattrs = Object.fromEntries(names.map((n) => [n, createHash('sha256').update(xattrGet(at, brickXattrName(n)) ?? Buffer.alloc(0)).digest('hex')]));
    return e;
  }

  async readlink(path: string): Promise<string> {
    return this.mapFs(path, async () => this.targetOf(this.resolveSync(path)));
  }

  async statfs(): Promise<StatFs> {
    const s = await fsp.statfs(this.root);
    return { bsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, namemax: 255 };
  }

  private async mapFs<T>(path: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (isErrnoException(e)) throw fsError(e.code === 'ENOTDIR' && this.crossesSymlink({ path }) ? 'ELOOP' : e.code);
      throw e;
    }
  }
}
