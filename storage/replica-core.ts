/*
 * The replication protocol of a storage node as a pure state machine (DESIGN.md, Writes;
 * STYLE.md, Boundaries): `step(state, event) -> { state, effects }`. It holds no sockets,
 * files, timers or clocks; storage/replica.ts drives it with the real op log, brick, HTTP/2
 * peers and timers, and test/sim/ drives it with a seeded fake network, disk and clock.
 * The same code runs on the primary and on a backup; the role decides which inputs it takes.
 *
 * How data flows (every arrow is an event in or an effect out):
 *
 *   primary: submit {token, header, data} ─┐                  ┌─> send {peer, entries, commit}
 *   backup:  replicate {token, batch} ─────┴─> pending ──> ordered ─> append {entries}
 *                                           (by seq)   (contiguous)   (write + one fdatasync:
 *                                                           │          group commit)
 *                                  logDurable {seq} <───────┼──────────────┘
 *                                  peerAcked {peer, durableSeq} (primary only)
 *                                                           ▼
 *            commit = primary: min(own durable, every in-sync backup's acked durable)
 *                     backup:  min(own durable, the commit the primary told it)
 *                                                           ▼
 *             apply {entry} ──> (the driver applies it to the brick) ──> applied {seq, result}
 *                one at a time, in sequence order, up to min(commit, hold)
 *                                                           ▼
 *       answer {token} to the submitter (primary), to barrier reads and to a waiting hold
 *
 * Events in (ReplicaEvent): membership, submit, replicate, logDurable, logFailed, truncated,
 * applied, peerAcked, peerFailed, peerLogRead, syncStarted, syncFinished,
 * membershipRefreshed, space, timer, tick, barrierRead, hold, release, close.
 * Effects out (ReplicaEffect): append, truncate, send, apply, answer, refuse, setTimer,
 * clearTimer, refreshMembership, peerStranded, requireSync, and notes for the driver's log
 * (roleChanged, holeClaimed, peerAhead). The driver performs effects in the order given, and
 * reports each completion as an event: an `append` as `logDurable` (or `logFailed`, when
 * the disk had no room for it), a `truncate` as
 * `truncated`, an `apply` as `applied`, a `send` as `peerAcked` or `peerFailed`, a
 * `peerStranded` as `peerLogRead`, a `setTimer` as `timer`, a `refreshMembership` as
 * `membershipRefreshed`. Requests that expect an answer (submit, replicate, barrierRead,
 * hold) carry a token the driver chose; exactly one `answer` or `refuse` names it, maybe
 * in a later step.
 *
 * Rules kept here, each as the node has always behaved:
 * - Sequence slots are written once: an op for a slot that already holds one (ordered or
 *   pending) is refused with SLOT_TAKEN, and the proxy sequences it again.
 * - A request from another epoch is refused with STALE_EPOCH (the sender, or this node,
 *   refreshes the membership), a request for the wrong role with NOT_PRIMARY.
 * - One batch in flight per backup, so its log grows in order; a batch that does not
 *   continue a backup's log is refused with GAP, and the primary asks again where it ends
 *   (an empty batch). Every batch carries the commit point; a commit-only notice is sent
 *   only when no batch is in flight to the peer (the next one would carry it), travels in
 *   its own lane, and never holds up ops.
 * - A backup answers a batch only once it holds it durably.
 * - A slot the primary waited for `holeTimeoutMs` (a proxy took the ID and died) is claimed
 *   as a no-op, with every other slot below the highest ID known when it started waiting. A barrier read or hold naming a sequence ID tells the primary it exists, so
 *   a hole at the tail is filled too.
 * - Apply answers a request ID it has applied before with the first answer (with the new
 *   slot's seq) instead of applying it again; the table evicts in apply order, identically
 *   on every node.
 * - `hold` stops apply at one sequence ID until `release` (dfs verify reads the brick as it
 *   stands there).
 * - Space (docs/space.md): while the driver says the disk is `low` or `full`, the primary
 *   refuses ops that need new blocks with NO_SPACE before ordering them, and fills their
 *   slot with a no-op; ops that free space go on. An append that finds no room
 *   (`logFailed`) makes the node `full`: a primary keeps what it ordered and appends it
 *   once there is room, a backup drops what it had not logged and refuses it (NO_SPACE).
 *
 * The state is updated in place and returned: entries can be large, and the state belongs
 * to one driver. Anything the driver must remember across restarts (epoch, applied
 * sequence ID, the log) it keeps itself and hands to `createReplicaState`.
 *
 * Failover (docs/cluster.md, Failover) is a membership naming another primary: it asks each
 * peer where its log ends, finds where the two logs agree from the epochs of their entries
 * (`matchPoint`), and cuts a peer's tail past that point (`truncateAfter`); a backup applies
 * nothing past what it knows agrees with its primary (`matchedSeq`), and a node that
 * restarted is primary only in a later epoch (`fencedEpoch`). Later work comes in the same
 * way: a new branch of `step` with its own table tests and simulation faults; nothing here
 * reads a clock or a socket.
 */
import assert from 'node:assert/strict';
import type { Membership, OpResult } from '../common/api';
import type { ErrorCode } from '../common/errors';
import { FALLOC_FL_PUNCH_HOLE, type Op } from '../common/ops';
import type { ApplyResult } from './brick';
import type { EpochRun, LogEntry } from './op-log';

/** How much room the node's disk has (storage/disk-space.ts, docs/space.md): `ok`; `low`
 * (below the floor, or the reserve in use: a primary admits only ops that need no new
 * blocks); `full` (the log cannot grow: nothing is appended, a backup refuses batches). */
export type SpaceState = 'ok' | 'low' | 'full';

/** Ops a node admits whatever its space: they free blocks or need none beyond their log
 * record (which the reserve holds room for), so a full cluster still takes `rm -rf`,
 * `truncate`, and the bookkeeping reads and `mv` cause. A rename is here because the mount
 * unlinks an open file by renaming it away (mount/orphans.ts). */
const OPS_ADMITTED_WHEN_LOW: ReadonlySet<string> = new Set(['noop', 'unlink', 'rmdir', 'truncate', 'rename', 'removexattr', 'chmod', 'chown', 'utimens', 'atime', 'ctime']);

export function opAdmittedWhenLow(op: Op): boolean {
  // Punching a hole frees blocks; allocating or zeroing a range may take them.
  if (op.type === 'fallocate') return (op.mode & FALLOC_FL_PUNCH_HOLE) !== 0;
  return OPS_ADMITTED_WHEN_LOW.has(op.type);
}

/** The bytes an op may take on a brick beyond its data: what fallocate allocates. */
export function opBlocksBytes(op: Op): number {
  return op.type === 'fallocate' && (op.mode & FALLOC_FL_PUNCH_HOLE) === 0 ? op.size : 0;
}

/** A backup out of room is asked again this many peer retries later. */
const NO_SPACE_RETRY_FACTOR = 5;

export interface ReplicaConfig {
  /** How long the primary waits for a missing sequence ID before claiming it as a no-op. */
  holeTimeoutMs: number;
  /** How long a read waits for its barrier before answering BARRIER_TIMEOUT. */
  barrierTimeoutMs: number;
  /** Ops received and not yet applied, beyond which new submissions get UNAVAILABLE. */
  pendingOpsMax: number;
  /** Bytes of op data in one replication batch (and one log append). */
  replicateBatchBytesMax: number;
  /** Request IDs remembered for exactly-once retries. */
  dedupEntriesMax: number;
  /** Backoff before a failed replication request to a peer is tried again. */
  peerRetryMs: number;
  /** How long the primary leaves a peer alone after telling it to full-sync. */
  syncRetryMs: number;
  /** How far above the newest sequence ID this node knows of (its log's end, or the commit
   * point it was told) a submitted op, a read's barrier or a hold may name: further is
   * refused (BAD_REQUEST). Proxies are never ahead of the log by more than the ops in
   * flight, so a legitimate request stays well within it; without it one request could
   * make the primary claim any number of holes. At least pendingOpsMax. */
  seqAheadMax: number;
  /** Holes the primary claims in one firing of its hole timer; the rest wait for the next
   * round (the timer is armed again at once), so no request makes it claim millions at once. */
  holeClaimsPerRoundMax: number;
  /** The floor on copies (Kafka's min.insync.replicas): the primary commits, so applies
   * and acknowledges, only while this many in-sync nodes (itself included) hold the op.
   * 0 or absent: a majority of the membership's nodes. */
  minInSync?: number;
  /** How long the primary holds back a commit-only notice (0 or absent: it sends one at
   * once). A batch sent meanwhile carries the commit point instead, so while ops keep
   * coming (one after another, as one process creating files sends them) a backup hears
   * each commit point with the next op rather than in a message and answer of its own:
   * half the messages per op between primary and backup. A backup applies an op that
   * much later at most; its reads wait for their barrier as ever, and the primary's
   * answers do not wait for it. */
  commitNoticeDelayMs?: number;
  /** A planted bug, for showing that the partition tests catch one (DFS_FAULT_ACK_BEFORE_
   * BACKUPS): the primary commits on its own log, before its backups answer. Never set
   * it otherwise. */
  faultAckBeforeBackups?: boolean;
}

