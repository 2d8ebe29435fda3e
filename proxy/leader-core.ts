/*
 * The leader's decisions as a pure step (STYLE.md: a pure core, I/O at the edges).
 *
 *   registry (Redis) ──read──> decide(input) ──> { next, restore, writes, notes, memory }
 *        ▲                                              │
 *        └──── proxy/leader.ts performs writes, then ───┘  (publish `next` under a new
 *              restore, then publish (fenced scripts)        epoch; log notes)
 *
 * `decide` sees what the driver read this round (the membership, each registered node and
 * its heartbeat, removals asked for, promotions not yet confirmed, `dfs:seq`), which
 * nodes' ports refused a connection (a probe the driver makes), the clock, and the
 * leader's own memory between rounds (`LeaderMemory`). It returns at most one membership
 * change (`next`, epoch left 0 for the publish script to fill), the registry writes that
 * go before it (in order), a restore of the counters after Redis lost its data, notes for
 * the log, and the memory for the next round. It never reads a clock, Redis or a socket,
 * so test/sim/sim-world.ts runs this very function on its virtual clock.
 *
 * The rules (docs/cluster.md, "Leader and membership"), in the order they are tried:
 * 1. no membership: the first is every live registered node (lowest ID primary); or, when
 *    the nodes have a history, Redis lost its data: wait RESTORE_GRACE_MS, then restore
 *    `dfs:seq` and `dfs:epoch` above every node's and publish the newest membership a node
 *    holds;
 * 2. failover: a primary whose heartbeat lapsed or whose port refuses connections goes to
 *    the best confirmed in-sync node whose log reaches every commit point seen; a primary
 *    that restarted in this epoch (`primaryFenced`) gets a new epoch; one that reports a
 *    peer ahead of it hands over to that peer; one short of space hands over to a node with
 *    room; one that cannot reach enough in-sync backups to meet the floor on copies
 *    (`minInSync`) while they still heartbeat (it is cut off from them, not they from
 *    everyone) hands over to the best of them;
 *    a primary that is stopping (SIGTERM; its heartbeat says so) hands its role to the best
 *    confirmed in-sync node while it still runs;
 * 3. removals an operator asked for (drain, then leave); a removed ID that started again
 *    (another `boot` than the process that left) has its request deleted, and rejoins;
 * 4. backups that lapsed, that the primary cannot reach (while the floor still holds
 *    without them), that copy a brick, are out of space or are stopping leave the in-sync set;
 * 5. new nodes join as learners (in-sync at once while nothing was ever sequenced), moved
 *    nodes get their new URL; a node whose incarnation changed (a new disk under an old ID)
 *    is taken out of the in-sync set and the primary role and rejoins as a learner;
 * 6. learners close to the primary are promoted, and stay unconfirmed (no failover
 *    candidate) until they hold everything committed without them (`dfs:joining`).
 */
import type { Membership, SyncProgress } from '../common/api';
import type { Heartbeat, Joining, Registration, Removal } from '../common/registry';

/** A learner is promoted once its durable log is this close to the primary's. */
export const JOIN_LAG_OPS = 256;
/** How long a node being removed is out of the in-sync set (no new reads) before it leaves. */
export const REMOVE_DRAIN_MS = 2000;
/** An in-sync backup the primary has not reached for this long leaves the in-sync set. */
export const PEER_UNREACHABLE_MS = 3000;
/** Restored after Redis lost its data, the epoch jumps this far past the highest any live
 * node reports: a node paused through the restore may hold a higher one, and an epoch must
 * never name two memberships. */
export const EPOCH_RESTORE_MARGIN = 1000;
/** How long the leader waits, after it finds Redis without its data, for every running
 * node to heartbeat again (storage nodes heartbeat every second). */
export const RESTORE_GRACE_MS = 2_500;
/** After a primary was replaced because it could not reach its backups, no second such
 * handover for this long: when every link between the nodes is cut, each new primary would
 * find the same, and the role would go round for nothing (the floor keeps writes from
 * being acknowledged meanwhile either way). */
export const REACH_HANDOVER_HOLDOFF_MS = 10_000;

