/*
 * Property-based fuzzing (fast-check) of every endpoint of a real proxy and a real storage
 * node: random and mutated queries, headers and bodies (random bytes, mutated frames,
 * frames of op-shaped JSON at the cluster's own epoch and near its sequence IDs) must be
 * answered with a status below 500, within a deadline, and leave both processes running.
 *
 * The cluster is one node and one proxy (`dfs local`'s launcher): with one node a forged
 * `sync-required` or `replicate` is refused (the node is the primary) rather than sending a
 * backup into a full sync, whose 503s while it copies are an availability answer, not a
 * fault; keeping backups out of that is the role check on node endpoints (issue 13, item 1).
 * `/readyz` answers 200 or 503 by definition and is held to that.
 *
 * DFS_FUZZ_SEED=N replays a run; a failing case prints its seed and the shrunk request (and
 * the first failing request before shrinking). Each service gets a time budget
 * (DFS_FUZZ_BUDGET_MS, 90 s) so that a slow machine runs fewer cases instead of overrunning
 * the runner's limit per file; it must still run at least 300.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { Client } from 'undici';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { encodeFrame } from '../../common/frame';
import { h2ClientOptions } from '../../common/h2c';
import { clientConnectOptions } from '../../common/tls';
import { processTls, TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';
import { fuzzAssert, opLike } from '../helpers/fuzz-arbitraries';

const SEED = Number(process.env.DFS_FUZZ_SEED ?? Date.now() % 2 ** 31);
const SCALE = Number(process.env.DFS_FUZZ_RUNS_SCALE ?? 1);
const RUNS_PER_SERVICE = Math.max(1, Math.round(3_000 * SCALE));
/** A request not answered within this is a hang. */
const ANSWER_DEADLINE_MS = 20_000;
/** Each service's fuzzing, shrinking a failure included, stops after this; a slow machine
 * runs fewer cases (at least MIN_CASES) rather than running past the runner's limit. */
const BUDGET_MS = Number(process.env.DFS_FUZZ_BUDGET_MS ?? 90_000);
const MIN_CASES = Math.min(RUNS_PER_SERVICE, 300);
/** A case slower than this is printed as it happens, so a slow or hanging run says where. */
const SLOW_CASE_MS = 3_000;
process.stdout.write(`fuzz-endpoints seed ${SEED} (replay with DFS_FUZZ_SEED=${SEED})\n`);

const s = suite('fuzz-endpoints');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; epoch?: number } = {};

s.before(async () => {
  ctx.dir = tempDir('fuzz');
  ctx.cluster = await startCluster({ dataDir: ctx.dir.path + '/data', nodes: 1, proxies: 1 });
  await ctx.cluster.waitReady(60_000);
  const p = new TestClient(ctx.cluster.proxyUrls[0]!);
  try {
    // Something to read, list and change.
    for (const op of [
      { type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 },
      { type: 'create', path: '/d/f', mode: 0o644, uid: 0, gid: 0, exclusive: true },
      { type: 'symlink', path: '/d/l', target: 'f', uid: 0, gid: 0 },
    ] as const) {
      assert.is((await p.op(op)).status, 200);
    }
    assert.is((await p.op({ type: 'write', path: '/d/f', offset: 0 }, Buffer.from('hello'))).status, 200);
    ctx.epoch = (await p.get('/v1/cluster')).json.membership.epoch;
  } finally {
    await p.close();
  }
});