/** The floor on copies for a membership of `memberCount` nodes (`minInSync`, 0: a majority). */
export function copiesFloor(minInSync: number | undefined, memberCount: number): number {
  return minInSync !== undefined && minInSync > 0 ? minInSync : Math.floor(memberCount / 2) + 1;
}

/** Checks a configuration once, at start-up (STYLE.md, Limits). */
export function validateReplicaConfig(c: ReplicaConfig): void {
  for (const [name, value] of Object.entries(c)) {
    if (name === 'faultAckBeforeBackups') continue;
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`replica config ${name} must be a non-negative integer, not ${value}`);
  }
  if (c.pendingOpsMax < 1) throw new Error('replica config pendingOpsMax must be at least 1');
  if (c.replicateBatchBytesMax < 1) throw new Error('replica config replicateBatchBytesMax must be at least 1');
  if (c.dedupEntriesMax < 1) throw new Error('replica config dedupEntriesMax must be at least 1');
  if (c.seqAheadMax < c.pendingOpsMax) throw new Error('replica config seqAheadMax must be at least pendingOpsMax');
  if (c.holeClaimsPerRoundMax < 1) throw new Error('replica config holeClaimsPerRoundMax must be at least 1');
}

/** The refusal of a sequence ID further above the newest this node knows of than
 * seqAheadMax (ReplicaConfig), or null. */
function seqAheadRefusal(s: ReplicaCoreState, seq: number): string | null {
  const newest = Math.max(s.orderedSeq, s.commitSeq);
  if (seq <= newest + s.config.seqAheadMax) return null;
  return `sequence ID ${seq} is more than ${s.config.seqAheadMax} above the newest ${s.id} knows of (${newest})`;
}

/** primary: orders and replicates; backup: in the in-sync set, counted for commit;
 * learner: a member being brought up to date (fed like a backup, not counted for commit,
 * given no reads); none: not in the membership. */
export type Role = 'primary' | 'backup' | 'learner' | 'none';

/** A request in flight to a peer: what it promised, so that its answer can be judged. */
export interface PeerRequest {
  requestId: number;
  epoch: number;
  commitSeq: number;
  /** The highest sequence ID this request vouches for: its last entry, or for an empty
   * one the peer's acknowledged log end when it was sent. An answer never counts past it. */
  lastSeq: number;
  /** The cut of the peer's log this request asked for, or null. */
  truncateAfter: number | null;
}

export interface PeerState {
  id: string;
  url: string;
  /** A backup (its durable log counts for commit) rather than a learner. */
  inSync: boolean;
  /** The end of the peer's durable log as it last told us; -1 until it has told us. */
  ackedSeq: number;
  /** The highest commit point the peer has confirmed hearing. */
  knownCommit: number;
  /** A batch of ops in flight (at most one, so a peer's log grows in order). */
  batch: PeerRequest | null;
  /** A commit-only notice in flight (sent only while no batch is); it never holds up the
   * next batch. */
  notice: PeerRequest | null;
  /** A notice is being held back (commitNoticeDelayMs): its timer, `notice:<id>`, is armed. */
  noticeHeld: boolean;
  /** Waiting before the next request: on a timer, or on a membership refresh. */
  retry: 'timer' | 'refresh' | null;
  /** The sequence ID this peer needs and memory no longer holds: the driver was asked to
   * read it from the log (`peerStranded`), and nothing else is sent to the peer meanwhile. */
  strandedAt: number | null;
  /** Answers to requests numbered below this were sent before we last asked the peer
   * afresh where its log ends; what they say about its log is out of date. */
  answersFrom: number;
  /** The peer's log holds entries after this point that this log does not (an old
   * primary's uncommitted tail): the next batch tells it to cut them (see Failover). */
  truncateAfter: number | null;
}

export interface ReplicaCoreState {
  readonly id: string;
  readonly config: ReplicaConfig;
  epoch: number;
  role: Role;
  /** The end of the log on disk (fsynced). */
  durableSeq: number;
  /** The end of the contiguous run received (logged, or being logged). */
  orderedSeq: number;
  commitSeq: number;
  appliedSeq: number;
  /** The highest sequence ID known to exist (received, or named by a read). */
  highestSeenSeq: number;
  /** Received, not yet contiguous. */
  pending: Map<number, LogEntry>;
  /** Contiguous and not yet applied. */
  entries: Map<number, LogEntry>;
  /** The last sequence ID of the log append in flight. */
  appendingSeq: number | null;
  /** The sequence ID the brick is applying. */
  applyingSeq: number | null;
  /** Submitted ops waiting for their apply: seq -> token. */
  submitters: Map<number, number>;
  /** Batches answered once the log holds them: token -> what to do then. */
  replicateWaiters: Map<number, { lastSeq: number; commitSeq: number }>;
  /** Reads waiting for their barrier: token -> seq. */
  barrierWaiters: Map<number, number>;
  /** Apply stops at `seq` while set; `token` is the hold request still waiting to get there. */
  hold: { seq: number; token: number | null } | null;
  /** Request ID -> the first answer, in apply order (Map keeps insertion order). */
  dedup: Map<string, OpResult>;
  peers: Map<string, PeerState>;
  nextRequestId: number;
  /** The sequence ID the armed hole timer is for. */
  holeTimerSeq: number | null;
  /** The highest sequence ID known to exist when the hole timer was armed: every slot up to
   * it was taken at least `holeTimeoutMs` before the timer fires. */
  holeTimerUpTo: number;
  /** A full sync is under way: the brick and log are being replaced, so nothing is
   * appended, applied or answered until `syncFinished`. */
  syncing: boolean;
  closed: boolean;
  /** The epochs of the log's entries, oldest first, up to orderedSeq (empty: none known). */
  epochRuns: EpochRun[];
  /** Not primary: the log agrees with the current primary's up to here (what this node
   * knows committed, and what the primary has since vouched for). Commit never passes it,
   * so an old primary's uncommitted tail is never applied. */
  matchedSeq: number;
  /** The epoch this node held when it (re)started. Entries it had not fsynced may be gone,
   * while a backup holds them; were it primary again in that epoch it could put another op
   * in such a slot under the same epoch. So it is primary only in a later epoch. */
  fencedEpoch: number;
  /** A cut of the log's tail in flight (after this sequence ID); appends wait for it. */
  truncatingSeq: number | null;
  /** The membership names this node primary in an epoch it is fenced from: it waits for
   * the leader to publish a later one (its heartbeat says so). */
  primaryFenced: boolean;
  /** The disk's room as the driver last said (a `space` event). */
  space: SpaceState;
  /** Which life of this node's disk this is (storage/node-state.ts); null: not told. */
  incarnation: string | null;
  /** The membership admitted another incarnation under this node's ID: this one holds
   * none of what that one did, so it is a learner whatever role the membership names. */
  stranger: boolean;
  /** Primary: the members of the current membership (itself included), for the floor. */
  memberCount: number;
}

/** What a node knows when it starts: its state file and its recovered log. */
export interface ReplicaInit {
  id: string;
  config: ReplicaConfig;
  epoch: number;
  appliedSeq: number;
  /** Known committed (at least appliedSeq): the ops up to it apply without waiting for a
   * primary. The real node passes its applied sequence ID; the simulation, rebuilding a
   * brick from the log, passes the point it had applied before. */
  commitSeq?: number;
  /** The last sequence ID in the log on disk (0 for an empty log). */
  logLastSeq: number;
  /** The log's entries after `appliedSeq`, in order. */
  recovered: LogEntry[];
  /** The request-ID table as it stood at `appliedSeq`, oldest first (storage/dedup-journal.ts). */
  dedup?: Array<[string, OpResult]>;
  /** The epochs of the log's entries (OpLog.epochRuns); derived from `recovered` if absent. */
  epochRuns?: EpochRun[];
  /** Acts as primary only in an epoch above this one (see `fencedEpoch`); 0 for none. */
  fencedEpoch?: number;
  /** This life of the node's disk (see `stranger`). */
  incarnation?: string;
}

