/*
 * The admin listener of the proxy and the storage node: plain HTTP/1.1, no client
 * certificate, for what cannot present one (Prometheus scraping, kubelet probes, a
 * browser on the status page). docs/security.md says why this is safe: it serves only
 *
 *   GET /metrics   the process's own registry (prom-client text format)
 *   GET /healthz   200 while the process runs
 *   GET /readyz    200 once it can serve, 503 before (the process's own `ready` check)
 *
 * and whatever read-only pages the process adds (the proxy's /ui). Nothing here changes
 * anything or reveals a file's name, contents or attributes; every other path and method
 * is 404/405. It is a separate port (`--admin-port`, `--admin-host`) so that the client
 * and node APIs keep requiring certificates on theirs, and so that an operator can bind it
 * to a pod or loopback address apart from the API.
 *
 * dfs_build_info (version, process kind) is registered here, once per registry.
 */
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import nodePath from 'node:path';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from './log';

/** How long a request to the admin port may take to arrive (a scrape is small). */
const ADMIN_HEADERS_TIMEOUT_MS = 5_000;
const ADMIN_REQUEST_TIMEOUT_MS = 10_000;

export interface AdminPage {
  contentType: string;
  body: () => Promise<string | Buffer>;
}

export interface AdminDeps {
  registry: Registry;
  ready: () => Promise<boolean>;
  /** Extra read-only GET pages by exact path (the proxy's `/ui`). */
  pages?: Record<string, AdminPage>;
  logger: Logger;
}

export interface AdminAddress {
  host: string;
  port: number;
}

/** The version in package.json, read once (dist/common/ → the package root). */
let versionCache: string | null = null;
export function dfsVersion(): string {
  if (versionCache !== null) return versionCache;
  try {
    const pkg = JSON.parse(readFileSync(nodePath.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version?: unknown };
    versionCache = typeof pkg.version === 'string' ? pkg.version : 'unknown';
  } catch {
    versionCache = 'unknown';
  }
  return versionCache;
}

/** Registers `dfs_build_info{version,component} 1` in `registry`. */
export function registerBuildInfo(registry: Registry, component: 'proxy' | 'storage' | 'mount'): void {
  const info = new Gauge({
    name: 'dfs_build_info',
    help: 'Always 1; its labels say which dfs version and process kind this is.',
    labelNames: ['version', 'component', 'node_version'],
    registers: [registry],
  });
  info.set({ version: dfsVersion(), component, node_version: process.versions.node }, 1);
}

function answer(res: ServerResponse, status: number, contentType: string, body: string | Buffer): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' }).end(body);
}

/** The request handler, apart from the server so a test can drive it. */
export function adminHandler(deps: AdminDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    const known = path === '/metrics' || path === '/healthz' || path === '/readyz' || (path !== undefined && deps.pages?.[path] !== undefined);
    if (!known) return answer(res, 404, 'text/plain', 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return answer(res, 405, 'text/plain', 'method not allowed\n');
    }
    const fail = (err: unknown) => {
      deps.logger.error({ err, path }, 'admin page failed');
      if (!res.headersSent) answer(res, 500, 'text/plain', 'internal error\n');
    };
    if (path === '/healthz') return answer(res, 200, 'application/json', '{"ok":true}\n');
    if (path === '/readyz') {
      deps.ready().then((ok) => answer(res, ok ? 200 : 503, 'application/json', JSON.stringify({ ready: ok }) + '\n'), fail);
      return;
    }
    if (path === '/metrics') {
      deps.registry.metrics().then((text) => answer(res, 200, deps.registry.contentType, text), fail);
      return;
    }
    const page = deps.pages![path!]!;
    page.body().then((body) => answer(res, 200, page.contentType, body), fail);
  };
}

/** Listens on `address`; resolves once bound, rejects when it cannot be (a taken port). */
export async function serveAdmin(address: AdminAddress, deps: AdminDeps): Promise<Server> {
  const server = createServer({ headersTimeout: ADMIN_HEADERS_TIMEOUT_MS, requestTimeout: ADMIN_REQUEST_TIMEOUT_MS }, adminHandler(deps));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => deps.logger.warn({ err }, 'admin server error'));
  return server;
}

/** The parseArgs options every process with an admin port takes. */
export const ADMIN_ARG_OPTIONS = {
  'admin-port': { type: 'string' },
  'admin-host': { type: 'string', default: '127.0.0.1' },
} as const;

/** --admin-port and --admin-host, checked; undefined without --admin-port (no listener). */
export function adminAddressOf(values: { 'admin-port'?: string; 'admin-host'?: string }): AdminAddress | undefined {
  const raw = values['admin-port'];
  if (raw === undefined || raw === '') return undefined;
  const port = Number(raw);
  if (!Number.isSafeInteger(port) || port < 1 || port > 65535) throw new Error(`--admin-port must be a whole number from 1 to 65535, not ${JSON.stringify(raw)}`);
  const host = values['admin-host'] ?? '127.0.0.1';
  if (host === '') throw new Error('--admin-host must not be empty');
  return { host, port };
}
