/* The frame codec: round trips, torn tails, damage, and limits. */
import { test } from 'uvu';
import { randomBytes } from 'node:crypto';
import * as assert from 'uvu/assert';
import { crc32 } from 'node:zlib';
import { crc32Combine, decodeFrameAt, decodeFrames, decodeOneFrame, decodeRelayFrame, encodeFrame, encodeFrameParts, encodeRelayedFrame, FRAME_PREFIX_BYTES } from '../../common/frame';
import { DfsError } from '../../common/errors';

test('a frame round-trips its header and data', () => {
  const data = Buffer.from([0, 1, 2, 255]);
  const f = decodeOneFrame(encodeFrame({ a: 1, s: 'é' }, data));
  assert.equal(f.header, { a: 1, s: 'é' });
  assert.ok(f.data.equals(data));
});

test('a frame in two pieces is the same bytes, the data piece the very buffer given', () => {
  const data = randomBytes(70_000);
  const header = { reqId: 'r-ü', op: { type: 'write', path: '/a', offset: 3 } };
  const [head, body] = encodeFrameParts(header, data);
  assert.ok(body === data, 'the data is not copied');
  const whole = Buffer.concat([head, body]);
  assert.ok(whole.equals(encodeFrame(header, data)));
  const f = decodeOneFrame(whole);
  assert.equal(f.header, header);
  assert.ok(f.data.equals(data));
  const [emptyHead, emptyBody] = encodeFrameParts(header);
  assert.is(emptyBody.length, 0);
  assert.equal(decodeOneFrame(emptyHead).header, header);
});

test('frames back to back decode in order', () => {
  const body = Buffer.concat([encodeFrame({ n: 1 }), encodeFrame({ n: 2 }, Buffer.from('x')), encodeFrame({ n: 3 })]);
  assert.equal(decodeFrames(body).map((f) => (f.header as { n: number }).n), [1, 2, 3]);
});

test('a decoded frame keeps its bytes as sent, so a node can log and forward them as they are', () => {
  const frames = [encodeFrame({ n: 1 }), encodeFrame({ n: 2 }, randomBytes(1000)), encodeFrame({ n: 3 })];
  const decoded = decodeFrames(Buffer.concat(frames));
  decoded.forEach((f, i) => assert.ok(f.encoded?.equals(frames[i]!), `frame ${i}`));
  // Encoding the decoded header and data again gives the same bytes.
  decoded.forEach((f, i) => assert.ok(encodeFrame(f.header, f.data).equals(frames[i]!), `frame ${i} again`));
});

test('a cut-short frame is incomplete, not corrupt', () => {
  const buf = encodeFrame({ n: 1 }, Buffer.alloc(100, 7));
  for (const cut of [0, 5, FRAME_PREFIX_BYTES, buf.length - 1]) {
    assert.ok('incomplete' in decodeFrameAt(buf.subarray(0, cut)), `cut at ${cut}`);
  }
});

test('a flipped byte is caught by the checksum', () => {
  const buf = encodeFrame({ n: 1 }, Buffer.alloc(100, 7));
  for (const at of [FRAME_PREFIX_BYTES + 2, buf.length - 1]) {
    const bad = Buffer.from(buf);
    bad[at] ^= 0x40;
    const r = decodeFrameAt(bad);
    assert.ok('corrupt' in r, `flip at ${at}`);
  }
});

test('lengths over the limits are refused without reading them', () => {
  const buf = encodeFrame({ n: 1 });
  buf.writeUInt32BE(0xffffffff, 4);
  assert.ok('corrupt' in decodeFrameAt(buf));
});

test('a request body must be exactly one frame', () => {
  const one = encodeFrame({ n: 1 });
  assert.throws(() => decodeOneFrame(Buffer.concat([one, Buffer.from('junk')])), (e: unknown) => e instanceof DfsError && e.code === 'BAD_REQUEST');
  assert.throws(() => decodeOneFrame(one.subarray(0, 5)), (e: unknown) => e instanceof DfsError && e.code === 'BAD_REQUEST');
});

test('an empty payload of any origin round-trips (zlib.crc32 mishandles some empty buffers)', () => {
  for (const empty of [Buffer.alloc(0), randomBytes(0), Buffer.from('abc').subarray(3), Buffer.from(new ArrayBuffer(0))]) {
    const f = decodeOneFrame(encodeFrame({ n: 1 }, empty));
    assert.is(f.data.length, 0);
    // And a frame encoded with one kind of empty buffer decodes when re-read as another.
    const again = encodeFrame(f.header, f.data);
    assert.ok(again.equals(encodeFrame({ n: 1 })));
  }
});

