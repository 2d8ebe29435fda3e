/*
 * Metrics of every process (issue 18, acceptance 1 and 2): a real cluster (three storage
 * nodes, two proxies) and one real FUSE mount with --metrics-addr.
 *
 * - The admin ports (common/admin-server.ts) answer without a client certificate, serve
 *   /metrics, /healthz, /readyz (and a proxy's /ui), and nothing else: no API route, no
 *   method but GET/HEAD.
 * - A scrape of every process, taken while files are written, passes `promtool check
 *   metrics` (Debian's prometheus package; scripts/setup.sh installs it).
 * - The counters agree with the truth: after N files of known sizes are written through
 *   the mount (one create and one small write each), the mount counted N writes and
 *   exactly M bytes, the proxies N create ops and N write ops, every op the proxies
 *   answered took one sequence ID (dfs_cluster_seq), and every node applied exactly that
 *   far (dfs_storage_applied_seq).
 */
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePorts } from '../../cli/local-cluster';
import { parseMetricsText, type MetricSample } from '../bench/cost';
import { pollFor, startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { dashboardMetricNames, type Dashboard } from '../helpers/dashboard';

const s = suite('metrics');
const FILE_COUNT = 24;
const HTTP_TIMEOUT_MS = 10_000;
const ctx: { mc?: MountedCluster; mountMetricsUrl?: string } = {};

s.before(async () => {
  const [port] = await freePorts(1);
  ctx.mountMetricsUrl = `http://127.0.0.1:${port!}/metrics`;
  ctx.mc = await startMountedCluster({ prefix: 'metrics', mounts: ['m'], nodes: 3, proxies: 2, mountArgs: ['--metrics-addr', `127.0.0.1:${port!}`] });
});

s.after(async () => {
  await ctx.mc?.stop();
});

/** A plain HTTP request (no certificate), bounded in time. */
function plainRequest(url: string, method = 'GET'): Promise<{ status: number; body: string; type: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: HTTP_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, type: String(res.headers['content-type'] ?? '') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer in ${HTTP_TIMEOUT_MS} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function adminUrls(mc: MountedCluster): Array<{ id: string; kind: string; url: string }> {
  return mc.cluster
    .records()
    .filter((r) => r.kind === 'storage' || r.kind === 'proxy')
    .map((r) => {
      assert.ok(r.adminUrl, `${r.id} has an admin URL in cluster.json`);
      return { id: r.id, kind: r.kind, url: r.adminUrl };
    });
}

async function scrape(url: string): Promise<string> {
  const res = await plainRequest(url);
  assert.is(res.status, 200, `${url}: ${res.body}`);
  assert.match(res.type, /^text\/plain/);
  return res.body;
}

/** The sum of a family's samples whose labels include every one of `labels`. */
function sum(samples: MetricSample[], name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const sample of samples) {
    if (sample.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => sample.labels[k] === v)) total += sample.value;
  }
  return total;
}

interface Scrape {
  mount: MetricSample[];
  proxies: MetricSample[][];
  nodes: MetricSample[][];
  texts: Array<{ what: string; text: string }>;
}

async function scrapeAll(mc: MountedCluster): Promise<Scrape> {
  const texts: Array<{ what: string; text: string }> = [{ what: 'mount', text: await scrape(ctx.mountMetricsUrl!) }];
  const out: Scrape = { mount: parseMetricsText(texts[0]!.text), proxies: [], nodes: [], texts };
  for (const { id, kind, url } of adminUrls(mc)) {
    const text = await scrape(`${url}/metrics`);
    texts.push({ what: id, text });
    (kind === 'proxy' ? out.proxies : out.nodes).push(parseMetricsText(text));
  }
  return out;
}

function promtoolCheck(what: string, text: string): void {
  const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  assert.ok(!run.error, `promtool could not run (scripts/setup.sh installs Debian's prometheus package): ${run.error?.message}`);
  assert.is(run.status, 0, `promtool check metrics on ${what}'s scrape: ${run.stdout}${run.stderr}`);
  // Every family is ours, none from prom-client's defaults.
  const families = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!);
  assert.ok(families.length > 0, `${what} reports metric families`);
  for (const family of families) assert.ok(family.startsWith('dfs_'), `${what}: ${family} is a dfs_ family`);
}

