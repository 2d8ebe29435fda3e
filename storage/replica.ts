/*
 * The replica driver: runs the pure replication core (storage/replica-core.ts, which says
 * how data flows and why) against the real world. Events come from the HTTP handlers
 * (submit, replicate, reads, verify holds), from the membership poller, and from the
 * completions of the effects it performs:
 *
 *   append            -> OpLog.append (writev + fdatasync)       -> logDurable | logFailed
 *   truncate          -> OpLog.truncateAfter                     -> truncated
 *   apply             -> Brick.apply (synchronous)               -> applied
 *   send              -> PeerTransport.replicate (HTTP/2)        -> peerAcked | peerFailed
 *   setTimer          -> setTimeout                              -> timer
 *   refreshMembership -> onStaleEpoch (Redis)                    -> membershipRefreshed
 *   peerStranded      -> OpLog.read (catch-up from the log)      -> peerLogRead
 *   requireSync       -> PeerTransport.requireSync (HTTP/2)         (fire and forget)
 *   answer / refuse   -> resolves or rejects the caller's promise
 *
 * Events are stepped one at a time from a queue, so an effect's completion that arrives
 * while a step is being performed waits for it. A failed log append or brick apply ends the
 * process (the supervisor restarts it, and recovery replays the log); so does a broken
 * assertion in the core, since its state can no longer be trusted.
 *
 * Except for want of space (docs/space.md), which is an answer, not a failure: an append
 * or an apply that meets ENOSPC releases the node's reserve (storage/disk-space.ts) and is
 * tried again once; an append that still finds no room is reported as `logFailed` and the
 * node is `full`; an apply that still finds none is tried again every APPLY_RETRY_MS (one
 * op replayed on the brick gives the same outcome, as after a crash: Brick.appliedSeqMark),
 * the node `full` meanwhile. The space guard's verdict reaches the core as `space` events.
 */
import assert from 'node:assert/strict';
import type { Membership, OpResult } from '../common/api';
import { DfsError, isErrnoException } from '../common/errors';
import type { SequencedOpHeader } from '../common/ops';
import type { Logger } from '../common/log';
import type { ApplyResult, Brick } from './brick';
import type { DedupJournal } from './dedup-journal';
import type { LogEntry, OpLog } from './op-log';
import {
  createReplicaState,
  step,
  summarize,
  type ReplicaConfig,
  type ReplicaCoreState,
  type ReplicaEffect,
  type ReplicaEvent,
  type HeldAt,
  type ReplicaState,
  type ReplicateAck,
  type ReplicateRequest,
  type SpaceState,
  type TimerKey,
  opAdmittedWhenLow,
  opBlocksBytes,
} from './replica-core';

export type { ReplicaConfig, ReplicaState, ReplicateRequest } from './replica-core';

/** Brick applies in one go before the driver yields to the event loop, so that reads and
 * acks still flow during a long replay. */
const APPLY_OPS_PER_YIELD = 64;

/** How the replica reaches a peer; the real one is HTTP/2 (storage/peer-client.ts). */
export interface PeerTransport {
  replicate(url: string, req: ReplicateRequest): Promise<ReplicateAck>;
  /** Tells a peer the primary's log no longer holds what it needs (storage/full-sync.ts). */
  requireSync(url: string, epoch: number, seq: number): Promise<void>;
}

/** What the replica asks of the node's space guard (storage/disk-space.ts). */
export interface SpaceControl {
  readonly state: SpaceState;
  /** Frees the reserve; false when none was left. */
  release(): Promise<boolean>;
  /** The log cannot grow even with the reserve freed. */
  markFull(): void;
  /** The primary admitted an op of `bytes`. */
  noteAdmitted(bytes: number): void;
  /** That op was answered. */
  noteSettled(bytes: number): void;
}

/** How long an apply that found no room waits before it is tried again. */
const APPLY_RETRY_MS = 1000;
/** Bytes counted for an op's header and frame beside its data, for the space estimate. */
const OP_OVERHEAD_BYTES = 512;

function isNoSpace(err: unknown): boolean {
  if (err instanceof DfsError) return err.code === 'NO_SPACE';
  return isErrnoException(err) && (err.code === 'ENOSPC' || err.code === 'EDQUOT');
}

/** How often beginSync looks whether the log append and brick apply in flight are done. */
const QUIESCE_POLL_MS = 10;
const QUIESCE_TIMEOUT_MS = 60_000;

