/*
 * A lock between the processes of one machine that write the same file (cluster.json:
 * `dfs local`, the supervisor, the test harness): a lock file created with O_EXCL that
 * names its holder, `<pid> <start time>` (processes.ts, so that a reused pid is not taken
 * for the holder).
 *
 * A lock left behind is broken rather than waited on without end:
 *   - its holder no longer runs (it crashed holding it);
 *   - it is empty or not `<pid> <start time>`, and older than LOCK_UNWRITTEN_MS: a live
 *     holder writes its name right after the create, so such a file is what a crash
 *     between the two, or a full disk (the create worked, the write did not: ENOSPC), left;
 *   - a holder that is alive but keeps it past `waitMs` is an error, not a wait.
 * Two waiters breaking the same stale lock at once could both go on; that takes a crash
 * inside a critical section of milliseconds first, and a local cluster has few writers.
 *
 * (proper-lockfile does much the same with a directory, mtime staleness and a timer that
 * refreshes the mtime while held. For a lock that a few local processes hold for
 * milliseconds, this is the whole need, and it keeps the holder check by pid and start
 * time, which tells a crashed holder at once rather than after a staleness period.)
 */
import { readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { DfsError } from '../common/errors';
import { pollUntil, processStartTime } from './processes';

/** How long a writer waits for another's lock before it gives up. Writers hold it for one
 * read, a spawn and one write, so this is very long. */
export const LOCK_WAIT_MS = 10_000;
const LOCK_POLL_MS = 10;
/** How long a lock file may stay without a holder's name before it counts as left behind. */
export const LOCK_UNWRITTEN_MS = 2_000;

/** What a lock file names: its holder, or null when it is empty or unreadable as one. */
function parseHolder(text: string): { pid: number; startTime: string } | null {
  const match = /^(\d+) (\S+)$/.exec(text.trim());
  return match === null ? null : { pid: Number(match[1]), startTime: match[2]! };
}

/** True when the lock file is left behind (see the header), so that it may be removed. */
function isStale(lockFile: string, text: string, nowMs: number): boolean {
  const holder = parseHolder(text);
  if (holder !== null) return processStartTime(holder.pid) !== holder.startTime;
  try {
    return nowMs - statSync(lockFile).mtimeMs >= LOCK_UNWRITTEN_MS;
  } catch {
    return false; // released meanwhile
  }
}

/** Runs `critical` holding `lockFile`. */
export async function withFileLock<T>(lockFile: string, critical: () => T | Promise<T>, waitMs = LOCK_WAIT_MS): Promise<T> {
  const holder = `${process.pid} ${processStartTime(process.pid)}`;
  let other = '';
  const acquired = await pollUntil(() => {
    try {
      writeFileSync(lockFile, holder, { flag: 'wx' });
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    try {
      other = readFileSync(lockFile, 'utf8');
    } catch {
      return undefined; // released meanwhile
    }
    if (isStale(lockFile, other, Date.now())) rmSync(lockFile, { force: true });
    return undefined;
  }, waitMs, LOCK_POLL_MS);
  if (!acquired) {
    throw new DfsError('TIMEOUT', `${lockFile} is held by pid ${parseHolder(other)?.pid ?? '?'} for more than ${waitMs} ms`);
  }
  try {
    return await critical();
  } finally {
    rmSync(lockFile, { force: true });
  }
}
