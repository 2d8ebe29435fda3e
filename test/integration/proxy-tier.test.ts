/*
 * The proxy tier under failure (issue 5): reads spread over every in-sync node and leave a
 * stopped one alone (acceptance 4), and a killed leader is replaced within the lease while
 * writes through the other proxy go on, none lost or applied twice (acceptance 1).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { HEADER_SERVED_BY, type ClusterStatus } from '../../common/api';
import type { Op } from '../../common/ops';
import { commitOp, pollUntil, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const own = { uid: 0, gid: 0 };
/** The proxies' leader lease (startCluster's default, proxy --lease-ms). */
const LEASE_MS = 3_000;
/** A follower tries for the lease every quarter lease; allow for that and a loaded machine. */
const LEADER_TAKEOVER_SLACK_MS = 2_000;

const commit = (client: TestClient, op: Op, data?: Buffer) => commitOp(client, op, data, 20_000);

async function status(client: TestClient): Promise<ClusterStatus> {
  const a = await client.get('/v1/cluster');
  assert.is(a.status, 200);
  return a.json as ClusterStatus;
}

const reads = suite('reads: spread over the in-sync nodes, a stopped node left alone');
const rctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient; stopped?: boolean } = {};

reads.before(async () => {
  rctx.dir = tempDir('proxy-reads');
  rctx.cluster = await startCluster({ dataDir: join(rctx.dir.path, 'data'), nodes: 3, proxies: 1 });
  rctx.p = new TestClient(rctx.cluster.proxyUrls[0]!);
});

reads.after(async () => {
  if (rctx.stopped) rctx.cluster?.killProcess('storage', 'n2', 'SIGCONT');
  await rctx.p?.close();
  await rctx.cluster?.stop();
  rctx.dir?.remove();
});

reads('every node serves a share of the reads; a SIGSTOPped node gets none, and is probed back in after SIGCONT', async () => {
  const { cluster, p } = rctx as Required<typeof rctx>;
  await commit(p, { type: 'create', path: '/f', mode: 0o644, ...own, exclusive: true });
  const data = randomBytes(64 * 1024);
  await commit(p, { type: 'write', path: '/f', offset: 0 }, data);

  const served = new Map<string, number>();
  const readMany = async (count: number, concurrency = 6) => {
    let left = count;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (left-- > 0) {
          const a = await p.get('/v1/data', { path: '/f', offset: 0, size: data.length });
          assert.is(a.status, 200, JSON.stringify(a.json));
          assert.ok(a.bytes.equals(data));
          const by = String(a.headers[HEADER_SERVED_BY]);
          served.set(by, (served.get(by) ?? 0) + 1);
        }
      }),
    );
  };

  await readMany(300);
  for (const n of cluster.nodes) {
    const share = (served.get(n.id) ?? 0) / 300;
    assert.ok(share >= 0.1, `${n.id} served ${served.get(n.id) ?? 0} of 300 reads: ${JSON.stringify([...served])}`);
  }
  const counted = await status(p);
  for (const n of cluster.nodes) {
    const view = counted.nodes.find((x) => x.id === n.id)!;
    assert.ok((view.reads ?? 0) >= (served.get(n.id) ?? 0), 'the proxy counts what it sent');
    assert.is(view.state, 'in-sync');
    assert.ok(typeof view.lag === 'number' && view.lag >= 0, `lag of ${n.id}: ${view.lag}`);
  }

  // n2 stops answering. Reads keep succeeding; the proxy marks it slow and sends it nothing.
  cluster.killProcess('storage', 'n2', 'SIGSTOP');
  rctx.stopped = true;
  await pollUntil('the proxy to mark n2 slow', 15_000, async () => {
    await readMany(6);
    return (await status(p)).nodes.find((x) => x.id === 'n2')?.slow === true;
  });
  const before = (await status(p)).nodes.find((x) => x.id === 'n2')!.reads!;
  // Its heartbeat stops too: status calls it down once its alive key expires.
  await pollUntil('n2 to show as down', 15_000, async () => (await status(p)).nodes.find((x) => x.id === 'n2')?.state === 'down');
  served.clear();
  await readMany(100);
  assert.is(served.get('n2'), undefined, 'a stopped node serves nothing');
  assert.is((await status(p)).nodes.find((x) => x.id === 'n2')!.reads, before, 'and is sent no read while it is slow');

  // It answers again: a probe brings it back and it serves reads again.
  cluster.killProcess('storage', 'n2', 'SIGCONT');
  rctx.stopped = false;
  await pollUntil('n2 back in the rotation', 15_000, async () => (await status(p)).nodes.find((x) => x.id === 'n2')?.slow === false);
  served.clear();
  await pollUntil('n2 to serve reads again', 15_000, async () => {
    await readMany(30);
    return (served.get('n2') ?? 0) > 0;
  });
});

