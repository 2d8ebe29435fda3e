/*
 * Leader duties (docs/cluster.md): one proxy at a time holds a Redis lease
 * (`SET dfs:leader <proxyId> NX PX leaseMs`, renewed while held) and owns membership: which
 * storage nodes exist, which are in sync, which one is primary. Every membership change
 * bumps `dfs:epoch` and is written only while the writer still holds the lease (one Lua
 * script checks and writes), so a leader that lost its lease cannot publish.
 *
 * What it decides: the first membership is every live registered node, with the lowest
 * node ID as primary. Then, each round (every quarter lease), at most one change:
 * - failover: a primary whose heartbeat lapsed, or whose port refuses connections (the
 *   process is gone: no need to wait for the lapse), is replaced by the in-sync node whose log
 *   reaches furthest (the epoch of its last entry, then its length: docs/cluster.md,
 *   Failover); the old primary stays a member, as a learner. The new epoch fences the old
 *   primary out: every node refuses its requests once it holds the new membership. With no
 *   live in-sync node, or none whose log reaches the highest commit point any node's
 *   heartbeat reported (it would lose acknowledged writes), the cluster waits for the
 *   primary to come back;
 * - a primary that restarted asks for a new epoch (its heartbeat says `primaryFenced`): the
 *   same membership is published again, so its new entries never share an epoch with
 *   entries it may have lost in the crash;
 * - a primary that reports a peer holding committed ops its log lacks (`peersAhead`: it
 *   was chosen on stale figures and can commit nothing past that peer) hands the role to
 *   that peer;
 * - a primary short of space (its heartbeat says `low`: it refuses ops that need room, or
 *   `full`: it can log nothing; docs/space.md) hands the role to the best confirmed
 *   in-sync node whose space is `ok`, if there is one, and leaves the in-sync set;
 * - a node that registers later becomes a member, first as a learner (in `nodes`, not in
 *   `inSync`): the primary feeds it from memory, its log or, when the log no longer
 *   reaches back, by telling it to full-sync; while the cluster never sequenced an op it
 *   joins the in-sync set at once (it has nothing to catch up);
 * - a learner that is alive, not syncing, holds this epoch and whose durable log is within
 *   JOIN_LAG_OPS of the primary's is promoted to the in-sync set (from then on commits
 *   wait for it, so it must be close). Until the primary takes the promotion in, it
 *   commits without it, so the node may lack ops committed meanwhile: it is no failover
 *   candidate until it knows committed everything the primary held durably when it was
 *   first seen holding the new membership (KEY_JOINING, kept in Redis so the next leader
 *   knows too);
 * - a backup whose heartbeat lapsed, that the primary reports it has not reached for 3 s
 *   (`failingPeers`: a partition between the two; a learner the primary cannot reach is
 *   not promoted meanwhile), or that says it is copying a
 *   brick, or that is out of space (its heartbeat says `full`: its log cannot grow, and it
 *   refuses batches with NO_SPACE; docs/space.md), leaves the in-sync set, so the primary commits without it once it holds the new membership
 *   (fenced by the epoch: it never commits without it before); it stays a learner and
 *   rejoins by catching up;
 * - a node an operator asked to remove (`dfs node remove`, KEY_REMOVING) leaves the
 *   in-sync set first, so reads stop going to it, and after REMOVE_DRAIN_MS the
 *   membership; the primary first hands its role to the best confirmed in-sync node (as
 *   failover would choose, but while it still runs: see nextChange).
 *
 * Redis that lost its data (restarted empty, DESIGN.md): the membership is gone and
 * `dfs:seq` starts again at 0, so the IDs it would hand out are ones the nodes already
 * hold. Proxies take no ID while no membership exists (proxy/sequencer.ts). The leader sees
 * nodes with a history and no membership, waits RESTORE_GRACE_MS for every running node to
 * heartbeat again, then in one fenced script puts `dfs:seq` at the highest sequence ID any
 * node has durably and `dfs:epoch` past the highest epoch any node has seen (by
 * EPOCH_RESTORE_MARGIN), and publishes
 * the newest membership a node holds, under the next epoch. Only then does anyone
 * sequence again.
 */
import net from 'node:net';
import type { Redis } from 'ioredis';
import type { Membership } from '../common/api';
import type { Logger } from '../common/log';
import { KEY_EPOCH, KEY_JOINING, KEY_LEADER, KEY_MEMBERSHIP, KEY_NODES, KEY_REMOVING, KEY_SEQ, nodeAliveKey } from '../common/redis-keys';

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

