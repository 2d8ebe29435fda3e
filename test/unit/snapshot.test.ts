/* Full sync: a brick streamed out as frames, cut into pieces of any size, and materialized
 * elsewhere is the same brick; and a stream that is damaged or out of order is refused. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Brick } from '../../storage/brick';
import { brickSnapshotFrames, brickSnapshotTotals, parseSnapshotEntryHeader, SNAPSHOT_CHUNK_BYTES, SnapshotWriter, utimesArg } from '../../storage/snapshot';
import { encodeFrame, FrameStreamDecoder } from '../../common/frame';
import { bytesToWire, wireToBytes } from '../../common/names';
import type { Op } from '../../common/ops';
import { useXattrScratchDir } from '../../storage/xattr';
import { prng, type Prng } from '../helpers/prng';
import { tempDir } from '../helpers/temp';

const T = 1_700_000_000_000;
const none = Buffer.alloc(0);
const MIB = 1024 * 1024;

async function withDirs(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = tempDir('snapshot');
  try {
    await fn(dir.path);
  } finally {
    dir.remove();
  }
}

/** The source brick: every kind of entry a brick holds. */
function buildSource(b: Brick, rng: Prng): void {
  let seq = 0;
  const apply = (op: Op, data: Buffer = none) => {
    const r = b.apply(op, data, T + seq * 7 + 0.25, ++seq);
    assert.is(r.errno, undefined, `${op.type} ${'path' in op ? op.path : ''}`);
  };
  const create = (path: string, mode = 0o644, uid = 0, gid = 0) => apply({ type: 'create', path, mode, uid, gid, exclusive: true });
  const weird = bytesToWire(Buffer.from([0x66, 0xff])); // "f" and a byte that is not UTF-8
  apply({ type: 'mkdir', path: '/a', mode: 0o755, uid: 0, gid: 0 });
  apply({ type: 'mkdir', path: '/a/b', mode: 0o750, uid: 10, gid: 20 });
  apply({ type: 'mkdir', path: '/g', mode: 0o2775, uid: 0, gid: 50 });
  apply({ type: 'mkdir', path: '/a/b/deep', mode: 0o700, uid: 0, gid: 0 });
  create('/a/b/big');
  apply({ type: 'write', path: '/a/b/big', offset: 0 }, rng.bytes(2 * MIB + 12345)); // three chunks
  create('/a/b/deep/exact');
  apply({ type: 'write', path: '/a/b/deep/exact', offset: 0 }, rng.bytes(SNAPSHOT_CHUNK_BYTES));
  create('/a/empty', 0o600, 7, 8);
  create('/a/small');
  apply({ type: 'write', path: '/a/small', offset: 0 }, Buffer.from('hello'));
  apply({ type: 'setxattr', path: '/a/small', name: 'user.color', flags: 0 }, Buffer.from('blue'));
  apply({ type: 'setxattr', path: '/a/small', name: 'trusted.mine', flags: 0 }, Buffer.from([0, 1, 2, 255]));
  apply({ type: 'setxattr', path: '/a', name: 'user.empty', flags: 0 }, none);
  apply({ type: 'utimens', path: '/a/small', atimeMs: T - 1000, mtimeMs: T - 2000, atimeNsec: 123_456, mtimeNsec: 999_999 });
  // Sparse: a few bytes, then zeros up to 3 MiB + 1 made by growing it.
  create('/sparse');
  apply({ type: 'write', path: '/sparse', offset: 10 }, Buffer.from('x'));
  apply({ type: 'truncate', path: '/sparse', size: 3 * MIB + 1 });
  apply({ type: 'symlink', path: '/a/sym', target: '../sparse', uid: 5, gid: 6 });
  apply({ type: 'symlink', path: '/dangling', target: `/nowhere/${weird}`, uid: 0, gid: 0 });
  apply({ type: 'setxattr', path: '/dangling', name: 'trusted.onlink', flags: 0 }, Buffer.from('s'));
  // One inode, three names in two directories.
  create('/a/h1', 0o640, 3, 4);
  apply({ type: 'write', path: '/a/h1', offset: 0 }, Buffer.from('linked'));
  apply({ type: 'link', from: '/a/h1', to: '/g/h2' });
  apply({ type: 'link', from: '/a/h1', to: '/a/h3' });
  apply({ type: 'mknod', path: '/fifo', mode: 0o010644, rdev: 0, uid: 0, gid: 0 });
  apply({ type: 'mknod', path: '/g/chr', mode: 0o020640, rdev: 0x0103, uid: 0, gid: 0 });
  create('/suid', 0o4755, 1234, 1234);
  apply({ type: 'write', path: '/suid', offset: 0 }, Buffer.from('#!/bin/sh\n'));
  create('/g/inherits'); // takes the group of its setgid directory
  apply({ type: 'mkdir', path: '/g/sub', mode: 0o755, uid: 0, gid: 0 }); // keeps setgid
  create(`/${weird}`);
  apply({ type: 'write', path: `/${weird}`, offset: 0 }, Buffer.from('not utf-8'));
  apply({ type: 'setxattr', path: `/${weird}`, name: 'user.k', flags: 0 }, Buffer.from('v'));
  apply({ type: 'mkdir', path: `/d${weird}`, mode: 0o711, uid: 0, gid: 0 });
  apply({ type: 'setxattr', path: `/d${weird}`, name: 'user.d', flags: 0 }, Buffer.from('dir'));
  create(`/d${weird}/${weird}`);
  apply({ type: 'link', from: `/d${weird}/${weird}`, to: `/d${weird}/again` });
  // The last op moves the root's own times after its entries' creation.
  apply({ type: 'utimens', path: '/', atimeMs: T + 1_000_000, mtimeMs: T + 2_000_000, atimeNsec: 1, mtimeNsec: 2 });
}

