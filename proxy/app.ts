/*
 * The proxy's client API (docs/api.md): sequencing of mutations and barrier reads.
 *
 * A mutation is validated before it takes a sequence ID (bad input never burns a slot),
 * stamped with the proxy's time, and sent to the primary; the answer comes after commit.
 * If the primary refuses the slot (SLOT_TAKEN: a hole it already filled) the op takes a
 * new ID; if the primary or epoch changed, the same ID is retried after a membership
 * refresh; the client's request ID makes every retry exactly-once.
 *
 * A read first takes its barrier, the newest sequence ID taken anywhere (`GET dfs:seq`),
 * and goes to the least-loaded in-sync node, which answers once it applied that far. A
 * node that cannot says so, and the read moves on to the next node.
 *
 * Every request is counted by route and status (proxy/metrics.ts) and the counts are served
 * at GET /metrics, from a registry of this app's own.
 */
import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Hono, type Context } from 'hono';
import type { Dispatcher } from 'undici';
import { HEADER_READ_NODE, HEADER_SERVED_BY, type Membership, type OpResult, type StatFs } from '../common/api';
import { DfsError, errorFromBody } from '../common/errors';
import { decodeOneFrame, encodeFrameParts } from '../common/frame';
import { installErrorHandler, octets, queryInt, queryPath, readBody, QUERY_IN_BODY_TYPE, QUERY_URL_BYTES_MAX } from '../common/http';
import { OP_BODY_BYTES_MAX, READ_BYTES_MAX } from '../common/limits';
import type { Logger } from '../common/log';
import { parseClientOpHeader, validateOp, validateXattrName, xattrNamespaceOf, type SequencedOpHeader } from '../common/ops';
import { buildQuery } from '../common/names';
import { retry, type RetryPolicy } from '../common/retry';
import { HEADER_LEASE, HEADER_MOUNT, LEASE_POLL_HOLD_MS } from '../common/leases';
import { ProxyMetrics } from './metrics';
import { READ_HEDGE_MS, type NodePool } from './node-pool';
import type { Sequencer } from './sequencer';
import { verifyCluster } from './verify';

export interface ProxyAppDeps {
  sequencer: Sequencer;
  nodes: NodePool;
  logger: Logger;
  /** The membership as last seen; `refresh` asks Redis again. */
  membership: () => Membership | null;
  refreshMembership: () => Promise<Membership | null>;
  clusterStatus: () => Promise<unknown>;
  ready: () => Promise<boolean>;
  /** How long one mutation may take across all its retries. */
  mutationDeadlineMs: number;
  clock?: () => number;
}

/** A mutation's retries: at most 8 attempts within its deadline, doubling waits from 100 ms
 * to 1 s (each shortened by up to half at random, so that proxies that failed together do
 * not retry together), none that would reach the deadline. */
const MUTATION_RETRY_POLICY: RetryPolicy = {
  attemptsMax: 8,
  backoffMsMin: 100,
  backoffMsMax: 1_000,
  backoffFactor: 2,
  jitter: 0.5,
  waitPastDeadline: 'stop',
};

async function jsonOf(res: Dispatcher.ResponseData): Promise<unknown> {
  return res.body.json().catch(() => null);
}

/** The capacity of a fully replicated cluster: each figure at its smallest across nodes,
 * in the block size of the first answer. */
export function smallestStatFs(all: StatFs[]): StatFs {
  const bsize = all[0]!.bsize;
  const blocks = (s: StatFs, n: number) => Math.floor((n * s.bsize) / bsize);
  const min = (f: (s: StatFs) => number) => Math.min(...all.map(f));
  return {
    bsize,
    blocks: min((s) => blocks(s, s.blocks)),
    bfree: min((s) => blocks(s, s.bfree)),
    bavail: min((s) => blocks(s, s.bavail)),
    files: min((s) => s.files),
    ffree: min((s) => s.ffree),
    namemax: min((s) => s.namemax),
  };
}

/** What @hono/node-server takes as "the handler wrote the answer itself" (its
 * RESPONSE_ALREADY_SENT, which this project's module resolution cannot import by name). */
const ALREADY_SENT_HEADER = 'x-hono-already-sent';