s.after(async () => {
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

interface Endpoint {
  method: 'GET' | 'POST';
  path: string;
  /** Query parameters it reads. */
  params: string[];
  /** What its body is, if it takes one. */
  body?: 'op' | 'sequenced' | 'frames' | 'query' | 'lock';
  /** The statuses it may answer (default: any below 500). */
  allowed?: (status: number) => boolean;
}

const READ_PARAMS = ['path', 'lease', 'barrier', 'offset', 'size', 'name'];
const PROXY_ENDPOINTS: Endpoint[] = [
  { method: 'GET', path: '/healthz', params: [] },
  { method: 'GET', path: '/readyz', params: [], allowed: (st) => st === 200 || st === 503 },
  { method: 'GET', path: '/metrics', params: [] },
  { method: 'GET', path: '/v1/cluster', params: [] },
  { method: 'POST', path: '/v1/verify', params: [] },
  { method: 'POST', path: '/v1/ops', params: [], body: 'op' },
  ...['attr', 'dir', 'link', 'data', 'xattr', 'xattrs', 'statfs'].map((r): Endpoint => ({ method: 'GET', path: `/v1/${r}`, params: READ_PARAMS })),
  { method: 'GET', path: '/v1/leases/poll', params: ['mount', 'ack', 'session'] },
  { method: 'POST', path: '/v1/locks', params: [], body: 'lock' },
  { method: 'POST', path: '/v1/locks/session', params: [], body: 'lock' },
  { method: 'GET', path: '/v1/nope', params: ['path'] },
];
const NODE_ENDPOINTS: Endpoint[] = [
  { method: 'GET', path: '/healthz', params: [] },
  { method: 'GET', path: '/node/v1/state', params: [] },
  { method: 'POST', path: '/node/v1/ops', params: [], body: 'sequenced' },
  { method: 'POST', path: '/node/v1/replicate', params: ['epoch', 'commit', 'prefix', 'truncate'], body: 'frames' },
  { method: 'POST', path: '/node/v1/sync-required', params: ['epoch', 'seq'] },
  { method: 'GET', path: '/node/v1/snapshot', params: ['epoch', 'node'] },
  { method: 'POST', path: '/node/v1/manifest', params: ['at'] },
  { method: 'GET', path: '/node/v1/leases/poll', params: ['mount', 'ack', 'session'] },
  { method: 'GET', path: '/node/v1/statfs', params: [] },
  ...['attr', 'dir', 'link', 'data', 'xattr', 'xattrs'].flatMap((r): Endpoint[] => [
    { method: 'GET', path: `/node/v1/${r}`, params: READ_PARAMS },
    { method: 'POST', path: `/node/v1/${r}`, params: [], body: 'query' },
  ]),
];

/** A query value: a plausible one, a number near the cluster's or far from it, or junk. */
const value = fc.oneof(
  fc.constantFrom('/', '/d', '/d/f', '/d/l', '/nope', 'user.a', 'trusted.x', 'n1', 'stranger', '0', '1', '2', '-1', '', '%', '%zz', '%c3%28', '%2F..%2F', '%00', '..', '9007199254740993', '1e3', 'abc,def', 'A-1'),
  fc.nat(1_000_000).map(String),
  fc.string({ maxLength: 30 }).map(encodeURIComponent),
);
/** Header names and values it might meet, and random ones (printable ASCII: a client
 * cannot send anything else). */
const headerName = fc.oneof(
  fc.constantFrom('content-type', 'dfs-mount', 'dfs-read-node', 'x-dfs-uid', 'x-dfs-gid', 'x-dfs-groups', 'accept', 'content-encoding', 'range', 'te', 'proxy-connection', 'http2-settings', 'expect'),
  fc.stringMatching(/^[a-z][a-z0-9-]{0,15}$/),
);
/** Headers an HTTP/2 client may not send (RFC 9113 8.2.2: connection-specific fields), and
 * `host`, which undici takes for the TLS server name. undici's HTTP/2 client does not
 * refuse all of them as it refuses others (UND_ERR_INVALID_ARG): for `te`, `proxy-connection`
 * and `http2-settings` node's http2 throws inside undici's connect callback and the request
 * never settles, so they are not sent to the node at all. The proxy (HTTP/1.1) gets them. */
function h2Unsendable(headers: Record<string, string>): boolean {
  return Object.entries(headers).some(([k, v]) => ['proxy-connection', 'http2-settings', 'host', 'expect'].includes(k) || (k === 'te' && v !== 'trailers'));
}
const headerValue = fc.oneof(
  fc.constantFrom('application/x-www-form-urlencoded', 'application/octet-stream', 'n1', 'node-9', 'gzip', '0', '65534', '0,1,2', 'bytes=0-1'),
  fc.stringMatching(/^[\x21-\x7e]{0,40}$/),
);

/** A frame whose header is `header`, or a mutation of it. */
const frameOf = (header: fc.Arbitrary<unknown>) =>
  fc.tuple(header, fc.uint8Array({ maxLength: 64 }), fc.nat(), fc.integer({ min: 0, max: 3 })).map(([h, data, at, how]) => {
    const f = encodeFrame(h, Buffer.from(data));
    const i = at % f.length;
    if (how === 1) f[i] = f[i]! ^ 0x5a;
    if (how === 2) return f.subarray(0, i);
    return f;
  });
const seqNear = fc.oneof(fc.nat(200), fc.constantFrom(0, 1, 2 ** 31, Number.MAX_SAFE_INTEGER, -1, 1.5));

function bodyOf(kind: Endpoint['body'], epoch: number): fc.Arbitrary<Buffer> {
  const junk = fc.uint8Array({ maxLength: 256 }).map((a) => Buffer.from(a));
  switch (kind) {
    case 'op':
      return fc.oneof(junk, frameOf(fc.record({ reqId: fc.oneof(fc.uuid(), fc.string({ maxLength: 8 })), op: opLike })), frameOf(fc.jsonValue({ maxDepth: 3 })));
    case 'sequenced':
    case 'frames': {
      const header = fc.record({ epoch: fc.oneof(fc.constant(epoch), fc.nat(5)), seq: seqNear, reqId: fc.uuid(), timeMs: fc.nat(), op: opLike });
      const frames = fc.array(frameOf(header), { minLength: 1, maxLength: 3 }).map((fs) => Buffer.concat(fs));
      return fc.oneof(junk, frames);
    }
    case 'lock': {
      // Lock requests and session calls (proxy/locks.ts), well formed and not.
      const lockLike = fc.record(
        {
          ino: fc.oneof(fc.nat(100), fc.constantFrom(-1, 0, 1.5, 'x')),
          path: fc.constantFrom('/d/f', 'x', ''),
          session: fc.oneof(fc.uuid(), fc.string({ maxLength: 70 })),
          kind: fc.constantFrom('posix', 'flock', 'x'),
          cmd: fc.constantFrom('get', 'set', 'x'),
          owner: fc.constantFrom('00000000000000aa', 'zz', ''),
          type: fc.constantFrom('r', 'w', 'u', 'x'),
          start: seqNear,
          end: seqNear,
          pid: fc.oneof(fc.nat(), fc.constant(-1)),
          waitMs: fc.constantFrom(0, 5, 2_000, -1, 1.5),
          ms: fc.constantFrom(1_000, 5, 60_001),
          create: fc.boolean(),
          close: fc.boolean(),
        },
        { requiredKeys: [] },
      );
      return fc.oneof(junk, lockLike.map((o) => Buffer.from(JSON.stringify(o))), fc.jsonValue({ maxDepth: 3 }).map((v) => Buffer.from(JSON.stringify(v))));
    }
    case 'query':
      return fc.array(fc.tuple(fc.constantFrom(...READ_PARAMS), value), { maxLength: 5 }).map((kv) => Buffer.from(kv.map(([k, v]) => `${k}=${v}`).join('&')));
    default:
      return fc.oneof(fc.constant(Buffer.alloc(0)), junk);
  }
}

/** One request to one of `endpoints`. */
function requestOf(endpoints: Endpoint[], epoch: number) {
  return fc
    .constantFrom(...endpoints)
    .chain((e) =>
      fc.record({
        endpoint: fc.constant(e),
        query: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...(e.params.length > 0 ? e.params : ['x'])), fc.stringMatching(/^[a-z]{1,8}$/)), e.params.includes('epoch') ? fc.oneof(value, fc.constant(String(epoch))) : value), { maxLength: 6 }),
        headers: fc.dictionary(headerName, headerValue, { maxKeys: 4 }),
        body: e.method === 'POST' ? bodyOf(e.body, epoch) : fc.constant(null),
      }),
    );
}

