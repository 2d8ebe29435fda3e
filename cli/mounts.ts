/*
 * The kernel's view of mounts, for `dfs local` and the tests: whether a directory is a
 * mount point right now (from /proc/mounts, see proc(5) and getmntent(3)), and how to
 * unmount a FUSE file system as its owner may (fusermount -u, then a lazy -uz when the
 * mount stays busy past a bound so that `down` never leaves it behind).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { pollUntil } from './processes';

/** How long `unmount` retries a plain unmount of a busy mount before it detaches lazily. */
export const UNMOUNT_BUSY_MS = 5_000;

export interface MountEntry {
  source: string;
  target: string;
  type: string;
  options: string;
}

/** getmntent(3) escapes space, tab, newline and backslash as octal in /proc/mounts. */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

export function readMounts(): MountEntry[] {
  let text: string;
  try {
    text = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return [];
  }
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    if (fields.length < 4) continue;
    entries.push({
      source: unescapeMountField(fields[0]!),
      target: unescapeMountField(fields[1]!),
      type: fields[2]!,
      options: fields[3]!,
    });
  }
  return entries;
}

/** The mount at exactly `mountpoint` (the last one, if several are stacked), or null. */
export function findMount(mountpoint: string): MountEntry | null {
  const target = resolve(mountpoint);
  const matches = readMounts().filter((entry) => entry.target === target);
  return matches[matches.length - 1] ?? null;
}

/** True when a FUSE file system is mounted at `mountpoint`. */
export function isFuseMounted(mountpoint: string): boolean {
  const entry = findMount(mountpoint);
  return entry !== null && (entry.type === 'fuse' || entry.type.startsWith('fuse.'));
}

function runUnmount(args: string[]): { ok: boolean; message: string } {
  let result = spawnSync('fusermount', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if ((result.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    // No fusermount (only fuse3 installed): root can use umount(8) itself, -l being lazy.
    const target = args[args.length - 1]!;
    result = spawnSync('umount', args.includes('-uz') ? ['-l', target] : [target], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }
  if (result.error) return { ok: false, message: result.error.message };
  return { ok: result.status === 0, message: (result.stderr || result.stdout || '').trim() };
}

export interface UnmountOutcome {
  /** 'none': nothing was mounted; 'clean': fusermount -u; 'lazy': fusermount -uz. */
  how: 'none' | 'clean' | 'lazy';
  message?: string;
}

/**
 * Unmounts the FUSE file system at `mountpoint`: `fusermount -u`, retried while the mount
 * is busy for up to `busyMs`, then `fusermount -uz`, which detaches it now and lets the
 * last user finish. Throws when the mount is still there after that.
 */
export async function unmountFuse(mountpoint: string, busyMs = UNMOUNT_BUSY_MS): Promise<UnmountOutcome> {
  const target = resolve(mountpoint);
  if (findMount(target) === null) return { how: 'none' };
  let last = '';
  const clean = await pollUntil(() => {
    if (findMount(target) === null) return true;
    const result = runUnmount(['-u', target]);
    last = result.message;
    return result.ok || findMount(target) === null ? true : undefined;
  }, busyMs, 250);
  if (clean) return { how: 'clean' };

  const lazy = runUnmount(['-uz', target]);
  if (!lazy.ok && findMount(target) !== null) {
    throw new Error(`could not unmount ${target}: ${lazy.message || last}`);
  }
  return { how: 'lazy', message: last };
}
