/*
 * Primary failover with epochs, with real processes (issue 4, acceptance 2; DESIGN.md,
 * Epochs): a client workload appends to files through both proxies for 60 s while storage
 * nodes are killed with SIGKILL and started again every few seconds, the primary among
 * them, both long enough for the leader to choose a new primary and so briefly that the
 * restarted primary only needs a new epoch. Afterwards every acknowledged byte is on every
 * node and `dfs verify` finds the bricks identical. Then a primary is paused (SIGSTOP): the
 * cluster moves on without it, and once it runs again (SIGCONT) it commits nothing in its
 * old epoch. A backup that heartbeats but stops answering the primary leaves the in-sync
 * set. Last, `dfs node remove` of the primary hands its role over first.
 */
import { randomUUID } from 'node:crypto';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Client } from 'undici';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import type { Membership } from '../../common/api';
import { encodeFrame } from '../../common/frame';
import { h2ClientOptions } from '../../common/h2c';
import { pollUntil, processTls, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';
import { checkContents, clusterStatus, dumpLogs, verifyBricks, waitState, Workload } from '../helpers/workload';

const s = suite('failover');
const NODES = ['n1', 'n2', 'n3'];
const FAULT_MS = 60_000;
/** A node holds the primary's batches unanswered while this file is in its data directory. */
const HANG_FILE = 'fault-hang-replication';

const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; clients?: TestClient[] } = {};

s.before(async () => {
  ctx.dir = tempDir('failover');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2, env: { DFS_FAULT_HANG_REPLICATION_FILE: HANG_FILE } });
  ctx.clients = ctx.cluster.proxyUrls.map((url) => new TestClient(url));
});