interface LocalTimes {
  mode: number;
  uid: number;
  gid: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ino: bigint;
  nlink: bigint;
  isDir: boolean;
}

/** lstat of every entry, by wire path (lstat moves no time). */
function localStats(root: string): Map<string, LocalTimes> {
  const out = new Map<string, LocalTimes>();
  const walk = (path: string) => {
    const abs = wireToBytes(path === '/' ? root : root + path);
    const st = lstatSync(abs, { bigint: true });
    out.set(path, { mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, ino: st.ino, nlink: st.nlink, isDir: st.isDirectory() });
    if (!st.isDirectory()) return;
    for (const name of readdirSync(abs, { encoding: 'buffer' })) walk(`${path === '/' ? '' : path}/${bytesToWire(name)}`);
  };
  walk('/');
  return out;
}

/** Streams `src` into a new `dst` as a peer would over HTTP: frames encoded, cut into
 * pieces of random sizes across frame boundaries, decoded and written. */
async function copyThroughFrames(src: string, dst: string, rng: Prng): Promise<{ frames: number; pieces: number; types: Record<string, number>; contentBytes: number }> {
  const writer = await SnapshotWriter.create(dst);
  const decoder = new FrameStreamDecoder();
  let carry = Buffer.alloc(0);
  let frames = 0;
  let pieces = 0;
  const types: Record<string, number> = {};
  let contentBytes = 0;
  const feed = async (piece: Buffer) => {
    pieces++;
    for (const f of decoder.push(piece)) {
      frames++;
      await writer.put(f.header, f.data);
    }
  };
  const pieceBytes = () => (rng.int(4) === 0 ? 1 + rng.int(16) : 1 + rng.int(300_000));
  for await (const { header, data } of brickSnapshotFrames(src)) {
    types[header.type] = (types[header.type] ?? 0) + 1;
    contentBytes += header.type === 'chunk' ? data.length : header.type === 'hole' ? header.size : 0;
    carry = Buffer.concat([carry, encodeFrame(header, data)]);
    for (let n = pieceBytes(); carry.length >= n; n = pieceBytes()) {
      await feed(carry.subarray(0, n));
      carry = carry.subarray(n);
    }
  }
  if (carry.length > 0) await feed(carry);
  decoder.end();
  await writer.finish();
  return { frames, pieces, types, contentBytes };
}

