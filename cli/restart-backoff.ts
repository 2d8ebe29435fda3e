/*
 * When the local cluster's supervisor (supervisor.ts) restarts a process that died: the
 * crash-loop backoff, as a pure step function (STYLE.md: state in, event in, decision out;
 * no clock, no processes), so that its table of cases runs as a unit test.
 *
 * It follows Kubernetes' CrashLoopBackOff with shorter times, because a local cluster
 * restarts on one machine and a developer is waiting: the first restart comes after
 * `backoffMsMin`, each further one waits twice as long up to `backoffMsMax`, and a process
 * that stayed up for `resetAfterMs` before it died starts again from `backoffMsMin` (it
 * was not crash-looping, something killed it). It never gives up: a process that cannot
 * start is tried every `backoffMsMax` for as long as the supervisor runs, and each try is
 * one line in the supervisor's log.
 */

/** The first restart of a process waits this long after it was found dead. */
export const RESTART_BACKOFF_MS_MIN = 200;
/** The longest wait between two restarts of one process. */
export const RESTART_BACKOFF_MS_MAX = 5_000;
/** A process that ran this long before it died is restarted after the shortest wait again. */
export const RESTART_BACKOFF_RESET_MS = 10_000;

export interface BackoffPolicy {
  backoffMsMin: number;
  backoffMsMax: number;
  resetAfterMs: number;
}

export const DEFAULT_BACKOFF_POLICY: BackoffPolicy = {
  backoffMsMin: RESTART_BACKOFF_MS_MIN,
  backoffMsMax: RESTART_BACKOFF_MS_MAX,
  resetAfterMs: RESTART_BACKOFF_RESET_MS,
};

/** Checks the policy once, at start-up: a bad one is a configuration mistake. */
export function validateBackoffPolicy(policy: BackoffPolicy): void {
  const { backoffMsMin, backoffMsMax, resetAfterMs } = policy;
  if (!Number.isSafeInteger(backoffMsMin) || backoffMsMin < 1) throw new Error(`backoffMsMin must be a whole number of ms ≥ 1, not ${backoffMsMin}`);
  if (!Number.isSafeInteger(backoffMsMax) || backoffMsMax < backoffMsMin) throw new Error(`backoffMsMax (${backoffMsMax}) must be a whole number ≥ backoffMsMin (${backoffMsMin})`);
  // A process restarted after the longest wait must be able to stay up long enough for
  // the reset to tell "crash-looping" from "ran fine, then killed".
  if (!Number.isSafeInteger(resetAfterMs) || resetAfterMs < backoffMsMax) throw new Error(`resetAfterMs (${resetAfterMs}) must be a whole number ≥ backoffMsMax (${backoffMsMax})`);
}

/** What the supervisor knows about one process. */
export interface RestartState {
  /** When the current incarnation started, or was first seen running. */
  startedAtMs: number;
  /** The wait before the next restart. */
  backoffMs: number;
  /** When the process was found dead; null while it runs. */
  downAtMs: number | null;
  /** When it is to be restarted; null while it runs. */
  restartAtMs: number | null;
}

export type RestartEvent =
  | { type: 'seen-alive'; nowMs: number }
  | { type: 'seen-dead'; nowMs: number }
  /** The supervisor started it again (or tried to: a failed start counts as a start that died). */
  | { type: 'restarted'; nowMs: number };

export interface RestartStep {
  state: RestartState;
  /** Restart it now. */
  restart: boolean;
  /** Set on the event that first finds the process dead, for the log. */
  died?: { uptimeMs: number; restartInMs: number };
}

export function initialRestartState(nowMs: number, policy: BackoffPolicy): RestartState {
  return { startedAtMs: nowMs, backoffMs: policy.backoffMsMin, downAtMs: null, restartAtMs: null };
}

export function stepRestart(state: RestartState, event: RestartEvent, policy: BackoffPolicy): RestartStep {
  switch (event.type) {
    case 'seen-alive':
      // Running again without us (someone else restarted it): a new incarnation.
      if (state.downAtMs !== null) return { state: { ...state, startedAtMs: event.nowMs, downAtMs: null, restartAtMs: null }, restart: false };
      return { state, restart: false };
    case 'seen-dead': {
      if (state.downAtMs !== null) {
        return { state, restart: event.nowMs >= state.restartAtMs! };
      }
      const uptimeMs = Math.max(0, event.nowMs - state.startedAtMs);
      const backoffMs = uptimeMs >= policy.resetAfterMs ? policy.backoffMsMin : state.backoffMs;
      const next: RestartState = { ...state, backoffMs, downAtMs: event.nowMs, restartAtMs: event.nowMs + backoffMs };
      return { state: next, restart: false, died: { uptimeMs, restartInMs: backoffMs } };
    }
    case 'restarted':
      return {
        state: {
          startedAtMs: event.nowMs,
          backoffMs: Math.min(state.backoffMs * 2, policy.backoffMsMax),
          downAtMs: null,
          restartAtMs: null,
        },
        restart: false,
      };
  }
}
