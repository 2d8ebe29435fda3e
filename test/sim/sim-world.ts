/*
 * A deterministic simulation of the replication protocol (DESIGN.md: "the hard cases run in
 * a seeded, deterministic simulation with a fake network, disk and clock").
 *
 * Three storage nodes run the pure core (storage/replica-core.ts); everything around them
 * is simulated from one seeded PRNG (test/helpers/prng.ts) on a virtual clock:
 *
 *   clients ──> proxy tasks ──INCR──> sequencer (a counter)
 *                   │ submit {epoch, seq, reqId, op}      the leader: proxy/leader-core.ts
 *                   ▼                                     `decide` itself, a round every
 *   network: delays, drops, duplicates, reorders,         250 ms on the registry built
 *            links cut one way or both (partitions)       from the cores; nodes take
 *                   ▼                                     each membership at a random
 *   primary ──replicate──> backups, learners              poll time
 *     each node: core + disk (an op log whose un-fsynced
 *     tail a crash may lose) + brick (a tiny file model)
 *
 * The effects of each core are performed here as storage/replica.ts performs them for
 * real: appends land on the simulated disk and become durable after a random fsync time;
 * cuts of the log likewise; sends go through the simulated network with the HTTP client's
 * single outcome per request (an answer, or a failure after a while); timers run on the
 * virtual clock. Proxies retry a mutation by proxy/mutation-retry.ts, the proxy's own
 * policy (the slot again at the primary of the membership they read again on an epoch or
 * primary change or UNAVAILABLE, a new sequence ID on SLOT_TAKEN, its backoff schedule) and
 * may die right after taking a sequence ID, leaving a hole.
 * Clients retry with the same request ID, as the mount does, and read with barriers.
 *
 * Each seed draws its own fault profile and workload (2 to 6 clients, 5 to 34 ops each,
 * spread over a fault window of 1 to 16 virtual seconds). Faults: message loss,
 * duplication and long delays (so reordering), proxy deaths after taking a sequence ID
 * (holes; a client that goes away too may leave one at the tail), epoch bumps, one backup
 * removed from the in-sync set, dfs verify holds, disks that fill (docs/space.md: a node
 * low on space, whose primary refuses ops that need room with NO_SPACE, or full, whose
 * appends fail until it has room again; the leader takes a full backup out of the in-sync
 * set), crashes and pauses. A crash or a pause
 * hits the primary as often as the profile says (never, about a third, or more than half
 * the time), another node otherwise; `primaryFaults: false` spares the primary.
 * - A crash keeps the fsynced log and a random prefix of the unsynced tail; the node
 *   restarts after up to 1, 3 or 8 s (by profile) with the epoch it had persisted when it
 *   took its last membership, fenced from being primary in it (replica-core.ts,
 *   fencedEpoch), and rebuilds its brick by replaying its log from the first op up to the
 *   highest sequence ID it knew committed (the dedup table is rebuilt by the same replay).
 *   That is what the real node will do once it persists its commit point and request IDs
 *   (issue 4, crash recovery); today's node keeps its brick and loses the request-ID table.
 * - A pause (SIGSTOP, then SIGCONT) is short (up to 1.5 s) or outlasts the heartbeat (2.5
 *   to 7.5 s): everything addressed to the node, its timers and its disk completions wait,
 *   then run in the order they came. A paused primary may be replaced meanwhile; when it
 *   resumes it may still commit and answer what its backups acknowledged before they took
 *   the new epoch, and nothing after (stats: deposedAcks).
 * - A graceful stop (SIGTERM, a stream of its own) hits the primary more often than not:
 *   the node's heartbeat says `stopping`, the leader hands its role over or drops it from
 *   the in-sync set, and the node exits once the membership it holds lets it go (or at its
 *   bound), then starts again later (stats: gracefulStops, stopHandovers).
 * Partitions (a stream of their own): links between Redis, the proxies, the nodes and the
 * mounts cut one way or both for 0.2 to 8 s: a primary cut from both backups, two parties,
 * or all of them split in two. A cut link drops what crosses it; a node cut from Redis
 * stops heartbeating and polling; a proxy cut from Redis takes no sequence ID and serves no
 * read; a leader cut from Redis loses its lease to the other proxy after LEASE_MS.
 * The leader sees a node's heartbeat until 2 to 3 s after it crashed, paused or lost Redis,
 * with the figures a heartbeat carries taken from the cores and the primary's driver
 * (`failingPeers`), and runs proxy/leader-core.ts `decide` on them: there is no copy of
 * the leader here. `unconfirmedPromotion` hands it no `dfs:joining`, as a leader that
 * forgot it, and finds seeds where a promoted node not yet holding every committed op is
 * chosen at failover and acknowledged ops are lost.
 *
 * After every event the invariants are checked (`checkInvariants`, and at the moment of
 * each disk append, brick apply, acknowledgement, failover and read answer): an entry
 * holds the same op as any other of its sequence ID and epoch (an old primary's
 * uncommitted tail may differ from a later primary's slot, under an older epoch, and is
 * cut), and a sequence ID holds the same op wherever it is applied; a node applies without
 * gaps; every acknowledged op is durable on every in-sync node, and a new primary holds
 * them all. Once the faults stop and the clients are done, every node must become an
 * in-sync member again and answer a read at the newest sequence ID; the simulation runs
 * until nothing is left to happen, and the nodes must agree exactly (`checkConverged`).
 */
import assert from 'node:assert/strict';
import type { Membership, OpResult } from '../../common/api';
import type { ErrorCode } from '../../common/errors';
import type { Op } from '../../common/ops';
import type { ApplyResult } from '../../storage/brick';
import type { LogEntry } from '../../storage/op-log';
import {
  createReplicaState,
  step,
  summarize,
  type ReplicaConfig,
  type ReplicaCoreState,
  type ReplicaEffect,
  type ReplicaEvent,
  type ReplicateAck,
  type SpaceState,
  type TimerKey,
} from '../../storage/replica-core';
import { prng, type Prng } from '../helpers/prng';
import type { Joining } from '../../common/registry';
import { nextRetry } from '../../common/retry';
import { decide, newLeaderMemory, nodeView, type LeaderMemory, type NodeView } from '../../proxy/leader-core';
import { MUTATION_RETRY_POLICY, mutationGiveUpCode, mutationVerdict } from '../../proxy/mutation-retry';

export interface SimOptions {
  /** Crash and pause the primary too (on by default); off, only backups meet faults. */
  primaryFaults?: boolean;
  /** Promote a learner the moment it is close, as proxy/leader.ts does, and let it be
   * chosen at failover before it holds what was committed without it (for exploring the
   * leader's rule; see `confirmJoining`). */
  unconfirmedPromotion?: boolean;
  /** The core's step function; a test may wrap it to check that a broken core is caught. */
  step?: typeof step;
  /** Receives one line per event and effect, for replaying a failing seed. */
  trace?: (line: string) => void;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  error?: string;
  stats: Record<string, number>;
}

const NODE_IDS = ['n1', 'n2', 'n3'];
const PROXY_COUNT = 2;
const PATHS = ['/a', '/b', '/c'];

const CONFIG: ReplicaConfig = {
  holeTimeoutMs: 1000,
  barrierTimeoutMs: 3000,
  pendingOpsMax: 32,
  replicateBatchBytesMax: 200, // small, so batches and appends split
  dedupEntriesMax: 100_000,
  peerRetryMs: 200,
  syncRetryMs: 1000,
  seqAheadMax: 1024,
  holeClaimsPerRoundMax: 16,
  commitNoticeDelayMs: 5, // as storage/main.ts: backups hear commit points late, as they do for real
};

/** The HTTP/2 peer transport's deadline (storage/main.ts). */
const PEER_TIMEOUT_MS = 5000;
/** proxy/app.ts: a mutation's deadline (its retries are proxy/mutation-retry.ts's). */
const MUTATION_DEADLINE_MS = 8000;
/** The mount: a call's deadline, and how often it tries an op before giving up. */
const CLIENT_TIMEOUT_MS = 10_000;
const CLIENT_ATTEMPTS_MAX = 10;
const READ_TIMEOUT_MS = 5000;
/** The leader (proxy/leader.ts): a round every quarter lease. A node heartbeats every
 * second into a key that lives 3 s (storage/main.ts), so the leader notices a node that
 * stopped 2 to 3 s after it stopped. */
const LEADER_ROUND_MS = 250;
/** How often a node's space guard reads free space (storage/disk-space.ts). */
const SPACE_POLL_MS = 1000;
/** A stopping node's look at the membership, and how long it waits for the leader to take
 * it out of the in-sync set (storage/main.ts: STOP_POLL_MS; --stop-timeout-ms less 2.5 s). */
const STOP_POLL_MS = 100;
const STOP_HANDOVER_MS = 12_500;
const HEARTBEAT_LAPSE_MS_MIN = 2000;
const HEARTBEAT_LAPSE_MS_SPREAD = 1000;
/** The leader's lease (proxy --lease-ms): a leader cut from Redis loses it after this long. */
const LEASE_MS = 3000;
/** Parties a partition cuts links between: Redis, the proxies, the storage nodes and the
 * mounts (clients c0, c2… use m0, c1, c3… m1). */
