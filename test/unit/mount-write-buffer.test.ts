/*
 * mount/write-buffer.ts: how the kernel's writes become chunks (sequential) or packed
 * extents (random), with the bytes of a model file; what is in flight at once and in which
 * order overlapping versions go; the bounds and timers that send without a flush; that
 * flush waits for everything, and that a failed background send is reported (never
 * dropped). The sender is a fake that records ops and resolves when told to.
 *
 *   node dist/test/unit/mount-write-buffer.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DfsError } from '../../common/errors';
import { validateWriteExtents } from '../../common/ops';
import { DirtyBudget, extentsOverlap, resolveWriteBufferLimits, WriteBuffer, type Extent } from '../../mount/write-buffer';
import { rejects } from './mount-test-helpers';

interface Sent {
  offset: number;
  data: Buffer;
  extents: Extent[] | undefined;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A sender whose sends complete only when the test says so (or at once with `auto`). */
function fakeSender(auto: boolean) {
  const sent: Sent[] = [];
  const send = (offset: number, data: Buffer, extents?: Extent[]): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      // Copy: the buffer is the write buffer's own; a real sender would send it now.
      sent.push({ offset, data: Buffer.from(data), extents: extents && extents.map(([o, n]): Extent => [o, n]), resolve, reject });
      if (auto) resolve();
    });
  return { sent, send };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

async function until(cond: () => boolean, timeoutMs = 2000): Promise<void> {
  const t0 = Date.now();
  while (!cond() && Date.now() - t0 < timeoutMs) await new Promise((r) => setTimeout(r, 2));
}

function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

test('contiguous writes coalesce into one chunk sent on flush', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4 });
  await wb.write(0, bytes(100, 1));
  await wb.write(100, bytes(200, 2));
  await wb.write(300, bytes(50, 3));
  assert.is(sent.length, 0, 'nothing is sent before the chunk is full or flushed');
  assert.ok(wb.dirty);
  assert.is(wb.dirtyEnd, 350);
  await wb.flush();
  assert.is(sent.length, 1);
  assert.is(sent[0]!.offset, 0);
  assert.equal(sent[0]!.data, Buffer.concat([bytes(100, 1), bytes(200, 2), bytes(50, 3)]));
  assert.not.ok(wb.dirty);
  assert.is(wb.dirtyEnd, 0);
});

test('append mode: the offsets given are ignored, the bytes go as one stream in write order, one op in flight at a time', async () => {
  const sent: Array<{ data: Buffer; extents: Extent[] | undefined }> = [];
  let inflight = 0;
  let inflightMost = 0;
  // Each send completes a little later, so several could overlap if the buffer let them.
  const send = async (_offset: number, data: Buffer, extents?: Extent[]): Promise<void> => {
    inflight++;
    inflightMost = Math.max(inflightMost, inflight);
    sent.push({ data: Buffer.from(data), extents });
    await new Promise((r) => setTimeout(r, 2));
    inflight--;
  };
  const wb = new WriteBuffer(send, { chunkBytesMax: 100, inflightMax: 4 }, undefined, 'append');
  // The kernel passes its idea of the end of file, stale or repeated: none of it matters.
  await wb.write(0, bytes(30, 1));
  assert.is(wb.dirtyEnd, 0, 'an append has no known end until applied');
  assert.ok(wb.overlaps(1_000_000, 1_000_001), 'it may land anywhere past the end');
  await wb.write(0, bytes(60, 2));
  await wb.write(7, bytes(250, 3));
  await wb.write(3, bytes(20, 4));
  await wb.flush();
  assert.is(inflightMost, 1, 'one append in flight at a time, though inflightMax is 4');
  assert.ok(sent.length >= 4, `sent as ${sent.length} ops of at most 100 bytes`);
  assert.ok(sent.every((s) => s.extents === undefined && s.data.length <= 100), 'each op is one run of bytes, never packed extents');
  assert.equal(Buffer.concat(sent.map((s) => s.data)), Buffer.concat([bytes(30, 1), bytes(60, 2), bytes(250, 3), bytes(20, 4)]), 'every byte once, in the order written');
  assert.not.ok(wb.dirty);
  assert.not.ok(wb.overlaps(0, 10), 'nothing pending: overlaps nothing');
});

