/*
 * A storage node killed with SIGKILL mid-workload restarts from its log and state to the
 * same brick as its peers (issue 4, crash recovery). The workload is the pattern a replay
 * of already-applied ops would break: create `a`, write it, rename it over `b`, again and
 * again (replayed, a rename would move the newer `a` over `b`). A backup is killed several
 * times while it runs and started again; afterwards `dfs verify` finds every node's brick
 * identical and `b` holds the last version written on every node. Then every node is
 * killed and restarted, and a request retried with its request ID gets its first answer
 * (the request-ID table is on disk, storage/dedup-journal.ts).
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import type { Op } from '../../common/ops';
import { commitOp, pollUntil, TestClient, type Answer } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('crash recovery');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};
const own = { uid: 0, gid: 0 };
const KILLS = 4;

s.before(async () => {
  ctx.dir = tempDir('crash-recovery');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 1 });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

const commit = async (client: TestClient, op: Op, data?: Buffer): Promise<Answer> => (await commitOp(client, op, data)).answer;

s('a backup killed again and again mid-workload comes back to the same brick', async () => {
  const { cluster, p } = ctx as Required<typeof ctx>;
  await commit(p, { type: 'mkdir', path: '/k', mode: 0o755, ...own });
  let round = 0;
  let writing = true;
  const writer = (async () => {
    while (writing) {
      round++;
      await commit(p, { type: 'create', path: '/k/a', mode: 0o644, ...own, exclusive: true });
      await commit(p, { type: 'write', path: '/k/a', offset: 0 }, Buffer.from(`version ${round}\n`));
      await commit(p, { type: 'rename', from: '/k/a', to: '/k/b' });
    }
  })();
  try {
    for (let k = 0; k < KILLS; k++) {
      const from = round;
      await pollUntil('rounds between kills', 30_000, async () => round >= from + 5 + (k % 3));
      cluster.killProcess('storage', 'n3');
      await pollUntil('n3 to be gone', 10_000, async () => !cluster.isRunning('storage', 'n3'));
      await cluster.restartProcess('storage', 'n3');
    }
    const from = round;
    await pollUntil('rounds after the last restart', 30_000, async () => round >= from + 5);
  } catch (e) {
    for (const id of ['n1', 'n2', 'n3']) process.stderr.write(`--- ${id}\n${cluster.logTail('storage', id)}\n`);
    throw e;
  } finally {
    writing = false;
    await writer.catch((e: unknown) => {
      for (const id of ['n1', 'n3']) process.stderr.write(`--- ${id}\n${cluster.logTail('storage', id)}\n`);
      throw e;
    });
  }
  const last = `version ${round}\n`;
  for (const n of cluster.nodes) {
    const got = await pollUntil(`/k/b on ${n.id}`, 15_000, async () => {
      const a = await p.get('/v1/data', { path: '/k/b', offset: 0, size: 100 }, { 'dfs-read-node': n.id });
      return a.status === 200 ? a.bytes.toString() : null;
    });
    assert.is(got, last, `the last version on ${n.id}`);
    const a = await p.get('/v1/attr', { path: '/k/a' }, { 'dfs-read-node': n.id });
    assert.is(a.json.errno ?? a.json.code, 'ENOENT', `no a left on ${n.id}`);
  }
  const v = await runDfs(['verify', '--proxy', cluster.proxyUrls[0]!, '--json']);
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.ok(JSON.parse(v.stdout).ok);
});

s('a retry after every node restarted gets the first answer, not a second application', async () => {
  const { cluster, p } = ctx as Required<typeof ctx>;
  // An exclusive create whose answer "got lost": applied again, it would say EEXIST.
  const reqId = randomUUID();
  const op: Op = { type: 'create', path: '/once', mode: 0o644, ...own, exclusive: true };
  const first = await p.op(op, undefined, reqId);
  assert.is(first.status, 200, JSON.stringify(first.json));
  for (const n of cluster.nodes) {
    cluster.killProcess('storage', n.id);
    await pollUntil(`${n.id} to be gone`, 10_000, async () => !cluster.isRunning('storage', n.id));
    await cluster.restartProcess('storage', n.id);
  }
  const retry = await pollUntil('the retry to be answered', 60_000, async () => {
    const a = await p.op(op, undefined, reqId);
    return a.status === 200 || a.json?.errno ? a : null;
  });
  assert.is(retry.status, 200, `the retry was applied again: ${JSON.stringify(retry.json)}`);
  assert.is(retry.json.errno, undefined);
});

s.run();