const PARTIES = ['redis', 'p0', 'p1', 'n1', 'n2', 'n3', 'm0', 'm1'];
/** Bounds that turn a livelock or a stall into a failure instead of a hang. */
const EVENTS_MAX = 2_000_000;
/** How long after the faults stop every in-sync node must have applied every sequence ID. */
const DRAIN_MS_MAX = 120_000;
const VIRTUAL_MS_MAX = 30 * 60 * 1000;

export class SimFailure extends Error {}

// ---- the virtual clock: a heap of tasks ordered by time, then by scheduling order ----

interface Task {
  at: number;
  order: number;
  run: () => void;
  cancelled: boolean;
}

class Clock {
  now = 0;
  private heap: Task[] = [];
  private order = 0;

  after(delayMs: number, run: () => void): Task {
    assert.ok(delayMs >= 0 && Number.isFinite(delayMs), `bad delay ${delayMs}`);
    const t: Task = { at: this.now + delayMs, order: this.order++, run, cancelled: false };
    const h = this.heap;
    h.push(t);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
    return t;
  }

  /** The next task to run, with the clock moved to its time; undefined when none is left. */
  next(): Task | undefined {
    const h = this.heap;
    while (h.length > 0) {
      const top = h[0]!;
      const last = h.pop()!;
      if (h.length > 0) {
        h[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (l < h.length && before(h[l]!, h[m]!)) m = l;
          if (r < h.length && before(h[r]!, h[m]!)) m = r;
          if (m === i) break;
          [h[i], h[m]] = [h[m]!, h[i]!];
          i = m;
        }
      }
      if (top.cancelled) continue;
      this.now = top.at;
      return top;
    }
    return undefined;
  }
}

function before(a: Task, b: Task): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

// ---- answers across the simulated network ----

type Reply<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; message: string };
const unavailable = (message: string): Reply<never> => ({ ok: false, code: 'UNAVAILABLE', message });

// ---- the brick: a tiny file model, enough for results to depend on history ----

class SimBrick {
  readonly files = new Map<string, Buffer>();
  /** The last sequence ID applied to this brick (dedup hits never reach it). */
  lastSeq = 0;
  readonly reqIds = new Set<string>();
  /** reqId -> the errno of its first application, for checking answers. */
  readonly outcomes = new Map<string, string | undefined>();

  apply(op: Op, data: Buffer): ApplyResult {
    const exists = (p: string) => this.files.has(p);
    switch (op.type) {
      case 'noop':
        return {};
      case 'create':
        if (exists(op.path)) return op.exclusive ? { errno: 'EEXIST' } : {};
        this.files.set(op.path, Buffer.alloc(0));
        return {};
      case 'write': {
        const f = this.files.get(op.path);
        if (!f) return { errno: 'ENOENT' };
        const out = Buffer.alloc(Math.max(f.length, op.offset + data.length));
        f.copy(out);
        data.copy(out, op.offset);
        this.files.set(op.path, out);
        return {};
      }
      case 'truncate': {
        const f = this.files.get(op.path);
        if (!f) return { errno: 'ENOENT' };
        const out = Buffer.alloc(op.size);
        f.copy(out, 0, 0, Math.min(f.length, op.size));
        this.files.set(op.path, out);
        return {};
      }
      case 'unlink':
        return this.files.delete(op.path) ? {} : { errno: 'ENOENT' };
      default:
        throw new SimFailure(`the simulation generates no ${op.type} ops`);
    }
  }

  digest(): string {
    return [...this.files.entries()]
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([p, d]) => `${p}=${d.toString('hex')}`)
      .join(';');
  }
}

// ---- a storage node: the core, its disk, its brick, its timers ----

interface SimNode {
  id: string;
  url: string;
  up: boolean;
  /** Bumped by every crash: callbacks of an earlier life are dropped. */
  incarnation: number;
  core: ReplicaCoreState | null;
  disk: { synced: LogEntry[]; unsynced: LogEntry[] };
  /** The state file: the highest epoch seen, and the highest sequence ID known committed. */
  saved: { epoch: number; committedSeq: number };
  brick: SimBrick;
  timers: Map<TimerKey, Task>;
  inbound: Map<number, (r: Reply<unknown>) => void>;
  nextToken: number;
  membershipText: string;
  /** Stopped (SIGSTOP): nothing runs on it; what arrives waits in `stalled` until it resumes. */
  paused: boolean;
  stalled: Array<() => void>;
  /** When it stopped heartbeating (crashed or paused; null while it runs), and how long
   * its last heartbeat outlives that. */
  silentSinceMs: number | null;
  lapseMs: number;
  /** Its disk's room: low, or full (appends fail with NO_SPACE). It is the disk's, so it
   * outlives a crash. */
  space: SpaceState;
  /** What its space guard says (storage/disk-space.ts), as its heartbeat carries it: a disk
   * filling reads low first, and full once an append failed for want of room. */
  guard: SpaceState;
  /** Primary's driver: peer -> since when every request to it has failed (storage/replica.ts). */
  failingSince: Map<string, number>;
  /** Since when its link to Redis is cut (its heartbeats stop reaching Redis); null: not cut. */
  redisCutSinceMs: number | null;
  /** Got SIGTERM: its heartbeat says `stopping` until it exits (storage/main.ts stop). */
  stopping: boolean;
}

interface SimProxy {
  id: string;
  membership: Membership;
}

interface Acked {
  reqId: string;
  seq: number;
  errno: string | undefined;
}

function identity(e: LogEntry): string {
  const h = e.header;
  return `${h.reqId}|${h.timeMs}|${JSON.stringify(h.op)}|${e.data.toString('hex')}`;
}

function cloneEntry(e: LogEntry): LogEntry {
  // What crosses a network is a copy: no node may see another's objects change.
  return { header: { ...e.header, op: { ...e.header.op } }, data: Buffer.from(e.data) };
}

export function simulate(seed: number, options: SimOptions = {}): SimResult {
  const world = new World(seed, options);
  try {
    world.run();
    return { seed, ok: true, stats: world.stats };
  } catch (e) {
    const error = e instanceof Error ? `${e.message}\n${e.stack?.split('\n').slice(1, 6).join('\n')}` : String(e);
    return { seed, ok: false, error: `at ${world.clock.now.toFixed(3)} ms: ${error}`, stats: world.stats };
  }
}

class World {
  readonly rng: Prng;
  readonly clock = new Clock();
  readonly stats: Record<string, number> = {
    events: 0,
    virtualMs: 0,
    opsAcked: 0,
    opsGivenUp: 0,
    disksFull: 0,
    disksLow: 0,
    appendsRefused: 0,
    fullRemovals: 0,
    noSpaceAnswers: 0,
    opsAbandoned: 0,
    holds: 0,
    reads: 0,
    holesClaimed: 0,
    crashes: 0,
    epochBumps: 0,
    removals: 0,
    proxyDeaths: 0,
    dropped: 0,
    duplicated: 0,
    refusals: 0,
    gaps: 0,
    staleEpochs: 0,
    slotTaken: 0,
    stranded: 0,
    truncations: 0,
    primaryCrashes: 0,
    pauses: 0,
    failovers: 0,
    fencedRepublishes: 0,
    lapseRemovals: 0,
    promotions: 0,
    confirmations: 0,
    deposedAcks: 0,
    deposedRefusals: 0,
    partitions: 0,
    cutMessages: 0,
    leaderChanges: 0,
    handovers: 0,
    unreachableRemovals: 0,
    gracefulStops: 0,
    stopHandovers: 0,
  };
  /** Links cut now: `from>to` -> how many partitions cut it (they may overlap). */
  private readonly cuts = new Map<string, number>();
  private readonly partRng: Prng;
  private readonly stopRng: Prng;
  private readonly trace: ((line: string) => void) | undefined;
  private readonly step: typeof step;
  private readonly nodes: SimNode[];
  private readonly redis: { seq: number; membership: Membership };
  private readonly proxies: SimProxy[];
  /** The op each (sequence ID, epoch) holds, as first appended anywhere: one primary per
   * epoch writes each slot once. An old primary's uncommitted tail may hold another op in
   * a slot than a later primary does, under an older epoch; it is cut, never applied. */
  private readonly slots = new Map<string, string>();
  /** The op each sequence ID holds, as first applied (or skipped as a retry) anywhere. */
  private readonly appliedSlots = new Map<number, string>();
  /** Ops the primary acknowledged to a proxy, in order. */
  private readonly acked: Acked[] = [];
  private maxAckedSeq = 0;
  private readonly clientAnswers = new Map<string, string | undefined>();
  private faultsOn = true;
  private readonly faultEndMs: number;
  private readonly profile: {
    drop: number;
    duplicate: number;
    slow: number;
    proxyDeath: number;
    unsyncedLoss: boolean;
    fsyncMsMax: number;
    /** How likely a crash or a pause hits the primary rather than another node. */
    primaryFault: number;
    /** How long a crashed node stays down at most. */
    downMsMax: number;
  };
  /** `dfs:joining`: nodes the leader put in the in-sync set that may still lack ops
   * committed without them (proxy/leader-core.ts confirms them); only the leader writes it. */
  private readonly joining = new Map<string, Joining>();
  /** The proxy holding the leader's lease, what its `decide` remembers, and since when it
   * has been cut from Redis. */
  private leaderProxy = 0;
  private leaderMemory: LeaderMemory = newLeaderMemory();
  private leaderCutSinceMs: number | null = null;
  /** The final reads: the barrier, the nodes that answered it, the ones asked. */
  private drain: { barrier: number; answered: Set<string>; asking: Set<string>; done: boolean } | null = null;
  private readonly clientCount: number;
  private readonly spaceRng: Prng;
  private clientsRunning: number;

