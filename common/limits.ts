/*
 * Named limits shared by every service (STYLE.md: every body, batch, queue and retry loop
 * has a named bound). The POSIX ones follow Linux: NAME_MAX 255, and a symlink's target
 * within PATH_MAX (4096 including the terminating NUL, so 4095 bytes). PATH_MAX bounds the
 * path of one system call, not the depth of a tree: from inside a directory a tree can go
 * as deep as one likes, and libfuse's path-based API hands the mount the whole path from
 * the root. So a cluster path is bounded only as a resource, far above PATH_MAX.
 */

export const NAME_BYTES_MAX = 255;
/** The longest cluster path, in bytes: a resource bound (see the header), not PATH_MAX. */
export const PATH_BYTES_MAX = 64 * 1024;
export const SYMLINK_TARGET_BYTES_MAX = 4095;
/** Linux's XATTR_NAME_MAX and XATTR_SIZE_MAX. */
export const XATTR_NAME_BYTES_MAX = 255;
export const XATTR_VALUE_BYTES_MAX = 64 * 1024;
/**
 * The room for one inode's user.* attributes, counted as ext4 lays them out in its one
 * attribute block (16 bytes an entry, name and value each rounded up to 4): past it
 * setxattr is ENOSPC. Checked by the brick itself, the same on every node, so the answer
 * does not depend on a node's file system; it leaves ext4's 4 KiB block room for the
 * cluster's own identity attribute.
 */
export const XATTR_INODE_BYTES_MAX = 3900;

/** The largest data payload of one write op, and so of one client request body. */
export const WRITE_BYTES_MAX = 4 * 1024 * 1024;
/** The JSON header of one frame (op, paths, ids). Two maximal paths, every byte escaped
 * (`\udcXX`, 6 characters a byte), fit with room to spare; checked below. */
export const FRAME_HEADER_BYTES_MAX = 1024 * 1024;
/**
 * The extents one write op may carry (`write { extents }`, common/ops.ts): a mount packs
 * many small dirty ranges into one op. At most 27 bytes of JSON each
 * (`[9007199254740991,4194304],`), so a full list beside a maximal path whose bytes are all
 * escaped (`\udcXX`, 6 characters a byte) still fits FRAME_HEADER_BYTES_MAX; checked below.
 */
export const WRITE_EXTENTS_MAX = 1024;
/** A request body that carries one op: header, data and framing. */
export const OP_BODY_BYTES_MAX = WRITE_BYTES_MAX + FRAME_HEADER_BYTES_MAX + 16;
/** The largest byte range one read request may ask for. */
export const READ_BYTES_MAX = 4 * 1024 * 1024;
/** One replication batch from the primary to a backup. */
export const REPLICATE_BODY_BYTES_MAX = 64 * 1024 * 1024;
/** Servers accept URLs long enough for a maximal path, percent-encoded (3 bytes a byte at
 * worst), so that an over-long path gets our 400 NAME_TOO_LONG and not the HTTP parser's
 * 431; checked below. */
export const HTTP_HEADER_BYTES_MAX = 256 * 1024;
/** Differences `dfs verify` lists before it only counts them. */
export const VERIFY_DIFFERENCES_MAX = 100;
/** One node's manifest as a proxy takes it for `dfs verify`: about as long a string as V8
 * makes, which JSON.parse needs it to be. */
export const MANIFEST_BYTES_MAX = 512 * 1024 * 1024;
/** A verify report as the `dfs` command takes it: at most VERIFY_DIFFERENCES_MAX paths,
 * each with every node's entry. */
export const VERIFY_REPORT_BYTES_MAX = 64 * 1024 * 1024;

// Relationships between limits, checked once at load (STYLE.md, Limits).
if (WRITE_EXTENTS_MAX * 27 + PATH_BYTES_MAX * 6 + 1024 > FRAME_HEADER_BYTES_MAX) {
  throw new Error('a write op with WRITE_EXTENTS_MAX extents would not fit FRAME_HEADER_BYTES_MAX');
}
if (2 * PATH_BYTES_MAX * 6 + 1024 > FRAME_HEADER_BYTES_MAX) {
  throw new Error('a rename of two maximal paths would not fit FRAME_HEADER_BYTES_MAX');
}
if (PATH_BYTES_MAX * 3 + 4096 > HTTP_HEADER_BYTES_MAX) {
  throw new Error('a maximal path in a query string would not fit HTTP_HEADER_BYTES_MAX');
}

/** Request body bytes a proxy holds at once across all requests (common/http.ts,
 * BodyBudget): 48 maximal writes side by side; past it a request is 503. */
export const PROXY_BODY_BYTES_IN_FLIGHT_MAX = 192 * 1024 * 1024;
/** The same for a storage node: a few replication batches and many ops side by side. */
export const NODE_BODY_BYTES_IN_FLIGHT_MAX = 256 * 1024 * 1024;
/** Connections a proxy keeps from one client address (mounts on one host share it: each
 * keeps 16 to a proxy, mount/proxy-client.ts). */
export const PROXY_CONNECTIONS_PER_CLIENT_MAX = 256;
/** Connections a node keeps from one address (peers and proxies keep one or a few each). */
export const NODE_CONNECTIONS_PER_CLIENT_MAX = 64;
/** HTTP/2 streams a node serves at once on one connection (RFC 9113 §5.1.2): above the
 * 100 a client of ours keeps in flight (common/h2c.ts). */
export const NODE_H2_STREAMS_MAX = 128;
/** An HTTP/2 connection with no frames for this long is closed by the node. */
export const NODE_H2_IDLE_MS = 45_000;
/** A proxy's client must send a request's headers within this, and the whole request
 * within the next (Node's headersTimeout and requestTimeout). */
export const PROXY_HEADERS_TIMEOUT_MS = 20_000;
export const PROXY_REQUEST_TIMEOUT_MS = 120_000;

if (NODE_BODY_BYTES_IN_FLIGHT_MAX < 2 * (REPLICATE_BODY_BYTES_MAX + OP_BODY_BYTES_MAX)) {
  throw new Error('a node must hold at least two replication batches and two ops at once');
}
if (PROXY_BODY_BYTES_IN_FLIGHT_MAX < 8 * OP_BODY_BYTES_MAX) throw new Error('a proxy must hold at least eight ops at once');