/** A node as the leader sees it: its registration and what its heartbeat says. */
export interface NodeView {
  id: string;
  /** Where it is: its heartbeat's URL while it heartbeats, else its registration's. */
  url: string;
  /** In the node registry (`dfs:nodes`); a node only heartbeating is registered by the leader. */
  registered: boolean;
  alive: boolean;
  appliedSeq: number | null;
  durableSeq: number | null;
  epoch: number | null;
  /** The membership the node holds (null when it has none). */
  membership: Membership | null;
  role: string | null;
  /** The epoch of the last entry of its durable log (null: unknown). */
  logEpoch: number | null;
  commitSeq: number | null;
  /** Named primary in an epoch it restarted in: waits for a new one. */
  primaryFenced: boolean;
  /** Primary: peer -> how long (ms) every request to it has failed, for peers failing now. */
  failingPeers: Record<string, number>;
  /** Primary: peers that know of committed ops its log lacks. */
  peersAhead: string[];
  /** Copying a brick from a peer (storage/full-sync.ts). */
  syncing: boolean;
  /** Its disk's room (storage/disk-space.ts): `full` means its log cannot grow. */
  space: 'ok' | 'low' | 'full';
  sync: SyncProgress | null;
  /** The last full sync its process finished. */
  lastSync: SyncProgress | null;
  /** Which life of this node ID (a new disk is a new incarnation); null: not reported. */
  incarnation: string | null;
  /** The floor on copies it enforces as primary (0: a majority); null: not reported. */
  minInSync: number | null;
  /** Primary: in-sync copies below the floor (nothing commits); null: met, or not primary. */
  belowFloor: { copies: number; floor: number } | null;
  /** The process is stopping (SIGTERM): it gives up its role before it exits. */
  stopping: boolean;
  /** Which start of the process this is (random per start); null: not reported. */
  boot: string | null;
}

/** A heartbeat's sync progress with what an older node leaves out filled in. */
function syncProgressOf(raw: Heartbeat['sync'] | undefined): SyncProgress | null {
  if (!raw) return null;
  const { finishedAtMs, ...rest } = raw;
  return {
    ...rest,
    startedAtMs: raw.startedAtMs ?? 0,
    totalEntries: raw.totalEntries ?? null,
    totalBytes: raw.totalBytes ?? null,
    bytesPerSecond: raw.bytesPerSecond ?? 0,
    ...(finishedAtMs !== undefined ? { finishedAtMs } : {}),
  };
}

/** Joins a registration (null: none yet) and a heartbeat (null: lapsed) into the leader's view. */
export function nodeView(id: string, reg: Registration | null, hb: Heartbeat | null): NodeView {
  return {
    id,
    url: hb?.url ?? reg?.url ?? '',
    registered: reg !== null && (hb?.url === undefined || hb.url === reg.url),
    alive: hb !== null,
    appliedSeq: hb?.appliedSeq ?? null,
    durableSeq: hb?.durableSeq ?? null,
    epoch: hb?.epoch ?? null,
    membership: hb?.membership ?? null,
    role: hb?.role ?? null,
    logEpoch: hb?.logEpoch ?? null,
    commitSeq: hb?.commitSeq ?? null,
    primaryFenced: hb?.primaryFenced === true,
    failingPeers: hb?.failingPeers ?? {},
    peersAhead: hb?.peersAhead ?? [],
    syncing: hb?.syncing === true,
    space: hb?.space ?? 'ok',
    sync: syncProgressOf(hb?.sync),
    lastSync: syncProgressOf(hb?.lastSync),
    incarnation: hb?.incarnation ?? null,
    minInSync: hb?.minInSync ?? null,
    belowFloor: hb?.belowFloor ?? null,
    stopping: hb?.stopping === true,
    boot: hb?.boot ?? null,
  };
}

/** What the leader remembers between rounds (a new leader starts from `newLeaderMemory`). */
export interface LeaderMemory {
  /** Node -> the highest commit point its heartbeats reported while this leader led. */
  commitSeen: Record<string, number>;
  /** When this leader first saw nodes with a history and Redis without a membership. */
  lossSeenAtMs: number | null;
  /** The "no successor" warning was given for the current wait. */
  noSuccessorNoted: boolean;
  /** When a primary was last replaced because it could not reach its backups. */
  reachHandoverAtMs: number | null;
}