  constructor(
    readonly seed: number,
    private readonly options: SimOptions,
  ) {
    this.rng = prng(seed);
    this.trace = options.trace;
    this.step = options.step ?? step;
    const r = this.rng;
    // Each seed draws its own fault profile, so that a thousand seeds cover calm and storm.
    this.profile = {
      drop: r.pick([0, 0, 0.01, 0.05, 0.15]),
      duplicate: r.pick([0, 0.02, 0.1]),
      slow: r.pick([0, 0.05, 0.2]),
      proxyDeath: r.pick([0, 0.02, 0.1]),
      unsyncedLoss: r.next() < 0.8,
      fsyncMsMax: r.pick([1, 5, 30]),
      primaryFault: r.pick([0, 0.3, 0.6]),
      downMsMax: r.pick([1000, 3000, 8000]),
    };
    // Drawn either way, so that a seed draws the same faults with primary faults off.
    if (options.primaryFaults === false) this.profile.primaryFault = 0;
    this.clientCount = 2 + r.int(5);
    this.clientsRunning = this.clientCount;
    this.faultEndMs = 1000 + r.int(15_000);
    const nodes: Record<string, string> = {};
    for (const id of NODE_IDS) nodes[id] = `sim://${id}`;
    this.redis = { seq: 0, membership: { epoch: 1, primary: 'n1', inSync: [...NODE_IDS], nodes } };
    this.proxies = Array.from({ length: PROXY_COUNT }, (_, i) => ({ id: `p${i}`, membership: this.redis.membership }));
    this.nodes = NODE_IDS.map((id) => ({
      id,
      url: nodes[id]!,
      up: true,
      incarnation: 0,
      core: createReplicaState({ id, config: CONFIG, epoch: 0, appliedSeq: 0, logLastSeq: 0, recovered: [] }),
      disk: { synced: [], unsynced: [] },
      saved: { epoch: 0, committedSeq: 0 },
      brick: new SimBrick(),
      timers: new Map(),
      inbound: new Map(),
      nextToken: 1,
      membershipText: '',
      paused: false,
      stalled: [],
      silentSinceMs: null,
      lapseMs: 0,
      space: 'ok' as SpaceState,
      guard: 'ok' as SpaceState,
      failingSince: new Map<string, number>(),
      redisCutSinceMs: null,
      stopping: false,
    }));
    // Disks filling up: drawn from a stream of their own, so that every other fault a seed
    // draws stays as it was before they were added.
    this.spaceRng = prng(seed * 7919 + 17);
    // Partitions likewise draw from a stream of their own.
    this.partRng = prng(seed * 104_729 + 31);
    // Graceful stops (SIGTERM) likewise.
    this.stopRng = prng(seed * 15_485_863 + 7);
    this.log(`seed ${seed} profile ${JSON.stringify(this.profile)} faults until ${this.faultEndMs} ms`);
  }

  private log(line: string): void {
    this.trace?.(`[${this.clock.now.toFixed(3).padStart(10)}] ${line}`);
  }

  private fail(message: string): never {
    throw new SimFailure(message);
  }

  private node(id: string): SimNode {
    const n = this.nodes.find((x) => x.id === id);
    assert.ok(n, `no node ${id}`);
    return n;
  }

  run(): void {
    for (const n of this.nodes) this.clock.after(this.rng.int(5), () => this.onNode(n, 0, () => this.adoptMembership(n)));
    this.scheduleFaults();
    this.clock.after(LEADER_ROUND_MS, () => this.leaderRound());
    for (let c = 0; c < this.clientCount; c++) this.clock.after(10 + this.rng.int(20), () => this.runClient(c));
    this.clock.after(this.faultEndMs, () => {
      this.faultsOn = false;
      this.log('faults stop');
      if (this.cuts.size > 0) {
        this.cuts.clear();
        this.afterLinksChanged();
      }
      this.maybeDrain();
    });
    for (let t = this.clock.next(); t !== undefined; t = this.clock.next()) {
      if (++this.stats.events > EVENTS_MAX) this.fail(`no quiescence after ${EVENTS_MAX} events`);
      if (this.clock.now > VIRTUAL_MS_MAX) this.fail(`still busy after ${VIRTUAL_MS_MAX} virtual ms`);
      t.run();
      this.checkInvariants();
    }
    this.stats.virtualMs = Math.round(this.clock.now);
    this.checkConverged();
  }

  // ---- faults ----

  private scheduleFaults(): void {
    const r = this.rng;
    const crashes = r.int(4);
    for (let i = 0; i < crashes; i++) this.clock.after(r.int(this.faultEndMs), () => this.crashSomeNode());
    const pauses = r.next() < 0.5 ? 1 + r.int(2) : 0;
    for (let i = 0; i < pauses; i++) {
      // Short pauses the leader never notices; long ones outlast the heartbeat.
      const ms = r.next() < 0.5 ? 50 + r.int(1500) : 2500 + r.int(5000);
      this.clock.after(r.int(this.faultEndMs), () => this.pauseSomeNode(ms));
    }
    const verifies = r.int(3);
    for (let i = 0; i < verifies; i++) this.clock.after(r.int(this.faultEndMs), () => this.verify());
    const bumps = r.int(4);
    for (let i = 0; i < bumps; i++) {
      this.clock.after(r.int(this.faultEndMs), () => {
        this.stats.epochBumps++;
        this.publish({ ...this.redis.membership, epoch: this.redis.membership.epoch + 1 });
      });
    }
    const partitions = this.partRng.pick([0, 0, 1, 2, 3, 4]);
    for (let i = 0; i < partitions; i++) this.clock.after(this.partRng.int(this.faultEndMs), () => this.faultsOn && this.partition());
    const stops = this.stopRng.pick([0, 0, 1, 2]);
    for (let i = 0; i < stops; i++) this.clock.after(this.stopRng.int(this.faultEndMs), () => this.faultsOn && this.stopSomeNode());
    const spaceEpisodes = this.spaceRng.pick([0, 0, 0, 1, 2, 3]);
    for (let i = 0; i < spaceEpisodes; i++) {
      const sr = this.spaceRng;
      const n = sr.pick(this.nodes);
      const state: SpaceState = sr.next() < 0.6 ? 'full' : 'low';
      const ms = 100 + sr.int(3000);
      this.clock.after(sr.int(this.faultEndMs), () => this.fillDisk(n, state, ms));
    }
    if (r.next() < 0.15) {
      this.clock.after(r.int(this.faultEndMs), () => {
        const m = this.redis.membership;
        const backups = m.inSync.filter((id) => id !== m.primary);
        if (backups.length === 0) return;
        const gone = r.pick(backups);
        this.stats.removals++;
        this.log(`leader removes ${gone} from the in-sync set`);
        this.publish({ ...m, epoch: m.epoch + 1, inSync: m.inSync.filter((id) => id !== gone) });
      });
    }
  }

  /** A node's disk is low or full for `ms`, then has room again; the node's space guard
   * tells its core at once each time (storage/main.ts). */
  private fillDisk(n: SimNode, state: SpaceState, ms: number): void {
    if (n.space !== 'ok') return; // one episode at a time
    this.stats[state === 'full' ? 'disksFull' : 'disksLow']++;
    this.log(`${n.id}'s disk is ${state} for ${ms} ms`);
    const tell = (st: SpaceState) => {
      n.guard = st;
      if (n.up && n.core) this.onNode(n, n.incarnation, () => n.core && this.dispatch(n, { type: 'space', state: st }));
    };
    n.space = state;
    // statfs shows it below the floor; that it is full shows when an append fails.
    tell('low');
    this.clock.after(ms, () => {
      this.log(`${n.id}'s disk has room again`);
      n.space = 'ok';
      tell('ok');
    });
  }

  /** The guard reads free space every second: `full` lasts until it finds room. */
  private pollGuard(n: SimNode): void {
    const inc = n.incarnation;
    this.clock.after(SPACE_POLL_MS, () =>
      this.onNode(n, inc, () => {
        if (n.guard !== 'full') return;
        if (n.space === 'full') return this.pollGuard(n);
        n.guard = n.space;
        this.dispatch(n, { type: 'space', state: n.guard });
      }),
    );
  }

  /** The leader writes a membership; every node sees it at its next poll. */
  private publish(m: Membership): void {
    this.redis.membership = m;
    this.log(`membership e${m.epoch} primary ${m.primary} inSync ${m.inSync.join(',')}`);
    for (const n of this.nodes) {
      const inc = n.incarnation;
      this.clock.after(this.rng.int(300), () => this.onNode(n, inc, () => this.adoptMembership(n)));
    }
  }

  /** Runs `fn` on node `n` in incarnation `inc`: dropped if it crashed since, held until it
   * resumes if it is paused (a stopped process reads its sockets and timers late). */
  private onNode(n: SimNode, inc: number, fn: () => void): void {
    if (!n.up || n.incarnation !== inc) return;
    if (n.paused) n.stalled.push(fn);
    else fn();
  }

