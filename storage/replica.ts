/*
 * The replica: how a storage node turns sequenced ops into a durable, replicated, applied
 * history. It is the same code on the primary and on a backup; the role decides which
 * inputs it takes.
 *
 * Data flow (DESIGN.md, Writes):
 *
 *   primary:  submit(op with seq) ─┐                       ┌─> peer pump: replicate batches to
 *   backup:   replicate(batch) ────┴─> pending (by seq) ──> ordered ──> log pump: append + fdatasync
 *                                     (contiguous run)        │           (group commit)
 *                                                             ▼
 *            commit = primary: min(own durable, every in-sync backup's durable)
 *                     backup:  min(own durable, the commit the primary told it)
 *                                                             ▼
 *                                  apply pump: brick.apply in sequence order, one at a time
 *                                     └─> answers the proxy (primary), wakes barrier reads
 *
 * Sequence slots are written once: an op for a slot that already holds one is refused with
 * SLOT_TAKEN and the proxy sequences it again. A slot the primary waited for longer than
 * `holeTimeoutMs` (a proxy took the ID and died) is claimed as a no-op. Retries carry the
 * client's request ID; the apply step answers a request ID it has already applied with the
 * first answer instead of applying it again, identically on every node.
 *
 * Known limits, each owned by a later issue (see the issue notes): a backup that falls out
 * of the primary's in-memory window cannot catch up yet (it stops being fed, which stalls
 * commits), the dedup table is in memory only, and there is no failover of the primary.
 */
import assert from 'node:assert/strict';
import type { Membership, OpResult } from '../common/api';
import { DfsError } from '../common/errors';
import type { SequencedOpHeader } from '../common/ops';
import type { Logger } from '../common/log';
import type { ApplyResult, Brick } from './brick';
import type { LogEntry, OpLog } from './op-log';

const APPLY_OPS_PER_YIELD = 64;

export interface ReplicaConfig {
  /** How long the primary waits for a missing sequence ID before claiming it as a no-op. */
  holeTimeoutMs: number;
  /** How long a read waits for its barrier before answering BARRIER_TIMEOUT. */
  barrierTimeoutMs: number;
  /** Ops received and not yet applied, beyond which new submissions get UNAVAILABLE. */
  pendingOpsMax: number;
  /** Bytes of op data in one replication batch. */
  replicateBatchBytesMax: number;
  /** Request IDs remembered for exactly-once retries. */
  dedupEntriesMax: number;
  /** Backoff before a failed replication request to a peer is tried again. */
  peerRetryMs: number;
}

/** How the replica reaches a peer; the real one is HTTP/2 (storage/peer-client.ts). */
export interface PeerTransport {
  replicate(url: string, epoch: number, commitSeq: number, entries: LogEntry[]): Promise<{ durableSeq: number }>;
}

export interface ReplicaState {
  id: string;
  epoch: number;
  role: 'primary' | 'backup' | 'none';
  durableSeq: number;
  orderedSeq: number;
  commitSeq: number;
  appliedSeq: number;
}

interface Peer {
  id: string;
  url: string;
  ackedSeq: number; // -1 until the peer told us its log end
  knownCommit: number;
  /** A batch of ops is in flight (at most one, so a peer's log grows in order). */
  busy: boolean;
  /** A commit-only notice is in flight; it never holds up the next batch of ops. */
  noticeBusy: boolean;
  retryTimer: NodeJS.Timeout | null;
}

export class Replica {
  epoch: number;
  appliedSeq: number;
  private role: 'primary' | 'backup' | 'none' = 'none';
  private durableSeq: number;
  private orderedSeq: number;
  private commitSeq: number;
  /** Received, not yet contiguous. */
  private readonly pending = new Map<number, LogEntry>();
  /** Contiguous and not yet applied (logged, or being logged). */
  private readonly entries = new Map<number, LogEntry>();
  private readonly submitters = new Map<number, { resolve: (r: OpResult) => void; reject: (e: Error) => void }>();
  private readonly barrierWaiters = new Set<{ seq: number; resolve: () => void }>();
  private readonly durableWaiters = new Set<{ seq: number; resolve: () => void }>();
  private readonly dedup = new Map<string, OpResult>();
  private peers = new Map<string, Peer>();
  private appending = false;
  private applying = false;
  private holeTimer: NodeJS.Timeout | null = null;
  private highestSeenSeq = 0;
  /** While set, apply stops at this sequence ID (holdAt). */
  private applyCeiling: number | null = null;
  private closed = false;

