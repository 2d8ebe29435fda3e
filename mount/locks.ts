/*
 * The mount's side of cluster-wide advisory locks (docs/locks.md): fcntl/lockf byte-range
 * locks and flock, as libfuse's lock and flock operations deliver them (fuse-native patch
 * item 17), sent to the cluster's lock table (proxy/locks.ts) under this mount's session.
 *
 * - The session is made at the first lock request and renewed every
 *   LOCK_SESSION_RENEW_MS; the cluster keeps a session's locks LOCK_SESSION_MS past its
 *   last renewal. The mount counts its session valid until LOCK_SESSION_MS after it *sent*
 *   the renewal that succeeded (Redis counts from when it got it), so it never believes in
 *   a lock the cluster has already let go. A renewal that finds the session gone (the
 *   mount was cut off longer than that) starts a new one: the old locks are lost, as NFS
 *   loses them after its lease, and it is logged.
 * - A blocking request (F_SETLKW, flock without LOCK_NB) is one round of up to
 *   LOCK_WAIT_ROUND_MS at the proxy; a round that ends without the lock answers
 *   LOCK_WAIT, and the FUSE thread asks again unless the caller was interrupted (EINTR).
 * - libfuse unlocks the whole file for the closing process at every close (POSIX: any
 *   close drops the process's locks) and sends flock's unlock at the last close of an open
 *   file description. Both are answered here without a round trip when this mount never
 *   took such a lock for that owner on that file.
 * - Data follows the lock, as NFS does it (close-to-open extended to locks): before any lock
 *   change the file's buffered writes are committed (the next holder sees them), and after
 *   a lock is granted what this mount and the kernel cache of the file's data is dropped.
 */
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { DfsError, fsError } from '../common/errors';
import { LOCK_END_MAX, LOCK_SESSION_MS, LOCK_SESSION_RENEW_MS, type LockType } from '../common/locks';
import type { Logger } from '../common/log';
import { Deadline } from './deadline';

/** What a lock handler answers when a blocking request's round ended without the lock
 * (patch item 17): the FUSE thread asks again unless the caller was interrupted. */
export const LOCK_WAIT = 1;
/** How long one round of a blocking request waits at the proxy. Also how long an
 * interrupted waiter may take to see its EINTR, less a round trip. */
export const LOCK_WAIT_ROUND_MS = 500;
/** The deadline of a session renewal. */
const SESSION_RENEW_DEADLINE_MS = LOCK_SESSION_MS - LOCK_SESSION_RENEW_MS;

// fcntl(2) and flock(2) constants (Linux, every architecture dfs runs on).
export const F_GETLK = 5;
export const F_SETLK = 6;
export const F_SETLKW = 7;
export const F_RDLCK = 0;
export const F_WRLCK = 1;
export const F_UNLCK = 2;
export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

export interface LockClient {
  locks(api: 'locks' | 'locks/session', body: Record<string, unknown>, deadline: Deadline): Promise<unknown>;
}

/** What the file system does around a lock change (DfsFileSystem): commit the file's
 * buffered writes before, drop what is cached of its data after a grant. */
export interface LockedFileHooks {
  beforeChange(fd: number, d: Deadline): Promise<void>;
  afterGrant(fd: number, kernelPath: string): Promise<void>;
}

/** A lock as libfuse gives it: len 0 means to the end of the file. */
export interface FuseFlock {
  type: number;
  start: number;
  len: number;
  pid: number;
}

interface LockAnswer {
  granted: boolean;
  conflict?: { type: 'r' | 'w'; start: number; end: number; pid: number } | null;
}

export class MountLocks {
  private session: string | null = null;
  private validUntilMs = 0;
  private starting: Promise<void> | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  /** Lock owners that may hold a lock of a kind on a file (cluster inode number), here. */
  private readonly held = { posix: new Map<number, Set<string>>(), flock: new Map<number, Set<string>>() };
  private readonly description: string;
  /** Unlocks under way, by file: a request on the file waits for them, so that a lock
   * dropped at a close here is gone before the next request from here is decided. */
  private readonly unlocking = new Map<number, Set<Promise<unknown>>>();

