/*
 * The storage node process: wires the brick, the op log, the state file, the replica and
 * the HTTP/2 server, registers the node in Redis and follows the membership that the
 * leader proxy publishes there (docs/cluster.md).
 *
 *   node dist/storage/main.js --id n1 --data DIR --port 7501 [--host 127.0.0.1] --redis URL
 *        [--log-keep-ops N] [--log-segment-bytes N] [--hole-timeout-ms N] [--barrier-timeout-ms N]
 *        [--space-reserve-bytes N] [--space-floor-bytes N]
 *
 * The space options (docs/space.md) default to a share of the data directory's file
 * system (storage/disk-space.ts, defaultSpaceConfig).
 */
import { existsSync, promises as fsp } from 'node:fs';
import http2 from 'node:http2';
import nodePath from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { Redis } from 'ioredis';
import type { Membership } from '../common/api';
import { intOption, requireOption, runMain } from '../common/config';
import { HTTP_HEADER_BYTES_MAX } from '../common/limits';
import { DfsError } from '../common/errors';
import { createLogger } from '../common/log';
import { KEY_LEASES_USED, KEY_MEMBERSHIP, KEY_NODES, nodeAliveKey } from '../common/redis-keys';
import { createStorageApp } from './app';
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
const MARK_LEASES_SCRIPT = `
local text = redis.call('GET', KEYS[1])
if not text then return 0 end
local m = cjson.decode(text)
if m.primary ~= ARGV[1] or tonumber(m.epoch) ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], '1')
return 1`;

const HEARTBEAT_MS = 1000;
const ALIVE_TTL_MS = 3000;
const MEMBERSHIP_POLL_MS = 300;
/** Request IDs remembered for exactly-once retries (in memory and in dedup.journal). */
const DEDUP_ENTRIES_MAX = 100_000;
/** How long a peer that said it is ahead of this primary's log is reported. */
const PEER_AHEAD_REPORT_MS = 10_000;
const H2_WINDOW_BYTES = 16 * 1024 * 1024;
/** How often at most the applied point goes to state.json (and the log is trimmed). The
 * brick's own mark (Brick.appliedSeqMark, set with every op) is what recovery starts
 * from; state.json's copy may lag, so it is not rewritten after every op. */