s('admin ports answer without a certificate, and only their own paths', async () => {
  const { mc } = ctx as Required<typeof ctx>;
  await mc.cluster.waitReady(60_000);
  for (const { id, kind, url } of adminUrls(mc)) {
    assert.is((await plainRequest(`${url}/healthz`)).status, 200, `${id} /healthz`);
    const ready = await pollFor(`${id} /readyz`, 30_000, async () => ((await plainRequest(`${url}/readyz`)).status === 200 ? true : undefined));
    assert.ok(ready);
    for (const path of ['/v1/attr?path=/', '/node/v1/state', '/v1/cluster', '/']) {
      assert.is((await plainRequest(`${url}${path}`)).status, 404, `${id} ${path} is not served on the admin port`);
    }
    assert.is((await plainRequest(`${url}/metrics`, 'POST')).status, 405, `${id} POST /metrics`);
    const ui = await plainRequest(`${url}/ui`);
    assert.is(ui.status, kind === 'proxy' ? 200 : 404, `${id} /ui`);
    if (kind === 'proxy') {
      assert.match(ui.type, /^text\/html/);
      // What `dfs status` shows, without the nodes' URLs.
      const json = await plainRequest(`${url}/ui/status.json`);
      assert.is(json.status, 200);
      const status = JSON.parse(json.body) as { nodes: Array<Record<string, unknown>> };
      assert.is(status.nodes.length, 3);
      for (const node of status.nodes) assert.not.ok('url' in node, 'no node URL on the admin port');
    }
  }
  // The node API itself still wants a certificate: a plain request to it gets nowhere.
  const node = mc.cluster.records().find((r) => r.kind === 'storage')!;
  const plain = await plainRequest(node.url!.replace(/^https:/, 'http:') + '/healthz').then(
    (res) => `answered ${res.status}`,
    (err: Error) => err.message,
  );
  assert.not.match(plain, /^answered 200/, 'the node API answered a plain request');
});