test('a full chunk is sent at once and split exactly at chunkBytesMax', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 256, inflightMax: 4 });
  const data = bytes(700, 9);
  await wb.write(1000, data);
  assert.is(sent.length, 2, 'two full chunks went out during the write');
  assert.equal(sent.map((s) => [s.offset, s.data.length]), [
    [1000, 256],
    [1256, 256],
  ]);
  await wb.flush();
  assert.equal(sent.map((s) => [s.offset, s.data.length]), [
    [1000, 256],
    [1256, 256],
    [1512, 188],
  ]);
  assert.equal(Buffer.concat(sent.map((s) => s.data)), data);
});

test('writes that do not continue each other stay buffered, and flush packs them into one op', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4 });
  await wb.write(0, bytes(10, 1));
  await wb.write(500, bytes(10, 2)); // a seek forward
  await wb.write(100, bytes(10, 3)); // a seek back
  assert.is(sent.length, 0, 'nothing is sent before flush');
  assert.is(wb.extentCount, 3);
  assert.is(wb.dirtyBytes, 30);
  assert.is(wb.dirtyEnd, 510);
  await wb.flush();
  assert.is(sent.length, 1);
  assert.is(sent[0]!.offset, 0);
  assert.equal(sent[0]!.extents, [
    [0, 10],
    [100, 10],
    [500, 10],
  ]);
  assert.equal(sent[0]!.data, Buffer.concat([bytes(10, 1), bytes(10, 3), bytes(10, 2)]));
});

test('later writes win over the earlier bytes they overlap, and touching extents merge', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4 });
  await wb.write(10, Buffer.from('aaaaaaaaaa')); // [10, 20)
  await wb.write(30, Buffer.from('cccccccccc')); // [30, 40)
  await wb.write(15, Buffer.from('bbbbbbbbbbbbbbb')); // [15, 30): bridges both
  await wb.write(5, Buffer.from('dddddd')); // [5, 11): before and into the first
  await wb.write(40, Buffer.from('e')); // touches the end
  await wb.write(33, Buffer.from('f')); // inside
  assert.is(wb.extentCount, 1);
  assert.is(wb.dirtyBytes, 36);
  await wb.flush();
  assert.is(sent.length, 1);
  assert.is(sent[0]!.offset, 5);
  assert.is(sent[0]!.extents, undefined, 'one extent: a plain write');
  assert.is(sent[0]!.data.toString(), 'ddddddaaaabbbbbbbbbbbbbbbcccfcccccce');
  assert.is(wb.dirtyBytes, 0);
});

test('random writes coalesce into few ops whose bytes match a model of the file', async () => {
  const chunkBytesMax = 4096;
  const extentsPerOpMax = 16;
  const fileBytes = 64 * 1024;
  const cluster = Buffer.alloc(fileBytes);
  const model = Buffer.alloc(fileBytes);
  let ops = 0;
  const send = async (offset: number, data: Buffer, extents?: Extent[]): Promise<void> => {
    ops++;
    assert.ok(data.length <= chunkBytesMax, 'an op holds at most a chunk');
    const list = extents ?? [[offset, data.length] as Extent];
    assert.ok(list.length <= extentsPerOpMax);
    validateWriteExtents(offset, list, data.length); // what the proxy and the nodes check
    let at = 0;
    for (const [o, n] of list) {
      data.copy(cluster, o, at, at + n);
      at += n;
    }
  };
  const wb = new WriteBuffer(send, { chunkBytesMax, inflightMax: 3, extentsPerOpMax });
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  let writes = 0;
  for (let round = 0; round < 20; round++) {
    for (let k = 0; k < 200; k++) {
      const size = 1 + rand(rand(4) === 0 ? 3000 : 64);
      const offset = rand(fileBytes - size);
      const data = bytes(size, writes);
      data.copy(model, offset);
      await wb.write(offset, data);
      writes++;
    }
    assert.ok(wb.dirtyEnd <= fileBytes);
    await wb.flush();
    assert.ok(cluster.equals(model), `round ${round}: the cluster holds the model's bytes`);
  }
  assert.ok(ops < writes / 4, `${writes} writes became ${ops} ops`);
});