export function createReplicaState(init: ReplicaInit): ReplicaCoreState {
  validateReplicaConfig(init.config);
  const durableSeq = Math.max(init.logLastSeq, init.appliedSeq);
  const commitSeq = init.commitSeq ?? init.appliedSeq;
  assert.ok(commitSeq >= init.appliedSeq && commitSeq <= durableSeq, `commit ${commitSeq} outside applied ${init.appliedSeq}..durable ${durableSeq}`);
  const entries = new Map<number, LogEntry>();
  let expect = init.appliedSeq + 1;
  for (const e of init.recovered) {
    assert.equal(e.header.seq, expect, 'recovered log does not continue the applied state');
    entries.set(e.header.seq, e);
    expect++;
  }
  assert.ok(init.recovered.length === 0 || expect - 1 === durableSeq, 'recovered entries do not reach the end of the log');
  return {
    id: init.id,
    config: init.config,
    epoch: init.epoch,
    role: 'none',
    durableSeq,
    orderedSeq: durableSeq,
    commitSeq,
    appliedSeq: init.appliedSeq,
    highestSeenSeq: durableSeq,
    pending: new Map(),
    entries,
    appendingSeq: null,
    applyingSeq: null,
    submitters: new Map(),
    replicateWaiters: new Map(),
    barrierWaiters: new Map(),
    hold: null,
    dedup: new Map((init.dedup ?? []).slice(-init.config.dedupEntriesMax)),
    peers: new Map(),
    nextRequestId: 1,
    holeTimerSeq: null,
    holeTimerUpTo: 0,
    syncing: false,
    closed: false,
    primaryFenced: false,
    incarnation: init.incarnation ?? null,
    stranger: false,
    memberCount: 1,
    epochRuns: init.epochRuns?.map((r) => ({ ...r })) ?? runsOf(init.recovered),
    matchedSeq: commitSeq,
    fencedEpoch: init.fencedEpoch ?? 0,
    truncatingSeq: null,
    space: 'ok',
  };
}

function runsOf(entries: LogEntry[]): EpochRun[] {
  const runs: EpochRun[] = [];
  for (const e of entries) noteEpoch(runs, e.header.seq, e.header.epoch);
  return runs;
}

/** Runs kept at most; older ones only describe entries long applied. */
const EPOCH_RUNS_MAX = 1024;

function noteEpoch(runs: EpochRun[], seq: number, epoch: number): void {
  if (runs[runs.length - 1]?.epoch === epoch) return;
  runs.push({ from: seq, epoch });
  if (runs.length > EPOCH_RUNS_MAX) runs.shift();
}

/** The epoch of entry `seq` by these runs (which end at `lastSeq`), or null if unknown. */
function epochIn(runs: EpochRun[], seq: number, lastSeq: number): number | null {
  if (runs.length === 0 || seq < runs[0]!.from || seq > lastSeq) return null;
  for (let i = runs.length - 1; i >= 0; i--) if (runs[i]!.from <= seq) return runs[i]!.epoch;
  return null;
}

/** Where a run containing `seq` starts (seq itself when unknown). */
function runStart(runs: EpochRun[], seq: number): number {
  for (let i = runs.length - 1; i >= 0; i--) if (runs[i]!.from <= seq) return runs[i]!.from;
  return seq;
}

/** One replication request from the primary to a peer (the `send` effect, the `replicate`
 * event, and the wire between them). */
export interface ReplicateRequest {
  epoch: number;
  commitSeq: number;
  /** The primary vouches that the peer's log agrees with its own up to here (-1: nothing yet). */
  prefixSeq: number;
  /** Cut the log after this sequence ID first (never below where it is known to agree with
   * this primary's), or null. */
  truncateAfter: number | null;
  entries: LogEntry[];
}

/** A backup's answer to a batch: where its durable log ends, what it knows committed, and
 * the epochs of its entries in between (so a new primary can find where their logs agree). */
export interface ReplicateAck {
  durableSeq: number;
  commitSeq: number;
  tail: EpochRun[];
}

/** What a hold answers: the sequence ID the brick stands at. */
export interface HeldAt {
  heldSeq: number;
}

export type TimerKey = 'hole' | 'hold' | `peer:${string}` | `notice:${string}` | `barrier:${number}`;

export type ReplicaEvent =
  /** The leader's membership (already persisted by the driver when its epoch is newer). */
  | { type: 'membership'; membership: Membership }
  /** Primary: an op from a proxy. Answered with an OpResult once applied. */
  | { type: 'submit'; token: number; header: LogEntry['header']; data: Buffer; frame?: Buffer }
  /** Backup: a batch (maybe empty: a commit notice, or a question where the log ends). */
  | ({ type: 'replicate'; token: number } & ReplicateRequest)
  /** The `append` in flight is on disk, fsynced, through `seq`. */
  | { type: 'logDurable'; seq: number }
  /** The `append` in flight (ending at `seq`) wrote nothing: the disk has no room for it
   * (code NO_SPACE); the log on disk still ends where it did. */
  | { type: 'logFailed'; seq: number; code: ErrorCode }
  /** The disk's room changed (storage/disk-space.ts). */
  | { type: 'space'; state: SpaceState }
  /** The `truncate` in flight is on disk: the log ends at `seq`. */
  | { type: 'truncated'; seq: number }
  /** The brick applied `seq` (the `apply` in flight) with this outcome. */
  | { type: 'applied'; seq: number; result: ApplyResult }
  | { type: 'peerAcked'; peerId: string; requestId: number; ack: ReplicateAck }
  | { type: 'peerFailed'; peerId: string; requestId: number; code: ErrorCode }
  /** The driver's answer to `peerStranded`: the log's entries from `seq` on (a contiguous
   * run, maybe cut at a byte bound), or `missing` when the log no longer reaches back there. */
  | { type: 'peerLogRead'; peerId: string; seq: number; entries: LogEntry[]; missing: boolean }
  /** The driver starts replacing the brick from a peer (this node was told to, or it
   * restarted in the middle of a sync). Every waiting request is refused. */
  | { type: 'syncStarted' }
  /** The brick, now a copy of a peer's at `seq`, and the log (empty, ending at `seq`) are
   * in place; `dedup` is the peer's request-ID table at that point, in apply order. */
  | { type: 'syncFinished'; seq: number; dedup: Array<[string, OpResult]> }
  /** The refresh asked for by `refreshMembership` is over (whatever it found). */
  | { type: 'membershipRefreshed'; peerId: string }
  | { type: 'timer'; key: TimerKey }
  /** A read: answered once every op up to `seq` is applied, or BARRIER_TIMEOUT. */
  | { type: 'barrierRead'; token: number; seq: number }
  /** dfs verify: apply up to exactly `seq`, then hold there until `release`. */
  | { type: 'hold'; token: number; seq: number; timeoutMs: number }
  | { type: 'release' }
  /** A second has passed (the driver's heartbeat): the primary tells every peer the commit
   * point again, so one that restarted unseen in a quiet cluster learns it. */
  | { type: 'tick' }
  /** The node is shutting down: every waiting request is refused. */
  | { type: 'close' };

