/*
 * mount/proxy-client.ts against fake proxies on loopback: failover on 503, 421 and refused
 * connections, the same request ID on every retry of a mutation, errors that are final,
 * the deadline, and the fast failure once no proxy is reachable.
 *
 *   node dist/test/unit/mount-proxy-client.test.js
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pino from 'pino';
import { DfsError } from '../../common/errors';
import { decodeOneFrame } from '../../common/frame';
import { Deadline } from '../../mount/deadline';
import { MountMetrics } from '../../mount/metrics';
import { ProxyClient } from '../../mount/proxy-client';
import { parseMetricsText } from '../bench/cost';

const logger = pino({ level: 'silent' });

type Handler = (req: IncomingMessage, body: Buffer, res: ServerResponse) => void;

interface Fake {
  url: string;
  server: Server;
  hits: number;
  handler: Handler;
}

const servers: Server[] = [];
const clients: ProxyClient[] = [];

async function fakeProxy(handler: Handler): Promise<Fake> {
  const fake: Fake = { url: '', server: null as unknown as Server, hits: 0, handler };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      fake.hits++;
      fake.handler(req, Buffer.concat(chunks), res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  servers.push(server);
  fake.server = server;
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}

/** A URL where nothing listens: a server that was started and closed again. */
async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  await new Promise<void>((r) => s.close(() => r()));
  return url;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function client(urls: string[], extra: Partial<ConstructorParameters<typeof ProxyClient>[0]> = {}): ProxyClient {
  const c = new ProxyClient({ urls, logger, ...extra });
  clients.push(c);
  return c;
}

test.after(async () => {
  await Promise.all(clients.map((c) => c.close()));
  for (const s of servers) s.closeAllConnections();
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
});

const ATTR = { ino: 5, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 3, blocks: 8, atimeMs: 1, mtimeMs: 2, ctimeMs: 3 };

test('reads: the path is percent-encoded and the answer parsed', async () => {
  let seen = '';
  const p = await fakeProxy((req, _body, res) => {
    seen = req.url!;
    json(res, 200, ATTR);
  });
  const c = client([p.url]);
  const a = await c.attr('/a b/ü?&', new Deadline(2000));
  assert.equal(a, ATTR);
  assert.is(seen, '/v1/attr?path=/a%20b/%C3%BC%3F%26', 'the bytes percent-encoded (common/names.ts)');
});

test('a mutation fails over on 503 and 421 and keeps its request ID', async () => {
  const reqIds: string[] = [];
  const ops: Array<{ op: unknown; data: string }> = [];
  const record = (body: Buffer) => reqIds.push((decodeOneFrame(body).header as { reqId: string }).reqId);
  const p1 = await fakeProxy((_req, body, res) => {
    record(body);
    json(res, 503, { code: 'UNAVAILABLE', message: 'no primary' });
  });
  const p2 = await fakeProxy((_req, body, res) => {
    record(body);
    json(res, 421, { code: 'STALE_EPOCH', message: 'old epoch' });
  });
  const p3 = await fakeProxy((_req, body, res) => {
    record(body);
    const frame = decodeOneFrame(body);
    ops.push({ op: (frame.header as { op: unknown }).op, data: frame.data.toString() });
    json(res, 200, { seq: 42, attr: ATTR });
  });
  const c = client([p1.url, p2.url, p3.url]);
  const r = await c.op({ type: 'write', path: '/f', offset: 0 }, Buffer.from('abc'), new Deadline(5000));
  assert.is(r.seq, 42);
  assert.equal(ops, [{ op: { type: 'write', path: '/f', offset: 0 }, data: 'abc' }]);
  assert.is(reqIds.length, 3);
  assert.ok(reqIds.every((id) => id === reqIds[0]), 'one request ID for every retry');
  // The proxy that answered is tried first next time.
  const before = p3.hits;
  await c.op({ type: 'unlink', path: '/f' }, undefined, new Deadline(5000));
  assert.is(p3.hits, before + 1);
});

test('a refused connection fails over to the next proxy', async () => {
  const dead = await deadUrl();
  const p = await fakeProxy((_req, _body, res) => json(res, 200, ATTR));
  const c = client([dead, p.url]);
  assert.equal(await c.attr('/a', new Deadline(3000)), ATTR);
});

test('every attempt is counted under its client API, retries on other proxies too', async () => {
  const dead = await deadUrl();
  const unavailable = await fakeProxy((_req, _body, res) => json(res, 503, { code: 'UNAVAILABLE', message: 'no primary' }));
  const p = await fakeProxy((req, _body, res) => (req.method === 'POST' ? json(res, 200, { seq: 1 }) : json(res, 200, ATTR)));
  const metrics = new MountMetrics();
  const c = client([dead, unavailable.url, p.url], { metrics });
  await c.op({ type: 'unlink', path: '/f' }, undefined, new Deadline(3000));
  await c.attr('/a', new Deadline(3000)); // p answered last: one attempt
  const counts = Object.fromEntries(
    parseMetricsText(await metrics.registry.metrics())
      .filter((sample) => sample.name === 'dfs_mount_cluster_requests_total')
      .map((sample) => [sample.labels.api, sample.value]),
  );
  assert.equal(counts, { ops: 3, attr: 1 });
});

