/*
 * The FUSE mount itself: the libfuse options dfs-mount runs with, and a fuse-native
 * subclass that passes them (fuse-native builds the -o string from its own list of
 * camelCase options and silently drops anything else, FUSE-NATIVE.md).
 *
 * The options, and why:
 * - big_writes, max_write=131072, max_read=131072: 128 KiB requests (the libfuse 2
 *   maximum) instead of 4 KiB writes, twenty times the write throughput;
 * - default_permissions: the kernel checks mode bits and ownership, as on a local disk;
 * - use_ino: stat shows the cluster's inode numbers (the storage nodes keep one per inode,
 *   the same on every node: docs/cluster.md), so the names of a hard link share one, as tar,
 *   cp -a, du and find -samefile expect;
 * - attr_timeout=0, entry_timeout=0, negative_timeout=0: the kernel caches no attributes or
 *   names, because with libfuse's path-based API it cannot be told when the other name of a
 *   hard link changed; the mount caches them in user space instead, where it can invalidate
 *   precisely (mount/attr-cache.ts);
 * - auto_unmount: fusermount removes the mount if this process dies, even by SIGKILL;
 * - fsname=dfs, subtype=dfs: the mount shows as `dfs` of type `fuse.dfs` in /proc/mounts.
 * The whole string must stay under 1024 bytes, fuse-native's buffer for it.
 *
 * fuse-native must be the dfs-patched build (patches/fuse-native+2.2.6.patch, applied and
 * compiled by scripts/build-fuse-native.js from `npm ci` and scripts/setup.sh): unpatched,
 * it would mount fine and then silently set wrong times and owners, so DfsFuse refuses it.
 *
 * Kernel caching (patch item 13): the options keep every timeout at 0, and a getattr or
 * fgetattr answer may carry its own (`cb(0, stat, { entryMs, attrMs })`, libfuse's reply
 * rewritten); `invalidatePath(path)` / `invalidateEntry(path)` take a cached answer back
 * before it stops being true, through a thread of the addon's own (a notification sent from
 * the main thread could wait for kernel locks held by calls only the main thread answers).
 * `DfsFuse.kernelCacheHooked()` is false on a libfuse other than the 2.9 the patch mirrors:
 * then times given are ignored (the kernel caches nothing) and invalidation finds nothing.
 */
import Fuse from 'fuse-native';

/** fuse-native copies the option string into a 1024-byte buffer, NUL included. */
export const FUSE_OPTIONS_BYTES_MAX = 1023;
/** The level of the dfs patch this code is written for (Fuse.DFS_PATCH_LEVEL). */
export const FUSE_NATIVE_PATCH_LEVEL = 10;
/** The largest read and write request libfuse 2 makes. */
export const FUSE_REQUEST_BYTES_MAX = 128 * 1024;

export interface FuseMountOptions {
  allowOther?: boolean;
  debug?: boolean;
  /** Extended attribute namespaces never stored: the addon answers ENODATA for them. */
  absentXattrNamespaces?: string[];
}

/** The -o argument for libfuse. */
export function buildFuseOptions(opts: FuseMountOptions = {}): string {
  const options = [
    'fsname=dfs',
    'subtype=dfs',
    'default_permissions',
    'big_writes',
    `max_write=${FUSE_REQUEST_BYTES_MAX}`,
    `max_read=${FUSE_REQUEST_BYTES_MAX}`,
    'attr_timeout=0',
    'entry_timeout=0',
    'negative_timeout=0',
    'auto_unmount',
    'use_ino',
  ];
  if (opts.allowOther) options.push('allow_other');
  if (opts.debug) options.push('debug');
  const s = '-o' + options.join(',');
  if (Buffer.byteLength(s) > FUSE_OPTIONS_BYTES_MAX) throw new Error(`FUSE option string is over ${FUSE_OPTIONS_BYTES_MAX} bytes`);
  return s;
}

/** Throws unless the loaded fuse-native is the one built from the dfs patch. */
export function checkFuseNativePatched(): void {
  if (Fuse.DFS_PATCH_LEVEL !== FUSE_NATIVE_PATCH_LEVEL) {
    throw new Error(
      `fuse-native is not patched for dfs (patch level ${String(Fuse.DFS_PATCH_LEVEL)}, want ${FUSE_NATIVE_PATCH_LEVEL}): run scripts/setup.sh or node scripts/build-fuse-native.js`,
    );
  }
}

export class DfsFuse extends Fuse {
  private readonly fuseOptionString: string;

  constructor(mountpoint: string, handlers: Fuse.Handlers, opts: FuseMountOptions = {}) {
    checkFuseNativePatched();
    // timeout: false, because fuse-native would otherwise answer ETIMEDOUT after 15 s on
    // its own; every handler keeps its own, shorter deadline. force: remount over a dead
    // mount left by a killed process ("Transport endpoint is not connected").
    const absent = opts.absentXattrNamespaces ?? [];
    // The addon takes them as one line each, 255 bytes in all (patch item 15).
    if (absent.some((ns) => ns === '' || ns.includes('\n')) || Buffer.byteLength(absent.map((ns) => `${ns}\n`).join('')) > 255) {
      throw new Error('absentXattrNamespaces: non-empty prefixes without newlines, 255 bytes in all');
    }
    super(mountpoint, handlers, { timeout: false, force: true, mkdir: false, absentXattrNamespaces: absent });
    this.fuseOptionString = buildFuseOptions(opts);
  }

  protected override _fuseOptions(): string {
    return this.fuseOptionString;
  }
}

export function mountFuse(fuse: Fuse): Promise<void> {
  return new Promise((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
}

export function unmountFuse(fuse: Fuse): Promise<void> {
  return new Promise((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
}
