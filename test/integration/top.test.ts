/*
 * `dfs top` (cli/top.ts) against a real cluster of three nodes and two proxies while a
 * client sends ops: on a terminal (tmux: capture-pane to read the screen, send-keys to
 * quit with q), and as plain lines when stdout is not a terminal (--count bounds it).
 * Its arithmetic (percentiles from histogram buckets, rates) is checked on fixed input.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { histogramQuantile, topFigures, type TopScrape } from '../../cli/top';
import { parseMetricsText } from '../../common/metrics-text';
import { TestClient } from '../helpers/client';
import { DFS_BIN, runDfs } from '../helpers/dfs-cli';
import { pollFor } from '../helpers/mounted-cluster';
import { tempDir } from '../helpers/temp';

const s = suite('top');
const TMUX_SOCKET = `dfs-top-test-${process.pid}`;
const SESSION = 'top';
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; client?: TestClient; stopLoad?: () => Promise<void> } = {};

function tmux(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync('tmux', ['-L', TMUX_SOCKET, ...args], { encoding: 'utf8', timeout: 10_000 });
  if (run.error) throw new Error(`tmux ${args.join(' ')}: ${run.error.message}`);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

s.before(async () => {
  ctx.dir = tempDir('top');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.client = new TestClient(ctx.cluster.proxyUrls[0]!);
  let running = true;
  const client = ctx.client;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      await client.op({ type: 'mkdir', path: `/t${i}`, mode: 0o755, uid: 0, gid: 0 }).catch(() => undefined);
      await client.get('/v1/attr', { path: `/t${i}` }).catch(() => undefined);
    }
  })();
  ctx.stopLoad = async () => {
    running = false;
    await loop;
  };
});

s.after(async () => {
  tmux('kill-server');
  await ctx.stopLoad?.();
  await ctx.client?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

s('percentiles from cumulative buckets, interpolated as histogram_quantile', () => {
  // 10 answers ≤ 1 ms, 80 more ≤ 10 ms, 10 more ≤ 100 ms.
  const cumulative = new Map([[0.001, 10], [0.01, 90], [0.1, 100], [Infinity, 100]]);
  assert.is(histogramQuantile(0.1, cumulative), 0.001);
  assert.ok(Math.abs(histogramQuantile(0.5, cumulative)! - (0.001 + 0.009 * (40 / 80))) < 1e-12);
  assert.ok(Math.abs(histogramQuantile(0.95, cumulative)! - (0.01 + 0.09 * 0.5)) < 1e-12);
  assert.is(histogramQuantile(0.5, new Map([[0.001, 0], [Infinity, 0]])), null);
  // Everything above the top bound: the top finite bound, as PromQL says.
  assert.is(histogramQuantile(0.5, new Map([[0.001, 0], [Infinity, 4]])), 0.001);
});

s('rates between two scrapes count client ops and reads, not probes', () => {
  const text = (ops: number, attrs: number, probes: number, fast: number) => `
dfs_proxy_requests_total{api="ops",op="mkdir",code="200"} ${ops}
dfs_proxy_requests_total{api="attr",op="attr",code="200"} ${attrs}
dfs_proxy_requests_total{api="healthz",op="healthz",code="200"} ${probes}
dfs_proxy_request_duration_seconds_bucket{le="0.001",api="ops",op="mkdir"} ${fast}
dfs_proxy_request_duration_seconds_bucket{le="0.01",api="ops",op="mkdir"} ${ops}
dfs_proxy_request_duration_seconds_bucket{le="+Inf",api="ops",op="mkdir"} ${ops}
dfs_proxy_request_duration_seconds_bucket{le="0.001",api="healthz",op="healthz"} ${probes}
dfs_proxy_request_duration_seconds_bucket{le="+Inf",api="healthz",op="healthz"} ${probes}
`;
  const before: TopScrape = { atMs: 0, proxies: [parseMetricsText(text(100, 50, 7, 100))], status: null };
  const after: TopScrape = { atMs: 2000, proxies: [parseMetricsText(text(300, 90, 1007, 100))], status: null };
  const f = topFigures(before, after);
  assert.is(f.opsPerSecond, 100);
  assert.is(f.readsPerSecond, 20);
  // Every op in the window took 1 to 10 ms; the probes (all under 1 ms) are left out.
  assert.ok(f.p50! > 0.001 && f.p50! <= 0.01, `p50 ${f.p50}`);
});

s('on a terminal: the live view shows rates and every node; q quits', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const command = `${process.execPath} ${DFS_BIN} top --data ${cluster.dataDir}`;
  const started = tmux('new-session', '-d', '-s', SESSION, '-x', '140', '-y', '30', command);
  assert.is(started.status, 0, `tmux new-session: ${started.stderr}`);
  const screen = await pollFor('dfs top to show load and three nodes in sync', 30_000, () => {
    const pane = tmux('capture-pane', '-p', '-t', SESSION).stdout;
    const rate = /ops (\d+\.\d)\/s\s+reads (\d+\.\d)\/s\s+latency p50 ([\d.]+) ms/.exec(pane);
    const inSync = (pane.match(/^n\d\s+(primary|backup)\s+in-sync/gm) ?? []).length;
    return rate && Number(rate[1]) > 0 && Number(rate[2]) > 0 && inSync === 3 ? pane : undefined;
  });
  assert.match(screen, /leader p\d\s+epoch \d+\s+seq \d+\s+primary n\d/);
  assert.match(screen, /\(2 of 2 proxies\)/);
  process.stdout.write(`  dfs top under tmux:\n${screen.trimEnd().split('\n').map((l) => `    | ${l}`).join('\n')}\n`);
  tmux('send-keys', '-t', SESSION, 'q');
  await pollFor('dfs top to quit on q', 10_000, () => tmux('has-session', '-t', SESSION).status !== 0 || undefined);
});

s('not a terminal: plain lines, --count refreshes, exit 0', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const run = await runDfs(['top', '--data', cluster.dataDir, '--count', '2', '--interval-ms', '500']);
  assert.is(run.code, 0, run.stderr);
  assert.not.match(run.stdout, /\x1b\[/, 'no terminal escapes');
  assert.is((run.stdout.match(/^dfs top — /gm) ?? []).length, 2);
  assert.match(run.stdout, /first scrape/);
  assert.match(run.stdout, /ops \d+\.\d\/s/);
  const bad = await runDfs(['top', '--admin', 'https://127.0.0.1:1']);
  assert.is(bad.code, 2);
  assert.match(bad.stderr, /--admin wants URLs like http:/);
});

s.run();
