/*
 * Advisory file locks shared by every mount (docs/locks.md): the pure core. A file's lock
 * table is a list of held locks; a request goes in with the set of mount sessions still
 * alive and comes out granted (with the new table) or refused (with the lock in the way).
 * No I/O, no clock: proxy/locks.ts keeps the tables in Redis and says which sessions live.
 *
 * The semantics are Linux's between processes on one machine:
 * - POSIX locks (fcntl F_SETLK, lockf) belong to a lock owner (the kernel's per-process
 *   id, FUSE's lock_owner) in a mount session, cover byte ranges, and are shared ('r') or
 *   exclusive ('w'). A request replaces whatever its owner held over its range (upgrade,
 *   downgrade, unlock of a part: the rest is split off), and adjacent or overlapping ranges
 *   of one owner and type merge (fcntl(2), posix_lock_inode in fs/locks.c). A refused
 *   request changes nothing.
 * - BSD locks (flock) belong to an open file description and cover the whole file. A
 *   conversion is not atomic, as on Linux (flock_lock_inode): the old lock goes first, and
 *   stays gone if the new one is refused.
 * - The two kinds never conflict with each other (Linux keeps them apart).
 */

/** A range end meaning "to the end of the file, however far it grows" (len 0 in fcntl). */
export const LOCK_END_MAX = Number.MAX_SAFE_INTEGER;
/** The most locks one file's table holds; past it a new lock is refused (ENOLCK). */
export const LOCKS_PER_FILE_MAX = 4_096;
/** The longest a lock request waits, in one round, for a conflicting lock to go. */
export const LOCK_WAIT_MS_MAX = 1_000;
/** How long a mount session keeps its locks past its last renewal (the mount renews it
 * every LOCK_SESSION_RENEW_MS): a mount that dies loses its locks this long after. */
export const LOCK_SESSION_MS = 5_000;
export const LOCK_SESSION_RENEW_MS = 1_000;
/** What a session's length may be set to. */
export const LOCK_SESSION_MS_MIN = 1_000;
export const LOCK_SESSION_MS_MAX = 60_000;

export type LockKind = 'posix' | 'flock';
/** Shared, exclusive, or unlock. */
export type LockType = 'r' | 'w' | 'u';

export interface HeldLock {
  kind: LockKind;
  /** The mount session holding it (a lapsed session's locks count for nothing). */
  session: string;
  /** The lock owner within the session: FUSE's lock_owner, 16 hex digits. */
  owner: string;
  type: 'r' | 'w';
  /** [start, end): end LOCK_END_MAX for "to the end of the file". */
  start: number;
  end: number;
  /** The process that took it (F_GETLK reports it). */
  pid: number;
  /** The path it was taken through, for `dfs status`. */
  path: string;
}

export interface LockRequest {
  kind: LockKind;
  session: string;
  owner: string;
  type: LockType;
  start: number;
  end: number;
  pid: number;
  path: string;
}

export type LockOutcome =
  | { granted: true; locks: HeldLock[]; changed: boolean }
  | { granted: false; conflict: HeldLock; locks: HeldLock[]; changed: boolean }
  | { granted: false; conflict: null; full: true; locks: HeldLock[]; changed: boolean };

/** Whether a request's fields are well formed (the proxy checks what the wire brings). */
export function lockRequestProblem(r: LockRequest): string | null {
  if (r.kind !== 'posix' && r.kind !== 'flock') return 'kind must be posix or flock';
  if (r.type !== 'r' && r.type !== 'w' && r.type !== 'u') return 'type must be r, w or u';
  if (!/^[0-9a-f]{16}$/.test(r.owner)) return 'owner must be 16 hex digits';
  if (!Number.isSafeInteger(r.start) || !Number.isSafeInteger(r.end) || r.start < 0 || r.end <= r.start || r.end > LOCK_END_MAX) {
    return 'the range must be whole numbers with 0 <= start < end <= 2^53 - 1';
  }
  if (!Number.isSafeInteger(r.pid) || r.pid < 0) return 'pid must be a whole number';
  return null;
}

function sameOwner(a: { kind: LockKind; session: string; owner: string }, b: { kind: LockKind; session: string; owner: string }): boolean {
  return a.kind === b.kind && a.session === b.session && a.owner === b.owner;
}

function overlaps(a: { start: number; end: number }, b: { start: number; end: number }): boolean {
  return a.start < b.end && b.start < a.end;
}

/** The lock of another owner, of a live session, that `r` (not an unlock) conflicts with,
 * the one starting first when there are several (Linux keeps each owner's locks in order
 * and reports the first it finds); or null. */
