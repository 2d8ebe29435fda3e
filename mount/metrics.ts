/*
 * The mount's Prometheus metrics (prom-client), served at `/metrics` on `--metrics-addr`.
 *
 *   dfs_mount_fuse_requests_total{op}      FUSE requests answered, by handler (getattr, read…)
 *   dfs_mount_cluster_requests_total{api}  HTTP attempts sent to proxies, by client API
 *                                          (ops, attr, dir, data, link, xattr, xattrs, statfs);
 *                                          a retry on another proxy counts again
 *   dfs_mount_op_duration_seconds{op}      time to answer a FUSE request (0.5 ms to 10 s)
 *   dfs_mount_op_errors_total{op,errno}    FUSE requests answered with an error
 *   dfs_mount_bytes_total{direction}       bytes read from / written to the file system
 *                                          (what applications asked for, as answered)
 *   dfs_mount_dirty_bytes                  bytes written and not yet sent to the cluster
 *   dfs_mount_proxy_retries_total{reason}  attempts after the first of one request:
 *                                          `unreachable` (no answer) or `retryable` (a 5xx/429)
 *   dfs_build_info{version,component,node_version}
 *
 * Every label comes from a fixed set in the code (errno: the names mount/errno.ts knows),
 * never from a path. Each MountMetrics has
 * its own registry rather than prom-client's global one, so that several mounts (or tests)
 * in one process count apart.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from '../common/admin-server';
import type { Logger } from '../common/log';

/** The client API endpoints (docs/api.md), as the `api` label names them. */
export type ClusterApi = 'ops' | 'attr' | 'dir' | 'data' | 'link' | 'xattr' | 'xattrs' | 'statfs' | 'leases' | 'locks' | 'locks/session';

export class MountMetrics {
  readonly registry = new Registry();
  readonly fuseRequests: Counter<'op'>;
  readonly clusterRequests: Counter<'api'>;
  readonly opDuration: Histogram<'op'>;
  readonly opErrors: Counter<'op' | 'errno'>;
  readonly bytes: Counter<'direction'>;
  readonly proxyRetries: Counter<'reason'>;
  /** Read when scraped: the mount's dirty bytes (set by fuse-ops.ts). */
  dirtyBytes: () => number = () => 0;

  constructor() {
    const registers = [this.registry];
    registerBuildInfo(this.registry, 'mount');
    this.opDuration = new Histogram({
      name: 'dfs_mount_op_duration_seconds',
      help: 'Time to answer one FUSE request, by operation (answers from the cache included).',
      labelNames: ['op'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.opErrors = new Counter({
      name: 'dfs_mount_op_errors_total',
      help: 'FUSE requests answered with an error, by operation and errno name.',
      labelNames: ['op', 'errno'],
      registers,
    });
    this.bytes = new Counter({
      name: 'dfs_mount_bytes_total',
      help: 'Bytes applications read (direction="read") and wrote (direction="write") through the mount.',
      labelNames: ['direction'],
      registers,
    });
    this.proxyRetries = new Counter({
      name: 'dfs_mount_proxy_retries_total',
      help: 'Attempts of a cluster request after its first, by why the one before failed.',
      labelNames: ['reason'],
      registers,
    });
    // Series of a fixed label set start at 0, so that a rate over them is defined from the
    // first scrape on (and a dashboard's query finds them before the first retry).
    for (const direction of ['read', 'write']) this.bytes.inc({ direction }, 0);
    for (const reason of ['unreachable', 'retryable']) this.proxyRetries.inc({ reason }, 0);
    const metrics = this;
    new Gauge({
      name: 'dfs_mount_dirty_bytes',
      help: 'Bytes written through the mount and not yet committed to the cluster.',
      registers,
      collect() {
        this.set(metrics.dirtyBytes());
      },
    });
    this.fuseRequests = new Counter({
      name: 'dfs_mount_fuse_requests_total',
      help: 'FUSE requests from the kernel, by operation.',
      labelNames: ['op'],
      registers: [this.registry],
    });
    this.clusterRequests = new Counter({
      name: 'dfs_mount_cluster_requests_total',
      help: 'HTTP requests sent to proxies, each attempt counted, by client API endpoint.',
      labelNames: ['api'],
      registers: [this.registry],
    });
  }
}

export interface MetricsAddress {
  host: string;
  port: number;
}

/** HOST:PORT as --metrics-addr takes it, an IPv6 host in brackets. */
export function metricsAddrText(address: MetricsAddress): string {
  return `${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}`;
}

/** Serves `GET /metrics` from `registry` on `address` (plain node:http: the mount has no
 * other server); resolves once listening, rejects when the address cannot be bound. */
export async function serveMetrics(registry: Registry, address: MetricsAddress, logger: Logger): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => {
        logger.error({ err }, 'metrics could not be collected');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics could not be collected\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Later errors (a client resetting its connection) must not crash the mount.
  server.on('error', (err) => logger.warn({ err }, 'metrics server error'));
  return server;
}
