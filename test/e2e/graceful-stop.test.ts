/*
 * Graceful SIGTERM (issue 17; docs/cluster.md, "Stopping a node", "Stopping a proxy"), with
 * a write loop through a real FUSE mount the whole time:
 * - acceptance 3: SIGTERM to the storage primary: another node is primary before the
 *   process exits (its heartbeat asked the leader to hand the role over), and the mount
 *   sees no error;
 * - SIGTERM to the leader proxy: it gives up its lease, so the other proxy leads before
 *   the lease would have lapsed, and the mount (which knows both proxies) sees no error.
 * - a rolling restart of every storage node, one at a time, the next only once the last
 *   one's /readyz (an in-sync member) answers 200 again, as a StatefulSet's update goes.
 * After each, every file the loop wrote reads back as written, the stopped process comes
 * back, and `dfs verify` finds the bricks equal.
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Redis } from 'ioredis';
import { KEY_LEADER, KEY_MEMBERSHIP } from '../../common/redis-keys';
import { parseMembership } from '../../common/registry';
import { redisAuthFor } from '../../common/redis-auth';
import { pollUntil, TestClient } from '../helpers/client';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { clusterStatus, dumpLogs, verifyBricks } from '../helpers/workload';
import { httpGet } from '../../cli/probes';

const s = suite('graceful-stop');
/** The storage node's and the proxy's default --stop-timeout-ms. */
const NODE_STOP_TIMEOUT_MS = 15_000;
const PROXY_STOP_TIMEOUT_MS = 12_000;
const ctx: { mc?: MountedCluster; redis?: Redis } = {};

s.before(async () => {
  ctx.mc = await startMountedCluster({ prefix: 'graceful-stop', mounts: ['m'], nodes: 3, proxies: 2 });
  const url = ctx.mc.cluster.redisUrl;
  ctx.redis = new Redis(url, { maxRetriesPerRequest: 1, commandTimeout: 2_000, ...redisAuthFor(url) });
});

s.after(async () => {
  ctx.redis?.disconnect();
  await ctx.mc?.stop();
});

/** Writes DIR/wN (a whole file per step: create, write, close, which waits for the
 * commit) until stopped; counts what succeeded and keeps every error. */
class WriteLoop {
  written = 0;
  readonly errors: string[] = [];
  private running = true;
  private readonly done: Promise<void>;

  constructor(private readonly dir: string) {
    this.done = this.run();
  }

