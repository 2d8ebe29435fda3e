/*
 * The request counters of the proxy (proxy/metrics.ts, served by the app at GET /metrics)
 * and of the mount (mount/metrics.ts, served on --metrics-addr): bounded labels, errors
 * counted, one registry per app, and the --metrics-addr flag checked at start-up.
 *
 *   node dist/test/unit/metrics.test.js
 */
import type { AddressInfo } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pino from 'pino';
import { parseMetricsAddr, parseCli } from '../../mount/mount-args';
import { metricsAddrText, MountMetrics, serveMetrics } from '../../mount/metrics';
import { createProxyApp, type ProxyAppDeps } from '../../proxy/app';
import { apiName } from '../../proxy/metrics';
import { parseMetricsText, type MetricSample } from '../bench/cost';

const logger = pino({ level: 'silent' });

/** An app whose cluster is never reached: the routes tested answer before that. */
function proxyApp() {
  const unused = () => {
    throw new Error('not reached in this test');
  };
  const deps: ProxyAppDeps = {
    sequencer: { next: unused, current: unused } as unknown as ProxyAppDeps['sequencer'],
    nodes: {} as ProxyAppDeps['nodes'],
    logger,
    membership: () => null,
    refreshMembership: async () => null,
    clusterStatus: async () => ({}),
    ready: async () => false,
    mutationDeadlineMs: 1_000,
  };
  return createProxyApp(deps);
}

function requestsOf(samples: MetricSample[], name: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const sample of samples) {
    if (sample.name === name) out[Object.values(sample.labels).join(' ')] = sample.value;
  }
  return out;
}

test('proxy: every request is counted by route name and status, errors and 404s too', async () => {
  const app = proxyApp();
  assert.is((await app.request('/healthz')).status, 200);
  assert.is((await app.request('/healthz')).status, 200);
  assert.is((await app.request('/readyz')).status, 503);
  assert.is((await app.request('/v1/attr')).status, 400); // no path: refused before the cluster
  assert.is((await app.request('/v1/attr?path=relative')).status, 400);
  assert.is((await app.request('/no/such/route/123')).status, 404);
  assert.is((await app.request('/v1/ops')).status, 404); // GET of a POST route
  const res = await app.request('/metrics');
  assert.is(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
  const counts = requestsOf(parseMetricsText(await res.text()), 'dfs_proxy_requests_total');
  assert.equal(counts, { 'healthz healthz 200': 2, 'readyz readyz 503': 1, 'attr attr 400': 2, 'unmatched unmatched 404': 2 });
});

test('proxy: each app counts on its own', async () => {
  const first = proxyApp();
  const second = proxyApp();
  await first.request('/healthz');
  const text = await (await second.request('/metrics')).text();
  assert.equal(requestsOf(parseMetricsText(text), 'dfs_proxy_requests_total'), {});
});

test('proxy: route names', () => {
  assert.is(apiName('/v1/attr'), 'attr');
  assert.is(apiName('/healthz'), 'healthz');
  assert.is(apiName('/*'), 'unmatched');
  assert.is(apiName('*'), 'unmatched');
});

test('mount: counters served on their own address, other paths 404', async () => {
  const metrics = new MountMetrics();
  metrics.fuseRequests.inc({ op: 'getattr' });
  metrics.fuseRequests.inc({ op: 'getattr' });
  metrics.clusterRequests.inc({ api: 'attr' });
  const server = await serveMetrics(metrics.registry, { host: '127.0.0.1', port: 0 }, logger);
  try {
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const res = await fetch(`${base}/metrics`);
    assert.is(res.status, 200);
    const samples = parseMetricsText(await res.text());
    assert.equal(requestsOf(samples, 'dfs_mount_fuse_requests_total'), { getattr: 2 });
    assert.equal(requestsOf(samples, 'dfs_mount_cluster_requests_total'), { attr: 1 });
    assert.is((await fetch(`${base}/`)).status, 404);
    // A second mount's counters are its own.
    assert.equal(requestsOf(parseMetricsText(await new MountMetrics().registry.metrics()), 'dfs_mount_fuse_requests_total'), {});
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test('mount: an address that is taken fails at start-up', async () => {
  const first = await serveMetrics(new MountMetrics().registry, { host: '127.0.0.1', port: 0 }, logger);
  try {
    const port = (first.address() as AddressInfo).port;
    await serveMetrics(new MountMetrics().registry, { host: '127.0.0.1', port }, logger).then(
      () => assert.unreachable('bound a taken port'),
      (err: NodeJS.ErrnoException) => assert.is(err.code, 'EADDRINUSE'),
    );
  } finally {
    await new Promise<void>((resolve) => first.close(() => resolve()));
  }
});

test('mount: --metrics-addr HOST:PORT, checked at start-up', () => {
  assert.equal(parseMetricsAddr('127.0.0.1:9464'), { host: '127.0.0.1', port: 9464 });
  assert.equal(parseMetricsAddr('localhost:1'), { host: 'localhost', port: 1 });
  assert.equal(parseMetricsAddr('[::1]:65535'), { host: '::1', port: 65535 });
  assert.is(metricsAddrText({ host: '::1', port: 9464 }), '[::1]:9464');
  assert.is(metricsAddrText({ host: '127.0.0.1', port: 9464 }), '127.0.0.1:9464');
  for (const bad of ['9464', ':9464', '127.0.0.1:', '127.0.0.1:0', '127.0.0.1:65536', '::1:9464', 'host:port', '127.0.0.1:94x', 'a b:1']) {
    assert.throws(() => parseMetricsAddr(bad), /--metrics-addr/, bad);
  }
  const cli = parseCli(['/mnt/x', '--metrics-addr', '127.0.0.1:9464'], {});
  assert.ok(cli !== 'help');
  assert.equal(cli.metricsAddr, { host: '127.0.0.1', port: 9464 });
  const off = parseCli(['/mnt/x'], {});
  assert.ok(off !== 'help');
  assert.is(off.metricsAddr, undefined);
});

test.run();
