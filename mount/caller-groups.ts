/*
 * The supplementary groups of the process that made a FUSE call. libfuse 2 passes only
 * the caller's uid, gid and pid, but the cluster checks permissions itself (DESIGN.md,
 * Security), so a read or op must say every group its caller is in, as the kernel would
 * count them: the `Groups:` line of /proc/PID/status. One read per process and identity,
 * cached for GROUPS_CACHE_MS (a process rarely changes its groups, and a new one has a new
 * pid; one that changes its uid or gid, as `su` and test harnesses do, is read again), at
 * most GROUPS_CACHE_ENTRIES entries.
 */
import { readFileSync } from 'node:fs';

export const GROUPS_CACHE_MS = 2_000;
export const GROUPS_CACHE_ENTRIES = 1_024;

export class CallerGroups {
  private readonly cache = new Map<string, { groups: number[]; atMs: number }>();

  constructor(
    private readonly read: (pid: number) => string | null = readStatus,
    private readonly now: () => number = Date.now,
  ) {}

  /** The groups of process `pid` acting as `uid`/`gid`; [] when it is gone (it can no
   * longer care). */
  of(pid: number, uid: number, gid: number): number[] {
    const t = this.now();
    const key = `${pid}:${uid}:${gid}`;
    const hit = this.cache.get(key);
    if (hit && t - hit.atMs < GROUPS_CACHE_MS) return hit.groups;
    const text = pid > 0 ? this.read(pid) : null;
    const line = text?.split('\n').find((l) => l.startsWith('Groups:'));
    const groups = line ? line.slice(7).trim().split(/\s+/).filter((g) => /^\d+$/.test(g)).map(Number) : [];
    if (this.cache.size >= GROUPS_CACHE_ENTRIES) this.cache.delete(this.cache.keys().next().value as string);
    this.cache.set(key, { groups, atMs: t });
    return groups;
  }
}

function readStatus(pid: number): string | null {
  try {
    return readFileSync(`/proc/${pid}/status`, 'latin1');
  } catch {
    return null;
  }
}
