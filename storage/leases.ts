/*
 * The primary's table of cache leases (common/leases.ts says what a lease covers;
 * docs/leases.md the protocol).
 *
 * Leases live in sessions, one per mount. A session lives LEASE_MS past its mount's last
 * grant or poll; when it lapses, every lease in it is gone. A mount keeps one poll open
 * (`poll`), which renews its session and carries the IDs of its leases that changes have
 * revoked; the mount drops what it cached under them and says so in its next poll (`acks`).
 *
 * `revoke` is called by the primary after a change is applied and before it is
 * acknowledged: it takes every conflicting lease of every other mount out of the table and
 * resolves once each of them is acknowledged by its mount or has lapsed with its session.
 * A grant is registered *before* the read it comes with is made, so a change applied before
 * the registration is in what the read sees, and one applied after it revokes the lease.
 *
 * Bounded: at most SESSIONS_MAX sessions and LEASES_PER_SESSION_MAX leases each; past
 * either, reads are answered without a lease (the mount then just does not cache). The
 * clock is injected for tests; the only timers are a poll's hold and, while revocations
 * wait on a session, its lapse.
 */
import { randomUUID } from 'node:crypto';
import { conflictsWith, LEASE_GRANT_FRESH_MS, LEASE_MS, LEASE_POLL_HOLD_MS, type LeaseConflicts } from '../common/leases';

export const SESSIONS_MAX = 4_096;
export const LEASES_PER_SESSION_MAX = 100_000;
/** Revoked lease IDs one poll answer carries at most (the rest go in the next). */
export const REVOKED_PER_POLL_MAX = 4_096;

interface Lease {
  id: number;
  key: string;
  session: Session;
  /** Set once revoked: resolved by the mount's ack or the session's lapse. */
  gone: (() => void) | null;
}

interface Session {
  id: string;
  mount: string;
  expiresAtMs: number;
  /** key -> the live (unrevoked) lease on it. */
  byKey: Map<string, Lease>;
  /** Revoked, not yet acknowledged, by ID, oldest first: every poll answer carries them
   * until they are acknowledged (an answer may be lost on its way). */
  revoked: Map<number, Lease>;
  wake: (() => void) | null;
  lapseTimer: NodeJS.Timeout | null;
}

export interface Grant {
  session: string;
  lease: number;
  ms: number;
}

export interface PollAnswer {
  /** The mount's live session, or null when it has none (every lease it held is gone). */
  session: string | null;
  revoked: number[];
}

export class LeaseTable {
  private readonly sessions = new Map<string, Session>();
  /** key -> leases on it, across sessions. */
  private readonly byKey = new Map<string, Set<Lease>>();
  private nextId = 1;

  constructor(
    private readonly now: () => number = Date.now,
    readonly leaseMs: number = LEASE_MS,
  ) {}

  /** Registers a lease for `mount` on `key`; null when a bound is reached. */
  grant(mount: string, key: string): Grant | null {
    const s = this.liveSession(mount, true);
    if (!s) return null;
    s.expiresAtMs = this.now() + this.leaseMs;
    let lease = s.byKey.get(key);
    if (!lease) {
      if (s.byKey.size >= LEASES_PER_SESSION_MAX) return null;
      lease = { id: this.nextId++, key, session: s, gone: null };
      s.byKey.set(key, lease);
      let all = this.byKey.get(key);
      if (!all) this.byKey.set(key, (all = new Set()));
      all.add(lease);
    }
    return { session: s.id, lease: lease.id, ms: this.leaseMs };
  }

