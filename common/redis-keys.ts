/*
 * The Redis keys dfs uses, in one place (docs/cluster.md describes who writes which).
 */
export const KEY_SEQ = 'dfs:seq';
export const KEY_EPOCH = 'dfs:epoch';
export const KEY_LEADER = 'dfs:leader';
export const KEY_MEMBERSHIP = 'dfs:membership';
/** Hash: node ID -> JSON { id, url }. */
export const KEY_NODES = 'dfs:nodes';
/** String with a TTL per node, refreshed by its heartbeat: JSON { appliedSeq, durableSeq,
 * commitSeq, epoch, logEpoch, role, primaryFenced, failingPeers, peersAhead, syncing, sync,
 * membership } (logEpoch: the epoch of its last durable entry; failingPeers and peersAhead:
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