export const newLeaderMemory = (): LeaderMemory => ({ commitSeen: {}, lossSeenAtMs: null, noSuccessorNoted: false, reachHandoverAtMs: null });

export interface LeaderInput {
  membership: Membership | null;
  /** Every registered node with its heartbeat, sorted by ID. */
  nodes: NodeView[];
  removing: Record<string, Removal>;
  joining: Record<string, Joining>;
  /** `dfs:seq`: 0 means nothing was ever sequenced. */
  seq: number;
  /** Nodes whose port refused a connection this round (the process is gone). */
  refused: string[];
  /** The floor on copies when the primary does not report its own (storage --min-in-sync);
   * 0: a majority of the members. */
  minInSync: number;
  nowMs: number;
  memory: LeaderMemory;
}

/** A registry write the driver makes before it publishes. */
export type LeaderWrite =
  | { type: 'register'; value: Registration }
  | { type: 'setJoining'; id: string; value: Joining }
  | { type: 'deleteJoining'; id: string }
  | { type: 'setRemoving'; id: string; value: Removal }
  | { type: 'deleteRemoving'; id: string }
  | { type: 'deleteNode'; id: string };

export interface LeaderNote {
  level: 'info' | 'warn';
  msg: string;
  fields: Record<string, unknown>;
}

export interface LeaderDecision {
  /** The membership to publish (epoch 0: the publish script gives it the next one). */
  next: Membership | null;
  why: string | null;
  /** Redis lost its data: raise `dfs:seq` and `dfs:epoch` to these first. */
  restore: { seq: number; epoch: number } | null;
  writes: LeaderWrite[];
  notes: LeaderNote[];
  memory: LeaderMemory;
}

/** The floor on copies for a membership of `memberCount` nodes (Kafka's min.insync.replicas). */
export function floorOf(minInSync: number, memberCount: number): number {
  return minInSync > 0 ? minInSync : Math.floor(memberCount / 2) + 1;
}

type Change = { next: Membership; why: string; promoted?: string };

/** One round of the leader (see the header). */
export function decide(input: LeaderInput): LeaderDecision {
  const memory: LeaderMemory = {
    ...input.memory,
    commitSeen: { ...input.memory.commitSeen },
  };
  const out: LeaderDecision = { next: null, why: null, restore: null, writes: [], notes: [], memory };
  const m = input.membership;
  // The registry is the leader's: a node that heartbeats and is not registered (or moved)
  // is registered now; one being removed is not registered again.
  for (const n of input.nodes) {
    if (n.alive && !n.registered && n.url !== '' && input.removing[n.id] === undefined) out.writes.push({ type: 'register', value: { id: n.id, url: n.url } });
  }
  const live = input.nodes.filter((n) => n.alive && (n.registered || input.removing[n.id] === undefined));
  if (!m) {
    if (live.length === 0) return out;
    if (live.some((n) => (n.durableSeq ?? 0) > 0 || (n.epoch ?? 0) > 0)) {
      restoreAfterLoss(input, live, out);
      return out;
    }
    memory.lossSeenAtMs = null;
    out.next = { epoch: 0, primary: live[0]!.id, inSync: live.map((n) => n.id), nodes: Object.fromEntries(live.map((n) => [n.id, n.url])), ...incarnationsOf(live) };
    out.why = 'the first membership';
    return out;
  }
  memory.lossSeenAtMs = null;
  const change = nextChange(input, m, out);
  if (!change) return out;
  out.next = { ...change.next, epoch: 0 };
  out.why = change.why;
  // Before the membership that promotes it exists: never a moment it counts unconfirmed.
  if (change.promoted) out.writes.push({ type: 'setJoining', id: change.promoted, value: { afterEpoch: m.epoch, needs: null } });
  return out;
}