  /**
   * A mount's poll: acknowledges `acks`, renews its session and answers the IDs revoked
   * and not acknowledged, at once if there are any, else when one is revoked or after
   * `holdMs`.
   *
   * `ackSession` names the session the acks are of, when the mount says.
   *
   * An ID sent and not acknowledged is sent again, in every answer until its ack comes:
   * an answer can be lost on its way (the proxy cut off from the mount, the mount's request
   * timed out), and the next poll renews the session all the same, so a revocation sent
   * only once would leave the mount counting on the lease for as long as it keeps polling,
   * and the change that revoked it waiting as long. The mount acknowledges an ID it does
   * not hold, or heard of already, at once (mount/leases.ts).
   */
  async poll(mount: string, acks: number[], holdMs: number = LEASE_POLL_HOLD_MS, ackSession?: string): Promise<PollAnswer> {
    let s = this.liveSession(mount, false);
    if (!s) return { session: null, revoked: [] };
    // Acks of another session (an older primary's, whose lease IDs may be the same
    // numbers) settle nothing here.
    if (ackSession === undefined || ackSession === s.id) for (const id of acks) {
      const lease = s.revoked.get(id);
      if (lease) this.settle(lease);
    }
    s.expiresAtMs = this.now() + this.leaseMs;
    if (s.revoked.size === 0 && holdMs > 0) {
      // One poll per session at a time: an older one still held is answered now, empty.
      s.wake?.();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          if (s!.wake === wake) s!.wake = null;
          resolve();
        }, holdMs);
        const wake = () => {
          clearTimeout(timer);
          if (s!.wake === wake) s!.wake = null;
          resolve();
        };
        s!.wake = wake;
      });
      // The session may have lapsed or been replaced while the poll was held.
      if (this.sessions.get(mount) !== s || s.expiresAtMs <= this.now()) {
        s = this.liveSession(mount, false);
        if (!s) return { session: null, revoked: [] };
      }
    }
    const revoked: number[] = [];
    for (const id of s.revoked.keys()) {
      if (revoked.length >= REVOKED_PER_POLL_MAX) break;
      revoked.push(id);
    }
    return { session: s.id, revoked };
  }

  /**
   * Revokes every lease that conflicts with a change, except those of `exceptMount` (the
   * mount that made it, which drops its own cache), and resolves once each is acknowledged
   * or lapsed.
   */
  async revoke(conflicts: LeaseConflicts, exceptMount: string | null): Promise<number> {
    if (this.byKey.size === 0) return 0;
    const hit: Lease[] = [];
    const consider = (set: Set<Lease> | undefined) => {
      if (set) for (const l of set) if (l.session.mount !== exceptMount) hit.push(l);
    };
    for (const key of conflicts.keys) consider(this.byKey.get(key));
    if (conflicts.trees.length > 0) {
      for (const [key, set] of this.byKey) if (!conflicts.keys.includes(key) && conflictsWith({ keys: [], trees: conflicts.trees }, key)) consider(set);
    }
    if (hit.length === 0) return 0;
    const waits: Promise<void>[] = [];
    const nowMs = this.now();
    for (const lease of hit) {
      const s = lease.session;
      this.unindex(lease);
      if (s.expiresAtMs <= nowMs) continue; // lapsed already: nothing is cached under it
      waits.push(new Promise<void>((resolve) => (lease.gone = resolve)));
      s.revoked.set(lease.id, lease);
      this.watchLapse(s);
      s.wake?.();
    }
    await Promise.all(waits);
    return waits.length;
  }

  /** Leases held, across sessions (for status and tests). */
  get size(): number {
    let n = 0;
    for (const set of this.byKey.values()) n += set.size;
    return n;
  }

  /** The node is no longer primary: no lease is live any more, and no poll is held.
   * Revocations under way still wait for their mounts' sessions to lapse, since the
   * mounts may not hear of them now. */
  clear(): void {
    for (const s of this.sessions.values()) {
      for (const lease of [...s.byKey.values()]) this.unindex(lease);
      s.wake?.();
    }
  }

  /** The mount's session if it has not lapsed; with `create`, a new one in its place. */
  private liveSession(mount: string, create: boolean): Session | null {
    const nowMs = this.now();
    let s = this.sessions.get(mount);
    if (s && s.expiresAtMs <= nowMs) {
      this.endSession(s);
      s = undefined;
    }
    if (s || !create) return s ?? null;
    if (this.sessions.size >= SESSIONS_MAX) this.sweep();
    if (this.sessions.size >= SESSIONS_MAX) return null;
    s = { id: randomUUID(), mount, expiresAtMs: nowMs + this.leaseMs, byKey: new Map(), revoked: new Map(), wake: null, lapseTimer: null };
    this.sessions.set(mount, s);
    return s;
  }

  /** Ends the sessions that lapsed. */
  private sweep(): void {
    const nowMs = this.now();
    for (const s of [...this.sessions.values()]) if (s.expiresAtMs <= nowMs) this.endSession(s);
  }

  private endSession(s: Session): void {
    if (this.sessions.get(s.mount) === s) this.sessions.delete(s.mount);
    for (const lease of [...s.byKey.values()]) this.unindex(lease);
    for (const lease of [...s.revoked.values()]) this.settle(lease);
    if (s.lapseTimer) clearTimeout(s.lapseTimer);
    s.lapseTimer = null;
    s.expiresAtMs = 0;
    s.wake?.();
  }

  /** While a session has revocations outstanding, ends it when it lapses. A poll or grant
   * renews it meanwhile, and the mount may take the renewal as covering a lease it has
   * not yet heard is revoked: so a revocation waits for the session's real lapse, not for
   * the expiry it had when the lease was revoked. */
  private watchLapse(s: Session): void {
    if (s.lapseTimer) return;
    const check = () => {
      s.lapseTimer = null;
      if (s.revoked.size === 0) return;
      const leftMs = s.expiresAtMs - this.now();
      if (leftMs <= 0) this.endSession(s);
      else s.lapseTimer = setTimeout(check, leftMs + 1);
    };
    s.lapseTimer = setTimeout(check, Math.max(0, s.expiresAtMs - this.now()) + 1);
  }

  private unindex(lease: Lease): void {
    const s = lease.session;
    if (s.byKey.get(lease.key) === lease) s.byKey.delete(lease.key);
    const set = this.byKey.get(lease.key);
    if (set) {
      set.delete(lease);
      if (set.size === 0) this.byKey.delete(lease.key);
    }
  }

  private settle(lease: Lease): void {
    lease.session.revoked.delete(lease.id);
    const gone = lease.gone;
    lease.gone = null;
    gone?.();
  }
}