const STATE_SAVE_INTERVAL_MS = 1000;

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
      'hole-timeout-ms': { type: 'string' },
      'barrier-timeout-ms': { type: 'string' },
      'space-reserve-bytes': { type: 'string' },
      'space-floor-bytes': { type: 'string' },
    },
    strict: true,
  });
  const id = requireOption(values.id, 'id');
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new Error('--id must be 1 to 64 letters, digits, - or _');
  const dataDir = nodePath.resolve(requireOption(values.data, 'data'));
  const port = intOption(values.port, 'port', 7501, 1, 65535);
  const host = values.host!;
  const url = values.url ?? `http://${host}:${port}`;
  const keepOps = intOption(values['log-keep-ops'], 'log-keep-ops', 10_000, 1);
  const segmentBytesMax = intOption(values['log-segment-bytes'], 'log-segment-bytes', 64 * 1024 * 1024, 4096);
  const holeTimeoutMs = intOption(values['hole-timeout-ms'], 'hole-timeout-ms', 1000, 10);
  const barrierTimeoutMs = intOption(values['barrier-timeout-ms'], 'barrier-timeout-ms', 3000, 10);

  // Modes come from ops exactly; the process umask must not bend them.
  process.umask(0);
  const logger = createLogger('storage', { nodeId: id });

  // A full sync that a crash interrupted left a brick nobody may serve: start from nothing.
  const interruptedSync = await discardInterruptedSync(dataDir);
  const stateFile = new NodeStateFile(nodePath.join(dataDir, 'state.json'));
  // The process works in its brick from here on: every path below is absolute already.
  const brick = await Brick.open(nodePath.join(dataDir, 'brick'), { relativeToCwd: true });
  const saved = await stateFile.load(id);
  // The brick's own mark is exact; the state file is saved after the fact and may lag.
  const state = { ...saved, appliedSeq: Math.max(saved.appliedSeq, brick.appliedSeqMark()) };
  const journal = DedupJournal.open(dataDir, DEDUP_ENTRIES_MAX, state.appliedSeq);
  const { log, entries } = await OpLog.open(nodePath.join(dataDir, 'wal'), { segmentBytesMax, keepOps }, state.appliedSeq);
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
  const transport = new HTTP2PeerTransport(5000);

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
    { holeTimeoutMs, barrierTimeoutMs, pendingOpsMax: 4096, replicateBatchBytesMax: 16 * 1024 * 1024, dedupEntriesMax: DEDUP_ENTRIES_MAX, peerRetryMs: 200, syncRetryMs: 200 },
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

  const redis = new Redis(values.redis!, { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000, lazyConnect: false });
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
      mark: async () => (await redis.eval(MARK_LEASES_SCRIPT, 2, KEY_MEMBERSHIP, KEY_LEASES_USED, id, String(replica.epoch))) === 1,
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
  const adopt = async (text: string | null): Promise<void> => {
    if (!text || text === membershipText) return;
    const m = JSON.parse(text) as Membership;
    if (m.epoch < replica.epoch) return;
    if (m.epoch > replica.epoch) {
      // Persist the epoch before acting on it: a restarted node must still refuse older ones.
      await stateFile.save({ nodeId: id, epoch: m.epoch, appliedSeq: replica.appliedSeq }, true);
    }
    membershipText = text;
    membership = m;
    replica.setMembership(m);
  };

  const heartbeat = async (): Promise<void> => {
    replica.tick();
    const s = replica.state();
    await redis
      .multi()
      .hset(KEY_NODES, id, JSON.stringify({ id, url }))
      // The membership the node holds lets a leader rebuild Redis's after Redis lost its data.
      .set(
        nodeAliveKey(id),
        JSON.stringify({
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
          membership,
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
  });
  const server = serve({
    fetch: app.fetch,
    port,
    hostname: host,
    createServer: http2.createServer,
    // HTTP/2's default 64 KiB flow-control windows make a 1 MiB write wait on many
    // WINDOW_UPDATE round trips; open them to a whole replication batch (RFC 9113 §6.9).
    serverOptions: {
      settings: { maxHeaderListSize: HTTP_HEADER_BYTES_MAX, initialWindowSize: H2_WINDOW_BYTES },
      maxSessionMemory: 256,
    },
  });
  server.on('session', (session: http2.Http2Session) => session.setLocalWindowSize(H2_WINDOW_BYTES * 4));
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  logger.info({ url, dataDir }, 'storage node listening');

  const timers = [
    setInterval(() => heartbeat().catch((err: Error) => logger.warn({ err: err.message }, 'heartbeat failed')), HEARTBEAT_MS),
    setInterval(() => refreshMembership().catch((err: Error) => logger.debug({ err: err.message }, 'membership refresh failed')), MEMBERSHIP_POLL_MS),
  ];
  if (interruptedSync) fullSync.start('a full sync was interrupted (the node stopped in the middle of it)');
  await heartbeat().catch((err: Error) => logger.warn({ err: err.message }, 'first heartbeat failed'));
  await refreshMembership().catch(() => undefined);

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    timers.forEach(clearInterval);
    space.stop();
    if (saveTimer) clearTimeout(saveTimer);
    fullSync.stop();
    replica.close();
    const done = setTimeout(() => process.exit(0), 2000);
    done.unref();
    server.close();
    void Promise.allSettled([log.close(), transport.close(), stateFile.save({ nodeId: id, epoch: replica.epoch, appliedSeq: replica.appliedSeq }, true)])
      .then(() => redis.quit().catch(() => undefined))
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});
