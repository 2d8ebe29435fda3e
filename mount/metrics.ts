/*
 * The mount's Prometheus metrics (prom-client), served at `/metrics` on `--metrics-addr`.
 *
 *   dfs_mount_fuse_requests_total{op}      FUSE requests answered, by handler (getattr, read…)
 *   dfs_mount_cluster_requests_total{api}  HTTP attempts sent to proxies, by client API
 *                                          (ops, attr, dir, data, link, xattr, xattrs, statfs);
 *                                          a retry on another proxy counts again
 *
 * Both labels come from fixed sets in the code, never from a path. Each MountMetrics has
 * its own registry rather than prom-client's global one, so that several mounts (or tests)
 * in one process count apart.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Registry } from 'prom-client';
import type { Logger } from '../common/log';

/** The client API endpoints (docs/api.md), as the `api` label names them. */
export type ClusterApi = 'ops' | 'attr' | 'dir' | 'data' | 'link' | 'xattr' | 'xattrs' | 'statfs' | 'leases';

export class MountMetrics {
  readonly registry = new Registry();
  readonly fuseRequests: Counter<'op'>;
  readonly clusterRequests: Counter<'api'>;

  constructor() {
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