interface Waiter {
  resolve: (value: OpResult | ReplicateAck | HeldAt | null) => void;
  reject: (err: Error) => void;
}

export class Replica {
  private readonly core: ReplicaCoreState;
  private readonly queue: ReplicaEvent[] = [];
  private stepping = false;
  private readonly waiters = new Map<number, Waiter>();
  private nextToken = 1;
  private readonly timers = new Map<TimerKey, NodeJS.Timeout>();
  private appliesSinceYield = 0;
  /** Peer -> when its requests began to fail (every one since); cleared by an answer. */
  private readonly failingSince = new Map<string, number>();
  /** Peer -> when it last said it knows of committed ops this primary's log lacks. */
  private readonly aheadAt = new Map<string, number>();
  private reportedAppliedSeq: number;

  constructor(
    readonly id: string,
    private readonly log: OpLog,
    private readonly brick: Brick,
    private readonly transport: PeerTransport,
    config: ReplicaConfig,
    private readonly logger: Logger,
    /** The state file: the epoch it holds fences this node from being primary in it again. */
    state: { epoch: number; appliedSeq: number; incarnation?: string },
    recovered: LogEntry[],
    private readonly onApplied: (appliedSeq: number) => void,
    /** Asks for the newest membership; called when a peer says this node's epoch is old. */
    private readonly onStaleEpoch: () => Promise<void> = async () => undefined,
    /** The request-ID table on disk; without one, a restart forgets it. */
    private readonly journal: DedupJournal | null = null,
    /** The node's space guard; without one, no room is an error the node never leaves. */
    private readonly space: SpaceControl | null = null,
  ) {
    this.core = createReplicaState({
      id,
      config,
      epoch: state.epoch,
      appliedSeq: state.appliedSeq,
      logLastSeq: log.lastSeq,
      recovered,
      epochRuns: log.epochRuns(),
      fencedEpoch: state.epoch,
      dedup: journal?.loaded ?? [],
      ...(state.incarnation !== undefined ? { incarnation: state.incarnation } : {}),
    });
    this.reportedAppliedSeq = state.appliedSeq;
    if (space && space.state !== 'ok') this.core.space = space.state;
  }

  /** The space guard's verdict changed. */
  setSpace(state: SpaceState): void {
    this.dispatch({ type: 'space', state });
  }

  get epoch(): number {
    return this.core.epoch;
  }

  get appliedSeq(): number {
    return this.core.appliedSeq;
  }

  state(): ReplicaState {
    return summarize(this.core);
  }

  /** Adopts a membership from the leader. Older epochs are ignored (fencing). */
  setMembership(m: Membership): void {
    this.dispatch({ type: 'membership', membership: m });
  }

  /** Primary: an op from a proxy; resolves with its result once it is committed and applied.
   * `frame`, the op's frame as the proxy sent it (header and data exactly these), is
   * logged and forwarded as it is instead of being encoded again. */
  submit(header: SequencedOpHeader, data: Buffer, frame?: Buffer): Promise<OpResult> {
    // Counted before the core sees it: the op that brings the estimate under the floor is
    // the first one refused.
    const space = this.space;
    if (!space || this.core.role !== 'primary' || opAdmittedWhenLow(header.op)) {
      return this.request((token) => ({ type: 'submit', token, header, data, frame })) as Promise<OpResult>;
    }
    const bytes = data.length + opBlocksBytes(header.op) + OP_OVERHEAD_BYTES;
    space.noteAdmitted(bytes);
    const answered = this.request((token) => ({ type: 'submit', token, header, data, frame })) as Promise<OpResult>;
    answered.then(
      () => space.noteSettled(bytes),
      () => space.noteSettled(bytes),
    );
    return answered;
  }

  /** Backup: a batch from the primary; resolves once this node holds it durably. */
  replicate(req: ReplicateRequest): Promise<ReplicateAck> {
    return this.request((token) => ({ type: 'replicate', token, ...req })) as Promise<ReplicateAck>;
  }

  /** Resolves once every op up to `seq` is applied here; BARRIER_TIMEOUT after the bound. */
  async waitApplied(seq: number): Promise<void> {
    if (this.core.appliedSeq >= seq) return;
    await this.request((token) => ({ type: 'barrierRead', token, seq }));
  }

  /** Applies up to exactly `seq` and no further until `release`, so a brick can be read
   * as it stands at one point of the history. Fails if this node applied past it. */
  async holdAt(seq: number, timeoutMs: number): Promise<void> {
    await this.request((token) => ({ type: 'hold', token, seq, timeoutMs }));
  }

