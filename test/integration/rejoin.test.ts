/*
 * A removed ordinal comes back (issue 17; docs/cluster.md, "A removed node that starts
 * again"): as a StatefulSet does, `dfs node remove n3 --redis URL` (the request stays in
 * Redis, the process is the operator's to stop), then n3 is stopped (scale down: SIGTERM)
 * and started again under the same ID (scale up), once on its old volume and once on an
 * empty one. Each time the leader sees a new start (another boot than the process that
 * left), deletes the spent request, and n3 rejoins as a learner, catches up (by the log or
 * a full sync) and enters the in-sync set; the writes made meanwhile read back from it and
 * `dfs verify` compares three identical bricks. The process that was running when it left
 * stays out while it runs.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Redis } from 'ioredis';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { KEY_REMOVING } from '../../common/redis-keys';
import { redisAuthFor } from '../../common/redis-auth';
import { pollUntil, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';
import { checkContents, clusterStatus, verifyBricks, waitState, Workload } from '../helpers/workload';

const s = suite('rejoin');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p1?: TestClient; p2?: TestClient; redis?: Redis } = {};

s.before(async () => {
  ctx.dir = tempDir('rejoin');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.p1 = new TestClient(ctx.cluster.proxyUrls[0]!);
  ctx.p2 = new TestClient(ctx.cluster.proxyUrls[1]!);
  ctx.redis = new Redis(ctx.cluster.redisUrl, { maxRetriesPerRequest: 1, commandTimeout: 2_000, ...redisAuthFor(ctx.cluster.redisUrl) });
});

s.after(async () => {
  ctx.redis?.disconnect();
  await ctx.p1?.close();
  await ctx.p2?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

/** `dfs node remove ID` as an operator elsewhere runs it: --redis, with the admin
 * credential and Redis login from the environment. */
async function removeAsOperator(cluster: Cluster, id: string): Promise<void> {
  const tls = join(cluster.dataDir, 'tls');
  const r = await runDfs(['node', 'remove', id, '--redis', cluster.redisUrl], 60_000, { DFS_CREDENTIAL: join(tls, 'admin'), DFS_REDIS_AUTH: join(tls, 'redis-admin.json') });
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`removed ${id} from the membership`));
}

async function removedAndStopped(cluster: Cluster, redis: Redis, p: TestClient, id: string): Promise<void> {
  await removeAsOperator(cluster, id);
  // The process that left still runs: it stays out (its boot is the one recorded).
  await new Promise((r) => setTimeout(r, 2_000)); // two leader rounds and two heartbeats at least
  const status = await clusterStatus(p);
  assert.is(status.membership!.nodes[id], undefined, `${id} stays out while the process that left runs`);
  assert.ok((await redis.hget(KEY_REMOVING, id)) !== null, 'the request stays while that process runs');
  cluster.killProcess('storage', id, 'SIGTERM');
  await pollUntil(`${id} to exit`, 20_000, async () => !cluster.isRunning('storage', id));
}

s('a removed node that starts again on its old volume rejoins and catches up', async () => {
  const { cluster, p1, p2, redis } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const w = await Workload.start([p1, p2], '/old-volume');
  await w.progress(20, 'before the removal');
  await removedAndStopped(cluster, redis, p1, 'n3');
  await w.progress(20, 'with n3 gone');
  const backAt = Date.now();
  await cluster.restartProcess('storage', 'n3');
  await waitState(p1, 'n3', 'in-sync', 60_000);
  console.log(`  n3 back on its old volume: in sync after ${Date.now() - backAt} ms`);
  assert.is(await redis.hget(KEY_REMOVING, 'n3'), null, 'the spent request is gone');
  await w.progress(20, 'with n3 back');
  await w.stop();
  await checkContents(p1, w, ['n1', 'n2', 'n3']);
  await verifyBricks(cluster, 3);
});

s('a removed node that starts again on an empty volume rejoins by a full sync', async () => {
  const { cluster, p1, p2, redis } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const w = await Workload.start([p1, p2], '/new-volume');
  await w.progress(20, 'before the removal');
  await removedAndStopped(cluster, redis, p1, 'n3');
  const n3 = cluster.nodes.find((n) => n.id === 'n3')!;
  // A new volume: nothing of the old life is left (the node makes its directory again).
  rmSync(n3.dataDir, { recursive: true, force: true });
  await w.progress(20, 'with n3 gone');
  const backAt = Date.now();
  await cluster.restartProcess('storage', 'n3');
  await waitState(p1, 'n3', 'in-sync', 90_000);
  console.log(`  n3 back on an empty volume: in sync after ${Date.now() - backAt} ms`);
  await w.progress(20, 'with n3 back');
  await w.stop();
  await checkContents(p1, w, ['n1', 'n2', 'n3']);
  await verifyBricks(cluster, 3);
});

s.run();