test('ops that complete in random order: overlapping ones never in flight together, and the bytes match a model', async () => {
  // The cluster applies each op when it commits; ops in flight together may commit in
  // any order, so only ops that do not overlap may be in flight together.
  const fileBytes = 8 * 1024;
  const cluster = Buffer.alloc(fileBytes);
  const model = Buffer.alloc(fileBytes);
  const inflight: Array<{ extents: Extent[]; data: Buffer; resolve: () => void }> = [];
  let ops = 0;
  const send = (offset: number, data: Buffer, extents?: Extent[]): Promise<void> =>
    new Promise<void>((resolve) => {
      const list = extents ?? [[offset, data.length] as Extent];
      validateWriteExtents(offset, list, data.length);
      for (const other of inflight) assert.not.ok(extentsOverlap(other.extents, list), 'two versions of the same bytes in flight together');
      ops++;
      inflight.push({ extents: list, data: Buffer.from(data), resolve });
    });
  let seed = 99;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  /** Commits one op in flight, chosen at random. */
  const commitOne = (): void => {
    const [op] = inflight.splice(rand(inflight.length), 1);
    let at = 0;
    for (const [o, n] of op!.extents) {
      op!.data.copy(cluster, o, at, at + n);
      at += n;
    }
    op!.resolve();
  };
  const wb = new WriteBuffer(send, { chunkBytesMax: 512, inflightMax: 3, dirtyBytesMax: 700, extentsPerOpMax: 5 });
  for (let round = 0; round < 30; round++) {
    for (let k = 0; k < 100; k++) {
      const size = 1 + rand(rand(5) === 0 ? 900 : 40);
      const offset = rand(fileBytes - size);
      const data = bytes(size, round * 1000 + k);
      data.copy(model, offset);
      const w = wb.write(offset, data);
      // Let the cluster move while the write waits (for a slot, or a previous batch).
      for (;;) {
        const done = await Promise.race([w.then(() => true), tick().then(() => false)]);
        if (done) break;
        if (inflight.length > 0) commitOne();
      }
      if (rand(3) === 0 && inflight.length > 0) commitOne();
    }
    const f = wb.flush();
    let flushed = false;
    void f.then(() => (flushed = true));
    while (!flushed) {
      await tick();
      if (inflight.length > 0) commitOne();
    }
    assert.ok(cluster.equals(model), `round ${round}: the cluster holds the model's bytes`);
  }
  assert.ok(ops > 30);
});

test('4 KiB random writes over a file: about one op per chunk of dirty data', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1 << 20, inflightMax: 4 });
  let seed = 7;
  for (let k = 0; k < 1000; k++) {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    await wb.write((seed % 16384) * 4096, bytes(4096, k));
  }
  const dirty = wb.dirtyBytes;
  await wb.flush();
  assert.ok(sent.length <= Math.ceil(dirty / (1 << 20)) + 1, `${sent.length} ops for ${dirty} bytes`);
  assert.is(sent.reduce((n, s) => n + s.data.length, 0), dirty);
});

test("the caller's buffer may be reused once write resolves (fuse-native detaches it)", async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4 });
  const buf = Buffer.from('hello');
  const p = wb.write(0, buf);
  buf.fill(0); // the kernel's buffer is gone right after the call
  await p;
  await wb.flush();
  assert.is(sent[0]!.data.toString(), 'hello');
});