s('a scrape of every process during writes passes promtool; the counters agree with the truth', async () => {
  const { mc } = ctx as Required<typeof ctx>;
  const dir = join(mc.mountpoints[0]!, 'counted');
  await fsp.mkdir(dir);
  // Quiet: what the mkdir sent is committed and applied everywhere before the first scrape.
  const settled = async () => {
    const now = await scrapeAll(mc);
    const seq = sum(now.proxies[0]!, 'dfs_cluster_seq');
    return now.nodes.every((n) => sum(n, 'dfs_storage_applied_seq') === seq) ? now : undefined;
  };
  const before = await pollFor('every node applied everything', 30_000, settled);

  // One create and one write of at most a page each: one FUSE write and one write op.
  const sizes = Array.from({ length: FILE_COUNT }, (_, i) => 1 + ((i * 977) % 4000));
  const bytes = sizes.reduce((a, b) => a + b, 0);
  let during: Scrape | null = null;
  const writes = (async () => {
    for (let i = 0; i < FILE_COUNT; i++) await fsp.writeFile(join(dir, `f${i}`), Buffer.alloc(sizes[i]!, 0x61 + (i % 26)));
  })();
  during = await scrapeAll(mc);
  await writes;
  for (const { what, text } of during.texts) promtoolCheck(what, text);

  const after = await pollFor('every node applied everything', 30_000, settled);
  const delta = (pick: (s: Scrape) => number) => pick(after) - pick(before);
  const proxiesSum = (name: string, labels: Record<string, string> = {}) => (sc: Scrape) => sc.proxies.reduce((a, p) => a + sum(p, name, labels), 0);

  // The mount.
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_bytes_total', { direction: 'write' })), bytes, 'bytes written');
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_fuse_requests_total', { op: 'write' })), FILE_COUNT, 'FUSE writes');
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_op_duration_seconds_count', { op: 'write' })), FILE_COUNT, 'FUSE writes timed');
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_fuse_requests_total', { op: 'create' })), FILE_COUNT, 'FUSE creates');
  // The kernel looks each new name up first: ENOENT once per file, and no other error.
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_op_errors_total', { errno: 'ENOENT' })), FILE_COUNT, 'one ENOENT per new name');
  assert.is(delta((sc) => sum(sc.mount, 'dfs_mount_op_errors_total')), FILE_COUNT, 'no FUSE errors but those');
  assert.is(sum(after.mount, 'dfs_mount_dirty_bytes'), 0, 'nothing left dirty');
  // The proxies: the ops the mount sent, one create and one write op per file.
  assert.is(delta(proxiesSum('dfs_proxy_requests_total', { api: 'ops', op: 'create', code: '200' })), FILE_COUNT, 'create ops');
  assert.is(delta(proxiesSum('dfs_proxy_requests_total', { api: 'ops', op: 'write', code: '200' })), FILE_COUNT, 'write ops');
  const opsAnswered = delta(proxiesSum('dfs_proxy_requests_total', { api: 'ops', code: '200' }));
  const opsSent = delta((sc) => sum(sc.mount, 'dfs_mount_cluster_requests_total', { api: 'ops' }));
  assert.is(opsAnswered, opsSent, 'every op the mount sent was answered once');
  assert.is(delta(proxiesSum('dfs_proxy_requests_total', { api: 'ops' })), opsAnswered, 'no op refused');
  assert.is(delta(proxiesSum('dfs_proxy_seq_assign_duration_seconds_count')), opsAnswered, 'one sequence ID taken per op');
  // The sequence: one ID per op, and every node applied exactly that far.
  const seq = sum(after.proxies[0]!, 'dfs_cluster_seq');
  assert.is(seq - sum(before.proxies[0]!, 'dfs_cluster_seq'), opsAnswered, 'dfs_cluster_seq moved by the ops answered');
  for (const node of after.nodes) assert.is(sum(node, 'dfs_storage_applied_seq'), seq, 'a node applied every op');
  // The rest of the picture: one leader, three nodes in sync, one primary whose peers
  // are not behind, and fsyncs timed on every node.
  assert.is(proxiesSum('dfs_proxy_is_leader')(after), 1, 'one leader proxy');
  for (const p of after.proxies) assert.is(sum(p, 'dfs_cluster_nodes', { state: 'in-sync' }), 3, 'three nodes in sync');
  assert.is(after.nodes.reduce((a, n) => a + sum(n, 'dfs_storage_role', { role: 'primary' }), 0), 1, 'one primary');
  const primary = after.nodes.find((n) => sum(n, 'dfs_storage_role', { role: 'primary' }) === 1)!;
  assert.is(primary.filter((x) => x.name === 'dfs_storage_peer_lag_ops').length, 2, 'the primary reports lag for two peers');
  assert.is(sum(primary, 'dfs_storage_peer_lag_ops'), 0, 'no peer behind once settled');
  for (const node of after.nodes) assert.ok(sum(node, 'dfs_storage_wal_fsync_duration_seconds_count') > 0, 'fsyncs timed');
  for (const sc of [after.mount, ...after.proxies, ...after.nodes]) assert.is(sum(sc, 'dfs_build_info'), 1, 'dfs_build_info');

  // Every metric the Grafana dashboard queries is a sample in this scrape.
  const dashboard = JSON.parse(await fsp.readFile(join(__dirname, '..', '..', '..', 'dashboards', 'dfs.json'), 'utf8')) as Dashboard;
  assert.is(dashboard.uid, 'dfs-overview');
  const queried = dashboardMetricNames(dashboard);
  assert.ok(queried.size >= 15, `the dashboard queries ${queried.size} metrics`);
  const scraped = new Set([after.mount, ...after.proxies, ...after.nodes].flat().map((x) => x.name));
  for (const name of queried) assert.ok(scraped.has(name), `the dashboard queries ${name}, which no process reports`);
});

s.run();