  /** Holds apply where it stands now (after the apply in flight, if any); resolves with
   * that sequence ID. For a full sync's source: the brick read is one point of history. */
  async holdHere(timeoutMs: number): Promise<number> {
    const seq = this.core.applyingSeq ?? this.core.appliedSeq;
    const held = (await this.request((token) => ({ type: 'hold', token, seq, timeoutMs }))) as HeldAt;
    return held.heldSeq;
  }

  /** Primary: peer -> how long (ms) every request to it has failed, for the peers failing now. */
  failingPeers(): Record<string, number> {
    if (this.core.role !== 'primary') return {};
    const now = Date.now();
    return Object.fromEntries([...this.failingSince].filter(([id]) => this.core.peers.has(id)).map(([id, since]) => [id, now - since]));
  }

  /** Primary: how many ops each peer's durable log is behind this node's (metrics); a
   * peer that has not answered yet is left out. Empty on any other role. */
  peerLag(): Array<{ peerId: string; lagOps: number }> {
    if (this.core.role !== 'primary') return [];
    const out: Array<{ peerId: string; lagOps: number }> = [];
    for (const peer of this.core.peers.values()) {
      if (peer.ackedSeq >= 0) out.push({ peerId: peer.id, lagOps: Math.max(0, this.core.durableSeq - peer.ackedSeq) });
    }
    return out;
  }

  /** Primary: peers that lately knew of committed ops this log lacks (the leader hands the
   * role to one of them: this node cannot serve without losing them). */
  peersAhead(withinMs: number): string[] {
    if (this.core.role !== 'primary') return [];
    const now = Date.now();
    return [...this.aheadAt].filter(([id, at]) => now - at <= withinMs && this.core.peers.has(id)).map(([id]) => id);
  }

  /** The request-ID table, oldest first: a full sync copies it with the brick. */
  dedupEntries(): Array<[string, OpResult]> {
    return [...this.core.dedup.entries()];
  }

  get syncing(): boolean {
    return this.core.syncing;
  }

  /** Stops appending and applying for a full sync, refuses what waits, and resolves once
   * the log append and brick apply in flight are over, so the brick and log may be replaced. */
  async beginSync(): Promise<void> {
    this.dispatch({ type: 'syncStarted' });
    const deadline = Date.now() + QUIESCE_TIMEOUT_MS;
    while (this.core.appendingSeq !== null || this.core.applyingSeq !== null || this.core.truncatingSeq !== null) {
      assert.ok(Date.now() < deadline, 'the log append or brick apply in flight never finished');
      await new Promise((r) => setTimeout(r, QUIESCE_POLL_MS));
    }
  }

  /** Full sync: the request-ID table copied with the brick replaces the journal. */
  journalDedup(dedup: Array<[string, OpResult]>): void {
    this.journal?.rewrite(dedup.slice(-this.core.config.dedupEntriesMax));
  }

  /** The brick and an empty log now stand at `seq`: go on from there. */
  finishSync(seq: number, dedup: Array<[string, OpResult]>): void {
    this.dispatch({ type: 'syncFinished', seq, dedup });
  }

  release(): void {
    this.dispatch({ type: 'release' });
  }

  /** Called every second or so: the primary tells its peers the commit point again. */
  tick(): void {
    this.dispatch({ type: 'tick' });
  }

  close(): void {
    this.dispatch({ type: 'close' });
    for (const t of this.timers.values()) clearTimeout(t);
    this.timers.clear();
  }

  private request(make: (token: number) => ReplicaEvent): Promise<OpResult | ReplicateAck | HeldAt | null> {
    const token = this.nextToken++;
    return new Promise((resolve, reject) => {
      this.waiters.set(token, { resolve, reject });
      this.dispatch(make(token));
    });
  }

  /** Steps the core with one event, and with every completion its effects produce at once. */
  private dispatch(event: ReplicaEvent): void {
    this.queue.push(event);
    if (this.stepping) return;
    this.stepping = true;
    try {
      for (let e = this.queue.shift(); e !== undefined; e = this.queue.shift()) {
        const { effects } = step(this.core, e);
        for (const fx of effects) this.perform(fx);
      }
    } catch (err) {
      // A broken invariant in the core: its state cannot be trusted any more.
      this.logger.fatal({ nodeId: this.id, err }, 'replica core failed');
      process.exit(70);
    } finally {
      this.stepping = false;
    }
    this.appliesSinceYield = 0;
    // The core's table holds every op applied so far: the journal may shrink to it.
    this.journal?.compact(() => this.dedupEntries());
    if (this.core.appliedSeq !== this.reportedAppliedSeq) {
      this.reportedAppliedSeq = this.core.appliedSeq;
      this.onApplied(this.core.appliedSeq);
    }
  }

