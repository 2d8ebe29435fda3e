/*
 * Full sync: a brick streamed out as a sequence of entries, and materialized from them in
 * another directory. A node that is new, or too far behind to catch up from a peer's log,
 * copies the brick of an in-sync peer this way.
 *
 * How data flows:
 *
 *   sender    brickSnapshotFrames(root) -> { header, data } -> encodeFrame -> HTTP body
 *   receiver  body pieces -> FrameStreamDecoder (common/frame.ts) -> SnapshotWriter.put
 *             -> SnapshotWriter.finish; the caller then renames the new directory into place
 *
 * The caller holds the source brick still for the whole walk (Replica.holdAt), so the
 * stream is one point of the history; the walk still checks that no file changes size or
 * identity under it, and fails rather than send a torn copy.
 *
 * The stream is the tree depth first, a directory before its entries, names in byte order:
 *   dir      a directory (the first entry is the root, path '/')
 *   file     a regular file with its size, followed by its content as `chunk` entries of at
 *            most SNAPSHOT_CHUNK_BYTES, in order, and `hole` entries for runs of zeros, which
 *            are written as holes (a file grown by truncate stays sparse, and its zeros are
 *            not sent; the writer also leaves out the zero blocks within chunks); an empty
 *            file has neither
 *   symlink  a symbolic link, its target's bytes as the frame's data: refused by the writer,
 *            since a brick holds none (a cluster symlink is a regular file, brick.ts)
 *   link     a further name of an inode with several (hard links), naming the path under
 *            which the inode was sent first, so its content travels once
 * dir and file carry what a brick keeps about an inode: its local st_mode, owner, atime and
 * mtime in nanoseconds (decimal strings: more than a float64 holds) and the extended
 * attributes, which hold the cluster's identity (user.dfs.meta with the cluster's owner,
 * mode and times; the root's user.dfs.applied) and clients' attributes (brick.ts). Only the
 * user.* namespace travels: trusted.* needs privilege the node does not have, security.*
 * (SELinux labels, file capabilities) and system.* (ACLs) belong to the host, a brick never
 * sets them, and a peer must not be able to plant a file capability on this host. The
 * writer never takes an owner or a mode from the stream either: what it writes belongs to
 * the node, directories 0700 and files 0600, as every brick's (brick.ts, Safe for its host).
 *
 * Memory stays bounded whatever the brick's size: the sender holds one chunk of content,
 * the listings of the directories it is inside and one entry per inode with several names
 * (to recognize its later names); the writer holds the open file and the directories it is
 * inside (a directory's times are set when the stream leaves it, since its children change
 * them). Neither ever holds a whole file or the whole tree.
 *
 * The writer trusts nothing in the stream (it comes from the network): every header is
 * validated (parseSnapshotEntryHeader), and an entry out of order is refused, not guessed
 * at: an entry must be in the directory the stream is in or one of its ancestors, a chunk
 * must continue the file before it, a link must name a path already written through real
 * directories only. A directory is made only by a `dir` entry, so no symlink the stream
 * wrote can lead a later entry outside the new tree; nothing is ever followed.
 *
 * Local times: the cluster's times are in trusted.dfs.meta, copied exactly; the files'
 * own atime and mtime are a mirror for ordinary tools. Node sets them through libuv, which
 * takes a float64 of seconds and truncates it to whole microseconds (uv__fs_to_timespec),
 * so the mirror keeps microseconds and loses the nanoseconds below them. The value is
 * nudged half a microsecond into the intended one (utimesArg), so that float rounding
 * never drops it to the one before: exact to the microsecond while a float64's step is
 * under half a microsecond, that is for times before 2106.
 *
 * Paths: wire strings (common/names.ts) under the root, given to the OS through a
 * DeepPaths (storage/deep-path.ts) as Brick does, so trees deeper than PATH_MAX travel too.
 * Each walk has its own, used by one step at a time: a path it gave is used (across the
 * step's awaits) before the next is resolved.
 */