  /** storage/main.ts refreshMembership: persist a newer epoch, then hand it to the core. */
  private adoptMembership(n: SimNode): void {
    if (!n.up || this.cutEitherWay(n.id, 'redis')) return;
    const m = this.redis.membership;
    const text = JSON.stringify(m);
    if (text === n.membershipText || m.epoch < n.core!.epoch) return;
    if (m.epoch > n.core!.epoch) n.saved.epoch = m.epoch;
    n.membershipText = text;
    this.dispatch(n, { type: 'membership', membership: m });
  }

  /** The node a crash or a pause hits: the primary as likely as the profile says, when
   * it runs; otherwise another running node. */
  private faultTarget(): SimNode | null {
    const primary = this.node(this.redis.membership.primary);
    const running = (n: SimNode) => n.up && !n.paused;
    const hitPrimary = this.rng.next() < this.profile.primaryFault;
    if (hitPrimary && running(primary)) return primary;
    const others = this.nodes.filter((n) => running(n) && n !== primary);
    return others.length === 0 ? null : this.rng.pick(others);
  }

  /** The heartbeat stops now; the leader notices once the last one expires. */
  private fallSilent(n: SimNode): void {
    n.silentSinceMs = this.clock.now;
    n.lapseMs = HEARTBEAT_LAPSE_MS_MIN + this.rng.int(HEARTBEAT_LAPSE_MS_SPREAD);
  }

  /** The leader still sees the node's heartbeat. */
  private heartbeating(n: SimNode): boolean {
    const ran = n.silentSinceMs === null || this.clock.now < n.silentSinceMs + n.lapseMs;
    // Cut from Redis, its heartbeats stop landing; the last one lapses as after a pause.
    const reached = n.redisCutSinceMs === null || this.clock.now < n.redisCutSinceMs + HEARTBEAT_LAPSE_MS_MIN;
    return ran && reached;
  }

  // ---- partitions: links cut one way or both (firewall rules dropping packets) ----

  private cut(from: string, to: string): boolean {
    return (this.cuts.get(`${from}>${to}`) ?? 0) > 0;
  }

  private cutEitherWay(a: string, b: string): boolean {
    return this.cut(a, b) || this.cut(b, a);
  }

  /** Cuts (delta 1) or heals (delta -1) the links from each of `from` to each of `to`. */
  private setCut(from: string[], to: string[], delta: number): void {
    for (const a of from) {
      for (const b of to) {
        if (a === b) continue;
        const k = `${a}>${b}`;
        this.cuts.set(k, (this.cuts.get(k) ?? 0) + delta);
      }
    }
    this.afterLinksChanged();
  }

  /** A node's link to Redis decides its heartbeat and its membership polls. */
  private afterLinksChanged(): void {
    for (const n of this.nodes) {
      const cutNow = this.cutEitherWay(n.id, 'redis');
      if (cutNow && n.redisCutSinceMs === null) n.redisCutSinceMs = this.clock.now;
      if (!cutNow && n.redisCutSinceMs !== null) {
        n.redisCutSinceMs = null;
        // Its next poll (every 300 ms) reads the membership it missed.
        const inc = n.incarnation;
        this.clock.after(this.rng.int(300), () => this.onNode(n, inc, () => this.adoptMembership(n)));
      }
    }
  }

