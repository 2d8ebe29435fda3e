/*
 * The Redis keys dfs uses, in one place (docs/cluster.md describes who writes which).
 */
export const KEY_SEQ = 'dfs:seq';
export const KEY_EPOCH = 'dfs:epoch';
export const KEY_LEADER = 'dfs:leader';
export const KEY_MEMBERSHIP = 'dfs:membership';
/** Hash: node ID -> JSON { id, url }: the node registry, written only by the leader (from
 * the heartbeats; common/registry.ts parses every value below). */
export const KEY_NODES = 'dfs:nodes';
/** String with a TTL per node, refreshed by its heartbeat: JSON { url, appliedSeq, durableSeq,
 * commitSeq, epoch, logEpoch, role, primaryFenced, failingPeers, peersAhead, syncing, sync,
 * membership, incarnation, fresh, minInSync, belowFloor } (logEpoch: the epoch of its last durable entry; failingPeers and peersAhead:
 * a primary's view of its peers, proxy/leader.ts; the membership the node holds, or null;
 * sync: the full sync under way, storage/full-sync.ts SyncProgress, or null). */
export const nodeAliveKey = (id: string): string => `dfs:node:${id}:alive`;
/** Hash: node ID -> JSON { requestedAtMs, drainedAtMs? }: nodes an operator asked to remove
 * (`dfs node remove`); the leader drains each, then drops it from the membership. */
export const KEY_REMOVING = 'dfs:removing';
/** Hash: node ID -> JSON { afterEpoch, needs }: backups promoted after `afterEpoch` and not
 * yet known to hold everything committed before the primary took the promotion in (`needs`:
 * the primary's durable end when it was first seen to hold it, null until then). They
 * count for commit but are no failover candidates (proxy/leader.ts). */
export const KEY_JOINING = 'dfs:joining';
/** String, set once by the first primary that grants a cache lease and never removed: a
 * new primary that finds it waits out the leases an older primary may have granted
 * (storage/leases.ts, LeaseGate). */
export const KEY_LEASES_USED = 'dfs:leases-used';
/** String: one file's advisory lock table (JSON list of common/locks.ts HeldLock), by the
 * file's cluster inode number; written only by proxy/locks.ts's compare-and-set script,
 * removed when empty. */
export const lockTableKey = (ino: number): string => `dfs:locks:${ino}`;
export const LOCK_TABLE_KEY_PREFIX = 'dfs:locks:';
/** String with a TTL per mount lock session, renewed by the mount (mount/locks.ts): the
 * mount's description. A session whose key is gone holds no lock. */
export const lockSessionKey = (session: string): string => `dfs:lock-session:${session}`;
/** Pub/sub channel: the inode number of a file whose lock table changed, published by the
 * compare-and-set script, so that proxies wake the requests waiting on it. */
export const LOCKS_CHANGED_CHANNEL = 'dfs:locks-changed';
/** Hash: certificate serial number (upper-case hex, no leading zeros) -> JSON { name,
 * revokedAtMs }: mount credentials revoked by `dfs credential revoke`, written only with
 * the admin login; proxies read it (proxy/revocations.ts) and refuse those certificates. */
export const KEY_REVOKED = 'dfs:revoked';
