/*
 * The storage node's HTTP API (docs/api.md, Node API), served over HTTP/2 cleartext.
 * A factory with its dependencies passed in (STYLE.md): storage/main.ts wires it.
 * Mutations arrive only from proxies (`/node/v1/ops`) and the primary (`/node/v1/replicate`);
 * reads carry a barrier and are answered once this node applied up to it.
 */
import { Hono, type Context } from 'hono';
import { installErrorHandler, octets, queryInBody, queryInt, queryParam, queryPath, readBody } from '../common/http';
import { decodeFrames, decodeOneFrame, encodeFrame } from '../common/frame';
import { DfsError } from '../common/errors';
import { parseSequencedOpHeader, validateOp } from '../common/ops';
import { HEADER_LEASE, HEADER_MOUNT, leaseConflictsOf, leaseKeyOf } from '../common/leases';
import { OP_BODY_BYTES_MAX, READ_BYTES_MAX, REPLICATE_BODY_BYTES_MAX } from '../common/limits';
import type { Logger } from '../common/log';
import type { StatFs } from '../common/api';
import type { Brick } from './brick';
import type { Replica } from './replica';
import type { LeaseGate } from './leases';
import { SNAPSHOT_DEDUP_FRAME_BYTES, type SnapshotControl } from './full-sync';
import { brickSnapshotFrames } from './snapshot';

/** How long a node may take to reach the sequence ID a verify holds it at. */
const MANIFEST_HOLD_TIMEOUT_MS = 10_000;
/** Manifest entries per piece of the streamed answer. */
const MANIFEST_ENTRIES_PER_CHUNK = 256;
/** A snapshot's source holds its brick still at most this long (the log keeps growing
 * meanwhile, in memory too); a copy that takes longer is cut off and tried again. */
const SNAPSHOT_TIME_MAX_MS = 30 * 60_000;
/** Frames a snapshot stream computes ahead of the receiver. */
const SNAPSHOT_FRAMES_AHEAD = 4;

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
}

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