const RENEW_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
// KEYS: leader, epoch, membership; ARGV: proxyId, membership JSON with epoch placeholder
const PUBLISH_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local epoch = redis.call('INCR', KEYS[2])
local m = string.gsub(ARGV[2], '"epoch":0', '"epoch":' .. epoch, 1)
redis.call('SET', KEYS[3], m)
return epoch`;

export interface NodeView {
  id: string;
  url: string;
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
  sync: { source: string; seq: number | null; entries: number; bytes: number } | null;
}

/** How long the leader waits, after it finds Redis without its data, for every running
 * node to heartbeat again (storage nodes heartbeat every second). */
export const RESTORE_GRACE_MS = 2_500;

// KEYS: leader, seq, epoch; ARGV: proxyId, highest seq, highest epoch. Raises, never lowers.
const RESTORE_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[2]) then redis.call('SET', KEYS[2], ARGV[2]) end
if tonumber(redis.call('GET', KEYS[3]) or '0') < tonumber(ARGV[3]) then redis.call('SET', KEYS[3], ARGV[3]) end
return 1`;

export async function readNodes(redis: Redis): Promise<NodeView[]> {
  const registered = await redis.hgetall(KEY_NODES);
  const ids = Object.keys(registered).sort();
  if (ids.length === 0) return [];
  const alive = await redis.mget(ids.map(nodeAliveKey));
  return ids.map((id, i) => {
    const reg = JSON.parse(registered[id]!) as { url: string };
    const a = alive[i]
      ? (JSON.parse(alive[i]!) as {
          appliedSeq: number;
          durableSeq: number;
          commitSeq?: number;
          epoch?: number;
          logEpoch?: number | null;
          role?: string;
          primaryFenced?: boolean;
          failingPeers?: Record<string, number>;
          peersAhead?: string[];
          syncing?: boolean;
          space?: string;
          sync?: NodeView['sync'];
          membership?: Membership | null;
        })
      : null;
    return {
      id,
      url: reg.url,
      alive: a !== null,
      appliedSeq: a?.appliedSeq ?? null,
      durableSeq: a?.durableSeq ?? null,
      epoch: a?.epoch ?? null,
      membership: a?.membership ?? null,
      role: a?.role ?? null,
      logEpoch: a?.logEpoch ?? null,
      commitSeq: a?.commitSeq ?? null,
      primaryFenced: a?.primaryFenced === true,
      failingPeers: a?.failingPeers ?? {},
      peersAhead: a?.peersAhead ?? [],
      syncing: a?.syncing === true,
      space: a?.space === 'full' || a?.space === 'low' ? a.space : 'ok',
      sync: a?.sync ?? null,
    };
  });
}

/** How long the leader's probe of the primary's port may take. */
const PROBE_CONNECT_MS = 300;

/** Whether nothing listens at the URL's port (ECONNREFUSED): the process is gone. A slow or
 * paused process still accepts the connection (the kernel does), and any other failure
 * says nothing; both answer false. */
export function connectionRefused(url: string): Promise<boolean> {
  let host: string;
  let port: number;
  try {
    const u = new URL(url);
    host = u.hostname;
    port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  } catch {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (refused: boolean) => {
      socket.destroy();
      resolve(refused);
    };
    socket.setTimeout(PROBE_CONNECT_MS, () => done(false));
    socket.once('connect', () => done(false));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code === 'ECONNREFUSED'));
  });
}

export async function readMembership(redis: Redis): Promise<Membership | null> {
  const text = await redis.get(KEY_MEMBERSHIP);
  return text ? (JSON.parse(text) as Membership) : null;
}

export class LeaderDuty {
  isLeader = false;
  private timer: NodeJS.Timeout | null = null;
  /** When this leader first saw nodes with a history and Redis without a membership. */
  private lossSeenAtMs: number | null = null;
  private running = false;
  private noSuccessorLogged = false;
  /** Node -> the highest commit point its heartbeats reported (failover checks a new
   * primary's log against it). */
  private readonly commitSeen = new Map<string, number>();