  /** One partition: a party cut from others (one way or both) for a while. Some isolate
   * the primary from the other nodes (Redis reachable), some split the parties in two. */
  private partition(): void {
    const r = this.partRng;
    const ms = 200 + r.int(r.next() < 0.5 ? 2000 : 8000);
    const m = this.redis.membership;
    let a: string[];
    let b: string[];
    const kind = r.int(4);
    if (kind === 0) {
      a = [m.primary];
      b = NODE_IDS.filter((id) => id !== m.primary);
    } else if (kind === 1) {
      const shuffled = [...PARTIES];
      for (let i = shuffled.length - 1; i > 0; i--) {
        const j = r.int(i + 1);
        [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
      }
      const k = 1 + r.int(shuffled.length - 1);
      a = shuffled.slice(0, k);
      b = shuffled.slice(k);
    } else {
      const x = r.pick(PARTIES);
      a = [x];
      b = [r.pick(PARTIES.filter((y) => y !== x))];
    }
    const way = r.int(3); // 0: both ways, 1: a to b only, 2: b to a only
    const cutAB = way !== 2;
    const cutBA = way !== 1;
    this.stats.partitions++;
    this.log(`partition for ${ms} ms: ${a.join(',')} ${cutAB && cutBA ? '<-/->' : cutAB ? '-/->' : '<-/-'} ${b.join(',')}`);
    if (cutAB) this.setCut(a, b, 1);
    if (cutBA) this.setCut(b, a, 1);
    this.clock.after(ms, () => {
      if (cutAB) this.setCut(a, b, -1);
      if (cutBA) this.setCut(b, a, -1);
      this.log(`healed: ${a.join(',')} / ${b.join(',')}`);
    });
  }

  /** SIGSTOP, then SIGCONT after `ms`: everything sent to the node, and its own timers and
   * disk completions, wait; then they run in the order they arrived. */
  private pauseSomeNode(ms: number): void {
    const n = this.faultTarget();
    if (!n) return;
    this.stats.pauses++;
    n.paused = true;
    this.fallSilent(n);
    this.log(`${n.id} pauses for ${ms} ms${n.id === this.redis.membership.primary ? ' (the primary)' : ''}`);
    this.clock.after(ms, () => {
      n.paused = false;
      n.silentSinceMs = null;
      this.log(`${n.id} resumes; ${n.stalled.length} callbacks waited`);
      const inc = n.incarnation;
      for (const fn of n.stalled.splice(0)) this.clock.after(0, () => this.onNode(n, inc, fn));
    });
  }

  /**
   * SIGTERM, as storage/main.ts stops: the heartbeat says `stopping`; while the membership
   * the node holds counts it in sync and another node could take its place, it keeps
   * serving and looks again every STOP_POLL_MS, up to STOP_HANDOVER_MS; then it exits
   * (its unsynced tail as a crash leaves it: the stop does not wait for the disk) and is
   * started again later, as a pod is.
   */
  private stopSomeNode(): void {
    const r = this.stopRng;
    const m = this.redis.membership;
    const running = this.nodes.filter((x) => x.up && !x.paused && !x.stopping);
    const primary = running.find((x) => x.id === m.primary);
    const n = primary && r.next() < 0.6 ? primary : running.length > 0 ? r.pick(running) : null;
    if (!n) return;
    this.stats.gracefulStops++;
    n.stopping = true;
    const wasPrimary = n.id === m.primary;
    this.log(`${n.id} gets SIGTERM${wasPrimary ? ' (the primary)' : ''}`);
    const inc = n.incarnation;
    const startedAt = this.clock.now;
    const held = (): boolean => {
      if (n.membershipText === '') return false;
      const mine = JSON.parse(n.membershipText) as Membership;
      if (!mine.inSync.includes(n.id)) return false;
      return mine.primary !== n.id || mine.inSync.some((id) => id !== n.id);
    };
    const look = (): void => {
      if (held() && this.clock.now - startedAt < STOP_HANDOVER_MS) {
        this.clock.after(STOP_POLL_MS, () => this.onNode(n, inc, look));
        return;
      }
      const mine = n.membershipText === '' ? null : (JSON.parse(n.membershipText) as Membership);
      if (wasPrimary && mine !== null && mine.primary !== n.id) this.stats.stopHandovers++;
      this.log(`${n.id} exits after ${Math.round(this.clock.now - startedAt)} ms; the membership it holds names ${mine?.primary ?? 'nobody'} primary`);
      this.stopNode(n);
    };
    this.onNode(n, inc, look);
  }

  private crashSomeNode(): void {
    const n = this.faultTarget();
    if (!n) return;
    this.stats.crashes++;
    if (n.id === this.redis.membership.primary) this.stats.primaryCrashes++;
    this.stopNode(n);
  }

  /** The process ends (a crash, or the end of a stop); it starts again after a while. */
  private stopNode(n: SimNode): void {
    this.fallSilent(n);
    n.up = false;
    n.incarnation++;
    for (const t of n.timers.values()) t.cancelled = true;
    n.timers.clear();
    for (const reply of n.inbound.values()) reply(unavailable('connection reset'));
    n.inbound.clear();
    // Whatever was written but not fsynced may or may not have reached the disk.
    const keep = this.profile.unsyncedLoss ? this.rng.int(n.disk.unsynced.length + 1) : n.disk.unsynced.length;
    n.disk.synced.push(...n.disk.unsynced.slice(0, keep));
    this.log(`${n.id} crashes; log keeps ${n.disk.synced.length} (lost ${n.disk.unsynced.length - keep} unsynced)`);
    n.disk.unsynced = [];
    n.core = null;
    n.failingSince.clear();
    n.membershipText = '';
    this.clock.after(50 + this.rng.int(this.profile.downMsMax), () => this.restart(n));
  }

  private restart(n: SimNode): void {
    const log = n.disk.synced;
    assert.ok(n.saved.committedSeq <= log.length, `${n.id} knew ${n.saved.committedSeq} committed but its log ends at ${log.length}`);
    n.brick = new SimBrick();
    n.core = createReplicaState({
      id: n.id,
      config: CONFIG,
      epoch: n.saved.epoch,
      appliedSeq: 0,
      commitSeq: n.saved.committedSeq,
      logLastSeq: log.length,
      recovered: log.slice(),
      fencedEpoch: n.saved.epoch,
    });
    // The driver hands the core its space guard's verdict before anything else (Replica).
    // A new process's guard reads the disk afresh.
    n.guard = n.space === 'full' ? 'low' : n.space;
    if (n.guard !== 'ok') n.core.space = n.guard;
    n.up = true;
    n.stopping = false;
    n.silentSinceMs = null; // it heartbeats as it starts
    this.log(`${n.id} restarts at epoch ${n.saved.epoch}, replaying ${log.length} ops, ${n.saved.committedSeq} known committed`);
    const inc = n.incarnation;
    this.clock.after(1 + this.rng.int(20), () => this.onNode(n, inc, () => this.adoptMembership(n)));
  }

  // ---- the leader (proxy/leader-core.ts, run here as proxy/leader.ts runs it) ----

  /** The leader's view of a node: its heartbeat is there, and the figures it carries. A
   * paused node's figures are the ones it had when it stopped, as its last heartbeat's. */
  private alive(n: SimNode): n is SimNode & { core: ReplicaCoreState } {
    return n.up && n.core !== null && this.heartbeating(n);
  }

  /** What the leader reads for a node: its registration and, while it heartbeats, the
   * heartbeat storage/main.ts would write from its core and driver. */
  private viewOf(n: SimNode): NodeView {
    if (!this.alive(n)) return nodeView(n.id, { id: n.id, url: n.url }, null);
    const c = n.core;
    const s = summarize(c);
    return nodeView(
      n.id,
      { id: n.id, url: n.url },
      {
        url: n.url,
        appliedSeq: c.appliedSeq,
        durableSeq: c.durableSeq,
        commitSeq: c.commitSeq,
        epoch: c.epoch,
        logEpoch: s.logEpoch,
        role: c.role,
        primaryFenced: c.primaryFenced,
        failingPeers: this.failingPeers(n),
        peersAhead: [],
        syncing: c.syncing,
        space: n.guard,
        sync: null,
        membership: null,
        belowFloor: s.belowFloor,
        stopping: n.stopping,
      },
    );
  }

  /** Primary: peer -> how long every request to it has failed (storage/replica.ts). */
  private failingPeers(n: SimNode & { core: ReplicaCoreState }): Record<string, number> {
    if (n.core.role !== 'primary') return {};
    const out: Record<string, number> = {};
    for (const [id, since] of n.failingSince) if (n.core.peers.has(id)) out[id] = this.clock.now - since;
    return out;
  }

  private rounds = 0;

  /** One round of the leader proxy: read the registry, run `decide`, perform its writes,
   * publish. The lease moves to the other proxy when the leader is cut from Redis for a
   * lease; the new leader starts with no memory. */
  private leaderRound(): void {
    if (this.drain?.done) return; // everything converged: nothing left to lead
    this.clock.after(LEADER_ROUND_MS, () => this.leaderRound());
    // Every fourth round is a second: each node's heartbeat ticks its core (storage/main.ts).
    if (++this.rounds % 4 === 0) {
      for (const n of this.nodes) if (n.core) this.onNode(n, n.incarnation, () => this.dispatch(n, { type: 'tick' }));
    }
    const leader = `p${this.leaderProxy}`;
    if (this.cutEitherWay(leader, 'redis')) {
      // Its renewals fail; once the lease lapses another proxy that reaches Redis takes it.
      this.leaderCutSinceMs ??= this.clock.now;
      if (this.clock.now - this.leaderCutSinceMs < LEASE_MS) return;
      const other = Array.from({ length: PROXY_COUNT }, (_, i) => i).find((i) => !this.cutEitherWay(`p${i}`, 'redis'));
      if (other === undefined) return;
      this.stats.leaderChanges++;
      this.log(`leader: p${other} takes the lease from ${leader}, cut from Redis`);
      this.leaderProxy = other;
      this.leaderMemory = newLeaderMemory();
      this.leaderCutSinceMs = null;
      return;
    }
    this.leaderCutSinceMs = null;
    const m = this.redis.membership;
    const nodes = this.nodes.map((n) => this.viewOf(n));
    // The leader's probe of the primary's port: refused when the process is gone and the
    // link carries the refusal.
    const p = this.node(m.primary);
    const refused = !p.up && nodes.find((v) => v.id === p.id)?.alive && !this.cutEitherWay(leader, p.id) ? [p.id] : [];
    const d = decide({
      membership: m,
      nodes,
      removing: {},
      // `unconfirmedPromotion`: a leader that forgets promotions, so counts them confirmed.
      joining: this.options.unconfirmedPromotion ? {} : Object.fromEntries(this.joining),
      seq: this.redis.seq,
      refused,
      minInSync: 0,
      nowMs: this.clock.now,
      memory: this.leaderMemory,
    });
    this.leaderMemory = d.memory;
    for (const note of d.notes) {
      this.log(`leader: ${note.msg} ${JSON.stringify(note.fields)}`);
      if (note.msg.startsWith('promoted backup holds everything')) this.stats.confirmations++;
    }
    for (const w of d.writes) {
      if (w.type === 'setJoining') this.joining.set(w.id, w.value);
      else if (w.type === 'deleteJoining') this.joining.delete(w.id);
      else this.fail(`the leader wrote ${w.type}, which the simulation never asks for`);
    }
    if (d.restore) this.fail('the leader restored counters, but Redis never lost its data here');
    if (!d.next) return;
    const next: Membership = { ...d.next, epoch: m.epoch + 1 };
    this.log(`leader: ${d.why}`);
    if (next.primary !== m.primary) {
      // An acknowledged op is never lost: the new primary's log holds every one.
      for (const a of this.acked) {
        if (this.node(next.primary).disk.synced[a.seq - 1]?.header.reqId !== a.reqId) this.fail(`failover to ${next.primary} loses acknowledged ${a.reqId} (seq ${a.seq})`);
      }
      this.stats.failovers++;
      if (this.heartbeating(p) && p.up) this.stats.handovers++;
    } else if (next.inSync.length < m.inSync.length) {
      if (d.why?.includes('out of space')) this.stats.fullRemovals++;
      else if (d.why?.includes('stopped answering')) this.stats.unreachableRemovals++;
      else this.stats.lapseRemovals++;
    } else if (next.inSync.length > m.inSync.length) this.stats.promotions++;
    else if (d.why?.includes('needs a new epoch')) this.stats.fencedRepublishes++;
    this.publish(next);
  }

  // ---- the network ----

  private delay(): number {
    if (this.faultsOn && this.rng.next() < this.profile.slow) return 50 + this.rng.int(750);
    return 0.1 + this.rng.next() * 2;
  }

  private lost(): boolean {
    if (!this.faultsOn || this.rng.next() >= this.profile.drop) return false;
    this.stats.dropped++;
    return true;
  }

  /**
   * One request with the HTTP client's contract: exactly one outcome reaches the sender,
   * an answer or a failure. The request may be lost, delivered late, or delivered twice
   * (a duplicate's answer reaches no one); an answer may be lost, and the sender then
   * learns of a failure at some point before its timeout.
   */
  private request<T>(from: string, target: SimNode, timeoutMs: number, deliver: (reply: (r: Reply<T>) => void) => void, onResult: (r: Reply<T>) => void): void {
    let done = false;
    const finish = (r: Reply<T>) => {
      if (done) return;
      done = true;
      timeout.cancelled = true;
      onResult(r);
    };
    const timeout = this.clock.after(timeoutMs, () => finish(unavailable('timed out')));
    const failLater = (message: string) => this.clock.after(this.rng.next() * timeoutMs, () => finish(unavailable(message)));
    const attempt = (duplicate: boolean) => {
      if (this.lost()) {
        if (!duplicate) failLater('request lost');
        return;
      }
      this.clock.after(this.delay(), () => {
        // A cut link drops packets: the sender hears nothing until its deadline.
        if (this.cut(from, target.id)) {
          this.stats.cutMessages++;
          return;
        }
        if (!target.up) {
          if (!duplicate && !this.cut(target.id, from)) this.clock.after(this.delay(), () => finish(unavailable('connection refused')));
          return;
        }
        // A paused node takes the request when it resumes (the connection stays open).
        this.onNode(target, target.incarnation, () =>
          deliver((r) => {
            if (duplicate) return;
            if (this.cut(target.id, from)) {
              this.stats.cutMessages++;
              return; // the answer is dropped: the sender times out
            }
            if (this.lost()) {
              failLater('answer lost');
              return;
            }
            this.clock.after(this.delay(), () => finish(r));
          }),
        );
      });
    };
    attempt(false);
    if (this.faultsOn && this.rng.next() < this.profile.duplicate) {
      this.stats.duplicated++;
      this.clock.after(this.delay() + this.rng.int(500), () => attempt(true));
    }
  }

  // ---- a node: the storage app's handlers and the driver's effects ----

  /** A request arriving at a node, as storage/app.ts hands it to the replica. */
  private handle(n: SimNode, make: (token: number) => ReplicaEvent, epoch: number | null, reply: (r: Reply<unknown>) => void): void {
    // A request from a newer epoch first makes the node read the membership.
    if (epoch !== null && epoch > n.core!.epoch) this.adoptMembership(n);
    const token = n.nextToken++;
    n.inbound.set(token, reply);
    this.dispatch(n, make(token));
  }

  private dispatch(n: SimNode, event: ReplicaEvent): void {
    assert.ok(n.up && n.core, `event for ${n.id}, which is down`);
    assert.ok(!n.paused, `event for ${n.id}, which is paused`);
    const queue: ReplicaEvent[] = [event];
    for (let e = queue.shift(); e !== undefined; e = queue.shift()) {
      if (this.trace) this.log(`${n.id} <- ${describeEvent(e)}`);
      const { effects } = this.step(n.core, e);
      for (const fx of effects) {
        if (this.trace) this.log(`${n.id} -> ${describeEffect(fx)}`);
        this.perform(n, fx, queue);
      }
    }
    n.saved.committedSeq = Math.max(n.saved.committedSeq, n.core.appliedSeq);
  }

  private perform(n: SimNode, fx: ReplicaEffect, queue: ReplicaEvent[]): void {
    const inc = n.incarnation;
    /** Later, on this node in this life (see onNode). */
    const later = (delayMs: number, fn: () => void) => this.clock.after(delayMs, () => this.onNode(n, inc, fn));
    switch (fx.type) {
      case 'append': {
        const disk = n.disk;
        assert.equal(disk.unsynced.length, 0, `${n.id}: a second append while one is in flight`);
        let last = disk.synced.length;
        for (const e of fx.entries) {
          if (e.header.seq !== last + 1) this.fail(`${n.id} appends seq ${e.header.seq} after ${last}`);
          this.checkSlot(n, e);
          last = e.header.seq;
        }
        if (n.space === 'full') {
          // No room: the driver cuts back what it wrote (nothing lasting) and says so.
          this.stats.appendsRefused++;
          later(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
            // Replica.appendOrReport: the guard is marked full, which it reports, then the
            // append's failure.
            if (n.guard !== 'full') {
              n.guard = 'full';
              this.dispatch(n, { type: 'space', state: 'full' });
              this.pollGuard(n);
            }
            this.dispatch(n, { type: 'logFailed', seq: last, code: 'NO_SPACE' });
          });
          return;
        }
        disk.unsynced.push(...fx.entries);
        later(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          disk.synced.push(...disk.unsynced);
          disk.unsynced = [];
          this.dispatch(n, { type: 'logDurable', seq: last });
        });
        return;
      }
      case 'apply':
        queue.push({ type: 'applied', seq: fx.entry.header.seq, result: this.applyToBrick(n, fx.entry) });
        return;
      case 'truncate': {
        // The cut reaches the disk after a while; a crash before then leaves the old tail.
        const disk = n.disk;
        assert.equal(disk.unsynced.length, 0, `${n.id}: a cut while an append is in flight`);
        this.stats.truncations++;
        later(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          disk.synced.length = Math.min(disk.synced.length, fx.afterSeq);
          this.dispatch(n, { type: 'truncated', seq: fx.afterSeq });
        });
        return;
      }
      case 'peerAhead':
        this.fail(`${n.id} is primary without ops ${fx.peerId} knows committed (up to ${fx.peerCommitSeq}; this log ends at ${fx.orderedSeq})`);
      case 'send': {
        const peer = this.node(fx.peerId);
        const sentAtMs = this.clock.now;
        const entries = fx.entries.map(cloneEntry);
        this.request<ReplicateAck>(
          n.id,
          peer,
          PEER_TIMEOUT_MS,
          (reply) =>
            this.handle(
              peer,
              (token) => ({ type: 'replicate', token, epoch: fx.epoch, commitSeq: fx.commitSeq, prefixSeq: fx.prefixSeq, truncateAfter: fx.truncateAfter, entries }),
              fx.epoch,
              reply as (r: Reply<unknown>) => void,
            ),
          (r) =>
            this.onNode(n, inc, () => {
              if (!r.ok) {
                if (r.code === 'GAP') this.stats.gaps++;
                if (r.code === 'STALE_EPOCH') this.stats.staleEpochs++;
              }
              // As storage/replica.ts: an answer, even a refusal, means the peer is reachable.
              if (r.ok || (r.code !== 'UNAVAILABLE' && r.code !== 'TIMEOUT' && r.code !== 'NO_SPACE')) n.failingSince.delete(fx.peerId);
              else if (!n.failingSince.has(fx.peerId)) n.failingSince.set(fx.peerId, sentAtMs);
              this.dispatch(n, r.ok ? { type: 'peerAcked', peerId: fx.peerId, requestId: fx.requestId, ack: r.value } : { type: 'peerFailed', peerId: fx.peerId, requestId: fx.requestId, code: r.code });
            }),
        );
        return;
      }
      case 'answer':
      case 'refuse': {
        const reply = n.inbound.get(fx.token);
        assert.ok(reply, `${n.id} answered unknown request ${fx.token}`);
        n.inbound.delete(fx.token);
        if (fx.type === 'refuse') this.stats.refusals++;
        reply(fx.type === 'answer' ? { ok: true, value: fx.value } : { ok: false, code: fx.code, message: fx.message });
        return;
      }
      case 'setTimer': {
        const old = n.timers.get(fx.key);
        if (old) old.cancelled = true;
        const task = later(fx.delayMs, () => {
          // Fired while paused, then cleared or armed again by what ran before it: stale.
          if (n.timers.get(fx.key) !== task) return;
          n.timers.delete(fx.key);
          this.dispatch(n, { type: 'timer', key: fx.key });
        });
        n.timers.set(fx.key, task);
        return;
      }
      case 'clearTimer': {
        const t = n.timers.get(fx.key);
        if (t) t.cancelled = true;
        n.timers.delete(fx.key);
        return;
      }
      case 'refreshMembership':
        later(1 + this.rng.int(10), () => {
          this.adoptMembership(n);
          this.dispatch(n, { type: 'membershipRefreshed', peerId: fx.peerId });
        });
        return;
      case 'holeClaimed':
        this.stats.holesClaimed++;
        return;
      case 'peerStranded': {
        // A peer behind what memory holds (a learner: a backup the leader removed) is fed
        // from the log, which this disk never trims: a few entries, after a read's time.
        this.stats.stranded++;
        const from = fx.seq;
        later(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          const entries = n.disk.synced.slice(from - 1, from - 1 + 1 + this.rng.int(8)).map(cloneEntry);
          this.dispatch(n, { type: 'peerLogRead', peerId: fx.peerId, seq: from, entries, missing: entries.length === 0 });
        });
        return;
      }
      case 'requireSync':
        this.fail(`${n.id} tells ${fx.peerId} to full-sync from ${fx.seq}, but its log is never trimmed`);
      case 'roleChanged':
        // What this node learnt of its peers as primary does not carry over (storage/replica.ts).
        n.failingSince.clear();
        return;
    }
  }

  // ---- invariants ----

  /** At append: a sequence ID sequenced in the same epoch holds the same op everywhere. */
  private checkSlot(n: SimNode, e: LogEntry): void {
    const id = identity(e);
    const key = `${e.header.seq}@${e.header.epoch}`;
    const first = this.slots.get(key);
    if (first === undefined) this.slots.set(key, id);
    else if (first !== id) this.fail(`seq ${e.header.seq} of epoch ${e.header.epoch} on ${n.id} holds ${id}, elsewhere ${first}`);
  }

  /** At apply: a sequence ID committed anywhere holds the same op on every node. */
  private checkApplied(n: SimNode, e: LogEntry): void {
    const id = identity(e);
    const first = this.appliedSlots.get(e.header.seq);
    if (first === undefined) this.appliedSlots.set(e.header.seq, id);
    else if (first !== id) this.fail(`seq ${e.header.seq} applied on ${n.id} holds ${id}, elsewhere ${first}`);
  }

  /** Applies in order without gaps: every sequence ID skipped since the last apply was a
   * retry of an op this brick already applied (dedup), and no request ID applies twice. */
  private applyToBrick(n: SimNode, e: LogEntry): ApplyResult {
    const b = n.brick;
    const seq = e.header.seq;
    this.checkApplied(n, e);
    this.checkSkipped(n, b.lastSeq, seq);
    b.lastSeq = seq;
    const reqId = e.header.reqId;
    if (reqId !== '') {
      if (b.reqIds.has(reqId)) this.fail(`${n.id} applies request ${reqId} a second time (seq ${seq})`);
      b.reqIds.add(reqId);
    }
    const result = b.apply(e.header.op, e.data);
    if (reqId !== '') b.outcomes.set(reqId, result.errno);
    return result;
  }

  private checkSkipped(n: SimNode, fromSeq: number, toSeq: number): void {
    for (let s = fromSeq + 1; s < toSeq; s++) {
      const e = n.disk.synced[s - 1];
      if (!e) this.fail(`${n.id} skipped seq ${s}, which is not in its log`);
      if (e.header.reqId === '' || !n.brick.reqIds.has(e.header.reqId)) this.fail(`${n.id} skipped seq ${s} (${e.header.reqId || 'no-op'}) without applying it`);
      this.checkApplied(n, e);
    }
  }

  private checkInvariants(): void {
    const inSync = this.redis.membership.inSync;
    for (const n of this.nodes) {
      const c = n.core;
      if (c) {
        if (!(c.appliedSeq <= c.commitSeq && c.commitSeq <= c.durableSeq && c.durableSeq <= c.orderedSeq)) {
          this.fail(`${n.id}: applied ${c.appliedSeq} commit ${c.commitSeq} durable ${c.durableSeq} ordered ${c.orderedSeq} out of order`);
        }
        // A cut is in the core at once and on disk a while later.
        const onDisk = c.truncatingSeq === null ? n.disk.synced.length : Math.min(n.disk.synced.length, c.truncatingSeq);
        if (c.durableSeq !== onDisk) this.fail(`${n.id}: core durable ${c.durableSeq}, disk ${n.disk.synced.length}`);
      }
      // Every acknowledged op is durable on every in-sync node, even one that is down (one
      // still joining may lack some: see confirmJoining).
      if (inSync.includes(n.id) && !this.joining.has(n.id) && n.disk.synced.length < this.maxAckedSeq) {
        this.fail(`${n.id} is in sync but its log ends at ${n.disk.synced.length}, below acknowledged seq ${this.maxAckedSeq}`);
      }
    }
  }

  private checkConverged(): void {
    if (this.clientsRunning > 0) this.fail(`${this.clientsRunning} clients never finished`);
    if (!this.drain?.done) this.fail('the final reads never finished');
    const m = this.redis.membership;
    if (m.inSync.length !== NODE_IDS.length) this.fail(`only ${m.inSync.join(',')} in sync at the end`);
    const top = this.redis.seq;
    let reference: { node: string; digest: string } | null = null;
    for (const id of m.inSync) {
      const n = this.node(id);
      const c = n.core;
      if (!n.up || !c) this.fail(`${id} is in sync but down at the end`);
      if (c.appliedSeq !== top || c.orderedSeq !== top) this.fail(`${id} applied ${c.appliedSeq}, ordered ${c.orderedSeq}; the sequencer is at ${top}`);
      if (c.pending.size + c.entries.size + c.submitters.size + c.replicateWaiters.size + c.barrierWaiters.size > 0) this.fail(`${id} still holds work at the end`);
      this.checkSkipped(n, n.brick.lastSeq, c.appliedSeq + 1);
      for (const a of this.acked) {
        const e = n.disk.synced[a.seq - 1];
        if (!e || e.header.reqId !== a.reqId) this.fail(`${id} lacks acknowledged ${a.reqId} at seq ${a.seq}`);
        if (n.brick.outcomes.get(a.reqId) !== a.errno) this.fail(`${a.reqId} was answered ${a.errno}, ${id} applied it as ${n.brick.outcomes.get(a.reqId)}`);
      }
      const digest = `${n.brick.digest()}#${[...n.brick.outcomes.entries()].map(([k, v]) => `${k}:${v ?? ''}`).join(',')}`;
      if (reference === null) reference = { node: id, digest };
      else if (reference.digest !== digest) this.fail(`${id}'s brick differs from ${reference.node}'s`);
    }
  }

  // ---- proxies and clients ----

  /** proxy/app.ts, POST /v1/ops: sequence, send to the primary, retry by the proxy's own
   * policy (proxy/mutation-retry.ts: which answers are retried, under which sequence ID,
   * after which wait). A proxy cut from Redis takes no sequence ID and reads no membership. */
  private mutate(proxy: SimProxy, reqId: string, op: Op, data: Buffer, done: (r: Reply<OpResult>) => void): void {
    const deadline = this.clock.now + MUTATION_DEADLINE_MS;
    let seq: number | null = null;
    let attempts = 0;
    let waits = 0;
    let lastCode: ErrorCode = 'UNAVAILABLE';
    const failed = (code: ErrorCode, newSeq: boolean, backoff: boolean) => {
      attempts++;
      lastCode = code;
      if (newSeq) seq = null;
      const random = backoff ? this.rng.next() : 0;
      const next = nextRetry(MUTATION_RETRY_POLICY, { attempts, waits, remainingMs: deadline - this.clock.now, backoff, random });
      if ('stop' in next) {
        done({ ok: false, code: mutationGiveUpCode(lastCode), message: 'mutation not committed' });
        return;
      }
      if (backoff) waits++;
      this.clock.after(next.waitMs, tryOnce);
    };
    const tryOnce = () => {
      const redisReached = !this.cutEitherWay(proxy.id, 'redis');
      if (attempts > 0 && redisReached) proxy.membership = this.redis.membership;
      const m = proxy.membership;
      if (seq === null) {
        if (this.cut(proxy.id, 'redis')) return failed('UNAVAILABLE', false, true);
        // The INCR happens; with the answer's way cut, the proxy never learns it: a hole.
        const taken = ++this.redis.seq;
        if (this.cut('redis', proxy.id)) return failed('UNAVAILABLE', false, true);
        seq = taken;
        if (this.faultsOn && this.rng.next() < this.profile.proxyDeath) {
          this.stats.proxyDeaths++;
          this.log(`a proxy dies holding seq ${seq} for ${reqId}`);
          return; // never answers; the client times out and retries elsewhere
        }
      }
      const header = { epoch: m.epoch, seq, reqId, timeMs: Math.round(this.clock.now), op };
      const primary = this.node(m.primary);
      this.request<OpResult>(
        proxy.id,
        primary,
        Math.max(1, deadline - this.clock.now),
        (reply) => this.handle(primary, (token) => ({ type: 'submit', token, header, data }), header.epoch, reply as (r: Reply<unknown>) => void),
        (r) => {
          if (r.ok) {
            // A primary the leader has replaced (it was paused) may still answer what it
            // committed before its backups took the new epoch: noteAcked checks that the
            // new primary holds it too.
            if (primary.id !== this.redis.membership.primary) this.stats.deposedAcks++;
            this.noteAcked(reqId, r.value);
            done(r);
            return;
          }
          if (r.code === 'SLOT_TAKEN') this.stats.slotTaken++;
          if (r.code === 'NOT_PRIMARY' && primary.id !== this.redis.membership.primary) this.stats.deposedRefusals++;
          const verdict = mutationVerdict(r.code);
          if (!verdict.retry) {
            // Final: NO_SPACE was refused before it was ordered (its slot holds a no-op).
            if (r.code !== 'NO_SPACE') this.fail(`the primary refused ${reqId} with ${r.code}: ${r.message}`);
            this.stats.noSpaceAnswers++;
            done(r);
            return;
          }
          failed(r.code, verdict.newSeq, verdict.backoff);
        },
      );
    };
    tryOnce();
  }

  private noteAcked(reqId: string, result: OpResult): void {
    this.acked.push({ reqId, seq: result.seq, errno: result.errno });
    this.maxAckedSeq = Math.max(this.maxAckedSeq, result.seq);
    // Committed means durable on every in-sync node: the op itself, not just a log that long.
    for (const id of this.redis.membership.inSync) {
      if (this.joining.has(id)) continue;
      const e = this.node(id).disk.synced[result.seq - 1];
      if (e?.header.reqId !== reqId) this.fail(`${reqId} was acknowledged at seq ${result.seq}, but in-sync ${id} holds ${e ? e.header.reqId || 'a no-op' : 'nothing'} there`);
    }
    // The same request ID always gets the same answer.
    if (this.clientAnswers.has(reqId) && this.clientAnswers.get(reqId) !== result.errno) {
      this.fail(`${reqId} answered ${result.errno} after ${this.clientAnswers.get(reqId)}`);
    }
    this.clientAnswers.set(reqId, result.errno);
  }

  private randomOp(): { op: Op; data: Buffer } {
    const r = this.rng;
    const path = r.pick(PATHS);
    switch (r.int(4)) {
      case 0:
        return { op: { type: 'create', path, mode: 0o644, uid: 0, gid: 0, exclusive: r.next() < 0.5 }, data: Buffer.alloc(0) };
      case 1:
        return { op: { type: 'write', path, offset: r.int(40) }, data: r.bytes(r.int(40)) };
      case 2:
        return { op: { type: 'truncate', path, size: r.int(40) }, data: Buffer.alloc(0) };
      default:
        return { op: { type: 'unlink', path }, data: Buffer.alloc(0) };
    }
  }

  private runClient(c: number): void {
    const count = 5 + this.rng.int(30);
    const pauseMsMax = (2 * this.faultEndMs) / count;
    let index = 0;
    const nextOp = () => {
      if (index === count) {
        this.clientsRunning--;
        this.maybeDrain();
        return;
      }
      if (this.rng.next() < 0.25) {
        this.clientRead(`m${c % 2}`, () => nextOp());
        return;
      }
      const reqId = `c${c}-${index}`;
      const { op, data } = this.randomOp();
      let attempts = 0;
      const tryOp = () => {
        attempts++;
        let settled = false;
        const timeout = this.clock.after(CLIENT_TIMEOUT_MS, () => {
          if (settled) return;
          settled = true;
          if (this.faultsOn && this.rng.next() < 0.3) {
            // The client went away too (a killed mount): nobody retries this op, so the
            // slot its proxy took may stay a hole at the tail.
            this.stats.opsAbandoned++;
            index++;
            nextOp();
            return;
          }
          retry();
        });
        const proxy = this.rng.pick(this.proxies);
        const mount = `m${c % 2}`;
        // The mount's request is dropped on a cut link (its deadline runs out), or its
        // answer is: the op may be applied all the same, and the retry keeps its request ID.
        if (this.cut(mount, proxy.id)) return;
        this.mutate(proxy, reqId, op, data, (r) => {
          if (this.cut(proxy.id, mount)) return;
          if (settled) return;
          settled = true;
          timeout.cancelled = true;
          if (r.ok) {
            this.stats.opsAcked++;
            index++;
            // Think time spreads each client's ops over the window in which faults happen.
            this.clock.after(this.rng.next() * pauseMsMax, nextOp);
          } else {
            retry();
          }
        });
      };
      const retry = () => {
        if (attempts >= CLIENT_ATTEMPTS_MAX) {
          this.stats.opsGivenUp++;
          index++;
          nextOp();
          return;
        }
        this.clock.after(200, tryOp);
      };
      tryOp();
    };
    nextOp();
  }

  /** A read through a proxy: the barrier is the newest sequence ID taken; in-sync nodes
   * are tried in turn until one answers. */
  private clientRead(mount: string, done: () => void): void {
    this.stats.reads++;
    const proxy = this.rng.pick(this.proxies);
    // Unreachable, or without Redis (no barrier: proxy/app.ts refuses the read), the proxy
    // serves nothing; the mount goes on.
    if (this.cutEitherWay(mount, proxy.id) || this.cutEitherWay(proxy.id, 'redis')) return done();
    const barrier = this.redis.seq;
    const ackedBefore = this.acked.length;
    proxy.membership = this.redis.membership;
    const order = [...proxy.membership.inSync];
    for (let i = order.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const tryNode = (k: number) => {
      if (k === order.length) return done();
      const n = this.node(order[k]!);
      this.request(
        proxy.id,
        n,
        READ_TIMEOUT_MS,
        (reply) => this.handle(n, (token) => ({ type: 'barrierRead', token, seq: barrier }), null, (r) => {
          if (r.ok) this.checkRead(n, barrier, ackedBefore);
          reply(r);
        }),
        (r) => (r.ok ? done() : tryNode(k + 1)),
      );
    };
    tryNode(0);
  }

  /** A read answered at its barrier sees every op acknowledged before it began. */
  private checkRead(n: SimNode, barrier: number, ackedBefore: number): void {
    const c = n.core!;
    if (c.appliedSeq < barrier) this.fail(`${n.id} answered a read at barrier ${barrier} having applied ${c.appliedSeq}`);
    for (let i = 0; i < ackedBefore; i++) {
      const a = this.acked[i]!;
      if (a.seq > c.appliedSeq || n.disk.synced[a.seq - 1]?.header.reqId !== a.reqId) this.fail(`a read on ${n.id} misses acknowledged ${a.reqId} (seq ${a.seq})`);
    }
  }

  /** dfs verify: hold every in-sync node at the newest sequence ID; each node reads its
   * brick there and releases the hold itself (storage/app.ts, /node/v1/manifest). */
  private verify(): void {
    const at = this.redis.seq;
    for (const id of this.redis.membership.inSync) {
      const n = this.node(id);
      this.request(
        `p${this.leaderProxy}`,
        n,
        READ_TIMEOUT_MS,
        (reply) =>
          this.handle(n, (token) => ({ type: 'hold', token, seq: at, timeoutMs: 10_000 }), null, (r) => {
            if (r.ok) {
              this.stats.holds++;
              if (n.core!.appliedSeq !== at) this.fail(`${n.id} is held at ${at} but applied ${n.core!.appliedSeq}`);
              const inc = n.incarnation;
              this.clock.after(this.rng.next() * 50, () => this.onNode(n, inc, () => this.dispatch(n, { type: 'release' })));
            }
            reply(r);
          }),
        () => undefined,
      );
    }
  }

  /** Faults over and clients done: read every node at the newest sequence ID (which also
   * makes the primary fill a hole at the tail), until every node is in sync, confirmed,
   * and has answered. Meanwhile the leader goes on: a paused primary may still be
   * replaced, learners promoted. */
  private maybeDrain(): void {
    if (this.drain !== null || this.faultsOn || this.clientsRunning > 0) return;
    if (this.rng.next() < 0.3) {
      this.redis.seq++; // a proxy took a sequence ID and died just now: a hole at the tail
      this.stats.proxyDeaths++;
    }
    const d = { barrier: this.redis.seq, answered: new Set<string>(), asking: new Set<string>(), done: false };
    this.drain = d;
    const deadline = this.clock.after(DRAIN_MS_MAX, () => {
      const m = this.redis.membership;
      const states = this.nodes.map((n) => (n.core ? JSON.stringify({ up: n.up, paused: n.paused, ...summarize(n.core) }) : `${n.id} down`));
      this.fail(
        `not every node was in sync at seq ${d.barrier} within ${DRAIN_MS_MAX} ms after the faults stopped (membership e${m.epoch} primary ${m.primary} ` +
          `inSync ${m.inSync.join(',')}, joining ${[...this.joining.keys()].join(',') || '-'}, answered ${[...d.answered].join(',') || '-'}): ${states.join(' ')}`,
      );
    });
    this.log(`draining at seq ${d.barrier}`);
    const round = () => {
      const m = this.redis.membership;
      // (A leader that forgets promotions never confirms them: `unconfirmedPromotion`.)
      const confirmed = (id: string) => this.options.unconfirmedPromotion || !this.joining.has(id);
      if (NODE_IDS.every((id) => m.inSync.includes(id) && confirmed(id) && d.answered.has(id))) {
        d.done = true;
        deadline.cancelled = true;
        this.log('drained: every node in sync');
        return;
      }
      for (const id of m.inSync) {
        if (d.answered.has(id) || d.asking.has(id)) continue;
        d.asking.add(id);
        const n = this.node(id);
        this.request(
          'p0',
          n,
          READ_TIMEOUT_MS,
          (reply) => this.handle(n, (token) => ({ type: 'barrierRead', token, seq: d.barrier }), null, reply),
          (r) => {
            d.asking.delete(id);
            if (r.ok) d.answered.add(id);
          },
        );
      }
      this.clock.after(200, round);
    };
    round();
  }
}

