/*
 * The floor on copies (issue 14, acceptance 2; docs/cluster.md, "The floor on copies"):
 * with --min-in-sync 2 and two of three storage nodes stopped, no write is acknowledged:
 * each one through a real FUSE mount waits and fails with EIO at the mount's deadline,
 * the primary's commit point does not move, and `dfs status` says the floor is not met.
 * When one node comes back, writes go through again and nothing written before is lost.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { ClusterStatus } from '../../common/api';
import { TestClient } from '../helpers/client';
import { pollFor, startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { runDfs } from '../helpers/dfs-cli';
import { clusterStatus } from '../helpers/workload';

const s = suite('min-in-sync');
const DEADLINE_MS = 10_000;
const OUTAGE_WRITES = 4;
const ctx: { mc?: MountedCluster; client?: TestClient } = {};

s.before(async () => {
  ctx.mc = await startMountedCluster({ prefix: 'min-in-sync', mounts: ['m'], nodes: 3, nodeArgs: ['--min-in-sync', '2'], mountArgs: ['--deadline-ms', String(DEADLINE_MS)] });
  ctx.client = new TestClient(ctx.mc.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.client?.close();
  await ctx.mc?.stop();
});

/** What the primary has applied, as its heartbeat says (it applies only what committed). */
async function primaryCommit(status: ClusterStatus): Promise<number> {
  const m = status.membership!;
  const applied = status.nodes.find((n) => n.id === m.primary)?.appliedSeq;
  assert.ok(typeof applied === 'number', 'the primary heartbeats');
  return applied;
}

s('two of three nodes stopped: 0 writes acknowledged, EIO at the deadline; one back: writes resume', async () => {
  const { mc, client } = ctx as Required<typeof ctx>;
  const dir = mc.mountpoints[0]!;
  await fsp.writeFile(join(dir, 'before'), 'written with three nodes\n');
  const m = (await clusterStatus(client)).membership!;
  const backups = m.inSync.filter((id) => id !== m.primary);
  for (const id of backups) mc.cluster.killProcess('storage', id, 'SIGKILL');
  // The leader drops both from the in-sync set once their heartbeats lapse.
  const alone = await pollFor('the primary alone in sync', 30_000, async () => {
    const st = await clusterStatus(client);
    return st.membership?.inSync.length === 1 && st.belowFloor ? st : undefined;
  });
  assert.equal(alone.belowFloor, { copies: 1, floor: 2 });
  const status = await runDfs(['status', '--proxy', mc.cluster.proxyUrls[0]!]);
  assert.match(status.stdout, /FLOOR NOT MET: 1 in-sync copy, 2 required/);
  // A heartbeat after the last commit (they come every second).
  await new Promise((r) => setTimeout(r, 1500));
  const commitBefore = await primaryCommit(await clusterStatus(client));

  let acknowledged = 0;
  const failures: Array<{ code: string; ms: number }> = [];
  for (let i = 0; i < OUTAGE_WRITES; i++) {
    const started = Date.now();
    try {
      await fsp.writeFile(join(dir, `during-${i}`), `write ${i}\n`);
      acknowledged++;
    } catch (e) {
      failures.push({ code: (e as NodeJS.ErrnoException).code ?? String(e), ms: Date.now() - started });
    }
  }
  const commitAfter = await primaryCommit(await clusterStatus(client));
  console.log(`  floor 2, one node up: ${acknowledged} of ${OUTAGE_WRITES} writes acknowledged; errors ${failures.map((f) => `${f.code} after ${f.ms} ms`).join(', ')}; primary commit ${commitBefore} -> ${commitAfter}`);
  assert.is(acknowledged, 0);
  assert.is(commitAfter, commitBefore, 'nothing committed below the floor');
  failures.forEach((f, i) => {
    assert.is(f.code, 'EIO');
    // The first at the mount's deadline. After it the mount counts the cluster unusable and
    // tries each proxy once per call (mount/proxy-client.ts, degraded): still a wait for
    // the cluster's answer, never past the deadline.
    const floorMs = i === 0 ? DEADLINE_MS * 0.8 : 1_000;
    assert.ok(f.ms >= floorMs && f.ms <= DEADLINE_MS * 1.5, `EIO ${i} after ${f.ms} ms, the deadline being ${DEADLINE_MS} ms`);
  });

  const backAt = Date.now();
  await mc.cluster.restartProcess('storage', backups[0]!);
  const resumedMs = await pollFor('a write acknowledged again', 60_000, async () => {
    try {
      await fsp.writeFile(join(dir, 'after'), 'written with two nodes\n');
      return Date.now() - backAt;
    } catch {
      return undefined;
    }
  });
  // The primary's next heartbeat (within a second) says the floor is met again.
  const st = await pollFor('the floor met again in dfs status', 10_000, async () => {
    const now = await clusterStatus(client);
    return now.belowFloor ? undefined : now;
  });
  console.log(`  ${backups[0]} restarted: writes resumed ${resumedMs} ms later; in sync [${st.membership!.inSync.join(', ')}], floor ${st.belowFloor ? 'not met' : 'met'}`);
  assert.not.ok(st.belowFloor);
  assert.is(await fsp.readFile(join(dir, 'before'), 'utf8'), 'written with three nodes\n');
  assert.is(await fsp.readFile(join(dir, 'after'), 'utf8'), 'written with two nodes\n');
});

s.run();