async function fuzzService(name: string, client: Client, endpoints: Endpoint[], h2: boolean): Promise<{ cases: number; byStatus: Record<number, number>; unsendable: number }> {
  const byStatus: Record<number, number> = {};
  let cases = 0;
  let unsendable = 0;
  let failures = 0;
  /** The first failure is printed before fast-check shrinks it (shrinking a hang takes a
   * deadline per step, and may be cut short by the budget). */
  const fail = (message: string): never => {
    if (failures++ === 0) process.stdout.write(`fuzz ${name}: first failure, before shrinking: ${message}\n`);
    throw new Error(message);
  };
  await fuzzAssert(
    fc.asyncProperty(requestOf(endpoints, ctx.epoch!), async ({ endpoint, query, headers, body }) => {
      cases++;
      if (h2 && h2Unsendable(headers)) {
        unsendable++;
        return;
      }
      const path = endpoint.path + (query.length > 0 ? '?' + query.map(([k, v]) => `${k}=${v}`).join('&') : '');
      let status: number;
      const at = Date.now();
      try {
        const res = await client.request({
          method: endpoint.method,
          path,
          headers: { ...headers, ...(body ? { 'content-length': String(body.length) } : {}) },
          body: body ?? undefined,
          headersTimeout: ANSWER_DEADLINE_MS,
          bodyTimeout: ANSWER_DEADLINE_MS,
        });
        status = res.statusCode;
        await res.body.dump({ limit: 64 * 1024 * 1024 });
      } catch (e) {
        const code = (e as { code?: string }).code ?? '';
        // What no client can send (undici refuses it before the wire) is no case.
        if (code === 'UND_ERR_INVALID_ARG' || code === 'UND_ERR_NOT_SUPPORTED') {
          unsendable++;
          return;
        }
        return fail(`${name} ${endpoint.method} ${path}: no answer after ${Date.now() - at} ms (${code} ${(e as Error).message})`);
      }
      const tookMs = Date.now() - at;
      if (tookMs > SLOW_CASE_MS) process.stdout.write(`fuzz ${name}: slow case, ${endpoint.method} ${path} answered ${status} after ${tookMs} ms\n`);
      byStatus[status] = (byStatus[status] ?? 0) + 1;
      const ok = endpoint.allowed ? endpoint.allowed(status) : status < 500;
      if (!ok) fail(`${name} ${endpoint.method} ${path} headers ${JSON.stringify(headers)}: status ${status}`);
    }),
    { seed: SEED, numRuns: RUNS_PER_SERVICE, interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false },
  );
  return { cases, byStatus, unsendable };
}

