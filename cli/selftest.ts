/*
 * `dfs selftest`: an end-to-end check of a running cluster through its proxies' client API,
 * for an operator after a change and for the Helm chart's `helm test` hook:
 *
 *   1. every member of the membership is in sync (waited for, within the deadline);
 *   2. a file of random bytes is created and written (one request ID per op, retried on
 *      the next proxy, so it is applied once however many proxies saw it);
 *   3. it reads back equal, once through the proxy's own choice of node and once pinned to
 *      each in-sync node (`dfs-read-node`);
 *   4. it is unlinked, and is gone;
 *   5. `verify` finds the in-sync bricks identical.
 *
 * Each step prints one line; the first that fails prints why and the command exits 1.
 * Everything runs under one deadline (--timeout-ms): a request gets what is left of it, so
 * a proxy or a cluster that is down makes it fail in bounded time, never hang. The file is
 * `/.dfs-selftest-<random>` at the root of what the credential sees; a failure after it was
 * created still tries to unlink it. It acts as root (uid and gid 0), so it wants the admin
 * credential (the local cluster's, or $DFS_CREDENTIAL), as `dfs verify` does.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { request } from 'undici';
import { HEADER_READ_NODE, type ClusterStatus, type VerifyReport } from '../common/api';
import { errorFromBody } from '../common/errors';
import { encodeFrame } from '../common/frame';
import type { Op } from '../common/ops';
import { dispatcherFor } from './probes';

/** The file's size: more than one network packet, well under one read. */
const SELFTEST_BYTES = 256 * 1024;
/** How often the in-sync check looks again while nodes catch up. */
const IN_SYNC_POLL_MS = 500;

type Out = (line: string) => void;

class StepFailure extends Error {}

interface Reply {
  status: number;
  body: Buffer;
}

export class Selftest {
  private readonly deadlineMs: number;
  private readonly startedAtMs = Date.now();

  constructor(
    private readonly proxyUrls: string[],
    private readonly timeoutMs: number,
    private readonly out: Out,
  ) {
    this.deadlineMs = this.startedAtMs + timeoutMs;
  }

  private leftMs(): number {
    const left = this.deadlineMs - Date.now();
    if (left <= 0) throw new StepFailure(`the deadline of ${this.timeoutMs} ms passed`);
    return left;
  }