test('a brick streamed through frames in random pieces is materialized as the same brick', () =>
  withDirs(async (dir) => {
    const rng = prng(20240611);
    const source = await Brick.open(join(dir, 'source'));
    buildSource(source, rng);
    const before = localStats(source.root);
    const dst = join(dir, 'copy');
    // Counting: with everyMs 0 it says how far it got at every step, then the totals.
    const census = brickSnapshotTotals(source.root, 0);
    const counted: number[] = [];
    let step = await census.next();
    for (; !step.done; step = await census.next()) counted.push(step.value);
    const totals = step.value;
    assert.ok(counted.length > 10 && counted.every((n, i) => i === 0 || n >= counted[i - 1]!), 'counting frames, going forward');
    const { frames, pieces, types, contentBytes } = await copyThroughFrames(source.root, dst, rng);
    assert.ok(pieces > frames, 'frames were cut into pieces');
    // Chunks: big 3, exact 1, small, h1, suid, the non-UTF-8 file 1 each, sparse 1 and a
    // hole, and the two symlinks' targets (a brick keeps a symlink as a file: brick.ts).
    assert.equal(types, { dir: 7, file: 14, chunk: 11, hole: 1, link: 3 });
    // The totals a source announces before it streams: every name, and the content of
    // every inode once (a hole's zeros included).
    assert.equal(totals, { entries: 7 + 14 + 3, bytes: contentBytes });

    const after = localStats(dst);
    assert.equal([...after.keys()].sort(), [...before.keys()].sort(), 'the same names');
    for (const [path, s] of before) {
      const c = after.get(path)!;
      assert.is(c.mode, s.mode, `${path} mode`);
      assert.is(c.uid, s.uid, `${path} uid`);
      assert.is(c.gid, s.gid, `${path} gid`);
      assert.is(c.nlink, s.nlink, `${path} nlink`);
      assert.is(c.mtimeNs / 1000n, s.mtimeNs / 1000n, `${path} local mtime to the microsecond`);
      // Listing a directory may move its atime (relatime); a file's is read with O_NOATIME.
      if (!s.isDir) assert.is(c.atimeNs / 1000n, s.atimeNs / 1000n, `${path} local atime to the microsecond`);
    }
    // On the brick everything is the node's own and private; the cluster's owners and
    // modes (setuid and setgid among them) are in the identity attribute, copied exactly.
    for (const [path, s] of after) assert.is(s.mode & 0o7777, s.isDir ? 0o700 : 0o600, `${path}: local mode ${s.mode.toString(8)}`);
    const copy = await Brick.open(dst);
    assert.is((await copy.attr('/suid')).mode, 0o104755, 'setuid kept although chown clears it');
    assert.is((await copy.attr('/suid')).uid, 1234);
    assert.is((await copy.attr('/g')).mode & 0o2000, 0o2000, 'setgid directory');
    assert.is((await copy.attr('/g/sub')).mode & 0o2000, 0o2000);
    assert.is((await copy.attr('/g/inherits')).gid, 50);
    assert.is(await copy.readlink('/a/sym'), '../sparse');
    const h = ['/a/h1', '/g/h2', '/a/h3'].map((p) => after.get(p)!);
    assert.ok(h.every((e) => e.ino === h[0]!.ino && e.nlink === 3n), 'hard links share one local inode');
    assert.ok(after.get('/a/h1')!.ino !== after.get('/a/small')!.ino);
    const sparse = lstatSync(join(dst, 'sparse'));
    assert.is(sparse.size, 3 * MIB + 1);
    assert.ok(sparse.blocks * 512 <= 64 * 1024, `the zeros stay holes (${sparse.blocks} blocks)`);

    assert.is(copy.appliedSeqMark(), source.appliedSeqMark(), 'user.dfs.applied');
    const progress = { entries: 0, bytes: 0, totalEntries: null as number | null, totalBytes: null as number | null };
    const [want, got] = [await source.manifest(progress), await copy.manifest()];
    assert.ok(want.length > 20);
    // verify's progress ends at its totals: every entry, every file name's bytes hashed.
    const hashed = want.reduce((sum, e) => sum + (e.sha256 !== undefined ? e.attr.size : 0), 0);
    assert.equal(progress, { entries: want.length, bytes: hashed, totalEntries: want.length, totalBytes: hashed });
    assert.equal(got, want);
  }));