s('every proxy and node endpoint: random and mutated requests are answered below 500, in time, and both processes live on', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  // The proxy as the administrator's tools reach it, the node as a proxy does (its ops and
  // reads; the peer-only routes answer 403 to it, which is below 500 too).
  const proxy = new Client(cluster.proxyUrls[0]!, { pipelining: 1, connect: clientConnectOptions(processTls(cluster, 'admin'), ['proxy']) });
  const node = new Client(cluster.nodes[0]!.url, h2ClientOptions({}, processTls(cluster, 'p1')));
  try {
    const started = Date.now();
    for (const [name, client, endpoints, h2] of [
      ['proxy', proxy, PROXY_ENDPOINTS, false],
      ['node', node, NODE_ENDPOINTS, true],
    ] as const) {
      const at = Date.now();
      const r = await fuzzService(name, client, endpoints, h2);
      process.stdout.write(`fuzz ${name}: ${r.cases} cases (${r.unsendable} unsendable) in ${((Date.now() - at) / 1000).toFixed(1)} s, statuses ${JSON.stringify(r.byStatus)}, seed ${SEED}\n`);
      assert.ok(r.cases >= MIN_CASES, `${name}: ${r.cases} cases within ${BUDGET_MS} ms, fewer than ${MIN_CASES}`);
      assert.ok(Object.keys(r.byStatus).some((st) => Number(st) >= 400), `${name}: some requests were refused`);
      assert.ok(Object.keys(r.byStatus).some((st) => Number(st) < 300), `${name}: some requests were answered`);
    }
    process.stdout.write(`fuzz-endpoints: ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
    assert.ok(cluster.isRunning('proxy', cluster.proxies[0]!.id), 'the proxy lives on');
    assert.ok(cluster.isRunning('storage', cluster.nodes[0]!.id), 'the node lives on');
    const health = await new TestClient(cluster.proxyUrls[0]!).get('/v1/attr', { path: '/d/f' });
    assert.is(health.status, 200, 'the cluster still serves');
  } finally {
    await proxy.close();
    await node.close();
  }
});

s.run();
