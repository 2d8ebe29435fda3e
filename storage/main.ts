/*
 * The storage node process: wires the brick, the op log, the state file, the replica and
 * the HTTP/2 server, registers the node in Redis and follows the membership that the
 * leader proxy publishes there (docs/cluster.md).
 *
 *   node dist/storage/main.js --id n1 --data DIR --port 7501 [--host 127.0.0.1] --redis URL
 *        [--log-keep-ops N] [--log-segment-bytes N] [--hole-timeout-ms N] [--barrier-timeout-ms N]
 *        [--space-reserve-bytes N] [--space-floor-bytes N]
 *        [--admin-port N [--admin-host H]] [--url URL] [--stop-timeout-ms N]
 *        --ca FILE --cert FILE --key FILE --redis-auth FILE | --insecure
 *
 * With --admin-port it also serves /metrics (storage/metrics.ts), /healthz and /readyz
 * over plain HTTP/1.1 without a client certificate (common/admin-server.ts).
 *
 * The node serves HTTP/2 over TLS and checks every caller's certificate (common/tls.ts):
 * the routes each role may call are in storage/app.ts (NODE_ROUTE_ROLES). Under --insecure
 * it serves HTTP/2 cleartext and checks nothing.
 *
 * --host is where it listens (0.0.0.0 in a pod); --url is how peers and proxies reach it
 * (a pod's DNS name), by default http(s)://HOST:PORT.
 *
 * SIGTERM stops it gracefully within --stop-timeout-ms (docs/cluster.md, "Stopping a
 * node"): while it still serves, its heartbeat says `stopping`, and it waits until the
 * leader's membership no longer counts it in sync (a primary's role handed to another
 * in-sync node, a backup out of the set), then closes its log and state and exits.
 *
 * The space options (docs/space.md) default to a share of the data directory's file
 * system (storage/disk-space.ts, defaultSpaceConfig).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import http2 from 'node:http2';
import nodePath from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { Redis } from 'ioredis';
import { loadRedisAuth, REDIS_AUTH_ARG_OPTIONS, redisAuthOptions } from '../common/redis-auth';
import type { Membership } from '../common/api';
import { intOption, requireOption, runMain } from '../common/config';
import { HTTP_HEADER_BYTES_MAX, NODE_BODY_BYTES_IN_FLIGHT_MAX, NODE_CONNECTIONS_PER_CLIENT_MAX, NODE_H2_IDLE_MS, NODE_H2_STREAMS_MAX } from '../common/limits';
import { BodyBudget, capConnectionsPerClient } from '../common/http';
import { DfsError } from '../common/errors';
import { createLogger } from '../common/log';
import { assertScheme, loadProcessTls, redisTlsOptions, serverTlsOptions, TLS_ARG_OPTIONS } from '../common/tls';
import { KEY_LEADER, KEY_LEASES_USED, KEY_MEMBERSHIP, nodeAliveKey } from '../common/redis-keys';
import { encodeHeartbeat, epochRefusal, parseMembership } from '../common/registry';
import { SealChecker } from '../common/membership-seal';
import { ADMIN_ARG_OPTIONS, adminAddressOf, serveAdmin } from '../common/admin-server';
import { createStorageApp, SNAPSHOT_COUNTING_FRAME_MS_DEFAULT, SNAPSHOT_STALL_MS_DEFAULT } from './app';
import { StorageMetrics } from './metrics';
import { Brick } from './brick';
import { DedupJournal } from './dedup-journal';
import { discardInterruptedSync, FullSync } from './full-sync';
import { NodeStateFile } from './node-state';
import { OpLog } from './op-log';
import { HTTP2PeerTransport } from './peer-client';
import { Replica } from './replica';
import { LeaseGate } from './leases';
import { defaultSpaceConfig, SpaceGuard } from './disk-space';

/** Sets the lease mark only while the membership names this node primary in its epoch
 * (storage/leases.ts, LeaseGate). */