  private async run(): Promise<void> {
    await fsp.mkdir(this.dir);
    while (this.running) {
      const i = this.written;
      try {
        await fsp.writeFile(join(this.dir, `w${i}`), WriteLoop.content(i));
        this.written++;
      } catch (e) {
        this.errors.push(`w${i}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
        // A file system that fails is not hammered; the failure is already counted.
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  static content(i: number): string {
    return `write ${i} `.repeat(1 + (i % 200));
  }

  async progress(n: number, what: string): Promise<void> {
    const target = this.written + n;
    await pollUntil(`${n} more writes through the mount (${what})`, 60_000, async () => this.written >= target || this.errors.length > 0);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }

  /** Every file reads back as written. */
  async check(): Promise<void> {
    for (let i = 0; i < this.written; i++) {
      assert.is(await fsp.readFile(join(this.dir, `w${i}`), 'utf8'), WriteLoop.content(i), `w${i}`);
    }
  }
}

s('SIGTERM to the storage primary: another node is primary before it exits; the mount sees no error', async () => {
  const { mc } = ctx as Required<typeof ctx>;
  const client = new TestClient(mc.cluster.proxyUrls[1]!);
  try {
    await mc.cluster.waitReady(60_000);
    const before = (await clusterStatus(client)).membership!;
    assert.is(before.inSync.length, 3);
    const loop = new WriteLoop(join(mc.mountpoints[0]!, 'node-stop'));
    await loop.progress(20, 'before the SIGTERM');
    const writtenBefore = loop.written;

    const sentAt = Date.now();
    mc.cluster.killProcess('storage', before.primary, 'SIGTERM');
    // The membership in Redis, then whether the process still runs: a new primary seen
    // before the process was seen gone was in place while it ran. (The window may be short
    // on a loaded machine, so the node's own word below is the evidence that must hold.)
    const seen: { newPrimary: { id: string; ms: number } | null } = { newPrimary: null };
    const exitMs = await pollUntil(`${before.primary} to exit`, NODE_STOP_TIMEOUT_MS + 5_000, async () => {
      const text = await ctx.redis!.get(KEY_MEMBERSHIP);
      const running = mc.cluster.isRunning('storage', before.primary);
      const primary = text ? parseMembership(text).primary : null;
      if (running && seen.newPrimary === null && primary !== null && primary !== before.primary) seen.newPrimary = { id: primary, ms: Date.now() - sentAt };
      return running ? null : Date.now() - sentAt;
    }, 10);
    const newPrimary = seen.newPrimary;
    await loop.progress(20, 'after the old primary exited');
    await loop.stop();
    // What the node logged before it exited: the membership it then held names another
    // primary (it waits for exactly that before it closes anything).
    const handover = mc.cluster
      .logTail('storage', before.primary)
      .split('\n')
      .flatMap((line) => {
        try {
          const entry = JSON.parse(line) as { msg?: string; primary?: string; epoch?: number; ms?: number };
          return entry.msg === 'handed the primary role over' ? [entry] : [];
        } catch {
          return [];
        }
      })[0];
    console.log(
      `  primary ${before.primary} SIGTERMed: it handed over to ${handover?.primary ?? 'nobody'} (epoch ${handover?.epoch}) after ${handover?.ms} ms; ` +
        `${newPrimary ? `${newPrimary.id} seen primary in Redis after ${newPrimary.ms} ms while it ran` : 'the poll did not catch the new primary while it ran'}; exited after ${exitMs} ms; ` +
        `${loop.written} writes through the mount (${writtenBefore} before), errors: ${loop.errors.length === 0 ? 'none' : loop.errors.join(', ')}`,
    );
    if (handover === undefined || loop.errors.length > 0) dumpLogs(mc.cluster);
    assert.ok(handover, 'the node logged its handover before it exited');
    assert.ok(handover.primary !== undefined && handover.primary !== before.primary && before.inSync.includes(handover.primary), `another in-sync node (${handover.primary}) was primary before ${before.primary} exited`);
    assert.ok((handover.epoch ?? 0) > before.epoch, 'in a later epoch');
    if (newPrimary) assert.is(newPrimary.id, handover.primary);
    assert.ok(exitMs < NODE_STOP_TIMEOUT_MS, `exited within its stop timeout (${exitMs} ms)`);
    assert.equal(loop.errors, []);
    await loop.check();

    await mc.cluster.restartProcess('storage', before.primary);
    await mc.cluster.waitReady(90_000);
    await verifyBricks(mc.cluster, 3);
  } finally {
    await client.close();
  }
});

s('SIGTERM to the leader proxy: it gives up its lease, another leads before it would lapse; the mount sees no error', async () => {
  const { mc, redis } = ctx as Required<typeof ctx>;
  await mc.cluster.waitReady(60_000);
  const leader = await redis.get(KEY_LEADER);
  assert.ok(leader, 'a leader');
  const other = mc.cluster.proxies.find((p) => p.id !== leader)!;
  const loop = new WriteLoop(join(mc.mountpoints[0]!, 'proxy-stop'));
  await loop.progress(20, 'before the SIGTERM');

  // What is left of the lease when the signal goes: without the release, no other proxy
  // could lead before it lapsed.
  const leaseLeftMs = await redis.pttl(KEY_LEADER);
  const sentAt = Date.now();
  mc.cluster.killProcess('proxy', leader, 'SIGTERM');
  const takeover = await pollUntil('another proxy to lead', 10_000, async () => {
    const now = await redis.get(KEY_LEADER);
    return now !== null && now !== leader ? { id: now, ms: Date.now() - sentAt } : null;
  }, 10);
  const exitMs = await pollUntil(`${leader} to exit`, PROXY_STOP_TIMEOUT_MS + 5_000, async () => (mc.cluster.isRunning('proxy', leader) ? null : Date.now() - sentAt), 20);
  await loop.progress(20, 'after the old leader exited');
  await loop.stop();
  console.log(
    `  leader ${leader} SIGTERMed with ${leaseLeftMs} ms left on its lease: ${takeover.id} leads after ${takeover.ms} ms; exited after ${exitMs} ms; ` +
      `${loop.written} writes through the mount, errors: ${loop.errors.length === 0 ? 'none' : loop.errors.join(', ')}`,
  );
  if (loop.errors.length > 0) dumpLogs(mc.cluster);
  assert.is(takeover.id, other.id);
  assert.ok(takeover.ms < leaseLeftMs, `the new leader (after ${takeover.ms} ms) came before the lease would have lapsed (${leaseLeftMs} ms)`);
  assert.ok(/gave up the leader lease/.test(mc.cluster.logTail('proxy', leader)), 'the proxy logged that it gave up its lease');
  assert.ok(exitMs < PROXY_STOP_TIMEOUT_MS, `exited within its stop timeout (${exitMs} ms)`);
  assert.equal(loop.errors, []);
  await loop.check();

  await mc.cluster.restartProcess('proxy', leader);
  await mc.cluster.waitReady(60_000);
  await verifyBricks(mc.cluster, 3);
});

s('a rolling restart of every storage node, one at a time as a StatefulSet does it: the mount sees no error', async () => {
  const { mc } = ctx as Required<typeof ctx>;
  await mc.cluster.waitReady(60_000);
  const loop = new WriteLoop(join(mc.mountpoints[0]!, 'rolling'));
  await loop.progress(10, 'before the restarts');
  const steps: string[] = [];
  // Highest ordinal first, as a StatefulSet's rolling update goes; each next one only once
  // the last one's /readyz (an in-sync member) is 200 again.
  for (const node of [...mc.cluster.nodes].reverse()) {
    const record = mc.cluster.records().find((r) => r.kind === 'storage' && r.id === node.id)!;
    const wasPrimary = (await ctx.redis!.get(KEY_MEMBERSHIP).then((t) => (t ? parseMembership(t).primary : null))) === node.id;
    const sentAt = Date.now();
    mc.cluster.killProcess('storage', node.id, 'SIGTERM');
    await pollUntil(`${node.id} to exit`, NODE_STOP_TIMEOUT_MS + 5_000, async () => !mc.cluster.isRunning('storage', node.id), 20);
    const exitMs = Date.now() - sentAt;
    await mc.cluster.restartProcess('storage', node.id);
    await pollUntil(`${node.id} ready (in sync) again`, 90_000, async () => (await httpGet(`${record.adminUrl!}/readyz`)).status === 200, 100);
    steps.push(`${node.id}${wasPrimary ? ' (primary)' : ''} exited after ${exitMs} ms, ready again after ${Date.now() - sentAt} ms`);
    await loop.progress(5, `after ${node.id} came back`);
  }
  await loop.stop();
  console.log(`  rolling restart: ${steps.join('; ')}; ${loop.written} writes through the mount, errors: ${loop.errors.length === 0 ? 'none' : loop.errors.join(', ')}`);
  if (loop.errors.length > 0) dumpLogs(mc.cluster);
  assert.equal(loop.errors, []);
  await loop.check();
  await mc.cluster.waitReady(60_000);
  await verifyBricks(mc.cluster, 3);
});

s.run();
