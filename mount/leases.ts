/*
 * The mount's side of cache leases (common/leases.ts, docs/leases.md).
 *
 * The primary grants leases in a session per mount. This module keeps the session (its ID
 * and how long the mount may count on it), the leases granted in it by key, and runs the
 * poll that renews the session and hears of revocations. A cached answer is usable while
 * the lease it was cached under is: not revoked, of the current session, and the session
 * not past `validUntilMs`.
 *
 * Timing: the mount counts a session valid until LEASE_MS after it *sent* the request that
 * renewed it (a grant or a poll); the primary counts it from when it received that request,
 * which is later. So the mount never counts on a lease the primary has let lapse. The
 * clock is performance.now (monotonic), injectable for tests.
 */
import type { Logger } from '../common/log';

export interface LeaseGrant {
  session: string;
  lease: number;
  ms: number;
  /** When the request that brought it was sent (this mount's clock). */
  sentAtMs: number;
}

export interface PollResult {
  session: string | null;
  revoked: number[];
}

/** A lease as the cache holds it: entries cached under it keep a reference. */
export interface LeaseRef {
  readonly key: string;
  readonly session: string;
  readonly id: number;
  revoked: boolean;
}

/** Revoked lease IDs remembered, so that a grant answered after its revocation is refused. */
const REVOKED_REMEMBERED_MAX = 16_384;
/** Pause after a failed poll. */
const POLL_RETRY_MS = 200;

export class MountLeases {
  private session: { id: string; validUntilMs: number; leaseMs: number } | null = null;
  private readonly byKey = new Map<string, LeaseRef>();
  private readonly byId = new Map<number, LeaseRef>();
  /** `${session}:${id}` of revoked leases, oldest first. */
  private readonly revokedIds = new Set<string>();
  private acks: number[] = [];
  /** The ID this mount asks for leases under: a new one each time it gives a session up,
   * so the primary never renews a session the mount no longer keeps (its revocations
   * then wait only for its lapse). */
  private identityCount = 0;
  private polling = false;
  private stopped = false;

  constructor(
    private readonly mountId: string,
    private readonly deps: {
      /** `ackSession`: the session the acks are of (the primary takes them for no other:
       * lease IDs of two primaries' tables may be the same numbers). */
      poll: (identity: string, acks: number[], ackSession: string) => Promise<PollResult>;
      /** Called with the keys whose leases were revoked or lost: drop what is cached. A
       * revocation is acknowledged only once what it returns has settled (the kernel's
       * copies are gone too). */
      dropped: (keys: string[]) => void | Promise<void>;
      logger: Logger;
      now?: () => number;
    },
  ) {}

  private now(): number {
    return this.deps.now ? this.deps.now() : performance.now();
  }

  /** What reads and ops name this mount as (the `lease` query, the dfs-mount header). */
  get identity(): string {
    return `${this.mountId}-${this.identityCount}`;
  }

  /** Whether an entry cached under `ref` may answer now. */
  valid(ref: LeaseRef | null | undefined): boolean {
    if (!ref || ref.revoked) return false;
    const s = this.session;
    return s !== null && s.id === ref.session && this.now() < s.validUntilMs;
  }

  /** How much longer the session counts on `ref`, in ms (0 when it does not). */
  remainingMs(ref: LeaseRef | null | undefined): number {
    return this.valid(ref) ? this.session!.validUntilMs - this.now() : 0;
  }

  /** The live lease on `key`, if any. */
  current(key: string): LeaseRef | null {
    const ref = this.byKey.get(key);
    return ref && this.valid(ref) ? ref : null;
  }

  /** Takes a grant that came with a read of `key`; returns the lease to cache under, or
   * null when it cannot be counted on (revoked already, or of a session given up). */
  granted(key: string, g: LeaseGrant, identity: string): LeaseRef | null {
    if (this.stopped || identity !== this.identity || this.revokedIds.has(`${g.session}:${g.lease}`)) return null;
    if (this.session === null || this.session.id !== g.session) {
      // A new session (a new primary, or the old one lapsed): nothing of the old holds.
      this.dropSession(false);
      this.session = { id: g.session, validUntilMs: g.sentAtMs + g.ms, leaseMs: g.ms };
    } else {
      this.session.validUntilMs = Math.max(this.session.validUntilMs, g.sentAtMs + g.ms);
    }
    let ref = this.byId.get(g.lease);
    if (!ref) {
      // An older lease on the key stays in byId until its own revocation arrives: what was
      // cached under it must die with it.
      ref = { key, session: g.session, id: g.lease, revoked: false };
      this.byKey.set(key, ref);
      this.byId.set(g.lease, ref);
    }
    this.startPolling();
    return ref;
  }