import fs, { constants as C, promises as fsp } from 'node:fs';
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { z } from 'zod';
import { DfsError, isErrnoException } from '../common/errors';
import { FRAME_HEADER_BYTES_MAX, WRITE_BYTES_MAX, XATTR_NAME_BYTES_MAX, XATTR_VALUE_BYTES_MAX } from '../common/limits';
import { bytesToWire } from '../common/names';
import { xattrNamespaceOf } from '../common/ops';
import { parentOf, validatePath } from '../common/paths';
import { xattrGet, xattrList, xattrSet } from './xattr';
import { DeepPaths, osPath as P } from './deep-path';

/** The most content one `chunk` entry carries. */
export const SNAPSHOT_CHUNK_BYTES = 1024 * 1024;
// A chunk travels as one frame's data, which the decoder bounds by WRITE_BYTES_MAX.
if (SNAPSHOT_CHUNK_BYTES > WRITE_BYTES_MAX) throw new Error('SNAPSHOT_CHUNK_BYTES must fit in one frame (WRITE_BYTES_MAX)');

/** Everything a writer makes is the node's own and private (brick.ts, Safe for its host). */
const BRICK_DIR_MODE = 0o700;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const EMPTY = Buffer.alloc(0);
const ZEROS = Buffer.alloc(SNAPSHOT_CHUNK_BYTES);
/** The granularity at which the writer leaves zeros out as holes: a page, and the block of
 * common file systems. */
const SPARSE_BLOCK_BYTES = 4096;

// ---- the header ----

const entryPath = z.string().superRefine((p, ctx) => {
  try {
    validatePath(p);
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
  }
});
/** (uid_t)-1 is not an owner: chown takes it as "leave it as it is". */
const id = z.number().int().min(0).max(0xfffffffe);
const timeNs = z.string().regex(/^-?(0|[1-9][0-9]{0,19})$/, 'a time is decimal nanoseconds');
const byteCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** An st_mode of file type `type`: the type bits exactly, and any permission bits. */
const modeOf = (type: number) => z.number().int().min(type).max(type | 0o7777);
const xattrName = z
  .string()
  .refine((n) => xattrNamespaceOf(n) === 'user.' && !n.includes('\0') && Buffer.byteLength(n) <= XATTR_NAME_BYTES_MAX, 'only user.* attribute names of at most 255 bytes travel');
const xattrValue = z.base64().max(Math.ceil(XATTR_VALUE_BYTES_MAX / 3) * 4);
const inode = { path: entryPath, uid: id, gid: id, atimeNs: timeNs, mtimeNs: timeNs, xattrs: z.record(xattrName, xattrValue) };

export const SnapshotEntryHeaderSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('dir'), ...inode, mode: modeOf(S_IFDIR) }),
  z.object({ type: z.literal('file'), ...inode, mode: modeOf(S_IFREG), size: byteCount }),
  // The target's bytes are the frame's data.
  z.object({ type: z.literal('symlink'), ...inode, mode: modeOf(S_IFLNK) }),
  z.object({ type: z.literal('link'), path: entryPath, firstPath: entryPath }),
  // Content of the file entry just before, at `offset`: the frame's data, or `size` zeros.
  z.object({ type: z.literal('chunk'), path: entryPath, offset: byteCount }),
  z.object({ type: z.literal('hole'), path: entryPath, offset: byteCount, size: byteCount.min(1) }),
]);

export type SnapshotEntryHeader = z.infer<typeof SnapshotEntryHeaderSchema>;

export interface SnapshotFrame {
  header: SnapshotEntryHeader;
  data: Buffer;
}

/** Validates an entry header from the network; a DfsError (BAD_REQUEST) says what is wrong. */
export function parseSnapshotEntryHeader(json: unknown): SnapshotEntryHeader {
  const r = SnapshotEntryHeaderSchema.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new DfsError('BAD_REQUEST', `invalid snapshot entry: ${issue ? `${issue.path.join('.') || 'header'}: ${issue.message}` : 'malformed'}`);
  }
  return r.data;
}