test('crc32Combine gives the CRC of A ‖ B from the CRCs of A and B', () => {
  const crcOf = (b: Buffer) => (b.length === 0 ? 0 : crc32(b));
  for (const [a, b] of [[0, 0], [0, 5], [5, 0], [1, 1], [17, 4096], [300, 1 << 20], [4095, 65_537]] as const) {
    const A = randomBytes(a);
    const B = randomBytes(b);
    assert.is(crc32Combine(crcOf(A), crcOf(B), B.length), crcOf(Buffer.concat([A, B])), `${a} + ${b} bytes`);
  }
});

/** `buf` cut at `cuts` (ascending offsets), as a body arrives in pieces. */
function cutAt(buf: Buffer, cuts: number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const at of [...cuts, buf.length]) {
    pieces.push(buf.subarray(from, at));
    from = at;
  }
  return pieces;
}

test('a relay checks a frame once, in the pieces it came in, and re-heads its data with the same bytes as encoding anew', () => {
  const data = randomBytes(200_000);
  const sent = encodeFrame({ reqId: 'r', op: { type: 'write', path: '/a', offset: 0 } }, data);
  const next = { epoch: 3, seq: 9, reqId: 'r', op: { type: 'write', path: '/a', offset: 0 } };
  // Whole; cut inside the prefix, inside the header, at the data's start, inside the data
  // (an empty piece among them), and into 16 KiB pieces as a TLS connection gives them.
  const headEnd = sent.length - data.length;
  const sixteen = Array.from({ length: Math.floor(sent.length / 16384) }, (_, i) => (i + 1) * 16384);
  for (const cuts of [[], [5], [FRAME_PREFIX_BYTES + 3, FRAME_PREFIX_BYTES + 3, headEnd + 1000], [headEnd], [1, 2, 3, headEnd + 1, sent.length - 1], sixteen]) {
    const frame = decodeRelayFrame(cutAt(sent, cuts));
    assert.ok(Buffer.concat(frame.data).equals(data), `cut at ${cuts.join(',')}`);
    assert.is(frame.dataBytes, data.length);
    assert.is(frame.dataCrc, crc32(data));
    assert.equal(frame.header, { reqId: 'r', op: { type: 'write', path: '/a', offset: 0 } });
    const pieces = encodeRelayedFrame(next, frame);
    assert.ok(Buffer.concat(pieces).equals(encodeFrame(next, data)));
    assert.ok(pieces.length > 1, 'large data goes on in its pieces, not gathered');
  }
  // Small data leaves in one buffer with its header.
  const small = randomBytes(1000);
  const smallPieces = encodeRelayedFrame(next, decodeRelayFrame(cutAt(encodeFrame({ n: 1 }, small), [20, 500])));
  assert.is(smallPieces.length, 1);
  assert.ok(smallPieces[0]!.equals(encodeFrame(next, small)));
  // No data at all: the CRC of nothing is 0.
  const empty = decodeRelayFrame([encodeFrame({ n: 1 })]);
  assert.is(empty.dataCrc, 0);
  assert.ok(Buffer.concat(encodeRelayedFrame({ n: 2 }, empty)).equals(encodeFrame({ n: 2 })));
  assert.ok(Buffer.concat(encodeFrameParts({ n: 2 }, Buffer.alloc(0), 0)).equals(encodeFrame({ n: 2 })));
  // Damage anywhere, in the header or the data, is refused as decodeOneFrame refuses it.
  for (const at of [FRAME_PREFIX_BYTES + 2, sent.length - 1]) {
    const bad = Buffer.from(sent);
    bad[at]! ^= 0x10;
    assert.throws(() => decodeRelayFrame(cutAt(bad, sixteen)), (e: unknown) => e instanceof DfsError && e.code === 'BAD_REQUEST' && /checksum/.test(e.message));
  }
  assert.throws(() => decodeRelayFrame([]), (e: unknown) => e instanceof DfsError && /truncated/.test(e.message));
  assert.throws(() => decodeRelayFrame(cutAt(sent.subarray(0, sent.length - 1), [100])), (e: unknown) => e instanceof DfsError && /truncated/.test(e.message));
  assert.throws(() => decodeRelayFrame([sent, Buffer.from([0])]), (e: unknown) => e instanceof DfsError && /trailing/.test(e.message));
});

test.run();