  /** One request to one proxy, within what is left of the deadline. */
  private async send(url: string, method: 'GET' | 'POST', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Reply> {
    const dispatcher = dispatcherFor(url);
    const left = this.leftMs();
    const res = await request(`${url}${path}`, {
      ...(dispatcher ? { dispatcher } : {}),
      method,
      headers: { ...(body ? { 'content-type': 'application/octet-stream' } : {}), ...headers },
      ...(body ? { body } : {}),
      signal: AbortSignal.timeout(left),
      headersTimeout: left,
      bodyTimeout: left,
    });
    return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
  }

  /** Asks the proxies in turn until one gives an answer that is not a failure of its own
   * (a refused connection, 503: another proxy may do better). */
  private async ask(method: 'GET' | 'POST', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Reply> {
    const failures: string[] = [];
    for (const url of this.proxyUrls) {
      try {
        const reply = await this.send(url, method, path, body, headers);
        if (reply.status === 503 || reply.status === 502 || reply.status === 504) {
          failures.push(`${url}: ${describe(reply)}`);
          continue;
        }
        return reply;
      } catch (e) {
        if (e instanceof StepFailure) throw e;
        failures.push(`${url}: ${(e as Error).message}`);
      }
    }
    throw new StepFailure(`no proxy answered (${failures.join('; ')})`);
  }

  private async ok(method: 'GET' | 'POST', path: string, body?: Buffer, headers: Record<string, string> = {}): Promise<Buffer> {
    const reply = await this.ask(method, path, body, headers);
    if (reply.status !== 200) throw new StepFailure(describe(reply));
    return reply.body;
  }

  private async op(op: Op, data?: Buffer): Promise<void> {
    // One request ID for every try: applied once, whichever proxies saw it.
    const result = parseJson(await this.ok('POST', '/v1/ops', encodeFrame({ reqId: randomUUID(), op }, data))) as { errno?: unknown } | null;
    // A file system outcome (EEXIST, ENOSPC…) is an answer like any other: 200 with its errno.
    if (result === null || typeof result !== 'object') throw new StepFailure(`${op.type}: the answer is not JSON`);
    if (result.errno !== undefined) throw new StepFailure(`${op.type}: ${String(result.errno)}`);
  }

  private async step<T>(what: string, fn: () => Promise<T>): Promise<T> {
    const at = Date.now();
    try {
      const value = await fn();
      this.out(`ok      ${what} (${Date.now() - at} ms)`);
      return value;
    } catch (e) {
      throw new StepFailure(`${what}: ${(e as Error).message}`);
    }
  }

  /** Runs every step; returns the exit code. */
  async run(): Promise<number> {
    const path = `/.dfs-selftest-${randomBytes(8).toString('hex')}`;
    let created = false;
    try {
      const inSync = await this.step('every node in sync', () => this.waitInSync());
      const data = randomBytes(SELFTEST_BYTES);
      await this.step(`write ${path} (${SELFTEST_BYTES} bytes)`, async () => {
        await this.op({ type: 'create', path, mode: 0o600, uid: 0, gid: 0, exclusive: true });
        created = true;
        await this.op({ type: 'write', path, offset: 0 }, data);
      });
      await this.step('read it back', () => this.readBack(path, data));
      for (const id of inSync) await this.step(`read it back from ${id}`, () => this.readBack(path, data, id));
      await this.step(`unlink ${path}`, async () => {
        await this.op({ type: 'unlink', path });
        created = false;
        const reply = await this.ask('GET', `/v1/attr?path=${encodeURIComponent(path)}`);
        if (reply.status === 200) throw new StepFailure('it is still there after the unlink');
        const err = errorFromBody(reply.status, parseJson(reply.body));
        if (err.errno !== 'ENOENT') throw new StepFailure(`looking it up after the unlink: ${describe(reply)}`);
      });
      await this.step('verify: the in-sync bricks are identical', async () => {
        const report = parseJson(await this.ok('POST', '/v1/verify')) as VerifyReport;
        if (!report.ok) {
          const paths = report.differences.map((d) => d.path).slice(0, 5);
          throw new StepFailure(`differences at sequence ID ${report.at}: ${paths.join(', ')}${report.differences.length + report.more > paths.length ? ', …' : ''}`);
        }
        const failed = report.nodes.filter((n) => 'error' in n);
        if (failed.length > 0) throw new StepFailure(failed.map((n) => `${n.id}: ${(n as { error: string }).error}`).join('; '));
      });
    } catch (e) {
      this.out(`FAILED  ${(e as Error).message}`);
      if (created) {
        // Best effort, within what is left: the failure above is what the exit code says.
        await this.op({ type: 'unlink', path }).catch((err: Error) => this.out(`        (could not remove ${path}: ${err.message})`));
      }
      this.out(`selftest failed after ${Date.now() - this.startedAtMs} ms`);
      return 1;
    }
    this.out(`selftest passed in ${Date.now() - this.startedAtMs} ms`);
    return 0;
  }

  /** Waits until every member is in sync and alive; returns the in-sync IDs. */
  private async waitInSync(): Promise<string[]> {
    let why = '';
    for (;;) {
      try {
        const status = parseJson(await this.ok('GET', '/v1/cluster')) as ClusterStatus;
        const m = status.membership;
        if (m === null) why = 'the cluster has no membership yet';
        else {
          const behind = Object.keys(m.nodes)
            .sort()
            .flatMap((id) => {
              const n = status.nodes.find((x) => x.id === id);
              const state = n === undefined ? 'unknown' : n.state;
              return m.inSync.includes(id) && state === 'in-sync' ? [] : [`${id} ${state}`];
            });
          if (behind.length === 0) return [...m.inSync].sort();
          why = `not in sync: ${behind.join(', ')}`;
        }
      } catch (e) {
        why = (e as Error).message;
      }
      if (this.deadlineMs - Date.now() <= IN_SYNC_POLL_MS) throw new StepFailure(`${why} (after ${Date.now() - this.startedAtMs} ms)`);
      await new Promise((resolve) => setTimeout(resolve, IN_SYNC_POLL_MS));
    }
  }

  private async readBack(path: string, data: Buffer, nodeId?: string): Promise<void> {
    const got = await this.ok('GET', `/v1/data?path=${encodeURIComponent(path)}&offset=0&size=${data.length + 1}`, undefined, nodeId ? { [HEADER_READ_NODE]: nodeId } : {});
    if (!got.equals(data)) throw new StepFailure(`read ${got.length} bytes${got.length === data.length ? ' that differ from what was written' : `, wrote ${data.length}`}`);
  }
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
}

function describe(reply: Reply): string {
  const err = errorFromBody(reply.status, parseJson(reply.body));
  return `HTTP ${reply.status} ${err.code}${err.errno ? ` ${err.errno}` : ''}: ${err.message}`;
}