// ---- shared ----

function childPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

/**
 * What fs.utimes and its kin take for a time in nanoseconds: the numeric string of the
 * seconds, half a microsecond into the intended microsecond (see the header: libuv
 * truncates to microseconds, towards zero, and a float64 of seconds is not exact). A string
 * and not a number because Node replaces a negative number, a time before 1970, with "now";
 * a numeric string it passes on as it is.
 */
export function utimesArg(ns: bigint): string {
  const us = ns >= 0n ? ns / 1000n : -((-ns + 999n) / 1000n); // floor
  const sec = us >= 0n ? us / 1_000_000n : -((-us + 999_999n) / 1_000_000n);
  const frac = Number(us - sec * 1_000_000n); // 0 to 999999
  // The value has the sign of `sec`, and truncation goes towards zero: aim past the
  // intended microsecond on the side away from zero.
  return String(Number(sec) + (frac + (sec >= 0n ? 0.5 : -0.5)) / 1e6);
}

// ---- the sender ----

/** The user.* attributes of the inode at `abs`, values in base64. */
function readXattrs(abs: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of xattrList(abs).sort()) {
    if (xattrNamespaceOf(name) !== 'user.') continue; // the host's own: see the header
    const value = xattrGet(abs, name);
    if (value !== null) out[name] = value.toString('base64');
  }
  return out;
}

function inodeFields(path: string, abs: string, st: BigIntStats) {
  return { path, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), atimeNs: st.atimeNs.toString(), mtimeNs: st.mtimeNs.toString(), xattrs: readXattrs(abs) };
}

/** An inode entry whose header fits in a frame: a brick's attributes always do (its
 * client attributes are bounded by XATTR_INODE_BYTES_MAX), so one that does not is not a
 * brick's, and failing here says so better than the receiver's decoder would. */
function inodeFrame(header: SnapshotEntryHeader, data = EMPTY): SnapshotFrame {
  const bytes = Buffer.byteLength(JSON.stringify(header));
  if (bytes > FRAME_HEADER_BYTES_MAX) throw new Error(`${header.path}: its snapshot entry takes ${bytes} bytes, over FRAME_HEADER_BYTES_MAX`);
  return { header, data };
}

/** The names in a directory, as bytes, in byte order. */
async function listing(abs: string): Promise<Buffer[]> {
  return (await fsp.readdir(P(abs), { encoding: 'buffer' })).sort(Buffer.compare);
}

/** Opens a file of the source for reading: never through a symlink, and without moving
 * its local atime (O_NOATIME, which the owner and root may use). */
async function openSource(abs: string): Promise<FileHandle> {
  const flags = C.O_RDONLY | C.O_NOFOLLOW;
  try {
    return await fsp.open(P(abs), flags | (C.O_NOATIME ?? 0));
  } catch (e) {
    if (!isErrnoException(e) || e.code !== 'EPERM') throw e;
    return await fsp.open(P(abs), flags);
  }
}