test('local times land on the microsecond, before 1970 too', () =>
  withDirs(async (dir) => {
    useXattrScratchDir(join(dir, 'scratch'));
    const cases = ['0', '999', '1000', '1700000000000001000', '1700000000000001999', '1700000000123456789', '4102444800000000001', '-1', '-1699999999', '-1700000000'];
    for (const ns of cases) {
      const w = await SnapshotWriter.create(join(dir, `t${ns}`));
      await w.put({ type: 'dir', path: '/', mode: 0o40755, uid: 0, gid: 0, atimeNs: ns, mtimeNs: ns, xattrs: {} }, none);
      await w.finish();
      const st = lstatSync(join(dir, `t${ns}`), { bigint: true });
      const floorUs = (v: bigint) => (v >= 0n ? v / 1000n : -((-v + 999n) / 1000n));
      assert.is(st.mtimeNs, floorUs(BigInt(ns)) * 1000n, `${ns} (passed as ${utimesArg(BigInt(ns))})`);
    }
  }));

const root = { type: 'dir', path: '/', mode: 0o40755, uid: 0, gid: 0, atimeNs: '0', mtimeNs: '0', xattrs: {} };
const dirEntry = (path: string) => ({ ...root, path });
const fileEntry = (path: string, size: number) => ({ ...root, type: 'file', path, mode: 0o100644, size });

/** Puts the entries in order; the error of the first refused one, or null. */
async function refusal(dir: string, entries: Array<[unknown, Buffer?]>, finish = false): Promise<string | null> {
  useXattrScratchDir(join(dir, 'scratch'));
  const w = await SnapshotWriter.create(join(dir, `w${readdirSync(dir).length}`));
  try {
    for (const [header, data] of entries) await w.put(header, data ?? none);
    if (finish) await w.finish();
  } catch (e) {
    // A writer that refused once refuses everything after.
    let again = '';
    await w.put(root, none).catch((e2: Error) => (again = e2.message));
    assert.match(again, /failed/);
    return (e as Error).message;
  }
  return null;
}

test('out-of-order, invalid and incomplete entries are refused', () =>
  withDirs(async (dir) => {
    writeFileSync(join(dir, 'outside'), 'outside the new tree');
    const cases: Array<[string, Array<[unknown, Buffer?]>, RegExp, boolean?]> = [
      ['a chunk at the wrong offset', [[root], [fileEntry('/f', 10)], [{ type: 'chunk', path: '/f', offset: 0 }, Buffer.from('abc')], [{ type: 'chunk', path: '/f', offset: 2 }, Buffer.from('x')]], /offset 2, where 3/],
      ['a chunk of another file', [[root], [fileEntry('/f', 0)], [fileEntry('/g', 1)], [{ type: 'chunk', path: '/f', offset: 0 }, Buffer.from('x')]], /does not follow its file entry/],
      ['a chunk with no file', [[root], [dirEntry('/d')], [{ type: 'chunk', path: '/d', offset: 0 }, Buffer.from('x')]], /does not follow its file entry/],
      ['a chunk past the size', [[root], [fileEntry('/f', 2)], [{ type: 'chunk', path: '/f', offset: 0 }, Buffer.from('abc')]], /past its size/],
      ['a file cut short', [[root], [fileEntry('/f', 5)], [{ type: 'chunk', path: '/f', offset: 0 }, Buffer.from('abc')], [fileEntry('/g', 0)]], /ended after 3 of its 5 bytes/],
      ['a file cut short at the end', [[root], [fileEntry('/f', 5)]], /ended after 0 of its 5 bytes/, true],
      ['a parent not written', [[root], [fileEntry('/nodir/f', 0)]], /out of order/],
      ['a directory the stream left', [[root], [dirEntry('/a')], [dirEntry('/b')], [fileEntry('/a/late', 0)]], /out of order/],
      ['no root first', [[dirEntry('/a')]], /not the root directory/],
      ['a second root', [[root], [root]], /second root/],
      ['no root at all', [], /before its root entry/, true],
      ['the same path twice', [[root], [fileEntry('/f', 0)], [dirEntry('/f')]], /EEXIST/],
      ['a link to a path not written', [[root], [{ type: 'link', path: '/l', firstPath: '/nope' }]], /not written yet/],
      ['a link to a directory', [[root], [dirEntry('/d')], [{ type: 'link', path: '/l', firstPath: '/d' }]], /directory/],
      ['a symlink (a brick holds none)', [[root], [{ ...root, type: 'symlink', path: '/s', mode: 0o120777 }, Buffer.from(dir)], [{ type: 'link', path: '/l', firstPath: '/s/outside' }]], /holds no symlinks/],
      ['a link through a file', [[root], [fileEntry('/s', 0)], [{ type: 'link', path: '/l', firstPath: '/s/outside' }]], /not under directories/],
      ['a trusted attribute', [[{ ...root, xattrs: { 'trusted.x': 'AA==' } }]], /invalid snapshot entry: xattrs/],
      ['data on a directory', [[root, Buffer.from('x')]], /carries data/],
      ['a mode of the wrong type', [[root], [{ ...fileEntry('/f', 0), mode: 0o40755 }]], /invalid snapshot entry: mode/],
      ['a security attribute', [[{ ...root, xattrs: { 'security.capability': 'AA==' } }]], /invalid snapshot entry: xattrs/],
      ['a time that is not decimal', [[{ ...root, mtimeNs: '1e9' }]], /invalid snapshot entry: mtimeNs/],
    ];
    for (const [what, entries, want, finish] of cases) {
      const message = await refusal(dir, entries, finish);
      assert.ok(message !== null, `${what}: accepted`);
      assert.match(message!, want, what);
    }
    assert.is(lstatSync(join(dir, 'outside')).nlink, 1, 'nothing was linked through the symlink');
    assert.is(await refusal(dir, [[root], [fileEntry('/f', 3)], [{ type: 'hole', path: '/f', offset: 0, size: 3 }]], true), null, 'a file of zeros is one hole');
  }));

