/*
 * The storage node's HTTP API (docs/api.md, Node API), served over HTTP/2 with TLS.
 * A factory with its dependencies passed in (STYLE.md): storage/main.ts wires it.
 * Mutations arrive only from proxies (`/node/v1/ops`) and the primary (`/node/v1/replicate-stream`);
 * reads carry a barrier and are answered once this node applied up to it.
 *
 * Who may call what is the route table NODE_ROUTE_ROLES, checked against the role in the
 * caller's certificate before any handler runs (common/tls.ts, requireRoles): the client
 * API's ops and reads only from proxies; replication, full-sync notices and snapshots only
 * from peer nodes. A read's caller identity comes in the x-dfs-uid/gid/groups headers,
 * which the proxy set after checking them against the mount's credential
 * (common/credential.ts); only a proxy can send them here.
 */
import { Hono, type Context } from 'hono';
import { answeredByHandler, BodyBudget, http2Incoming, installBodyBudget, installErrorHandler, octets, queryInBody, queryInt, queryParam, queryPath, readBody } from '../common/http';
import { requireRoles, type Role } from '../common/tls';
import { decodeFrames, decodeOneFrame, encodeFrame } from '../common/frame';
import { DfsError } from '../common/errors';
import { parseSequencedOpHeader, validateOp } from '../common/ops';
import { HEADER_LEASE, HEADER_MOUNT, leaseConflictsOf, leaseKeyOf } from '../common/leases';
import { OP_BODY_BYTES_MAX, READ_BYTES_MAX } from '../common/limits';
import type { Logger } from '../common/log';
import type { ManifestEntry, ManifestProgress, Membership, OpResult, StatFs } from '../common/api';
import { callerFromHeaders, type Caller } from '../common/identity';
import { R_OK } from './permissions';
import type { Brick } from './brick';
import type { Replica } from './replica';
import type { LeaseGate } from './leases';
import { SNAPSHOT_DEDUP_FRAME_BYTES, type SnapshotControl } from './full-sync';
import { brickSnapshotFrames, brickSnapshotTotals } from './snapshot';
import { BATCH_PAYLOAD_BYTES_MAX, decodeBatch, REPLICATE_STREAM_PATH, type BatchMessage } from './replication-stream';
import { decodeOpMessage, OP_MESSAGE_BYTES_MAX, OPS_STREAM_PATH, serveMessageStream } from '../common/message-stream';
import type { ReplicateAck } from './replica-core';

/** How long a node may take to reach the sequence ID a verify holds it at. */
const MANIFEST_HOLD_TIMEOUT_MS = 10_000;
/** Manifest entries per piece of the streamed answer. */
const MANIFEST_ENTRIES_PER_CHUNK = 256;
/** How often a manifest walk asked for with progress reports how far it got. */
const MANIFEST_PROGRESS_MS = 250;
/** A snapshot's source holds its brick still at most this long (the log keeps growing
 * meanwhile, in memory too); a copy that takes longer is cut off and tried again. */
const SNAPSHOT_TIME_MAX_MS = 30 * 60_000;
/** A snapshot whose receiver takes no frame for this long is cut off and its hold released:
 * a caller that stops reading must not keep this node's apply still. */
export const SNAPSHOT_STALL_MS_DEFAULT = 30_000;
/** Frames a snapshot stream computes ahead of the receiver. */
const SNAPSHOT_FRAMES_AHEAD = 4;
/** While the source counts its brick (the totals of the begin frame), a `counting` frame
 * this often: well inside the receiver's idle limit (SNAPSHOT_IDLE_MS, 30 s). A receiver of
 * a build before them refuses one, so it can copy from this build only a brick counted in
 * less than this. */
export const SNAPSHOT_COUNTING_FRAME_MS_DEFAULT = 10_000;

