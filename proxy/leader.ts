/*
 * Leader duties (docs/cluster.md): one proxy at a time holds a Redis lease
 * (`SET dfs:leader <proxyId> NX PX leaseMs`, renewed while held) and owns membership: which
 * storage nodes exist, which are in sync, which one is primary. Every membership change
 * bumps `dfs:epoch` and is written only while the writer still holds the lease (one Lua
 * script checks and writes), so a leader that lost its lease cannot publish.
 *
 * What it decides is proxy/leader-core.ts (`decide`, a pure step the simulation runs too);
 * this module is its driver: the lease, the Redis reads and the fenced writes, the probe of
 * the primary's port, the clock and the log. Each round it reads the registry (every
 * value parsed by common/registry.ts), probes the primary, calls `decide`, performs the
 * registry writes it returns in order, then restores the counters (if Redis lost its
 * data) and publishes the new membership.
 *
 * Redis that lost its data (restarted empty, DESIGN.md): the membership is gone and
 * `dfs:seq` starts again at 0, so the IDs it would hand out are ones the nodes already
 * hold. Proxies take no ID while no membership exists (proxy/sequencer.ts). The leader sees
 * nodes with a history and no membership, waits RESTORE_GRACE_MS for every running node to
 * heartbeat again, then in one fenced script puts `dfs:seq` at the highest sequence ID any
 * node has durably, and publishes the newest membership a node holds under an epoch past
 * the highest any node has seen (by EPOCH_RESTORE_MARGIN). Only then does anyone sequence
 * again.
 *
 * Redis distrusted (docs/security.md, "Redis"): every proxy's Redis login may write what
 * the leader writes, so the leader acts on nothing it reads unchecked. A membership that
 * is not sealed by a proxy of this cluster (common/membership-seal.ts) or whose epoch is
 * more than EPOCH_AHEAD_MAX past what the nodes report counts as none (so the newest one
 * the nodes hold is published again, as above); the next epoch is computed here, one past
 * the newest the cluster holds, and the publish script writes it compare-and-set; a
 * `dfs:seq` below what the nodes hold durably is raised to it; a node outside the
 * membership takes part only after probeJoinCredential (its certificate, in a TLS
 * handshake); a record that does not parse is logged and left out.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Redis } from 'ioredis';
import type { Membership } from '../common/api';
import type { Logger } from '../common/log';
import { KEY_EPOCH, KEY_JOINING, KEY_LEADER, KEY_MEMBERSHIP, KEY_NODES, KEY_REMOVING, KEY_SEQ, nodeAliveKey } from '../common/redis-keys';
import {
  encodeJoining,
  encodeRegistration,
  encodeMembership,
  encodeRemoval,
  epochRefusal,
  parseCounter,
  parseHeartbeat,
  parseJoining,
  parseMembership,
  parseRegistration,
  parseRemoval,
  type Joining,
  type Removal,
} from '../common/registry';
import { SealChecker, sealMembership } from '../common/membership-seal';
import { clientConnectOptions, type TlsMaterial } from '../common/tls';
import { decide, newLeaderMemory, nodeView, type LeaderMemory, type LeaderWrite, type NodeView } from './leader-core';

export { EPOCH_RESTORE_MARGIN, JOIN_LAG_OPS, PEER_UNREACHABLE_MS, REMOVE_DRAIN_MS, RESTORE_GRACE_MS, type NodeView } from './leader-core';

// KEYS: leader; ARGV: proxyId. Deletes the lease only while the caller holds it.
const RELEASE_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end`;
const RENEW_SCRIPT = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end`;
// KEYS: leader, epoch, membership; ARGV: proxyId, the epoch's text as this round read it
// ('' for none), the new epoch, the membership's text. Publishes only while the caller
// holds the lease and nobody changed the epoch since it read it; the epoch it writes is
// the integer the leader computed (never Lua's arithmetic, whose numbers past 2^53 print
// as 9.007199254741e+15).
const PUBLISH_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = redis.call('GET', KEYS[2])
if cur == false then cur = '' end
if cur ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
return 1`;

// KEYS: leader, seq; ARGV: proxyId, the counter's text as this round read it ('' for
// none), its new value. Moves the counter only while the caller holds the lease and nobody
// took an ID since it read it (a taken ID is never handed out twice).
const SET_SEQ_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = redis.call('GET', KEYS[2])
if cur == false then cur = '' end
if cur ~= ARGV[2] then return 0 end
redis.call('SET', KEYS[2], ARGV[3])
return 1`;

/** Heartbeat keys a SCAN asks for per call, and the most it reads in one round. */
const SCAN_COUNT = 100;
const SCAN_KEYS_MAX = 10_000;

