/*
 * mount/write-buffer.ts: how the kernel's small writes become chunks, what is in flight at
 * once, that flush waits for everything, and that a failed background send is reported
 * (never dropped). The sender is a fake that records chunks and resolves when told to.
 *
 *   node dist/test/unit/mount-write-buffer.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DfsError } from '../../common/errors';
import { WriteBuffer } from '../../mount/write-buffer';
import { rejects } from './mount-test-helpers';

interface Sent {
  offset: number;
  data: Buffer;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/** A sender whose sends complete only when the test says so (or at once with `auto`). */
function fakeSender(auto: boolean) {
  const sent: Sent[] = [];
  const send = (offset: number, data: Buffer): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      // Copy: the buffer is the write buffer's own; a real sender would send it now.
      sent.push({ offset, data: Buffer.from(data), resolve, reject });
      if (auto) resolve();
    });
  return { sent, send };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

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

test('a write that does not continue the pending chunk sends it first', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4 });
  await wb.write(0, bytes(10, 1));
  await wb.write(500, bytes(10, 2)); // a seek forward
  assert.is(sent.length, 1);
  assert.is(sent[0]!.offset, 0);
  await wb.write(100, bytes(10, 3)); // a seek back
  assert.is(sent.length, 2);
  assert.is(sent[1]!.offset, 500);
  await wb.flush();
  assert.equal(sent.map((s) => s.offset), [0, 500, 100]);
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

test('a pending chunk left idle is sent on its own', async () => {
  const { sent, send } = fakeSender(true);
  const wb = new WriteBuffer(send, { chunkBytesMax: 1024, inflightMax: 4, idleSendMs: 30 });
  await wb.write(0, bytes(10, 1));
  await wb.write(10, bytes(10, 2));
  assert.is(sent.length, 0);
  const t0 = Date.now();
  while (sent.length === 0 && Date.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 5));
  assert.is(sent.length, 1, 'sent without a flush');
  assert.equal(sent[0]!.data, Buffer.concat([bytes(10, 1), bytes(10, 2)]));
  await wb.flush();
  assert.is(sent.length, 1, 'nothing left for flush');
});

test('invalid limits are refused', () => {
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 0, inflightMax: 1 }));
  assert.throws(() => new WriteBuffer(async () => undefined, { chunkBytesMax: 10, inflightMax: 0 }));
});

test.run();