/**
 * A node's 200 answer of raw bytes (file data), passed on to the client as it arrives: its
 * pieces go from the node's HTTP/2 stream to the client's socket without being gathered
 * into one buffer first. A read-ahead window is 1 MiB, and gathering cost a copy and, worse,
 * 1 MiB more outside V8's heap per MiB read, which is what brings on full collections
 * (common/node-runtime.ts). Only an answer of declared length is streamed, so a node that
 * fails half way leaves the client a body shorter than its content-length, which its HTTP
 * client reports as an error (the mount then retries), never as a short file.
 */
async function passBytes(c: Context, res: Dispatcher.ResponseData, headers: Record<string, string>): Promise<Response> {
  const outgoing = (c.env as { outgoing?: ServerResponse } | undefined)?.outgoing;
  const length = res.headers['content-length'];
  if (!outgoing || typeof length !== 'string' || !/^\d+$/.test(length)) {
    for (const [name, value] of Object.entries(headers)) c.header(name, value);
    return octets(c, Buffer.from(await res.body.arrayBuffer()));
  }
  outgoing.writeHead(200, { ...headers, 'content-type': 'application/octet-stream', 'content-length': length });
  try {
    await pipeline(res.body, outgoing);
  } catch {
    // The client sees its answer cut short (above); the socket is not reused.
    outgoing.destroy();
  }
  return new Response(null, { headers: { [ALREADY_SENT_HEADER]: 'true' } });
}

/** A mount ID from a header or query (the lease protocol's), or null when absent or not
 * one. */
function mountIdOf(raw: string | undefined): string | null {
  return raw !== undefined && /^[A-Za-z0-9-]{1,64}$/.test(raw) ? raw : null;
}