test('an op answered with an errno is that FS_ERROR; a 4xx error is final', async () => {
  let calls = 0;
  const p = await fakeProxy((req, _body, res) => {
    calls++;
    if (req.method === 'POST') json(res, 200, { seq: 7, errno: 'EEXIST' });
    else json(res, 404, { code: 'FS_ERROR', message: 'no such file', errno: 'ENOENT' });
  });
  const c = client([p.url]);
  const e1 = await c.op({ type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }, undefined, new Deadline(2000)).catch((e: unknown) => e);
  assert.instance(e1, DfsError);
  assert.is((e1 as DfsError).errno, 'EEXIST');
  const e2 = await c.attr('/nope', new Deadline(2000)).catch((e: unknown) => e);
  assert.is((e2 as DfsError).errno, 'ENOENT');
  assert.is(calls, 2, 'no retries of final answers');
});

test('a proxy that never answers is bounded by the deadline', async () => {
  const p = await fakeProxy(() => {
    /* never answers */
  });
  const c = client([p.url]);
  const t0 = Date.now();
  const err = await c.attr('/a', new Deadline(600)).catch((e: unknown) => e);
  const ms = Date.now() - t0;
  assert.instance(err, DfsError);
  assert.is((err as DfsError).code, 'TIMEOUT');
  assert.ok(ms < 2000, `gave up after ${ms} ms`);
});

test('503 is retried until the deadline', async () => {
  const p = await fakeProxy((_req, _body, res) => json(res, 503, { code: 'UNAVAILABLE', message: 'busy' }));
  const c = client([p.url]);
  const t0 = Date.now();
  const err = await c.attr('/a', new Deadline(800)).catch((e: unknown) => e);
  assert.instance(err, DfsError);
  assert.ok(p.hits >= 3, `retried ${p.hits} times`);
  assert.ok(Date.now() - t0 < 2000);
});

test('after a call spent its deadline on 503s, the next fails after one round; success clears it', async () => {
  let ok = false;
  const p = await fakeProxy((_req, _body, res) => (ok ? json(res, 200, ATTR) : json(res, 503, { code: 'UNAVAILABLE', message: 'no primary' })));
  const c = client([p.url]);
  await c.attr('/a', new Deadline(500)).catch(() => undefined);
  const hits = p.hits;
  const t0 = Date.now();
  const err = await c.attr('/a', new Deadline(5000)).catch((e: unknown) => e);
  assert.is((err as DfsError).code, 'UNAVAILABLE');
  assert.is(p.hits, hits + 1, 'one attempt');
  assert.ok(Date.now() - t0 < 300);
  ok = true;
  assert.equal(await c.attr('/a', new Deadline(5000)), ATTR);
  ok = false;
  const before = p.hits;
  await c.attr('/a', new Deadline(400)).catch(() => undefined);
  assert.ok(p.hits - before >= 2, 'back to retrying within the deadline');
});

test('with no proxy reachable a call fails within unreachableRetryMs, later calls at once', async () => {
  const c = client([await deadUrl(), await deadUrl()], { unreachableRetryMs: 500 });
  let t0 = Date.now();
  const e1 = await c.statfs(new Deadline(10_000)).catch((e: unknown) => e);
  const first = Date.now() - t0;
  assert.instance(e1, DfsError);
  assert.is((e1 as DfsError).code, 'UNAVAILABLE');
  assert.ok(first >= 400 && first < 3000, `first call took ${first} ms`);
  t0 = Date.now();
  await c.statfs(new Deadline(10_000)).catch((e: unknown) => e);
  assert.ok(Date.now() - t0 < 300, 'the second call does not back off again');
});

test('a client recovers as soon as a proxy answers again', async () => {
  const p = await fakeProxy((_req, _body, res) => json(res, 200, ATTR));
  const port = Number(new URL(p.url).port);
  await new Promise<void>((r) => p.server.close(() => r()));
  p.server.closeAllConnections();
  const c = client([p.url], { unreachableRetryMs: 200 });
  await c.attr('/a', new Deadline(5000)).catch(() => undefined);
  await new Promise<void>((r) => p.server.listen(port, '127.0.0.1', r));
  assert.equal(await c.attr('/a', new Deadline(5000)), ATTR);
});

test('bad URLs are refused up front', () => {
  assert.throws(() => new ProxyClient({ urls: [], logger }), /at least one/);
  assert.throws(() => new ProxyClient({ urls: ['nope'], logger }), /not a URL/);
  assert.throws(() => new ProxyClient({ urls: ['ftp://x'], logger }), /http/);
});

test.run();
