/*
 * The storage node's Prometheus metrics (prom-client), served at `/metrics` on its admin
 * port (common/admin-server.ts; the node API is HTTP/2 with client certificates, which
 * Prometheus cannot scrape).
 *
 *   dfs_storage_applied_seq                    the last sequence ID applied to the brick
 *   dfs_storage_durable_seq                    the end of the op log on disk
 *   dfs_storage_role{role}                     1 for the node's role, 0 for the others
 *   dfs_storage_peer_lag_ops{peer}             (primary) ops each peer's log is behind
 *   dfs_storage_wal_fsync_duration_seconds     one op-log fdatasync, or O_DSYNC write (group commit)
 *   dfs_storage_sync_bytes_total               snapshot bytes a full sync received
 *   dfs_storage_syncing                        1 while a full sync copies a brick
 *   dfs_build_info{version,component,node_version}
 *
 * Gauges are read from the replica when scraped (collect), so nothing is counted on the
 * apply path but the fsync timing. `peer` is a node ID of the membership: as bounded as
 * the cluster. Each node has its own registry, not prom-client's global one.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { registerBuildInfo } from '../common/admin-server';

/** What the metrics read from the node when scraped. */
export interface StorageMetricsSource {
  appliedSeq: () => number;
  durableSeq: () => number;
  role: () => string;
  peerLag: () => Array<{ peerId: string; lagOps: number }>;
  syncing: () => boolean;
  syncBytesTotal: () => number;
}

const ROLES = ['primary', 'backup', 'learner', 'none'] as const;
/** 0.1 ms to 10 s: an fdatasync on a fast SSD to one on a disk that stalls. */
const FSYNC_BUCKETS_SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class StorageMetrics {
  readonly registry = new Registry();
  readonly walFsync: Histogram;

  constructor(source: StorageMetricsSource) {
    const registers = [this.registry];
    registerBuildInfo(this.registry, 'storage');
    new Gauge({
      name: 'dfs_storage_applied_seq',
      help: 'The last sequence ID applied to this node\'s brick.',
      registers,
      collect() {
        this.set(source.appliedSeq());
      },
    });
    new Gauge({
      name: 'dfs_storage_durable_seq',
      help: 'The last sequence ID in this node\'s op log on disk.',
      registers,
      collect() {
        this.set(source.durableSeq());
      },
    });
    new Gauge({
      name: 'dfs_storage_role',
      help: 'The node\'s replication role: 1 for the role it has, 0 for the others.',
      labelNames: ['role'],
      registers,
      collect() {
        const role = source.role();
        for (const r of ROLES) this.set({ role: r }, r === role ? 1 : 0);
      },
    });
    new Gauge({
      name: 'dfs_storage_peer_lag_ops',
      help: 'On the primary: how many ops each peer\'s durable log is behind this node\'s.',
      labelNames: ['peer'],
      registers,
      collect() {
        // Peers that left the membership must not linger as stale series.
        this.reset();
        for (const { peerId, lagOps } of source.peerLag()) this.set({ peer: peerId }, lagOps);
      },
    });
    new Gauge({
      name: 'dfs_storage_syncing',
      help: '1 while this node copies a brick from a peer (full sync), else 0.',
      registers,
      collect() {
        this.set(source.syncing() ? 1 : 0);
      },
    });
    let syncBytesSeen = 0;
    new Counter({
      name: 'dfs_storage_sync_bytes_total',
      help: 'Snapshot bytes this node received in full syncs since it started.',
      registers,
      collect() {
        const total = source.syncBytesTotal();
        if (total > syncBytesSeen) this.inc(total - syncBytesSeen);
        syncBytesSeen = total;
      },
    });
    this.walFsync = new Histogram({
      name: 'dfs_storage_wal_fsync_duration_seconds',
      help: 'How long one fdatasync of the op log took (one per appended batch; for a log written with O_DIRECT and O_DSYNC, its write, which is the sync).',
      buckets: FSYNC_BUCKETS_SECONDS,
      registers,
    });
  }
}
