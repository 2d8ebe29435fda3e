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
 *
 * Who may do what (docs/security.md): every route is for mount and admin certificates
 * (common/tls.ts, requireRoles; `verify`, which holds every node still, for admin only).
 * A request acts as the caller its x-dfs-uid/gid/groups headers name, held to the
 * credential in the certificate (common/credential.ts: root squashed, every id one the
 * credential lists, paths under its subtree); an op's owner and chown ids are held to it
 * too, and `trusted.*` attributes are for root alone. The identity goes on to the node in
 * the same headers, set by this proxy, never passed through as the client sent them.
 */
import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import { Hono, type Context } from 'hono';
import type { Dispatcher } from 'undici';
import { HEADER_READ_NODE, HEADER_SERVED_BY, type ManifestProgress, type Membership, type OpResult, type StatFs, type VerifyStreamLine } from '../common/api';
import { DfsError, errorFromBody } from '../common/errors';
import { decodeRelayFrame, encodeRelayedFrame } from '../common/frame';
import { answeredByHandler, installErrorHandler, octets, queryInt, queryPath, readBodyPieces, QUERY_IN_BODY_TYPE, QUERY_URL_BYTES_MAX, BodyBudget, installBodyBudget } from '../common/http';
import { OP_BODY_BYTES_MAX, READ_BYTES_MAX } from '../common/limits';
import { encodeOpMessage, OPS_STREAM_PATH, type StreamAnswer } from '../common/message-stream';
import type { Logger } from '../common/log';
import { parseClientOpHeader, validateOp, validateXattrName, xattrNamespaceOf, type SequencedOpHeader } from '../common/ops';
import { buildQuery } from '../common/names';
import { retry } from '../common/retry';
import { HEADER_LEASE, HEADER_MOUNT, LEASE_POLL_HOLD_MS } from '../common/leases';
import { ProxyMetrics } from './metrics';
import { MUTATION_RETRY_POLICY, mutationGiveUpCode, mutationVerdict } from './mutation-retry';
import { READ_HEDGE_MS, type NodePool } from './node-pool';
import type { Sequencer } from './sequencer';
import { verifyCluster } from './verify';
import { identityOf, requireRoles, type Role } from '../common/tls';
import { actAs, checkGid, checkUid, claimedIdentity, confinePath, identityHeaders, type CallerIdentity, type Credential } from '../common/credential';
import { fsError } from '../common/errors';
import type { Op } from '../common/ops';
import { installLockRoutes, type LockStore } from './locks';

export interface ProxyAppDeps {
  sequencer: Sequencer;
  nodes: NodePool;
  logger: Logger;
  /** Request body bytes held at once (common/http.ts); none: no cap beyond each body's. */
  bodyBudget?: BodyBudget;
  /** The membership as last seen; `refresh` asks Redis again. */
  membership: () => Membership | null;
  refreshMembership: () => Promise<Membership | null>;
  clusterStatus: () => Promise<unknown>;
  ready: () => Promise<boolean>;
  /** How long one mutation may take across all its retries. */
  mutationDeadlineMs: number;
  clock?: () => number;
  /** Check callers' certificates (false only under --insecure). */
  secure?: boolean;
  /** Whether a certificate serial number is revoked (proxy/revocations.ts). */
  revoked?: (serial: string | null) => boolean;
  /** The cluster's lock table (proxy/locks.ts, docs/locks.md); none: no lock routes. */
  locks?: LockStore;
  /** Where requests are counted (main.ts shares it with the admin port); none: the app's own. */
  metrics?: ProxyMetrics;
}

const CLIENTS: readonly Role[] = ['mount', 'admin'];
/** How often `POST /v1/verify?progress=1` passes the nodes' progress on, when it changed. */
const VERIFY_PROGRESS_MS = 500;
/** Routes for fewer roles than every client; the rest are CLIENTS'. */
export const PROXY_ROUTE_ROLES: Record<string, readonly Role[]> = {
  '/v1/verify': ['admin'],
};

