/*
 * The one retry loop: a bounded number of attempts, exponential backoff with jitter
 * between them, and a deadline that no attempt starts after and no wait reaches past.
 * The mount's failover between proxies (mount/proxy-client.ts), the proxy's retries of a
 * mutation (proxy/app.ts) and the launcher's waits for a condition (pollUntil in
 * cli/processes.ts) are each one call of `retry` with their own policy.
 *
 * How a call goes: attempt 0 runs at once. An attempt says whether it is done (with the
 * value), or failed and may be tried again (with the error, and whether the next attempt
 * waits first: some failures, a moved epoch, are worth an immediate retry). An attempt
 * that throws ends the loop with that error: what is not worth retrying is the attempt's
 * to decide. After a failure the loop stops when the attempts are used up or the deadline
 * has passed; otherwise it waits the backoff, `backoffMsMin * backoffFactor^k` for the
 * k-th wait (k from 0), at most `backoffMsMax`, shortened by up to `jitter` of itself at
 * random, so that many clients that failed together do not retry together. A wait that
 * would reach the deadline is cut to end there (`waitPastDeadline: 'clamp'`, so that the
 * last attempt looks once more at the deadline), or ends the loop at once (`'stop'`, for a
 * caller that would rather fail before its deadline than start work at it).
 *
 * The result says how it ended (`ok`, or which bound stopped it, with the last error), so
 * each caller makes its own final error. Clock, sleep and randomness are injected, so the
 * unit tests (test/unit/retry.test.ts) run the schedule without waiting.
 */

export interface RetryPolicy {
  /** Attempts at most, the first included; a whole number ≥ 1. */
  attemptsMax: number;
  /** The first wait, and the bounds of every wait, in ms. */
  backoffMsMin: number;
  backoffMsMax: number;
  /** Each wait is this many times the one before (1: a fixed interval). */
  backoffFactor: number;
  /** The fraction (0 to 1) by which a wait may be shortened at random. */
  jitter: number;
  /** What a wait that would reach the deadline does: end there and try once more, or stop. */
  waitPastDeadline: 'clamp' | 'stop';
}

export type AttemptResult<T> =
  | { done: true; value: T }
  /** Failed, may be retried; `backoff: false` retries at once (default: wait first). */
  | { done: false; error?: unknown; backoff?: boolean };

export type RetryOutcome<T> =
  | { ok: true; value: T; attempts: number }
  | { ok: false; stoppedBy: 'attempts' | 'deadline'; lastError: unknown; attempts: number };

export interface RetryOptions {
  policy: RetryPolicy;
  /** The deadline, in the ms of `clock`; Infinity for none (attemptsMax still bounds it). */
  deadlineAtMs: number;
  clock?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** A number in [0, 1), as Math.random. */
  random?: () => number;
}

export const sleepMs = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Checks a policy once, where it is made: a bad one is a programmer's mistake. */
export function validateRetryPolicy(policy: RetryPolicy): void {
  const { attemptsMax, backoffMsMin, backoffMsMax, backoffFactor, jitter } = policy;
  if (!Number.isSafeInteger(attemptsMax) || attemptsMax < 1) throw new Error(`attemptsMax must be a whole number ≥ 1, not ${attemptsMax}`);
  if (!(backoffMsMin >= 0)) throw new Error(`backoffMsMin must be ≥ 0, not ${backoffMsMin}`);
  if (!(backoffMsMax >= backoffMsMin)) throw new Error(`backoffMsMax (${backoffMsMax}) must be ≥ backoffMsMin (${backoffMsMin})`);
  if (!(backoffFactor >= 1)) throw new Error(`backoffFactor must be ≥ 1, not ${backoffFactor}`);
  if (!(jitter >= 0 && jitter <= 1)) throw new Error(`jitter must be from 0 to 1, not ${jitter}`);
}

/** The k-th wait (k from 0) before jitter. */
export function backoffMs(policy: RetryPolicy, k: number): number {
  return Math.min(policy.backoffMsMax, policy.backoffMsMin * policy.backoffFactor ** k);
}

/** What follows a failed attempt: stop (and which bound stopped it), or wait this long
 * (0: at once) and try again. The one schedule, pure: `retry` runs it on the real clock,
 * the simulation (test/sim) on its virtual one. */
export type RetryStep = { stop: 'attempts' | 'deadline' } | { waitMs: number };

export function nextRetry(
  policy: RetryPolicy,
  at: { attempts: number; waits: number; remainingMs: number; backoff: boolean; random: number },
): RetryStep {
  if (at.attempts >= policy.attemptsMax) return { stop: 'attempts' };
  if (at.remainingMs <= 0) return { stop: 'deadline' };
  if (!at.backoff) return { waitMs: 0 };
  const waitMs = backoffMs(policy, at.waits) * (1 - policy.jitter * at.random);
  if (waitMs >= at.remainingMs) return policy.waitPastDeadline === 'stop' ? { stop: 'deadline' } : { waitMs: at.remainingMs };
  return { waitMs };
}

export async function retry<T>(attempt: (index: number) => AttemptResult<T> | Promise<AttemptResult<T>>, options: RetryOptions): Promise<RetryOutcome<T>> {
  const { policy, deadlineAtMs } = options;
  validateRetryPolicy(policy);
  const clock = options.clock ?? Date.now;
  const sleep = options.sleep ?? sleepMs;
  const random = options.random ?? Math.random;
  let waits = 0;
  for (let index = 0; ; index++) {
    const result = await attempt(index);
    if (result.done) return { ok: true, value: result.value, attempts: index + 1 };
    const attempts = index + 1;
    const backoff = result.backoff !== false;
    // Randomness is drawn only for a wait, as before, so a seeded schedule stays the same.
    const r = backoff && attempts < policy.attemptsMax && deadlineAtMs - clock() > 0 ? random() : 0;
    const next = nextRetry(policy, { attempts, waits, remainingMs: deadlineAtMs - clock(), backoff, random: r });
    if ('stop' in next) return { ok: false, stoppedBy: next.stop, lastError: result.error, attempts };
    if (backoff) waits++;
    if (next.waitMs > 0) await sleep(next.waitMs);
  }
}