  constructor(
    private readonly redis: Redis,
    private readonly proxyId: string,
    private readonly leaseMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    const tickMs = Math.max(50, Math.floor(this.leaseMs / 4));
    this.timer = setInterval(() => void this.tick(), tickMs);
    void this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** One round: hold or take the lease, then reconcile membership if leader. */
  async tick(): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const held = this.isLeader
        ? (await this.redis.eval(RENEW_SCRIPT, 1, KEY_LEADER, this.proxyId, String(this.leaseMs))) === 1
        : (await this.redis.set(KEY_LEADER, this.proxyId, 'PX', this.leaseMs, 'NX')) === 'OK';
      if (held !== this.isLeader) this.logger.info({ proxyId: this.proxyId, leader: held }, held ? 'became leader' : 'lost leadership');
      this.isLeader = held;
      if (held) await this.reconcile();
    } catch (err) {
      if (this.isLeader) this.logger.warn({ err: (err as Error).message }, 'leader round failed');
    } finally {
      this.running = false;
    }
  }

  private async reconcile(): Promise<void> {
    const nodes = await readNodes(this.redis);
    const live = nodes.filter((n) => n.alive);
    const current = await readMembership(this.redis);
    let next: Membership | null = null;
    if (!current) {
      if (live.length === 0) return;
      if (live.some((n) => (n.durableSeq ?? 0) > 0 || (n.epoch ?? 0) > 0)) {
        await this.restoreAfterLoss(live);
        return;
      }
      next = { epoch: 0, primary: live[0]!.id, inSync: live.map((n) => n.id), nodes: Object.fromEntries(live.map((n) => [n.id, n.url])) };
    } else {
      const change = await this.nextChange(current, nodes);
      if (!change) return;
      next = { ...change.next, epoch: 0 };
      this.logger.info({ why: change.why }, 'changing membership');
      // Before the membership that promotes it exists: never a moment it counts unconfirmed.
      if (change.promoted) await this.redis.hset(KEY_JOINING, change.promoted, JSON.stringify({ afterEpoch: current.epoch, needs: null }));
    }
    const epoch = await this.redis.eval(PUBLISH_SCRIPT, 3, KEY_LEADER, KEY_EPOCH, KEY_MEMBERSHIP, this.proxyId, JSON.stringify(next));
    if (epoch) this.logger.info({ epoch, primary: next.primary, inSync: next.inSync, nodes: Object.keys(next.nodes) }, 'published membership');
  }

  /** The one membership change this round makes, if any (see the header). */
  private async nextChange(m: Membership, nodes: NodeView[]): Promise<{ next: Membership; why: string; promoted?: string } | null> {
    const byId = new Map(nodes.map((n) => [n.id, n]));
    // What any node was last heard to know committed (the primary's own figure included,
    // from its last heartbeat while it lived): a new primary's log must reach that far.
    for (const n of nodes) {
      if (n.alive && n.commitSeq !== null) this.commitSeen.set(n.id, Math.max(this.commitSeen.get(n.id) ?? 0, n.commitSeq));
    }
    const joining = await this.confirmJoining(m, byId);
    const removing = await this.redis.hgetall(KEY_REMOVING);
    const fresh = Number((await this.redis.get(KEY_SEQ)) ?? 0) === 0;
    const without = (list: string[], id: string) => list.filter((x) => x !== id);
    // A primary whose port refuses connections is gone, whatever its last heartbeat says:
    // no need to wait for its alive key to lapse.
    const primaryView = byId.get(m.primary);
    if (primaryView?.alive && m.nodes[m.primary] && (await connectionRefused(m.nodes[m.primary]!))) {
      this.logger.warn({ primary: m.primary }, 'the primary refuses connections: treating it as down');
      byId.set(m.primary, { ...primaryView, alive: false });
    }
    const failover = this.failover(m, byId, joining);
    if (failover) return failover;
    // Removals asked for by an operator: drain (out of in-sync), then leave.
    for (const [id, text] of Object.entries(removing)) {
      if (m.nodes[id] === undefined) continue;
      const req = JSON.parse(text) as { requestedAtMs: number; drainedAtMs?: number };
      if (id === m.primary) {
        // Hand the role over first. The primary still runs, so every op it commits is on
        // each in-sync node until they hold the new epoch and refuse its batches: any
        // confirmed in-sync node holds all of them, whatever its last heartbeat says.
        const next = this.rankSuccessors(m, byId, joining, 0)[0];
        if (!next) {
          this.logger.warn({ nodeId: id, inSync: m.inSync }, 'the primary is being removed but no other confirmed in-sync node is alive to take its role; waiting');
          continue;
        }
        await this.redis.hset(KEY_REMOVING, id, JSON.stringify({ ...req, drainedAtMs: Date.now() }));
        return { next: { ...m, primary: next.id, inSync: without(m.inSync, id) }, why: `handing the primary role from ${id}, which is being removed, to ${next.id}` };
      }
      if (m.inSync.includes(id)) {
        await this.redis.hset(KEY_REMOVING, id, JSON.stringify({ ...req, drainedAtMs: Date.now() }));
        return { next: { ...m, inSync: without(m.inSync, id) }, why: `draining ${id}, which is being removed` };
      }
      if (Date.now() - (req.drainedAtMs ?? 0) < REMOVE_DRAIN_MS) continue;
      const rest = { ...m.nodes };
      delete rest[id];
      await this.redis.hdel(KEY_NODES, id);
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
    }
    // New nodes and moved ones.
    for (const n of nodes) {
      if (!n.alive || removing[n.id] !== undefined) continue;
      if (m.nodes[n.id] === undefined) {
        const joinNow = fresh && n.durableSeq === 0 && !n.syncing;
        return {
          next: { ...m, inSync: joinNow ? [...m.inSync, n.id].sort() : m.inSync, nodes: { ...m.nodes, [n.id]: n.url } },
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
        if (m.inSync.includes(id) || removing[id] !== undefined) continue;
        const n = byId.get(id);
        if (!n || !n.alive || n.syncing || n.space === 'full' || n.epoch !== m.epoch || n.role !== 'learner' || n.durableSeq === null) continue;
        // One the primary cannot reach now would only be dropped again.
        if (failing[id] !== undefined) continue;
        if (n.durableSeq >= primary.durableSeq - JOIN_LAG_OPS) {
          return { next: { ...m, inSync: [...m.inSync, id].sort() }, why: `${id} caught up (durable ${n.durableSeq}, primary ${primary.durableSeq})`, promoted: id };
        }
      }
    }
    return null;
  }

  /** Promoted backups not yet confirmed (see the header): moves each along, and returns
   * the IDs still unconfirmed. */
  private async confirmJoining(m: Membership, byId: Map<string, NodeView>): Promise<Set<string>> {
    const entries = await this.redis.hgetall(KEY_JOINING);
    const unconfirmed = new Set<string>();
    const primary = byId.get(m.primary);
    for (const [id, text] of Object.entries(entries)) {
      const j = JSON.parse(text) as { afterEpoch: number; needs: number | null };
      const n = byId.get(id);
      if (!m.inSync.includes(id) || id === m.primary) {
        // Left the in-sync set (or is the primary now, chosen while confirmed): nothing to track.
        if (m.epoch > j.afterEpoch) await this.redis.hdel(KEY_JOINING, id);
        continue;
      }
      if (j.needs === null && primary?.alive && primary.epoch !== null && primary.epoch > j.afterEpoch && primary.durableSeq !== null) {
        j.needs = primary.durableSeq;
        await this.redis.hset(KEY_JOINING, id, JSON.stringify(j));
      }
      if (j.needs !== null && n?.alive && n.epoch !== null && n.epoch > j.afterEpoch && (n.commitSeq ?? -1) >= j.needs) {
        await this.redis.hdel(KEY_JOINING, id);
        this.logger.info({ nodeId: id, commitSeq: n.commitSeq, needs: j.needs }, 'promoted backup holds everything committed before it counted: a failover candidate now');
        continue;
      }
      unconfirmed.add(id);
    }
    return unconfirmed;
  }

  /** A dead primary replaced, or a restarted one given a new epoch (see the header). */
  private failover(m: Membership, byId: Map<string, NodeView>, unconfirmed: Set<string>): { next: Membership; why: string } | null {
    const primary = byId.get(m.primary);
    if (primary?.alive) {
      this.noSuccessorLogged = false;
      if (primary.epoch !== m.epoch) return null;
      if (primary.primaryFenced) return { next: { ...m }, why: `primary ${m.primary} restarted and needs a new epoch` };
      // A peer holds ops committed that the primary lacks (it was chosen on stale figures):
      // the primary cannot commit past it, so the role goes to that peer.
      const ahead = primary.peersAhead.map((id) => byId.get(id)).find((n) => n?.alive && !n.syncing && m.nodes[n.id] !== undefined);
      if (ahead) {
        return {
          next: { ...m, primary: ahead.id, inSync: [...new Set([...m.inSync.filter((id) => id !== m.primary), ahead.id])].sort() },
          why: `${ahead.id} holds committed ops primary ${m.primary} lacks: it takes over`,
        };
      }
      // A primary short of space refuses every op that needs room (low) or can log nothing
      // at all (full), while a backup may have room: the role goes to a confirmed in-sync
      // node whose space is ok (none when they share the file system: they are short of room
      // too). As when a removed primary hands over, every op the old one committed is on
      // each in-sync node. It stays a member, as a learner, and rejoins as a backup, as a
      // backup that fills leaves and rejoins.
      if (primary.space !== 'ok') {
        const roomy = this.rankSuccessors(m, byId, unconfirmed, 0).find((n) => n.space === 'ok');
        if (roomy) {
          return {
            next: { ...m, primary: roomy.id, inSync: m.inSync.filter((id) => id !== m.primary) },
            why: `primary ${m.primary} is ${primary.space === 'full' ? 'out of' : 'low on'} space: ${roomy.id}, which has room, takes over`,
          };
        }
      }
      return null;
    }
    const committed = Math.max(0, ...this.commitSeen.values());
    const chosen = this.rankSuccessors(m, byId, unconfirmed, committed)[0];
    // No live, confirmed in-sync node reaches what is known committed: only the dead may
    // hold it, so wait for them rather than lose acknowledged writes.
    if (!chosen) {
      if (!this.noSuccessorLogged) {
        this.logger.warn(
          { primary: m.primary, inSync: m.inSync, unconfirmed: [...unconfirmed], committed },
          'the primary stopped heartbeating and no live, confirmed in-sync node holds every committed op: waiting for it',
        );
      }
      this.noSuccessorLogged = true;
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
  private rankSuccessors(m: Membership, byId: Map<string, NodeView>, unconfirmed: Set<string>, committed: number): NodeView[] {
    return m.inSync
      .filter((id) => id !== m.primary && !unconfirmed.has(id))
      .flatMap((id) => {
        const n = byId.get(id);
        return n && n.alive && !n.syncing && n.durableSeq !== null && n.durableSeq >= committed ? [n] : [];
      })
      .sort((a, b) => (b.logEpoch ?? -1) - (a.logEpoch ?? -1) || b.durableSeq! - a.durableSeq! || a.id.localeCompare(b.id));
  }

  /** Redis lost its data: restore the counter, the epoch and the membership from the nodes
   * (see the header). */
  private async restoreAfterLoss(live: NodeView[]): Promise<void> {
    const now = Date.now();
    if (this.lossSeenAtMs === null) {
      this.lossSeenAtMs = now;
      this.logger.warn({ nodes: live.map((n) => n.id) }, 'Redis has no membership but the nodes have a history: it lost its data; restoring');
    }
    // Nodes that have not heartbeated again yet are not in `live`; the grace covers them
    // (`live` is this round's reading, taken after the grace when we go on).
    if (now - this.lossSeenAtMs < RESTORE_GRACE_MS) return;
    const nodes = live;
    const highestSeq = Math.max(0, ...nodes.map((n) => n.durableSeq ?? 0));
    const memberships = nodes.flatMap((n) => (n.membership ? [n.membership] : []));
    const highestEpoch = Math.max(0, ...nodes.map((n) => n.epoch ?? 0), ...memberships.map((m) => m.epoch));
    const newest = memberships.sort((a, b) => b.epoch - a.epoch)[0];
    const next: Membership = newest
      ? { ...newest, epoch: 0 }
      : // No node holds one (all restarted meanwhile): the nodes at the highest sequence ID.
        (() => {
          const top = nodes.filter((n) => (n.durableSeq ?? 0) === highestSeq);
          return { epoch: 0, primary: top[0]!.id, inSync: top.map((n) => n.id), nodes: Object.fromEntries(nodes.map((n) => [n.id, n.url])) };
        })();
    const ok = await this.redis.eval(RESTORE_SCRIPT, 3, KEY_LEADER, KEY_SEQ, KEY_EPOCH, this.proxyId, String(highestSeq), String(highestEpoch + EPOCH_RESTORE_MARGIN));
    if (ok !== 1) return;
    const epoch = await this.redis.eval(PUBLISH_SCRIPT, 3, KEY_LEADER, KEY_EPOCH, KEY_MEMBERSHIP, this.proxyId, JSON.stringify(next));
    if (!epoch) return;
    this.lossSeenAtMs = null;
    this.logger.info({ seq: highestSeq, epoch, primary: next.primary, inSync: next.inSync }, 'restored the sequence counter and membership after Redis lost its data');
  }
}
