/*
 * Redis killed with SIGKILL 20 times during writes (issue 14, acceptance 4): with a
 * persistent Redis (append-only file, `appendfsync always`: docs/cluster.md, "Redis that
 * forgets"), a crash forgets no INCR it answered, so no sequence ID is handed out twice
 * and the epoch never goes back. Two writers append to their own files through both
 * proxies, each append retried under its request ID until acknowledged (as the mount
 * does); Redis is killed once each writer has had a few appends acknowledged since the
 * last kill, and started again on the same append-only file.
 *
 * Checked: after each restart `dfs:seq` stands at or above every sequence ID acknowledged
 * before the kill, and `dfs:epoch` at or above the epoch before it; afterwards no two
 * acknowledged ops share a sequence ID, every acknowledged append is in its file exactly
 * once on every node, and `dfs verify` passes.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Redis } from 'ioredis';
import { redisAuthFor } from '../../common/redis-auth';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import type { Op } from '../../common/ops';
import { KEY_EPOCH, KEY_SEQ } from '../../common/redis-keys';
import { parseCounter } from '../../common/registry';
import { commitOp, pollUntil, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('redis killed');
const KILLS = 20;
/** Appends each writer has acknowledged between two kills. */
const APPENDS_BETWEEN = 2;
const OP_RETRY_MS = 60_000;
const own = { uid: 0, gid: 0 };
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; clients?: TestClient[] } = {};

s.before(async () => {
  ctx.dir = tempDir('redis-kill');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2, redisPersistent: true });
  ctx.clients = ctx.cluster.proxyUrls.map((u) => new TestClient(u));
});

s.after(async () => {
  await Promise.all((ctx.clients ?? []).map((c) => c.close()));
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

s(`Redis SIGKILLed ${KILLS} times during writes: no sequence ID twice, no acknowledged write lost`, async () => {
  const { cluster, clients } = ctx as Required<typeof ctx>;
  const [p1, p2] = clients as [TestClient, TestClient];
  const commit = async (client: TestClient, op: Op, data?: Buffer) => (await commitOp(client, op, data, OP_RETRY_MS)).answer;
  await commit(p1, { type: 'mkdir', path: '/k', mode: 0o755, ...own });
  const files = ['/k/a', '/k/b'];
  for (const f of files) await commit(p1, { type: 'create', path: f, mode: 0o644, ...own, exclusive: true });
  const model = new Map<string, Buffer>(files.map((f) => [f, Buffer.alloc(0)]));
  const ackedSeqs: number[] = [];
  const acks = new Map<string, number>(files.map((f) => [f, 0]));
  let stop = false;
  const writer = async (client: TestClient, path: string) => {
    while (!stop) {
      const chunk = randomBytes(1 + Math.floor(Math.random() * 2000));
      const a = await commit(client, { type: 'write', path, offset: model.get(path)!.length }, chunk);
      assert.is(a.json.errno, undefined, JSON.stringify(a.json));
      ackedSeqs.push(a.json.seq as number);
      model.set(path, Buffer.concat([model.get(path)!, chunk]));
      acks.set(path, acks.get(path)! + 1);
    }
  };
  const admin = new Redis(cluster.redisUrl, { maxRetriesPerRequest: 1, lazyConnect: true, enableOfflineQueue: false, commandTimeout: 2_000 , ...redisAuthFor(cluster.redisUrl) });
  admin.on('error', () => undefined); // it is down on purpose, again and again
  const read = async (key: string) =>
    pollUntil(`${key} from Redis`, 20_000, async () => {
      try {
        if (admin.status === 'wait' || admin.status === 'end') await admin.connect();
        return { n: parseCounter(key, await admin.get(key)) };
      } catch {
        return null;
      }
    }).then((x) => x.n);
  const writers = Promise.all([writer(p1, files[0]!), writer(p2, files[1]!)]);
  const counterBacksteps: string[] = [];
  try {
    for (let k = 0; k < KILLS; k++) {
      const base = files.map((f) => acks.get(f)!);
      await pollUntil(`appends before kill ${k + 1}`, OP_RETRY_MS, async () => files.every((f, i) => acks.get(f)! >= base[i]! + APPENDS_BETWEEN));
      const seqBefore = Math.max(0, ...ackedSeqs);
      const epochBefore = await read(KEY_EPOCH);
      cluster.killProcess('redis', 'redis', 'SIGKILL');
      await pollUntil('redis to be gone', 10_000, async () => !cluster.isRunning('redis', 'redis'));
      await cluster.restartProcess('redis', 'redis');
      const seqAfter = await read(KEY_SEQ);
      const epochAfter = await read(KEY_EPOCH);
      if (seqAfter < seqBefore || epochAfter < epochBefore) counterBacksteps.push(`kill ${k + 1}: seq ${seqBefore} -> ${seqAfter}, epoch ${epochBefore} -> ${epochAfter}`);
    }
  } finally {
    stop = true;
    await writers;
    admin.disconnect();
  }
  const twice = ackedSeqs.length - new Set(ackedSeqs).size;
  let lost = 0;
  for (const node of cluster.nodes) {
    for (const f of files) {
      const want = model.get(f)!;
      const got = await pollUntil(`${f} on ${node.id}`, 20_000, async () => {
        const a = await p1.get('/v1/data', { path: f, offset: 0, size: want.length + 1 }, { 'dfs-read-node': node.id });
        return a.status === 200 ? a.bytes : null;
      });
      if (!got.equals(want)) lost++;
    }
  }
  const v = await runDfs(['verify', '--proxy', cluster.proxyUrls.join(','), '--json']);
  console.log(
    `  ${KILLS} SIGKILLs of Redis: ${ackedSeqs.length} writes acknowledged, ${twice} sequence IDs acknowledged twice, ` +
      `${lost} file copies differing from the acknowledged appends, ${counterBacksteps.length} counter steps back; dfs verify exit ${v.code}`,
  );
  assert.equal(counterBacksteps, []);
  assert.is(twice, 0);
  assert.is(lost, 0);
  assert.is(v.code, 0, v.stdout + v.stderr);
});

s.run();