export type ReplicaEffect =
  /** Write these entries after the log's end and fdatasync once; then `logDurable`. */
  | { type: 'append'; entries: LogEntry[] }
  /** Replicate to a peer (entries may be empty: a notice or a probe); then `peerAcked` or `peerFailed`. */
  | ({ type: 'send'; peerId: string; url: string; requestId: number } & ReplicateRequest)
  /** Cut the log after `afterSeq` (durably); then `truncated`. */
  | { type: 'truncate'; afterSeq: number }
  /** Apply this committed op to the brick; then `applied`. */
  | { type: 'apply'; entry: LogEntry }
  | { type: 'answer'; token: number; value: OpResult | ReplicateAck | HeldAt | null }
  | { type: 'refuse'; token: number; code: ErrorCode; message: string }
  /** (Re)arm a timer; a timer armed again under the same key replaces the old one. */
  | { type: 'setTimer'; key: TimerKey; delayMs: number }
  | { type: 'clearTimer'; key: TimerKey }
  /** A peer said our epoch is old: ask for the newest membership, then `membershipRefreshed`. */
  | { type: 'refreshMembership'; peerId: string }
  /** Notes for the driver's log. */
  | { type: 'roleChanged'; role: Role; epoch: number }
  | { type: 'holeClaimed'; seq: number; epoch: number }
  /** Tell a peer that this node's log no longer reaches back to what it needs: it must
   * copy a brick (full sync). Fire and forget: the primary asks it again later. */
  | { type: 'requireSync'; peerId: string; url: string; epoch: number; seq: number }
  /** Read the log from `seq` for this peer, then `peerLogRead`. */
  | { type: 'peerStranded'; peerId: string; seq: number }
  /** A note: a peer knows ops committed that this log does not hold; it is left alone. */
  | { type: 'peerAhead'; peerId: string; peerCommitSeq: number; orderedSeq: number };

export interface StepResult {
  state: ReplicaCoreState;
  effects: ReplicaEffect[];
}

/** One event in, the effects out. Throws (an assertion) only on a driver's mistake or a
 * broken invariant; everything a peer or a proxy may send is answered. */
export function step(state: ReplicaCoreState, event: ReplicaEvent): StepResult {
  const fx: ReplicaEffect[] = [];
  const s = state;
  if (s.closed) {
    // A request that races the shutdown still gets an answer; everything else is moot.
    const token = 'token' in event ? event.token : null;
    if (token !== null) fx.push({ type: 'refuse', token, code: 'UNAVAILABLE', message: 'node is shutting down' });
    return { state: s, effects: fx };
  }
  switch (event.type) {
    case 'membership':
      onMembership(s, fx, event.membership);
      break;
    case 'submit':
      onSubmit(s, fx, event.token, event.header, event.data, event.frame);
      break;
    case 'replicate':
      onReplicate(s, fx, event.token, event.epoch, event.commitSeq, event.prefixSeq, event.truncateAfter, event.entries);
      break;
    case 'logDurable':
      onLogDurable(s, fx, event.seq);
      break;
    case 'truncated':
      onTruncated(s, fx, event.seq);
      break;
    case 'logFailed':
      onLogFailed(s, fx, event.seq, event.code);
      break;
    case 'space': {
      const was = s.space;
      s.space = event.state;
      if (was === 'full' && event.state !== 'full') pumpLog(s, fx);
      break;
    }
    case 'applied':
      onApplied(s, fx, event.seq, event.result);
      break;
    case 'peerAcked':
      onPeerAnswer(s, fx, event.peerId, event.requestId, event.ack);
      break;
    case 'peerFailed':
      onPeerAnswer(s, fx, event.peerId, event.requestId, { code: event.code });
      break;
    case 'peerLogRead':
      onPeerLogRead(s, fx, event.peerId, event.seq, event.entries, event.missing);
      break;
    case 'syncStarted':
      onSyncStarted(s, fx);
      break;
    case 'syncFinished':
      onSyncFinished(s, fx, event.seq, event.dedup);
      break;
    case 'membershipRefreshed': {
      const peer = s.peers.get(event.peerId);
      if (peer && peer.retry === 'refresh') {
        peer.retry = null;
        pumpPeer(s, fx, peer);
      }
      break;
    }
    case 'timer':
      onTimer(s, fx, event.key);
      break;
    case 'barrierRead':
      if (s.syncing) {
        fx.push({ type: 'refuse', token: event.token, code: 'UNAVAILABLE', message: `${s.id} is copying its brick from a peer` });
        break;
      }
      if (s.appliedSeq >= event.seq) {
        fx.push({ type: 'answer', token: event.token, value: null });
        break;
      }
      {
        const ahead = seqAheadRefusal(s, event.seq);
        if (ahead) {
          fx.push({ type: 'refuse', token: event.token, code: 'BAD_REQUEST', message: ahead });
          break;
        }
      }
      noteSeqExists(s, fx, event.seq);
      s.barrierWaiters.set(event.token, event.seq);
      fx.push({ type: 'setTimer', key: `barrier:${event.token}`, delayMs: s.config.barrierTimeoutMs });
      break;
    case 'hold':
      onHold(s, fx, event.token, event.seq, event.timeoutMs);
      break;
    case 'release':
      if (s.hold !== null && s.hold.token !== null) {
        fx.push({ type: 'clearTimer', key: 'hold' });
        fx.push({ type: 'refuse', token: s.hold.token, code: 'UNAVAILABLE', message: 'hold released before it was reached' });
      }
      s.hold = null;
      pumpApply(s, fx);
      break;
    case 'tick':
      if (s.role !== 'primary') break;
      for (const peer of s.peers.values()) {
        if (peer.ackedSeq < 0) continue;
        peer.knownCommit = -1;
        pumpPeer(s, fx, peer);
      }
      break;
    case 'close':
      onClose(s, fx);
      break;
    default: {
      const never: never = event;
      throw new Error(`unknown replica event ${JSON.stringify(never)}`);
    }
  }
  return { state: s, effects: fx };
}

// ---- membership and epochs ----

function onMembership(s: ReplicaCoreState, fx: ReplicaEffect[], m: Membership): void {
  if (m.epoch < s.epoch) return; // fencing: an older leader's view is ignored
  const roleBefore = s.role;
  // A new epoch may bring a new primary: only what this node knows committed is known to
  // agree with its log until the primary vouches for more.
  if (m.epoch > s.epoch) s.matchedSeq = s.commitSeq;
  s.epoch = m.epoch;
  // A membership that admitted another incarnation under this ID (this is a new disk)
  // gives this node no vote and no primary role: it may hold none of what that one held.
  const admitted = m.incarnations?.[s.id];
  s.stranger = s.incarnation !== null && admitted !== undefined && admitted !== s.incarnation;
  const listed: Role = m.primary === s.id ? 'primary' : m.inSync.includes(s.id) ? 'backup' : m.nodes[s.id] !== undefined ? 'learner' : 'none';
  const named: Role = s.stranger && listed !== 'none' ? 'learner' : listed;
  s.memberCount = Object.keys(m.nodes).length;
  s.primaryFenced = named === 'primary' && m.epoch <= s.fencedEpoch;
  s.role = s.primaryFenced ? 'none' : named;
  if (roleBefore === 'primary' && s.role !== 'primary') stepDown(s, fx);
  const next = new Map<string, PeerState>();
  if (s.role === 'primary') {
    for (const id of m.inSync) assert.ok(m.nodes[id], `membership names ${id} without a URL`);
    // Every other member is fed; only the in-sync ones count for commit. A learner keeps
    // its place (and what we know of its log) when it is promoted.
    for (const [id, url] of Object.entries(m.nodes)) {
      if (id === s.id) continue;
      const old = s.peers.get(id);
      const peer = old && old.url === url ? old : newPeer(id, url);
      peer.inSync = m.inSync.includes(id);
      next.set(id, peer);
    }
  }
  for (const [id, p] of s.peers) {
    if (next.get(id) !== p && p.retry === 'timer') fx.push({ type: 'clearTimer', key: `peer:${id}` });
    if (next.get(id) !== p && p.noticeHeld) fx.push({ type: 'clearTimer', key: `notice:${id}` });
  }
  s.peers = next;
  if (roleBefore !== s.role) fx.push({ type: 'roleChanged', role: s.role, epoch: s.epoch });
  armHoleTimer(s, fx);
  if (s.role === 'primary') {
    // With the current in-sync set, everything this node has durably may now be committed
    // (a single-node cluster commits on its own log alone).
    advancePrimaryCommit(s, fx);
    pumpPeers(s, fx);
  }
  pumpApply(s, fx);
}

/** This node was primary and is no longer (another was chosen, or it was paused and the
 * cluster moved on). What it ordered and did not commit may never be committed by the new
 * primary: those submitters are told NOT_PRIMARY (their proxies try the same slot at the new
 * primary, and the request ID keeps a retry exactly-once), and ops still waiting for a
 * slot below them are dropped. */
function stepDown(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  for (const token of s.submitters.values()) fx.push({ type: 'refuse', token, code: 'NOT_PRIMARY', message: `${s.id} is no longer the primary (epoch ${s.epoch})` });
  s.submitters.clear();
  s.pending.clear();
  s.highestSeenSeq = s.orderedSeq;
}