function nextChange(input: LeaderInput, m: Membership, out: LeaderDecision): Change | null {
  const memory = out.memory;
  const byId = new Map(input.nodes.map((n) => [n.id, n]));
  // What any node was last heard to know committed (the primary's own figure included,
  // from its last heartbeat while it lived): a new primary's log must reach that far.
  for (const n of input.nodes) {
    if (n.alive && n.commitSeq !== null) memory.commitSeen[n.id] = Math.max(memory.commitSeen[n.id] ?? 0, n.commitSeq);
  }
  // A primary whose port refuses connections is gone, whatever its last heartbeat says.
  const primaryView = byId.get(m.primary);
  if (primaryView?.alive && input.refused.includes(m.primary)) {
    out.notes.push({ level: 'warn', msg: 'the primary refuses connections: treating it as down', fields: { primary: m.primary } });
    byId.set(m.primary, { ...primaryView, alive: false });
  }
  const joining = confirmJoining(input, m, byId, out);
  const without = (list: string[], id: string) => list.filter((x) => x !== id);
  // A node whose incarnation changed lost its disk (or is another machine under its ID):
  // whatever the membership says it held, it holds nothing now. Its own core already
  // refuses to act as primary or backup under the old incarnation (storage/replica-core.ts);
  // here it leaves the in-sync set (and the primary role, as a dead primary would) and the
  // membership records the new incarnation, under which it rejoins as a learner.
  const recorded = m.incarnations ?? {};
  for (const n of input.nodes) {
    if (!n.alive || n.incarnation === null || m.nodes[n.id] === undefined || recorded[n.id] === n.incarnation) continue;
    const incarnations = { ...recorded, [n.id]: n.incarnation };
    if (recorded[n.id] === undefined) return { next: { ...m, incarnations }, why: `recording ${n.id}'s incarnation` };
    out.notes.push({ level: 'warn', msg: 'a member came back with another incarnation (a new disk): it rejoins as a learner', fields: { nodeId: n.id, was: recorded[n.id], now: n.incarnation } });
    if (n.id === m.primary) {
      byId.set(n.id, { ...n, alive: false });
      const f = failover(input, m, byId, joining, out);
      if (f) return { ...f, next: { ...f.next, incarnations } };
      continue; // nobody to take over: wait, as for a dead primary (its core refuses the role)
    }
    return { next: { ...m, inSync: without(m.inSync, n.id), incarnations }, why: `${n.id} came back with another incarnation (a new disk)` };
  }
  const f = failover(input, m, byId, joining, out);
  if (f) return f;
  // Removals asked for by an operator: drain (out of in-sync), then leave.
  for (const [id, req] of Object.entries(input.removing)) {
    if (m.nodes[id] === undefined) {
      // Done, and the ID started again since (a StatefulSet scaled back up, `dfs node
      // start`): the request is spent, and without it the node joins as a learner below,
      // next round. The process that was running when it left (same boot) stays out.
      const n = byId.get(id);
      if (req.removedBoot !== undefined && n?.alive && n.boot !== null && n.boot !== req.removedBoot && !n.stopping) {
        out.writes.push({ type: 'deleteRemoving', id });
        out.notes.push({ level: 'info', msg: 'a removed node started again: it rejoins as a learner', fields: { nodeId: id } });
      }
      continue;
    }
    if (id === m.primary) {
      // Hand the role over first. The primary still runs, so every op it commits is on
      // each in-sync node until they hold the new epoch and refuse its batches: any
      // confirmed in-sync node holds all of them, whatever its last heartbeat says.
      const next = rankSuccessors(m, byId, joining, 0)[0];
      if (!next) {
        out.notes.push({ level: 'warn', msg: 'the primary is being removed but no other confirmed in-sync node is alive to take its role; waiting', fields: { nodeId: id, inSync: m.inSync } });
        continue;
      }
      out.writes.push({ type: 'setRemoving', id, value: { ...req, drainedAtMs: input.nowMs } });
      return { next: { ...m, primary: next.id, inSync: without(m.inSync, id) }, why: `handing the primary role from ${id}, which is being removed, to ${next.id}` };
    }
    if (m.inSync.includes(id)) {
      out.writes.push({ type: 'setRemoving', id, value: { ...req, drainedAtMs: input.nowMs } });
      return { next: { ...m, inSync: without(m.inSync, id) }, why: `draining ${id}, which is being removed` };
    }
    if (input.nowMs - (req.drainedAtMs ?? 0) < REMOVE_DRAIN_MS) continue;
    const rest = { ...m.nodes };
    delete rest[id];
    const leaving = byId.get(id);
    out.writes.push({ type: 'setRemoving', id, value: { ...req, removedBoot: leaving?.alive ? (leaving.boot ?? '') : '' } });
    out.writes.push({ type: 'deleteNode', id });
    return { next: { ...m, nodes: rest }, why: `removing ${id}` };
  }
  // Backups that stopped heartbeating, that the primary cannot reach, or that are copying a brick.
  const primaryNow = byId.get(m.primary);
  const failing = primaryNow?.alive && primaryNow.epoch === m.epoch ? primaryNow.failingPeers : {};
  const unreachable = Object.keys(failing).filter((id) => failing[id]! >= PEER_UNREACHABLE_MS);
  for (const id of m.inSync) {
    if (id === m.primary) continue;
    const n = byId.get(id);
    if (!n || !n.alive) return { next: { ...m, inSync: without(m.inSync, id) }, why: `${id} stopped heartbeating` };
    if (unreachable.includes(id)) return { next: { ...m, inSync: without(m.inSync, id) }, why: `${id} stopped answering the primary` };
    if (n.syncing) return { next: { ...m, inSync: without(m.inSync, id) }, why: `${id} is copying its brick from a peer` };
    if (n.space === 'full') return { next: { ...m, inSync: without(m.inSync, id) }, why: `${id} is out of space` };
    // It asked to leave before it exits (SIGTERM): commits stop waiting for it now, not
    // after its heartbeat lapses.
    if (n.stopping) return { next: { ...m, inSync: without(m.inSync, id) }, why: `${id} is stopping` };
  }
  // New nodes and moved ones.
  const fresh = input.seq === 0;
  for (const n of input.nodes) {
    if (!n.alive || input.removing[n.id] !== undefined) continue;
    if (m.nodes[n.id] === undefined) {
      if (n.stopping) continue;
      const joinNow = fresh && n.durableSeq === 0 && !n.syncing;
      const incarnations = n.incarnation !== null ? { ...(m.incarnations ?? {}), [n.id]: n.incarnation } : m.incarnations;
      return {
        next: { ...m, inSync: joinNow ? [...m.inSync, n.id].sort() : m.inSync, nodes: { ...m.nodes, [n.id]: n.url }, ...(incarnations ? { incarnations } : {}) },
        why: joinNow ? `${n.id} joins an empty cluster` : `${n.id} joins as a learner`,
        // An op may commit before the primary takes this in: confirm it like a promotion.
        promoted: joinNow ? n.id : undefined,
      };
    }
    if (m.nodes[n.id] !== n.url) return { next: { ...m, nodes: { ...m.nodes, [n.id]: n.url } }, why: `${n.id} moved to ${n.url}` };
  }
  // Learners close enough to the primary.
  const primary = byId.get(m.primary);
  if (primary?.alive && primary.durableSeq !== null) {
    for (const id of Object.keys(m.nodes).sort()) {
      if (m.inSync.includes(id) || input.removing[id] !== undefined) continue;
      const n = byId.get(id);
      if (!n || !n.alive || n.stopping || n.syncing || n.space === 'full' || n.epoch !== m.epoch || n.role !== 'learner' || n.durableSeq === null) continue;
      // One the primary cannot reach now would only be dropped again.
      if (failing[id] !== undefined) continue;
      if (n.durableSeq >= primary.durableSeq - JOIN_LAG_OPS) {
        return { next: { ...m, inSync: [...m.inSync, id].sort() }, why: `${id} caught up (durable ${n.durableSeq}, primary ${primary.durableSeq})`, promoted: id };
      }
    }
  }
  return null;
}

