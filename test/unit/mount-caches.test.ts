/*
 * The mount's read-side caches: read-ahead windows (mount/read-ahead.ts) and the attribute
 * cache (mount/attr-cache.ts): what they serve, when they fetch, what invalidates them.
 *
 *   node dist/test/unit/mount-caches.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Attr } from '../../common/api';
import { AttrCache } from '../../mount/attr-cache';
import { READ_AHEAD_DEPTH, ReadAhead } from '../../mount/read-ahead';
import { rejects } from './mount-test-helpers';

function fileOf(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

function fakeFile(content: Buffer) {
  const fetches: Array<[number, number]> = [];
  const fetch = async (offset: number, size: number): Promise<Buffer> => {
    fetches.push([offset, size]);
    return Buffer.from(content.subarray(offset, offset + size));
  };
  return { fetches, fetch };
}

const KIB = 1024;

test('sequential 128 KiB reads are served from 1 MiB windows, fetched ahead up to the size known', async () => {
  const content = fileOf(3 * 1024 * KIB + 100);
  const { fetches, fetch } = fakeFile(content);
  const ra = new ReadAhead(fetch, 1024 * KIB, () => content.length);
  const out: Buffer[] = [];
  for (let off = 0; off < content.length; off += 128 * KIB) out.push(await ra.read(off, 128 * KIB));
  assert.ok(Buffer.concat(out).equals(content));
  // 4 windows cover 3 MiB + 100 bytes; the 4th comes back short (end of file) and no 5th is asked for.
  assert.equal(fetches, [
    [0, 1024 * KIB],
    [1024 * KIB, 1024 * KIB],
    [2048 * KIB, 1024 * KIB],
    [3072 * KIB, 1024 * KIB],
  ]);
  const eof = await ra.read(content.length, 128 * KIB);
  assert.is(eof.length, 0, 'a read at the end of file inside a short window is empty, with no fetch');
  assert.is(fetches.length, 4);
});

test('without a size, windows go READ_AHEAD_DEPTH ahead; at the end of file the short one stops them', async () => {
  const content = fileOf(6 * 1024 * KIB + 100);
  const { fetches, fetch } = fakeFile(content);
  const ra = new ReadAhead(fetch, 1024 * KIB);
  const first = await ra.read(0, 128 * KIB);
  assert.ok(first.equals(content.subarray(0, 128 * KIB)));
  assert.is(fetches.length, 1, 'the first read fetches its window only');
  await ra.read(128 * KIB, 512 * KIB); // past the middle of the first window
  assert.equal(
    fetches.map(([offset]) => offset / (1024 * KIB)),
    [0, 1, 2, 3],
    'past the middle of a full window, the next READ_AHEAD_DEPTH windows are asked for at once',
  );
  assert.is(READ_AHEAD_DEPTH, 3);
  const out: Buffer[] = [first, content.subarray(128 * KIB, 640 * KIB)];
  for (let off = 640 * KIB; off < content.length; off += 128 * KIB) out.push(await ra.read(off, 128 * KIB));
  assert.ok(Buffer.concat(out).equals(content));
  // Windows 0..6 hold the file (the 7th is short); none past the short one was started
  // after it came back, and none is fetched twice.
  const offsets = fetches.map(([offset]) => offset / (1024 * KIB));
  assert.equal(offsets, [...new Set(offsets)].sort((a, b) => a - b));
  assert.ok(offsets.at(-1)! <= 6 + READ_AHEAD_DEPTH - 1, `fetched ${offsets.join(',')}`);
});

test('a random read fetches exactly what it asks and starts no window', async () => {
  const content = fileOf(4 * 1024 * KIB);
  const { fetches, fetch } = fakeFile(content);
  const ra = new ReadAhead(fetch, 1024 * KIB);
  const b = await ra.read(2 * 1024 * KIB + 5, 4 * KIB);
  assert.ok(b.equals(content.subarray(2 * 1024 * KIB + 5, 2 * 1024 * KIB + 5 + 4 * KIB)));
  assert.equal(fetches, [[2 * 1024 * KIB + 5, 4 * KIB]]);
  assert.is(ra.windowCount, 0);
});

test('concurrent reads inside one window share its fetch', async () => {
  const content = fileOf(1024 * KIB);
  const { fetches, fetch } = fakeFile(content);
  const ra = new ReadAhead(fetch, 1024 * KIB);
  const [a, b] = await Promise.all([ra.read(0, 128 * KIB), ra.read(128 * KIB, 128 * KIB)]);
  assert.ok(Buffer.concat([a, b]).equals(content.subarray(0, 256 * KIB)));
  assert.is(fetches.length, 1);
});

test('invalidate drops the windows: the next read fetches again', async () => {
  const content = fileOf(1024 * KIB);
  const { fetches, fetch } = fakeFile(content);
  const ra = new ReadAhead(fetch, 1024 * KIB);
  await ra.read(0, 128 * KIB);
  content.fill(0xee, 128 * KIB, 256 * KIB); // the file changed (a write through this mount)
  ra.invalidate();
  const b = await ra.read(128 * KIB, 128 * KIB);
  assert.ok(b.every((x) => x === 0xee));
  assert.is(fetches.length, 2);
});

test('a failed fetch reaches the reader and is not cached', async () => {
  let fail = true;
  const ra = new ReadAhead(async (_offset, size) => {
    if (fail) throw new Error('cluster down');
    return Buffer.alloc(size, 1);
  }, 1024 * KIB);
  await rejects(() => ra.read(0, 128 * KIB), /cluster down/);
  fail = false;
  const b = await ra.read(0, 128 * KIB);
  assert.is(b.length, 128 * KIB);
});

function attr(ino: number, size = 0): Attr {
  return { ino, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size, blocks: 0, atimeMs: 0, mtimeMs: 0, ctimeMs: 0 };
}

test('attributes expire after the TTL', () => {
  let now = 1000;
  const c = new AttrCache(500, 100, () => now);
  c.set('/a', attr(1));
  assert.is(c.get('/a')?.ino, 1);
  now += 499;
  assert.ok(c.get('/a'));
  now += 1;
  assert.is(c.get('/a'), undefined);
});

test('a TTL of 0 keeps nothing the cluster answered, and what this mount\'s own ops returned only briefly', () => {
  let now = 1000;
  const c = new AttrCache(0, 100, () => now, 200);
  c.set('/a', attr(1));
  assert.is(c.get('/a'), undefined, 'a fetched answer is not kept');
  c.setOwn('/b', attr(2));
  assert.is(c.get('/b')?.ino, 2, "the kernel's getattr right after the op is answered here");
  now += 199;
  assert.ok(c.get('/b'));
  now += 1;
  assert.is(c.get('/b'), undefined, 'gone after the own-change TTL');
  c.setOwn('/b', attr(2));
  c.invalidate('/b');
  assert.is(c.get('/b'), undefined, 'invalidated like any entry');
  c.setOwn('/b', attr(2));
  c.set('/b', attr(5));
  assert.is(c.get('/b'), undefined, 'a fresher answer from the cluster replaces it, kept or not');
  const longer = new AttrCache(1000, 100, () => now, 200);
  longer.setOwn('/c', attr(3));
  now += 999;
  assert.ok(longer.get('/c'), 'a longer --attr-timeout-ms wins');
});

test('invalidate drops the path, its parent and every name of the same inode', () => {
  const c = new AttrCache(10_000);
  c.set('/d', attr(10));
  c.set('/d/a', attr(1));
  c.set('/e/hardlink', attr(1));
  c.set('/d/b', attr(2));
  c.invalidate('/d/a');
  assert.is(c.get('/d/a'), undefined);
  assert.is(c.get('/d'), undefined, 'the parent changed too (mtime, nlink)');
  assert.is(c.get('/e/hardlink'), undefined, 'the other name of the inode');
  assert.ok(c.get('/d/b'), 'a sibling is untouched');
});

test('invalidateTree drops everything below a renamed or removed directory', () => {
  const c = new AttrCache(10_000);
  ['/', '/d', '/d/x', '/d/x/y', '/dd', '/e'].forEach((p, i) => c.set(p, attr(i + 1)));
  c.invalidateTree('/d');
  assert.equal(
    ['/', '/d', '/d/x', '/d/x/y', '/dd', '/e'].map((p) => c.get(p) !== undefined),
    [false, false, false, false, true, true],
  );
});

test('setIfUnchanged refuses an answer fetched across a change to what it describes, not to something else', () => {
  const c = new AttrCache(10_000);
  let g = c.generation;
  c.invalidate('/x'); // a change raced with the fetch
  c.setIfUnchanged('/a', attr(1), g);
  assert.ok(c.get('/a'), 'a change to another name leaves the answer good');
  g = c.generation;
  c.invalidate('/a/b'); // changes /a/b and its directory /a
  c.setIfUnchanged('/a', attr(1), g);
  assert.is(c.get('/a'), undefined, 'the directory of a changed name changed too');
  c.setIfUnchanged('/a', attr(1), c.generation);
  assert.ok(c.get('/a'));
});

test('changedSince: a path, a name of the same inode, a tree above, everything', () => {
  const c = new AttrCache(10_000);
  c.set('/d/f', attr(7));
  c.set('/e/link', attr(7));
  let g = c.generation;
  assert.not.ok(c.changedSince(g, '/d/f', 7));
  c.invalidate('/e/link'); // a change through another name of inode 7
  assert.ok(c.changedSince(g, '/d/f', 7), 'the inode changed');
  assert.ok(c.changedSince(g, '/d/f'), 'its cached names are counted as changed too');
  assert.not.ok(c.changedSince(g, '/d/g', 8));
  g = c.generation;
  c.invalidateTree('/d');
  assert.ok(c.changedSince(g, '/d/x/y/z'), 'below a moved tree');
  assert.not.ok(c.changedSince(g, '/dd/x'));
  g = c.generation;
  c.clear();
  assert.ok(c.changedSince(g, '/anything'));
  g = c.generation;
  for (let i = 0; i < 5000; i++) c.forget(`/many/${i}`); // past the record's bound
  assert.ok(c.changedSince(g, '/unrelated'), 'a pruned record counts everything as changed');
  assert.not.ok(c.changedSince(c.generation, '/unrelated'));
});

test('the cache is bounded: the oldest entry goes first', () => {
  const c = new AttrCache(10_000, 3);
  for (let i = 0; i < 5; i++) c.set(`/f${i}`, attr(i));
  assert.is(c.size, 3);
  assert.is(c.get('/f0'), undefined);
  assert.is(c.get('/f1'), undefined);
  assert.ok(c.get('/f4'));
  c.invalidateIno(4);
  assert.is(c.get('/f4'), undefined);
});

test.run();