  /** Stops polling; every lease is given up. */
  stop(): void {
    this.stopped = true;
    this.dropSession(true);
  }

  /** Gives the session up; `renounce` when the primary may still keep it (then this
   * mount asks under a new identity from now on). */
  private dropSession(renounce: boolean): void {
    if (renounce && this.session !== null) this.identityCount++;
    const keys = [...this.byKey.keys()];
    for (const ref of this.byId.values()) ref.revoked = true;
    this.byKey.clear();
    this.byId.clear();
    this.acks = [];
    this.session = null;
    if (keys.length > 0) this.deps.dropped(keys);
  }

  /** Takes leases of `session` revoked out of use at once; resolves with their IDs once
   * what was cached under them is gone everywhere (then they may be acknowledged). IDs of
   * another session than this mount's are remembered only: a grant of them on its way is
   * then refused. */
  private revoke(session: string, ids: number[]): Promise<number[]> {
    const keys: string[] = [];
    for (const id of ids) {
      this.remember(`${session}:${id}`);
      const ref = this.session?.id === session ? this.byId.get(id) : undefined;
      if (!ref) continue;
      ref.revoked = true;
      this.byId.delete(id);
      if (this.byKey.get(ref.key) === ref) this.byKey.delete(ref.key);
      keys.push(ref.key);
    }
    const settled = keys.length > 0 ? this.deps.dropped(keys) : undefined;
    return settled ? settled.then(() => ids) : Promise.resolve(ids);
  }

  private remember(id: string): void {
    this.revokedIds.add(id);
    if (this.revokedIds.size > REVOKED_REMEMBERED_MAX) this.revokedIds.delete(this.revokedIds.values().next().value as string);
  }

  /** One poll at a time, for as long as there is a session. */
  private startPolling(): void {
    if (this.polling || this.stopped) return;
    this.polling = true;
    void this.pollLoop().finally(() => (this.polling = false));
  }

  private async pollLoop(): Promise<void> {
    while (!this.stopped && this.session !== null) {
      const session = this.session.id;
      const acks = this.acks;
      this.acks = [];
      const sentAtMs = this.now();
      let r: PollResult;
      try {
        r = await this.deps.poll(this.identity, acks, session);
      } catch (err) {
        // Not renewed: the session runs out on its own. The acks go again with the next
        // poll of their session (of another, they would name it; the primary sends what
        // they acknowledge again until it hears of them).
        if (this.session !== null && this.session.id === session) this.acks = acks.concat(this.acks);
        this.deps.logger.debug({ err: err instanceof Error ? err.message : String(err) }, 'lease poll failed');
        await new Promise((r) => setTimeout(r, POLL_RETRY_MS));
        continue;
      }
      // Revocations first, whatever became of the session meanwhile: they are of the
      // session the primary keeps for this identity, which may be one this mount took up
      // from a grant while the poll was out (the poll names the identity, not a session),
      // or one whose grant is still on its way; and the renewal below must not cover a
      // lease revoked in this answer.
      const revoking = r.session !== null && r.revoked.length > 0 ? this.revoke(r.session, r.revoked) : null;
      if (this.session === null || this.session.id !== session) {
        // Replaced meanwhile: the answer renews nothing. What it revoked of the session now
        // held is acknowledged with that session's next poll (acks of any other would be
        // dropped with it; the primary sends the IDs again until they are acknowledged).
        const ids = revoking ? await revoking : [];
        if (this.session !== null && this.session.id === r.session) this.acks.push(...ids);
        continue;
      }
      if (r.session !== session) {
        // The primary does not renew it: every lease of it is gone. With no session at
        // all, the answer may come from a primary unsure of its role, which keeps it.
        this.dropSession(r.session === null);
        break;
      }
      this.session.validUntilMs = Math.max(this.session.validUntilMs, sentAtMs + this.session.leaseMs);
      if (revoking) this.acks.push(...(await revoking));
    }
  }
}