/** Promoted backups not yet confirmed: moves each along (registry writes), and returns
 * the IDs still unconfirmed. */
function confirmJoining(input: LeaderInput, m: Membership, byId: Map<string, NodeView>, out: LeaderDecision): Set<string> {
  const unconfirmed = new Set<string>();
  const primary = byId.get(m.primary);
  for (const [id, entry] of Object.entries(input.joining)) {
    const j = { ...entry };
    const n = byId.get(id);
    if (!m.inSync.includes(id) || id === m.primary) {
      // Left the in-sync set (or is the primary now, chosen while confirmed): nothing to track.
      if (m.epoch > j.afterEpoch) out.writes.push({ type: 'deleteJoining', id });
      continue;
    }
    if (j.needs === null && primary?.alive && primary.epoch !== null && primary.epoch > j.afterEpoch && primary.durableSeq !== null) {
      j.needs = primary.durableSeq;
      out.writes.push({ type: 'setJoining', id, value: j });
    }
    if (j.needs !== null && n?.alive && n.epoch !== null && n.epoch > j.afterEpoch && (n.commitSeq ?? -1) >= j.needs) {
      out.writes.push({ type: 'deleteJoining', id });
      out.notes.push({ level: 'info', msg: 'promoted backup holds everything committed before it counted: a failover candidate now', fields: { nodeId: id, commitSeq: n.commitSeq, needs: j.needs } });
      continue;
    }
    unconfirmed.add(id);
  }
  return unconfirmed;
}