export function createProxyApp(deps: ProxyAppDeps): Hono {
  const { sequencer, nodes, logger } = deps;
  const clock = deps.clock ?? Date.now;
  const app = new Hono();
  installErrorHandler(app, logger);
  const metrics = new ProxyMetrics();
  // First, so that it wraps every route below.
  app.use(metrics.middleware());
  /** The newest sequence ID this proxy knows committed, for reads while Redis is away. */
  let knownSeq = 0;

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));
  app.get('/readyz', async (c) => ((await deps.ready()) ? c.json({ ready: true }) : c.json({ ready: false }, 503)));
  app.get('/v1/cluster', async (c) => c.json(await deps.clusterStatus()));
  app.post('/v1/verify', async (c) => {
    const m = await deps.refreshMembership();
    if (!m) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    return c.json(await verifyCluster(sequencer, m, nodes));
  });

  app.post('/v1/ops', async (c) => {
    const frame = decodeOneFrame(await readBody(c, OP_BODY_BYTES_MAX));
    const { reqId, op } = parseClientOpHeader(frame.header);
    validateOp(op, frame.data.length);
    // Which mount made the change: the primary leaves that mount's own cache leases alone.
    const mountHeader = mountIdOf(c.req.header(HEADER_MOUNT));
    const deadline = clock() + deps.mutationDeadlineMs;
    let seq: number | null = null;
    let lastError: DfsError = new DfsError('UNAVAILABLE', 'no primary');
    // Something unreachable earns a wait; a moved epoch or a taken slot is retried at once.
    const outcome = await retry<OpResult>(async (attempt) => {
      const m = attempt === 0 ? deps.membership() ?? (await deps.refreshMembership()) : await deps.refreshMembership().catch(() => deps.membership());
      const primaryUrl = m ? m.nodes[m.primary] : undefined;
      if (!m || !primaryUrl) {
        lastError = new DfsError('UNAVAILABLE', 'the cluster has no primary');
        return { done: false };
      }
      if (seq === null) seq = await sequencer.next();
      const header: SequencedOpHeader = { epoch: m.epoch, seq, reqId, timeMs: clock(), op };
      let res: Dispatcher.ResponseData;
      try {
        // The op's data goes on as a piece of its own, not copied in with the new header.
        const parts = encodeFrameParts(header, frame.data);
        const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'content-length': String(parts[0].length + parts[1].length) };
        if (mountHeader) headers[HEADER_MOUNT] = mountHeader;
        res = await nodes.request(m.primary, primaryUrl, {
          method: 'POST',
          path: '/node/v1/ops',
          headers,
          // undici sends an iterable body piece by piece (documented; not in its types).
          body: parts as unknown as Buffer,
          signal: AbortSignal.timeout(Math.max(1, deadline - clock())),
        });
      } catch (e) {
        // Ambiguous: the primary may hold the op. Retrying the same slot is safe either way.
        lastError = new DfsError('UNAVAILABLE', `primary ${m.primary}: ${(e as Error).message}`);
        return { done: false };
      }
      const body = await jsonOf(res);
      if (res.statusCode === 200 && (body === null || typeof (body as OpResult).seq !== 'number')) {
        // The primary died while it answered: the op may hold its slot. Ask again.
        lastError = new DfsError('UNAVAILABLE', `primary ${m.primary}: the answer was cut short`);
        return { done: false };
      }
      if (res.statusCode === 200) return { done: true, value: body as OpResult };
      const err = errorFromBody(res.statusCode, body);
      lastError = err;
      if (err.code !== 'SLOT_TAKEN' && err.code !== 'NOT_PRIMARY' && err.code !== 'STALE_EPOCH' && err.code !== 'UNAVAILABLE') {
        throw err; // the node's own 4xx: bad input it caught
      }
      if (err.code === 'SLOT_TAKEN') seq = null;
      logger.debug({ reqId, code: err.code, attempt }, 'mutation retried');
      return { done: false, backoff: err.code === 'UNAVAILABLE' };
    }, { policy: MUTATION_RETRY_POLICY, deadlineAtMs: deadline, clock });
    if (outcome.ok) {
      knownSeq = Math.max(knownSeq, outcome.value.seq);
      return c.json(outcome.value);
    }
    throw new DfsError(lastError.code === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'TIMEOUT', `mutation not committed: ${lastError.message}`);
  });

  /** Sends a read with its barrier to in-sync nodes, least loaded first, until one answers. */
  const read = async (c: Context, endpoint: string, query: Record<string, string>, raw: boolean, leasable = false) => {
    let barrier: number;
    try {
      barrier = await sequencer.current();
      knownSeq = Math.max(knownSeq, barrier);
    } catch {
      barrier = knownSeq; // Redis is away: still every write this proxy saw acknowledged
    }
    let m = deps.membership() ?? (await deps.refreshMembership());
    if (!m) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    const qs = buildQuery({ ...query, barrier: String(barrier) });
    let lastError: DfsError = new DfsError('UNAVAILABLE', 'no in-sync node');
    // A client may pin its reads to one node (tests compare nodes this way; an operator
    // may read from a chosen replica). It must be in sync; there is no fallback.
    const pinned = c.req.header(HEADER_READ_NODE);
    // The node may have joined since this proxy last looked: look again before refusing.
    if (pinned !== undefined && !m.inSync.includes(pinned)) m = (await deps.refreshMembership().catch(() => null)) ?? m;
    if (pinned !== undefined && !m.inSync.includes(pinned)) {
      throw new DfsError('UNAVAILABLE', `node ${JSON.stringify(pinned)} is not an in-sync node`);
    }
    // A read that asks for a cache lease goes to the primary, the only node that grants
    // them (storage/leases.ts); should the primary not answer, another node answers it
    // without one.
    const leaseFor = leasable ? mountIdOf(c.req.query('lease')) : null;
    let candidates = pinned !== undefined ? [pinned] : nodes.rank(m.inSync);
    if (leaseFor && pinned === undefined && m.inSync.includes(m.primary)) candidates = [m.primary, ...candidates.filter((id) => id !== m!.primary)];
    for (const [i, id] of candidates.entries()) {
      let res: Dispatcher.ResponseData;
      const withLease = leaseFor !== null && id === m.primary;
      try {
        // Every node but the last gets READ_HEDGE_MS to answer before the next is tried.
        const hedgeMs = i < candidates.length - 1 ? READ_HEDGE_MS : null;
        const query = withLease ? `${qs}&${buildQuery({ lease: leaseFor })}` : qs;
        // A query too long for an HTTP/2 header field (a deep path) goes as the body.
        const request: Dispatcher.RequestOptions =
          query.length <= QUERY_URL_BYTES_MAX
            ? { method: 'GET', path: `/node/v1/${endpoint}?${query}` }
            : { method: 'POST', path: `/node/v1/${endpoint}`, body: query, headers: { 'content-type': QUERY_IN_BODY_TYPE } };
        res = await nodes.read(id, m.nodes[id]!, request, hedgeMs);
      } catch (e) {
        lastError = new DfsError('UNAVAILABLE', `node ${id}: ${(e as Error).message}`);
        continue;
      }
      const granted = withLease ? res.headers[HEADER_LEASE] : undefined;
      if (typeof granted === 'string') c.header(HEADER_LEASE, granted);
      if (res.statusCode === 200) {
        c.header(HEADER_SERVED_BY, id);
        if (raw) return passBytes(c, res, typeof granted === 'string' ? { [HEADER_SERVED_BY]: id, [HEADER_LEASE]: granted } : { [HEADER_SERVED_BY]: id });
        return c.json(await res.body.json());
      }
      const err = errorFromBody(res.statusCode, await jsonOf(res));
      if (err.code === 'BARRIER_TIMEOUT' || err.code === 'UNAVAILABLE' || err.code === 'INTERNAL') {
        lastError = err;
        if (typeof granted === 'string') c.header(HEADER_LEASE, undefined);
        continue;
      }
      throw err;
    }
    throw lastError;
  };

  app.get('/v1/attr', (c) => read(c, 'attr', { path: queryPath(c) }, false, true));
  app.get('/v1/dir', (c) => read(c, 'dir', { path: queryPath(c) }, false, true));
  app.get('/v1/link', (c) => read(c, 'link', { path: queryPath(c) }, false, true));

  // A mount's lease poll, passed to the primary (storage/leases.ts): held there up to
  // LEASE_POLL_HOLD_MS, so it is given that and a margin.
  app.get('/v1/leases/poll', async (c) => {
    const mount = mountIdOf(c.req.query('mount'));
    if (!mount) throw new DfsError('BAD_REQUEST', 'mount must be 1 to 64 letters, digits or -');
    const m = deps.membership() ?? (await deps.refreshMembership());
    const primaryUrl = m ? m.nodes[m.primary] : undefined;
    if (!m || !primaryUrl) throw new DfsError('UNAVAILABLE', 'the cluster has no primary');
    const ack = c.req.query('ack');
    let res: Dispatcher.ResponseData;
    try {
      res = await nodes.request(m.primary, primaryUrl, {
        method: 'GET',
        path: `/node/v1/leases/poll?${buildQuery(ack ? { mount, ack } : { mount })}`,
        signal: AbortSignal.timeout(LEASE_POLL_HOLD_MS + 2_000),
      });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `primary ${m.primary}: ${(e as Error).message}`);
    }
    const body = await jsonOf(res);
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, body);
    return c.json(body);
  });
  // Every in-sync node holds all the data, so the cluster holds as much as its fullest node.
  app.get('/v1/statfs', async (c) => {
    const m = deps.membership() ?? (await deps.refreshMembership());
    if (!m) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    const answers = await Promise.allSettled(
      m.inSync.map(async (id) => {
        const res = await nodes.request(id, m.nodes[id]!, { method: 'GET', path: '/node/v1/statfs' });
        if (res.statusCode !== 200) throw errorFromBody(res.statusCode, await jsonOf(res));
        return (await res.body.json()) as StatFs;
      }),
    );
    const all = answers.flatMap((a) => (a.status === 'fulfilled' ? [a.value] : []));
    if (all.length === 0) throw new DfsError('UNAVAILABLE', 'no in-sync node answered statfs');
    return c.json(smallestStatFs(all));
  });
  app.get('/v1/xattrs', (c) => read(c, 'xattrs', { path: queryPath(c) }, false));
  app.get('/v1/xattr', (c) => {
    const path = queryPath(c);
    const name = c.req.query('name') ?? '';
    // Other namespaces are never stored, so reading one finds nothing, as on a local
    // disk without, say, SELinux labels.
    if (xattrNamespaceOf(name) === null) throw new DfsError('FS_ERROR', 'no such attribute', 'ENODATA');
    validateXattrName(name);
    return read(c, 'xattr', { path, name }, true);
  });
  app.get('/v1/data', (c) =>
    read(
      c,
      'data',
      {
        path: queryPath(c),
        offset: String(queryInt(c, 'offset', 0, Number.MAX_SAFE_INTEGER)),
        size: String(queryInt(c, 'size', 0, READ_BYTES_MAX)),
      },
      true,
    ),
  );

  return app;
}
