/*
 * Readiness as Kubernetes uses it (issue 17): a proxy's /readyz comes from the membership it
 * holds, so a Redis that stops answering for a few seconds does not take every proxy out of
 * a Service at once; a storage node's /readyz is 200 while it is an in-sync member, and
 * 503 once it stops (SIGTERM) or while it is not in sync.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { httpGet } from '../../cli/probes';
import { pollUntil, TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';
import { clusterStatus } from '../helpers/workload';

const s = suite('readiness');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};
/** A Redis blip: longer than a lease, well under the proxies' 30 s bound. */
const BLIP_MS = 4_000;

s.before(async () => {
  ctx.dir = tempDir('readiness');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

function adminUrl(cluster: Cluster, kind: 'proxy' | 'storage', id: string): string {
  const record = cluster.records().find((r) => r.kind === kind && r.id === id);
  assert.ok(record?.adminUrl, `${kind} ${id} has an admin port`);
  return record.adminUrl;
}

s('a Redis that stops answering for a few seconds leaves every proxy ready', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const urls = cluster.proxies.map((p) => adminUrl(cluster, 'proxy', p.id));
  for (const url of urls) assert.is((await httpGet(`${url}/readyz`)).status, 200);
  cluster.killProcess('redis', 'redis', 'SIGSTOP');
  const notReady: string[] = [];
  let probes = 0;
  try {
    const until = Date.now() + BLIP_MS;
    while (Date.now() < until) {
      for (const url of urls) {
        const status = (await httpGet(`${url}/readyz`).catch(() => ({ status: 0 }))).status;
        probes++;
        if (status !== 200) notReady.push(`${url}: ${status}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    cluster.killProcess('redis', 'redis', 'SIGCONT');
  }
  console.log(`  Redis stopped for ${BLIP_MS} ms: ${probes} probes, ${notReady.length} not ready`);
  assert.equal(notReady, []);
  await cluster.waitReady(60_000);
});

s('a storage node is ready while in sync, and not once it stops', async () => {
  const { cluster, p } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const m = (await clusterStatus(p)).membership!;
  for (const id of m.inSync) assert.is((await httpGet(`${adminUrl(cluster, 'storage', id)}/readyz`)).status, 200, id);
  // A backup that stops leaves the in-sync set before it exits; its admin port says so
  // until it closes.
  const backup = m.inSync.find((id) => id !== m.primary)!;
  const url = adminUrl(cluster, 'storage', backup);
  cluster.killProcess('storage', backup, 'SIGTERM');
  const seen = await pollUntil(`${backup} to stop`, 20_000, async () => {
    const answer = await httpGet(`${url}/readyz`).catch(() => null);
    return answer === null ? 'gone' : answer.status === 503 ? '503' : null;
  }, 10);
  await pollUntil(`${backup} to exit`, 20_000, async () => !cluster.isRunning('storage', backup));
  assert.ok((await httpGet(`${url}/readyz`).catch(() => null)) === null, 'the admin port is closed once it exited');
  console.log(`  ${backup} after SIGTERM: /readyz ${seen === '503' ? '503 while it stopped' : 'closed before a probe saw 503'}`);
  // Started again, it is a learner until it caught up: ready only once in sync.
  await cluster.restartProcess('storage', backup);
  await pollUntil(`${backup} ready again`, 60_000, async () => (await httpGet(`${url}/readyz`)).status === 200, 100);
  const now = (await clusterStatus(p)).membership!;
  assert.ok(now.inSync.includes(backup), `${backup} is in sync when it says ready`);
});

s.run();
