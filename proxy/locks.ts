/*
 * The cluster's advisory lock table, kept in Redis (docs/locks.md), and the proxy routes
 * that serve it to mounts.
 *
 * Data flow: a mount's lock request (POST /v1/locks) reaches any proxy; the proxy reads the
 * file's table (`dfs:locks:<ino>`, a JSON list, common/locks.ts) and whether each session
 * in it is alive (`dfs:lock-session:<id>`, a key with a TTL the mount renews), applies the
 * request with the pure core, and writes the new table back with a compare-and-set script
 * that also checks, atomically, that the requester's own session is still alive. A lost
 * race (another proxy changed the table between the read and the write) starts again. A
 * request that may wait (F_SETLKW, flock without LOCK_NB) is tried again within one round
 * (`waitMs`, at most LOCK_WAIT_MS_MAX) whenever the file's table changes (the script
 * publishes the inode number on LOCKS_CHANGED_CHANNEL, and a subscriber connection of this
 * proxy wakes the requests waiting on it), and every WAIT_POLL_MS besides (a session that
 * lapses publishes nothing); the mount asks for round after round until it is granted or
 * the caller is interrupted.
 *
 * Redis is the one arbiter: proxies keep no lock state, so a proxy, the leader proxy or the
 * primary storage node failing over changes nothing about who holds what, and no lock is
 * ever granted twice. Session lapses are measured by Redis's own clock (PX TTLs).
 */
import type { Hono, Context } from 'hono';
import type { Redis } from 'ioredis';
import { DfsError, fsError } from '../common/errors';
import {
  applyLockRequest,
  decodeLockTable,
  LockTableError,
  encodeLockTable,
  findConflict,
  lockRequestProblem,
  pruneLapsed,
  LOCK_SESSION_MS,
  LOCK_SESSION_MS_MAX,
  LOCK_SESSION_MS_MIN,
  LOCK_WAIT_MS_MAX,
  type HeldLock,
  type LockRequest,
} from '../common/locks';
import { readBody } from '../common/http';
import { LOCK_TABLE_KEY_PREFIX, LOCKS_CHANGED_CHANNEL, lockSessionKey, lockTableKey } from '../common/redis-keys';
import type { Credential } from '../common/credential';
import { confinePath } from '../common/credential';

const LOCK_TABLE_PATTERN = `${LOCK_TABLE_KEY_PREFIX}*`;

/** Attempts at a compare-and-set before the request gives up (UNAVAILABLE). */
const CAS_ATTEMPTS_MAX = 64;
/** The longest a waiting request goes without trying again when no change of its file's
 * table was heard of (a holder's session lapsing publishes nothing). */
const WAIT_POLL_MS = 100;
/** Requests waiting on one proxy, at most; past it a wait is refused (UNAVAILABLE). */
const WAITERS_MAX = 10_000;
/** The most lock tables `dfs status` lists. */
export const LOCK_TABLES_LISTED_MAX = 1_000;
/** The body of a lock request, at most. */
const LOCK_BODY_BYTES_MAX = 8 * 1024;

/** KEYS: table, requester's session; ARGV: the table as read ('' for none), the new one
 * ('' to delete), whether the requester's session must be alive ('1'), the channel and the
 * inode number to publish. Answers 1 when written, 0 when the table changed meanwhile, -1
 * when the requester's session lapsed. */