test('at most inflightMax chunks are in flight; flush waits for all of them', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 10, inflightMax: 2 });
  await wb.write(0, bytes(10, 1));
  await wb.write(10, bytes(10, 2));
  assert.is(sent.length, 2);
  assert.is(wb.inflightCount, 2);
  let thirdDone = false;
  const third = wb.write(20, bytes(10, 3)).then(() => (thirdDone = true));
  await tick();
  assert.is(sent.length, 2, 'the third chunk waits for room');
  assert.not.ok(thirdDone);
  sent[0]!.resolve();
  await third;
  assert.is(sent.length, 3);
  let flushed = false;
  const f = wb.flush().then(() => (flushed = true));
  await tick();
  assert.not.ok(flushed, 'flush waits for the chunks in flight');
  assert.is(wb.dirtyEnd, 30);
  sent[1]!.resolve();
  await tick();
  assert.not.ok(flushed);
  sent[2]!.resolve();
  await f;
  assert.ok(flushed);
  assert.not.ok(wb.dirty);
});

test('a chunk that overlaps one in flight waits for it (no reordering of the same bytes)', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 10, inflightMax: 4 });
  await wb.write(0, bytes(10, 1)); // in flight: [0, 10)
  const second = wb.write(5, bytes(10, 2)); // overlaps: [5, 15) is full, must wait
  await tick();
  assert.is(sent.length, 1);
  sent[0]!.resolve();
  await second;
  assert.is(sent.length, 2);
  assert.is(sent[1]!.offset, 5);
  sent[1]!.resolve();
  await wb.flush();
});

test('a failed background send is reported by the next write and by every flush', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 10, inflightMax: 4 });
  await wb.write(0, bytes(10, 1)); // sent in the background
  sent[0]!.reject(new DfsError('UNAVAILABLE', 'cluster down'));
  await tick();
  await rejects(() => wb.write(10, bytes(1, 2)), /cluster down/);
  await rejects(() => wb.flush(), /cluster down/);
  await rejects(() => wb.flush(), /cluster down/, 'the error is sticky');
  assert.instance(wb.error, DfsError);
});

test('a failed send during flush makes flush reject', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 100, inflightMax: 4 });
  await wb.write(0, bytes(10, 1));
  const f = wb.flush();
  await tick();
  sent[0]!.reject(new DfsError('FS_ERROR', 'no space', 'ENOSPC'));
  await rejects(() => f, /no space/);
});

test("a sequential stream from one reused buffer arrives byte-identical, whether a write is placed at once or waits behind another", async () => {
  const { sent, send } = fakeSender(true);
  const chunk = 64 * 1024;
  const wb = new WriteBuffer(send, { chunkBytesMax: chunk, inflightMax: 2 });
  const total = 5 * chunk + 777;
  const data = bytes(total, 11);
  // Pieces of varied sizes, so that some cross a chunk boundary; every other pair is
  // issued back to back, so that the second waits behind the first (its bytes copied
  // apart), the rest one at a time (placed at once, straight from the caller's buffer).
  const sizes = [4096, 30000, 128 * 1024, 1, 50000, 65536, 12345];
  const reused = Buffer.alloc(128 * 1024);
  let off = 0;
  for (let i = 0; off < total; i++) {
    const n = Math.min(sizes[i % sizes.length]!, total - off);
    data.copy(reused, 0, off, off + n);
    const p = wb.write(off, reused.subarray(0, n));
    reused.fill(0xee); // the kernel's buffer is gone right after the call
    off += n;
    if (i % 4 === 1 && off < total) {
      const m = Math.min(777, total - off);
      data.copy(reused, 0, off, off + m);
      const q = wb.write(off, reused.subarray(0, m));
      reused.fill(0xdd);
      off += m;
      await Promise.all([p, q]);
    } else {
      await p;
    }
  }
  await wb.flush();
  assert.ok(sent.slice(0, -1).every((s) => s.data.length === chunk), 'full chunks while the stream goes on');
  assert.ok(Buffer.concat(sent.map((s) => s.data)).equals(data));
});