  constructor(
    readonly id: string,
    private readonly log: OpLog,
    private readonly brick: Brick,
    private readonly transport: PeerTransport,
    private readonly config: ReplicaConfig,
    private readonly logger: Logger,
    state: { epoch: number; appliedSeq: number },
    recovered: LogEntry[],
    private readonly onApplied: (appliedSeq: number) => void,
    /** Asks for the newest membership; called when a peer says this node's epoch is old. */
    private readonly onStaleEpoch: () => Promise<void> = async () => undefined,
  ) {
    this.epoch = state.epoch;
    this.appliedSeq = state.appliedSeq;
    this.durableSeq = Math.max(log.lastSeq, state.appliedSeq);
    this.orderedSeq = this.durableSeq;
    this.commitSeq = this.appliedSeq;
    for (const e of recovered) this.entries.set(e.header.seq, e);
    assert.ok(recovered.length === 0 || recovered[0]!.header.seq === this.appliedSeq + 1, 'recovered log does not continue the applied state');
  }

  state(): ReplicaState {
    return {
      id: this.id,
      epoch: this.epoch,
      role: this.role,
      durableSeq: this.durableSeq,
      orderedSeq: this.orderedSeq,
      commitSeq: this.commitSeq,
      appliedSeq: this.appliedSeq,
    };
  }

  /** Adopts a membership from the leader. Older epochs are ignored (fencing). */
  setMembership(m: Membership): void {
    if (m.epoch < this.epoch) return;
    const roleBefore = this.role;
    this.epoch = m.epoch;
    this.role = m.primary === this.id ? 'primary' : m.inSync.includes(this.id) ? 'backup' : 'none';
    const next = new Map<string, Peer>();
    if (this.role === 'primary') {
      for (const id of m.inSync) {
        if (id === this.id) continue;
        const url = m.nodes[id];
        assert.ok(url, `membership names ${id} without a URL`);
        const old = this.peers.get(id);
        next.set(id, old && old.url === url ? old : { id, url, ackedSeq: -1, knownCommit: -1, busy: false, noticeBusy: false, retryTimer: null });
      }
    }
    for (const [id, p] of this.peers) if (!next.has(id) && p.retryTimer) clearTimeout(p.retryTimer);
    this.peers = next;
    if (roleBefore !== this.role) this.logger.info({ nodeId: this.id, epoch: this.epoch, role: this.role }, 'role changed');
    if (this.role === 'primary') {
      // With the current in-sync set, everything this node has durably may now be committed
      // (a single-node cluster commits on its own log alone).
      this.advancePrimaryCommit();
      this.pumpPeers();
      this.pumpApply();
    }
  }

  private checkEpoch(epoch: number): void {
    if (epoch < this.epoch) throw new DfsError('STALE_EPOCH', `epoch ${epoch} is older than ${this.epoch}`);
    if (epoch > this.epoch) throw new DfsError('STALE_EPOCH', `epoch ${epoch} is newer than this node's ${this.epoch}; retry after it refreshes`);
  }

  // ---- primary: ops from proxies ----

  submit(header: SequencedOpHeader, data: Buffer): Promise<OpResult> {
    this.checkEpoch(header.epoch);
    if (this.role !== 'primary') throw new DfsError('NOT_PRIMARY', `${this.id} is not the primary of epoch ${this.epoch}`);
    const seq = header.seq;
    if (seq <= this.orderedSeq || this.pending.has(seq)) throw new DfsError('SLOT_TAKEN', `sequence ID ${seq} is taken`);
    if (this.pending.size + this.entries.size >= this.config.pendingOpsMax) {
      throw new DfsError('UNAVAILABLE', `more than ${this.config.pendingOpsMax} ops in flight`);
    }
    return new Promise<OpResult>((resolve, reject) => {
      this.submitters.set(seq, { resolve, reject });
      this.accept([{ header, data }]);
    });
  }