/** What the gate needs to know of the node's role. */
export interface PrimaryRole {
  /** This node is the primary of its epoch (not fenced). */
  primary: boolean;
  /** When (this node's clock) Redis last confirmed the membership naming it primary. */
  confirmedAtMs: number;
}

/** The cluster-wide mark that leases are in use (a key in Redis, storage/main.ts). */
export interface LeaseMarker {
  /** Sets the mark, atomically with a check that the membership still names this node
   * primary in its epoch; false when it does not. */
  mark(): Promise<boolean>;
  /** Whether any primary ever set it. */
  isSet(): Promise<boolean>;
}

/**
 * The lease table's life on a node: a table exists only while the node is primary, a new
 * one each time it becomes primary.
 *
 * A deposed primary may have granted leases this table does not know, and may go on
 * granting for as long as it believes it is primary: up to LEASE_GRANT_FRESH_MS after it
 * last read a membership naming it, which was before the one naming this node was
 * published. So a new table acknowledges no change until LEASE_MS + LEASE_GRANT_FRESH_MS
 * after it began, unless no lease was ever granted in the cluster: a primary marks that
 * (LeaseMarker) before its first grant, under the same check of its role, so a primary that
 * finds no mark knows no lease was granted and none can be by an older primary.
 */
export class LeaseGate {
  private table: LeaseTable | null = null;
  private ready: Promise<void> = Promise.resolve();
  /** The table's primary has set the mark (it may grant). */
  private marked = false;
  private marking = false;

  constructor(
    private readonly deps: {
      role: () => PrimaryRole;
      marker?: LeaseMarker;
      now?: () => number;
      leaseMs?: number;
      grantFreshMs?: number;
    },
  ) {}

  private now(): number {
    return this.deps.now ? this.deps.now() : Date.now();
  }

  private get leaseMs(): number {
    return this.deps.leaseMs ?? LEASE_MS;
  }

  private get grantFreshMs(): number {
    return this.deps.grantFreshMs ?? LEASE_GRANT_FRESH_MS;
  }

  /** Follows the role; call it whenever the membership may have changed. */
  update(): LeaseTable | null {
    const r = this.deps.role();
    if (!r.primary) {
      this.table?.clear();
      this.table = null;
      return null;
    }
    if (!this.table) {
      this.table = new LeaseTable(() => this.now(), this.leaseMs);
      this.marked = !this.deps.marker;
      const waitMs = this.leaseMs + this.grantFreshMs;
      const waitOut = () => new Promise<void>((resolve) => setTimeout(resolve, waitMs));
      const marker = this.deps.marker;
      this.ready = marker ? marker.isSet().then((set) => (set ? waitOut() : undefined), waitOut) : waitOut();
    }
    return this.table;
  }

  /** The table to grant from, or null when this node may not grant now. */
  grantable(): LeaseTable | null {
    const t = this.update();
    if (!t || this.now() - this.deps.role().confirmedAtMs >= this.grantFreshMs) return null;
    if (!this.marked) {
      if (!this.marking && this.deps.marker) {
        this.marking = true;
        this.deps.marker
          .mark()
          .then((ok) => {
            if (this.table === t) this.marked = ok;
          }, () => undefined)
          .finally(() => (this.marking = false));
      }
      return null;
    }
    return t;
  }

  /** Waits until a change may be acknowledged: on a new primary, until older leases are
   * gone; then revokes the leases it conflicts with (but those of the mount that made it). */
  async beforeAck(conflicts: LeaseConflicts, mount: string | null): Promise<void> {
    const t = this.update();
    await this.ready;
    if (t) await t.revoke(conflicts, mount);
  }
}