  private perform(fx: ReplicaEffect): void {
    switch (fx.type) {
      case 'append': {
        const last = fx.entries[fx.entries.length - 1]!.header.seq;
        this.appendOrReport(fx.entries).then(
          (logged) => this.dispatch(logged ? { type: 'logDurable', seq: last } : { type: 'logFailed', seq: last, code: 'NO_SPACE' }),
          (err: unknown) => {
            // The log is the durability promise; a node that cannot write it must not go on.
            this.logger.fatal({ nodeId: this.id, err }, 'op log append failed');
            process.exit(70);
          },
        );
        return;
      }
      case 'apply': {
        // Apply is synchronous; a long run yields now and then so reads and acks still flow.
        if (++this.appliesSinceYield > APPLY_OPS_PER_YIELD) {
          setImmediate(() => {
            if (this.core.closed) return;
            const applied = this.applyOne(fx.entry);
            if (applied) this.dispatch(applied);
          });
          return;
        }
        const applied = this.applyOne(fx.entry);
        if (applied) this.queue.push(applied);
        return;
      }
      case 'truncate':
        this.logger.warn({ nodeId: this.id, afterSeq: fx.afterSeq, logLastSeq: this.log.lastSeq }, "cutting the log's uncommitted tail: the primary's log does not hold it");
        this.log.truncateAfter(fx.afterSeq).then(
          () => this.dispatch({ type: 'truncated', seq: fx.afterSeq }),
          (err: unknown) => {
            this.logger.fatal({ nodeId: this.id, err }, 'op log truncate failed');
            process.exit(70);
          },
        );
        return;
      case 'peerAhead':
        this.aheadAt.set(fx.peerId, Date.now());
        this.logger.error({ nodeId: this.id, peer: fx.peerId, peerCommitSeq: fx.peerCommitSeq, orderedSeq: fx.orderedSeq }, 'a peer knows of committed ops this primary does not hold; not feeding it');
        return;
      case 'send': {
        // A request that fails has been failing since it was sent: a peer behind a cut
        // link (packets dropped) fails only at the transport's timeout, and counts as
        // unreachable from when it stopped answering, not from then.
        const sentAtMs = Date.now();
        this.transport.replicate(fx.url, { epoch: fx.epoch, commitSeq: fx.commitSeq, prefixSeq: fx.prefixSeq, truncateAfter: fx.truncateAfter, entries: fx.entries }).then(
          (ack) => {
            this.failingSince.delete(fx.peerId);
            this.dispatch({ type: 'peerAcked', peerId: fx.peerId, requestId: fx.requestId, ack });
          },
          (err: unknown) => {
            const code = err instanceof DfsError ? err.code : 'UNAVAILABLE';
            // An answer, even a refusal, means the peer is reachable.
            // A peer out of room answers, but takes nothing: it is failing all the same.
            if (code === 'UNAVAILABLE' || code === 'TIMEOUT' || code === 'NO_SPACE') {
              if (!this.failingSince.has(fx.peerId)) this.failingSince.set(fx.peerId, sentAtMs);
            } else {
              this.failingSince.delete(fx.peerId);
            }
            if (code !== 'STALE_EPOCH') this.logger.warn({ nodeId: this.id, peer: fx.peerId, err: String(err) }, 'replication to peer failed; retrying');
            this.dispatch({ type: 'peerFailed', peerId: fx.peerId, requestId: fx.requestId, code });
          },
        );
        return;
      }
      case 'answer':
      case 'refuse': {
        const w = this.waiters.get(fx.token);
        assert.ok(w, `the core answered unknown request ${fx.token}`);
        this.waiters.delete(fx.token);
        if (fx.type === 'answer') w.resolve(fx.value);
        else w.reject(new DfsError(fx.code, fx.message));
        return;
      }
      case 'setTimer': {
        const old = this.timers.get(fx.key);
        if (old) clearTimeout(old);
        this.timers.set(
          fx.key,
          setTimeout(() => {
            this.timers.delete(fx.key);
            this.dispatch({ type: 'timer', key: fx.key });
          }, fx.delayMs),
        );
        return;
      }
      case 'clearTimer': {
        const t = this.timers.get(fx.key);
        if (t) clearTimeout(t);
        this.timers.delete(fx.key);
        return;
      }
      case 'refreshMembership':
        void this.onStaleEpoch()
          .catch(() => undefined)
          .finally(() => this.dispatch({ type: 'membershipRefreshed', peerId: fx.peerId }));
        return;
      case 'roleChanged':
        // What this node learnt of its peers as primary does not carry over.
        this.failingSince.clear();
        this.aheadAt.clear();
        this.logger.info({ nodeId: this.id, epoch: fx.epoch, role: fx.role }, 'role changed');
        return;
      case 'holeClaimed':
        this.logger.info({ nodeId: this.id, seq: fx.seq, epoch: fx.epoch }, 'filling hole with a no-op');
        return;
      case 'peerStranded':
        this.logger.debug({ nodeId: this.id, peer: fx.peerId, seq: fx.seq }, 'feeding a peer from the log');
        this.log.read(fx.seq, this.core.config.replicateBatchBytesMax).then(
          (entries) => this.dispatch({ type: 'peerLogRead', peerId: fx.peerId, seq: fx.seq, entries: entries ?? [], missing: entries === null }),
          (err: unknown) => {
            // The log is damaged: this node cannot be trusted to serve its history.
            this.logger.fatal({ nodeId: this.id, err }, 'op log read failed');
            process.exit(70);
          },
        );
        return;
      case 'requireSync':
        this.logger.warn({ nodeId: this.id, peer: fx.peerId, seq: fx.seq, logFirstSeq: this.log.firstSeq }, 'peer is behind this log; telling it to full-sync');
        this.transport.requireSync(fx.url, fx.epoch, fx.seq).catch((err: unknown) => this.logger.warn({ nodeId: this.id, peer: fx.peerId, err: String(err) }, 'could not tell the peer to full-sync; will again'));
        return;
      default: {
        const never: never = fx;
        throw new Error(`unknown replica effect ${JSON.stringify(never)}`);
      }
    }
  }