  constructor(
    private readonly client: LockClient,
    private readonly logger: Logger,
    /** The open file's cluster inode number and its path now. */
    private readonly fileOf: (fd: number) => { ino: number; path: string },
    private readonly hooks: LockedFileHooks,
  ) {
    this.description = `${hostname()} dfs-mount pid ${process.pid}`;
  }

  /** fcntl locks: F_GETLK answers the lock in the way (type F_UNLCK: none). */
  async lock(kernelPath: string, fd: number, cmd: number, fl: FuseFlock, owner: string, d: Deadline): Promise<FuseFlock | typeof LOCK_WAIT | undefined> {
    if (cmd !== F_GETLK && cmd !== F_SETLK && cmd !== F_SETLKW) throw fsError('EINVAL', `lock command ${cmd}`);
    const type = fcntlType(fl.type);
    const { ino, path } = this.fileOf(fd);
    const start = fl.start;
    const end = fl.len === 0 ? LOCK_END_MAX : Math.min(LOCK_END_MAX, start + fl.len);
    if (!Number.isSafeInteger(start) || start < 0 || start >= LOCK_END_MAX) throw fsError('EOVERFLOW', 'a lock range past 2^53 bytes');
    if (cmd === F_GETLK) {
      if (type === 'u') throw fsError('EINVAL', 'F_GETLK of F_UNLCK');
      const a = await this.ask({ cmd: 'get', kind: 'posix', ino, path, owner, type, start, end, pid: fl.pid }, d);
      if (!a.conflict) return { type: F_UNLCK, start: fl.start, len: fl.len, pid: 0 };
      const c = a.conflict;
      return { type: c.type === 'w' ? F_WRLCK : F_RDLCK, start: c.start, len: c.end >= LOCK_END_MAX ? 0 : c.end - c.start, pid: c.pid };
    }
    return this.set('posix', kernelPath, path, fd, ino, owner, type, start, end, fl.pid, cmd === F_SETLKW, d);
  }

  /** flock(2): op is the LOCK_* bits. */
  async flock(kernelPath: string, fd: number, op: number, owner: string, pid: number, d: Deadline): Promise<typeof LOCK_WAIT | undefined> {
    const what = op & (LOCK_SH | LOCK_EX | LOCK_UN);
    const type: LockType | null = what === LOCK_SH ? 'r' : what === LOCK_EX ? 'w' : what === LOCK_UN ? 'u' : null;
    if (type === null) throw fsError('EINVAL', `flock operation ${op}`);
    const { ino, path } = this.fileOf(fd);
    const r = await this.set('flock', kernelPath, path, fd, ino, owner, type, 0, LOCK_END_MAX, pid, (op & LOCK_NB) === 0 && type !== 'u', d);
    return r;
  }

  private async set(
    kind: 'posix' | 'flock',
    kernelPath: string,
    path: string,
    fd: number,
    ino: number,
    owner: string,
    type: LockType,
    start: number,
    end: number,
    pid: number,
    wait: boolean,
    d: Deadline,
  ): Promise<typeof LOCK_WAIT | undefined> {
    const owners = this.held[kind].get(ino);
    // An unlock by an owner that took nothing here: every close sends one.
    if (type === 'u' && !owners?.has(owner)) return undefined;
    // The round's wait is taken from the deadline as the request leaves.
    const send = () => this.ask({ cmd: 'set', kind, ino, path, owner, type, start, end, pid, waitMs: wait ? Math.min(LOCK_WAIT_ROUND_MS, Math.max(0, d.remainingMs() - 1_000)) : 0 }, d);
    let asked: Promise<LockAnswer>;
    if (type === 'u') {
      // Counted as under way from the moment it arrives, before its writes are committed:
      // a request that arrives after it (a flock after the close that dropped the old one)
      // must not be decided before it.
      asked = this.hooks.beforeChange(fd, d).then(send);
      let under = this.unlocking.get(ino);
      if (!under) this.unlocking.set(ino, (under = new Set()));
      under.add(asked);
      void asked.then(
        () => this.unlockDone(ino, asked),
        () => this.unlockDone(ino, asked),
      );
    } else {
      await this.hooks.beforeChange(fd, d);
      if (!owners) this.held[kind].set(ino, new Set([owner]));
      else owners.add(owner);
      const under = this.unlocking.get(ino);
      if (under) await Promise.allSettled([...under]);
      asked = send();
    }
    const a = await asked;
    if (type === 'u' && start === 0 && end === LOCK_END_MAX) {
      owners?.delete(owner);
      if (owners?.size === 0) this.held[kind].delete(ino);
    }
    if (a.granted) {
      if (type !== 'u') await this.hooks.afterGrant(fd, kernelPath);
      return undefined;
    }
    if (wait) return LOCK_WAIT;
    throw fsError(kind === 'posix' ? 'EAGAIN' : 'EWOULDBLOCK', 'the lock is held elsewhere');
  }