test('concurrent writes are applied in arrival order', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1 << 20, inflightMax: 4 });
  await Promise.all([wb.write(0, bytes(4, 1)), wb.write(4, bytes(4, 2)), wb.write(8, bytes(4, 3))]);
  await wb.flush();
  assert.is(sent.length, 1);
  assert.equal(sent[0]!.data, Buffer.concat([bytes(4, 1), bytes(4, 2), bytes(4, 3)]));
});

test('a large sequential stream becomes full chunks, byte-identical', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1 << 20, inflightMax: 4 });
  const total = 5 * (1 << 20) + 12345;
  const data = bytes(total, 7);
  for (let off = 0; off < total; off += 128 * 1024) await wb.write(off, data.subarray(off, Math.min(total, off + 128 * 1024)));
  await wb.flush();
  assert.equal(sent.map((s) => s.data.length), [1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 12345]);
  assert.ok(Buffer.concat(sent.map((s) => s.data)).equals(data));
});

test('dirty extents left idle are sent on their own, packed', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4, idleSendMs: 30 });
  await wb.write(0, bytes(10, 1));
  await wb.write(100, bytes(10, 2));
  assert.is(sent.length, 0);
  await until(() => sent.length > 0);
  assert.is(sent.length, 1, 'sent without a flush');
  assert.equal(sent[0]!.extents, [
    [0, 10],
    [100, 10],
  ]);
  assert.equal(sent[0]!.data, Buffer.concat([bytes(10, 1), bytes(10, 2)]));
  await wb.flush();
  assert.is(sent.length, 1, 'nothing left for flush');
});

test('dirty bytes are sent once the oldest is dirtyAgeMsMax old, even while writes keep coming', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1 << 20, inflightMax: 4, idleSendMs: 10_000, dirtyAgeMsMax: 40 });
  const t0 = Date.now();
  let k = 0;
  while (sent.length === 0 && Date.now() - t0 < 2000) {
    await wb.write(k * 100, bytes(10, k));
    k++;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.ok(sent.length > 0, 'sent while writes kept coming');
  assert.ok(Date.now() - t0 >= 35);
  await wb.flush();
});

test('the per-handle bound sends every dirty extent without a flush', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1000, inflightMax: 4, dirtyBytesMax: 100 });
  for (let k = 0; k < 10; k++) await wb.write(k * 50, bytes(10, k));
  assert.is(sent.length, 0, 'at the bound, not past it');
  assert.is(wb.dirtyBytes, 100);
  await wb.write(1000, bytes(1, 99));
  assert.is(sent.length, 1, 'past the bound: one packed op');
  assert.is(sent[0]!.extents!.length, 11);
  assert.is(wb.dirtyBytes, 0);
  await wb.flush();
  assert.is(sent.length, 1);
});

test('the mount-wide budget is shared: the handle that passes it sends its own extents', async () => {
  const budget = new DirtyBudget(50);
  const a = fakeSender(true);
  const b = fakeSender(true);
  const wa = new WriteBuffer(a.send, { chunkBytesMax: 1000, inflightMax: 4 }, budget);
  const wbuf = new WriteBuffer(b.send, { chunkBytesMax: 1000, inflightMax: 4 }, budget);
  await wa.write(0, bytes(40, 1));
  await wbuf.write(0, bytes(5, 2));
  assert.is(budget.bytesUsed, 45);
  assert.is(a.sent.length + b.sent.length, 0);
  await wbuf.write(100, bytes(10, 3));
  assert.is(b.sent.length, 1, 'the writer that passed the budget sent');
  assert.is(a.sent.length, 0);
  assert.is(budget.bytesUsed, 40);
  await wa.flush();
  assert.is(budget.bytesUsed, 0, 'flushed bytes are given back');
  await wbuf.flush();
});