/** Every node registered or heartbeating, with its heartbeat (lapsed: not alive), sorted by
 * ID. A value that does not parse is left out, and `refused` told why: one damaged record
 * must not stop the leader from acting on the others. */
export async function readNodes(redis: Redis, refused: (reason: string) => void = () => undefined): Promise<NodeView[]> {
  const registered = await redis.hgetall(KEY_NODES);
  const ids = new Set(Object.keys(registered));
  // Nodes that heartbeat but are not registered yet: the leader registers them.
  const prefix = nodeAliveKey('');
  const suffix = prefix.slice(prefix.lastIndexOf(':'));
  const head = prefix.slice(0, prefix.length - suffix.length);
  let cursor = '0';
  let seen = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${head}*${suffix}`, 'COUNT', SCAN_COUNT);
    cursor = next;
    for (const key of keys) ids.add(key.slice(head.length, key.length - suffix.length));
    seen += keys.length;
  } while (cursor !== '0' && seen < SCAN_KEYS_MAX);
  const sorted = [...ids].sort();
  if (sorted.length === 0) return [];
  const alive = await redis.mget(sorted.map(nodeAliveKey));
  const parsed = <T>(parse: () => T): T | null => {
    try {
      return parse();
    } catch (e) {
      refused((e as Error).message);
      return null;
    }
  };
  return sorted.map((id, i) => nodeView(id, registered[id] ? parsed(() => parseRegistration(id, registered[id]!)) : null, alive[i] ? parsed(() => parseHeartbeat(id, alive[i]!)) : null));
}

/** A `dfs:seq` this far above every node's durable log was set by hand: no primary admits
 * an ID more than SEQ_AHEAD_MAX (8,192, storage/main.ts) past its log, so no proxy's
 * acknowledged or in-flight op holds one. */
const SEQ_AHEAD_FIX = 1_000_000;

/** Bounds on what the leader remembers of refused values and join probes. */
const REFUSED_SEEN_MAX = 1_000;
const JOINS_MAX = 1_000;
/** Join probes at once. */
const JOIN_PROBES_MAX = 8;

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
  return text ? parseMembership(text) : null;
}

function parseHash<T>(hash: Record<string, string>, parse: (id: string, text: string) => T, refused: (reason: string) => void): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [id, text] of Object.entries(hash)) {
    try {
      out[id] = parse(id, text);
    } catch (e) {
      refused((e as Error).message);
    }
  }
  return out;
}

/** How long the leader's TLS handshake with a node that asks to join may take, and how
 * long a failed one is not tried again. */
const JOIN_PROBE_MS = 2_000;
const JOIN_RETRY_MS = 5_000;

/**
 * A node's join credential: a TLS handshake with the URL it gave, in which it must show a
 * certificate of this cluster's CA that names the role `node` and this ID (and holds the
 * key). A record written into Redis by hand (`HSET dfs:nodes`, a forged heartbeat) names a
 * URL; only the node's own key answers there. Null when it holds; else why not.
 */
export function probeJoinCredential(id: string, url: string, tls: TlsMaterial, timeoutMs = JOIN_PROBE_MS): Promise<string | null> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return Promise.resolve(`${url} is not a URL`);
  }
  if (u.protocol !== 'https:') return Promise.resolve(`${url} is not https`);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    const socket = tlsConnect({ host, port: Number(u.port || 443), ...(net.isIP(host) ? {} : { servername: host }), ALPNProtocols: ['h2'], ...clientConnectOptions(tls, ['node'], id) });
    let settled = false;
    const done = (why: string | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`no TLS handshake within ${timeoutMs} ms`), timeoutMs);
    socket.once('secureConnect', () => done(null));
    socket.once('error', (err) => done(err.message));
  });
}

export class LeaderDuty {
  isLeader = false;
  private timer: NodeJS.Timeout | null = null;
  private running = false;
  /** What `decide` remembers between rounds while this proxy leads. */
  private memory: LeaderMemory = newLeaderMemory();

  constructor(
    private readonly redis: Redis,
    private readonly proxyId: string,
    private readonly leaseMs: number,
    private readonly logger: Logger,
    /** This proxy's certificate and key: it seals what it publishes and checks what it reads
     * (null under --insecure: nothing is sealed or checked). */
    private readonly tls: TlsMaterial | null = null,
    /** The floor on copies the storage nodes enforce (their --min-in-sync; 0: a majority). */
    private readonly minInSync = 0,
  ) {
    this.seals = tls ? new SealChecker(tls.ca) : null;
  }

  private readonly seals: SealChecker | null;
  /** The newest epoch this proxy published while it led. */
  private publishedEpoch = 0;
  /** Join credentials checked: `id url` -> whether it held, and when it was checked. */
  private readonly joins = new Map<string, { ok: boolean; atMs: number }>();
  /** Join probes under way (`id url` -> settles when it is done). */
  private readonly joinProbes = new Map<string, Promise<void>>();
  /** Reasons already logged, so that a value refused every round is logged once. */
  private readonly refusedSeen = new Set<string>();

  private refused(reason: string): void {
    if (this.refusedSeen.has(reason)) return;
    if (this.refusedSeen.size >= REFUSED_SEEN_MAX) this.refusedSeen.clear();
    this.refusedSeen.add(reason);
    this.logger.warn({ reason }, 'refused a value in Redis');
  }

  /** The removal requests an admin sealed (`dfs node remove`); others are logged and left. */
  private sealedRemovals(removing: Record<string, Removal>, nowMs: number): Record<string, Removal> {
    if (this.seals === null) return removing;
    const out: Record<string, Removal> = {};
    for (const [id, r] of Object.entries(removing)) {
      const why = this.seals.removalRefusal(id, r, nowMs);
      if (why === null) out[id] = r;
      else this.refused(`the request to remove ${id}: ${why}`);
    }
    return out;
  }

  /**
   * Whether the node showed its join credential (probeJoinCredential), cached per ID and
   * URL. The probe runs beside the rounds, never in one: a node not yet checked counts as
   * not shown this round, and at most JOIN_PROBES_MAX probes run at once, so registry
   * entries written by hand by the thousand cannot stall the leader (a failover waits for
   * no probe).
   */
  private joinHolds(id: string, url: string, nowMs: number): boolean {
    const tls = this.tls;
    if (tls === null) return true;
    const key = `${id} ${url}`;
    const seen = this.joins.get(key);
    if (seen && (seen.ok || nowMs - seen.atMs < JOIN_RETRY_MS)) return seen.ok;
    if (this.joinProbes.has(key) || this.joinProbes.size >= JOIN_PROBES_MAX) return false;
    const settle = (why: string | null) => {
      this.joinProbes.delete(key);
      if (this.joins.size >= JOINS_MAX) this.joins.clear();
      this.joins.set(key, { ok: why === null, atMs: Date.now() });
      if (why !== null) this.refused(`node ${id} at ${url} did not show its join credential: ${why}`);
    };
    this.joinProbes.set(key, probeJoinCredential(id, url, tls).then(settle, (e: Error) => settle(e.message)));
    return false;
  }

  /** Which nodes take part this round: members at the URL the membership gives them, and
   * others that showed their join credential. Before the first membership, the probes
   * under way are waited for (they run at once, each bounded by JOIN_PROBE_MS), so that a
   * new cluster starts with every node that registered, as it always did. */
  private async admitted(nodes: NodeView[], membership: Membership | null, nowMs: number): Promise<NodeView[]> {
    const shown = (n: NodeView) => membership?.nodes[n.id] === n.url || n.url === '' || this.joinHolds(n.id, n.url, nowMs);
    let out = nodes.filter(shown);
    // JOIN_PROBES_MAX at a time: as many waits as it takes to probe every node once.
    for (let wait = 0; membership === null && this.joinProbes.size > 0 && wait <= nodes.length / JOIN_PROBES_MAX; wait++) {
      await Promise.all(this.joinProbes.values());
      out = nodes.filter(shown);
    }
    return out;
  }

  start(): void {
    const tickMs = Math.max(50, Math.floor(this.leaseMs / 4));
    this.timer = setInterval(() => void this.tick(), tickMs);
    void this.tick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * Stops the rounds and gives the lease up (a proxy stopping on SIGTERM), so that another
   * proxy takes over at its next round instead of after the lease lapses. Waits for a round
   * under way first: one that renewed after the delete would hold the lease again. Resolves
   * whether it held the lease; a Redis that does not answer leaves the lease to lapse.
   */
  async release(): Promise<boolean> {
    this.stop();
    while (this.running) await new Promise((resolve) => setTimeout(resolve, 10));
    // Nothing runs a round from here on: mark it running so that none starts.
    this.running = true;
    const held = this.isLeader;
    this.isLeader = false;
    if (!held) return false;
    const released = (await this.redis.eval(RELEASE_SCRIPT, 1, KEY_LEADER, this.proxyId)) === 1;
    this.logger.info({ proxyId: this.proxyId, released }, released ? 'gave up the leader lease' : 'the leader lease was no longer ours');
    return released;
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
    const refused = (reason: string) => this.refused(reason);
    const [allNodes, membershipText, removingHash, joiningHash, seqText, epochText] = await Promise.all([
      readNodes(this.redis, refused),
      this.redis.get(KEY_MEMBERSHIP),
      this.redis.hgetall(KEY_REMOVING),
      this.redis.hgetall(KEY_JOINING),
      this.redis.get(KEY_SEQ),
      this.redis.get(KEY_EPOCH),
    ]);
    const nowMs = Date.now();
    // The newest epoch the cluster holds, from the nodes' own heartbeats (only nodes may
    // write those) and what this leader published: the bound on epochs read from Redis.
    const knownEpoch = Math.max(this.publishedEpoch, ...allNodes.map((n) => n.epoch ?? 0));
    // A membership that does not parse, is not sealed by a proxy of this cluster, or jumps
    // too far ahead is not acted on: to the rules below it is as if Redis had lost it, so a
    // sealed one (the newest the nodes hold) is published again.
    let membership: Membership | null = null;
    if (membershipText !== null) {
      try {
        const m = parseMembership(membershipText);
        const why = this.seals?.refusal(m, nowMs) ?? epochRefusal(m.epoch, knownEpoch);
        if (why === null) membership = m;
        else refused(`the membership in Redis (epoch ${m.epoch}): ${why}`);
      } catch (e) {
        refused((e as Error).message);
      }
    }
    // A node outside the membership takes part only once it showed its join credential.
    const nodes = await this.admitted(allNodes, membership, nowMs);
    // The sequence counter: never below what a node holds durably (a counter reset by hand
    // would hand out IDs the nodes hold), and a malformed one is set to that.
    const durableMax = Math.max(0, ...nodes.filter((n) => n.alive).map((n) => n.durableSeq ?? 0));
    let seq: number;
    let seqFix: number | null = null;
    const primaryAlive = membership !== null && nodes.some((n) => n.id === membership!.primary && n.alive);
    try {
      seq = parseCounter(KEY_SEQ, seqText);
      if (membership !== null && seq < durableMax) {
        refused(`dfs:seq ${seq} is below ${durableMax}, the highest sequence ID a node holds durably: raising it`);
        seqFix = durableMax;
      } else if (primaryAlive && seq > durableMax + SEQ_AHEAD_FIX) {
        // No proxy took these: the primary refuses IDs this far past its log (a bound far
        // smaller), so none is in flight; the proxies' own floors (proxy/sequencer.ts)
        // raise it back past any ID they were handed.
        refused(`dfs:seq ${seq} is more than ${SEQ_AHEAD_FIX} above ${durableMax}, the highest sequence ID a node holds durably: setting it there`);
        seqFix = durableMax;
      }
    } catch (e) {
      refused((e as Error).message);
      seq = durableMax;
      seqFix = durableMax;
    }
    if (seqFix !== null) {
      await this.redis.eval(SET_SEQ_SCRIPT, 2, KEY_LEADER, KEY_SEQ, this.proxyId, seqText ?? '', String(seqFix));
      seq = seqFix;
    }
    // The epoch the next membership gets is one past the newest the cluster holds; an epoch
    // in Redis past the bound (or malformed) is ignored and overwritten by the next publish.
    let epochBase = Math.max(knownEpoch, membership?.epoch ?? 0);
    try {
      const epoch = parseCounter(KEY_EPOCH, epochText);
      const why = epochRefusal(epoch, knownEpoch);
      if (why === null) epochBase = Math.max(epochBase, epoch);
      else refused(`dfs:epoch: ${why}`);
    } catch (e) {
      refused((e as Error).message);
    }
    // The one probe: a primary whose port refuses connections is gone (no need to wait for
    // its heartbeat to lapse).
    const refusedPorts: string[] = [];
    const primaryUrl = membership ? membership.nodes[membership.primary] : undefined;
    if (membership && primaryUrl && nodes.some((n) => n.id === membership!.primary && n.alive) && (await connectionRefused(primaryUrl))) refusedPorts.push(membership.primary);
    const decision = decide({
      membership,
      nodes,
      removing: this.sealedRemovals(parseHash<Removal>(removingHash, parseRemoval, refused), nowMs),
      joining: parseHash<Joining>(joiningHash, parseJoining, refused),
      seq,
      refused: refusedPorts,
      minInSync: this.minInSync,
      nowMs,
      memory: this.memory,
    });
    this.memory = decision.memory;
    for (const note of decision.notes) this.logger[note.level](note.fields, note.msg);
    for (const w of decision.writes) await this.write(w);
    if (decision.restore) {
      // Raise the counter only; the epoch is raised by the publish below.
      if (decision.restore.seq > seq) {
        const ok = await this.redis.eval(SET_SEQ_SCRIPT, 2, KEY_LEADER, KEY_SEQ, this.proxyId, seqFix !== null ? String(seqFix) : (seqText ?? ''), String(decision.restore.seq));
        if (ok !== 1) return;
      }
      epochBase = Math.max(epochBase, decision.restore.epoch);
    }
    const next = decision.next;
    if (!next) return;
    if (membership) this.logger.info({ why: decision.why }, 'changing membership');
    const epoch = epochBase + 1;
    assert(Number.isSafeInteger(epoch), `the next epoch ${epoch} is not a safe integer`);
    const published = this.tls ? sealMembership({ ...next, epoch }, this.tls) : { ...next, epoch };
    const ok = await this.redis.eval(PUBLISH_SCRIPT, 3, KEY_LEADER, KEY_EPOCH, KEY_MEMBERSHIP, this.proxyId, epochText ?? '', String(epoch), encodeMembership(published));
    if (ok !== 1) return;
    this.publishedEpoch = epoch;
    if (decision.restore) {
      this.memory = { ...this.memory, lossSeenAtMs: null };
      this.logger.info({ seq: decision.restore.seq, epoch, primary: next.primary, inSync: next.inSync }, 'restored the sequence counter and membership after Redis lost its data');
    } else {
      this.logger.info({ epoch, primary: next.primary, inSync: next.inSync, nodes: Object.keys(next.nodes) }, 'published membership');
    }
  }

  private async write(w: LeaderWrite): Promise<void> {
    switch (w.type) {
      case 'register':
        await this.redis.hset(KEY_NODES, w.value.id, encodeRegistration(w.value));
        return;
      case 'setJoining':
        await this.redis.hset(KEY_JOINING, w.id, encodeJoining(w.value));
        return;
      case 'deleteJoining':
        await this.redis.hdel(KEY_JOINING, w.id);
        return;
      case 'setRemoving':
        await this.redis.hset(KEY_REMOVING, w.id, encodeRemoval(w.value));
        return;
      case 'deleteRemoving':
        await this.redis.hdel(KEY_REMOVING, w.id);
        return;
      case 'deleteNode':
        await this.redis.hdel(KEY_NODES, w.id);
        return;
    }
  }
}