// The membership's key travels as an argument, not as a key: Redis checks a script's
// declared keys for reading and writing, and a node's Redis user may only read the
// membership (common/redis-auth.ts), so declaring it made every mark NOPERM and no lease was
// ever granted; the GET inside is checked as the read it is.
const MARK_LEASES_SCRIPT = `
local text = redis.call('GET', ARGV[1])
if not text then return 0 end
local m = cjson.decode(text)
if m.primary ~= ARGV[2] or tonumber(m.epoch) ~= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], '1')
return 1`;

const HEARTBEAT_MS = 1000;
const ALIVE_TTL_MS = 3000;
const MEMBERSHIP_POLL_MS = 300;
/** Request IDs remembered for exactly-once retries (in memory and in dedup.journal). */
const DEDUP_ENTRIES_MAX = 100_000;
/** Ops a primary admits in flight (ReplicaConfig pendingOpsMax). */
const PENDING_OPS_MAX = 4096;
/** How far above the newest sequence ID a node knows a request may name (ReplicaConfig
 * seqAheadMax): twice the ops in flight a primary admits. A proxy's barrier is at most the
 * last sequence ID taken in Redis, ahead of the primary's log only by ops in flight (and
 * the holes of proxies that died), so a legitimate one is well within it. */
const SEQ_AHEAD_MAX = 2 * PENDING_OPS_MAX;
/** Holes the primary claims per round of its hole timer (ReplicaConfig): a barrier at the
 * bound is reached in two rounds, within a read's barrier timeout. */
const HOLE_CLAIMS_PER_ROUND_MAX = PENDING_OPS_MAX;
/** How long the primary holds back a commit-only notice to a backup, for the next op's
 * batch to carry the commit point instead (ReplicaConfig.commitNoticeDelayMs): a little
 * more than the time between one process's ops, so that a create loop costs one message
 * and its answer per op and backup, not two. Measured: see README, Tests and the benchmark. */
const COMMIT_NOTICE_DELAY_MS = 5;
/** How long a peer that said it is ahead of this primary's log is reported. */
const PEER_AHEAD_REPORT_MS = 10_000;
const H2_WINDOW_BYTES = 16 * 1024 * 1024;
/** How often at most the applied point goes to state.json (and the log is trimmed). The
 * brick's own mark (Brick.appliedSeqMark, set with every op) is what recovery starts
 * from; state.json's copy may lag, so it is not rewritten after every op. */
const STATE_SAVE_INTERVAL_MS = 1000;
/** The longest a SIGTERM takes by default (--stop-timeout-ms): well within Kubernetes's
 * default grace period of 30 s. */
const STOP_TIMEOUT_MS_DEFAULT = 15_000;
/** What a stop keeps for closing the log, the state file and Redis after the handover. */
const STOP_CLOSE_MS = 2_000;
/** How often a stopping node looks for the membership that lets it go. */
const STOP_POLL_MS = 100;