/** A dead primary replaced, a restarted one given a new epoch, and the handovers (see the
 * header). */
function failover(input: LeaderInput, m: Membership, byId: Map<string, NodeView>, unconfirmed: Set<string>, out: LeaderDecision): Change | null {
  const memory = out.memory;
  const primary = byId.get(m.primary);
  const committed = Math.max(0, ...Object.values(memory.commitSeen));
  if (primary?.alive) {
    if (!primary.stopping) memory.noSuccessorNoted = false;
    if (primary.epoch !== m.epoch) return null;
    if (primary.primaryFenced) return { next: { ...m }, why: `primary ${m.primary} restarted and needs a new epoch` };
    // A primary that is stopping (SIGTERM) hands its role over while it still runs, as for
    // a removal: every op it committed is on each in-sync node, so any confirmed one will do.
    if (primary.stopping) {
      const next = rankSuccessors(m, byId, unconfirmed, 0)[0];
      if (next) return { next: { ...m, primary: next.id, inSync: m.inSync.filter((id) => id !== m.primary) }, why: `primary ${m.primary} is stopping: ${next.id} takes over` };
      if (!memory.noSuccessorNoted) out.notes.push({ level: 'warn', msg: 'the primary is stopping but no other confirmed in-sync node is alive to take its role', fields: { primary: m.primary, inSync: m.inSync } });
      memory.noSuccessorNoted = true;
      return null;
    }
    // A peer holds ops committed that the primary lacks (it was chosen on stale figures):
    // the primary cannot commit past it, so the role goes to that peer.
    const ahead = primary.peersAhead.map((id) => byId.get(id)).find((n) => n?.alive && !n.syncing && m.nodes[n.id] !== undefined);
    if (ahead) {
      return {
        next: { ...m, primary: ahead.id, inSync: [...new Set([...m.inSync.filter((id) => id !== m.primary), ahead.id])].sort() },
        why: `${ahead.id} holds committed ops primary ${m.primary} lacks: it takes over`,
      };
    }
    // A primary short of space hands over to a confirmed in-sync node with room (docs/space.md).
    if (primary.space !== 'ok') {
      const roomy = rankSuccessors(m, byId, unconfirmed, 0).find((n) => n.space === 'ok');
      if (roomy) {
        return {
          next: { ...m, primary: roomy.id, inSync: m.inSync.filter((id) => id !== m.primary) },
          why: `primary ${m.primary} is ${primary.space === 'full' ? 'out of' : 'low on'} space: ${roomy.id}, which has room, takes over`,
        };
      }
    }
    // A primary cut off from its backups (they still heartbeat, so they reach Redis and
    // perhaps each other) cannot keep the floor on copies: with them dropped it would be
    // alone and acknowledge nothing. The best of them takes over instead; the old primary
    // stays a learner. Every op the old primary committed is on each in-sync node (commit
    // waits for all of them), so the commit-point floor is not needed, as for a removal.
    const floor = floorOf(primary.minInSync ?? input.minInSync, Object.keys(m.nodes).length);
    const cut = m.inSync.filter((id) => id !== m.primary && (primary.failingPeers[id] ?? 0) >= PEER_UNREACHABLE_MS && byId.get(id)?.alive);
    const reached = m.inSync.filter((id) => id !== m.primary && !cut.includes(id) && byId.get(id)?.alive).length + 1;
    const heldOff = memory.reachHandoverAtMs !== null && input.nowMs - memory.reachHandoverAtMs < REACH_HANDOVER_HOLDOFF_MS;
    if (cut.length > 0 && reached < floor && !heldOff) {
      const best = rankSuccessors(m, byId, unconfirmed, 0).find((n) => cut.includes(n.id));
      if (best) {
        memory.reachHandoverAtMs = input.nowMs;
        return {
          next: { ...m, primary: best.id, inSync: m.inSync.filter((id) => id !== m.primary) },
          why: `primary ${m.primary} cannot reach ${cut.join(', ')} and so cannot keep ${floor} copies: ${best.id} takes over`,
        };
      }
    }
    return null;
  }
  const chosen = rankSuccessors(m, byId, unconfirmed, committed)[0];
  // No live, confirmed in-sync node reaches what is known committed: only the dead may
  // hold it, so wait for them rather than lose acknowledged writes.
  if (!chosen) {
    if (!memory.noSuccessorNoted) {
      out.notes.push({
        level: 'warn',
        msg: 'the primary stopped heartbeating and no live, confirmed in-sync node holds every committed op: waiting for it',
        fields: { primary: m.primary, inSync: m.inSync, unconfirmed: [...unconfirmed], committed },
      });
    }
    memory.noSuccessorNoted = true;
    return null;
  }
  return {
    next: { ...m, primary: chosen.id, inSync: m.inSync.filter((id) => id !== m.primary) },
    why: `primary ${m.primary} stopped heartbeating; ${chosen.id} has the furthest log (durable ${chosen.durableSeq}, last epoch ${chosen.logEpoch})`,
  };
}

