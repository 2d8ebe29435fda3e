/*
 * A deterministic simulation of the replication protocol (DESIGN.md: "the hard cases run in
 * a seeded, deterministic simulation with a fake network, disk and clock").
 *
 * Three storage nodes run the pure core (storage/replica-core.ts); everything around them
 * is simulated from one seeded PRNG (test/helpers/prng.ts) on a virtual clock:
 *
 *   clients ──> proxy tasks ──INCR──> sequencer (a counter)
 *                   │ submit {epoch, seq, reqId, op}           the "leader": membership
 *                   ▼                                          with epoch bumps and a
 *   network: delays, drops, duplicates, reorders          backup removed, published to
 *                   ▼                                          nodes at random poll times
 *   node n1 (primary) ──replicate──> n2, n3 (backups)
 *     core + disk (an op log whose un-fsynced tail a crash may lose) + brick (a tiny file model)
 *
 * The effects of each core are performed here as storage/replica.ts performs them for
 * real: appends land on the simulated disk and become durable after a random fsync time;
 * sends go through the simulated network with the HTTP client's single outcome per
 * request (an answer, or a failure after a while); timers run on the virtual clock.
 * Proxies follow proxy/app.ts's mutation loop (retry the slot on an epoch or primary
 * change, re-sequence on SLOT_TAKEN, back off on UNAVAILABLE) and may die right after
 * taking a sequence ID, leaving a hole. Clients retry with the same request ID, as the
 * mount does, and read with barriers.
 *
 * Each seed draws its own fault profile and workload (2 to 6 clients, 5 to 34 ops each,
 * spread over a fault window of 1 to 16 virtual seconds). Faults: message loss,
 * duplication and long delays (so reordering), proxy deaths after taking a sequence ID
 * (holes; a client that goes away too may leave one at the tail), epoch bumps, one backup
 * removed from the in-sync set, dfs verify holds, and crashes of backups with a restart
 * from the log. A crash keeps the fsynced log and a random prefix of the unsynced tail;
 * the restarted node rebuilds its brick by replaying its log from the first op up to the
 * highest sequence ID it knew committed (the dedup table is rebuilt by the same replay).
 * That is what the real node will do once it persists its commit point and request IDs
 * (issue 4, crash recovery); today's node keeps its brick and loses the request-ID table.
 * Crashes of the primary are off by default: without failover the current protocol cannot
 * recover from them (see `primaryCrashes`).
 *
 * After every event the invariants are checked (`checkInvariants`, and at the moment of
 * each disk append, brick apply and read answer); once the faults stop and the clients are
 * done, every in-sync node is read at the newest sequence ID, the simulation runs until
 * nothing is left to happen, and the nodes must agree exactly (`checkConverged`).
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
  type TimerKey,
} from '../../storage/replica-core';
import { prng, type Prng } from '../helpers/prng';

export interface SimOptions {
  /** Also crash the primary (the current protocol cannot recover; for exploring). */
  primaryCrashes?: boolean;
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
};

/** The HTTP/2 peer transport's deadline (storage/main.ts). */
const PEER_TIMEOUT_MS = 5000;
/** proxy/app.ts: mutation deadline, attempts and backoff. */
const MUTATION_DEADLINE_MS = 8000;
const MUTATION_ATTEMPTS_MAX = 8;
const RETRY_PAUSE_MS = 100;
/** The mount: a call's deadline, and how often it tries an op before giving up. */
const CLIENT_TIMEOUT_MS = 10_000;
const CLIENT_ATTEMPTS_MAX = 10;
const READ_TIMEOUT_MS = 5000;
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
}