  /** A read's barrier names a sequence ID: it exists, so a slot below it that never
   * arrives is a hole the primary must fill. */
  noteSeqExists(seq: number): void {
    if (this.role !== 'primary' || seq <= this.highestSeenSeq) return;
    this.highestSeenSeq = seq;
    this.armHoleTimer();
  }

  // ---- backup: batches from the primary ----

  async replicate(epoch: number, commitSeq: number, batch: LogEntry[]): Promise<{ durableSeq: number }> {
    this.checkEpoch(epoch);
    if (this.role !== 'backup') throw new DfsError('NOT_PRIMARY', `${this.id} is not a backup in epoch ${this.epoch}`);
    let last = 0;
    const fresh: LogEntry[] = [];
    for (const e of batch) {
      const seq = e.header.seq;
      last = Math.max(last, seq);
      if (seq <= this.orderedSeq) {
        const mine = this.entries.get(seq);
        // Invariant: a sequence ID holds the same op on every node that has it.
        if (mine) assert.equal(mine.header.reqId, e.header.reqId, `seq ${seq} differs from the primary's`);
        continue;
      }
      fresh.push(e);
    }
    if (fresh.length > 0 && fresh[0]!.header.seq !== this.orderedSeq + 1) {
      throw new DfsError('GAP', `batch starts at ${fresh[0]!.header.seq}, log ends at ${this.orderedSeq}`);
    }
    if (fresh.length > 0) this.accept(fresh);
    if (last > 0) await this.waitDurable(last);
    this.advanceBackupCommit(commitSeq);
    return { durableSeq: this.durableSeq };
  }

  private advanceBackupCommit(primaryCommit: number): void {
    const commit = Math.min(primaryCommit, this.durableSeq);
    if (commit > this.commitSeq) {
      this.commitSeq = commit;
      this.pumpApply();
    }
  }

  private waitDurable(seq: number): Promise<void> {
    if (this.durableSeq >= seq) return Promise.resolve();
    return new Promise((resolve) => this.durableWaiters.add({ seq, resolve }));
  }

  // ---- holding the brick still (dfs verify) ----

  /** Applies up to exactly `seq` and no further until `release`, so a brick can be read
   * as it stands at one point of the history. Fails if this node applied past it. */
  async holdAt(seq: number, timeoutMs: number): Promise<void> {
    if (this.applyCeiling !== null) throw new DfsError('UNAVAILABLE', `${this.id} is already held at ${this.applyCeiling}`);
    if (this.appliedSeq > seq) throw new DfsError('SLOT_TAKEN', `${this.id} applied ${this.appliedSeq}, past ${seq}`);
    this.applyCeiling = seq;
    const deadline = Date.now() + timeoutMs;
    try {
      while (this.appliedSeq < seq) {
        if (Date.now() > deadline) throw new DfsError('BARRIER_TIMEOUT', `${this.id} applied ${this.appliedSeq}, hold needs ${seq}`);
        await this.waitApplied(seq).catch((e: unknown) => {
          if (!(e instanceof DfsError && e.code === 'BARRIER_TIMEOUT')) throw e;
        });
      }
    } catch (e) {
      this.release();
      throw e;
    }
  }

  release(): void {
    this.applyCeiling = null;
    this.pumpApply();
  }

  private applyLimit(): number {
    return this.applyCeiling === null ? this.commitSeq : Math.min(this.commitSeq, this.applyCeiling);
  }

  // ---- reads ----