function newPeer(id: string, url: string): PeerState {
  return { id, url, inSync: false, ackedSeq: -1, knownCommit: -1, batch: null, notice: null, noticeHeld: false, retry: null, strandedAt: null, answersFrom: 0, truncateAfter: null };
}

/** Forget where the peer's log ends, and ask it again with the next request. An answer to
 * a request sent before this (the other lane's, delayed) must not set it back: it may name
 * a log end below what the primary has since committed and applied, and the peer would be
 * fed from a sequence ID no longer in memory, stalling every commit. */
function resetPeer(s: ReplicaCoreState, peer: PeerState): void {
  peer.ackedSeq = -1;
  peer.truncateAfter = null;
  peer.answersFrom = s.nextRequestId;
}

/** The refusal for a request from another epoch, or null when the epoch is ours. */
function epochRefusal(s: ReplicaCoreState, epoch: number): string | null {
  if (epoch < s.epoch) return `epoch ${epoch} is older than ${s.epoch}`;
  if (epoch > s.epoch) return `epoch ${epoch} is newer than this node's ${s.epoch}; retry after it refreshes`;
  return null;
}

// ---- primary: ops from proxies ----

function onSubmit(s: ReplicaCoreState, fx: ReplicaEffect[], token: number, header: LogEntry['header'], data: Buffer, frame: Buffer | undefined): void {
  const refuse = (code: ErrorCode, message: string) => fx.push({ type: 'refuse', token, code, message });
  const stale = epochRefusal(s, header.epoch);
  if (stale) return void refuse('STALE_EPOCH', stale);
  if (s.role !== 'primary') return void refuse('NOT_PRIMARY', `${s.id} is not the primary of epoch ${s.epoch}`);
  if (s.syncing) return void refuse('UNAVAILABLE', `${s.id} is copying its brick from a peer`);
  const seq = header.seq;
  if (seq <= s.orderedSeq || s.pending.has(seq)) return void refuse('SLOT_TAKEN', `sequence ID ${seq} is taken`);
  const ahead = seqAheadRefusal(s, seq);
  if (ahead) return void refuse('BAD_REQUEST', ahead);
  if (s.pending.size + s.entries.size >= s.config.pendingOpsMax) {
    return void refuse('UNAVAILABLE', `more than ${s.config.pendingOpsMax} ops in flight`);
  }
  if (s.space !== 'ok' && !opAdmittedWhenLow(header.op)) {
    // Refused before it is ordered, so no node ever holds it. The slot is filled with a
    // no-op at once (as a hole would be later), so the ops after it do not wait.
    refuse('NO_SPACE', `${s.id} is ${s.space === 'full' ? 'out of space' : 'low on space'}: only ops that free space are admitted`);
    accept(s, fx, [{ header: { epoch: s.epoch, seq, reqId: '', timeMs: 0, op: { type: 'noop' } }, data: Buffer.alloc(0) }]);
    return;
  }
  s.submitters.set(seq, token);
  accept(s, fx, [{ header, data, frame }]);
}

/** A sequence ID exists (a read or hold named it): a slot below it that never arrives is
 * a hole the primary must fill. */
function noteSeqExists(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number): void {
  if (s.role !== 'primary' || seq <= s.highestSeenSeq) return;
  s.highestSeenSeq = seq;
  armHoleTimer(s, fx);
}

// ---- backup: batches from the primary ----

function onReplicate(
  s: ReplicaCoreState,
  fx: ReplicaEffect[],
  token: number,
  epoch: number,
  primaryCommit: number,
  prefixSeq: number,
  truncateAfter: number | null,
  batch: LogEntry[],
): void {
  const refuse = (code: ErrorCode, message: string) => fx.push({ type: 'refuse', token, code, message });
  const stale = epochRefusal(s, epoch);
  if (stale) return void refuse('STALE_EPOCH', stale);
  if (s.role !== 'backup' && s.role !== 'learner') return void refuse('NOT_PRIMARY', `${s.id} is not a backup in epoch ${s.epoch}`);
  if (s.syncing) return void refuse('UNAVAILABLE', `${s.id} is copying its brick from a peer`);
  for (let i = 1; i < batch.length; i++) {
    if (batch[i]!.header.seq !== batch[i - 1]!.header.seq + 1) {
      return void refuse('BAD_REQUEST', `batch is not a contiguous run: ${batch[i - 1]!.header.seq} then ${batch[i]!.header.seq}`);
    }
  }
  // Up to matchedSeq the log agrees with this epoch's primary (it vouched for it, and its
  // log only grows within an epoch), so a cut never reaches below it: a cut asked for again
  // because its answer was lost, or a delayed copy of one, cuts nothing taken since. That
  // also keeps every committed op (commitSeq <= matchedSeq).
  const cutAfter = truncateAfter === null ? null : Math.max(truncateAfter, s.matchedSeq);
  if (cutAfter !== null && cutAfter < s.orderedSeq) {
    if (s.appendingSeq !== null || s.truncatingSeq !== null) return void refuse('UNAVAILABLE', `${s.id} is writing its log; cut it later`);
    truncate(s, fx, cutAfter);
  }
  if (prefixSeq >= 0) s.matchedSeq = Math.max(s.matchedSeq, Math.min(prefixSeq, s.orderedSeq));
  const fresh: LogEntry[] = [];
  for (const e of batch) {
    const seq = e.header.seq;
    if (seq <= s.orderedSeq) {
      const mine = s.entries.get(seq);
      if (mine && (mine.header.reqId !== e.header.reqId || mine.header.epoch !== e.header.epoch)) {
        // Invariant: a sequence ID holds the same op on every node that has it, so where
        // this log agrees with the primary's it must hold the same op.
        assert.ok(seq > s.matchedSeq, `seq ${seq} differs from the primary's`);
        // An older primary's entry the primary does not know of yet: it asks afresh.
        return void refuse('GAP', `seq ${seq} holds another op here; the logs part before ${seq}`);
      }
      continue;
    }
    fresh.push(e);
  }
  if (fresh.length > 0 && fresh[0]!.header.seq !== s.orderedSeq + 1) {
    return void refuse('GAP', `batch starts at ${fresh[0]!.header.seq}, log ends at ${s.orderedSeq}`);
  }
  if (fresh.length > 0 && s.space === 'full') return void refuse('NO_SPACE', `${s.id} has no room to log more`);
  if (fresh.length > 0) accept(s, fx, fresh);
  const lastSeq = batch.length > 0 ? batch[batch.length - 1]!.header.seq : 0;
  // The primary sends a batch from where it knows the logs agree: now they agree to its end.
  if (batch.length > 0) s.matchedSeq = Math.max(s.matchedSeq, lastSeq);
  if (lastSeq > s.durableSeq) {
    s.replicateWaiters.set(token, { lastSeq, commitSeq: primaryCommit });
    return;
  }
  advanceBackupCommit(s, fx, primaryCommit);
  fx.push({ type: 'answer', token, value: ackOf(s) });
}

/** A backup's answer: its durable log's end, its commit point, and the epochs between. */
function ackOf(s: ReplicaCoreState): ReplicateAck {
  const from = s.commitSeq + 1;
  const tail: EpochRun[] = [];
  for (const [i, r] of s.epochRuns.entries()) {
    const end = i + 1 < s.epochRuns.length ? s.epochRuns[i + 1]!.from - 1 : s.orderedSeq;
    const start = Math.max(r.from, from);
    if (start <= Math.min(end, s.durableSeq)) tail.push({ from: start, epoch: r.epoch });
  }
  return { durableSeq: s.durableSeq, commitSeq: s.commitSeq, tail };
}

/** Cuts the log after `seq`: in memory now, on disk by the `truncate` effect (appends wait). */
function truncate(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number): void {
  for (const k of [...s.entries.keys()]) if (k > seq) s.entries.delete(k);
  s.pending.clear();
  s.orderedSeq = seq;
  s.durableSeq = Math.min(s.durableSeq, seq);
  s.highestSeenSeq = seq;
  s.matchedSeq = Math.min(s.matchedSeq, seq);
  s.epochRuns = s.epochRuns.filter((r) => r.from <= seq);
  for (const [t, w] of s.replicateWaiters) {
    if (w.lastSeq <= seq) continue;
    s.replicateWaiters.delete(t);
    fx.push({ type: 'refuse', token: t, code: 'GAP', message: `${s.id} cut its log after ${seq}` });
  }
  s.truncatingSeq = seq;
  fx.push({ type: 'truncate', afterSeq: seq });
}

