/*
 * Bounds a caller can push against (issue 13, "Bounds everywhere a caller can push"), on a
 * real cluster: a barrier far above the newest sequence ID is refused at once and claims no
 * holes; a snapshot is only for a member that is not in sync, and one whose receiver stops
 * reading is cut off so that the source's apply goes on; request bodies held by a proxy
 * are capped (503 past the cap) while it goes on answering.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import http2 from 'node:http2';
import { Client } from 'undici';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import type { Membership } from '../../common/api';
import { h2ClientOptions } from '../../common/h2c';
import { NODE_H2_IDLE_MS, PROXY_BODY_BYTES_IN_FLIGHT_MAX } from '../../common/limits';
import { REPLICATE_STREAM_PATH } from '../../storage/replication-stream';
import { pollUntil, processTls, TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';

const s = suite('bounds');
const STALL_MS = 2000;
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p1?: TestClient } = {};

s.before(async () => {
  ctx.dir = tempDir('bounds');
  ctx.cluster = await startCluster({ dataDir: ctx.dir.path + '/data', nodes: 3, proxies: 1, nodeArgs: ['--snapshot-stall-ms', String(STALL_MS)] });
  ctx.p1 = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p1?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `VmRSS of ${pid}`);
  return Number(m[1]) * 1024;
}

async function membership(p: TestClient): Promise<Membership> {
  const m = (await p.get('/v1/cluster')).json.membership as Membership | null;
  assert.ok(m, 'a membership');
  return m;
}

async function nodeState(url: string): Promise<{ appliedSeq: number; role: string }> {
  const client = new TestClient(url, true);
  try {
    return (await client.get('/node/v1/state')).json as { appliedSeq: number; role: string };
  } finally {
    await client.close();
  }
}

async function writeOnce(p: TestClient, i: number): Promise<number> {
  const a = await p.op({ type: 'create', path: `/w${i}`, mode: 0o644, uid: 0, gid: 0, exclusive: false });
  return a.status;
}

s('a barrier 10^6 above the applied point is 400 at once, costs the primary no memory and stalls no write', async () => {
  const { cluster, p1 } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  for (let i = 0; i < 3; i++) assert.is(await writeOnce(p1, i), 200);
  const m = await membership(p1);
  const primary = cluster.nodes.find((n) => n.id === m.primary)!;
  const { appliedSeq } = await nodeState(primary.url);
  const rssBefore = rssBytes(primary.pid);
  // As a proxy would ask (reads are the proxies' to send).
  const client = new Client(primary.url, h2ClientOptions({ headersTimeout: 10_000, bodyTimeout: 10_000 }, processTls(cluster, 'p1')));
  try {
    const started = Date.now();
    const res = await client.request({ method: 'GET', path: `/node/v1/attr?path=/&barrier=${appliedSeq + 1_000_000}` });
    const body = (await res.body.json()) as { code: string };
    const ms = Date.now() - started;
    assert.is(res.statusCode, 400, JSON.stringify(body));
    assert.is(body.code, 'BAD_REQUEST');
    const hold = await client.request({ method: 'POST', path: `/node/v1/manifest?at=${appliedSeq + 1_000_000}` });
    assert.is(hold.statusCode, 400, 'a hold as far ahead is refused too');
    await hold.body.dump();
    let succeeded = 0;
    for (let i = 0; i < 10; i++) if ((await writeOnce(p1, 100 + i)) === 200) succeeded++;
    const rssAddedBytes = rssBytes(primary.pid) - rssBefore;
    process.stdout.write(`barrier=applied+10^6: status ${res.statusCode} in ${ms} ms; primary RSS ${(rssAddedBytes / 1e6).toFixed(1)} MB added; ${succeeded} of 10 writes succeeded\n`);
    assert.is(succeeded, 10);
    assert.ok(rssAddedBytes < 10e6, `RSS +${rssAddedBytes} bytes`);
    const after = await nodeState(primary.url);
    assert.ok(after.appliedSeq < appliedSeq + 100, `no holes claimed: applied ${after.appliedSeq}, was ${appliedSeq}`);
  } finally {
    await client.close();
  }
});

s('a snapshot is refused to an in-sync member and a stranger; a stalled one is cut off and apply goes on', async () => {
  const { cluster, p1 } = ctx as Required<typeof ctx>;
  const m = await membership(p1);
  const backups = m.inSync.filter((id) => id !== m.primary);
  const [source, victim] = [cluster.nodes.find((n) => n.id === backups[0])!, cluster.nodes.find((n) => n.id === backups[1])!];
  // A brick bigger than the receiver's flow-control windows, which are small here: so the
  // stream cannot finish unread into the windows.
  assert.is(await writeOnce(p1, 199), 200);
  for (let at = 0; at < 8 * 1024 * 1024; at += 4 * 1024 * 1024) {
    assert.is((await p1.op({ type: 'write', path: '/w199', offset: at }, Buffer.alloc(4 * 1024 * 1024, 1))).status, 200);
  }
  // As the victim would ask (snapshots are for peer nodes).
  const client = new Client(source.url, h2ClientOptions({ headersTimeout: 10_000, bodyTimeout: 60_000, initialWindowSize: 65_535, connectionWindowSize: 65_535 } as Client.Options, processTls(cluster, victim.id)));
  try {
    for (const node of [m.primary, 'stranger', '']) {
      const res = await client.request({ method: 'GET', path: `/node/v1/snapshot?epoch=${m.epoch}&node=${node}` });
      assert.is(res.statusCode, 400, `snapshot for ${JSON.stringify(node)}`);
      await res.body.dump();
    }
    // The victim goes down: the leader takes it out of the in-sync set, and it is a member
    // that may ask for a snapshot.
    cluster.killProcess('storage', victim.id);
    const after = await pollUntil('the victim out of the in-sync set', 30_000, async () => {
      const next = await membership(p1);
      return !next.inSync.includes(victim.id) && next.nodes[victim.id] ? next : null;
    });
    // The source may hear of the new epoch a moment after the proxy did (421 until then).
    const res = await pollUntil('the source to serve the snapshot', 10_000, async () => {
      const r = await client.request({ method: 'GET', path: `/node/v1/snapshot?epoch=${after.epoch}&node=${victim.id}` });
      if (r.statusCode === 200) return r;
      assert.is(r.statusCode, 421, 'only a stale epoch delays it');
      await r.body.dump();
      return null;
    });
    // Read nothing: the source holds its apply until the stall bound cuts the stream.
    const stalledAt = Date.now();
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) statuses.push(await writeOnce(p1, 200 + i));
    assert.equal(statuses, [200, 200, 200, 200, 200], 'writes go on while a snapshot is stalled');
    const primaryUrl = after.nodes[after.primary]!;
    const target = (await nodeState(primaryUrl)).appliedSeq;
    await pollUntil("the source's apply to move on past the stalled snapshot", STALL_MS * 10, async () => (await nodeState(source.url)).appliedSeq >= target);
    const ms = Date.now() - stalledAt;
    process.stdout.write(`stalled snapshot: the source applied again after ${ms} ms (stall bound ${STALL_MS} ms)\n`);
    assert.ok(ms >= STALL_MS - 100, 'held while the stream was young');
    let cut = false;
    try {
      for await (const _ of res.body) void _;
    } catch {
      cut = true;
    }
    assert.ok(cut, 'the stalled stream ends in an error, never as a whole snapshot');
  } finally {
    await client.close();
    await cluster.restartProcess('storage', victim.id);
  }
});

s("a proxy's request bodies in flight are capped: past the cap 503, and /healthz still answers at once", async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const url = new URL(cluster.proxyUrls[0]!);
  const proxy = cluster.proxies[0]!;
  const rssBefore = rssBytes(proxy.pid);
  const chunk = Buffer.alloc(1024 * 1024, 7);
  const BODIES = 500;
  const BODY_BYTES = 4 * 1024 * 1024;
  const { ca, cert, key } = processTls(cluster, 'admin');
  const admin = { ca, cert, key };
  const statuses: Array<Promise<number>> = [];
  const requests: Array<ReturnType<typeof httpsRequest>> = [];
  for (let i = 0; i < BODIES; i++) {
    const req = httpsRequest({ host: url.hostname, port: url.port, method: 'POST', path: '/v1/ops', headers: { 'content-length': BODY_BYTES + 16, 'content-type': 'application/octet-stream' }, ...admin });
    statuses.push(
      new Promise((resolve) => {
        req.on('response', (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', () => resolve(-1));
      }),
    );
    // All but the last 16 bytes, then stall.
    for (let sent = 0; sent < BODY_BYTES; sent += chunk.length) req.write(chunk);
    requests.push(req);
  }
  try {
    // Past the bytes cap a body is answered 503; past the cap on one client's connections
    // its connection is closed at once (-1). Either way the proxy holds none of it.
    const { refused, closed } = await pollUntil('bodies past the caps to be refused', 60_000, async () => {
      const done = await Promise.all(statuses.map((p) => Promise.race([p, new Promise<number>((r) => setTimeout(() => r(0), 5))])));
      const refused = done.filter((st) => st === 503).length;
      const closed = done.filter((st) => st === -1).length;
      return refused + closed >= BODIES - Math.floor(PROXY_BODY_BYTES_IN_FLIGHT_MAX / BODY_BYTES) ? { refused, closed } : null;
    }, 200);
    // As a kubelet's liveness probe asks it: plain HTTP on the admin port, served by the
    // same event loop as the client port the bodies are stalled on.
    const adminUrl = cluster.records().find((r) => r.kind === 'proxy' && r.id === proxy.id)?.adminUrl;
    assert.ok(adminUrl, 'the proxy has an admin port');
    const started = Date.now();
    const health = await fetch(`${adminUrl}/healthz`, { signal: AbortSignal.timeout(10_000) }).then((r) => ({ status: r.status }));
    const healthMs = Date.now() - started;
    const rssAddedBytes = rssBytes(proxy.pid) - rssBefore;
    process.stdout.write(`${BODIES} stalled 4 MiB bodies: ${refused} refused with 503, ${closed} connections closed past the per-client cap; proxy RSS +${(rssAddedBytes / 1e6).toFixed(0)} MB; /healthz ${health.status} in ${healthMs} ms\n`);
    assert.is(health.status, 200);
    assert.ok(healthMs < 100, `/healthz took ${healthMs} ms`);
    assert.ok(rssAddedBytes < 300e6, `RSS +${rssAddedBytes}`);
  } finally {
    for (const r of requests) r.destroy();
  }
});

s('a node holds bounded memory for 100 stalled 64 MiB replication messages, and closes an idle HTTP/2 connection', async () => {
  const { cluster, p1 } = ctx as Required<typeof ctx>;
  const m = await membership(p1);
  const node = cluster.nodes.find((n) => n.id === m.primary)!;
  const peer = cluster.nodes.find((n) => n.id !== m.primary)!;
  const rssBefore = rssBytes(node.pid);
  const STREAMS = 100;
  const CONNECTIONS = 8;
  const BODY_BYTES = 64 * 1024 * 1024;
  const chunk = Buffer.alloc(1024 * 1024, 3);
  // As a peer node would open them (replication streams are for peers): each stream's one
  // message declares 64 MiB (common/message-stream.ts) and its sender stalls part way.
  const { ca, cert, key } = processTls(cluster, peer.id);
  const sessions = Array.from({ length: CONNECTIONS }, () => http2.connect(node.url, { ca, cert, key, checkServerIdentity: () => undefined }));
  let sentBytes = 0;
  let cut = 0;
  const stalled = new Set<http2.ClientHttp2Stream>();
  try {
    const streams = Array.from({ length: STREAMS }, (_, i) => {
      const req = sessions[i % CONNECTIONS]!.request({ ':method': 'POST', ':path': REPLICATE_STREAM_PATH });
      req.on('close', () => cut++);
      req.on('error', () => undefined);
      const head = Buffer.alloc(8);
      head.writeUInt32BE(4 + BODY_BYTES, 0);
      head.writeUInt32BE(1, 4);
      req.write(head);
      // Send until flow control or the node stops taking more, then stall.
      let mine = 0;
      const pump = () => {
        while (mine < BODY_BYTES - chunk.length) {
          mine += chunk.length;
          sentBytes += chunk.length;
          if (!req.write(chunk)) return;
        }
        stalled.add(req);
      };
      req.on('drain', pump);
      pump();
      return req;
    });
    // Until the node has taken all it will: every stream cut by it, or sent up to its stall
    // point and handed over (nothing left in this side's buffers or session queue).
    await pollUntil('every stream cut or sent up to its stall', 60_000, async () =>
      streams.every((r) => r.closed || r.destroyed || (stalled.has(r) && r.writableLength === 0)) && sessions.every((session) => session.destroyed || session.state.outboundQueueSize === 0),
    100);
    const rssAddedBytes = rssBytes(node.pid) - rssBefore;
    const health = await nodeState(node.url);
    process.stdout.write(`${STREAMS} stalled 64 MiB replication messages on ${CONNECTIONS} connections: ${(sentBytes / 2 ** 20).toFixed(0)} MiB handed to the client's streams, node RSS +${(rssAddedBytes / 1e6).toFixed(0)} MB, ${cut} streams cut by the node, state ${health.role}\n`);
    assert.ok(rssAddedBytes < 512e6, `RSS +${rssAddedBytes}`);
    assert.is(health.role, 'primary');
    for (const r of streams) r.close();
  } finally {
    for (const session of sessions) session.destroy();
  }
  // An idle connection: one request, then nothing.
  const admin = processTls(cluster, 'admin');
  const idle = http2.connect(node.url, { ca: admin.ca, cert: admin.cert, key: admin.key, checkServerIdentity: () => undefined });
  try {
    const opened = Date.now();
    await new Promise<void>((resolve, reject) => {
      const req = idle.request({ ':path': '/healthz' });
      req.on('response', () => req.resume());
      req.on('end', resolve);
      req.on('error', reject);
      req.end();
    });
    await pollUntil('the node to close an idle connection', 60_000 + 5_000, async () => idle.closed || idle.destroyed);
    const ms = Date.now() - opened;
    process.stdout.write(`idle HTTP/2 connection closed by the node after ${(ms / 1000).toFixed(1)} s (bound ${NODE_H2_IDLE_MS / 1000} s)\n`);
    assert.ok(ms < 60_000);
  } finally {
    idle.destroy();
  }
});

s.run();
