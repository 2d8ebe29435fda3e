/*
 * Deadlines: every FUSE call gets one when it arrives (DESIGN.md, The mount: a cluster
 * that is down gives EIO, not a hung shell), and every HTTP attempt, retry and wait inside
 * the call is bounded by it. A Deadline is a point in time plus an AbortSignal that fires
 * at that point, so that an in-flight request is cancelled rather than left running.
 */
import { DfsError } from '../common/errors';

export class Deadline {
  readonly atMs: number;
  /** Who made the FUSE call this deadline bounds, when known: its requests carry that
   * identity to the proxy (x-dfs-uid/gid/groups, common/credential.ts). */
  caller: { uid: number; gid: number; groups: number[] } | null = null;
  private controller: AbortController | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(timeoutMs: number, private readonly now: () => number = Date.now) {
    this.atMs = now() + timeoutMs;
  }

  /** The signal that aborts at the deadline. It is made on first use, so a call answered
   * from a cache costs no timer. */
  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = new AbortController();
      this.controller = controller;
      const ms = this.remainingMs();
      this.timer = setTimeout(() => controller.abort(new DfsError('TIMEOUT', 'deadline passed')), ms);
      // A pending deadline must not keep the process alive on its own.
      this.timer.unref();
    }
    return this.controller.signal;
  }

  remainingMs(): number {
    return Math.max(0, this.atMs - this.now());
  }

  expired(): boolean {
    return this.remainingMs() <= 0 || (this.controller?.signal.aborted ?? false);
  }

  /** Stops the timer once the call is answered. */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  throwIfExpired(): void {
    if (this.expired()) throw new DfsError('TIMEOUT', 'deadline passed');
  }
}

/** Runs `p` but gives up with TIMEOUT when the deadline passes first (the work itself
 * continues; its result is dropped). Used for waits that are not HTTP requests. A timer of
 * its own, not the deadline's signal: every FUSE call races its work this way, and an
 * AbortController with a listener added and removed cost more than the work of a call the
 * cache answers. */
export function raceDeadline<T>(p: Promise<T>, deadline: Deadline): Promise<T> {
  if (deadline.expired()) {
    // `p` is under way all the same and may fail later, when nobody waits for it: a
    // rejection no handler took would end the mount's process (Node's default). This was
    // the mount that died during a partition (a read whose deadline ran out while its
    // handle's writes were being committed; the read-ahead fetch it started then timed out).
    p.catch(() => undefined);
    return Promise.reject(new DfsError('TIMEOUT', 'deadline passed'));
  }
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new DfsError('TIMEOUT', 'deadline passed')), deadline.remainingMs());
    timer.unref(); // as the deadline's own: a wait must not keep the process alive
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