const CAS_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if cur == false then cur = '' end
if cur ~= ARGV[1] then return 0 end
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
`;

export interface LockAnswer {
  granted: boolean;
  /** When refused: the lock in the way (F_GETLK reports it). */
  conflict?: { type: 'r' | 'w'; start: number; end: number; pid: number } | null;
}

export interface HeldLockView extends HeldLock {
  ino: number;
  /** The session's description: the mount's host and identity. */
  mount: string;
}

export class LockStore {
  /** Wake-ups of the requests waiting here, by file. */
  private readonly waiters = new Map<number, Set<() => void>>();
  private waiterCount = 0;

  /** `events`: a connection of its own for the change notices (a subscribed connection
   * takes no other command); none: waiting requests only poll. */
  constructor(
    private readonly redis: Redis,
    events?: Redis,
  ) {
    redis.defineCommand('dfsLockCas', { numberOfKeys: 2, lua: CAS_SCRIPT });
    if (events) {
      events.on('message', (channel: string, message: string) => {
        if (channel === LOCKS_CHANGED_CHANNEL) this.wake(Number(message));
      });
      // Subscribed again by ioredis after a reconnect; meanwhile waits poll.
      events.subscribe(LOCKS_CHANGED_CHANNEL).catch(() => undefined);
    }
  }

  private wake(ino: number): void {
    const set = this.waiters.get(ino);
    if (!set) return;
    this.waiters.delete(ino);
    for (const wake of set) wake();
  }

  /** `changed` resolves when `ino`'s table changes, or after `ms`, or at `cancel()`. */
  private changeOf(ino: number, ms: number): { changed: Promise<void>; cancel: () => void } {
    if (this.waiterCount >= WAITERS_MAX) throw new DfsError('UNAVAILABLE', 'too many lock requests waiting on this proxy');
    let done = (): void => undefined;
    const changed = new Promise<void>((resolve) => {
      let set = this.waiters.get(ino);
      if (!set) this.waiters.set(ino, (set = new Set()));
      this.waiterCount++;
      let settled = false;
      done = () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const now = this.waiters.get(ino);
        now?.delete(done);
        if (now?.size === 0) this.waiters.delete(ino);
        this.waiterCount--;
        resolve();
      };
      const timer = setTimeout(done, ms);
      set.add(done);
    });
    return { changed, cancel: () => done() };
  }

  /** Starts (create) or renews a session for `ms`; false when a renewal found it lapsed. */
  async session(session: string, description: string, ms: number, create: boolean): Promise<boolean> {
    const key = lockSessionKey(session);
    const r = create ? await this.redis.set(key, description, 'PX', ms, 'NX') : await this.redis.set(key, description, 'PX', ms, 'XX');
    return r === 'OK';
  }

  /** Ends a session at once (a clean unmount): its locks are free. */
  async endSession(session: string): Promise<void> {
    await this.redis.del(lockSessionKey(session));
  }

  private async aliveOf(locks: readonly HeldLock[]): Promise<(s: string) => boolean> {
    const sessions = [...new Set(locks.map((l) => l.session))];
    if (sessions.length === 0) return () => true;
    const found = await this.redis.mget(...sessions.map(lockSessionKey));
    const alive = new Set(sessions.filter((_, i) => found[i] !== null));
    return (s) => alive.has(s);
  }

  /** F_GETLK: the first lock of another owner in the way of `r`, or none. */
  async test(ino: number, r: LockRequest): Promise<LockAnswer> {
    const locks = tableAt(lockTableKey(ino), await this.redis.get(lockTableKey(ino)));
    const conflict = findConflict(locks, r, await this.aliveOf(locks));
    return conflict ? { granted: false, conflict: conflictView(conflict) } : { granted: true };
  }

  /** One try at `r`: granted, or refused with the lock in the way. */
  async tryOnce(ino: number, r: LockRequest): Promise<LockAnswer> {
    const key = lockTableKey(ino);
    for (let attempt = 0; attempt < CAS_ATTEMPTS_MAX; attempt++) {
      const raw = await this.redis.get(key);
      const locks = tableAt(key, raw);
      const alive = await this.aliveOf(locks);
      const out = applyLockRequest(locks, r, alive);
      if (out.changed) {
        const next = out.locks.length === 0 ? '' : encodeLockTable(out.locks);
        const mustLive = out.granted && r.type !== 'u' ? '1' : '0';
        const written = (await (this.redis as unknown as DfsLockRedis).dfsLockCas(key, lockSessionKey(r.session), raw ?? '', next, mustLive, LOCKS_CHANGED_CHANNEL, String(ino))) as number;
        if (written === 0) continue;
        if (written === -1) throw fsError('ENOLCK', 'the mount session lapsed: its locks are gone');
      } else if (out.granted && r.type !== 'u' && !(await this.redis.exists(lockSessionKey(r.session)))) {
        throw fsError('ENOLCK', 'the mount session lapsed: its locks are gone');
      }
      if (out.granted) return { granted: true };
      if (out.conflict === null) throw fsError('ENOLCK', 'too many locks on one file');
      return { granted: false, conflict: conflictView(out.conflict) };
    }
    throw new DfsError('UNAVAILABLE', 'the lock table kept changing: try again');
  }

  /** `r`, tried again at each change of the file's table (and every WAIT_POLL_MS) until
   * granted or `waitMs` has passed. */
  async request(ino: number, r: LockRequest, waitMs: number): Promise<LockAnswer> {
    const endMs = performance.now() + waitMs;
    for (;;) {
      // Listening before the try: a change between the try and the wait is not missed.
      const leftMs = endMs - performance.now();
      const change = leftMs > 0 ? this.changeOf(ino, Math.min(WAIT_POLL_MS, leftMs)) : null;
      let a: LockAnswer;
      try {
        a = await this.tryOnce(ino, r);
      } catch (err) {
        change?.cancel();
        throw err;
      }
      if (a.granted || change === null) {
        change?.cancel();
        return a;
      }
      await change.changed;
    }
  }

  /** The locks held now (of live sessions), for `dfs status`: at most
   * LOCK_TABLES_LISTED_MAX files. */
  async list(): Promise<{ locks: HeldLockView[]; truncated: boolean }> {
    const keys: string[] = [];
    let cursor = '0';
    do {
      const [next, batch] = await this.redis.scan(cursor, 'MATCH', LOCK_TABLE_PATTERN, 'COUNT', 500);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0' && keys.length < LOCK_TABLES_LISTED_MAX);
    const picked = keys.slice(0, LOCK_TABLES_LISTED_MAX);
    const raws = picked.length ? await this.redis.mget(...picked) : [];
    const all: { ino: number; lock: HeldLock }[] = [];
    raws.forEach((raw, i) => {
      const ino = Number(picked[i]!.slice(LOCK_TABLE_KEY_PREFIX.length));
      for (const lock of tableAt(picked[i]!, raw)) all.push({ ino, lock });
    });
    const sessions = [...new Set(all.map((x) => x.lock.session))];
    const descs = sessions.length ? await this.redis.mget(...sessions.map(lockSessionKey)) : [];
    const descOf = new Map(sessions.map((s, i) => [s, descs[i]]));
    const live = pruneLapsed(
      all.map((x) => x.lock),
      (s) => descOf.get(s) != null,
    );
    const liveSet = new Set(live);
    const locks = all.filter((x) => liveSet.has(x.lock)).map((x) => ({ ...x.lock, ino: x.ino, mount: descOf.get(x.lock.session) ?? '' }));
    return { locks, truncated: keys.length > picked.length || cursor !== '0' };
  }
}

interface DfsLockRedis {
  dfsLockCas(table: string, session: string, old: string, next: string, mustLive: string, channel: string, ino: string): Promise<unknown>;
}

/** A table read from Redis, checked: a broken one is refused with the key named. */
function tableAt(key: string, raw: string | null): HeldLock[] {
  try {
    return decodeLockTable(raw);
  } catch (err) {
    if (err instanceof LockTableError) throw new DfsError('UNAVAILABLE', `Redis holds a broken lock table at ${key}: ${err.message}`);
    throw err;
  }
}

function conflictView(l: HeldLock): { type: 'r' | 'w'; start: number; end: number; pid: number } {
  return { type: l.type, start: l.start, end: l.end, pid: l.pid };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const SESSION_ID = /^[A-Za-z0-9-]{1,64}$/;

/**
 * The lock routes, for mounts (and admins): POST /v1/locks/session { session, mount, ms,
 * create } starts or renews a session, { session, close: true } ends one;
 * POST /v1/locks { ino, path, kind, cmd: 'get'|'set', session, owner, type, start, end,
 * pid, waitMs } asks. `credentialOf` gives the caller's credential: the path shown is
 * confined to its subtree.
 */
export function installLockRoutes(app: Hono, store: LockStore, credentialOf: (c: Context) => Credential): void {
  app.post('/v1/locks/session', async (c) => {
    const body = parseJson(await readBody(c, LOCK_BODY_BYTES_MAX));
    const session = body.session;
    if (typeof session !== 'string' || !SESSION_ID.test(session)) throw new DfsError('BAD_REQUEST', 'session must be 1 to 64 letters, digits or -');
    const ms = body.ms ?? LOCK_SESSION_MS;
    if (typeof ms !== 'number' || !Number.isInteger(ms) || ms < LOCK_SESSION_MS_MIN || ms > LOCK_SESSION_MS_MAX) {
      throw new DfsError('BAD_REQUEST', `ms must be a whole number from ${LOCK_SESSION_MS_MIN} to ${LOCK_SESSION_MS_MAX}`);
    }
    if (body.close === true) {
      await store.endSession(session);
      return c.json({ ok: true });
    }
    const mount = typeof body.mount === 'string' ? body.mount.slice(0, 200) : '';
    const ok = await store.session(session, mount, ms, body.create === true);
    return c.json({ ok });
  });
  app.post('/v1/locks', async (c) => {
    const body = parseJson(await readBody(c, LOCK_BODY_BYTES_MAX));
    const ino = body.ino;
    if (typeof ino !== 'number' || !Number.isSafeInteger(ino) || ino < 1) throw new DfsError('BAD_REQUEST', 'ino must be a positive whole number');
    if (typeof body.path !== 'string') throw new DfsError('BAD_REQUEST', 'path must be a string');
    if (typeof body.session !== 'string' || !SESSION_ID.test(body.session)) throw new DfsError('BAD_REQUEST', 'session must be 1 to 64 letters, digits or -');
    const r: LockRequest = {
      kind: body.kind as LockRequest['kind'],
      session: body.session,
      owner: body.owner as string,
      type: body.type as LockRequest['type'],
      start: body.start as number,
      end: body.end as number,
      pid: body.pid as number,
      path: confinePath(credentialOf(c), body.path),
    };
    const problem = lockRequestProblem(r);
    if (problem) throw new DfsError('BAD_REQUEST', problem);
    if (body.cmd === 'get') return c.json(await store.test(ino, r));
    if (body.cmd !== 'set') throw new DfsError('BAD_REQUEST', 'cmd must be get or set');
    const waitMs = body.waitMs ?? 0;
    if (typeof waitMs !== 'number' || !Number.isInteger(waitMs) || waitMs < 0 || waitMs > LOCK_WAIT_MS_MAX) {
      throw new DfsError('BAD_REQUEST', `waitMs must be a whole number from 0 to ${LOCK_WAIT_MS_MAX}`);
    }
    return c.json(await store.request(ino, r, waitMs));
  });
}

function parseJson(raw: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new DfsError('BAD_REQUEST', 'the body must be JSON');
  }
  if (!isObject(v)) throw new DfsError('BAD_REQUEST', 'the body must be a JSON object');
  return v;
}
