/*
 * Membership changes under a write workload, with real processes (issue 5: a fourth node
 * joins; issue 4: a node that fell out of every peer's log comes back by full sync, and one
 * killed in the middle of its full sync ends up whole).
 *
 * The nodes keep a tiny log (--log-keep-ops 100, 8 KiB segments), so anything that was
 * away for more than a few dozen ops cannot be fed from a log and must copy a brick. The
 * workload appends to files through both proxies, each writer on its own file, so what an
 * acknowledged write must have left is known exactly; at the end every file is read back
 * through every in-sync node and `dfs verify` compares the bricks.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { HEADER_SERVED_BY } from '../../common/api';
import { commitOp, pollUntil, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';
import { checkContents, clusterStatus, dumpLogs, verifyBricks, waitState, Workload } from '../helpers/workload';

const s = suite('membership');
const own = { uid: 0, gid: 0 };
const NODE_ARGS = ['--log-keep-ops', '100', '--log-segment-bytes', '8192'];

const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; clients?: TestClient[] } = {};

s.before(async () => {
  ctx.dir = tempDir('membership');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2, nodeArgs: NODE_ARGS });
  ctx.clients = ctx.cluster.proxyUrls.map((url) => new TestClient(url));
});

s.after(async () => {
  for (const c of ctx.clients ?? []) await c.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

/** Runs `body` while a workload writes into `dir` (the logs are printed if it fails), then
 * checks every acknowledged byte on each of `nodeIds` and that `dfs verify` compares them. */
async function underWorkload(dir: string, nodeIds: string[], body: (cluster: Cluster, clients: TestClient[], w: Workload) => Promise<void>): Promise<void> {
  const { cluster, clients } = ctx as Required<typeof ctx>;
  const w = await Workload.start(clients, dir);
  try {
    await body(cluster, clients, w);
  } catch (e) {
    dumpLogs(cluster);
    throw e;
  } finally {
    await w.stop();
  }
  await checkContents(clients[0]!, w, nodeIds);
  await verifyBricks(cluster, nodeIds.length);
}

s('a fourth node added under writes full-syncs, catches up, enters the in-sync set and serves reads', () =>
  underWorkload('/join', ['n1', 'n2', 'n3', 'n4'], async (cluster, clients, w) => {
    await w.progress(250, 'before the new node, so the logs no longer reach back to the start');
    const n4 = await cluster.addNode();
    await pollUntil('n4 to start copying a brick', 30_000, async () => cluster.logTail('storage', n4.id).includes('full sync'), 100);
    await waitState(clients[1]!, n4.id, 'in-sync');
    assert.match(cluster.logTail('storage', n4.id), /full sync finished/);
    await w.progress(20, 'with n4 in sync');
    // Reads are spread by load: some of them land on the new node.
    const served = new Map<string, number>();
    for (let i = 0; i < 80; i++) {
      const a = await clients[i % 2]!.get('/v1/attr', { path: '/join/f0' });
      assert.is(a.status, 200);
      const by = String(a.headers[HEADER_SERVED_BY]);
      served.set(by, (served.get(by) ?? 0) + 1);
    }
    assert.ok((served.get(n4.id) ?? 0) > 0, `reads by node: ${JSON.stringify([...served])}`);
  }));

s('a node away past every log comes back by full sync; killed in the middle of it, it still ends up whole', () =>
  underWorkload('/resync', ['n1', 'n2', 'n3', 'n4'], async (cluster, clients, w) => {
    const n3 = cluster.nodes.find((n) => n.id === 'n3')!;
    // A bigger brick, so that a full sync takes long enough to be interrupted.
    for (let i = 0; i < 24; i++) {
      await commitOp(clients[0]!, { type: 'create', path: `/resync/big${i}`, mode: 0o644, ...own, exclusive: true });
      await commitOp(clients[0]!, { type: 'write', path: `/resync/big${i}`, offset: 0 }, Buffer.alloc(2 << 20, i));
    }
    cluster.killProcess('storage', 'n3');
    await pollUntil('n3 to be gone', 10_000, async () => !cluster.isRunning('storage', 'n3'));
    // Writes go on without it once the leader took it out of the in-sync set.
    await waitState(clients[0]!, 'n3', 'down');
    await w.progress(300, 'while n3 is down, past every log');
    const marker = join(n3.dataDir, 'sync.json');
    await cluster.restartProcess('storage', 'n3');
    await pollUntil('n3 to start its full sync', 30_000, async () => existsSync(marker) && existsSync(join(n3.dataDir, 'brick.sync')), 2);
    await pollUntil('n3 to copy some of the brick', 30_000, async () => !existsSync(marker) || readdirSync(join(n3.dataDir, 'brick.sync')).length > 0, 2);
    cluster.killProcess('storage', 'n3');
    await pollUntil('n3 to be gone', 10_000, async () => !cluster.isRunning('storage', 'n3'));
    assert.ok(existsSync(marker), 'n3 was killed before its full sync finished');
    await w.progress(30, 'while n3 is down again');
    await cluster.restartProcess('storage', 'n3');
    await waitState(clients[0]!, 'n3', 'in-sync', 90_000);
    assert.match(cluster.logTail('storage', 'n3'), /full sync was interrupted/);
    assert.match(cluster.logTail('storage', 'n3'), /full sync finished/);
    assert.not.ok(existsSync(marker));
    await w.progress(20, 'with n3 back in sync');
  }));

s('dfs node remove drains a node and takes it out of the membership; writes go on', () =>
  underWorkload('/remove', ['n1', 'n2', 'n3'], async (cluster, clients, w) => {
    await w.progress(10, 'before the removal');
    const r = await runDfs(['node', 'remove', 'n4', '--data', cluster.dataDir]);
    assert.is(r.code, 0, r.stdout + r.stderr);
    const st = await clusterStatus(clients[0]!);
    assert.not.ok(st.membership!.nodes.n4, 'n4 left the membership');
    assert.not.ok(st.membership!.inSync.includes('n4'));
    await pollUntil('n4 to stop', 20_000, async () => !cluster.isRunning('storage', 'n4'));
    await w.progress(10, 'after the removal');
  }));

s.run();