  /** Resolves once every op up to `seq` is applied here; BARRIER_TIMEOUT after the bound. */
  waitApplied(seq: number): Promise<void> {
    if (this.appliedSeq >= seq) return Promise.resolve();
    this.noteSeqExists(seq);
    return new Promise((resolve, reject) => {
      const w = {
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.barrierWaiters.delete(w);
        reject(new DfsError('BARRIER_TIMEOUT', `${this.id} applied ${this.appliedSeq}, read needs ${seq}`));
      }, this.config.barrierTimeoutMs);
      this.barrierWaiters.add(w);
    });
  }

  // ---- the pipeline ----

  private accept(batch: LogEntry[]): void {
    for (const e of batch) {
      this.pending.set(e.header.seq, e);
      this.highestSeenSeq = Math.max(this.highestSeenSeq, e.header.seq);
    }
    while (this.pending.has(this.orderedSeq + 1)) {
      const seq = this.orderedSeq + 1;
      this.entries.set(seq, this.pending.get(seq)!);
      this.pending.delete(seq);
      this.orderedSeq = seq;
    }
    this.armHoleTimer();
    this.pumpLog();
    this.pumpPeers();
  }

  private armHoleTimer(): void {
    const waiting = this.highestSeenSeq > this.orderedSeq;
    if (!waiting || this.role !== 'primary') {
      if (this.holeTimer) clearTimeout(this.holeTimer);
      this.holeTimer = null;
      return;
    }
    if (this.holeTimer) return;
    const missing = this.orderedSeq + 1;
    this.holeTimer = setTimeout(() => {
      this.holeTimer = null;
      if (this.closed || this.role !== 'primary' || this.orderedSeq + 1 !== missing || this.pending.has(missing)) {
        this.armHoleTimer();
        return;
      }
      this.logger.info({ nodeId: this.id, seq: missing, epoch: this.epoch }, 'filling hole with a no-op');
      this.accept([{ header: { epoch: this.epoch, seq: missing, reqId: '', timeMs: 0, op: { type: 'noop' } }, data: Buffer.alloc(0) }]);
    }, this.config.holeTimeoutMs);
  }

  private pumpLog(): void {
    if (this.appending || this.closed || this.orderedSeq <= this.durableSeq) return;
    const batch: LogEntry[] = [];
    let bytes = 0;
    for (let seq = this.durableSeq + 1; seq <= this.orderedSeq && bytes < this.config.replicateBatchBytesMax; seq++) {
      const e = this.entries.get(seq)!;
      batch.push(e);
      bytes += e.data.length;
    }
    this.appending = true;
    const last = batch[batch.length - 1]!.header.seq;
    this.log.append(batch).then(
      () => {
        this.appending = false;
        this.durableSeq = last;
        for (const w of this.durableWaiters) {
          if (w.seq <= last) {
            this.durableWaiters.delete(w);
            w.resolve();
          }
        }
        if (this.role === 'primary') this.advancePrimaryCommit();
        this.pumpLog();
      },
      (err: unknown) => {
        // The log is the durability promise; a node that cannot write it must not go on.
        this.logger.fatal({ nodeId: this.id, err }, 'op log append failed');
        process.exit(70);
      },
    );
  }

  private advancePrimaryCommit(): void {
    let commit = this.durableSeq;
    for (const p of this.peers.values()) commit = Math.min(commit, p.ackedSeq);
    if (commit > this.commitSeq) {
      this.commitSeq = commit;
      this.pumpApply();
      this.pumpPeers(); // tell the backups
    }
  }

  private pumpPeers(): void {
    if (this.role !== 'primary' || this.closed) return;
    for (const peer of this.peers.values()) this.pumpPeer(peer);
  }

  private pumpPeer(peer: Peer): void {
    if (peer.retryTimer) return;
    const known = peer.ackedSeq >= 0;
    const hasNew = known && peer.ackedSeq < this.orderedSeq;
    if (!peer.busy && (!known || hasNew)) {
      const batch: LogEntry[] = [];
      let bytes = 0;
      for (let seq = peer.ackedSeq + 1; known && seq <= this.orderedSeq && bytes < this.config.replicateBatchBytesMax; seq++) {
        const e = this.entries.get(seq);
        if (!e) {
          // Not in memory any more: the peer needs catch-up from the log, a later issue.
          this.logger.error({ nodeId: this.id, peer: peer.id, seq }, 'peer is behind the in-memory window; it cannot be fed');
          return;
        }
        batch.push(e);
        bytes += e.data.length;
      }
      this.sendToPeer(peer, batch, 'busy');
    } else if (known && !peer.noticeBusy && peer.knownCommit < this.commitSeq) {
      this.sendToPeer(peer, [], 'noticeBusy');
    }
  }

  private sendToPeer(peer: Peer, batch: LogEntry[], lane: 'busy' | 'noticeBusy'): void {
    peer[lane] = true;
    const commit = this.commitSeq;
    const epoch = this.epoch;
    this.transport.replicate(peer.url, epoch, commit, batch).then(
      ({ durableSeq }) => {
        peer[lane] = false;
        if (this.peers.get(peer.id) !== peer) return; // no longer in the in-sync set
        if (epoch !== this.epoch) {
          // Sent under an older membership: ask the peer where its log ends now, and go on
          // feeding it. Returning here without a pump would strand ops accepted meanwhile.
          peer.ackedSeq = -1;
          peer.knownCommit = -1;
        } else {
          peer.ackedSeq = Math.max(peer.ackedSeq, durableSeq);
          peer.knownCommit = Math.max(peer.knownCommit, commit);
          this.advancePrimaryCommit();
        }
        this.pumpPeer(peer);
      },
      (err: unknown) => {
        peer[lane] = false;
        const code = err instanceof DfsError ? err.code : null;
        if (code === 'GAP') peer.ackedSeq = -1; // ask again where its log ends
        else if (code !== 'STALE_EPOCH') this.logger.warn({ nodeId: this.id, peer: peer.id, err: String(err) }, 'replication to peer failed; retrying');
        if (peer.retryTimer) return;
        const retry = () => {
          peer.retryTimer = null;
          this.pumpPeer(peer);
        };
        if (code === 'STALE_EPOCH') {
          // The peer saw a newer membership first: catch up with it now, not at the next poll.
          peer.ackedSeq = -1;
          peer.retryTimer = setTimeout(() => undefined, this.config.peerRetryMs); // holds the slot
          void this.onStaleEpoch()
            .catch(() => undefined)
            .finally(() => {
              if (peer.retryTimer) clearTimeout(peer.retryTimer);
              retry();
            });
          return;
        }
        peer.retryTimer = setTimeout(retry, code === 'GAP' ? 0 : this.config.peerRetryMs);
      },
    );
  }

  private pumpApply(): void {
    if (this.applying || this.closed || this.appliedSeq >= this.applyLimit()) return;
    this.applying = true;
    void this.applyRun().then(
      () => {
        this.applying = false;
        this.onApplied(this.appliedSeq);
        this.pumpApply();
      },
      (err: unknown) => {
        this.logger.fatal({ nodeId: this.id, err }, 'apply failed');
        process.exit(70);
      },
    );
  }

  private async applyRun(): Promise<void> {
    let sinceYield = 0;
    while (this.appliedSeq < this.applyLimit() && !this.closed) {
      // Apply is synchronous; a long run yields now and then so reads and acks still flow.
      if (++sinceYield > APPLY_OPS_PER_YIELD) {
        sinceYield = 0;
        await new Promise((r) => setImmediate(r));
      }
      const seq = this.appliedSeq + 1;
      const e = this.entries.get(seq);
      assert.ok(e, `committed op ${seq} is not in memory`);
      const result = this.applyOne(e);
      this.entries.delete(seq);
      e.frame = undefined;
      this.appliedSeq = seq;
      const s = this.submitters.get(seq);
      if (s) {
        this.submitters.delete(seq);
        s.resolve(result);
      }
      for (const w of this.barrierWaiters) {
        if (w.seq <= seq) {
          this.barrierWaiters.delete(w);
          w.resolve();
        }
      }
    }
  }

  private applyOne(e: LogEntry): OpResult {
    const { header, data } = e;
    const reqId = header.reqId;
    if (reqId !== '') {
      const first = this.dedup.get(reqId);
      if (first) return { ...first, seq: header.seq };
    }
    const r: ApplyResult = this.brick.apply(header.op, data, header.timeMs, header.seq);
    const result: OpResult = { seq: header.seq, ...r };
    if (reqId !== '') {
      this.dedup.set(reqId, result);
      // Evict in apply order, which is the same on every node.
      if (this.dedup.size > this.config.dedupEntriesMax) this.dedup.delete(this.dedup.keys().next().value!);
    }
    return result;
  }

  close(): void {
    this.closed = true;
    if (this.holeTimer) clearTimeout(this.holeTimer);
    for (const p of this.peers.values()) if (p.retryTimer) clearTimeout(p.retryTimer);
    for (const s of this.submitters.values()) s.reject(new DfsError('UNAVAILABLE', 'node is shutting down'));
    this.submitters.clear();
  }
}