export function findConflict(locks: readonly HeldLock[], r: LockRequest, alive: (session: string) => boolean): HeldLock | null {
  if (r.type === 'u') return null;
  let first: HeldLock | null = null;
  for (const l of locks) {
    if (l.kind !== r.kind || sameOwner(l, r) || !alive(l.session)) continue;
    if (!overlaps(l, r)) continue;
    if ((l.type === 'w' || r.type === 'w') && (first === null || l.start < first.start)) first = l;
  }
  return first;
}

/** `locks` without the given owner's POSIX locks over [start, end): what lies outside the
 * range is kept, split in two when the range falls inside one lock. */
function cutOwner(locks: readonly HeldLock[], r: LockRequest): HeldLock[] {
  const out: HeldLock[] = [];
  for (const l of locks) {
    if (!sameOwner(l, r) || !overlaps(l, r)) {
      out.push(l);
      continue;
    }
    if (l.start < r.start) out.push({ ...l, end: r.start });
    if (l.end > r.end) out.push({ ...l, start: r.end });
  }
  return out;
}

/** Inserts `add` and merges it with the owner's locks of the same type it touches. */
function insertMerged(locks: HeldLock[], add: HeldLock): HeldLock[] {
  let merged = add;
  const out: HeldLock[] = [];
  for (const l of locks) {
    if (sameOwner(l, merged) && l.type === merged.type && l.start <= merged.end && merged.start <= l.end) {
      merged = { ...merged, start: Math.min(l.start, merged.start), end: Math.max(l.end, merged.end) };
    } else {
      out.push(l);
    }
  }
  out.push(merged);
  return out;
}

/** Drops the locks of sessions no longer alive (they count for nothing already). */
export function pruneLapsed(locks: readonly HeldLock[], alive: (session: string) => boolean): HeldLock[] {
  return locks.filter((l) => alive(l.session));
}

/**
 * Applies the request `r` to a file's table. `alive` says which sessions still hold their
 * locks; the locks of the others are dropped on the way.
 */
export function applyLockRequest(table: readonly HeldLock[], r: LockRequest, alive: (session: string) => boolean): LockOutcome {
  const before = pruneLapsed(table, alive);
  let changed = before.length !== table.length;
  if (r.kind === 'flock') {
    const mine = before.find((l) => sameOwner(l, r));
    if (mine && mine.type === r.type) return { granted: true, locks: before, changed };
    // As Linux: the old lock goes first, whatever comes of the new one.
    const without = mine ? before.filter((l) => l !== mine) : before;
    changed ||= mine !== undefined;
    if (r.type === 'u') return { granted: true, locks: without, changed };
    const conflict = findConflict(without, r, alive);
    if (conflict) return { granted: false, conflict, locks: without, changed };
    if (without.length >= LOCKS_PER_FILE_MAX) return { granted: false, conflict: null, full: true, locks: without, changed };
    return { granted: true, locks: [...without, { ...r, type: r.type, start: 0, end: LOCK_END_MAX }], changed: true };
  }
  const conflict = findConflict(before, r, alive);
  if (conflict) return { granted: false, conflict, locks: before, changed };
  const cut = cutOwner(before, r);
  if (r.type === 'u') return { granted: true, locks: cut, changed: changed || !sameLocks(cut, before) };
  const after = insertMerged(cut, { ...r, type: r.type });
  if (after.length > LOCKS_PER_FILE_MAX) return { granted: false, conflict: null, full: true, locks: before, changed };
  return { granted: true, locks: after, changed: changed || !sameLocks(after, before) };
}

function sameLocks(a: readonly HeldLock[], b: readonly HeldLock[]): boolean {
  if (a.length !== b.length) return false;
  const key = (l: HeldLock) => `${l.kind}|${l.session}|${l.owner}|${l.type}|${l.start}|${l.end}`;
  const set = new Set(a.map(key));
  return b.every((l) => set.has(key(l)));
}

/** Parses a stored table, checking every field (what comes from Redis is validated):
 * anything else is a LockTableError naming what is wrong. */
export function decodeLockTable(raw: string | null): HeldLock[] {
  if (raw === null) return [];
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch {
    throw new LockTableError('a lock table is not JSON');
  }
  if (!Array.isArray(v) || v.length > LOCKS_PER_FILE_MAX) throw new LockTableError(`a lock table must be a JSON array of at most ${LOCKS_PER_FILE_MAX} locks`);
  return v.map((x: unknown) => {
    const l = x as Partial<HeldLock> | null;
    const problem =
      typeof l !== 'object' || l === null
        ? 'not an object'
        : typeof l.session !== 'string' || typeof l.path !== 'string'
          ? 'session and path must be strings'
          : (l.type as string) === 'u'
            ? 'a held lock cannot be an unlock'
            : lockRequestProblem(l as LockRequest);
    if (problem) throw new LockTableError(`a held lock: ${problem}`);
    return l as HeldLock;
  });
}

export class LockTableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockTableError';
  }
}

export function encodeLockTable(locks: readonly HeldLock[]): string {
  return JSON.stringify(locks);
}
