/*
 * The mount's HTTP client for the proxies' client API (docs/api.md), with failover.
 *
 * One undici Pool per proxy URL keeps connections alive across calls. A request goes to the
 * proxy that answered last; on a failure that another proxy may not have (the connection is
 * refused or lost, the proxy is overloaded or cannot reach the cluster: 503, it reached the
 * wrong epoch: 421, it timed out: 504) it moves on to the next URL, and after a full round
 * it backs off and starts again, until the caller's deadline. A mutation keeps its request
 * ID across every retry, so the cluster applies it exactly once however many proxies saw it.
 *
 * When no proxy accepts a connection at all, retrying until the deadline would only make
 * `ls` hang for the whole deadline on every call. So a streak of transport failures is
 * bounded separately (`unreachableRetryMs`), and once a call has given up (nothing
 * reachable, or every proxy kept answering 503 until the deadline) the client remembers
 * it and makes later calls try each proxy once only, without backing off, until one gives
 * a usable answer again: a cluster that is down gives EIO at once.
 *
 * Every attempt is counted in dfs_mount_cluster_requests_total{api} (mount/metrics.ts), so
 * that the cost of a file system call in requests can be measured, retries included.
 *
 * With TLS (the default), the mount presents its credential (a certificate the cluster's
 * CA issued: docs/security.md) and accepts only servers whose certificate says proxy;
 * every request of a FUSE call carries its caller's uid, gid and groups (x-dfs-uid,
 * x-dfs-gid, x-dfs-groups), which the proxy holds to what the credential allows.
 */
import type { Caller } from '../common/identity';
import { randomUUID } from 'node:crypto';
import { Pool } from 'undici';
import { HEADER_READ_NODE, type Attr, type DirEntry, type OpResult, type StatFs } from '../common/api';
import { DfsError, errorFromBody, fsError } from '../common/errors';
import { encodeFrame, encodeFrameParts, FRAME_PIECES_BYTES_MIN } from '../common/frame';
import { READ_BYTES_MAX } from '../common/limits';
import type { Logger } from '../common/log';
import { encodeQueryValue } from '../common/names';
import type { Op } from '../common/ops';
import { retry, type AttemptResult, type RetryPolicy } from '../common/retry';
import { clientConnectOptions, type TlsMaterial } from '../common/tls';
import { HEADER_GID, HEADER_GROUPS, HEADER_UID } from '../common/credential';
import { Deadline } from './deadline';
import { HEADER_LEASE, HEADER_MOUNT, parseLeaseHeader } from '../common/leases';
import type { LeaseGrant, PollResult } from './leases';
import type { ClusterApi, MountMetrics } from './metrics';

/** The largest response body we accept (a directory listing is the big one). */
export const RESPONSE_BYTES_MAX = 256 * 1024 * 1024;
/** Keep-alive connections per proxy. */
export const CONNECTIONS_PER_PROXY = 16;
/** Attempts per call, over all proxies and rounds: a bound on the loop besides the deadline. */
export const ATTEMPTS_MAX = 64;
export const BACKOFF_MS_MIN = 50;
export const BACKOFF_MS_MAX = 1_000;
/** Between rounds over the proxies: doubling waits, each shortened by up to half at random,
 * and none that would reach the deadline (the call fails rather than wait it out). Every
 * round makes at least one request, so ATTEMPTS_MAX bounds the rounds too. */
const ROUND_RETRY_POLICY: RetryPolicy = {
  attemptsMax: ATTEMPTS_MAX,
  backoffMsMin: BACKOFF_MS_MIN,
  backoffMsMax: BACKOFF_MS_MAX,
  backoffFactor: 2,
  jitter: 0.5,
  waitPastDeadline: 'stop',
};

export interface ProxyClientOptions {
  urls: string[];
  logger: Logger;
  /** The time to set up a TCP connection before the proxy counts as unreachable. */
  connectTimeoutMs?: number;
  /** The longest one attempt may take, so that a hung proxy does not use up the deadline. */
  attemptTimeoutMs?: number;
  /** How long a streak of transport failures (nothing answered) is retried. */
  unreachableRetryMs?: number;
  /** Serve every read from this storage node (docs/api.md, dfs-read-node). */
  readNode?: string;
  /** The mount's lease identity (mount/leases.ts), sent with every op so that the cluster
   * leaves this mount's own leases alone. */
  identity?: () => string | undefined;
  /** Where attempts are counted; none: not counted. */
  metrics?: MountMetrics;
  /** The cluster CA and this mount's credential; none: plaintext (--insecure). */
  tls?: TlsMaterial | null;
}