function range(entries: LogEntry[]): string {
  return entries.length === 0 ? '-' : `${entries[0]!.header.seq}..${entries[entries.length - 1]!.header.seq}`;
}

export function describeEvent(e: ReplicaEvent): string {
  switch (e.type) {
    case 'membership':
      return `membership e${e.membership.epoch} primary ${e.membership.primary} inSync ${e.membership.inSync.join(',')}`;
    case 'submit':
      return `submit #${e.token} seq ${e.header.seq} e${e.header.epoch} ${e.header.reqId} ${e.header.op.type}`;
    case 'replicate':
      return `replicate #${e.token} e${e.epoch} c${e.commitSeq} p${e.prefixSeq}${e.truncateAfter === null ? '' : ` cut${e.truncateAfter}`} ${range(e.entries)}`;
    case 'truncated':
      return `truncated ${e.seq}`;
    case 'logDurable':
      return `logDurable ${e.seq}`;
    case 'logFailed':
      return `logFailed ${e.seq} ${e.code}`;
    case 'space':
      return `space ${e.state}`;
    case 'applied':
      return `applied ${e.seq} ${JSON.stringify(e.result)}`;
    case 'peerAcked':
      return `peerAcked ${e.peerId} #${e.requestId} d${e.ack.durableSeq} c${e.ack.commitSeq} ${e.ack.tail.map((r) => `${r.from}:e${r.epoch}`).join(',')}`;
    case 'peerFailed':
      return `peerFailed ${e.peerId} #${e.requestId} ${e.code}`;
    case 'membershipRefreshed':
      return `membershipRefreshed ${e.peerId}`;
    case 'timer':
      return `timer ${e.key}`;
    case 'barrierRead':
      return `barrierRead #${e.token} ${e.seq}`;
    case 'hold':
      return `hold #${e.token} ${e.seq}`;
    case 'peerLogRead':
      return `peerLogRead ${e.peerId} ${e.seq} ${e.missing ? 'missing' : range(e.entries)}`;
    case 'syncFinished':
      return `syncFinished ${e.seq}`;
    case 'syncStarted':
    case 'tick':
    case 'release':
    case 'close':
      return e.type;
  }
}

