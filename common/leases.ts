/*
 * Cache leases: what a mount may answer from its own memory, and which changes take that
 * right away (docs/leases.md has the protocol and why it is safe).
 *
 * A lease is granted to one mount on one *key*, a directory's path. Holding the lease on
 * directory D, the mount may answer from what it cached under D: the attributes of D's
 * entries (and the absence of a name), D's listing and its symlinks' targets. The key of
 * the root's own attributes is the root itself (it has no parent).
 *
 * A change conflicts with every lease on a key whose cached answers it can change: the
 * directory of each name it makes, changes or removes, the directory above that (whose
 * own mtime, ctime or link count moves), and, for a directory moved or removed, every key
 * at or below it (their paths change). The primary revokes those leases, held by any mount
 * but the one that made the change, before it acknowledges the change.
 */
import type { Op } from './ops';
import { isWithin, parentOf } from './paths';

/** How long a lease lives past the last sign of life (a grant or a poll) of its mount. */
export const LEASE_MS = 3_000;
/** How long a poll is held open when there is nothing to say. Well inside LEASE_MS, so a
 * mount that is alive renews its session long before it lapses. */
export const LEASE_POLL_HOLD_MS = 1_000;
/** A primary grants or renews leases only while it confirmed its role in Redis this
 * recently; a newly promoted primary waits LEASE_MS + this before it acknowledges a change,
 * so that no lease a deposed primary gave out can still be held. */
export const LEASE_GRANT_FRESH_MS = 1_000;

/** Header on a read's answer: `session;lease;ms` when the read was granted a lease. */
export const HEADER_LEASE = 'dfs-lease';
/** Header on a mutation or lease request: the mount it comes from. */
export const HEADER_MOUNT = 'dfs-mount';

/** The key under which the attributes (or absence) of `path` are cached. */
export function leaseKeyOf(path: string): string {
  return parentOf(path);
}

export interface LeaseConflicts {
  /** Keys a change touches exactly. */
  keys: string[];
  /** Directories whose whole subtree of keys it touches. */
  trees: string[];
}

/** The leases a change conflicts with (see the header). */
export function leaseConflictsOf(op: Op): LeaseConflicts {
  const keys = new Set<string>();
  const trees: string[] = [];
  const entryChanged = (p: string) => {
    keys.add(parentOf(p));
    keys.add(parentOf(parentOf(p)));
  };
  switch (op.type) {
    case 'mkdir':
    case 'create':
    case 'mknod':
    case 'symlink':
    case 'unlink':
      entryChanged(op.path);
      break;
    case 'rmdir':
      entryChanged(op.path);
      keys.add(op.path);
      break;
    case 'link':
      entryChanged(op.to);
      keys.add(parentOf(op.from)); // the link count of the source
      break;
    case 'rename':
      entryChanged(op.from);
      entryChanged(op.to);
      trees.push(op.from, op.to);
      break;
    case 'write':
    case 'truncate':
    case 'fallocate':
    case 'chmod':
    case 'chown':
    case 'utimens':
    case 'atime':
    case 'ctime':
    case 'setxattr':
    case 'removexattr':
      keys.add(leaseKeyOf(op.path));
      break;
    case 'noop':
      break;
  }
  return { keys: [...keys], trees };
}

/** Whether a lease on `key` conflicts with `c`. */
export function conflictsWith(c: LeaseConflicts, key: string): boolean {
  return c.keys.includes(key) || c.trees.some((t) => isWithin(key, t));
}

/** The `dfs-lease` header's value, parsed; null when absent or malformed. */
export function parseLeaseHeader(value: string | null | undefined): { session: string; lease: number; ms: number } | null {
  if (!value) return null;
  const m = /^([A-Za-z0-9-]{1,64});(\d{1,15});(\d{1,7})$/.exec(value);
  if (!m) return null;
  return { session: m[1]!, lease: Number(m[2]), ms: Number(m[3]) };
}