export interface StorageAppDeps {
  replica: Replica;
  brick: Brick;
  logger: Logger;
  /** Asks Redis for the newest membership (a request from a newer epoch prompts it). */
  refreshMembership: () => Promise<void>;
  /** The primary says its log no longer holds what this node needs: start a full sync
   * (throws NO_SPACE while the node is out of space). */
  startFullSync: (reason: string) => void;
  /** Fault injection for tests (DFS_FAULT_HANG_REPLICATION_FILE): while it says so, batches
   * from the primary are held unanswered, as across a partition between the two nodes. */
  replicationHung?: () => boolean;
  /** Cache leases (storage/leases.ts); without it reads grant none. */
  leases?: LeaseGate;
  /** The space guard: statfs counts its floor as used (docs/space.md). */
  space?: { statfs(raw: StatFs): StatFs };
  /** The membership this node holds now: a snapshot is served only to a member that is
   * not in sync (a node copying a brick). */
  membership?: () => Membership | null;
  /** SNAPSHOT_STALL_MS_DEFAULT unless a test says otherwise. */
  snapshotStallMs?: number;
  /** SNAPSHOT_COUNTING_FRAME_MS_DEFAULT unless a test says otherwise. */
  snapshotCountingMs?: number;
  /** Request body bytes held at once (common/http.ts); none: no cap beyond each body's. */
  bodyBudget?: BodyBudget;
  /** Check callers' certificates (false only under --insecure). */
  secure?: boolean;
}

const PROXY: readonly Role[] = ['proxy'];
const PEER: readonly Role[] = ['node'];
/** Which certificate roles may call each route (docs/security.md). `state` is also asked
 * by proxies (probing a slow node) and by `dfs local` (readiness); `manifest` by the proxy
 * that runs a verify and by admin. */
export const NODE_ROUTE_ROLES: Record<string, readonly Role[]> = {
  '/healthz': ['node', 'proxy', 'admin'],
  '/node/v1/state': ['node', 'proxy', 'admin'],
  '/node/v1/ops': PROXY,
  [OPS_STREAM_PATH]: PROXY,
  '/node/v1/leases/poll': PROXY,
  '/node/v1/attr': PROXY,
  '/node/v1/dir': PROXY,
  '/node/v1/data': PROXY,
  '/node/v1/link': PROXY,
  '/node/v1/xattr': PROXY,
  '/node/v1/xattrs': PROXY,
  '/node/v1/statfs': PROXY,
  [REPLICATE_STREAM_PATH]: PEER,
  '/node/v1/sync-required': PEER,
  '/node/v1/snapshot': PEER,
  '/node/v1/manifest': ['node', 'proxy', 'admin'],
};

/** A mount's ID as it names its lease session. */
const MOUNT_ID = /^[A-Za-z0-9-]{1,64}$/;

/** The `ack` query of a lease poll: lease IDs, comma-separated. */
function parseAcks(raw: string | undefined): number[] {
  if (!raw) return [];
  const parts = raw.split(',');
  if (parts.length > 65_536) throw new DfsError('BAD_REQUEST', 'too many acks');
  return parts.map((p) => {
    if (!/^\d{1,15}$/.test(p)) throw new DfsError('BAD_REQUEST', 'ack must be lease IDs');
    return Number(p);
  });
}

/** How long a hung batch is held before it is refused (fault injection only). */
const HUNG_REPLICATION_MAX_MS = 30_000;

