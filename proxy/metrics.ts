/*
 * The proxy's Prometheus metrics (prom-client), served at `GET /metrics` on its own port
 * (for a client certificate) and on its admin port (without one; common/admin-server.ts).
 *
 *   dfs_proxy_requests_total{api,op,code}          requests answered, by route, op and status
 *   dfs_proxy_request_duration_seconds{api,op}     time to answer one
 *   dfs_proxy_seq_assign_duration_seconds          one sequence ID from Redis (INCR)
 *   dfs_proxy_is_leader                            1 while this proxy holds the leader lease
 *   dfs_cluster_seq                                the newest sequence ID taken (Redis dfs:seq)
 *   dfs_cluster_nodes{state}                       nodes by state, as `dfs status` names them
 *   dfs_build_info{version,component,node_version}
 *
 * `api` is the name of the route that answered (`ops`, `attr`, `healthz`…: the registered
 * route path without its `/v1/`), or `unmatched`, never the request's path, so that the
 * label set stays as small as the route table. `op` is the op's type for `ops` (`write`,
 * `mkdir`…: common/ops.ts's fixed set, or `invalid` when it did not parse) and the api's
 * name for every other route. The cluster gauges are read from Redis when scraped, by
 * every proxy alike. Each app has its own registry rather than prom-client's global one,
 * since a test may create several apps in one process.
 */
import type { Context, MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from '../common/admin-server';

/** The `api` label of a request that matched no route (a 404 from Hono itself). */
export const API_UNMATCHED = 'unmatched';
/** The `op` label of an ops request whose op did not parse. */
export const OP_INVALID = 'invalid';
/** Node states as ClusterStatus names them; every one is reported, 0 when none. */
export const NODE_STATES = ['in-sync', 'syncing', 'joining', 'full', 'down'] as const;
/** 0.5 ms to 10 s, the span of the mount's op latencies. */
export const LATENCY_BUCKETS_SECONDS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the cluster gauges read when scraped; absent in tests of the app alone. */
export interface ProxyMetricsSource {
  isLeader: () => boolean;
  /** The sequence ID and node states; throws when Redis cannot be read. */
  cluster: () => Promise<{ seq: number; nodeStates: string[] }>;
}

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'api' | 'op' | 'code'>;
  readonly requestDuration: Histogram<'api' | 'op'>;
  readonly seqAssign: Histogram;
  /** The op label of requests in flight, set by the ops handler once it parsed one. */
  private readonly ops = new WeakMap<Request, string>();

  constructor(source?: ProxyMetricsSource) {
    const registers = [this.registry];
    registerBuildInfo(this.registry, 'proxy');
    this.requests = new Counter({
      name: 'dfs_proxy_requests_total',
      help: 'Client API requests answered, by route, op and HTTP status code.',
      labelNames: ['api', 'op', 'code'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'dfs_proxy_request_duration_seconds',
      help: 'Time from a client request\'s arrival to its answer, by route and op.',
      labelNames: ['api', 'op'],
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    this.seqAssign = new Histogram({
      name: 'dfs_proxy_seq_assign_duration_seconds',
      help: 'Time to take one sequence ID from Redis.',
      buckets: LATENCY_BUCKETS_SECONDS,
      registers,
    });
    if (!source) return;
    new Gauge({
      name: 'dfs_proxy_is_leader',
      help: '1 while this proxy holds the leader lease, else 0.',
      registers,
      collect() {
        this.set(source.isLeader() ? 1 : 0);
      },
    });
    // Both cluster gauges come from one read of Redis per scrape.
    let pending: Promise<{ seq: number; nodeStates: string[] } | null> | null = null;
    const read = () => {
      pending ??= source
        .cluster()
        .catch(() => null)
        .finally(() => setImmediate(() => (pending = null)));
      return pending;
    };
    new Gauge({
      name: 'dfs_cluster_seq',
      help: 'The newest sequence ID taken in the cluster (Redis), as this proxy reads it.',
      registers,
      async collect() {
        const c = await read();
        // Redis away: no sample rather than a wrong one.
        if (c) this.set(c.seq);
        else this.reset();
      },
    });
    new Gauge({
      name: 'dfs_cluster_nodes',
      help: 'Storage nodes registered in the cluster, by state.',
      labelNames: ['state'],
      registers,
      async collect() {
        const c = await read();
        if (!c) return this.reset();
        for (const state of NODE_STATES) this.set({ state }, c.nodeStates.filter((s) => s === state).length);
      },
    });
  }

  /** Names the op of an ops request for its metrics labels (a literal of common/ops.ts). */
  noteOp(c: Context, op: string): void {
    this.ops.set(c.req.raw, op);
  }

  /** A Hono middleware that counts and times every request once it is answered, errors
   * included (the app's onError has set the response by the time `next` returns). */
  middleware(): MiddlewareHandler {
    return async (c, next) => {
      const startNs = process.hrtime.bigint();
      await next();
      const api = apiName(routePath(c, -1));
      const op = this.ops.get(c.req.raw) ?? (api === 'ops' ? OP_INVALID : api);
      this.requests.inc({ api, op, code: String(c.res.status) });
      this.requestDuration.observe({ api, op }, Number(process.hrtime.bigint() - startNs) / 1e9);
    };
  }
}

/** The label for a registered route path: '/v1/attr' → 'attr', '/healthz' → 'healthz'; a
 * wildcard (only middleware matched) → 'unmatched'. */
export function apiName(route: string): string {
  if (route === '' || route.includes('*')) return API_UNMATCHED;
  return route.replace(/^\/v1\//, '').replace(/^\//, '');
}