function onTruncated(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number): void {
  assert.equal(seq, s.truncatingSeq, `truncated ${seq} is not the cut in flight (${s.truncatingSeq})`);
  s.truncatingSeq = null;
  pumpLog(s, fx);
}

function advanceBackupCommit(s: ReplicaCoreState, fx: ReplicaEffect[], primaryCommit: number): void {
  const commit = Math.min(primaryCommit, s.durableSeq, s.matchedSeq);
  if (commit > s.commitSeq) {
    s.commitSeq = commit;
    pumpApply(s, fx);
  }
}

// ---- the pipeline: order, log, replicate, commit, apply ----

function accept(s: ReplicaCoreState, fx: ReplicaEffect[], batch: LogEntry[]): void {
  for (const e of batch) {
    s.pending.set(e.header.seq, e);
    s.highestSeenSeq = Math.max(s.highestSeenSeq, e.header.seq);
  }
  while (s.pending.has(s.orderedSeq + 1)) {
    const seq = s.orderedSeq + 1;
    const e = s.pending.get(seq)!;
    s.entries.set(seq, e);
    s.pending.delete(seq);
    s.orderedSeq = seq;
    noteEpoch(s.epochRuns, seq, e.header.epoch);
  }
  armHoleTimer(s, fx);
  pumpLog(s, fx);
  pumpPeers(s, fx);
}

function armHoleTimer(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  const waiting = s.highestSeenSeq > s.orderedSeq;
  if (!waiting || s.role !== 'primary') {
    if (s.holeTimerSeq !== null) fx.push({ type: 'clearTimer', key: 'hole' });
    s.holeTimerSeq = null;
    return;
  }
  if (s.holeTimerSeq !== null) return;
  s.holeTimerSeq = s.orderedSeq + 1;
  s.holeTimerUpTo = s.highestSeenSeq;
  fx.push({ type: 'setTimer', key: 'hole', delayMs: s.config.holeTimeoutMs });
}

function onHoleTimer(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  if (s.holeTimerSeq === null) return; // cleared after it fired
  s.holeTimerSeq = null;
  // Every slot still missing that was known to exist when the timer was armed has waited
  // long enough (after a failover there may be one per op the old primary was sent).
  // At most holeClaimsPerRoundMax of them now: accept() arms the timer again for the rest.
  const claimed: LogEntry[] = [];
  for (let seq = s.orderedSeq + 1; s.role === 'primary' && seq <= s.holeTimerUpTo && claimed.length < s.config.holeClaimsPerRoundMax; seq++) {
    if (s.pending.has(seq)) continue;
    fx.push({ type: 'holeClaimed', seq, epoch: s.epoch });
    claimed.push({ header: { epoch: s.epoch, seq, reqId: '', timeMs: 0, op: { type: 'noop' } }, data: Buffer.alloc(0) });
  }
  // None (they arrived meanwhile): wait afresh for any seen since.
  if (claimed.length === 0) armHoleTimer(s, fx);
  else accept(s, fx, claimed);
}

function pumpLog(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  if (s.syncing || s.space === 'full' || s.appendingSeq !== null || s.truncatingSeq !== null || s.orderedSeq <= s.durableSeq) return;
  const batch: LogEntry[] = [];
  let bytes = 0;
  for (let seq = s.durableSeq + 1; seq <= s.orderedSeq && bytes < s.config.replicateBatchBytesMax; seq++) {
    const e = s.entries.get(seq)!;
    batch.push(e);
    bytes += e.data.length;
  }
  s.appendingSeq = batch[batch.length - 1]!.header.seq;
  fx.push({ type: 'append', entries: batch });
}

function onLogDurable(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number): void {
  assert.equal(seq, s.appendingSeq, `logDurable ${seq} does not end the append in flight (${s.appendingSeq})`);
  s.appendingSeq = null;
  s.durableSeq = seq;
  for (const [token, w] of s.replicateWaiters) {
    if (w.lastSeq > seq) continue;
    s.replicateWaiters.delete(token);
    advanceBackupCommit(s, fx, w.commitSeq);
    fx.push({ type: 'answer', token, value: ackOf(s) });
  }
  if (s.role === 'primary') advancePrimaryCommit(s, fx);
  pumpLog(s, fx);
}

/**
 * The append in flight found no room. The log on disk still ends at durableSeq (the
 * driver cut any part written), and the node is `full` until the driver says otherwise.
 * A primary keeps what it ordered (backups may hold it already, and a slot is written
 * once per epoch) and appends it again once there is room. A backup forgets what it had
 * not logged and refuses the batches that carried it with NO_SPACE: the primary sends
 * them again later, and meanwhile the leader takes the node out of the in-sync set.
 */
function onLogFailed(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number, code: ErrorCode): void {
  assert.equal(seq, s.appendingSeq, `logFailed ${seq} does not end the append in flight (${s.appendingSeq})`);
  s.appendingSeq = null;
  s.space = 'full';
  if (s.role === 'primary') return;
  const end = s.durableSeq;
  for (const k of [...s.entries.keys()]) if (k > end) s.entries.delete(k);
  s.pending.clear();
  s.orderedSeq = end;
  s.highestSeenSeq = end;
  s.matchedSeq = Math.min(s.matchedSeq, end);
  s.epochRuns = s.epochRuns.filter((r) => r.from <= end);
  for (const [t, w] of s.replicateWaiters) {
    if (w.lastSeq <= end) continue;
    s.replicateWaiters.delete(t);
    fx.push({ type: 'refuse', token: t, code, message: `${s.id} has no room to log up to ${w.lastSeq}` });
  }
}

function advancePrimaryCommit(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  // Fewer in-sync nodes than the floor: nothing more commits (ops wait, and their
  // proxies' deadlines pass) rather than be acknowledged on too few disks.
  if (floorState(s) !== null && !s.config.faultAckBeforeBackups) return;
  let commit = s.durableSeq;
  if (!s.config.faultAckBeforeBackups) for (const p of s.peers.values()) if (p.inSync) commit = Math.min(commit, p.ackedSeq);
  if (commit > s.commitSeq) {
    s.commitSeq = commit;
    pumpApply(s, fx);
    pumpPeers(s, fx); // tell the backups
  }
}

function pumpPeers(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  if (s.role !== 'primary') return;
  for (const peer of s.peers.values()) pumpPeer(s, fx, peer);
}

function pumpPeer(s: ReplicaCoreState, fx: ReplicaEffect[], peer: PeerState, noticeDue = false): void {
  if (peer.retry !== null || s.syncing) return;
  const known = peer.ackedSeq >= 0;
  const hasNew = known && peer.ackedSeq < s.orderedSeq;
  if (peer.batch === null && (!known || hasNew || peer.truncateAfter !== null)) {
    const batch: LogEntry[] = [];
    let bytes = 0;
    for (let seq = peer.ackedSeq + 1; known && seq <= s.orderedSeq && bytes < s.config.replicateBatchBytesMax; seq++) {
      const e = s.entries.get(seq);
      if (!e) {
        if (batch.length > 0) break; // send what memory has; the rest comes next
        // Applied and gone from memory: the driver reads it from the log (peerLogRead).
        if (peer.strandedAt !== seq) fx.push({ type: 'peerStranded', peerId: peer.id, seq });
        peer.strandedAt = seq;
        return;
      }
      batch.push(e);
      bytes += e.data.length;
    }
    peer.strandedAt = null;
    peer.batch = send(s, fx, peer, batch, peer.truncateAfter);
  } else if (known && peer.batch === null && peer.notice === null && peer.knownCommit < Math.min(s.commitSeq, peer.ackedSeq)) {
    // A peer commits no further than the log it holds (a learner may be behind the commit
    // point): a notice helps only once it holds more than it knows committed. While a
    // batch is in flight none is sent: its answer brings the peer the next batch, which
    // carries the commit point, or, with nothing new to send, a notice then (under load,
    // one request per batch instead of two). With commitNoticeDelayMs the notice waits
    // that long first, for a batch to carry the point instead; the timer sends it then
    // if it is still wanted (onTimer).
    const delayMs = s.config.commitNoticeDelayMs ?? 0;
    if (delayMs > 0 && !noticeDue) {
      if (!peer.noticeHeld) {
        peer.noticeHeld = true;
        fx.push({ type: 'setTimer', key: `notice:${peer.id}`, delayMs });
      }
      return;
    }
    peer.notice = send(s, fx, peer, [], null);
  }
}

