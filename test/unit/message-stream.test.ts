/* Message streams (common/message-stream.ts) and the replication batch payload: messages
 * cut anywhere, several per piece, and what a primary never sends refused. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { encodeFrame } from '../../common/frame';
import { DfsError, httpStatusOf } from '../../common/errors';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { encodeRequest, MessageReader, MessageStreams, serveMessageStream, type MessageHandler } from '../../common/message-stream';
import pino from 'pino';
import { decodeBatch, encodeBatch } from '../../storage/replication-stream';
import type { ReplicateRequest } from '../../storage/replica-core';
import { prng } from '../helpers/prng';

const req = (epoch: number, commitSeq: number, prefixSeq = -1, truncateAfter: number | null = null): ReplicateRequest => ({ epoch, commitSeq, prefixSeq, truncateAfter, entries: [] });

function codeOf(f: () => unknown): string {
  try {
    f();
  } catch (err) {
    assert.instance(err, DfsError);
    return (err as DfsError).code;
  }
  return 'no error';
}

test('batches round-trip as messages through a reader fed pieces cut at random points', () => {
  const rng = prng(7);
  const sent: { id: number; r: ReplicateRequest; frames: Buffer[] }[] = [];
  for (let id = 1; id <= 200; id++) {
    const frames = Array.from({ length: rng.int(4) }, (_, i) => encodeFrame({ seq: id * 10 + i }, rng.bytes(rng.int(3) === 0 ? (rng.int(2) ? 70_000 : 300_000) : rng.int(40))));
    sent.push({ id, r: req(rng.int(5), rng.int(1_000_000), rng.int(2) ? -1 : rng.int(1000), rng.int(2) ? null : rng.int(1000)), frames });
  }
  const stream = Buffer.concat(sent.flatMap((s) => encodeRequest(s.id, encodeBatch(s.r, s.frames))));
  const reader = new MessageReader(4 << 20);
  const got: Buffer[] = [];
  for (let at = 0; at < stream.length; ) {
    const n = 1 + rng.int(rng.int(2) ? 8 : 90_000);
    got.push(...reader.push(stream.subarray(at, at + n)));
    at += n;
  }
  assert.is(got.length, sent.length);
  got.forEach((msg, i) => {
    const s = sent[i]!;
    assert.is(msg.readUInt32BE(0), s.id);
    const b = decodeBatch(msg.subarray(4));
    assert.is(b.epoch, s.r.epoch);
    assert.is(b.commitSeq, s.r.commitSeq);
    assert.is(b.prefixSeq, s.r.prefixSeq);
    assert.is(b.truncateAfter, s.r.truncateAfter);
    assert.ok(b.frames.equals(Buffer.concat(s.frames)), `frames of batch ${s.id}`);
  });
});

test('a message over the limit is refused from its length alone', () => {
  const reader = new MessageReader(100);
  const [head] = encodeRequest(1, [Buffer.alloc(200)]);
  assert.is(codeOf(() => reader.push(head!)), 'TOO_LARGE');
});

test('a batch head naming what no primary sends is BAD_REQUEST', () => {
  const bad = [
    (m: Buffer) => m.writeDoubleBE(-1, 0), // epoch
    (m: Buffer) => m.writeDoubleBE(1.5, 8), // commit
    (m: Buffer) => m.writeDoubleBE(-2, 16), // prefix
    (m: Buffer) => m.writeDoubleBE(Number.NaN, 24), // truncate
    (m: Buffer) => m.writeDoubleBE(2 ** 60, 8),
  ];
  for (const damage of bad) {
    const payload = Buffer.concat(encodeBatch(req(1, 2), []));
    damage(payload);
    assert.is(codeOf(() => decodeBatch(payload)), 'BAD_REQUEST');
  }
  assert.is(codeOf(() => decodeBatch(Buffer.alloc(10))), 'BAD_REQUEST');
});

/** A real HTTP/2 server serving one message stream path with `handle`; counts connections. */
const silentLogger = pino({ level: 'silent' });

async function server(handle: MessageHandler): Promise<{ url: string; sessions: () => number; close: () => Promise<void> }> {
  let sessions = 0;
  const srv = http2.createServer((req) => void serveMessageStream(req, 1024, handle, silentLogger));
  srv.on('session', () => sessions++);
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  return { url, sessions: () => sessions, close: () => new Promise<void>((resolve) => srv.close(() => resolve())) };
}

test('answers come back by id, in any order, errors as an endpoint gives them', async () => {
  const s = await server(async (payload) => {
    const n = payload.readUInt8(0);
    await new Promise((r) => setTimeout(r, (10 - n) * 5));
    if (n === 3) throw new DfsError('GAP', 'three is missing');
    return { n };
  });
  const streams = new MessageStreams();
  try {
    const answers = await Promise.all(Array.from({ length: 10 }, (_, n) => streams.send(s.url, '/x', [Buffer.from([n])], 5_000)));
    answers.forEach((a, n) => {
      if (n === 3) {
        assert.is(a.status, httpStatusOf(new DfsError('GAP', '')));
        assert.ok(a.status >= 400 && a.status < 500);
        assert.is((a.body as { code: string }).code, 'GAP');
      } else {
        assert.is(a.status, 200);
        assert.equal(a.body, { n });
      }
    });
    assert.is(s.sessions(), 1, 'one connection for all');
  } finally {
    streams.close();
    await s.close();
  }
});

test('a request not answered in time fails alone while the stream answers others; a silent stream is dropped', async () => {
  const never = new Promise<unknown>(() => undefined);
  let silent = false;
  const s = await server((payload) => (silent || payload.readUInt8(0) === 0 ? never : Promise.resolve('ok')));
  const streams = new MessageStreams();
  try {
    const lost = streams.send(s.url, '/x', [Buffer.from([0])], 300);
    assert.is((await streams.send(s.url, '/x', [Buffer.from([1])], 5_000)).body, 'ok');
    const err = await lost.then(() => null, (e: DfsError) => e);
    assert.is(err?.code, 'UNAVAILABLE');
    assert.is((await streams.send(s.url, '/x', [Buffer.from([2])], 5_000)).body, 'ok');
    assert.is(s.sessions(), 1, 'the stream answered meanwhile, so it was kept');
    silent = true;
    const dead = await streams.send(s.url, '/x', [Buffer.from([3])], 300).then(() => null, (e: DfsError) => e);
    assert.is(dead?.code, 'UNAVAILABLE');
    silent = false;
    assert.is((await streams.send(s.url, '/x', [Buffer.from([4])], 5_000)).body, 'ok');
    assert.is(s.sessions(), 2, 'nothing came back before the deadline: a new connection');
  } finally {
    streams.close();
    await s.close();
  }
});

test('a message over the limit ends the stream; the next request opens another', async () => {
  const s = await server(async () => 'ok');
  const streams = new MessageStreams();
  try {
    const err = await streams.send(s.url, '/x', [Buffer.alloc(5000)], 5_000).then(() => null, (e: DfsError) => e);
    assert.is(err?.code, 'UNAVAILABLE');
    assert.is((await streams.send(s.url, '/x', [Buffer.alloc(10)], 5_000)).body, 'ok');
  } finally {
    streams.close();
    await s.close();
  }
});

test.run();