reads.run();

const leader = suite('leader proxy killed under a write workload');
const lctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; clients?: TestClient[] } = {};

leader.before(async () => {
  lctx.dir = tempDir('proxy-leader');
  lctx.cluster = await startCluster({ dataDir: join(lctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  lctx.clients = lctx.cluster.proxyUrls.map((u) => new TestClient(u));
});

leader.after(async () => {
  await Promise.all((lctx.clients ?? []).map((c) => c.close()));
  await lctx.cluster?.stop();
  lctx.dir?.remove();
});

leader('a follower takes over within the lease; writes through it go on, none lost, none twice', async () => {
  const { cluster, clients } = lctx as Required<typeof lctx>;
  const ids = cluster.proxies.map((x) => x.id);
  const st = await pollUntil('a leader', 10_000, async () => {
    const s = await status(clients[0]!);
    return s.leader ? s : null;
  });
  const leaderIndex = ids.indexOf(st.leader!);
  assert.ok(leaderIndex >= 0, `leader ${st.leader} is one of ${ids.join(',')}`);
  const survivor = clients[1 - leaderIndex]!;
  const survivorId = ids[1 - leaderIndex]!;

  await commit(survivor, { type: 'create', path: '/log', mode: 0o644, ...own, exclusive: true });
  let model = Buffer.alloc(0);
  let retried = 0;
  let writing = true;
  let afterKill = 0;
  let killed = false;
  const writer = (async () => {
    while (writing) {
      const chunk = randomBytes(1 + Math.floor(Math.random() * 2000));
      const { answer, attempts } = await commit(survivor, { type: 'write', path: '/log', offset: model.length }, chunk);
      assert.is(answer.json.errno, undefined);
      retried += attempts - 1;
      model = Buffer.concat([model, chunk]);
      if (killed) afterKill++;
    }
  })();
  try {
    await pollUntil('some writes before the kill', 10_000, async () => model.length > 0);
    cluster.killProcess('proxy', st.leader!);
    killed = true;
    await pollUntil(`${survivorId} to lead`, LEASE_MS + LEADER_TAKEOVER_SLACK_MS, async () => (await status(survivor)).leader === survivorId);
    await pollUntil('writes after the takeover', 10_000, async () => afterKill >= 20);
  } finally {
    writing = false;
    await writer;
  }
  process.stdout.write(`leader kill: ${afterKill} appends after the kill, ${retried} retried attempts\n`);

  for (const n of cluster.nodes) {
    const a = await pollUntil(`/log on ${n.id}`, 10_000, async () => {
      const r = await survivor.get('/v1/data', { path: '/log', offset: 0, size: model.length + 1 }, { 'dfs-read-node': n.id });
      return r.status === 200 && r.bytes.length === model.length ? r : null;
    });
    assert.ok(a.bytes.equals(model), `every acknowledged append once, on ${n.id}`);
  }
  const v = await runDfs(['verify', '--proxy', cluster.proxyUrls[1 - leaderIndex]!, '--json']);
  assert.is(v.code, 0, v.stdout + v.stderr);
});

leader.run();
