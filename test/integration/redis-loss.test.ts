/*
 * Redis loses its data during a write workload (issue 5, acceptance 3): redis-server is
 * killed and started again empty on the same port while two writers append to their files
 * through both proxies. Afterwards every acknowledged append is in its file exactly once
 * (an op applied twice, or a sequence ID handed out twice, would show as wrong bytes),
 * `dfs verify` passes, the counter stands above every ID the nodes held, the epoch moved
 * past every epoch the nodes had seen, and writes complete again.
 *
 * Each append is retried with its own request ID until it is acknowledged (what the mount
 * does), so a retry is applied at most once; the writers never give up within the test.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { redisAuthFor } from '../../common/redis-auth';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import type { Op } from '../../common/ops';
import { KEY_EPOCH, KEY_SEQ } from '../../common/redis-keys';
import { commitOp, pollUntil, TestClient, type Answer } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('redis loses its data');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; clients?: TestClient[] } = {};
const own = { uid: 0, gid: 0 };
/** How long one op may keep being retried (the restore takes a few seconds). */
const OP_RETRY_MS = 30_000;
const APPENDS_BEFORE = 15;
const APPENDS_AFTER = 15;

s.before(async () => {
  ctx.dir = tempDir('redis-loss');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.clients = ctx.cluster.proxyUrls.map((u) => new TestClient(u));
});

s.after(async () => {
  await Promise.all((ctx.clients ?? []).map((c) => c.close()));
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

const commit = async (client: TestClient, op: Op, data?: Buffer): Promise<Answer> => (await commitOp(client, op, data, OP_RETRY_MS)).answer;

s('acknowledged appends survive a wiped Redis exactly once, the counter and epoch are restored, writes go on', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  try {
    await workload();
  } catch (e) {
    // What the proxies and Redis said, for the failure to be looked into.
    for (const [kind, id] of [['proxy', 'p1'], ['proxy', 'p2'], ['redis', 'redis']] as const) {
      process.stderr.write(`--- ${id}\n${cluster.logTail(kind, id)}\n`);
    }
    throw e;
  }
});

async function workload(): Promise<void> {
  const { cluster, clients } = ctx as Required<typeof ctx>;
  const [p1, p2] = clients as [TestClient, TestClient];
  await commit(p1, { type: 'mkdir', path: '/w', mode: 0o755, ...own });
  const files = ['/w/a', '/w/b'];
  const model = new Map<string, Buffer>(files.map((f) => [f, Buffer.alloc(0)]));
  for (const f of files) await commit(p1, { type: 'create', path: f, mode: 0o644, ...own, exclusive: true });

  let phase: 'before' | 'after' = 'before';
  let appendsAfter = 0;
  const writer = async (client: TestClient, path: string, count: () => boolean) => {
    while (count()) {
      const chunk = randomBytes(1 + Math.floor(Math.random() * 4000));
      const offset = model.get(path)!.length;
      const a = await commit(client, { type: 'write', path, offset }, chunk);
      assert.is(a.json.errno, undefined, JSON.stringify(a.json));
      model.set(path, Buffer.concat([model.get(path)!, chunk]));
      if (phase === 'after') appendsAfter++;
    }
  };

  // Before the loss: some history in the nodes, and the epoch they hold.
  let before = 0;
  await Promise.all([writer(p1, files[0]!, () => before++ < APPENDS_BEFORE), writer(p2, files[1]!, () => before++ < APPENDS_BEFORE)]);
  const admin = new Redis(cluster.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true, enableOfflineQueue: false, commandTimeout: 2_000 , ...redisAuthFor(cluster.redisUrl) });
  admin.on('error', () => undefined); // it is down on purpose for a while
  try {
    const seqBefore = Number(await withRedis(admin, (r) => r.get(KEY_SEQ)));
    const epochBefore = Number(await withRedis(admin, (r) => r.get(KEY_EPOCH)));
    assert.ok(seqBefore >= APPENDS_BEFORE, `the cluster sequenced ops (${seqBefore})`);

    // The loss, while both writers keep going.
    let after = 0;
    const running = Promise.all([
      writer(p1, files[0]!, () => after++ < APPENDS_AFTER * 2),
      writer(p2, files[1]!, () => after++ < APPENDS_AFTER * 2),
    ]);
    cluster.killProcess('redis', 'redis');
    await pollUntil('redis to be gone', 10_000, async () => !cluster.isRunning('redis', 'redis'));
    await cluster.restartProcess('redis', 'redis'); // not persistent: it comes back empty
    phase = 'after';
    await running;
    assert.ok(appendsAfter > 0, 'appends were acknowledged after Redis came back');

    // Restored: the counter is above every ID the nodes held, the epoch above every one seen.
    const seqAfter = Number(await withRedis(admin, (r) => r.get(KEY_SEQ)));
    const epochAfter = Number(await withRedis(admin, (r) => r.get(KEY_EPOCH)));
    assert.ok(seqAfter > seqBefore, `dfs:seq ${seqAfter} is past ${seqBefore}`);
    assert.ok(epochAfter > epochBefore, `dfs:epoch ${epochAfter} is past ${epochBefore}`);
  } finally {
    admin.disconnect();
  }

  // Every acknowledged byte, once, on every node.
  for (const node of cluster.nodes) {
    for (const f of files) {
      const want = model.get(f)!;
      const got = await pollUntil(`${f} on ${node.id}`, 10_000, async () => {
        const a = await p1.get('/v1/data', { path: f, offset: 0, size: want.length + 1 }, { 'dfs-read-node': node.id });
        return a.status === 200 ? a.bytes : null;
      });
      assert.is(got.length, want.length, `${f} on ${node.id}: length`);
      assert.ok(got.equals(want), `${f} on ${node.id}: the acknowledged bytes, each once`);
    }
  }
  const v = await runDfs(['verify', '--proxy', cluster.proxyUrls.join(','), '--json']);
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.ok(JSON.parse(v.stdout).ok);
}

async function withRedis<T>(r: Redis, fn: (r: Redis) => Promise<T>): Promise<T> {
  if (r.status === 'wait') await r.connect();
  return pollUntil('redis to answer', 10_000, async () => {
    try {
      return { v: await fn(r) };
    } catch {
      return null;
    }
  }).then((x) => x.v);
}

s.run();