interface SimProxy {
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
  };
  private readonly trace: ((line: string) => void) | undefined;
  private readonly step: typeof step;
  private readonly nodes: SimNode[];
  private readonly redis: { seq: number; membership: Membership };
  private readonly proxies: SimProxy[];
  /** The op each sequence ID holds, as first seen anywhere. */
  private readonly slots = new Map<number, string>();
  /** Ops the primary acknowledged to a proxy, in order. */
  private readonly acked: Acked[] = [];
  private maxAckedSeq = 0;
  private readonly clientAnswers = new Map<string, string | undefined>();
  private faultsOn = true;
  private readonly faultEndMs: number;
  private readonly profile: { drop: number; duplicate: number; slow: number; proxyDeath: number; unsyncedLoss: boolean; fsyncMsMax: number };
  private readonly clientCount: number;
  private clientsRunning: number;
  private draining = false;
  private finalReadsLeft = 0;

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
    };
    this.clientCount = 2 + r.int(5);
    this.clientsRunning = this.clientCount;
    this.faultEndMs = 1000 + r.int(15_000);
    const nodes: Record<string, string> = {};
    for (const id of NODE_IDS) nodes[id] = `sim://${id}`;
    this.redis = { seq: 0, membership: { epoch: 1, primary: 'n1', inSync: [...NODE_IDS], nodes } };
    this.proxies = Array.from({ length: PROXY_COUNT }, () => ({ membership: this.redis.membership }));
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
    }));
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
    for (const n of this.nodes) this.clock.after(this.rng.int(5), () => this.adoptMembership(n));
    this.scheduleFaults();
    for (let c = 0; c < this.clientCount; c++) this.clock.after(10 + this.rng.int(20), () => this.runClient(c));
    this.clock.after(this.faultEndMs, () => {
      this.faultsOn = false;
      this.log('faults stop');
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
    const verifies = r.int(3);
    for (let i = 0; i < verifies; i++) this.clock.after(r.int(this.faultEndMs), () => this.verify());
    const bumps = r.int(4);
    for (let i = 0; i < bumps; i++) {
      this.clock.after(r.int(this.faultEndMs), () => {
        this.stats.epochBumps++;
        this.publish({ ...this.redis.membership, epoch: this.redis.membership.epoch + 1 });
      });
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

  /** The leader writes a membership; every node sees it at its next poll. */
  private publish(m: Membership): void {
    this.redis.membership = m;
    this.log(`membership e${m.epoch} primary ${m.primary} inSync ${m.inSync.join(',')}`);
    for (const n of this.nodes) {
      const inc = n.incarnation;
      this.clock.after(this.rng.int(300), () => {
        if (n.up && n.incarnation === inc) this.adoptMembership(n);
      });
    }
  }

  /** storage/main.ts refreshMembership: persist a newer epoch, then hand it to the core. */
  private adoptMembership(n: SimNode): void {
    if (!n.up) return;
    const m = this.redis.membership;
    const text = JSON.stringify(m);
    if (text === n.membershipText || m.epoch < n.core!.epoch) return;
    if (m.epoch > n.core!.epoch) n.saved.epoch = m.epoch;
    n.membershipText = text;
    this.dispatch(n, { type: 'membership', membership: m });
  }

  private crashSomeNode(): void {
    const m = this.redis.membership;
    const candidates = this.nodes.filter((n) => n.up && (this.options.primaryCrashes || n.id !== m.primary));
    if (candidates.length === 0) return;
    const n = this.rng.pick(candidates);
    this.stats.crashes++;
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
    n.membershipText = '';
    this.clock.after(50 + this.rng.int(3000), () => this.restart(n));
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
    n.up = true;
    this.log(`${n.id} restarts at epoch ${n.saved.epoch}, replaying ${log.length} ops, ${n.saved.committedSeq} known committed`);
    const inc = n.incarnation;
    this.clock.after(1 + this.rng.int(20), () => {
      if (n.incarnation === inc) this.adoptMembership(n);
    });
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
  private request<T>(target: SimNode, timeoutMs: number, deliver: (reply: (r: Reply<T>) => void) => void, onResult: (r: Reply<T>) => void): void {
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
        if (!target.up) {
          if (!duplicate) this.clock.after(this.delay(), () => finish(unavailable('connection refused')));
          return;
        }
        deliver((r) => {
          if (duplicate) return;
          if (this.lost()) {
            failLater('answer lost');
            return;
          }
          this.clock.after(this.delay(), () => finish(r));
        });
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
    const alive = () => n.up && n.incarnation === inc;
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
        disk.unsynced.push(...fx.entries);
        this.clock.after(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          if (!alive()) return;
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
        this.clock.after(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          if (!alive()) return;
          disk.synced.length = Math.min(disk.synced.length, fx.afterSeq);
          this.dispatch(n, { type: 'truncated', seq: fx.afterSeq });
        });
        return;
      }
      case 'peerAhead':
        this.fail(`${n.id} is primary without ops ${fx.peerId} knows committed (up to ${fx.peerCommitSeq}; this log ends at ${fx.orderedSeq})`);
      case 'send': {
        const peer = this.node(fx.peerId);
        const entries = fx.entries.map(cloneEntry);
        this.request<ReplicateAck>(
          peer,
          PEER_TIMEOUT_MS,
          (reply) =>
            this.handle(
              peer,
              (token) => ({ type: 'replicate', token, epoch: fx.epoch, commitSeq: fx.commitSeq, prefixSeq: fx.prefixSeq, truncateAfter: fx.truncateAfter, entries }),
              fx.epoch,
              reply as (r: Reply<unknown>) => void,
            ),
          (r) => {
            if (!alive()) return;
            if (!r.ok) {
              if (r.code === 'GAP') this.stats.gaps++;
              if (r.code === 'STALE_EPOCH') this.stats.staleEpochs++;
            }
            this.dispatch(n, r.ok ? { type: 'peerAcked', peerId: fx.peerId, requestId: fx.requestId, ack: r.value } : { type: 'peerFailed', peerId: fx.peerId, requestId: fx.requestId, code: r.code });
          },
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
        n.timers.set(
          fx.key,
          this.clock.after(fx.delayMs, () => {
            n.timers.delete(fx.key);
            if (alive()) this.dispatch(n, { type: 'timer', key: fx.key });
          }),
        );
        return;
      }
      case 'clearTimer': {
        const t = n.timers.get(fx.key);
        if (t) t.cancelled = true;
        n.timers.delete(fx.key);
        return;
      }
      case 'refreshMembership':
        this.clock.after(1 + this.rng.int(10), () => {
          if (!alive()) return;
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
        this.clock.after(0.1 + this.rng.next() * this.profile.fsyncMsMax, () => {
          if (!alive()) return;
          const entries = n.disk.synced.slice(from - 1, from - 1 + 1 + this.rng.int(8)).map(cloneEntry);
          this.dispatch(n, { type: 'peerLogRead', peerId: fx.peerId, seq: from, entries, missing: entries.length === 0 });
        });
        return;
      }
      case 'requireSync':
        this.fail(`${n.id} tells ${fx.peerId} to full-sync from ${fx.seq}, but its log is never trimmed`);
      case 'roleChanged':
        return;
    }
  }

  // ---- invariants ----

  /** The same sequence ID holds the same op on every node that has it. */
  private checkSlot(n: SimNode, e: LogEntry): void {
    const id = identity(e);
    const first = this.slots.get(e.header.seq);
    if (first === undefined) this.slots.set(e.header.seq, id);
    else if (first !== id) this.fail(`seq ${e.header.seq} on ${n.id} holds ${id}, elsewhere ${first}`);
  }

  /** Applies in order without gaps: every sequence ID skipped since the last apply was a
   * retry of an op this brick already applied (dedup), and no request ID applies twice. */
  private applyToBrick(n: SimNode, e: LogEntry): ApplyResult {
    const b = n.brick;
    const seq = e.header.seq;
    this.checkSlot(n, e);
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
        if (c.durableSeq !== n.disk.synced.length) this.fail(`${n.id}: core durable ${c.durableSeq}, disk ${n.disk.synced.length}`);
      }
      // Every acknowledged op is durable on every in-sync node, even one that is down.
      if (inSync.includes(n.id) && n.disk.synced.length < this.maxAckedSeq) {
        this.fail(`${n.id} is in sync but its log ends at ${n.disk.synced.length}, below acknowledged seq ${this.maxAckedSeq}`);
      }
    }
  }

  private checkConverged(): void {
    if (this.clientsRunning > 0) this.fail(`${this.clientsRunning} clients never finished`);
    if (this.finalReadsLeft > 0 || !this.draining) this.fail('the final reads never finished');
    const m = this.redis.membership;
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

  /** proxy/app.ts, POST /v1/ops: sequence, send to the primary, retry as it does. */
  private mutate(proxy: SimProxy, reqId: string, op: Op, data: Buffer, done: (r: Reply<OpResult>) => void): void {
    const deadline = this.clock.now + MUTATION_DEADLINE_MS;
    let seq: number | null = null;
    let attempt = 0;
    let backoff = false;
    let lastCode: ErrorCode = 'UNAVAILABLE';
    const tryOnce = () => {
      if (attempt >= MUTATION_ATTEMPTS_MAX || this.clock.now >= deadline) {
        done({ ok: false, code: lastCode === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'TIMEOUT', message: 'mutation not committed' });
        return;
      }
      this.clock.after(backoff ? Math.min(RETRY_PAUSE_MS * attempt, 1000) : 0, () => {
        if (attempt > 0) proxy.membership = this.redis.membership;
        const m = proxy.membership;
        backoff = true;
        if (seq === null) {
          seq = ++this.redis.seq;
          if (this.faultsOn && this.rng.next() < this.profile.proxyDeath) {
            this.stats.proxyDeaths++;
            this.log(`a proxy dies holding seq ${seq} for ${reqId}`);
            return; // never answers; the client times out and retries elsewhere
          }
        }
        const header = { epoch: m.epoch, seq, reqId, timeMs: Math.round(this.clock.now), op };
        const primary = this.node(m.primary);
        this.request<OpResult>(
          primary,
          Math.max(1, deadline - this.clock.now),
          (reply) => this.handle(primary, (token) => ({ type: 'submit', token, header, data }), header.epoch, reply as (r: Reply<unknown>) => void),
          (r) => {
            attempt++;
            if (r.ok) {
              this.noteAcked(reqId, r.value);
              done(r);
              return;
            }
            lastCode = r.code;
            if (r.code === 'SLOT_TAKEN') this.stats.slotTaken++;
            if (r.code !== 'SLOT_TAKEN' && r.code !== 'NOT_PRIMARY' && r.code !== 'STALE_EPOCH' && r.code !== 'UNAVAILABLE') {
              this.fail(`the primary refused ${reqId} with ${r.code}: ${r.message}`);
            }
            if (r.code === 'SLOT_TAKEN') seq = null;
            backoff = r.code === 'UNAVAILABLE';
            tryOnce();
          },
        );
      });
    };
    tryOnce();
  }

  private noteAcked(reqId: string, result: OpResult): void {
    this.acked.push({ reqId, seq: result.seq, errno: result.errno });
    this.maxAckedSeq = Math.max(this.maxAckedSeq, result.seq);
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
        this.clientRead(() => nextOp());
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
        this.mutate(this.rng.pick(this.proxies), reqId, op, data, (r) => {
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
  private clientRead(done: () => void): void {
    this.stats.reads++;
    const barrier = this.redis.seq;
    const ackedBefore = this.acked.length;
    const order = [...this.redis.membership.inSync];
    for (let i = order.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const tryNode = (k: number) => {
      if (k === order.length) return done();
      const n = this.node(order[k]!);
      this.request(
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
        n,
        READ_TIMEOUT_MS,
        (reply) =>
          this.handle(n, (token) => ({ type: 'hold', token, seq: at, timeoutMs: 10_000 }), null, (r) => {
            if (r.ok) {
              this.stats.holds++;
              if (n.core!.appliedSeq !== at) this.fail(`${n.id} is held at ${at} but applied ${n.core!.appliedSeq}`);
              const inc = n.incarnation;
              this.clock.after(this.rng.next() * 50, () => {
                if (n.up && n.incarnation === inc) this.dispatch(n, { type: 'release' });
              });
            }
            reply(r);
          }),
        () => undefined,
      );
    }
  }

  /** Faults over and clients done: read every in-sync node at the newest sequence ID,
   * which also makes the primary fill a hole at the tail. */
  private maybeDrain(): void {
    if (this.draining || this.faultsOn || this.clientsRunning > 0) return;
    this.draining = true;
    if (this.rng.next() < 0.3) {
      this.redis.seq++; // a proxy took a sequence ID and died just now: a hole at the tail
      this.stats.proxyDeaths++;
    }
    const barrier = this.redis.seq;
    const deadline = this.clock.after(DRAIN_MS_MAX, () => {
      const states = this.nodes.map((n) => (n.core ? JSON.stringify({ up: n.up, ...summarize(n.core) }) : `${n.id} down`));
      this.fail(`${this.finalReadsLeft} nodes did not reach seq ${barrier} within ${DRAIN_MS_MAX} ms after the faults stopped: ${states.join(' ')}`);
    });
    this.log(`draining at seq ${barrier}`);
    for (const id of this.redis.membership.inSync) {
      const n = this.node(id);
      this.finalReadsLeft++;
      const tryRead = () =>
        this.request(
          n,
          READ_TIMEOUT_MS,
          (reply) => this.handle(n, (token) => ({ type: 'barrierRead', token, seq: barrier }), null, reply),
          (r) => {
            if (!r.ok) {
              this.clock.after(200, tryRead);
              return;
            }
            if (--this.finalReadsLeft === 0) deadline.cancelled = true;
          },
        );
      tryRead();
    }
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