/** The live, confirmed, in-sync nodes but the primary that could take its role, best first:
 * the log that reaches furthest (the epoch of its last entry, then its length). A log short
 * of `committed` (a commit point some heartbeat reported) would lose acknowledged ops. */
export function rankSuccessors(m: Membership, byId: Map<string, NodeView>, unconfirmed: Set<string>, committed: number): NodeView[] {
  return m.inSync
    .filter((id) => id !== m.primary && !unconfirmed.has(id))
    .flatMap((id) => {
      const n = byId.get(id);
      return n && n.alive && !n.stopping && !n.syncing && n.durableSeq !== null && n.durableSeq >= committed ? [n] : [];
    })
    .sort((a, b) => (b.logEpoch ?? -1) - (a.logEpoch ?? -1) || b.durableSeq! - a.durableSeq! || a.id.localeCompare(b.id));
}

/** The incarnations the nodes report, as a membership records them (none reported: no field). */
function incarnationsOf(nodes: NodeView[]): { incarnations?: Record<string, string> } {
  const known = nodes.filter((n) => n.incarnation !== null);
  return known.length === 0 ? {} : { incarnations: Object.fromEntries(known.map((n) => [n.id, n.incarnation!])) };
}

/** Redis lost its data: restore the counter, the epoch and the membership from the nodes. */
function restoreAfterLoss(input: LeaderInput, live: NodeView[], out: LeaderDecision): void {
  const memory = out.memory;
  if (memory.lossSeenAtMs === null) {
    memory.lossSeenAtMs = input.nowMs;
    out.notes.push({ level: 'warn', msg: 'Redis has no membership but the nodes have a history: it lost its data; restoring', fields: { nodes: live.map((n) => n.id) } });
  }
  // Nodes that have not heartbeated again yet are not live; the grace covers them.
  if (input.nowMs - memory.lossSeenAtMs < RESTORE_GRACE_MS) return;
  const highestSeq = Math.max(0, ...live.map((n) => n.durableSeq ?? 0));
  const memberships = live.flatMap((n) => (n.membership ? [n.membership] : []));
  const highestEpoch = Math.max(0, ...live.map((n) => n.epoch ?? 0), ...memberships.map((x) => x.epoch));
  const newest = [...memberships].sort((a, b) => b.epoch - a.epoch)[0];
  let next: Membership;
  if (newest) next = { ...newest, epoch: 0 };
  else {
    // No node holds one (all restarted meanwhile): the nodes at the highest sequence ID.
    const top = live.filter((n) => (n.durableSeq ?? 0) === highestSeq);
    next = { epoch: 0, primary: top[0]!.id, inSync: top.map((n) => n.id), nodes: Object.fromEntries(live.map((n) => [n.id, n.url])) };
  }
  out.restore = { seq: highestSeq, epoch: highestEpoch + EPOCH_RESTORE_MARGIN };
  out.next = next;
  out.why = 'restoring after Redis lost its data';
}
