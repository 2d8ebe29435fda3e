/*
 * The shapes that cross the client API (mount -> proxy) and the node read API
 * (proxy -> storage node). docs/api.md describes the endpoints that carry them.
 */

/** A file's attributes, as the brick reports them. `mode` includes the file type bits. */
export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  blocks: number;
  atimeMs: number;
  mtimeMs: number;
  ctimeMs: number;
  /** The nanoseconds within each time's millisecond (0 to 999,999), so that a time set to
   * the nanosecond comes back exactly: the whole time is `xtimeMs` (an integer then) plus
   * `xtimeNsec` ns. Absent means 0. */
  atimeNsec?: number;
  mtimeNsec?: number;
  ctimeNsec?: number;
}

export interface DirEntry {
  name: string;
  attr: Attr;
}

export interface DirListing {
  entries: DirEntry[];
}

export interface StatFs {
  bsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  namemax: number;
}

/** The answer to a committed mutation. `attr` is the target's attributes after the op
 * (absent when the op removed it or failed). A failed op is still committed: its errno is
 * the deterministic outcome on every node. */
export interface OpResult {
  seq: number;
  errno?: string;
  attr?: Attr;
  /** rename: the mode of the entry it replaced, when it replaced one. */
  replacedMode?: number;
  /** An op that named an inode (`ino`): the path it was applied at, where that inode is now. */
  path?: string;
  /** An op that adds or removes a name (create, mkdir, mknod, symlink, link, unlink,
   * rmdir): the attributes of the directory holding it, after the op. */
  parent?: Attr;
}

/** One entry of a brick as `dfs verify` compares it: its attributes (but not the block
 * count, nor a directory's size, which reflect how the local file system laid it out), a
 * hash of a file's bytes, a symlink's target, hashes of its user.* attribute values. */
export interface ManifestEntry {
  path: string;
  attr: Omit<Attr, 'blocks'>;
  sha256?: string;
  target?: string;
  xattrs?: Record<string, string>;
}

/**
 * How far a full sync got (storage/full-sync.ts), as a node's heartbeat reports it and
 * `dfs status` shows it. `entries` counts names (directories, files, further hard links),
 * `bytes` file content (holes included, each inode once), both against the totals the
 * source counted in its held brick before it sent anything (null from a source that does
 * not say).
 */
export interface SyncProgress {
  source: string;
  startedAtMs: number;
  /** The sequence ID the copy stands at, once the source said. */
  seq: number | null;
  entries: number;
  bytes: number;
  totalEntries: number | null;
  totalBytes: number | null;
  /** Content bytes a second over the last few seconds (0 until measured). */
  bytesPerSecond: number;
  /** Set once the copy is in place. */
  finishedAtMs?: number;
}

/** How far one node's walk for `dfs verify` got: entries listed and file bytes hashed,
 * against its brick's totals (null until it has listed them). */
export interface ManifestProgress {
  entries: number;
  bytes: number;
  totalEntries: number | null;
  totalBytes: number | null;
}

/** A line of `POST /v1/verify?progress=1` (application/x-ndjson): progress, by node, any
 * number of times, then the report or an error, once. */
export type VerifyStreamLine =
  | { progress: { at: number; nodeCount: number; nodes: Record<string, ManifestProgress> } }
  | { report: VerifyReport }
  | { error: { code: string; message: string } };

export interface Manifest {
  nodeId: string;
  appliedSeq: number;
  entries: ManifestEntry[];
}

export interface VerifyReport {
  ok: boolean;
  /** The sequence ID every node was held at while its brick was read. */
  at: number;
  nodes: Array<{ id: string; entries: number } | { id: string; error: string }>;
  /** At most VERIFY_DIFFERENCES_MAX, with `more` counting the rest. */
  differences: Array<{ path: string; nodes: Record<string, ManifestEntry | null> }>;
  more: number;
}

export interface NodeInfo {
  id: string;
  url: string;
}

/** The cluster's membership, owned by the leader proxy and kept in Redis (docs/cluster.md). */
export interface Membership {
  epoch: number;
  primary: string;
  inSync: string[];
  nodes: Record<string, string>; // node ID -> URL
  /** Node ID -> the incarnation (a life of its disk, storage/node-state.ts) the leader
   * admitted it under: a node whose own incarnation differs (a new disk under an old ID)
   * acts as a learner only, whatever role the rest of the membership gives it. */
  incarnations?: Record<string, string>;
  /** The publishing leader's signature (common/membership-seal.ts): its proxy certificate
   * and an ECDSA signature over the fields above. Absent only under --insecure. */
  seal?: { cert: string; sig: string };
}

export interface ClusterStatus {
  leader: string | null;
  epoch: number;
  seq: number;
  membership: Membership | null;
  /** The primary holds fewer in-sync copies than its floor (--min-in-sync): nothing is
   * acknowledged until one more node is back in sync. Null or absent: the floor is met. */
  belowFloor?: { copies: number; floor: number } | null;
  /** The advisory locks held (docs/locks.md), by file (cluster inode number and the path it
   * was locked through) and mount; absent when Redis could not be asked. */
  locks?: Array<{ ino: number; path: string; kind: 'posix' | 'flock'; type: 'r' | 'w'; start: number; end: number; pid: number; session: string; owner: string; mount: string }>;
  locksTruncated?: boolean;
  nodes: Array<{
    id: string;
    url: string;
    alive: boolean;
    /** joining: registered, not yet in the in-sync set (a learner, or not yet a member). */
    role: 'primary' | 'backup' | 'joining';
    /** down: no heartbeat; syncing: copying a brick from a peer (full sync); in-sync: a
     * member of the in-sync set; joining: catching up from the primary's memory or log;
     * full: its log cannot grow for want of space (docs/space.md). */
    state: 'in-sync' | 'joining' | 'syncing' | 'full' | 'down';
    /** Its disk's room: ok, low (only ops that free space are admitted) or full. */
    space?: 'ok' | 'low' | 'full';
    /** In sync but not yet a failover candidate: promoted, and not yet known to hold every
     * op committed before the primary counted it (proxy/leader.ts, KEY_JOINING). */
    confirming?: boolean;
    /** The full sync under way (storage/full-sync.ts): its source, the sequence ID it
     * copies at, entries and bytes copied so far against the totals the source announced,
     * and the rate; null when it copies nothing. */
    sync?: SyncProgress | null;
    /** The last full sync this node's process finished (finishedAtMs set), or absent. */
    lastSync?: SyncProgress | null;
    appliedSeq: number | null;
    /** How many sequence IDs it is behind the counter (null when unknown). */
    lag: number | null;
    /** Reads the answering proxy sent to the node, and whether it now sends it none. */
    reads?: number;
    slow?: boolean;
  }>;
}

/** Request header: serve this read from the named in-sync node only. */
export const HEADER_READ_NODE = 'dfs-read-node';
/** Response header on every read: the node that served it. */
export const HEADER_SERVED_BY = 'dfs-served-by';