function send(s: ReplicaCoreState, fx: ReplicaEffect[], peer: PeerState, entries: LogEntry[], truncateAfter: number | null): PeerRequest {
  const lastSeq = entries.length > 0 ? entries[entries.length - 1]!.header.seq : peer.ackedSeq;
  const req: PeerRequest = { requestId: s.nextRequestId++, epoch: s.epoch, commitSeq: s.commitSeq, lastSeq, truncateAfter };
  fx.push({ type: 'send', peerId: peer.id, url: peer.url, requestId: req.requestId, epoch: req.epoch, commitSeq: req.commitSeq, prefixSeq: peer.ackedSeq, truncateAfter, entries });
  return req;
}

function onPeerAnswer(s: ReplicaCoreState, fx: ReplicaEffect[], peerId: string, requestId: number, answer: ReplicateAck | { code: ErrorCode }): void {
  const peer = s.peers.get(peerId);
  // An answer to a request this membership no longer waits for (the peer left the in-sync
  // set, or this node stopped being primary) changes nothing.
  if (!peer) return;
  const lane = peer.batch?.requestId === requestId ? 'batch' : peer.notice?.requestId === requestId ? 'notice' : null;
  if (lane === null) return;
  const req = peer[lane]!;
  peer[lane] = null;
  if ('durableSeq' in answer) {
    if (requestId < peer.answersFrom) {
      // Sent before we asked the peer afresh: out of date; the probe's answer will tell.
    } else if (req.epoch !== s.epoch) {
      // Sent under an older membership: ask the peer where its log ends now, and go on
      // feeding it. Stopping here would strand ops accepted meanwhile.
      resetPeer(s, peer);
      peer.knownCommit = -1;
    } else if (peer.ackedSeq < 0) {
      // The first answer since we asked afresh: find where the two logs agree.
      const agreed = matchPoint(s, answer);
      if (agreed === null) {
        // It knows of committed ops this log lacks: feeding it would overwrite them. The
        // leader chose this primary on stale figures; leave the peer as it is.
        fx.push({ type: 'peerAhead', peerId, peerCommitSeq: answer.commitSeq, orderedSeq: s.orderedSeq });
        resetPeer(s, peer);
        peer.retry = 'timer';
        fx.push({ type: 'setTimer', key: `peer:${peerId}`, delayMs: s.config.syncRetryMs });
        return;
      }
      peer.ackedSeq = agreed;
      peer.truncateAfter = agreed < answer.durableSeq ? agreed : null;
      // A peer that knew the commit point already needs no notice; one that did not gets
      // it with the point the logs agree to (`prefixSeq`), so it can apply that far.
      if (answer.commitSeq >= req.commitSeq) peer.knownCommit = Math.max(peer.knownCommit, req.commitSeq);
      advancePrimaryCommit(s, fx);
    } else {
      // Never past what this request carried: the peer's log beyond it is not ours to count.
      peer.ackedSeq = Math.max(peer.ackedSeq, Math.min(answer.durableSeq, req.lastSeq));
      if (req.truncateAfter !== null && peer.truncateAfter === req.truncateAfter) peer.truncateAfter = null;
      // What it took of the commit point it was told, as it says: no further than its log
      // held, nor than it knew to agree with this one (a new epoch it took meanwhile
      // forgets what an old one vouched for). Below what we thought it knew, it forgot
      // (it restarted): believe it, so that a notice tells it again.
      const took = Math.min(req.commitSeq, answer.commitSeq);
      peer.knownCommit = answer.commitSeq < peer.knownCommit ? answer.commitSeq : Math.max(peer.knownCommit, took);
      advancePrimaryCommit(s, fx);
    }
    pumpPeer(s, fx, peer);
    return;
  }
  const code = answer.code;
  if (code === 'GAP') resetPeer(s, peer); // ask again where its log ends
  if (peer.retry !== null) return;
  if (code === 'STALE_EPOCH') {
    // The peer saw a newer membership first: catch up with it now, not at the next poll.
    resetPeer(s, peer);
    peer.retry = 'refresh';
    fx.push({ type: 'refreshMembership', peerId });
    return;
  }
  peer.retry = 'timer';
  const delayMs = code === 'GAP' ? 0 : code === 'NO_SPACE' ? s.config.peerRetryMs * NO_SPACE_RETRY_FACTOR : s.config.peerRetryMs;
  fx.push({ type: 'setTimer', key: `peer:${peerId}`, delayMs });
}

/**
 * Where a peer's log and this one agree, from its first answer: the highest sequence ID
 * at or below both ends whose entry was sequenced in the same epoch on both (one primary
 * per epoch writes each slot once, so the logs agree up to there, as in raft's log
 * matching), and at least what the peer knows committed (committed ops are the same
 * everywhere). Null when the peer knows of committed ops past this log's end.
 */
function matchPoint(s: ReplicaCoreState, ack: ReplicateAck): number | null {
  const committed = Math.min(ack.commitSeq, ack.durableSeq);
  if (committed > s.orderedSeq) return null;
  let seq = Math.min(ack.durableSeq, s.orderedSeq);
  while (seq > committed) {
    const mine = epochIn(s.epochRuns, seq, s.orderedSeq);
    const theirs = epochIn(ack.tail, seq, ack.durableSeq);
    if (mine === null || theirs === null) break; // below what either knows: only the committed part
    if (mine === theirs) return seq;
    seq = Math.max(runStart(s.epochRuns, seq), runStart(ack.tail, seq)) - 1;
  }
  return committed;
}

// ---- catch-up from the log, and full sync ----

function onPeerLogRead(s: ReplicaCoreState, fx: ReplicaEffect[], peerId: string, seq: number, entries: LogEntry[], missing: boolean): void {
  const peer = s.peers.get(peerId);
  if (s.role !== 'primary' || !peer || peer.strandedAt !== seq) return; // not the read it waits for
  // The read is over, used or not: unmarked, the peer gets a fresh read when pumpPeer next
  // finds it behind memory (marked, it would wait for this one forever).
  peer.strandedAt = null;
  // Stale (the peer was fed meanwhile, or is waiting out a failure): pumpPeer asks anew.
  if (peer.batch !== null || peer.retry !== null) return;
  if (missing) {
    fx.push({ type: 'requireSync', peerId, url: peer.url, epoch: s.epoch, seq });
    resetPeer(s, peer);
    peer.retry = 'timer';
    fx.push({ type: 'setTimer', key: `peer:${peerId}`, delayMs: s.config.syncRetryMs });
    return;
  }
  const run: LogEntry[] = [];
  let bytes = 0;
  for (const e of entries) {
    const next = seq + run.length;
    if (e.header.seq !== next || next > s.orderedSeq || bytes >= s.config.replicateBatchBytesMax) break;
    run.push(e);
    bytes += e.data.length;
  }
  if (run.length === 0) {
    // Nothing usable (the log does not hold it durably yet): ask the peer afresh, later.
    resetPeer(s, peer);
    peer.retry = 'timer';
    fx.push({ type: 'setTimer', key: `peer:${peerId}`, delayMs: s.config.peerRetryMs });
    return;
  }
  peer.batch = send(s, fx, peer, run, peer.truncateAfter);
}

function onSyncStarted(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  if (s.syncing) return;
  s.syncing = true;
  refuseWaiting(s, fx, `${s.id} is copying its brick from a peer`);
}

function onSyncFinished(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number, dedup: Array<[string, OpResult]>): void {
  assert.ok(s.syncing, 'syncFinished without syncStarted');
  assert.ok(s.appendingSeq === null && s.applyingSeq === null && s.truncatingSeq === null, 'syncFinished while the log or the brick is busy');
  s.syncing = false;
  s.durableSeq = s.orderedSeq = s.commitSeq = s.appliedSeq = s.highestSeenSeq = s.matchedSeq = seq;
  s.epochRuns = [];
  s.pending.clear();
  s.entries.clear();
  s.dedup = new Map(dedup.slice(-s.config.dedupEntriesMax));
  for (const p of s.peers.values()) resetPeer(s, p);
  armHoleTimer(s, fx);
  pumpPeers(s, fx);
}