export function describeEffect(fx: ReplicaEffect): string {
  switch (fx.type) {
    case 'append':
      return `append ${range(fx.entries)}`;
    case 'send':
      return `send ${fx.peerId} #${fx.requestId} e${fx.epoch} c${fx.commitSeq} p${fx.prefixSeq}${fx.truncateAfter === null ? '' : ` cut${fx.truncateAfter}`} ${range(fx.entries)}`;
    case 'truncate':
      return `truncate after ${fx.afterSeq}`;
    case 'peerAhead':
      return `peer ${fx.peerId} knows ${fx.peerCommitSeq} committed, past this log (${fx.orderedSeq})`;
    case 'apply':
      return `apply ${fx.entry.header.seq} ${fx.entry.header.reqId || 'no-op'}`;
    case 'answer':
      return `answer #${fx.token} ${JSON.stringify(fx.value)}`;
    case 'refuse':
      return `refuse #${fx.token} ${fx.code} ${fx.message}`;
    case 'setTimer':
      return `setTimer ${fx.key} ${fx.delayMs}`;
    case 'clearTimer':
      return `clearTimer ${fx.key}`;
    case 'refreshMembership':
      return `refreshMembership (${fx.peerId})`;
    case 'roleChanged':
      return `role ${fx.role} e${fx.epoch}`;
    case 'holeClaimed':
      return `hole ${fx.seq} claimed as a no-op`;
    case 'peerStranded':
      return `peer ${fx.peerId} stranded at ${fx.seq}`;
    case 'requireSync':
      return `peer ${fx.peerId} must full-sync (needs ${fx.seq})`;
  }
}