/** The caller a request acts as (see the header). */
function callerOf(c: Context): { credential: Credential; caller: CallerIdentity } {
  const { credential } = identityOf(c);
  return { credential, caller: actAs(credential, claimedIdentity((name) => c.req.header(name), credential)) };
}

/**
 * An op as the credential allows it: paths under its subtree, owner ids squashed and
 * checked, `trusted.*` only for root. Throws EPERM (403) for what it does not allow; bad
 * shape was refused before (validateOp).
 */
export function confineOp(op: Op, credential: Credential, caller: CallerIdentity): Op {
  const o: Record<string, unknown> = { ...op };
  for (const key of ['path', 'from', 'to'] as const) {
    if (typeof o[key] === 'string') o[key] = confinePath(credential, o[key] as string);
  }
  // An inode may be anywhere in the tree, and the nodes do not know the credential's
  // subtree: a confined client's ops go by path alone.
  if (credential.subtree !== null) delete o.ino;
  switch (op.type) {
    case 'mkdir':
    case 'create':
    case 'symlink':
    case 'mknod':
      o.uid = checkUid(credential, op.uid, `owner of a new ${op.type === 'mkdir' ? 'directory' : 'entry'}`);
      o.gid = checkGid(credential, op.gid, `group of a new ${op.type === 'mkdir' ? 'directory' : 'entry'}`);
      break;
    case 'chown':
      o.uid = checkUid(credential, op.uid, 'chown owner');
      o.gid = checkGid(credential, op.gid, 'chown group');
      break;
    case 'setxattr':
    case 'removexattr':
      // Linux keeps trusted.* to CAP_SYS_ADMIN (xattr(7)).
      if (xattrNamespaceOf(op.name) === 'trusted.' && caller.uid !== 0) throw fsError('EPERM', 'trusted.* attributes are for root alone');
      break;
  }
  return o as Op;
}


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
  return answeredByHandler();
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
  const metrics = deps.metrics ?? new ProxyMetrics();
  // First, so that it wraps every route below.
  app.use(metrics.middleware());
  if (deps.bodyBudget) installBodyBudget(app, deps.bodyBudget);
  app.use(requireRoles(deps.secure ?? false, PROXY_ROUTE_ROLES, CLIENTS, deps.revoked));
  /** The newest sequence ID this proxy knows committed, for reads while Redis is away. */
  let knownSeq = 0;

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/metrics', async (c) => c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }));
  app.get('/readyz', async (c) => ((await deps.ready()) ? c.json({ ready: true }) : c.json({ ready: false }, 503)));
  app.get('/v1/cluster', async (c) => c.json(await deps.clusterStatus()));
  // `?progress=1`: NDJSON, the nodes' progress as it changes (at most every
  // VERIFY_PROGRESS_MS), then the report (common/api.ts VerifyStreamLine).
  app.post('/v1/verify', async (c) => {
    const m = await deps.refreshMembership();
    if (!m) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    if (c.req.query('progress') !== '1') return c.json(await verifyCluster(sequencer, m, nodes));
    const line = (value: VerifyStreamLine) => Buffer.from(JSON.stringify(value) + '\n');
    let closed = false;
    const stream = new ReadableStream<Uint8Array>({
      start(ctrl) {
        let latest: Record<string, ManifestProgress> | null = null;
        let at = 0;
        const send = (chunk: Uint8Array) => {
          if (!closed) ctrl.enqueue(chunk);
        };
        const flush = () => {
          if (latest !== null) send(line({ progress: { at, nodeCount: m.inSync.length, nodes: latest } }));
          latest = null;
        };
        const timer = setInterval(flush, VERIFY_PROGRESS_MS);
        verifyCluster(sequencer, m, nodes, (seq, p) => {
          at = seq;
          latest = p;
        })
          .then(
            (report) => {
              flush();
              send(line({ report }));
            },
            (err: unknown) => {
              const e = err instanceof DfsError ? err : new DfsError('INTERNAL', String(err));
              send(line({ error: { code: e.code, message: e.message } }));
            },
          )
          .finally(() => {
            clearInterval(timer);
            if (!closed) ctrl.close();
            closed = true;
          });
      },
      cancel() {
        closed = true;
      },
    });
    return c.body(stream, 200, { 'content-type': 'application/x-ndjson' });
  });

  app.post('/v1/ops', async (c) => {
    // The data's own CRC, found while checking the frame, makes the checksum of the frame
    // sent to the primary without a second pass over the data, and the data goes on in
    // the pieces it came in, never gathered into one buffer (common/frame.ts).
    const frame = decodeRelayFrame(await readBodyPieces(c, OP_BODY_BYTES_MAX));
    const parsed = parseClientOpHeader(frame.header);
    validateOp(parsed.op, frame.dataBytes);
    metrics.noteOp(c, parsed.op.type);
    const { reqId } = parsed;
    const { credential, caller: claimed } = callerOf(c);
    // Whom the op acts as at apply (storage/permissions.ts): the caller the op names (the
    // mount names one for what the kernel gives a caller), else the one the request's
    // headers name, checked against the credential either way. A host credential (any uid)
    // that names none is trusted as an NFS server trusts a client host: its kernel checked
    // the caller, and the op is applied as the cluster's own.
    const caller = parsed.caller ? actAs(credential, parsed.caller) : credential.uids === 'any' ? undefined : claimed;
    const op = confineOp(parsed.op, credential, caller ?? claimed);
    // Which mount made the change: the primary leaves that mount's own cache leases alone.
    const mountHeader = mountIdOf(c.req.header(HEADER_MOUNT));
    const deadline = clock() + deps.mutationDeadlineMs;
    let seq: number | null = null;
    // Made only when an attempt fails: an error's stack trace costs more than the rest of
    // an op's bookkeeping here.
    let lastError: DfsError | null = null;
    // Something unreachable earns a wait; a moved epoch or a taken slot is retried at once.
    const outcome = await retry<OpResult>(async (attempt) => {
      const m = attempt === 0 ? deps.membership() ?? (await deps.refreshMembership()) : await deps.refreshMembership().catch(() => deps.membership());
      const primaryUrl = m ? m.nodes[m.primary] : undefined;
      if (!m || !primaryUrl) {
        lastError = new DfsError('UNAVAILABLE', 'the cluster has no primary');
        return { done: false };
      }
      if (seq === null) {
        const endTimer = metrics.seqAssign.startTimer();
        seq = await sequencer.next();
        endTimer();
      }
      const header: SequencedOpHeader = caller ? { epoch: m.epoch, seq, reqId, timeMs: clock(), op, caller } : { epoch: m.epoch, seq, reqId, timeMs: clock(), op };
      let res: StreamAnswer;
      try {
        // Large data goes on in its pieces, not copied in with the new header; small data
        // is copied, so that the frame leaves in one write.
        res = await nodes.message(m.primary, primaryUrl, OPS_STREAM_PATH, encodeOpMessage(mountHeader, encodeRelayedFrame(header, frame)), Math.max(1, deadline - clock()));
      } catch (e) {
        // Ambiguous: the primary may hold the op. Retrying the same slot is safe either way.
        lastError = new DfsError('UNAVAILABLE', `primary ${m.primary}: ${(e as Error).message}`);
        return { done: false };
      }
      const body = res.body;
      if (res.status === 200 && (body === null || typeof (body as OpResult).seq !== 'number')) {
        // Not an answer to an op: ask again.
        lastError = new DfsError('UNAVAILABLE', `primary ${m.primary}: the answer was not an op's result`);
        return { done: false };
      }
      if (res.status === 200) return { done: true, value: body as OpResult };
      const err = errorFromBody(res.status, body);
      lastError = err;
      const verdict = mutationVerdict(err.code);
      if (!verdict.retry) throw err; // the node's own 4xx: bad input it caught, or NO_SPACE
      if (verdict.newSeq) seq = null;
      logger.debug({ reqId, code: err.code, attempt }, 'mutation retried');
      return { done: false, backoff: verdict.backoff };
    }, { policy: MUTATION_RETRY_POLICY, deadlineAtMs: deadline, clock });
    if (outcome.ok) {
      knownSeq = Math.max(knownSeq, outcome.value.seq);
      return c.json(outcome.value);
    }
    lastError ??= new DfsError('UNAVAILABLE', 'no primary');
    throw new DfsError(mutationGiveUpCode(lastError.code), `mutation not committed: ${lastError.message}`);
  });

  /** Sends a read with its barrier to in-sync nodes, least loaded first, until one answers. */
  const read = async (c: Context, endpoint: string, query: Record<string, string>, raw: boolean, leasable = false) => {
    const { credential, caller } = callerOf(c);
    if (query.path !== undefined) query = { ...query, path: confinePath(credential, query.path) };
    const callerHeaders = identityHeaders(caller);
    let barrier: number;
    try {
      barrier = await sequencer.current();
      knownSeq = Math.max(knownSeq, barrier);
    } catch (e) {
      // Redis is away (or cut off from this proxy only): the newest ID this proxy saw would
      // miss writes acknowledged through another proxy, and the read could be stale. The
      // mount tries another proxy instead (docs/cluster.md, Partitions).
      throw new DfsError('UNAVAILABLE', `no read barrier: ${(e as Error).message}`);
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
      // A member that is not in sync now may be later (503); a name that is no member's is bad input.
      if (m.nodes[pinned] === undefined) throw new DfsError('BAD_REQUEST', `${HEADER_READ_NODE}: ${JSON.stringify(pinned)} is not a node of this cluster`);
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
            ? { method: 'GET', path: `/node/v1/${endpoint}?${query}`, headers: callerHeaders }
            : { method: 'POST', path: `/node/v1/${endpoint}`, body: query, headers: { ...callerHeaders, 'content-type': QUERY_IN_BODY_TYPE } };
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

  /** A read on an open file may name its inode (`ino`): the node reads wherever it is now.
   * Not for a client confined to a subtree (confineOp says why). */
  const inoOf = (c: Context): { ino?: string } => {
    const ino = queryInt(c, 'ino', 0, Number.MAX_SAFE_INTEGER, 0);
    return ino === 0 || identityOf(c).credential.subtree !== null ? {} : { ino: String(ino) };
  };
  app.get('/v1/attr', (c) => read(c, 'attr', { path: queryPath(c), ...inoOf(c) }, false, true));
  app.get('/v1/dir', (c) => read(c, 'dir', { path: queryPath(c) }, false, true));
  app.get('/v1/link', (c) => read(c, 'link', { path: queryPath(c) }, false, true));
  if (deps.locks) installLockRoutes(app, deps.locks, (c) => identityOf(c).credential);

  // A mount's lease poll, passed to the primary (storage/leases.ts): held there up to
  // LEASE_POLL_HOLD_MS, so it is given that and a margin.
  app.get('/v1/leases/poll', async (c) => {
    const mount = mountIdOf(c.req.query('mount'));
    if (!mount) throw new DfsError('BAD_REQUEST', 'mount must be 1 to 64 letters, digits or -');
    const m = deps.membership() ?? (await deps.refreshMembership());
    const primaryUrl = m ? m.nodes[m.primary] : undefined;
    if (!m || !primaryUrl) throw new DfsError('UNAVAILABLE', 'the cluster has no primary');
    const ack = c.req.query('ack');
    const session = c.req.query('session');
    let res: Dispatcher.ResponseData;
    try {
      res = await nodes.request(m.primary, primaryUrl, {
        method: 'GET',
        path: `/node/v1/leases/poll?${buildQuery({ mount, ...(ack ? { ack } : {}), ...(session ? { session } : {}) })}`,
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
        ...inoOf(c),
        offset: String(queryInt(c, 'offset', 0, Number.MAX_SAFE_INTEGER)),
        size: String(queryInt(c, 'size', 0, READ_BYTES_MAX)),
      },
      true,
    ),
  );

  return app;
}