export function createStorageApp({ replica, brick, logger, refreshMembership, startFullSync, replicationHung, leases, space, bodyBudget, membership, snapshotStallMs = SNAPSHOT_STALL_MS_DEFAULT, snapshotCountingMs = SNAPSHOT_COUNTING_FRAME_MS_DEFAULT, secure = false }: StorageAppDeps): Hono {
  const app = new Hono();
  installErrorHandler(app, logger);
  // Before every route; a path not in the table is a 404 for any cluster certificate.
  app.use(requireRoles(secure, NODE_ROUTE_ROLES));
  if (bodyBudget) installBodyBudget(app, bodyBudget);

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/node/v1/state', (c) => c.json(replica.state()));

  // An op from a proxy: applied once committed; the mounts that cache what it touches hear
  // of it before anyone hears it is done.
  const submitOp = async (encoded: Buffer, mount: string | null): Promise<OpResult> => {
    const frame = decodeOneFrame(encoded);
    const header = parseSequencedOpHeader(frame.header);
    validateOp(header.op, frame.data.length);
    if (header.epoch > replica.epoch) await refreshMembership();
    const result = await replica.submit(header, frame.data, frame.encoded);
    // An op placed by inode conflicts with the leases of the directory the inode is in now.
    const applied = result.path !== undefined && 'path' in header.op ? { ...header.op, path: result.path } : header.op;
    if (leases && !result.errno) await leases.beforeAck(leaseConflictsOf(applied), mount);
    return result;
  };
  app.post('/node/v1/ops', async (c) => c.json(await submitOp(await readBody(c, OP_BODY_BYTES_MAX), c.req.header(HEADER_MOUNT) ?? null)));
  // The same, as messages on one stream from each proxy (common/message-stream.ts).
  app.post(OPS_STREAM_PATH, async (c) => {
    await serveMessageStream(http2Incoming(c), OP_MESSAGE_BYTES_MAX, (payload) => {
      const { mount, frame } = decodeOpMessage(payload);
      return submitOp(frame, mount);
    }, logger, bodyBudget);
    return answeredByHandler();
  });

  // A mount's lease poll (storage/leases.ts): renews its session, hears of revocations.
  app.get('/node/v1/leases/poll', async (c) => {
    const mount = c.req.query('mount') ?? '';
    if (!MOUNT_ID.test(mount)) throw new DfsError('BAD_REQUEST', 'mount must be 1 to 64 letters, digits or -');
    const acks = parseAcks(c.req.query('ack'));
    const ackSession = c.req.query('session');
    if (ackSession !== undefined && !MOUNT_ID.test(ackSession)) throw new DfsError('BAD_REQUEST', 'session must be 1 to 64 letters, digits or -');
    // Renewals count only from a primary sure of its role, as grants do. A mount answered
    // no session gives its leases up and asks under a new ID (mount/leases.ts).
    const table = leases?.grantable();
    if (!table) return c.json({ session: null, revoked: [] });
    return c.json(await table.poll(mount, acks, undefined, ackSession));
  });

  // Batches from the primary, as messages on one long-lived stream (storage/replication-stream.ts).
  const handleBatch = async (b: BatchMessage): Promise<ReplicateAck> => {
    if (replicationHung?.()) {
      const until = Date.now() + HUNG_REPLICATION_MAX_MS;
      while (replicationHung() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      throw new DfsError('UNAVAILABLE', 'replication is hung (fault injection)');
    }
    const batch = decodeFrames(b.frames).map((f) => {
      const header = parseSequencedOpHeader(f.header);
      validateOp(header.op, f.data.length);
      return { header, data: f.data, frame: f.encoded };
    });
    if (b.epoch > replica.epoch) await refreshMembership();
    return replica.replicate({ epoch: b.epoch, commitSeq: b.commitSeq, prefixSeq: b.prefixSeq, truncateAfter: b.truncateAfter, entries: batch });
  };
  app.post(REPLICATE_STREAM_PATH, async (c) => {
    await serveMessageStream(http2Incoming(c), BATCH_PAYLOAD_BYTES_MAX, (payload) => handleBatch(decodeBatch(payload)), logger, bodyBudget);
    return answeredByHandler();
  });

  // storage/full-sync.ts: the primary tells a peer behind its log to copy a brick.
  app.post('/node/v1/sync-required', async (c) => {
    const epoch = queryInt(c, 'epoch', 0, Number.MAX_SAFE_INTEGER);
    const seq = queryInt(c, 'seq', 0, Number.MAX_SAFE_INTEGER);
    if (epoch > replica.epoch) await refreshMembership();
    if (epoch !== replica.epoch) throw new DfsError('STALE_EPOCH', `epoch ${epoch}, this node's is ${replica.epoch}`);
    const role = replica.state().role;
    if (role === 'primary') throw new DfsError('NOT_PRIMARY', 'the primary does not copy its brick from a peer');
    startFullSync(`the primary's log no longer holds seq ${seq}`);
    return c.json({ syncing: true });
  });

  // storage/full-sync.ts: this brick, held still where it stands, as a stream of frames.
  app.get('/node/v1/snapshot', async (c) => {
    const epoch = queryInt(c, 'epoch', 0, Number.MAX_SAFE_INTEGER);
    if (epoch !== replica.epoch) throw new DfsError('STALE_EPOCH', `epoch ${epoch}, this node's is ${replica.epoch}`);
    // Only for a node that is copying a brick: a member of this membership outside the
    // in-sync set. And never holding the primary's apply while a backup could serve it
    // (storage/full-sync.ts asks a backup first); a primary alone in sync has to.
    const requester = queryParam(c, 'node') ?? '';
    const m = membership?.() ?? null;
    if (!m || m.epoch !== epoch) throw new DfsError('STALE_EPOCH', `${replica.id} holds no membership of epoch ${epoch}`);
    if (requester === replica.id || m.nodes[requester] === undefined || m.inSync.includes(requester)) {
      throw new DfsError('BAD_REQUEST', `a snapshot is only for a member that is not in sync, not ${JSON.stringify(requester)}`);
    }
    const { role } = replica.state();
    if (replica.syncing || (role !== 'primary' && role !== 'backup')) throw new DfsError('UNAVAILABLE', `${replica.id} is not in sync`);
    if (role === 'primary' && m.inSync.some((id) => id !== replica.id)) throw new DfsError('UNAVAILABLE', `${replica.id} is the primary: copy a backup's brick`);
    const seq = await replica.holdHere(MANIFEST_HOLD_TIMEOUT_MS);
    let released = false;
    let lastPullMs = Date.now();
    // A pull under way is this side's work (counting, reading a chunk): not the receiver's stall.
    let producing = false;
    let cutOff: ((err: Error) => void) | null = null;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(deadline);
      clearInterval(stallCheck);
      replica.release();
    };
    const deadline = setTimeout(release, SNAPSHOT_TIME_MAX_MS);
    // The receiver pulls frames as it takes them; one that stops for snapshotStallMs loses
    // the stream, and apply goes on here.
    const stallCheck = setInterval(() => {
      if (producing || Date.now() - lastPullMs < snapshotStallMs) return;
      logger.warn({ stallMs: snapshotStallMs, requester }, 'snapshot: the receiver took nothing for too long; cut off');
      release();
      cutOff?.(new Error('the receiver stalled'));
    }, Math.max(10, Math.min(1000, snapshotStallMs / 4)));
    const dedup = replica.dedupEntries();
    const frames = (async function* (): AsyncGenerator<Buffer> {
      const control = (h: SnapshotControl) => encodeFrame(h);
      // The totals first, so that the receiver (and `dfs status`) can say how far it got;
      // a count that takes long sends how far it got now and then, as a sign of life.
      const census = brickSnapshotTotals(brick.root, snapshotCountingMs);
      const countStartMs = Date.now();
      let countingFrames = 0;
      let counted = await census.next();
      for (; !counted.done; counted = await census.next()) {
        countingFrames++;
        yield control({ sync: 'counting', entries: counted.value });
      }
      logger.info({ seq, requester, ...counted.value, countingFrames, ms: Date.now() - countStartMs }, 'snapshot: counted this brick');
      yield control({ sync: 'begin', seq, nodeId: replica.id, total: counted.value });
      // The request-ID table in frames whose headers stay well under FRAME_HEADER_BYTES_MAX.
      let batch: typeof dedup = [];
      let bytes = 0;
      for (const e of dedup) {
        const size = JSON.stringify(e).length + 1;
        if (batch.length > 0 && bytes + size > SNAPSHOT_DEDUP_FRAME_BYTES) {
          yield control({ sync: 'dedup', entries: batch });
          batch = [];
          bytes = 0;
        }
        batch.push(e);
        bytes += size;
      }
      if (batch.length > 0) yield control({ sync: 'dedup', entries: batch });
      let entries = 0;
      for await (const e of brickSnapshotFrames(brick.root)) {
        // Past the deadline the brick moves again: cut the stream rather than send a blend.
        if (released) throw new Error('snapshot took longer than its limit');
        yield encodeFrame(e.header, e.data);
        entries++;
      }
      yield control({ sync: 'end', seq, entries });
    })();
    logger.info({ seq, dedup: dedup.length, requester }, 'snapshot: streaming this brick to a peer');
    const stream = new ReadableStream<Uint8Array>(
      {
        start(ctrl) {
          cutOff = (err) => {
            void frames.return(undefined);
            ctrl.error(err);
          };
        },
        async pull(ctrl) {
          lastPullMs = Date.now();
          producing = true;
          try {
            const r = await frames.next();
            if (r.done) {
              release();
              ctrl.close();
            } else ctrl.enqueue(r.value);
          } catch (err) {
            release();
            logger.warn({ err: String(err) }, 'snapshot stream failed');
            ctrl.error(err);
          } finally {
            producing = false;
            lastPullMs = Date.now();
          }
        },
        cancel() {
          release();
          void frames.return(undefined);
        },
      },
      { highWaterMark: SNAPSHOT_FRAMES_AHEAD },
    );
    // A receiver that goes away may leave the stream unread rather than cancelled: the
    // response's close releases the hold in every case.
    (c.env as { outgoing?: NodeJS.EventEmitter } | undefined)?.outgoing?.once('close', release);
    return c.body(stream, 200, { 'content-type': 'application/octet-stream' });
  });

  /** A read that asks for a lease (`lease=MOUNT`) gets one on `key` when this node may
   * grant, registered before the read is made (storage/leases.ts). The answer carries it in
   * a header, errors (a name not there) included. */
  const lease = (c: Context, key: string) => {
    const mount = queryParam(c, 'lease');
    if (mount === undefined || !leases) return;
    if (!MOUNT_ID.test(mount)) throw new DfsError('BAD_REQUEST', 'lease must be a mount ID: 1 to 64 letters, digits or -');
    const g = leases.grantable()?.grant(mount, key);
    if (g) c.header(HEADER_LEASE, `${g.session};${g.lease};${g.ms}`);
  };

  const barrier = async (c: Context) => {
    if (replica.syncing) throw new DfsError('UNAVAILABLE', `${replica.id} is copying its brick from a peer`);
    await replica.waitApplied(queryInt(c, 'barrier', 0, Number.MAX_SAFE_INTEGER, 0));
  };
  /** Whom a read acts as (x-dfs-uid…; nobody without): checked against the brick as it
   * stands past the barrier, so call it after barrier() (storage/permissions.ts). */
  const readerOf = (c: Context): Caller => callerFromHeaders((name) => c.req.header(name));

  // The reads: a POST carries a query too long for a URL as its body (common/http.ts).
  /** Where a read goes, its permission checked: a read on an open file names its inode
   * (`ino`), and reads wherever that inode is now (storage/inode-index.ts), `path` tried
   * first. A place the reader may not reach (another mount's orphan directory, a directory
   * it cannot search) counts as no place: the read goes by `path`, as before inodes
   * travelled, so naming an inode never reads more than a path would. Call it after
   * barrier(). */
  const readablePlace = (c: Context, path: string, reader: Caller, want: number): string => {
    const ino = queryInt(c, 'ino', 0, Number.MAX_SAFE_INTEGER, 0);
    const at = ino === 0 ? path : brick.placeOf(ino, path);
    if (at !== path) {
      try {
        brick.checkRead(reader, at, want);
        return at;
      } catch (e) {
        if (!(e instanceof DfsError && (e.errno === 'EACCES' || e.errno === 'EPERM'))) throw e;
      }
    }
    brick.checkRead(reader, path, want);
    return path;
  };

  app.on(['GET', 'POST'], '/node/v1/attr', queryInBody, async (c) => {
    let path = queryPath(c);
    const reader = readerOf(c);
    lease(c, leaseKeyOf(path));
    await barrier(c);
    path = readablePlace(c, path, reader, 0);
    return c.json(await brick.attr(path));
  });
  app.on(['GET', 'POST'], '/node/v1/dir', queryInBody, async (c) => {
    const path = queryPath(c);
    const reader = readerOf(c);
    lease(c, path);
    await barrier(c);
    brick.checkRead(reader, path, R_OK);
    return c.json({ entries: await brick.dir(path) });
  });
  app.on(['GET', 'POST'], '/node/v1/data', queryInBody, async (c) => {
    const path = queryPath(c);
    const offset = queryInt(c, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const size = queryInt(c, 'size', 0, READ_BYTES_MAX);
    const reader = readerOf(c);
    await barrier(c);
    const at = readablePlace(c, path, reader, R_OK);
    const data = await brick.read(at, offset, size);
    return octets(c, data);
  });
  app.on(['GET', 'POST'], '/node/v1/link', queryInBody, async (c) => {
    const path = queryPath(c);
    const reader = readerOf(c);
    lease(c, leaseKeyOf(path));
    await barrier(c);
    brick.checkRead(reader, path, 0);
    return c.json({ target: await brick.readlink(path) });
  });
  app.on(['GET', 'POST'], '/node/v1/xattr', queryInBody, async (c) => {
    const path = queryPath(c);
    const name = queryParam(c, 'name') ?? '';
    const reader = readerOf(c);
    await barrier(c);
    // trusted.* is root's: to anyone else it is not there (ENODATA), as on Linux.
    const trusted = name.startsWith('trusted.');
    brick.checkRead(reader, path, trusted ? 0 : R_OK);
    if (trusted && reader.uid !== 0) throw new DfsError('FS_ERROR', 'no such attribute', 'ENODATA');
    const value = await brick.xattr(path, name);
    return octets(c, value);
  });
  app.on(['GET', 'POST'], '/node/v1/xattrs', queryInBody, async (c) => {
    const path = queryPath(c);
    const reader = readerOf(c);
    await barrier(c);
    brick.checkRead(reader, path, 0);
    // Only root sees trusted.* names, as listxattr(2) shows them.
    const names = await brick.xattrNames(path);
    return c.json({ names: reader.uid === 0 ? names : names.filter((n) => !n.startsWith('trusted.')) });
  });
  app.get('/node/v1/statfs', async (c) => {
    const raw = await brick.statfs();
    return c.json(space ? space.statfs(raw) : raw);
  });

  // dfs verify: the brick as it stands at sequence ID `at`. Apply holds there meanwhile, so
  // writes wait for the walk to finish. With `progress=1` the answer is NDJSON: the walk's
  // progress (ManifestProgress) every MANIFEST_PROGRESS_MS while it runs, then the manifest
  // as one line `{"manifest":…}`, or `{"error":…}` if the walk failed after the answer began.
  app.post('/node/v1/manifest', async (c) => {
    const at = queryInt(c, 'at', 0, Number.MAX_SAFE_INTEGER);
    const withProgress = queryParam(c, 'progress') === '1';
    await replica.holdAt(at, MANIFEST_HOLD_TIMEOUT_MS);
    const appliedSeq = replica.appliedSeq;
    const progress: ManifestProgress = { entries: 0, bytes: 0, totalEntries: null, totalBytes: null };
    const walk = brick.manifest(progress).finally(() => replica.release());
    if (!withProgress) {
      const entries = await walk;
      return c.body(manifestStream(replica.id, appliedSeq, entries, '', ''), 200, { 'content-type': 'application/json' });
    }
    walk.catch(() => undefined); // answered as an error line below
    const lines = (async function* (): AsyncGenerator<Uint8Array> {
      let last = '';
      for (;;) {
        const done = await Promise.race([walk.then(() => true, () => true), new Promise<false>((r) => setTimeout(() => r(false), MANIFEST_PROGRESS_MS))]);
        if (done) break;
        const line = JSON.stringify({ progress });
        if (line !== last) yield Buffer.from(line + '\n');
        last = line;
      }
      let entries: ManifestEntry[];
      try {
        entries = await walk;
      } catch (err) {
        const e = err instanceof DfsError ? err : new DfsError('INTERNAL', String(err));
        yield Buffer.from(JSON.stringify({ error: { code: e.code, message: e.message } }) + '\n');
        return;
      }
      yield Buffer.from(JSON.stringify({ progress }) + '\n');
      const reader = manifestStream(replica.id, appliedSeq, entries, '{"manifest":', '}\n').getReader();
      for (;;) {
        const r = await reader.read();
        if (r.done) return;
        yield r.value;
      }
    })();
    const stream = new ReadableStream<Uint8Array>({
      async pull(ctrl) {
        const r = await lines.next();
        if (r.done) ctrl.close();
        else ctrl.enqueue(r.value);
      },
      cancel() {
        void lines.return(undefined);
      },
    });
    return c.body(stream, 200, { 'content-type': 'application/x-ndjson' });
  });

  return app;
}

/** A manifest as a stream, a slice of entries at a time rather than as one JSON body: a
 * deep tree's manifest runs to megabytes (every entry carries its whole path), and undici's
 * HTTP/2 client was seen to end such a body early when it came as one buffer. `before` and
 * `after` wrap it (the progress answer's `{"manifest":…}` line). */
function manifestStream(nodeId: string, appliedSeq: number, entries: ManifestEntry[], before: string, after: string): ReadableStream<Uint8Array> {
  const head = `${before}{"nodeId":${JSON.stringify(nodeId)},"appliedSeq":${appliedSeq},"entries":[`;
  let next = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctrl) {
      if (next === 0 && entries.length === 0) ctrl.enqueue(Buffer.from(head));
      if (next >= entries.length) {
        ctrl.enqueue(Buffer.from(']}' + after));
        ctrl.close();
        return;
      }
      const slice = entries.slice(next, next + MANIFEST_ENTRIES_PER_CHUNK);
      ctrl.enqueue(Buffer.from((next === 0 ? head : ',') + slice.map((e) => JSON.stringify(e)).join(',')));
      next += slice.length;
    },
  });
}
