/* A small client for the proxy's and nodes' HTTP APIs, for tests (docs/api.md). */
import { callerHeaders, ROOT_CALLER } from '../../common/identity';
import { randomUUID } from 'node:crypto';
import { Client, Pool } from 'undici';
import { encodeFrame } from '../../common/frame';
import { h2ClientOptions } from '../../common/h2c';
import { clientConnectOptions, clientTlsFor, type TlsMaterial } from '../../common/tls';
import { join } from 'node:path';
import { certFiles, readMaterial } from '../../cli/certs';
import type { Op } from '../../common/ops';

export interface Answer {
  status: number;
  json: any;
  bytes: Buffer;
  headers: Record<string, unknown>;
}

async function answer(res: { statusCode: number; body: { arrayBuffer(): Promise<ArrayBuffer> }; headers: Record<string, unknown> }): Promise<Answer> {
  const bytes = Buffer.from(await res.body.arrayBuffer());
  let json: unknown = null;
  if (String(res.headers['content-type'] ?? '').includes('json')) json = JSON.parse(bytes.toString('utf8'));
  return { status: res.statusCode, json, bytes, headers: res.headers };
}

/** The certificate of one process of a local cluster (`p1`, `n2`, `admin`…), for a test
 * that calls an endpoint as that process would (storage/app.ts, NODE_ROUTE_ROLES). */
export function processTls(cluster: { dataDir: string }, name: string): TlsMaterial {
  return readMaterial(certFiles(join(cluster.dataDir, 'tls'), name));
}

export class TestClient {
  private readonly pool: Pool | Client;

  /** `h2c` for storage nodes (HTTP/2), HTTP/1.1 for proxies. Over TLS, the client
   * presents `tls`, by default the credential the harness registered for the URL (admin:
   * cli/cluster-processes.ts, useAdminCredential). */
  constructor(readonly url: string, private readonly h2c = false, tls: TlsMaterial | null | undefined = clientTlsFor(url)) {
    this.pool = h2c
      ? new Client(url, h2ClientOptions({}, tls))
      : new Pool(url, { connections: 8, ...(tls ? { connect: clientConnectOptions(tls, ['proxy']) } : {}) });
  }

  async op(op: Op, data?: Buffer, reqId: string = randomUUID()): Promise<Answer> {
    return this.post('/v1/ops', encodeFrame({ reqId, op }, data));
  }

  async post(path: string, body: Buffer | string, headers: Record<string, string> = {}): Promise<Answer> {
    const res = await this.pool.request({ method: 'POST', path, body, headers: { 'content-type': 'application/octet-stream', ...headers }, signal: AbortSignal.timeout(30_000) });
    return answer(res);
  }

  /** A read as `headers` name its caller (x-dfs-uid…). Without them, a proxy reads as its
   * client's credential allows (the administrator's: root); a storage node would take a
   * read naming no one as nobody's, so to a node the tests' client reads as root. */
  async get(path: string, query: Record<string, string | number> = {}, headers: Record<string, string> = {}): Promise<Answer> {
    const qs = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)] as [string, string])).toString();
    const identity = this.h2c ? callerHeaders(ROOT_CALLER) : {};
    const res = await this.pool.request({ method: 'GET', path: qs ? `${path}?${qs}` : path, headers: { ...identity, ...headers }, signal: AbortSignal.timeout(30_000) });
    return answer(res);
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

/**
 * Sends an op until it is committed (200), with one request ID throughout, as the mount
 * does: a retry is applied at most once. Throws after `retryMs`. `attempts` counts tries.
 */
export async function commitOp(client: TestClient, op: Op, data?: Buffer, retryMs = 30_000): Promise<{ answer: Answer; attempts: number }> {
  const reqId = randomUUID();
  const deadline = Date.now() + retryMs;
  let attempts = 0;
  let last = '';
  for (;;) {
    attempts++;
    try {
      const a = await client.op(op, data, reqId);
      if (a.status === 200) return { answer: a, attempts };
      last = `${a.status} ${JSON.stringify(a.json)}`;
    } catch (e) {
      last = String(e);
    }
    if (Date.now() > deadline) throw new Error(`${op.type} ${JSON.stringify(op)} not committed in ${retryMs} ms: ${last}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Polls `fn` until it returns a truthy value or the deadline passes. */
export async function pollUntil<T>(what: string, timeoutMs: number, fn: () => Promise<T | null | undefined | false>, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