test('paths with .., ., empty components, NUL or stray surrogates are refused', () => {
  for (const path of ['/a/../b', '/..', '/a/./b', '/a//b', '/a/', 'a', '', '/a\0b', '/\ud800']) {
    for (const h of [dirEntry(path), { type: 'link', path: '/ok', firstPath: path }, { type: 'chunk', path, offset: 0 }]) {
      assert.throws(() => parseSnapshotEntryHeader(h), /invalid snapshot entry/, JSON.stringify(h));
    }
  }
  assert.is(parseSnapshotEntryHeader(dirEntry(`/${bytesToWire(Buffer.from([0xff]))}/x`)).path.length, 4);
});

test('the frame stream decoder: any piece sizes, a torn end, damage and limits', () => {
  const frames = [encodeFrame({ n: 1 }), encodeFrame({ n: 2 }, Buffer.alloc(70_000, 9)), encodeFrame({ n: 3 }, Buffer.from('x'))];
  const body = Buffer.concat(frames);
  for (const size of [1, 5, 12, 13, 1000, body.length]) {
    const d = new FrameStreamDecoder();
    const got: number[] = [];
    for (let at = 0; at < body.length; at += size) for (const f of d.push(body.subarray(at, at + size))) got.push((f.header as { n: number }).n);
    d.end();
    assert.equal(got, [1, 2, 3], `pieces of ${size}`);
  }
  const torn = new FrameStreamDecoder();
  assert.is(torn.push(body.subarray(0, body.length - 1)).length, 2);
  assert.throws(() => torn.end(), /truncated frame/);
  const short = new FrameStreamDecoder();
  short.push(body.subarray(0, 5));
  assert.throws(() => short.end(), /truncated frame/);

  const flipped = Buffer.from(frames[1]!);
  flipped[flipped.length - 1] ^= 1;
  assert.throws(() => new FrameStreamDecoder().push(flipped), /checksum/);
  const huge = Buffer.from(frames[0]!);
  huge.writeUInt32BE(4 * MIB + 1, 4);
  // Refused from the prefix alone, without waiting for 4 MiB.
  assert.throws(() => new FrameStreamDecoder().push(huge.subarray(0, 12)), /over the limits/);
});

test('a writer refuses a root that is not empty, and makes its own', () =>
  withDirs(async (dir) => {
    mkdirSync(join(dir, 'full', 'x'), { recursive: true });
    await SnapshotWriter.create(join(dir, 'full')).then(
      () => assert.unreachable('accepted'),
      (e: Error) => assert.match(e.message, /not empty/),
    );
    await SnapshotWriter.create(join(dir, 'new'));
    assert.is(lstatSync(join(dir, 'new')).mode & 0o7777, 0o700, 'private until the root entry');
  }));

test.run();
