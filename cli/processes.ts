/*
 * Process bookkeeping for `dfs local` and the test harness: is a recorded pid still the
 * process we started, and how to stop exactly that process.
 *
 * A pid alone is not an identity: once a process exits, the kernel may hand its pid to an
 * unrelated process, and `dfs local down` must never signal that one. So every record
 * carries the process's start time (field 22 of /proc/<pid>/stat, in clock ticks since
 * boot, see proc(5)) and a few strings its command line must contain. A zombie (state Z)
 * has exited already and counts as gone, because nobody may reap it in a container whose
 * init does not.
 */
import { readFileSync } from 'node:fs';
import { retry } from '../common/retry';

/** How often the wait loops look at /proc. */
export const POLL_INTERVAL_MS = 50;
/** How long a process gets between SIGTERM and SIGKILL. */
export const STOP_GRACE_MS = 10_000;
/** How long we wait for a SIGKILLed process to disappear before giving up on it. */
export const KILL_WAIT_MS = 5_000;

export interface ProcessIdentity {
  pid: number;
  /** /proc/<pid>/stat starttime, or null when it could not be read at spawn time. */
  startTime: string | null;
  /** Strings that the process's command line (arguments joined by spaces) must contain. */
  markers: string[];
}

/** The fields of /proc/<pid>/stat that we use (proc(5)). */
export interface ProcStat {
  /** Field 3: R, S, D, Z, X… */
  state: string;
  /** Fields 14 and 15: CPU time in user and kernel mode, in clock ticks (`getconf CLK_TCK`),
   * summed over the process's threads. */
  utimeTicks: number;
  stimeTicks: number;
  /** Field 22, in clock ticks since boot; kept as text, since it is only compared. */
  startTime: string;
}

/** Parses the one line of /proc/<pid>/stat; null when it is not one. */
export function parseProcStat(text: string): ProcStat | null {
  // The command name (field 2) is in parentheses and may itself contain spaces and
  // parentheses, so the fields after it are found from the last ')'.
  const close = text.lastIndexOf(')');
  if (close === -1 || text[close + 1] !== ' ') return null;
  const rest = text.slice(close + 2).trimEnd().split(' ');
  // `rest` starts at field 3, so field N is rest[N - 3].
  const state = rest[0];
  const utime = rest[11];
  const stime = rest[12];
  const startTime = rest[19];
  if (state === undefined || utime === undefined || stime === undefined || startTime === undefined) return null;
  if (!/^\d+$/.test(utime) || !/^\d+$/.test(stime) || !/^\d+$/.test(startTime)) return null;
  return { state, utimeTicks: Number(utime), stimeTicks: Number(stime), startTime };
}

/** The /proc/<pid>/stat of a process, null when it is gone (or not readable). */
export function readProcStat(pid: number): ProcStat | null {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  return parseProcStat(text);
}

/** The start time of a live process, to record right after spawning it. */
export function processStartTime(pid: number): string | null {
  return readProcStat(pid)?.startTime ?? null;
}

/** True when `pid` names a running (not exited, not zombie) process. */
export function isRunning(pid: number): boolean {
  const stat = readProcStat(pid);
  return stat !== null && stat.state !== 'Z' && stat.state !== 'X';
}

/** The command line of a live process, its arguments joined by single spaces. */
export function readCommandLine(pid: number): string | null {
  try {
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((arg) => arg.length > 0).join(' ');
  } catch {
    return null;
  }
}

/** True when the recorded process is still running and is still the one we started. */
export function isSameProcess(identity: ProcessIdentity): boolean {
  const stat = readProcStat(identity.pid);
  if (stat === null || stat.state === 'Z' || stat.state === 'X') return false;
  if (identity.startTime !== null && stat.startTime !== identity.startTime) return false;
  const cmdline = readCommandLine(identity.pid);
  if (cmdline === null) return false;
  return identity.markers.every((marker) => cmdline.includes(marker));
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Calls `check` until it returns a value other than undefined, or the deadline passes;
 * then returns undefined. `check` may be async; its errors propagate. It looks every
 * `intervalMs`, and once more at the deadline (common/retry.ts, a fixed interval).
 */
export async function pollUntil<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs: number, intervalMs = POLL_INTERVAL_MS): Promise<T | undefined> {
  const outcome = await retry<T>(async () => {
    const value = await check();
    return value === undefined ? { done: false } : { done: true, value };
  }, {
    // The deadline bounds the looks; the attempt bound only has to allow all of them.
    policy: { attemptsMax: Math.ceil(Math.max(0, timeoutMs) / Math.max(1, intervalMs)) + 2, backoffMsMin: intervalMs, backoffMsMax: intervalMs, backoffFactor: 1, jitter: 0, waitPastDeadline: 'clamp' },
    deadlineAtMs: Date.now() + timeoutMs,
  });
  return outcome.ok ? outcome.value : undefined;
}

/** Sends `signal` to the process if it is still ours; returns whether it was sent. */
export function signalProcess(identity: ProcessIdentity, signal: NodeJS.Signals): boolean {
  if (!isSameProcess(identity)) return false;
  try {
    process.kill(identity.pid, signal);
    return true;
  } catch {
    return false;
  }
}

export interface StopOutcome {
  /** Processes that exited after SIGTERM (or were gone already). */
  stopped: number[];
  /** Processes that needed SIGKILL. */
  killed: number[];
  /** Processes still running after SIGKILL and its wait: something is badly wrong. */
  stuck: number[];
}

/**
 * Stops exactly the given processes: SIGTERM, wait up to `graceMs` for them to exit,
 * SIGKILL the rest, wait again. A pid that no longer names the recorded process is left
 * alone and counts as stopped.
 */
export async function stopProcesses(identities: ProcessIdentity[], graceMs = STOP_GRACE_MS): Promise<StopOutcome> {
  const outcome: StopOutcome = { stopped: [], killed: [], stuck: [] };
  const live = identities.filter((identity) => signalProcess(identity, 'SIGTERM'));
  for (const identity of identities) if (!live.includes(identity)) outcome.stopped.push(identity.pid);

  const stillRunning = () => live.filter((identity) => isSameProcess(identity));
  await pollUntil(() => (stillRunning().length === 0 ? true : undefined), graceMs);
  const afterTerm = stillRunning();
  for (const identity of live) if (!afterTerm.includes(identity)) outcome.stopped.push(identity.pid);
  if (afterTerm.length === 0) return outcome;

  for (const identity of afterTerm) signalProcess(identity, 'SIGKILL');
  await pollUntil(() => (afterTerm.every((identity) => !isSameProcess(identity)) ? true : undefined), KILL_WAIT_MS);
  for (const identity of afterTerm) {
    if (isSameProcess(identity)) outcome.stuck.push(identity.pid);
    else outcome.killed.push(identity.pid);
  }
  return outcome;
}