runMain(async () => {
  const { values } = parseArgs({
    options: {
      id: { type: 'string' },
      data: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      url: { type: 'string' },
      redis: { type: 'string', default: process.env.DFS_REDIS ?? 'redis://127.0.0.1:6379' },
      'log-keep-ops': { type: 'string' },
      'log-segment-bytes': { type: 'string' },
      'log-io': { type: 'string' },
      'hole-timeout-ms': { type: 'string' },
      'snapshot-stall-ms': { type: 'string' },
      'snapshot-counting-ms': { type: 'string' },
      'barrier-timeout-ms': { type: 'string' },
      'space-reserve-bytes': { type: 'string' },
      'space-floor-bytes': { type: 'string' },
      'min-in-sync': { type: 'string' },
      'stop-timeout-ms': { type: 'string' },
      ...ADMIN_ARG_OPTIONS,
      ...TLS_ARG_OPTIONS,
      ...REDIS_AUTH_ARG_OPTIONS,
    },
    strict: true,
  });
  const id = requireOption(values.id, 'id');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error('--id must be 1 to 64 letters, digits, - or _');
  const dataDir = nodePath.resolve(requireOption(values.data, 'data'));
  const port = intOption(values.port, 'port', 7501, 1, 65535);
  const host = values.host!;
  const bootLogger = createLogger('storage', { nodeId: id });
  const tls = loadProcessTls(values, bootLogger);
  // Its Redis user and password (common/redis-auth.ts): a file, never the command line.
  const redisAuth = loadRedisAuth(values);
  // Listening on every address says nothing about where peers reach it (a pod listens on
  // 0.0.0.0 and is reached by its DNS name): then the URL must be given.
  if (values.url === undefined && (host === '0.0.0.0' || host === '::' || host === '')) {
    throw new Error(`--host ${host === '' ? '""' : host} listens on every address: give --url, the URL peers and proxies reach this node at (e.g. https://dfs-storage-0.dfs-storage:${port})`);
  }
  const url = values.url ?? `${tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`;
  assertScheme(url, tls, '--url');
  const redisTls = redisTlsOptions(values.redis!, tls);
  const keepOps = intOption(values['log-keep-ops'], 'log-keep-ops', 10_000, 1);
  const segmentBytesMax = intOption(values['log-segment-bytes'], 'log-segment-bytes', 64 * 1024 * 1024, 4096);
  const logIo = values['log-io'] ?? 'direct';
  if (logIo !== 'direct' && logIo !== 'buffered') throw new Error(`--log-io must be direct or buffered, not ${JSON.stringify(logIo)}`);
  const holeTimeoutMs = intOption(values['hole-timeout-ms'], 'hole-timeout-ms', 1000, 10);
  const barrierTimeoutMs = intOption(values['barrier-timeout-ms'], 'barrier-timeout-ms', 3000, 10);
  // The floor on copies (replica-core.ts minInSync): 0, the default, is a majority of the members.
  const minInSync = intOption(values['min-in-sync'], 'min-in-sync', 0, 0, 64);
  const adminAddress = adminAddressOf(values);
  const stopTimeoutMs = intOption(values['stop-timeout-ms'], 'stop-timeout-ms', STOP_TIMEOUT_MS_DEFAULT, STOP_CLOSE_MS + 1000, 600_000);
  // Which start of this process (heartbeats carry it): a removed ID that starts again is
  // told from the process that was running when it left (proxy/leader-core.ts).
  const boot = randomBytes(8).toString('hex');

  // Everything this node writes is its own: state files 0600 and directories 0700. The
  // cluster's modes live in the brick's identity attributes, never on the files
  // (storage/brick.ts), so no mode a client asks for needs the umask out of the way.
  process.umask(0o077);
  await fsp.mkdir(dataDir, { recursive: true, mode: 0o700 });
  await fsp.chmod(dataDir, 0o700);
  const logger = bootLogger;

  // A full sync that a crash interrupted left a brick nobody may serve: start from nothing.
  const interruptedSync = await discardInterruptedSync(dataDir);
  const stateFile = new NodeStateFile(nodePath.join(dataDir, 'state.json'));
  // The process works in its brick from here on: every path below is absolute already.
  const brick = await Brick.open(nodePath.join(dataDir, 'brick'), { relativeToCwd: true });
  const saved = await stateFile.load(id);
  // The brick's own mark is exact; the state file is saved after the fact and may lag.
  const state = { ...saved, appliedSeq: Math.max(saved.appliedSeq, brick.appliedSeqMark()), incarnation: stateFile.incarnation };
  const journal = DedupJournal.open(dataDir, DEDUP_ENTRIES_MAX, state.appliedSeq);
  const { log, entries } = await OpLog.open(nodePath.join(dataDir, 'wal'), { segmentBytesMax, keepOps, direct: logIo === 'direct' }, state.appliedSeq);
  let replicaBuilt = false;
  const fsStat = await fsp.statfs(dataDir);
  const spaceDefaults = defaultSpaceConfig(fsStat.blocks * fsStat.bsize);
  const space = new SpaceGuard(
    dataDir,
    {
      reserveBytes: intOption(values['space-reserve-bytes'], 'space-reserve-bytes', spaceDefaults.reserveBytes, 0),
      floorBytes: intOption(values['space-floor-bytes'], 'space-floor-bytes', spaceDefaults.floorBytes, 0),
      pollMs: spaceDefaults.pollMs,
    },
    logger,
    (state) => {
      logger.debug({ space: state }, 'space state changed');
      if (replicaBuilt) replica.setSpace(state);
    },
    (tight) => {
      logger.debug({ tight }, 'op log tight');
      // Near the floor, the log keeps only what it must (OpLog.setTight), and is trimmed
      // now, not only after the next apply: an apply may be what waits for room.
      log.setTight(tight);
      if (tight && replicaBuilt && !replica.syncing) saveApplied();
    },
  );
  // Before the replica starts: a node that restarts on a full disk starts out `low`.
  await space.start();
  log.setTight(space.tight);
  const transport = new HTTP2PeerTransport(5000, tls);

  let saving = false;
  let saveAgain = false;
  let saveTimer: NodeJS.Timeout | null = null;
  /** After an apply: save the applied point and trim the log within STATE_SAVE_INTERVAL_MS. */
  const saveAppliedSoon = (): void => {
    saveTimer ??= setTimeout(() => {
      saveTimer = null;
      // A full sync saves the state it leaves behind itself; the old brick's point must not
      // land after it.
      if (!replica.syncing) saveApplied();
    }, STATE_SAVE_INTERVAL_MS);
  };
  const saveApplied = (): void => {
    if (saving) {
      saveAgain = true;
      return;
    }
    saving = true;
    const applied = replica.appliedSeq;
    stateFile
      .save({ nodeId: id, epoch: replica.epoch, appliedSeq: applied }, false)
      .then(() => log.trim(applied))
      .catch((err: unknown) => logger.error({ err }, 'saving state failed'))
      .finally(() => {
        saving = false;
        if (saveAgain) {
          saveAgain = false;
          saveApplied();
        }
      });
  };

  const replica = new Replica(
    id,
    log,
    brick,
    transport,
    { holeTimeoutMs, barrierTimeoutMs, pendingOpsMax: PENDING_OPS_MAX, replicateBatchBytesMax: 16 * 1024 * 1024, dedupEntriesMax: DEDUP_ENTRIES_MAX, peerRetryMs: 200, syncRetryMs: 200, seqAheadMax: SEQ_AHEAD_MAX, holeClaimsPerRoundMax: HOLE_CLAIMS_PER_ROUND_MAX, commitNoticeDelayMs: COMMIT_NOTICE_DELAY_MS, minInSync,
      // A planted bug the partition tests must catch (test/e2e/partitions-planted-bug.test.ts).
      ...(process.env.DFS_FAULT_ACK_BEFORE_BACKUPS === '1' ? { faultAckBeforeBackups: true } : {}) },
    logger,
    state,
    entries,
    saveAppliedSoon,
    () => refreshMembership(),
    journal,
    space,
  );
  replicaBuilt = true;
  logger.info({ appliedSeq: state.appliedSeq, durableSeq: log.lastSeq, epoch: state.epoch, recovered: entries.length }, 'recovered');

  const redis = new Redis(values.redis!, { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000, lazyConnect: false, ...redisTls, ...redisAuthOptions(redisAuth) });
  redis.on('error', (err) => logger.debug({ err: err.message }, 'redis error'));

  // The membership this node holds: its text (to skip an unchanged one cheaply) and parsed.
  let membershipText = '';
  let membership: Membership | null = null;
  /** When Redis last showed a membership naming this node primary (leases need it fresh). */
  let primaryConfirmedAtMs = 0;
  const leases = new LeaseGate({
    role: () => {
      const s = replica.state();
      return { primary: s.role === 'primary' && !s.primaryFenced && membership?.primary === id, confirmedAtMs: primaryConfirmedAtMs };
    },
    marker: {
      mark: async () => (await redis.eval(MARK_LEASES_SCRIPT, 1, KEY_LEASES_USED, KEY_MEMBERSHIP, id, String(replica.epoch))) === 1,
      isSet: async () => (await redis.exists(KEY_LEASES_USED)) === 1,
    },
  });
  const refreshMembership = async (): Promise<void> => {
    const askedAtMs = Date.now();
    const text = await redis.get(KEY_MEMBERSHIP);
    try {
      await adopt(text);
    } finally {
      if (membership?.primary === id && text === membershipText) primaryConfirmedAtMs = askedAtMs;
      leases.update();
    }
  };
  // A membership is acted on only when it parses, is sealed by a proxy of this cluster and
  // its epoch is within a bound of the newest this node persisted (docs/security.md,
  // "Redis"); anything else is refused with a logged reason, once per text, and the node
  // keeps the membership it holds.
  const seals = tls ? new SealChecker(tls.ca) : null;
  let refusedText = '';
  const refuse = (text: string, reason: string) => {
    if (text !== refusedText) logger.warn({ reason, epoch: replica.epoch }, 'refused the membership in Redis');
    refusedText = text;
  };
  const adopt = async (text: string | null): Promise<void> => {
    if (!text || text === membershipText || text === refusedText) return;
    let m: Membership;
    try {
      m = parseMembership(text);
    } catch (e) {
      return refuse(text, (e as Error).message);
    }
    const why = seals?.refusal(m) ?? epochRefusal(m.epoch, replica.epoch);
    if (why !== null) return refuse(text, why);
    if (m.epoch < replica.epoch) return;
    if (m.epoch > replica.epoch) {
      // Persist the epoch before acting on it: a restarted node must still refuse older ones.
      await stateFile.save({ nodeId: id, epoch: m.epoch, appliedSeq: replica.appliedSeq }, true);
    }
    membershipText = text;
    membership = m;
    replica.setMembership(m);
  };

  /** Set by SIGTERM: heartbeats say so, and the node gives up its place before it exits. */
  let stopping = false;
  const heartbeat = async (): Promise<void> => {
    replica.tick();
    const s = replica.state();
    await redis
      .multi()
      // The membership the node holds lets a leader rebuild Redis's after Redis lost its data.
      .set(
        nodeAliveKey(id),
        encodeHeartbeat({
          // The leader registers the node from this (only the leader writes the registry).
          url,
          appliedSeq: s.appliedSeq,
          durableSeq: s.durableSeq,
          epoch: s.epoch,
          role: s.role,
          logEpoch: s.logEpoch,
          commitSeq: s.commitSeq,
          // The membership names this node primary in an epoch it restarted in: it waits
          // for the leader to publish a later one (storage/replica-core.ts, fencedEpoch).
          primaryFenced: s.primaryFenced,
          // Peers the primary has not reached lately (they may still heartbeat), and peers
          // that know of committed ops its log lacks (proxy/leader.ts acts on both).
          failingPeers: replica.failingPeers(),
          peersAhead: replica.peersAhead(PEER_AHEAD_REPORT_MS),
          // A node copying a brick is not in sync, whatever the membership says yet.
          syncing: s.syncing || fullSync.active,
          // ok, low (only ops that free space are admitted) or full (the log cannot grow).
          space: space.state,
          sync: fullSync.progress,
          lastSync: fullSync.lastFinished,
          membership,
          // Which life of this disk; fresh: it started with no state of its own.
          incarnation: stateFile.incarnation,
          fresh: stateFile.fresh,
          minInSync,
          belowFloor: s.belowFloor,
          stopping,
          boot,
        }),
        'PX',
        ALIVE_TTL_MS,
      )
      .exec();
  };

  const fullSync = new FullSync({
    nodeId: id,
    dataDir,
    brick,
    log,
    stateFile,
    replica,
    transport,
    logger,
    membership: () => membership,
  });
  // Fault injection for tests: while this file (relative to --data) exists, batches from the
  // primary hang, as across a partition between the two nodes.
  const hangFile = process.env.DFS_FAULT_HANG_REPLICATION_FILE ? nodePath.resolve(dataDir, process.env.DFS_FAULT_HANG_REPLICATION_FILE) : undefined;
  if (hangFile) logger.warn({ hangFile }, 'fault injection on: replication hangs while this file exists');
  const app = createStorageApp({
    replica,
    brick,
    logger,
    refreshMembership,
    startFullSync: (reason) => {
      // A copy needs room for a whole brick, and an apply waiting for room would hold the
      // sync's start; the primary asks again, and a node with room again goes ahead.
      if (space.state === 'full') throw new DfsError('NO_SPACE', `${id} is out of space: no full sync until it has room`);
      fullSync.start(reason);
    },
    replicationHung: hangFile ? () => existsSync(hangFile) : undefined,
    leases,
    space,
    bodyBudget: new BodyBudget(NODE_BODY_BYTES_IN_FLIGHT_MAX),
    membership: () => membership,
    snapshotStallMs: intOption(values['snapshot-stall-ms'], 'snapshot-stall-ms', SNAPSHOT_STALL_MS_DEFAULT, 10),
    // Under the receiver's idle limit (full-sync.ts SNAPSHOT_IDLE_MS, 30 s); 0 (a frame
    // per name counted) is for tests.
    snapshotCountingMs: intOption(values['snapshot-counting-ms'], 'snapshot-counting-ms', SNAPSHOT_COUNTING_FRAME_MS_DEFAULT, 0, 20_000),
    secure: tls !== null,
  });
  const server = serve({
    fetch: app.fetch,
    port,
    hostname: host,
    createServer: (tls ? http2.createSecureServer : http2.createServer) as typeof http2.createServer,
    // HTTP/2's default 64 KiB flow-control windows make a 1 MiB write wait on many
    // WINDOW_UPDATE round trips; open them to a whole replication batch (RFC 9113 §6.9).
    serverOptions: {
      settings: { maxHeaderListSize: HTTP_HEADER_BYTES_MAX, initialWindowSize: H2_WINDOW_BYTES, maxConcurrentStreams: NODE_H2_STREAMS_MAX },
      maxSessionMemory: 256,
      ...(tls ? serverTlsOptions(tls) : {}),
    },
  });
  server.on('session', (session: http2.Http2Session) => session.setLocalWindowSize(H2_WINDOW_BYTES * 4));
  // A connection with no frames for NODE_H2_IDLE_MS is closed (with no 'timeout' listener
  // the server destroys the idle session); its clients open a new one when they need it.
  (server as http2.Http2Server).setTimeout(NODE_H2_IDLE_MS);
  capConnectionsPerClient(server as http2.Http2Server, NODE_CONNECTIONS_PER_CLIENT_MAX, logger);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  logger.info({ url, dataDir, tls: tls !== null }, 'storage node listening');

  const metrics = new StorageMetrics({
    appliedSeq: () => replica.appliedSeq,
    durableSeq: () => log.lastSeq,
    role: () => replica.state().role,
    peerLag: () => replica.peerLag(),
    syncing: () => replica.syncing || fullSync.active,
    syncBytesTotal: () => fullSync.copiedBytesTotal,
  });
  log.fsyncObserver = (seconds) => metrics.walFsync.observe(seconds);
  const adminServer = adminAddress
    ? await serveAdmin(adminAddress, {
        registry: metrics.registry,
        // Ready: an in-sync member (it takes reads and counts for commits), not copying a
        // brick and not stopping. A StatefulSet's rolling update waits for this before it
        // restarts the next pod, so a restarted node has caught up before another goes.
        ready: async () => !stopping && membership?.inSync.includes(id) === true && !(replica.syncing || fullSync.active),
        logger,
      }).catch((err: Error) => {
        throw new Error(`cannot serve the admin port on ${adminAddress.host}:${adminAddress.port}: ${err.message}`);
      })
    : null;
  if (adminAddress) logger.info({ url: `http://${adminAddress.host.includes(':') ? `[${adminAddress.host}]` : adminAddress.host}:${adminAddress.port}` }, 'admin port listening');

  const timers = [
    setInterval(() => heartbeat().catch((err: Error) => logger.warn({ err: err.message }, 'heartbeat failed')), HEARTBEAT_MS),
    setInterval(() => refreshMembership().catch((err: Error) => logger.debug({ err: err.message }, 'membership refresh failed')), MEMBERSHIP_POLL_MS),
  ];
  if (interruptedSync) fullSync.start('a full sync was interrupted (the node stopped in the middle of it)');
  await heartbeat().catch((err: Error) => logger.warn({ err: err.message }, 'first heartbeat failed'));
  await refreshMembership().catch(() => undefined);

  /** Whether the membership still counts this node in sync where another node could take
   * its place: a backup (the leader drops it), or a primary with an in-sync peer. */
  const heldInSync = (): boolean => {
    const m = membership;
    if (!m || !m.inSync.includes(id)) return false;
    return m.primary !== id || m.inSync.some((other) => other !== id);
  };
  /** Waits, at most `budgetMs`, until the leader took this node out of the in-sync set. */
  const handOver = async (budgetMs: number): Promise<void> => {
    if (!heldInSync()) return;
    const wasPrimary = membership?.primary === id;
    const startedAt = Date.now();
    // The leader acts on the heartbeat: say it now, not at the next beat.
    await heartbeat().catch((err: Error) => logger.warn({ err: err.message }, 'stopping heartbeat failed'));
    while (Date.now() - startedAt < budgetMs) {
      // No leader (the proxies are stopped too, as at `dfs local down`): nobody will act on
      // the request, so there is nothing to wait for. A Redis that does not answer says
      // nothing either way: keep waiting, within the budget.
      const leader = await redis.get(KEY_LEADER).catch(() => 'unknown');
      if (leader === null) {
        logger.info({ wasPrimary }, 'no leader to hand over to: stopping');
        return;
      }
      await refreshMembership().catch(() => undefined);
      if (!membership?.inSync.includes(id)) {
        logger.info({ primary: membership?.primary, epoch: membership?.epoch, ms: Date.now() - startedAt }, wasPrimary ? 'handed the primary role over' : 'left the in-sync set');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
    }
    logger.warn({ budgetMs, wasPrimary }, 'the leader did not take this node out of the in-sync set in time (is a proxy running?); stopping anyway');
  };
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, stopTimeoutMs }, 'stopping');
    // The hard bound on the whole stop, whatever hangs.
    setTimeout(() => {
      logger.warn({ stopTimeoutMs }, 'the stop took too long: exiting');
      process.exit(0);
    }, stopTimeoutMs).unref();
    const closeBy = Date.now() + stopTimeoutMs - STOP_CLOSE_MS;
    void handOver(stopTimeoutMs - STOP_CLOSE_MS - 500)
      .catch((err: Error) => logger.warn({ err: err.message }, 'handover failed'))
      .finally(() => {
        timers.forEach(clearInterval);
        space.stop();
        if (saveTimer) clearTimeout(saveTimer);
        fullSync.stop();
        replica.close();
        setTimeout(() => process.exit(0), Math.max(500, Math.min(STOP_CLOSE_MS, closeBy + STOP_CLOSE_MS - Date.now()))).unref();
        server.close();
        adminServer?.close();
        void Promise.allSettled([log.close(), transport.close(), stateFile.save({ nodeId: id, epoch: replica.epoch, appliedSeq: replica.appliedSeq }, true)])
          .then(() => redis.quit().catch(() => undefined))
          .finally(() => process.exit(0));
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});
