/*
 * The proxy's retry policy for a mutation (POST /v1/ops, proxy/app.ts), pure, so that the
 * simulation (test/sim/sim-world.ts) follows the very same rules: which answers of a
 * primary are retried, whether the retry keeps its sequence ID, whether it waits first, the
 * backoff schedule (common/retry.ts `nextRetry`), and the error a client gets at the end.
 *
 * - SLOT_TAKEN: the slot holds another op (a hole the primary claimed): a new sequence ID,
 *   at once;
 * - NOT_PRIMARY, STALE_EPOCH: the membership moved: the same ID at the primary of the
 *   membership read again, at once (the request ID keeps it exactly-once);
 * - UNAVAILABLE (the primary did not answer, or its answer was cut short: it may hold the
 *   op, so the same slot is the safe retry): the same ID after a backoff;
 * - anything else (bad input the node caught, NO_SPACE: refused before it was ordered) is
 *   the final answer.
 */
import type { ErrorCode } from '../common/errors';
import type { RetryPolicy } from '../common/retry';

/** A mutation's retries: at most 8 attempts within its deadline, doubling waits from 100 ms
 * to 1 s (each shortened by up to half at random, so that proxies that failed together do
 * not retry together), none that would reach the deadline. */
export const MUTATION_RETRY_POLICY: RetryPolicy = {
  attemptsMax: 8,
  backoffMsMin: 100,
  backoffMsMax: 1_000,
  backoffFactor: 2,
  jitter: 0.5,
  waitPastDeadline: 'stop',
};

export type MutationVerdict = { retry: false } | { retry: true; newSeq: boolean; backoff: boolean };

/** What the proxy does after a primary's refusal with `code` (see the header). */
export function mutationVerdict(code: ErrorCode): MutationVerdict {
  switch (code) {
    case 'SLOT_TAKEN':
      return { retry: true, newSeq: true, backoff: false };
    case 'NOT_PRIMARY':
    case 'STALE_EPOCH':
      return { retry: true, newSeq: false, backoff: false };
    case 'UNAVAILABLE':
      return { retry: true, newSeq: false, backoff: true };
    default:
      return { retry: false };
  }
}

/** The code a client gets when the retries ran out: still unreachable, or out of time. */
export function mutationGiveUpCode(lastCode: ErrorCode): ErrorCode {
  return lastCode === 'UNAVAILABLE' ? 'UNAVAILABLE' : 'TIMEOUT';
}
