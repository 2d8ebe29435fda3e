/*
 * `dfs selftest` (issue 17, the `helm test` hook) against a real cluster: it passes on a
 * healthy one, through --proxy with the credential from $DFS_CREDENTIAL as well as with
 * the local cluster's (--data), and leaves no file behind; with a storage node down it
 * fails in bounded time saying which node is not in sync; with no proxy listening it
 * fails at its deadline saying that no proxy answered.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { pollUntil, TestClient } from '../helpers/client';
import { clusterStatus } from '../helpers/workload';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('dfs selftest');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};

s.before(async () => {
  ctx.dir = tempDir('selftest');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

/** The names at the root of the file system, as a proxy lists them. */
async function rootNames(p: TestClient): Promise<string[]> {
  const a = await p.get('/v1/dir', { path: '/' });
  assert.is(a.status, 200);
  return (a.json as { entries: Array<{ name: string }> }).entries.map((e) => e.name);
}

s('a healthy cluster passes, through --proxy ($DFS_CREDENTIAL) and --data, and no file is left', async () => {
  const { cluster, p } = ctx as Required<typeof ctx>;
  const viaProxy = await runDfs(['selftest', '--proxy', cluster.proxyUrls.join(',')]);
  console.log(viaProxy.stdout.trimEnd().replace(/^/gm, '  '));
  assert.is(viaProxy.code, 0, viaProxy.stdout + viaProxy.stderr);
  for (const step of ['every node in sync', 'write /.dfs-selftest-', 'read it back from n1', 'read it back from n2', 'read it back from n3', 'unlink', 'verify']) {
    assert.ok(viaProxy.stdout.includes(step), `step ${step}`);
  }
  assert.match(viaProxy.stdout, /selftest passed in \d+ ms/);
  const viaData = await runDfs(['selftest', '--data', cluster.dataDir]);
  assert.is(viaData.code, 0, viaData.stdout + viaData.stderr);
  assert.equal((await rootNames(p)).filter((name) => name.startsWith('.dfs-selftest-')), []);
});

s('a storage node down: exit 1 within the deadline, naming the node', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  cluster.killProcess('storage', 'n3', 'SIGKILL');
  try {
    // Once the cluster knows (its heartbeat lapses within 3 s).
    await pollUntil('n3 out of the in-sync set', 30_000, async () => !(await clusterStatus(ctx.p!)).membership!.inSync.includes('n3'), 100);
    const startedAt = Date.now();
    const r = await runDfs(['selftest', '--proxy', cluster.proxyUrls.join(','), '--timeout-ms', '4000'], 30_000);
    const tookMs = Date.now() - startedAt;
    console.log(`  n3 down: exit ${r.code} after ${tookMs} ms: ${r.stdout.trim().split('\n').join(' | ')}`);
    assert.is(r.code, 1);
    assert.match(r.stdout, /FAILED {2}every node in sync: not in sync: n3 (down|joining)/);
    assert.ok(tookMs < 15_000, `bounded: ${tookMs} ms`);
  } finally {
    await cluster.restartProcess('storage', 'n3');
    await cluster.waitReady(60_000);
  }
});

s('no proxy listening: exit 1 at the deadline, saying so', async () => {
  // A port nobody listens on: bound, then closed.
  const port = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port: free } = server.address() as { port: number };
      server.close(() => resolve(free));
    });
  });
  const startedAt = Date.now();
  const r = await runDfs(['selftest', '--proxy', `https://127.0.0.1:${port}`, '--timeout-ms', '3000'], 30_000);
  const tookMs = Date.now() - startedAt;
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /FAILED {2}every node in sync: .*no proxy answered/);
  assert.ok(tookMs < 15_000, `bounded: ${tookMs} ms`);
  console.log(`  no proxy: exit 1 after ${tookMs} ms`);
});

s.run();