function onTimer(s: ReplicaCoreState, fx: ReplicaEffect[], key: TimerKey): void {
  if (key === 'hole') return onHoleTimer(s, fx);
  if (key === 'hold') {
    const hold = s.hold;
    if (hold === null || hold.token === null) return;
    fx.push({ type: 'refuse', token: hold.token, code: 'BARRIER_TIMEOUT', message: `${s.id} applied ${s.appliedSeq}, hold needs ${hold.seq}` });
    s.hold = null;
    pumpApply(s, fx);
    return;
  }
  if (key.startsWith('peer:')) {
    const peer = s.peers.get(key.slice('peer:'.length));
    if (!peer || peer.retry !== 'timer') return;
    peer.retry = null;
    pumpPeer(s, fx, peer);
    return;
  }
  if (key.startsWith('notice:')) {
    const peer = s.peers.get(key.slice('notice:'.length));
    if (!peer || !peer.noticeHeld) return;
    peer.noticeHeld = false;
    // Not closed, and still primary: a notice is for a primary's backups alone.
    if (s.closed || s.role !== 'primary') return;
    pumpPeer(s, fx, peer, true);
    return;
  }
  if (key.startsWith('barrier:')) {
    const token = Number(key.slice('barrier:'.length));
    const seq = s.barrierWaiters.get(token);
    if (seq === undefined) return;
    s.barrierWaiters.delete(token);
    fx.push({ type: 'refuse', token, code: 'BARRIER_TIMEOUT', message: `${s.id} applied ${s.appliedSeq}, read needs ${seq}` });
    return;
  }
  throw new Error(`unknown timer ${key}`);
}

function applyLimit(s: ReplicaCoreState): number {
  if (s.syncing) return s.appliedSeq;
  return s.hold === null ? s.commitSeq : Math.min(s.commitSeq, s.hold.seq);
}

function pumpApply(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  while (s.applyingSeq === null && s.appliedSeq < applyLimit(s)) {
    const seq = s.appliedSeq + 1;
    const e = s.entries.get(seq);
    assert.ok(e, `committed op ${seq} is not in memory`);
    const reqId = e.header.reqId;
    const first = reqId === '' ? undefined : s.dedup.get(reqId);
    if (first) {
      // A retry of an op applied before: the first answer, and the brick stays as it is.
      finishApply(s, fx, seq, { ...first, seq });
      continue;
    }
    s.applyingSeq = seq;
    fx.push({ type: 'apply', entry: e });
  }
}

function onApplied(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number, r: ApplyResult): void {
  assert.equal(seq, s.applyingSeq, `applied ${seq} is not the apply in flight (${s.applyingSeq})`);
  s.applyingSeq = null;
  const e = s.entries.get(seq)!;
  const result: OpResult = { seq, ...r };
  const reqId = e.header.reqId;
  if (reqId !== '') {
    s.dedup.set(reqId, result);
    // Evict in apply order, which is the same on every node.
    if (s.dedup.size > s.config.dedupEntriesMax) s.dedup.delete(s.dedup.keys().next().value!);
  }
  finishApply(s, fx, seq, result);
  pumpApply(s, fx);
}

function finishApply(s: ReplicaCoreState, fx: ReplicaEffect[], seq: number, result: OpResult): void {
  s.entries.delete(seq);
  s.appliedSeq = seq;
  const token = s.submitters.get(seq);
  if (token !== undefined) {
    s.submitters.delete(seq);
    fx.push({ type: 'answer', token, value: result });
  }
  for (const [t, barrier] of s.barrierWaiters) {
    if (barrier > seq) continue;
    s.barrierWaiters.delete(t);
    fx.push({ type: 'clearTimer', key: `barrier:${t}` });
    fx.push({ type: 'answer', token: t, value: null });
  }
  if (s.hold !== null && s.hold.token !== null && s.hold.seq <= seq) {
    fx.push({ type: 'clearTimer', key: 'hold' });
    fx.push({ type: 'answer', token: s.hold.token, value: { heldSeq: s.hold.seq } });
    s.hold.token = null;
  }
}

// ---- holding the brick still (dfs verify) ----

function onHold(s: ReplicaCoreState, fx: ReplicaEffect[], token: number, seq: number, timeoutMs: number): void {
  if (s.syncing) return void fx.push({ type: 'refuse', token, code: 'UNAVAILABLE', message: `${s.id} is copying its brick from a peer` });
  if (s.hold !== null) return void fx.push({ type: 'refuse', token, code: 'UNAVAILABLE', message: `${s.id} is already held at ${s.hold.seq}` });
  // An apply in flight lands after this step: it counts as applied already.
  const reached = s.applyingSeq ?? s.appliedSeq;
  if (reached > seq) return void fx.push({ type: 'refuse', token, code: 'SLOT_TAKEN', message: `${s.id} applied ${reached}, past ${seq}` });
  const ahead = seqAheadRefusal(s, seq);
  if (ahead) return void fx.push({ type: 'refuse', token, code: 'BAD_REQUEST', message: ahead });
  if (s.appliedSeq === seq) {
    s.hold = { seq, token: null };
    fx.push({ type: 'answer', token, value: { heldSeq: seq } });
    return;
  }
  s.hold = { seq, token };
  noteSeqExists(s, fx, seq);
  fx.push({ type: 'setTimer', key: 'hold', delayMs: timeoutMs });
}

// ---- shutting down ----

function onClose(s: ReplicaCoreState, fx: ReplicaEffect[]): void {
  s.closed = true;
  for (const p of s.peers.values()) {
    if (p.retry === 'timer') fx.push({ type: 'clearTimer', key: `peer:${p.id}` });
    if (p.noticeHeld) fx.push({ type: 'clearTimer', key: `notice:${p.id}` });
    p.noticeHeld = false;
  }
  refuseWaiting(s, fx, 'node is shutting down');
}

/** Refuses every request still waiting (UNAVAILABLE) and drops the hold and the hole timer:
 * the node is closing, or its brick and log are about to be replaced. */
function refuseWaiting(s: ReplicaCoreState, fx: ReplicaEffect[], message: string): void {
  const down = (token: number) => fx.push({ type: 'refuse', token, code: 'UNAVAILABLE', message });
  if (s.holeTimerSeq !== null) fx.push({ type: 'clearTimer', key: 'hole' });
  s.holeTimerSeq = null;
  for (const token of s.submitters.values()) down(token);
  s.submitters.clear();
  for (const token of s.replicateWaiters.keys()) down(token);
  s.replicateWaiters.clear();
  for (const token of s.barrierWaiters.keys()) {
    fx.push({ type: 'clearTimer', key: `barrier:${token}` });
    down(token);
  }
  s.barrierWaiters.clear();
  if (s.hold?.token != null) {
    fx.push({ type: 'clearTimer', key: 'hold' });
    down(s.hold.token);
  }
  s.hold = null;
}

/** A summary for status endpoints and heartbeats. */
export type ReplicaState = Pick<ReplicaCoreState, 'id' | 'epoch' | 'role' | 'durableSeq' | 'orderedSeq' | 'commitSeq' | 'appliedSeq' | 'syncing' | 'primaryFenced' | 'space'> & {
  /** The epoch of the last durable entry (null when unknown): with durableSeq, how far this
   * log reaches, for the leader's choice of a new primary. */
  logEpoch: number | null;
  /** Primary: in-sync nodes (itself included) below the floor on copies, so nothing
   * commits; null when the floor is met or this node is not primary. */
  belowFloor: { copies: number; floor: number } | null;
};

/** The primary's in-sync copies and the floor they must reach (see `minInSync`). */
function floorState(s: ReplicaCoreState): { copies: number; floor: number } | null {
  if (s.role !== 'primary') return null;
  let copies = 1;
  for (const p of s.peers.values()) if (p.inSync) copies++;
  const floor = copiesFloor(s.config.minInSync, s.memberCount);
  return copies < floor ? { copies, floor } : null;
}

export function summarize(s: ReplicaCoreState): ReplicaState {
  return {
    id: s.id,
    epoch: s.epoch,
    role: s.role,
    durableSeq: s.durableSeq,
    orderedSeq: s.orderedSeq,
    commitSeq: s.commitSeq,
    appliedSeq: s.appliedSeq,
    syncing: s.syncing,
    primaryFenced: s.primaryFenced,
    space: s.space,
    logEpoch: epochIn(s.epochRuns, s.durableSeq, s.orderedSeq),
    belowFloor: floorState(s),
  };
}