/** A regular file's entry and its content. */
async function* fileFrames(path: string, abs: string, st: BigIntStats): AsyncGenerator<SnapshotFrame> {
  const size = Number(st.size);
  yield inodeFrame({ type: 'file', ...inodeFields(path, abs, st), size });
  if (size === 0) return;
  const changed = (how: string) => new Error(`${path} ${how} while the snapshot read it: the source must be held still`);
  const fh = await openSource(abs);
  try {
    const opened = await fh.stat({ bigint: true });
    if (opened.ino !== st.ino || opened.dev !== st.dev) throw changed('was replaced');
    let offset = 0;
    let holeAt = -1; // where the run of zero chunks not yet sent starts
    while (offset < size) {
      const n = Math.min(SNAPSHOT_CHUNK_BYTES, size - offset);
      // A new buffer each time: the consumer may still hold the one before.
      const buf = Buffer.allocUnsafe(n);
      for (let got = 0; got < n; ) {
        const { bytesRead } = await fh.read(buf, got, n - got, offset + got);
        if (bytesRead === 0) throw changed('shrank');
        got += bytesRead;
      }
      if (buf.equals(ZEROS.subarray(0, n))) {
        if (holeAt < 0) holeAt = offset;
      } else {
        if (holeAt >= 0) yield { header: { type: 'hole', path, offset: holeAt, size: offset - holeAt }, data: EMPTY };
        holeAt = -1;
        yield { header: { type: 'chunk', path, offset }, data: buf };
      }
      offset += n;
    }
    if (holeAt >= 0) yield { header: { type: 'hole', path, offset: holeAt, size: size - holeAt }, data: EMPTY };
    if ((await fh.read(Buffer.alloc(1), 0, 1, size)).bytesRead !== 0) throw changed('grew');
  } finally {
    await fh.close();
  }
}

/**
 * Every name under `root`, depth first, a directory before its entries, names in byte
 * order: its wire path, where it is on disk now (DeepPaths) and its lstat. A directory is
 * listed only once the consumer has taken it, since reading it may move its atime. The
 * snapshot and its count walk the same way, so they agree on what there is.
 */
async function* brickTree(root: string, paths: DeepPaths): AsyncGenerator<{ path: string; abs: string; st: BigIntStats }> {
  /** The directories the walk is inside, each with its listing and how far it got. */
  const stack: Array<{ path: string; names: Buffer[]; next: number }> = [{ path: '/', names: await listing(root), next: 0 }];
  while (stack.length > 0) {
    const dir = stack[stack.length - 1]!;
    if (dir.next === dir.names.length) {
      stack.pop();
      continue;
    }
    const path = childPath(dir.path, bytesToWire(dir.names[dir.next++]!));
    const abs = paths.at(path);
    const st = fs.lstatSync(P(abs), { bigint: true });
    yield { path, abs, st };
    if (st.isDirectory()) stack.push({ path, names: await listing(abs), next: 0 });
  }
}

/**
 * The brick at `root` as snapshot entries (see the header), depth first, a directory
 * before its entries, names in byte order. The caller holds the brick still meanwhile.
 */
export async function* brickSnapshotFrames(root: string): AsyncGenerator<SnapshotFrame> {
  /** The first path of each inode with several names, by local device and inode. */
  const firstPaths = new Map<string, string>();
  const paths = new DeepPaths(root);
  try {
    const rootSt = fs.lstatSync(P(root), { bigint: true });
    if (!rootSt.isDirectory()) throw new Error(`${root} is not a directory`);
    // Attributes before the listing: reading a directory may move its atime.
    yield inodeFrame({ type: 'dir', ...inodeFields('/', root, rootSt) });
    for await (const { path, abs, st } of brickTree(root, paths)) {
      if (st.isDirectory()) {
        yield inodeFrame({ type: 'dir', ...inodeFields(path, abs, st) });
        continue;
      }
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        const firstPath = firstPaths.get(key);
        if (firstPath !== undefined) {
          yield inodeFrame({ type: 'link', path, firstPath });
          continue;
        }
        firstPaths.set(key, path);
      }
      if (st.isFile()) {
        yield* fileFrames(path, abs, st);
      } else {
        // A brick keeps FIFOs, sockets, devices and symlinks as regular files (brick.ts, Meta.kind).
        throw new Error(`${path}: a brick holds only directories and regular files, not mode ${st.mode.toString(8)}`);
      }
    }
  } finally {
    paths.clear();
  }
}