export function createStorageApp({ replica, brick, logger, refreshMembership, startFullSync, replicationHung, leases, space }: StorageAppDeps): Hono {
  const app = new Hono();
  installErrorHandler(app, logger);

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/node/v1/state', (c) => c.json(replica.state()));

  app.post('/node/v1/ops', async (c) => {
    const frame = decodeOneFrame(await readBody(c, OP_BODY_BYTES_MAX));
    const header = parseSequencedOpHeader(frame.header);
    validateOp(header.op, frame.data.length);
    if (header.epoch > replica.epoch) await refreshMembership();
    const result = await replica.submit(header, frame.data, frame.encoded);
    // Mounts that cache what this change touches hear of it before anyone hears it is done.
    if (leases && !result.errno) await leases.beforeAck(leaseConflictsOf(header.op), c.req.header(HEADER_MOUNT) ?? null);
    return c.json(result);
  });

  // A mount's lease poll (storage/leases.ts): renews its session, hears of revocations.
  app.get('/node/v1/leases/poll', async (c) => {
    const mount = c.req.query('mount') ?? '';
    if (!MOUNT_ID.test(mount)) throw new DfsError('BAD_REQUEST', 'mount must be 1 to 64 letters, digits or -');
    const acks = parseAcks(c.req.query('ack'));
    // Renewals count only from a primary sure of its role, as grants do. A mount answered
    // no session gives its leases up and asks under a new ID (mount/leases.ts).
    const table = leases?.grantable();
    if (!table) return c.json({ session: null, revoked: [] });
    return c.json(await table.poll(mount, acks));
  });

  app.post('/node/v1/replicate', async (c) => {
    const epoch = queryInt(c, 'epoch', 0, Number.MAX_SAFE_INTEGER);
    const commit = queryInt(c, 'commit', 0, Number.MAX_SAFE_INTEGER);
    const prefix = c.req.query('prefix') === undefined ? -1 : queryInt(c, 'prefix', 0, Number.MAX_SAFE_INTEGER);
    const truncateAfter = c.req.query('truncate') === undefined ? null : queryInt(c, 'truncate', 0, Number.MAX_SAFE_INTEGER);
    const frames = decodeFrames(await readBody(c, REPLICATE_BODY_BYTES_MAX));
    if (replicationHung?.()) {
      const until = Date.now() + HUNG_REPLICATION_MAX_MS;
      while (replicationHung() && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
      throw new DfsError('UNAVAILABLE', 'replication is hung (fault injection)');
    }
    const batch = frames.map((f) => {
      const header = parseSequencedOpHeader(f.header);
      validateOp(header.op, f.data.length);
      return { header, data: f.data, frame: f.encoded };
    });
    if (epoch > replica.epoch) await refreshMembership();
    return c.json(await replica.replicate({ epoch, commitSeq: commit, prefixSeq: prefix, truncateAfter, entries: batch }));
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
    const { role } = replica.state();
    if (replica.syncing || (role !== 'primary' && role !== 'backup')) throw new DfsError('UNAVAILABLE', `${replica.id} is not in sync`);
    const seq = await replica.holdHere(MANIFEST_HOLD_TIMEOUT_MS);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      clearTimeout(deadline);
      replica.release();
    };
    const deadline = setTimeout(release, SNAPSHOT_TIME_MAX_MS);
    const dedup = replica.dedupEntries();
    const frames = (async function* (): AsyncGenerator<Buffer> {
      const control = (h: SnapshotControl) => encodeFrame(h);
      yield control({ sync: 'begin', seq, nodeId: replica.id });
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
    logger.info({ seq, dedup: dedup.length }, 'snapshot: streaming this brick to a peer');
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(ctrl) {
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

  // The reads: a POST carries a query too long for a URL as its body (common/http.ts).
  app.on(['GET', 'POST'], '/node/v1/attr', queryInBody, async (c) => {
    const path = queryPath(c);
    lease(c, leaseKeyOf(path));
    await barrier(c);
    return c.json(await brick.attr(path));
  });
  app.on(['GET', 'POST'], '/node/v1/dir', queryInBody, async (c) => {
    const path = queryPath(c);
    lease(c, path);
    await barrier(c);
    return c.json({ entries: await brick.dir(path) });
  });
  app.on(['GET', 'POST'], '/node/v1/data', queryInBody, async (c) => {
    const path = queryPath(c);
    const offset = queryInt(c, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const size = queryInt(c, 'size', 0, READ_BYTES_MAX);
    await barrier(c);
    const data = await brick.read(path, offset, size);
    return octets(c, data);
  });
  app.on(['GET', 'POST'], '/node/v1/link', queryInBody, async (c) => {
    const path = queryPath(c);
    lease(c, leaseKeyOf(path));
    await barrier(c);
    return c.json({ target: await brick.readlink(path) });
  });
  app.on(['GET', 'POST'], '/node/v1/xattr', queryInBody, async (c) => {
    const path = queryPath(c);
    const name = queryParam(c, 'name') ?? '';
    await barrier(c);
    const value = await brick.xattr(path, name);
    return octets(c, value);
  });
  app.on(['GET', 'POST'], '/node/v1/xattrs', queryInBody, async (c) => {
    const path = queryPath(c);
    await barrier(c);
    return c.json({ names: await brick.xattrNames(path) });
  });
  app.get('/node/v1/statfs', async (c) => {
    const raw = await brick.statfs();
    return c.json(space ? space.statfs(raw) : raw);
  });

  // dfs verify: the brick as it stands at sequence ID `at`. Apply holds there meanwhile, so
  // writes wait for the walk to finish.
  app.post('/node/v1/manifest', async (c) => {
    const at = queryInt(c, 'at', 0, Number.MAX_SAFE_INTEGER);
    await replica.holdAt(at, MANIFEST_HOLD_TIMEOUT_MS);
    let entries: Awaited<ReturnType<Brick['manifest']>>;
    const appliedSeq = replica.appliedSeq;
    try {
      entries = await brick.manifest();
    } finally {
      replica.release();
    }
    // Streamed a slice of entries at a time rather than as one JSON body: a deep tree's
    // manifest runs to megabytes (every entry carries its whole path), and undici's HTTP/2
    // client was seen to end such a body early when it came as one buffer.
    const head = `{"nodeId":${JSON.stringify(replica.id)},"appliedSeq":${appliedSeq},"entries":[`;
    let next = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(ctrl) {
        if (next === 0 && entries.length === 0) ctrl.enqueue(Buffer.from(head));
        if (next >= entries.length) {
          ctrl.enqueue(Buffer.from(']}'));
          ctrl.close();
          return;
        }
        const slice = entries.slice(next, next + MANIFEST_ENTRIES_PER_CHUNK);
        ctrl.enqueue(Buffer.from((next === 0 ? head : ',') + slice.map((e) => JSON.stringify(e)).join(',')));
        next += slice.length;
      },
    });
    return c.body(stream, 200, { 'content-type': 'application/json' });
  });

  return app;
}
