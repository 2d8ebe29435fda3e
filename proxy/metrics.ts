/*
 * The proxy's Prometheus metrics (prom-client), served at `GET /metrics` on its own port.
 *
 *   dfs_proxy_requests_total{api,code}   requests answered, by route and HTTP status
 *
 * `api` is the name of the route that answered (`ops`, `attr`, `healthz`…: the registered
 * route path without its `/v1/`), or `unmatched`, never the request's path, so that the
 * label set stays as small as the route table. Each app has its own registry rather than
 * prom-client's global one, since a test may create several apps in one process.
 */
import type { MiddlewareHandler } from 'hono';
import { routePath } from 'hono/route';
import { Counter, Registry } from 'prom-client';

/** The `api` label of a request that matched no route (a 404 from Hono itself). */
export const API_UNMATCHED = 'unmatched';

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'api' | 'code'>;

  constructor() {
    this.requests = new Counter({
      name: 'dfs_proxy_requests_total',
      help: 'Client API requests answered, by route and HTTP status code.',
      labelNames: ['api', 'code'],
      registers: [this.registry],
    });
  }

  /** A Hono middleware that counts every request once it is answered, errors included
   * (the app's onError has set the response by the time `next` returns). */
  middleware(): MiddlewareHandler {
    return async (c, next) => {
      await next();
      this.requests.inc({ api: apiName(routePath(c, -1)), code: String(c.res.status) });
    };
  }
}

/** The label for a registered route path: '/v1/attr' → 'attr', '/healthz' → 'healthz'; a
 * wildcard (only middleware matched) → 'unmatched'. */
export function apiName(route: string): string {
  if (route === '' || route.includes('*')) return API_UNMATCHED;
  return route.replace(/^\/v1\//, '').replace(/^\//, '');
}