  /** Appends; on no room, frees the reserve and tries once more. False: still no room
   * (the node is marked full). Any other failure rejects. */
  private async appendOrReport(entries: LogEntry[]): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.log.append(entries);
        return true;
      } catch (err) {
        if (!isNoSpace(err)) throw err;
        if (attempt === 0 && this.space && (await this.space.release())) continue;
        this.logger.warn({ nodeId: this.id, fromSeq: entries[0]!.header.seq, count: entries.length, err: String(err) }, 'no room to log ops');
        this.space?.markFull();
        return false;
      }
    }
  }

  /** An apply that found no room: the reserve is freed and it runs again at once, the
   * first time; after that the node is full and it runs again every APPLY_RETRY_MS. */
  private retryApply(entry: LogEntry, attempt: number, err: unknown): void {
    const again = () => {
      if (this.core.closed) return;
      const applied = this.applyOne(entry, attempt + 1);
      if (applied) this.dispatch(applied);
    };
    void (async () => {
      if (attempt === 0 && this.space && (await this.space.release())) return again();
      if (attempt <= 1) this.logger.warn({ nodeId: this.id, seq: entry.header.seq, attempt, err: String(err) }, 'no room to apply an op; trying again until there is');
      this.space?.markFull();
      setTimeout(again, APPLY_RETRY_MS);
    })().catch((err: unknown) => {
      this.logger.fatal({ nodeId: this.id, err }, 'releasing the space reserve failed');
      process.exit(70);
    });
  }

  /** Applies one op; null when it found no room and will be applied later (retryApply). */
  private applyOne(entry: LogEntry, attempt = 0): ReplicaEvent | null {
    const { header, data } = entry;
    let result: ApplyResult;
    try {
      const journal = this.journal;
      const reqId = header.reqId;
      // The table's line is written before the brick's applied mark moves (Brick.apply).
      result = this.brick.apply(header.op, data, header.timeMs, header.seq, journal && reqId !== '' ? (r) => journal.record(reqId, { seq: header.seq, ...r }) : undefined, header.caller);
    } catch (err) {
      if (isNoSpace(err)) {
        this.retryApply(entry, attempt, err);
        return null;
      }
      this.logger.fatal({ nodeId: this.id, seq: header.seq, err }, 'apply failed');
      process.exit(70);
    }
    entry.frame = undefined; // the encoded frame is not needed once applied
    return { type: 'applied', seq: header.seq, result };
  }
}