  private unlockDone(ino: number, p: Promise<unknown>): void {
    const under = this.unlocking.get(ino);
    under?.delete(p);
    if (under?.size === 0) this.unlocking.delete(ino);
  }

  /** Sends a lock request under a live session. */
  private async ask(body: Record<string, unknown>, d: Deadline): Promise<LockAnswer> {
    await this.ensureSession(d);
    const a = (await this.client.locks('locks', { ...body, session: this.session }, d)) as LockAnswer;
    if (typeof a !== 'object' || a === null || typeof a.granted !== 'boolean') throw new DfsError('INTERNAL', 'malformed lock answer');
    return a;
  }

  private async ensureSession(d: Deadline): Promise<void> {
    while (!this.session || performance.now() >= this.validUntilMs) {
      this.starting ??= this.startSession(d).finally(() => (this.starting = null));
      await this.starting;
    }
  }

  private async startSession(d: Deadline): Promise<void> {
    if (this.session) {
      // Not renewed in time (the cluster was out of reach): the cluster has let it lapse.
      this.logger.error({ session: this.session }, 'the lock session lapsed (no renewal reached the cluster in time): the locks it held are gone');
      this.forgetHeld();
      this.session = null;
    }
    const id = randomUUID();
    const sentMs = performance.now();
    const r = (await this.client.locks('locks/session', { session: id, mount: this.description, ms: LOCK_SESSION_MS, create: true }, d)) as { ok?: boolean };
    if (r?.ok !== true) throw new DfsError('UNAVAILABLE', 'the cluster did not start a lock session');
    this.session = id;
    this.validUntilMs = sentMs + LOCK_SESSION_MS;
    this.scheduleRenewal();
  }

  private scheduleRenewal(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(() => void this.renew(), LOCK_SESSION_RENEW_MS);
    this.renewTimer.unref();
  }

  private async renew(): Promise<void> {
    const id = this.session;
    if (!id) return;
    const d = new Deadline(SESSION_RENEW_DEADLINE_MS);
    const sentMs = performance.now();
    try {
      const r = (await this.client.locks('locks/session', { session: id, mount: this.description, ms: LOCK_SESSION_MS }, d)) as { ok?: boolean };
      if (this.session !== id) return;
      if (r?.ok === true) {
        this.validUntilMs = sentMs + LOCK_SESSION_MS;
      } else {
        this.logger.error({ session: id }, 'the lock session lapsed (the mount was cut off from the cluster): the locks it held are gone');
        this.session = null;
        this.forgetHeld();
        return;
      }
    } catch (err) {
      this.logger.warn({ session: id, err: (err as Error).message }, 'could not renew the lock session');
    } finally {
      d.dispose();
    }
    if (this.session === id) this.scheduleRenewal();
  }

  private forgetHeld(): void {
    this.held.posix.clear();
    this.held.flock.clear();
  }

  /** Ends the session (a clean unmount): every lock it held is free at once. */
  async close(timeoutMs: number): Promise<void> {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    const id = this.session;
    this.session = null;
    if (!id) return;
    const d = new Deadline(timeoutMs);
    try {
      await this.client.locks('locks/session', { session: id, close: true }, d);
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not end the lock session; its locks go when it lapses');
    } finally {
      d.dispose();
    }
  }
}

function fcntlType(t: number): LockType {
  if (t === F_RDLCK) return 'r';
  if (t === F_WRLCK) return 'w';
  if (t === F_UNLCK) return 'u';
  throw fsError('EINVAL', `lock type ${t}`);
}