test('an op overlapping one in flight waits for it; one that does not, goes', async () => {
  const { sent, send } = fakeSender(false);
  // A bound of 5 dirty bytes sends in the background (a flush would hold later writes).
  const wb = new WriteBuffer(send, { chunkBytesMax: 1000, inflightMax: 4, dirtyBytesMax: 5 });
  await wb.write(0, Buffer.from('1111'));
  await wb.write(10, Buffer.from('1111')); // past the bound: in flight, [0, 4) and [10, 14)
  assert.is(sent.length, 1);
  await wb.write(30, Buffer.from('3333'));
  await wb.write(40, Buffer.from('33')); // no overlap
  assert.is(sent.length, 2, 'a disjoint op does not wait');
  assert.is(wb.overlaps(4, 10), false, 'between the extents in flight');
  assert.is(wb.overlaps(13, 20), true);
  await wb.write(12, Buffer.from('2')); // a newer version of a byte in flight
  await wb.write(50, Buffer.from('2222'));
  await wb.write(60, Buffer.from('2')); // past the bound: queued, and the write goes on
  assert.is(sent.length, 2, 'the newer version waits for the older one to commit');
  assert.is(wb.queuedCount, 1);
  let written = false;
  const w = wb.write(100, Buffer.from('777777')).then(() => (written = true));
  await tick();
  assert.not.ok(written, 'the next batch waits for the previous one to start (back-pressure)');
  sent[1]!.resolve();
  await tick();
  assert.is(sent.length, 2, 'still waiting for the one it overlaps');
  sent[0]!.resolve();
  await w;
  await until(() => sent.length === 4);
  assert.equal(sent[2]!.extents, [
    [12, 1],
    [50, 4],
    [60, 1],
  ]);
  assert.is(sent[2]!.data.toString(), '222222');
  assert.equal([sent[3]!.offset, sent[3]!.data.toString()], [100, '777777']);
  sent[2]!.resolve();
  sent[3]!.resolve();
  await wb.flush();
  assert.not.ok(wb.dirty);
});

test('an extent stays visible (dirtyEnd, overlaps) until its op commits', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1000, inflightMax: 1, dirtyBytesMax: 5 });
  await wb.write(0, bytes(10, 1)); // in flight
  assert.is(sent.length, 1);
  await wb.write(5000, bytes(10, 2)); // past the bound: queued behind the only slot
  assert.is(sent.length, 1);
  assert.is(wb.queuedCount, 1);
  assert.is(wb.dirtyBytes, 0);
  assert.is(wb.dirtyEnd, 5010, 'a queued op still counts');
  assert.ok(wb.overlaps(5009, 5010));
  assert.not.ok(wb.overlaps(5010, 5011));
  sent[0]!.resolve();
  await until(() => sent.length === 2);
  assert.is(wb.queuedCount, 0);
  assert.is(wb.dirtyEnd, 5010, 'in flight still counts');
  sent[1]!.resolve();
  await wb.flush();
  assert.is(wb.dirtyEnd, 0);
});

test('a failed packed op is reported by the next write, flush and close, and later data still goes', async () => {
  const { sent, send } = fakeSender(false);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1000, inflightMax: 4, dirtyBytesMax: 15 });
  await wb.write(0, bytes(10, 1));
  await wb.write(100, bytes(10, 2)); // past the bound: sent in the background
  assert.is(sent.length, 1);
  sent[0]!.reject(new DfsError('UNAVAILABLE', 'cluster down'));
  await tick();
  await rejects(() => wb.write(200, bytes(1, 3)), /cluster down/);
  await rejects(() => wb.flush(), /cluster down/);
  await rejects(() => wb.flush(), /cluster down/, 'sticky');
});

test('invalid limits are refused', () => {
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 0, inflightMax: 1 }));
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 10, inflightMax: 0 }));
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 10, inflightMax: 1, extentsPerOpMax: 100_000 }));
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 8 * 1024 * 1024, inflightMax: 1 }), /invalid/, 'over WRITE_BYTES_MAX');
  assert.throws(() => resolveWriteBufferLimits({ chunkBytesMax: 10, inflightMax: 1, dirtyBytesMax: 0 }));
  assert.equal(resolveWriteBufferLimits({ chunkBytesMax: 10, inflightMax: 1 }).idleSendMs, 0, 'a timer left out is off');
  assert.throws(() => new DirtyBudget(0));
});

test.run();