/** What `brickSnapshotFrames(root)` will send, counted before it sends anything so that
 * the receiver can show how far it got: names (directories, files, further hard links) and
 * file content bytes, each inode's once. A walk of listings and lstat only; the caller
 * holds the brick still, so the stream that follows has exactly these. On a huge tree the
 * count takes a while: every `everyMs` of it the generator yields the names counted so far
 * (the source sends them on, so that the receiver does not take the silence for a dead
 * peer); it returns the totals. */
export async function* brickSnapshotTotals(root: string, everyMs = Infinity): AsyncGenerator<number, { entries: number; bytes: number }> {
  const seen = new Set<string>();
  const paths = new DeepPaths(root);
  let entries = 1;
  let bytes = 0;
  let lastYieldMs = Date.now();
  const signOfLife = function* (): Generator<number> {
    if (Date.now() - lastYieldMs < everyMs) return;
    yield entries;
    lastYieldMs = Date.now();
  };
  try {
    for await (const { st } of brickTree(root, paths)) {
      yield* signOfLife();
      entries++;
      if (st.isDirectory()) continue;
      if (st.nlink > 1n) {
        const key = `${st.dev}:${st.ino}`;
        if (seen.has(key)) continue;
        seen.add(key);
      }
      if (st.isFile()) bytes += Number(st.size);
    }
    // And once the last listing is done, before the totals go.
    yield* signOfLife();
  } finally {
    paths.clear();
  }
  return { entries, bytes };
}

// ---- the writer ----

function refuse(message: string): never {
  throw new DfsError('BAD_REQUEST', `snapshot: ${message}`);
}

/** A directory the stream is inside: its times are set when the stream leaves it. */
interface OpenDir {
  path: string;
  atimeNs: bigint;
  mtimeNs: bigint;
}

/** The file whose content the stream is carrying. */
interface OpenFile {
  path: string;
  fh: FileHandle;
  mode: number;
  size: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  /** Where the next chunk or hole starts. */
  offset: number;
  /** The end of the last bytes written: below `size`, the file ends in a hole. */
  writtenEnd: number;
}

/**
 * Materializes a snapshot stream in a new directory. put() applies the entries in stream
 * order, finish() completes the tree: then every file and directory written has its
 * times and is fsynced (the root's parent is the caller's, which renames the root into
 * place). After a refused entry or a failed write the writer is unusable, and the caller
 * removes the directory.
 *
 * Metadata calls are synchronous, as in brick.ts (a few microseconds each); content
 * writes and fsyncs go through the thread pool.
 */
export class SnapshotWriter {
  /** The directories the stream is inside, the root first. */
  private readonly dirs: OpenDir[] = [];
  private file: OpenFile | null = null;
  private state: 'empty' | 'writing' | 'finished' | 'failed' = 'empty';

  private readonly paths: DeepPaths;

  private constructor(readonly root: string) {
    this.paths = new DeepPaths(root);
  }

  /** A writer into `root` (a wire string), which must not exist or be an empty directory.
   * It is made private to root until the root entry gives it its mode. */
  static async create(root: string): Promise<SnapshotWriter> {
    try {
      await fsp.mkdir(P(root), { mode: 0o700 });
    } catch (e) {
      if (!isErrnoException(e) || e.code !== 'EEXIST') throw e;
      if (!(await fsp.lstat(P(root))).isDirectory()) throw new Error(`${root} exists and is not a directory`);
      if ((await fsp.readdir(P(root))).length > 0) throw new Error(`${root} is not empty`);
      await fsp.chmod(P(root), 0o700);
    }
    return new SnapshotWriter(root);
  }

  /** Applies the next entry of the stream: a decoded frame's header (validated here) and
   * data. Refuses, with a DfsError (BAD_REQUEST), an entry that is invalid or out of order. */
  async put(header: unknown, data: Buffer): Promise<SnapshotEntryHeader> {
    if (this.state === 'finished' || this.state === 'failed') throw new Error(`snapshot writer for ${this.root} is ${this.state}`);
    try {
      const entry = parseSnapshotEntryHeader(header);
      await this.apply(entry, data);
      return entry;
    } catch (e) {
      await this.fail();
      throw e;
    }
  }

