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
}

export interface ClusterStatus {
  leader: string | null;
  epoch: number;
  seq: number;
  membership: Membership | null;
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
    /** The full sync under way: its source, the sequence ID it copies at, entries and
     * bytes received so far. */
    sync?: { source: string; seq: number | null; entries: number; bytes: number } | null;
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