/** A request's body: one buffer, or pieces sent one after another. */
type RequestBody = Buffer | Buffer[] | null;

/** A final answer's headers, for the callers that read one. */
type HeadersSeen = (headers: Record<string, string | string[] | undefined>) => void;

const RETRYABLE_STATUS = new Set([421, 502, 503, 504]);

interface Endpoint {
  url: string;
  basePath: string;
  pool: Pool;
}

export class ProxyClient {
  private readonly endpoints: Endpoint[];
  private readonly logger: Logger;
  private readonly attemptTimeoutMs: number;
  private readonly unreachableRetryMs: number;
  private readonly readHeaders: Record<string, string>;
  private readonly identity: (() => string | undefined) | undefined;
  private readonly metrics: MountMetrics | null;
  /** The index of the proxy that answered last: calls start there. */
  private preferred = 0;
  /** Set when a call gave up because no proxy gave a usable answer (none reachable, or
   * all overloaded or cut off from the cluster until the deadline); cleared by the next
   * answer that is not one of those. */
  private degraded = false;

  constructor(opts: ProxyClientOptions) {
    if (opts.urls.length === 0) throw new Error('at least one proxy URL is needed');
    this.logger = opts.logger;
    this.metrics = opts.metrics ?? null;
    // Reads act as root: the kernel of this machine checked the caller's permissions before
    // the call reached the mount (default_permissions), as an NFS server trusts a client
    // host; a read that names no one is nobody's (common/identity.ts). Issue 13, item 2
    // makes this a claim the mount's credential must allow.
    // A read made outside any caller's call names no one: the proxy reads it as the mount's
    // credential allows (root for a host credential, as the kernel checked the caller).
    this.readHeaders = opts.readNode !== undefined ? { [HEADER_READ_NODE]: opts.readNode } : {};
    this.identity = opts.identity;
    this.attemptTimeoutMs = opts.attemptTimeoutMs ?? 5_000;
    this.unreachableRetryMs = opts.unreachableRetryMs ?? 3_000;
    const connectTimeoutMs = opts.connectTimeoutMs ?? 2_000;
    this.endpoints = opts.urls.map((raw) => {
      let u: URL;
      try {
        u = new URL(raw);
      } catch {
        throw new Error(`proxy URL ${JSON.stringify(raw)} is not a URL`);
      }
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`proxy URL ${raw} must be http: or https:`);
      return {
        url: u.origin,
        basePath: u.pathname.replace(/\/+$/, ''),
        pool: new Pool(u.origin, {
          connections: CONNECTIONS_PER_PROXY,
          pipelining: 1,
          keepAliveTimeout: 30_000,
          connect: { timeout: connectTimeoutMs, ...(opts.tls ? clientConnectOptions(opts.tls, ['proxy']) : {}) },
        }),
      };
    });
  }

  get urls(): string[] {
    return this.endpoints.map((e) => e.url + e.basePath);
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.endpoints.map((e) => e.pool.destroy()));
  }

  // ---- The client API ------------------------------------------------------------

  /** Sends one mutation and returns its committed result. A result with an errno (the op
   * was applied and failed the same way everywhere) is thrown as that FS_ERROR. */
  /** `caller`: whom the op acts as, when the kernel said (common/identity.ts). */
  async op(op: Op, data: Buffer | undefined, deadline: Deadline, caller?: Caller): Promise<OpResult> {
    const reqId = randomUUID();
    const header = caller ? { reqId, op, caller } : { reqId, op };
    // A large write's data goes as a piece of its own, not copied into one buffer with the
    // header (common/frame.ts: FRAME_PIECES_BYTES_MIN).
    const body = data && data.length >= FRAME_PIECES_BYTES_MIN ? encodeFrameParts(header, data) : encodeFrame(header, data);
    const raw = await this.request('POST', 'ops', '', body, deadline, `${op.type}`, undefined, this.identity?.());
    const result = parseJSON(raw) as OpResult;
    if (typeof result !== 'object' || result === null || typeof result.seq !== 'number') {
      throw new DfsError('INTERNAL', 'malformed op result');
    }
    if (result.errno) throw fsError(result.errno, `${op.type}: ${result.errno}`);
    return result;
  }

  /** With `ino`, the attributes of that inode wherever it is now (an open file: `path` is
   * only where the node looks first). */
  async attr(path: string, deadline: Deadline, ino?: number): Promise<Attr> {
    const byIno = ino !== undefined && ino > 0 ? `&ino=${ino}` : '';
    const attr = parseJSON(await this.request('GET', 'attr', `?path=${encodeQueryValue(path)}${byIno}`, null, deadline, 'attr')) as Attr;
    checkAttr(attr);
    return attr;
  }

  /** attr with a cache lease asked for under `identity`: the attributes, or null when there
   * is no such entry (ENOENT), and the lease the answer came with, if any. */
  async attrLeased(path: string, deadline: Deadline, identity: string): Promise<{ attr: Attr | null; grant: LeaseGrant | null }> {
    const seen = leaseSeen();
    try {
      const raw = await this.request('GET', 'attr', `?path=${encodeQueryValue(path)}&lease=${identity}`, null, deadline, 'attr', seen.onHeaders);
      const attr = parseJSON(raw) as Attr;
      checkAttr(attr);
      return { attr, grant: seen.grant() };
    } catch (err) {
      if (err instanceof DfsError && err.errno === 'ENOENT') return { attr: null, grant: seen.grant() };
      throw err;
    }
  }

  /** dir with a cache lease on the directory asked for under `identity`. */
  async dirLeased(path: string, deadline: Deadline, identity: string): Promise<{ entries: DirEntry[]; grant: LeaseGrant | null }> {
    const seen = leaseSeen();
    const entries = await this.dirAt(`?path=${encodeQueryValue(path)}&lease=${identity}`, deadline, seen.onHeaders);
    return { entries, grant: seen.grant() };
  }

  /** One lease poll (mount/leases.ts): held by the primary until it has news, or a while. */
  /** `ackSession`: the session the acks are of (storage/leases.ts, LeaseTable.poll). */
  async pollLeases(identity: string, acks: number[], deadline: Deadline, ackSession?: string): Promise<PollResult> {
    const q = acks.length > 0 ? `mount=${identity}&ack=${acks.join(',')}${ackSession ? `&session=${encodeQueryValue(ackSession)}` : ''}` : `mount=${identity}`;
    const r = parseJSON(await this.request('GET', 'leases', `?${q}`, null, deadline, 'leases')) as PollResult;
    if (!r || (r.session !== null && typeof r.session !== 'string') || !Array.isArray(r.revoked) || !r.revoked.every((id) => Number.isSafeInteger(id))) {
      throw new DfsError('INTERNAL', 'malformed lease poll answer');
    }
    return r;
  }

  async dir(path: string, deadline: Deadline): Promise<DirEntry[]> {
    return this.dirAt(`?path=${encodeQueryValue(path)}`, deadline);
  }

  private async dirAt(query: string, deadline: Deadline, onHeaders?: HeadersSeen): Promise<DirEntry[]> {
    const listing = parseJSON(await this.request('GET', 'dir', query, null, deadline, 'dir', onHeaders)) as {
      entries?: DirEntry[];
    };
    if (!listing || !Array.isArray(listing.entries)) throw new DfsError('INTERNAL', 'malformed directory listing');
    for (const e of listing.entries) checkAttr(e.attr);
    return listing.entries;
  }

  /** With `ino`, reads that inode wherever it is now (attr says more). */
  async data(path: string, offset: number, size: number, deadline: Deadline, ino?: number): Promise<Buffer> {
    if (size > READ_BYTES_MAX) throw new Error(`read of ${size} bytes is over READ_BYTES_MAX`);
    const q = `path=${encodeQueryValue(path)}${ino !== undefined && ino > 0 ? `&ino=${ino}` : ''}&offset=${offset}&size=${size}`;
    const data = await this.request('GET', 'data', `?${q}`, null, deadline, 'data');
    if (data.length > size) throw new DfsError('INTERNAL', `read returned ${data.length} bytes for ${size} asked`);
    return data;
  }

  async link(path: string, deadline: Deadline): Promise<string> {
    const r = parseJSON(await this.request('GET', 'link', `?path=${encodeQueryValue(path)}`, null, deadline, 'link')) as {
      target?: unknown;
    };
    if (!r || typeof r.target !== 'string') throw new DfsError('INTERNAL', 'malformed link answer');
    return r.target;
  }

  /** One user.* attribute's value (FS_ERROR ENODATA when absent). */
  async xattr(path: string, name: string, deadline: Deadline): Promise<Buffer> {
    const q = `path=${encodeQueryValue(path)}&name=${encodeURIComponent(name)}`;
    return this.request('GET', 'xattr', `?${q}`, null, deadline, 'xattr');
  }

  async xattrs(path: string, deadline: Deadline): Promise<string[]> {
    const r = parseJSON(await this.request('GET', 'xattrs', `?path=${encodeQueryValue(path)}`, null, deadline, 'xattrs')) as { names?: unknown };
    if (!r || !Array.isArray(r.names) || !r.names.every((n) => typeof n === 'string')) throw new DfsError('INTERNAL', 'malformed attribute list');
    return r.names as string[];
  }

  /** A lock request or session call (proxy/locks.ts): the JSON answer. Lock requests are
   * idempotent (a set is a set), so the usual retries are safe. */
  async locks(api: 'locks' | 'locks/session', body: Record<string, unknown>, deadline: Deadline): Promise<unknown> {
    return parseJSON(await this.request('POST', api, '', Buffer.from(JSON.stringify(body)), deadline, api));
  }

  async statfs(deadline: Deadline): Promise<StatFs> {
    return parseJSON(await this.request('GET', 'statfs', '', null, deadline, 'statfs')) as StatFs;
  }

  // ---- Failover ------------------------------------------------------------------

  /** Sends `method /v1/<api><query>` (query empty or starting with '?'; the lease poll is
   * `/v1/leases/poll`). */
  private async request(
    method: 'GET' | 'POST',
    api: ClusterApi,
    query: string,
    body: RequestBody,
    deadline: Deadline,
    what: string,
    onHeaders?: HeadersSeen,
    mount?: string,
  ): Promise<Buffer> {
    const pathAndQuery = api === 'leases' ? `/v1/leases/poll${query}` : `/v1/${api}${query}`;
    const n = this.endpoints.length;
    const start = this.preferred;
    // A client that found the cluster unusable tries each proxy once, without backing off.
    const quick = this.degraded;
    let lastErr: unknown = null;
    let attempts = 0;
    // Time of the first transport failure in the current streak (no HTTP answer since).
    let unreachableSinceMs: number | null = null;
    // One attempt of the retry loop is a round over every proxy, preferred first.
    const round = async (): Promise<AttemptResult<Buffer>> => {
      for (let i = 0; i < n; i++) {
        const index = (start + i) % n;
        const endpoint = this.endpoints[index]!;
        const attemptMs = Math.min(deadline.remainingMs(), this.attemptTimeoutMs);
        if (attemptMs <= 0 || attempts >= ATTEMPTS_MAX) throw this.giveUp(what, lastErr);
        attempts++;
        this.metrics?.clusterRequests.inc({ api });
        // Why the attempt before this one of the same request failed (none: the first).
        if (attempts > 1) this.metrics?.proxyRetries.inc({ reason: lastErr instanceof DfsError ? 'retryable' : 'unreachable' });
        let answer: { status: number; body: Buffer; headers: Record<string, string | string[] | undefined> };
        try {
          answer = await this.attempt(endpoint, method, pathAndQuery, body, attemptMs, deadline, mount);
        } catch (err) {
          if (deadline.expired()) throw this.giveUp(what, err);
          if (err instanceof DfsError) throw err; // our own verdict on the answer (TOO_LARGE)
          lastErr = err;
          unreachableSinceMs ??= Date.now();
          this.logger.debug({ proxy: endpoint.url, what, err: errText(err) }, 'proxy unreachable');
          continue;
        }
        unreachableSinceMs = null;
        if (answer.status >= 200 && answer.status < 300) {
          this.preferred = index;
          this.setDegraded(false);
          onHeaders?.(answer.headers);
          return { done: true, value: answer.body };
        }
        const err = errorFromBody(answer.status, parseJSONOrNull(answer.body));
        if (!RETRYABLE_STATUS.has(answer.status)) {
          this.setDegraded(false); // the cluster answered, if only to say no
          onHeaders?.(answer.headers);
          throw err;
        }
        lastErr = err;
        this.logger.debug({ proxy: endpoint.url, what, status: answer.status, code: err.code }, 'proxy answered retryable error');
      }
      // A full round failed. Give up early when nothing answered for a while, and at once
      // when an earlier call already found the cluster unusable.
      if (quick) throw this.giveUp(what, lastErr);
      if (unreachableSinceMs !== null && Date.now() - unreachableSinceMs >= this.unreachableRetryMs) {
        throw this.giveUp(what, lastErr, `no proxy reachable (${errText(lastErr)})`);
      }
      return { done: false, error: lastErr };
    };
    // Time as the deadline counts it: the remaining ms, negated, run up to 0 at the deadline.
    const outcome = await retry(round, { policy: ROUND_RETRY_POLICY, deadlineAtMs: 0, clock: () => -deadline.remainingMs() });
    if (outcome.ok) return outcome.value;
    throw this.giveUp(what, lastErr);
  }

  /** The error a call ends with when no proxy gave a usable answer: the cluster is
   * unusable for now, so the calls that follow fail fast until one succeeds. */
  private giveUp(what: string, lastErr: unknown, message?: string): DfsError {
    this.setDegraded(true);
    if (message) return new DfsError('UNAVAILABLE', message);
    if (lastErr instanceof DfsError && lastErr.code !== 'TIMEOUT') return lastErr;
    return new DfsError('TIMEOUT', `${what}: no answer before the deadline (${errText(lastErr)})`);
  }

  private setDegraded(degraded: boolean): void {
    if (degraded === this.degraded) return;
    this.degraded = degraded;
    if (degraded) this.logger.warn({ proxies: this.urls }, 'cluster unusable: calls fail fast until a proxy answers');
    else this.logger.info({ proxies: this.urls }, 'cluster usable again');
  }

  private bodyHeaders(body: Buffer | Buffer[], mount: string | undefined): Record<string, string> {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream' };
    // Pieces have no length undici can see: declared, they go without chunked encoding.
    if (Array.isArray(body)) headers['content-length'] = String(body.reduce((n, b) => n + b.length, 0));
    if (mount) headers[HEADER_MOUNT] = mount;
    return headers;
  }

  private async attempt(
    endpoint: Endpoint,
    method: 'GET' | 'POST',
    pathAndQuery: string,
    body: RequestBody,
    attemptMs: number,
    deadline: Deadline,
    mount?: string,
  ): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> {
    const res = await endpoint.pool.request({
      method,
      path: endpoint.basePath + pathAndQuery,
      // undici sends an iterable body piece by piece (its documentation lists Iterable
      // bodies; its type definitions do not).
      body: body as Buffer | null,
      headers: withCaller(body ? this.bodyHeaders(body, mount) : this.readHeaders, deadline.caller),
      headersTimeout: attemptMs,
      bodyTimeout: attemptMs,
      signal: deadline.signal,
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > RESPONSE_BYTES_MAX) {
        res.body.destroy();
        throw new DfsError('TOO_LARGE', `response over ${RESPONSE_BYTES_MAX} bytes`);
      }
      chunks.push(chunk);
    }
    return { status: res.statusCode, body: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), headers: res.headers };
  }
}