s.after(async () => {
  for (const c of ctx.clients ?? []) await c.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

async function membership(client: TestClient): Promise<Membership> {
  const m = (await clusterStatus(client)).membership;
  assert.ok(m, 'the cluster has a membership');
  return m;
}

async function newPrimary(client: TestClient, old: string, timeoutMs = 30_000): Promise<Membership> {
  return pollUntil(`a primary other than ${old}`, timeoutMs, async () => {
    const m = await membership(client);
    return m.primary !== old ? m : null;
  });
}

async function allInSync(client: TestClient, nodes = NODES): Promise<void> {
  for (const id of nodes) await waitState(client, id, 'in-sync', 90_000);
}

/** Every node in sync and a failover candidate (none still confirming a promotion). */
async function allConfirmed(client: TestClient): Promise<void> {
  await allInSync(client);
  await pollUntil('every node a confirmed failover candidate', 30_000, async () => (await clusterStatus(client)).nodes.every((n) => n.state === 'in-sync' && !n.confirming), 100);
}

/** Runs `body` under a workload writing into `dir`; then every node holds every
 * acknowledged byte and `dfs verify` passes. */
async function underWorkload(dir: string, body: (cluster: Cluster, clients: TestClient[], w: Workload) => Promise<string[] | void>): Promise<void> {
  const { cluster, clients } = ctx as Required<typeof ctx>;
  const w = await Workload.start(clients, dir);
  try {
    // The body may say which nodes are left to check (it removed one).
    const nodes = (await body(cluster, clients, w)) ?? NODES;
    await w.stop();
    await allInSync(clients[0]!, nodes);
    await checkContents(clients[0]!, w, nodes);
    await verifyBricks(cluster, nodes.length);
  } catch (e) {
    dumpLogs(cluster);
    throw e;
  } finally {
    await w.stop();
  }
}

s('nodes killed and restarted for 60 s, the primary among them: every acknowledged write survives', () =>
  underWorkload('/chaos', async (cluster, clients, w) => {
    const kills: string[] = [];
    const until = Date.now() + FAULT_MS;
    for (let round = 0; Date.now() < until; round++) {
      await w.progress(15, `before kill ${round + 1}`);
      const m = await membership(clients[round % 2]!);
      // A third of the kills keep the primary down until another is chosen; a third
      // restart it at once (it comes back fenced and takes a new epoch, or is replaced);
      // a third take a backup.
      const kind = round % 3;
      // A failover needs a confirmed in-sync node to take over (proxy/leader.ts): give the
      // cluster the moment it takes to settle after the last restarts.
      if (kind === 0) await allConfirmed(clients[0]!);
      const backups = m.inSync.filter((id) => id !== m.primary);
      const victim = kind === 2 && backups.length > 0 ? backups[round % backups.length]! : m.primary;
      cluster.killProcess('storage', victim);
      await pollUntil(`${victim} to be gone`, 10_000, async () => !cluster.isRunning('storage', victim));
      if (kind === 0) {
        const next = await newPrimary(clients[0]!, victim);
        kills.push(`${victim} (primary; ${next.primary} took over in epoch ${next.epoch})`);
      } else {
        kills.push(victim === m.primary ? `${victim} (primary; restarted at once)` : victim);
      }
      await cluster.restartProcess('storage', victim);
    }
    process.stdout.write(`kills: ${kills.join(', ')}\n`);
    assert.ok(kills.filter((k) => k.includes('primary')).length >= 4, `the primary was killed at least 4 times: ${kills.join(', ')}`);
    assert.ok(kills.some((k) => k.includes('took over')), 'a new primary was chosen at least once');
  }));

/** Sends an op straight to a node, as a proxy of the given epoch would; its HTTP status and code. */
async function submitTo(url: string, epoch: number, seq: number, path: string): Promise<{ status: number; code: string | undefined }> {
  const client = new Client(url, h2ClientOptions({ headersTimeout: 10_000, bodyTimeout: 10_000 }, processTls(ctx.cluster!, 'p1')));
  try {
    const header = { epoch, seq, reqId: randomUUID(), timeMs: Date.now(), op: { type: 'mkdir', path, mode: 0o755, uid: 0, gid: 0 } };
    const res = await client.request({ method: 'POST', path: '/node/v1/ops', headers: { 'content-type': 'application/octet-stream' }, body: encodeFrame(header, Buffer.alloc(0)) });
    const body = (await res.body.json().catch(() => null)) as { code?: string } | null;
    return { status: res.statusCode, code: body?.code };
  } finally {
    await client.close();
  }
}

s('a paused primary is replaced; run again, it commits nothing in its old epoch and rejoins', () =>
  underWorkload('/pause', async (cluster, clients, w) => {
    await w.progress(20, 'before the pause');
    const before = await membership(clients[0]!);
    const old = before.primary;
    const oldUrl = before.nodes[old]!;
    cluster.killProcess('storage', old, 'SIGSTOP');
    try {
      const after = await newPrimary(clients[0]!, old);
      assert.ok(after.epoch > before.epoch);
      assert.not.ok(after.inSync.includes(old), 'the paused primary left the in-sync set');
      await w.progress(30, 'through the new primary while the old one is paused');
    } finally {
      cluster.killProcess('storage', old, 'SIGCONT');
    }
    // An op in the old epoch, as a proxy that missed the change would send it, for the
    // next slot the old primary would take (one far ahead is refused as such, BAD_REQUEST,
    // whatever the epoch): refused for its epoch.
    const oldNode = new TestClient(oldUrl, true);
    const { orderedSeq } = (await oldNode.get('/node/v1/state')).json as { orderedSeq: number };
    await oldNode.close();
    const stale = await submitTo(oldUrl, before.epoch, orderedSeq + 1, '/pause/stale');
    assert.is.not(stale.status, 200, 'the old primary did not commit an op of its old epoch');
    assert.ok(stale.code === 'STALE_EPOCH' || stale.code === 'NOT_PRIMARY', `refused with ${stale.code}`);
    await waitState(clients[0]!, old, 'in-sync', 60_000);
    const attr = await clients[0]!.get('/v1/attr', { path: '/pause/stale' });
    assert.is(attr.status, 404, 'the refused op left nothing behind');
    await w.progress(20, 'with the old primary back as a backup');
  }));

s('a backup that heartbeats but stops answering the primary leaves the in-sync set; writes go on; it rejoins', () =>
  underWorkload('/partition', async (cluster, clients, w) => {
    await w.progress(20, 'before the partition');
    const m = await membership(clients[0]!);
    const victim = m.inSync.find((id) => id !== m.primary)!;
    const hang = join(cluster.nodes.find((n) => n.id === victim)!.dataDir, HANG_FILE);
    writeFileSync(hang, '');
    try {
      const dropped = await pollUntil(`${victim} out of the in-sync set`, 30_000, async () => {
        const now = await membership(clients[0]!);
        return now.inSync.includes(victim) ? null : now;
      });
      assert.ok(dropped.nodes[victim], `${victim} stays a member, as a learner`);
      assert.ok(cluster.isRunning('storage', victim), `${victim} is still running`);
      await w.progress(30, `without ${victim}`);
    } finally {
      rmSync(hang, { force: true });
    }
    await waitState(clients[0]!, victim, 'in-sync', 60_000);
    assert.match(cluster.logTail('proxy', 'p1') + cluster.logTail('proxy', 'p2'), new RegExp(`${victim} stopped answering the primary`));
    await w.progress(20, `with ${victim} back`);
  }));

s('dfs node remove of the primary hands its role over first; writes go on', () =>
  underWorkload('/handover', async (cluster, clients, w) => {
    await allConfirmed(clients[0]!);
    await w.progress(20, 'before the removal');
    const before = await membership(clients[0]!);
    const r = await runDfs(['node', 'remove', before.primary, '--data', cluster.dataDir]);
    assert.is(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /primary/);
    const after = await membership(clients[0]!);
    assert.is.not(after.primary, before.primary);
    assert.not.ok(after.nodes[before.primary], `${before.primary} left the membership`);
    await pollUntil(`${before.primary} to stop`, 20_000, async () => !cluster.isRunning('storage', before.primary));
    await w.progress(30, 'after the removal');
    return NODES.filter((id) => id !== before.primary);
  }));

s.run();