  /** The stream ended: completes the open file and every open directory. */
  async finish(): Promise<void> {
    if (this.state === 'finished' || this.state === 'failed') throw new Error(`snapshot writer for ${this.root} is ${this.state}`);
    try {
      if (this.state === 'empty') refuse('the stream ended before its root entry');
      await this.closeFile();
      while (this.dirs.length > 0) await this.closeDir(this.dirs.pop()!);
      this.paths.clear();
      this.state = 'finished';
    } catch (e) {
      await this.fail();
      throw e;
    }
  }

  /** Where `path` is for the OS: use it before resolving another (see the header). */
  private local(path: string): string {
    return this.paths.at(path);
  }

  private async apply(h: SnapshotEntryHeader, data: Buffer): Promise<void> {
    if (h.type === 'chunk' || h.type === 'hole') return this.putContent(h, data);
    await this.closeFile();
    if (this.state === 'empty') {
      if (h.type !== 'dir' || h.path !== '/') refuse(`the stream starts with ${h.type} ${h.path}, not the root directory`);
      this.state = 'writing';
    } else {
      if (h.path === '/') refuse('a second root entry');
      await this.enter(h.path);
    }
    if (h.type !== 'symlink' && data.length > 0) refuse(`${h.type} entry ${h.path} carries data`);
    const abs = this.local(h.path);
    switch (h.type) {
      case 'dir': {
        if (h.path !== '/') fs.mkdirSync(P(abs), BRICK_DIR_MODE);
        else fs.chmodSync(P(abs), BRICK_DIR_MODE);
        this.setXattrs(abs, h.xattrs);
        this.dirs.push({ path: h.path, atimeNs: BigInt(h.atimeNs), mtimeNs: BigInt(h.mtimeNs) });
        return;
      }
      case 'file': {
        const fh = await fsp.open(P(abs), C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, 0o600);
        this.file = { path: h.path, fh, mode: h.mode, size: h.size, atimeNs: BigInt(h.atimeNs), mtimeNs: BigInt(h.mtimeNs), offset: 0, writtenEnd: 0 };
        this.setXattrs(abs, h.xattrs);
        return; // the times and fsync once its content is in (closeFile)
      }
      case 'symlink':
        return refuse(`symlink ${h.path}: a brick holds no symlinks (brick.ts)`);
      case 'link': {
        this.checkWritten(h.firstPath);
        const first = this.paths.pin(h.firstPath);
        try {
          fs.linkSync(P(first.path), P(this.local(h.path))); // link(2) does not follow a symlink
        } finally {
          first.release();
        }
        return;
      }
    }
  }

  /**
   * Makes the parent of `path` the directory the stream is in: the stream leaves (and
   * completes) the directories below it. The parent must be one the stream is inside:
   * otherwise it was not written yet, or the stream left it already and a depth-first
   * stream does not come back.
   */
  private async enter(path: string): Promise<void> {
    const parent = parentOf(path);
    let at = this.dirs.length - 1;
    while (at >= 0 && this.dirs[at]!.path !== parent) at--;
    if (at < 0) refuse(`${path} arrives out of order: its directory ${parent} was not written yet, or the stream already left it`);
    while (this.dirs.length > at + 1) await this.closeDir(this.dirs.pop()!);
  }

  /** `path` names an entry written earlier, not a directory, reached through real
   * directories only (a symlink the stream wrote could lead anywhere). */
  private checkWritten(path: string): void {
    try {
      this.paths.checkDir(parentOf(path)); // each one opened with O_NOFOLLOW | O_DIRECTORY
    } catch (e) {
      if (isErrnoException(e) && ['ENOENT', 'ENOTDIR', 'ELOOP'].includes(e.code)) refuse(`link to ${path}, which is not under directories written earlier`);
      throw e;
    }
    const st = lstatOrNull(P(this.local(path)));
    if (st === null) refuse(`link to ${path}, which was not written yet`);
    if (st.isDirectory()) refuse(`link to the directory ${path}`);
  }