/** Catches the lease header of a read's final answer; the lease counts from when the read
 * was first sent (mount/leases.ts). */
function leaseSeen(): { onHeaders: HeadersSeen; grant: () => LeaseGrant | null } {
  const sentAtMs = performance.now();
  let grant: LeaseGrant | null = null;
  return {
    onHeaders: (h) => {
      const v = h[HEADER_LEASE];
      const parsed = parseLeaseHeader(typeof v === 'string' ? v : undefined);
      grant = parsed ? { ...parsed, sentAtMs } : null;
    },
    grant: () => grant,
  };
}

function parseJSON(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    throw new DfsError('INTERNAL', 'proxy answer is not JSON');
  }
}

function parseJSONOrNull(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return null;
  }
}

function checkAttr(attr: Attr): void {
  if (!attr || typeof attr.mode !== 'number' || typeof attr.size !== 'number' || typeof attr.ino !== 'number') {
    throw new DfsError('INTERNAL', 'malformed attributes');
  }
}

function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** `headers` with the caller's identity added (a new object: readHeaders is shared). */
function withCaller(headers: Record<string, string>, caller: Deadline['caller']): Record<string, string> {
  if (!caller) return headers;
  return { ...headers, [HEADER_UID]: String(caller.uid), [HEADER_GID]: String(caller.gid), [HEADER_GROUPS]: caller.groups.join(',') };
}