  private setXattrs(abs: string, xattrs: Record<string, string>): void {
    for (const [name, value] of Object.entries(xattrs)) xattrSet(abs, name, Buffer.from(value, 'base64'));
  }

  private async putContent(h: Extract<SnapshotEntryHeader, { type: 'chunk' | 'hole' }>, data: Buffer): Promise<void> {
    const f = this.file;
    if (f === null || f.path !== h.path) refuse(`content for ${h.path} does not follow its file entry`);
    if (h.offset !== f.offset) refuse(`content for ${h.path} at offset ${h.offset}, where ${f.offset} was next`);
    let n: number;
    if (h.type === 'chunk') {
      n = data.length;
      if (n === 0 || n > SNAPSHOT_CHUNK_BYTES) refuse(`a chunk of ${h.path} carries ${n} bytes, not 1 to ${SNAPSHOT_CHUNK_BYTES}`);
    } else {
      n = h.size;
      if (data.length > 0) refuse(`a hole in ${h.path} carries data`);
    }
    if (f.offset + n > f.size) refuse(`content for ${h.path} runs past its size ${f.size}`);
    if (h.type === 'chunk') await this.writeSparse(f, data);
    f.offset += n;
  }

  /** Writes a chunk at the file's offset, leaving out the blocks that are all zeros: they
   * stay holes, so a file as sparse as the source's is as sparse here. */
  private async writeSparse(f: OpenFile, data: Buffer): Promise<void> {
    let at = 0;
    while (at < data.length) {
      // The next block boundary of the file, so that skipped ranges are whole blocks.
      const blockEnd = (i: number) => Math.min(data.length, i + SPARSE_BLOCK_BYTES - ((f.offset + i) % SPARSE_BLOCK_BYTES));
      const isZero = (i: number) => data.subarray(i, blockEnd(i)).equals(ZEROS.subarray(0, blockEnd(i) - i));
      while (at < data.length && isZero(at)) at = blockEnd(at);
      let end = at;
      while (end < data.length && !isZero(end)) end = blockEnd(end);
      for (let done = at; done < end; ) done += (await f.fh.write(data, done, end - done, f.offset + done)).bytesWritten;
      if (end > at) f.writtenEnd = f.offset + end;
      at = end;
    }
  }

  /** The open file's content is complete: its size, mode and times, then fsync. */
  private async closeFile(): Promise<void> {
    const f = this.file;
    if (f === null) return;
    this.file = null;
    try {
      if (f.offset !== f.size) refuse(`${f.path} ended after ${f.offset} of its ${f.size} bytes`);
      if (f.writtenEnd < f.size) await f.fh.truncate(f.size); // a trailing hole
      await f.fh.utimes(utimesArg(f.atimeNs), utimesArg(f.mtimeNs));
      await f.fh.sync();
    } finally {
      await f.fh.close();
    }
  }

  /** The stream left a directory: nothing changes it any more, so its times, then fsync
   * (which also makes its entries durable: names, symlinks and hard links). */
  private async closeDir(d: OpenDir): Promise<void> {
    const fh = await fsp.open(P(this.local(d.path)), C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW);
    try {
      await fh.utimes(utimesArg(d.atimeNs), utimesArg(d.mtimeNs));
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  private async fail(): Promise<void> {
    this.state = 'failed';
    this.paths.clear();
    const f = this.file;
    this.file = null;
    await f?.fh.close().catch(() => undefined); // already failing: the first error is the one to report
  }
}

function lstatOrNull(p: string | Buffer): fs.Stats | null {
  try {
    return fs.lstatSync(p);
  } catch (e) {
    if (isErrnoException(e) && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return null;
    throw e;
  }
}
