/*
 * The FUSE handlers of dfs-mount: each call from the kernel (through libfuse's path-based
 * API and fuse-native) becomes reads and ops on the cluster's client API.
 *
 * Every call gets a Deadline when it arrives (`--deadline-ms`, default 10 s): every HTTP
 * attempt inside it is bounded by it, and the call is answered by then whatever happens,
 * EIO if nothing else, so that a cluster that is down never hangs a shell. Errors become
 * errno values in mount/errno.ts only.
 *
 * What is cached, and for how long (the details are in each module's header):
 * - attributes, in user space, for `--attr-timeout-ms` (mount/attr-cache.ts); the kernel is
 *   told to cache none, and changes made through this mount invalidate precisely;
 * - written data, per open handle, in a bounded dirty-extent map until flush/fsync/close
 *   (which return only after the cluster committed it), a bound, or a pause in writing
 *   (mount/write-buffer.ts);
 * - read-ahead windows, per open handle, dropped by any change made through this mount
 *   (mount/read-ahead.ts);
 * - nothing else: directory listings, symlink targets and statfs always ask the cluster.
 * `open` always fetches fresh attributes (close-to-open), and libfuse's default tells the
 * kernel to drop its page cache of the file on each open.
 *
 * Within this mount, reads and getattr see data still buffered by any handle of the same
 * file: a read first flushes those handles, a getattr reports the size they extend the file
 * to. Truncate, chmod, chown, utimens and rename first flush the handles they affect, so
 * that no buffered write is applied after them and undoes them (cp -p sets times before it
 * closes the file).
 *
 * The fuse-native here is the dfs-patched one (patches/fuse-native+2.2.6.patch): create,
 * mknod, mkdir and symlink make what they create the calling process's (its fsuid and
 * fsgid, as a local file system does; a setgid parent's group is for storage to apply),
 * create knows whether O_EXCL was asked, and utimens gets both times, each possibly "now"
 * (UTIME_NOW) or "leave it" (UTIME_OMIT).
 */
import { CALLER_GROUPS_MAX, type Caller } from '../common/identity';
import { constants as fsConstants } from 'node:fs';
import type Fuse from 'fuse-native';
import type { Attr, DirEntry, OpResult } from '../common/api';
import { DfsError } from '../common/errors';
import type { Logger } from '../common/log';
import { FALLOCATE_MODES, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE, relatimeDue, xattrNamespaceOf, type Op } from '../common/ops';
import { parentOf, validateEntryPath, validatePath } from '../common/paths';
import { AttrCache } from './attr-cache';
import { CallerGroups } from './caller-groups';
import { Deadline, raceDeadline } from './deadline';
import { EIO, ENOENT, errnoName, errnoOf, errnoOfError, errnoOfLostWrite } from './errno';
import { childPath, HandleTable, renamePath } from './handles';
import { kernelToWire, wireToKernel } from '../common/names';
import { inFdSyscall } from './fd-calls';
import { inRenameSyscall, isReservedPath, ORPHANS_DIR, orphanOwner, orphanPrefix, OrphanTable } from './orphans';
import type { MountMetrics } from './metrics';
import type { ProxyClient } from './proxy-client';
import { ReadAhead, READ_AHEAD_WINDOW_BYTES } from './read-ahead';
import { parseReplacedAlias } from './replaced-alias';
import { DirtyBudget, DIRTY_BYTES_MOUNT_MAX, WriteBuffer, WRITE_BUFFER_DEFAULTS, type Extent, type WriteBufferLimits } from './write-buffer';
import { MountLeases, type LeaseRef } from './leases';
import { leaseKeyOf, LEASE_POLL_HOLD_MS } from '../common/leases';
import { randomUUID } from 'node:crypto';
import { MountLocks } from './locks';

/** The supplementary groups of the processes calling in (libfuse's context has none). */
const callerGroups = new CallerGroups();

/** What the handlers need from the cluster: the proxy client, or a fake in tests. Without
 * the lease calls the mount caches only for --attr-timeout-ms. */
export type ClusterClient = Pick<ProxyClient, 'op' | 'attr' | 'dir' | 'data' | 'link' | 'statfs' | 'xattr' | 'xattrs'> &
  Partial<Pick<ProxyClient, 'attrLeased' | 'dirLeased' | 'pollLeases' | 'locks'>>;

export interface MountConfig {
  /** Bound on every FUSE call, and on every background chunk send. */
  deadlineMs: number;
  /** How long attributes are cached in user space; 0 asks the cluster every time. */
  attrTimeoutMs: number;
  writeLimits: WriteBufferLimits;
  /** Dirty bytes all handles may buffer together (mount/write-buffer.ts, DirtyBudget). */
  mountDirtyBytesMax: number;
  readAheadBytes: number;
  /** Whether reads move atime (as the relatime mount option does) or never (noatime). */
  atime: 'relatime' | 'noatime';
  /** Cache attributes, entries and listings under leases the cluster revokes before it
   * acknowledges a conflicting change (mount/leases.ts); off asks the cluster each time. */
  leases: boolean;
}

export const MOUNT_CONFIG_DEFAULTS: MountConfig = {
  deadlineMs: 10_000,
  attrTimeoutMs: 0,
  writeLimits: WRITE_BUFFER_DEFAULTS,
  mountDirtyBytesMax: DIRTY_BYTES_MOUNT_MAX,
  readAheadBytes: READ_AHEAD_WINDOW_BYTES,
  // As JuiceFS: moving atime costs a replicated op on the first read of every file after a
  // change (tar -c of a fresh tree took four times as long); --atime relatime asks for it.
  atime: 'noatime',
  leases: true,
};

/** The longest the kernel is let keep an answer (patch item 13), and how much sooner than
 * its lease it must let go; a shorter time is not worth giving. */
const KERNEL_CACHE_MS_MAX = 1_000;
const KERNEL_CACHE_MARGIN_MS = 250;
const KERNEL_CACHE_MS_MIN = 50;
/** A reply that gave the kernel a time may still be on its way (libfuse's thread sends it
 * after the handler answered, the invalidation goes by another thread): names given a time
 * this recently are taken back a second time after this long. */
const KERNEL_REPLY_SLACK_MS = 20;
/** How long a call waits, at most, for the kernel to take back what it must not keep. */
const KERNEL_INVALIDATE_WAIT_MS = 1_000;

/** Waits for a kernel invalidation the caller must see done (a lock granted, a link made),
 * at most KERNEL_INVALIDATE_WAIT_MS; its failure is no error of the call's. */
async function kernelTakesBack(invalidation: Promise<boolean>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, KERNEL_INVALIDATE_WAIT_MS)));
  await Promise.race([invalidation.catch(() => false), bound]);
  clearTimeout(timer);
}

/** The kernel's caches as the mount drives them (mount/fuse-mount.ts, DfsFuse). */
export interface KernelCache {
  invalidatePath(kernelPath: string): Promise<boolean>;
  invalidateEntry(kernelPath: string): Promise<boolean>;
  invalidateInode(kernelPath: string): Promise<boolean>;
}

/** Lookups missed under one directory's lease before the mount lists the directory. */
const LISTING_AFTER_MISSES = 4;
/** Directories whose misses are counted at once (past it the counts start again). */
const LOOKUP_MISS_DIRS_MAX = 256;
/** How long a lease poll may take: the primary holds it, the proxy passes it on. */
const LEASE_POLL_DEADLINE_MS = LEASE_POLL_HOLD_MS + 3_000;

/** st_blksize: applications size their I/O by it; 128 KiB is what one FUSE request holds. */
const BLOCK_SIZE_PREFERRED = 128 * 1024;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
/** The namespaces Linux knows besides the stored ones (XATTR_NAMESPACES): never stored
 * here, so never found. */
/** Namespaces the kernel asks about that are never stored (the addon answers them at
 * mount/main.ts's request: patch item 15; the handler below answers them too, for a Fuse
 * mounted without that option). */
export const KNOWN_XATTR_NAMESPACES: readonly string[] = ['security.', 'system.'];
const ENODATA = errnoOf('ENODATA');
/** setxattr(2) flags. */
const XATTR_CREATE = 1;
const XATTR_REPLACE = 2;
const S_IFDIR = 0o040000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o0010;
const O_ACCMODE = 3;
/** chown(2) passes (uid_t)-1 for "leave unchanged". */
const ID_UNCHANGED = 0xffffffff;
const UINT32_MAX = 0xffffffff;
/** What the rename handler answers for a success after which libfuse may keep the
 * replaced entry's node under an alias (dfs patch item 12). */
const RENAME_KEEP_REPLACED = 1;
/** Failed calls logged per second at most (the rest are counted in the next line). */
const WARNINGS_PER_SECOND_MAX = 5;

interface OpenFile {
  fh: number;
  /** Where the file is in the cluster, as far as this mount knows (it follows the inode). */
  path: string;
  ino: number;
  /** The name the kernel knows the file by (HandleBase). */
  kernelPath: string;
  /** Opened through a name that stands for one node only (nodeKey): that key, which a
   * rename through this mount moves along when it is a hidden path. */
  openedAs: string | null;
  /** The file had several names when opened: a change must drop every cached attribute. */
  multiLink: boolean;
  writable: boolean;
  /** Opened with O_APPEND: its writes travel as appends, placed at the end of the file as
   * it stands when each is applied (mount/write-buffer.ts, append mode). */
  append: boolean;
  /** A write through it has checked for a set-group-ID bit to clear (dropSetgidOnWrite). */
  privilegesChecked: boolean;
  /** The attributes it was opened with, until its first read decides about atime. */
  atimeFrom: Attr | null;
  writes: WriteBuffer | null;
  readAhead: ReadAhead | null;
  /** The file's size when it was opened, null for one this handle created: how far ahead
   * reading may fetch. */
  sizeAtOpen: number | null;
  /** Who opened it: the reads ahead and the buffered writes sent later, outside any FUSE
   * call, act as that caller (as on a local disk, access was decided at open). */
  opener: Deadline['caller'];
}

/** For a kernel path that names one node of libfuse's only, a key for that node: the alias
 * of a replaced name (mount/replaced-alias.ts), or a hidden name's whole path as a wire
 * string (mount/orphans.ts); null for an ordinary path. */
function nodeKey(kernelPath: string): string | null {
  const alias = parseReplacedAlias(kernelPath);
  if (alias) return alias.key;
  return OrphanTable.isHiddenName(kernelPath) ? kernelToWire(kernelPath) : null;
}

export class DfsFileSystem {
  readonly attrs: AttrCache;
  /** Cache leases, when the client and config allow them. */
  readonly leases: MountLeases | null = null;
  readonly handles = new HandleTable<OpenFile>();
  /** Cluster-wide fcntl and flock locks (mount/locks.ts), when the client offers them. */
  readonly locks: MountLocks | null = null;
  /** Drops the kernel's cached pages of a file (patch item 13's invalidatePath), with or
   * without leases: a granted lock needs it (dropCachedData). Null: the hooks did not take. */
  dropKernelPages: ((kernelPath: string) => Promise<boolean>) | null = null;
  readonly orphans = new OrphanTable(orphanPrefix(process.pid));
  /** Who made the call being served (fuse-native's context(), set once the mount exists);
   * valid only synchronously, at the start of a handler. */
  callerOf: () => Fuse.Caller | null = () => null;
  private orphansDirMade = false;
  /** Opens in flight, by path: an orphan being opened is not removed at its last close, and
   * a rename or unlink of a name waits for the opens of it under way. */
  private readonly opening = new Map<string, Set<Promise<void>>>();
  /** atime ops in flight, by path (readAccess). */
  private readonly atimeUpdates = new Map<string, Promise<void>>();
  private readonly client: ClusterClient;
  private readonly logger: Logger;
  private readonly config: MountConfig;
  private readonly metrics: MountMetrics | null;
  /** The append stream of each file open with O_APPEND here, by inode: every O_APPEND
   * descriptor of a file shares one, so appends through several descriptors of this mount
   * land in the order they were made, as on a local disk, and still coalesce. A lost
   * append is reported by each of them (fsync(2) on Linux reports a file's write errors to
   * every descriptor too). */
  private readonly appendStreams = new Map<number, WriteBuffer>();
  /** What every handle's write buffer draws its dirty bytes from. */
  private readonly dirtyBudget: DirtyBudget;
  private warningSecond = 0;
  private warningsThisSecond = 0;
  private warningsSuppressed = 0;

  /** `metrics`: where FUSE requests are counted; none: not counted. */
  constructor(deps: { client: ClusterClient; logger: Logger; config: MountConfig; metrics?: MountMetrics }) {
    this.client = deps.client;
    this.logger = deps.logger;
    this.config = deps.config;
    this.metrics = deps.metrics ?? null;
    this.dirtyBudget = new DirtyBudget(this.config.mountDirtyBytesMax);
    if (this.metrics) this.metrics.dirtyBytes = () => this.dirtyBudget.bytesUsed;
    this.attrs = new AttrCache(this.config.attrTimeoutMs);
    const client = this.client;
    if (client.locks) {
      const locks = client.locks.bind(client);
      this.locks = new MountLocks({ locks }, this.logger, (fd) => this.handle(fd), {
        beforeChange: (fd, d) => this.flushAll(this.handles.related(this.handle(fd).path, this.handle(fd).ino), d),
        afterGrant: (fd, kernelPath) => this.dropCachedData(fd, kernelPath),
      });
    }
    if (this.config.leases && client.attrLeased && client.dirLeased && client.pollLeases) {
      const poll = client.pollLeases.bind(client);
      const leases = new MountLeases(randomUUID(), {
        poll: async (identity, acks, ackSession) => {
          const d = new Deadline(LEASE_POLL_DEADLINE_MS);
          try {
            return await poll(identity, acks, d, ackSession);
          } finally {
            d.dispose();
          }
        },
        dropped: (keys) => {
          this.attrs.dropKeys(keys);
          return this.dropKernel(keys);
        },
        logger: this.logger,
      });
      this.leases = leases;
      this.attrs.leaseValid = (ref) => leases.valid(ref);
    }
  }

  /** Lookups that missed, by directory, under the lease each was counted under
   * (wantsListing): one count per directory, so that runs of creates in several directories
   * at once (a parallel build, `cp -r` of many trees) each get their listing. */
  private readonly lookupMisses = new Map<string, { lease: LeaseRef; count: number }>();

  /** The kernel's caches, once the mount knows it may use them (patch item 13). */
  kernel: KernelCache | null = null;
  /** What the kernel was told it may keep, by lease key: kernel paths answered with a time
   * (names that exist, and names that do not), and until when the longest time runs. */
  private readonly kernelHeld = new Map<string, { untilMs: number; lastMs: number; paths: Set<string>; absent: Set<string> }>();
  /** Sources of links under way here, by path (a count): the kernel is given none of their
   * attributes meanwhile (kernelMayKeepAttr). */
  private readonly linking = new Map<string, number>();

  /**
   * How long the kernel may keep the answer to a getattr (or lookup) of `kernelPath`: only
   * an answer resting on a lease, for at most KERNEL_CACHE_MS_MAX and never past the lease
   * (less a margin). Nothing for a file with other names (the kernel gives each name its
   * own inode), one open for writing here (its size and times move with the writes sent),
   * a hidden or alias name, or with leases or the kernel hooks off. What it is told is
   * remembered by key, so that a revocation takes it back first (dropKernel).
   */
  private kernelTimes(kernelPath: string, code: number): Fuse.CacheTimes | undefined {
    if (!this.kernel || !this.leases || (code !== 0 && code !== ENOENT)) return undefined;
    if (nodeKey(kernelPath) !== null) return undefined;
    let p: string;
    try {
      p = this.fromKernel(kernelPath);
    } catch {
      return undefined;
    }
    if (this.orphans.isOrphan(p) || this.handles.related(p).some((h) => h.writable)) return undefined;
    const lease = this.attrs.leaseBehind(p);
    const ms = Math.floor(Math.min(KERNEL_CACHE_MS_MAX, this.leases.remainingMs(lease) - KERNEL_CACHE_MARGIN_MS));
    if (!lease || ms < KERNEL_CACHE_MS_MIN) return undefined;
    const nowMs = performance.now();
    let held = this.kernelHeld.get(lease.key);
    if (!held) this.kernelHeld.set(lease.key, (held = { untilMs: 0, lastMs: 0, paths: new Set(), absent: new Set() }));
    held.untilMs = Math.max(held.untilMs, nowMs + ms);
    held.lastMs = nowMs;
    if (code === 0) held.paths.add(kernelPath);
    else held.absent.add(kernelPath);
    if (code !== 0) return { entryMs: ms };
    const attr = this.attrs.get(p);
    return attr && this.kernelMayKeepAttr(p, attr) ? { entryMs: ms, attrMs: ms } : { entryMs: ms, attrMs: 0 };
  }

  /**
   * Whether the kernel may keep the attributes of `p` (leased, answered now as `attr`), not
   * only its name. A directory's, yes. A file's only while it has one name: the kernel gives
   * each name of a file its own inode, so a write through another name would leave what it
   * kept of this one stale; a link made through another mount revokes this directory's
   * lease (docs/leases.md), and one made here takes the source's attributes back from the
   * kernel before it is sent (link). Not under relatime either, where a read here changes
   * the atime the kernel would keep. Without this, a stat is two calls into the mount (the
   * lookup and the getattr), so is every name of an `ls -l`.
   */
  private kernelMayKeepAttr(p: string, attr: Attr): boolean {
    if ((attr.mode & S_IFMT) === S_IFDIR) return true;
    return attr.nlink <= 1 && this.config.atime === 'noatime' && !this.linking.has(p);
  }

  /** Takes back what the kernel keeps under `keys`; resolves once the kernel has dropped it
   * or its times have run out, whichever comes first (a notification may wait for a call
   * in the same directory, and that call for this revocation). */
  private dropKernel(keys: string[]): Promise<void> | void {
    if (!this.kernel) return;
    const kernel = this.kernel;
    const nowMs = performance.now();
    const waits: Promise<unknown>[] = [];
    let untilMs = 0;
    const takeBack = (paths: Set<string>, absent: Set<string>) => {
      for (const p of paths) waits.push(kernel.invalidatePath(p).catch(() => false));
      for (const p of absent) waits.push(kernel.invalidateEntry(p).catch(() => false));
    };
    for (const key of keys) {
      const held = this.kernelHeld.get(key);
      if (!held) continue;
      this.kernelHeld.delete(key);
      untilMs = Math.max(untilMs, held.untilMs);
      takeBack(held.paths, held.absent);
      if (nowMs - held.lastMs < KERNEL_REPLY_SLACK_MS) {
        const leftMs = KERNEL_REPLY_SLACK_MS - (nowMs - held.lastMs);
        waits.push(new Promise((resolve) => setTimeout(resolve, leftMs)).then(() => takeBack(held.paths, held.absent)));
      }
    }
    if (waits.length === 0 || untilMs <= nowMs) return;
    let timer: NodeJS.Timeout | undefined;
    const runOut = new Promise<void>((resolve) => (timer = setTimeout(resolve, untilMs - nowMs + 1)));
    // The second round's invalidations are added to `waits` when it runs: wait for it too.
    const all = async () => {
      for (let i = 0; i < waits.length; i++) await waits[i];
    };
    return Promise.race([all(), runOut]).then(() => clearTimeout(timer));
  }

  /** Takes back the attributes the kernel may keep of `p` (kernelMayKeepAttr) and waits
   * until it has, bounded (the inode alone: no lock a call on its directory holds). */
  private async forgetAttrInKernel(p: string): Promise<void> {
    if (this.kernel) await kernelTakesBack(this.kernel.invalidateInode(wireToKernel(p)));
  }

  /** Asks the kernel to drop what it may keep of `p` (a change it did not see made). */
  private forgetInKernel(p: string): void {
    if (!this.kernel) return;
    void this.kernel.invalidatePath(wireToKernel(p)).catch(() => false);
  }

  /** What ops name this mount as (the cluster leaves its own leases alone), or undefined. */
  leaseIdentity(): string | undefined {
    return this.leases?.identity;
  }

  // ---- The handler table --------------------------------------------------------

  handlers(): Fuse.Handlers {
    return {
      init: (cb) => cb(0),
      getattr: (path, cb) => {
        const ctimeOnly = this.callerOf()?.ctimeOnly === true;
        // Most getattrs are answered from the cache: then at once, without the deadline,
        // timer and promises a call that may go to the cluster needs.
        const hit = ctimeOnly ? undefined : this.cachedAttrNow(path);
        // An absent name a file here is open as may be an fchmod's getattr (getattrOrFd).
        if (hit !== undefined && !(hit === null && this.handles.openAs(kernelToWire(path)).length > 0)) {
          this.answeredAtOnce('getattr', hit === null ? ENOENT : 0);
          if (hit === null) cb(ENOENT, undefined, this.kernelTimes(path, ENOENT));
          else cb(0, toStat(hit), this.kernelTimes(path, 0));
          return;
        }
        const caller = this.callerOf();
        this.serve('getattr', path, (d) => this.getattrOrFd(this.fromKernel(path), d, ctimeOnly, caller), (code, attr) => cb(code, attr && toStat(attr), this.kernelTimes(path, code)));
      },
      fgetattr: (path, fd, cb) => {
        const ctimeOnly = this.callerOf()?.ctimeOnly === true;
        const h = this.handles.get(fd);
        this.serve('getattr', path, (d) => (h && !ctimeOnly ? this.fgetattr(h, d) : this.getattr(h?.path ?? this.fromKernel(path), d, ctimeOnly)), (code, attr) => cb(code, attr && toStat(attr)));
      },
      access: (path, _mode, cb) => this.serve('access', path, (d) => this.getattr(this.fromKernel(path), d), (code) => cb(code)),
      statfs: (path, cb) => this.serve('statfs', path, (d) => this.statfs(d), (code, st) => cb(code, st)),
      readdir: (path, cb) =>
        this.serve('readdir', path, (d) => this.readdir(this.fromKernel(path), d), (code, r) => (r ? cb(code, r.names.map(wireToKernel), r.stats) : cb(code))),
      readlink: (path, cb) =>
        this.serve('readlink', path, (d) => this.client.link(checkPath(this.fromKernel(path)), d), (code, target) => cb(code, target === undefined ? target : wireToKernel(target))),
      mkdir: (path, mode, cb, caller) => this.serve('mkdir', path, (d) => this.mkdir(this.fromKernel(path, 'new'), mode, ownerOf(caller), d), cb),
      rmdir: (path, cb) => this.serve('rmdir', path, (d) => this.rmdir(this.fromKernel(path), d), cb),
      unlink: (path, cb) => this.serve('unlink', path, (d) => this.unlinkFromKernel(kernelToWire(path), d), cb),
      rename: (from, to, cb) => {
        // Synchronously, while the caller's thread is still in its system call.
        const caller = this.callerOf();
        this.serve('rename', from, (d) => this.renameFromKernel(kernelToWire(from), kernelToWire(to), caller, d), (code, keep) =>
          cb(code === 0 && keep === true ? RENAME_KEEP_REPLACED : code),
        );
      },
      link: (from, to, cb) => this.serve('link', from, (d) => this.link(this.fromKernel(from, 'source'), this.fromKernel(to, 'new'), d), cb),
      symlink: (target, path, cb, caller) => this.serve('symlink', path, (d) => this.symlink(kernelToWire(target), this.fromKernel(path, 'new'), ownerOf(caller), d), cb),
      chmod: (path, mode, cb) => {
        // fchmod(2) comes without its handle (mount/fd-calls.ts): read now, while the
        // caller's thread is still in its system call.
        const caller = this.callerOf();
        const viaFd = caller !== null && inFdSyscall(caller.pid);
        this.serve('chmod', path, (d) => this.chmod(this.fromKernel(path), mode, d, viaFd), cb);
      },
      chown: (path, uid, gid, cb) => this.serve('chown', path, (d) => this.chown(this.fromKernel(path), uid, gid, d), cb),
      utimens: (path, atime, mtime, cb) => this.serve('utimens', path, (d) => this.utimens(this.fromKernel(path), atime, mtime, d), cb),
      truncate: (path, size, cb) => {
        const caller = this.callerOf();
        this.serve('truncate', path, (d) => this.truncate(this.fromKernel(path), size, caller, d), cb);
      },
      ftruncate: (path, fd, size, cb) => {
        const caller = this.callerOf();
        this.serve('ftruncate', path, (d) => this.ftruncate(fd, size, caller, d), cb);
      },
      fallocate: (path, fd, mode, offset, length, cb) => this.serve('fallocate', path, (d) => this.fallocate(fd, mode, offset, length, d), cb),
      ...(this.locks ? this.lockHandlers(this.locks) : {}),
      mknod: (path, mode, dev, cb, caller) => this.serve('mknod', path, (d) => this.mknod(this.fromKernel(path, 'new'), mode, dev, ownerOf(caller), d), cb),
      setxattr: (path, name, value, _position, flags, cb) => {
        // fuse-native hands over the kernel's buffer, detached once this call returns.
        const copy = Buffer.from(value);
        this.serve('setxattr', path, (d) => this.setxattr(this.fromKernel(path), name, copy, flags, d), cb);
      },
      getxattr: (path, name, _position, cb) => {
        // The kernel asks for security.capability before every write and for security.selinux
        // and system.posix_acl_access on every ls -l: those namespaces are never stored, so
        // they are answered here at once, without a deadline, an error object or a promise.
        if (KNOWN_XATTR_NAMESPACES.some((ns) => name.startsWith(ns))) {
          this.answeredAtOnce('getxattr', ENODATA);
          cb(ENODATA);
          return;
        }
        this.serve('getxattr', path, (d) => this.getxattr(this.fromKernel(path), name, d), (code, value) => cb(code, value));
      },
      listxattr: (path, cb) => {
        const caller = this.callerOf();
        this.serve('listxattr', path, (d) => this.listxattr(this.fromKernel(path), caller, d), (code, names) => cb(code, names));
      },
      removexattr: (path, name, cb) => this.serve('removexattr', path, (d) => this.removexattr(this.fromKernel(path), name, d), cb),
      create: (path, mode, cb, caller, flags) =>
        this.serve('create', path, (d) => this.create(this.fromKernel(path, 'new'), mode, flags, ownerOf(caller), d), (code, fh) => cb(code, fh)),
      open: (path, flags, cb) =>
        this.serve('open', path, (d) => this.open(this.fromKernel(path), flags, d, nodeKey(path)), (code, fh) => cb(code, fh)),
      read: (path, fd, buf, len, pos, cb) =>
        this.serve(
          'read',
          path,
          (d) => this.read(fd, len, pos, d),
          // The data is copied into the kernel's buffer only here, when the call is answered:
          // after a deadline the buffer belongs to libfuse again.
          (code, data) => {
            const copied = code < 0 ? code : data ? data.copy(buf, 0, 0, Math.min(len, data.length)) : 0;
            if (copied > 0) this.metrics?.bytes.inc({ direction: 'read' }, copied);
            cb(copied);
          },
        ),
      write: (path, fd, buf, len, pos, cb) => {
        const caller = this.callerOf();
        this.serve('write', path, (d) => this.write(fd, buf, len, pos, caller, d), (code) => {
          if (code === 0) this.metrics?.bytes.inc({ direction: 'write' }, len);
          cb(code < 0 ? code : len);
        });
      },
      // A handle that never buffered a write has nothing to send: its flush, and its
      // release unless it was the last of an unlinked file, are answered at once.
      flush: (path, fd, cb) => {
        const h = this.handles.get(fd);
        if (h && !h.writes) {
          this.answeredAtOnce('flush', 0);
          cb(0);
          return;
        }
        this.serve('flush', path, (d) => this.flushHandle(fd, d), cb);
      },
      fsync: (path, _datasync, fd, cb) => this.serve('fsync', path, (d) => this.flushHandle(fd, d), cb),
      release: (path, fd, cb) => {
        const h = this.handles.get(fd);
        if (!h || h.writes) return this.serve('release', path, (d) => this.release(fd, d), cb);
        this.closeHandle(h);
        // The last descriptor of an unlinked file: it goes now (release does the same).
        if (this.orphanUnused(h.path)) return this.serve('release', path, (d) => this.removeOrphan(h.path, d), cb);
        this.answeredAtOnce('release', 0);
        cb(0);
      },
    };
  }

  /** fcntl and flock locks (patch item 17), sent to the cluster by mount/locks.ts. */
  private lockHandlers(locks: MountLocks): Pick<Fuse.Handlers, 'lock' | 'flock'> {
    return {
      lock: (path, fd, cmd, lock, owner, cb) =>
        this.serve('lock', path, (d) => locks.lock(path, fd, cmd, lock, owner, d), (code, r) => (code !== 0 ? cb(code) : typeof r === 'object' ? cb(0, r) : cb(r ?? 0))),
      flock: (path, fd, op, owner, cb) => {
        const pid = this.callerOf()?.pid ?? 0;
        this.serve('flock', path, (d) => locks.flock(path, fd, op, owner, pid, d), (code, r) => cb(code === 0 ? (r ?? 0) : code));
      },
    };
  }

  /** After a lock is granted: what this mount and the kernel keep of the file's data and
   * attributes may predate the last holder's writes (mount/locks.ts), so it goes. */
  private async dropCachedData(fd: number, kernelPath: string): Promise<void> {
    const h = this.handle(fd);
    this.invalidateReads(h.path, h.ino);
    this.dropAttrs(h.path, h.multiLink, h.ino);
    const drop = this.dropKernelPages;
    if (!drop) return;
    // Nothing of this file is locked by the lock call in the kernel, so waiting is safe;
    // bounded all the same.
    await kernelTakesBack(drop(kernelPath));
  }

  /** Counts a call answered in the handler itself, without a promise or the cluster: its
   * time is recorded as 0 s (it is microseconds, below the first bucket). */
  private answeredAtOnce(name: string, code: number): void {
    if (!this.metrics) return;
    this.metrics.fuseRequests.inc({ op: name });
    this.metrics.opDuration.observe({ op: name }, 0);
    if (code < 0) this.metrics.opErrors.inc({ op: name, errno: errnoName(code) });
  }

  /** Runs one FUSE call under its deadline and answers it exactly once. `name` is the
   * metrics label: always a literal from the handler table, never a path. */
  private serve<T>(
    name: string,
    path: string,
    work: (d: Deadline) => Promise<T>,
    reply: (code: number, value?: T) => void,
  ): void {
    this.metrics?.fuseRequests.inc({ op: name });
    const d = new Deadline(this.config.deadlineMs);
    // Who asks, read now: fuse-native's context is valid only until the handler awaits.
    const caller = this.callerOf();
    if (caller) d.caller = { uid: caller.uid, gid: caller.gid, groups: callerGroups.of(caller.pid, caller.uid, caller.gid) };
    const startMs = Date.now();
    const startNs = this.metrics ? process.hrtime.bigint() : 0n;
    const answered = (code: number): void => {
      if (!this.metrics) return;
      this.metrics.opDuration.observe({ op: name }, Number(process.hrtime.bigint() - startNs) / 1e9);
      if (code < 0) this.metrics.opErrors.inc({ op: name, errno: errnoName(code) });
    };
    let p: Promise<T>;
    try {
      p = work(d);
    } catch (err) {
      p = Promise.reject(err);
    }
    raceDeadline(p, d).then(
      (value) => {
        d.dispose();
        answered(0);
        reply(0, value);
      },
      (err: unknown) => {
        d.dispose();
        const code = errnoOfError(err);
        if (!(err instanceof DfsError)) {
          // Not an operational failure: a bug. Answer EIO so the application is not left
          // hanging, and say so loudly.
          this.logger.error({ op: name, path, err }, 'unexpected error in FUSE handler');
        } else if (code === EIO) {
          if (this.allowWarning()) {
            this.logger.warn({ op: name, path, code: err.code, errno: err.errno, why: err.message, ms: Date.now() - startMs, suppressed: this.warningsSuppressed }, 'call failed');
            this.warningsSuppressed = 0;
          }
        } else {
          this.logger.debug({ op: name, path, errno: err.errno ?? err.code }, 'call answered with an error');
        }
        answered(code);
        reply(code);
      },
    );
  }

  /** With the cluster down every call fails: log a few per second, and count the rest. */
  private allowWarning(): boolean {
    const second = Math.floor(Date.now() / 1000);
    if (second !== this.warningSecond) {
      this.warningSecond = second;
      this.warningsThisSecond = 0;
    }
    if (this.warningsThisSecond >= WARNINGS_PER_SECOND_MAX) {
      this.warningsSuppressed++;
      return false;
    }
    this.warningsThisSecond++;
    return true;
  }

  // ---- Paths from the kernel -------------------------------------------------------

  /** The cluster path a kernel path stands for: the kernel's bytes (one latin1 char each,
   * from the patched fuse-native) as a wire string (common/names.ts); a name libfuse made up
   * to hide an open file is its orphan (mount/orphans.ts); and the orphan directory itself is
   * not there for the kernel (nor can it be created). */
  private fromKernel(kernelPath: string, role: 'existing' | 'new' | 'source' = 'existing'): string {
    // A call on a node that was opened through such a name reaches the file it opened (the
    // name may stand for another file by now).
    const key = nodeKey(kernelPath);
    const held = key === null ? undefined : this.handles.all().find((h) => h.openedAs === key);
    if (held) return held.path;
    return this.resolveWire(kernelToWire(parseReplacedAlias(kernelPath)?.path ?? kernelPath), role);
  }

  /** fromKernel for a path already converted to a wire string. A 'source' is what a rename
   * or link takes from (OrphanTable.resolveSource). */
  private resolveWire(path: string, role: 'existing' | 'new' | 'source' = 'existing'): string {
    if (isReservedPath(path)) {
      throw role === 'new'
        ? new DfsError('FS_ERROR', `${ORPHANS_DIR} is reserved for open files that were unlinked`, 'EPERM')
        : new DfsError('FS_ERROR', 'no such file', 'ENOENT');
    }
    return role === 'source' ? this.orphans.resolveSource(path) : this.orphans.resolve(path);
  }

  // ---- Attributes ----------------------------------------------------------------

  /** What getattr would answer for `kernelPath` from the cache alone (null: no such entry),
   * or undefined when it has to wait or ask: a bad or reserved path, an atime change on
   * its way, nothing usable cached. Answers exactly as getattr does. */
  private cachedAttrNow(kernelPath: string): Attr | null | undefined {
    let p: string;
    try {
      p = checkPath(this.fromKernel(kernelPath));
    } catch {
      return undefined; // getattr says why
    }
    if (this.atimeUpdates.has(p)) return undefined;
    if (this.appendsPending(p)) return undefined;
    const cached = this.attrs.lookup(p);
    return cached === undefined || cached === null ? cached : this.asSeen(p, cached);
  }

  /** Attributes of `p` as the application sees them: with the writes buffered here, and
   * an orphan's own hidden name not counted. */
  private asSeen(p: string, cached: Attr): Attr {
    const attr = this.withBufferedSize(p, cached);
    return this.orphans.isOrphan(p) ? { ...attr, nlink: Math.max(0, attr.nlink - 1) } : attr;
  }

  /** `ctimeOnly`: libfuse is answering a kernel SETATTR that changes nothing but ctime
   * (chown(f, -1, -1); the dfs patch flags it), so ctime moves first. */
  private async getattr(path: string, d: Deadline, ctimeOnly = false): Promise<Attr> {
    const p = checkPath(path);
    if (ctimeOnly) await this.setattr(p, { type: 'ctime', path: p }, d);
    await this.flushAppends(p, undefined, d);
    const atime = this.atimeUpdates.get(p);
    if (atime) await raceDeadline(atime, d);
    let cached = this.attrs.lookup(p);
    if (cached === undefined && this.wantsListing(p)) {
      // Names keep being asked for one by one in a directory with no listing here (a run
      // of creates, each looked up first): one listing answers them all from now on. The
      // listing is the mount's own read, not the caller's (who may search the directory
      // without being allowed to list it): it names no caller, and if it is refused the
      // name is asked for alone.
      const caller = d.caller;
      d.caller = null;
      try {
        await this.listDir(parentOf(p), d);
        cached = this.attrs.lookup(p);
      } catch {
        cached = undefined;
      } finally {
        d.caller = caller;
      }
    }
    if (cached === null) throw new DfsError('FS_ERROR', 'no such file', 'ENOENT');
    return this.asSeen(p, cached ?? (await this.fetchAttr(p, d)));
  }

  /**
   * fstat(2) and the kernel's size checks on an open file: its inode's attributes wherever
   * it is now, so a rename through another mount changes nothing for it (the cached ones
   * only when they are of this inode). Appends buffered for the file are committed first:
   * only the cluster knows where they land, and so the size.
   */
  private async fgetattr(h: OpenFile, d: Deadline): Promise<Attr> {
    await this.flushAppends(h.path, h.ino, d);
    const atime = this.atimeUpdates.get(h.path);
    if (atime) await raceDeadline(atime, d);
    const cached = this.attrs.lookup(h.path);
    let attr: Attr | null = cached && (h.ino === 0 || cached.ino === h.ino) ? cached : null;
    if (attr === null && cached === undefined) {
      // Asked by path first, as a stat is, so the answer is cached under a lease and the
      // next fstat costs nothing; only when the name no longer holds this inode is it
      // asked for by number.
      const caller = d.caller;
      attr = await this.fetchAttr(h.path, d).catch((err: unknown) => {
        if (err instanceof DfsError && err.errno === 'ENOENT') return null;
        throw err;
      });
      d.caller = caller;
      if (attr && h.ino !== 0 && attr.ino !== h.ino) attr = null;
    }
    if (attr === null) {
      d.caller = this.asCaller(h.path, d.caller);
      attr = await this.client.attr(h.path, d, h.ino || undefined);
    }
    this.sizeSeen(h, attr.size);
    return this.asSeen(h.path, attr);
  }

  /**
   * The kernel asks for an open file's attributes before it reads past the size it knows
   * (attributes of files are never cached by it): when the size changed through another
   * mount, the windows read ahead for this handle are dropped, so a descriptor kept open
   * reads what was appended since (tail -f) rather than the end of file a window found.
   */
  private sizeSeen(h: OpenFile, size: number): void {
    if (h.sizeAtOpen === null || size === h.sizeAtOpen) return;
    h.sizeAtOpen = size;
    h.readAhead?.invalidate();
  }

  /**
   * getattr, but for the one libfuse 2 makes after an fchmod (it has no handle to make it
   * with): a name another mount moved the open file away from is ENOENT by path, and the
   * caller's descriptor is reached by its inode instead (mount/fd-calls.ts). /proc is read
   * only on that ENOENT, never on the common path.
   */
  private async getattrOrFd(p: string, d: Deadline, ctimeOnly: boolean, caller: Fuse.Caller | null): Promise<Attr> {
    try {
      return await this.getattr(p, d, ctimeOnly);
    } catch (err) {
      const open = caller !== null && err instanceof DfsError && err.errno === 'ENOENT' ? this.handles.openAs(p) : [];
      const h = open[0];
      if (!h || h.ino === 0 || !open.every((o) => o.ino === h.ino) || !inFdSyscall(caller!.pid)) throw err;
      return this.fgetattr(h, d);
    }
  }

  /** Whether appends are buffered for the file at `p` (or of inode `ino`). */
  private appendsPending(p: string, ino?: number): boolean {
    return this.handles.related(p, ino).some((h) => h.append && h.writes?.dirty);
  }

  /** Commits the appends buffered for the file at `p` (or of inode `ino`). */
  private async flushAppends(p: string, ino: number | undefined, d: Deadline): Promise<void> {
    if (this.appendsPending(p, ino)) await this.flushAll(this.handles.related(p, ino).filter((h) => h.append), d);
  }

  /** Whether a lookup of `p`, not cached, should fetch its directory's listing instead:
   * when LISTING_AFTER_MISSES lookups in that directory under one lease missed. */
  private wantsListing(p: string): boolean {
    if (!this.leases || p === '/') return false;
    const dir = parentOf(p);
    const lease = this.leases.current(dir);
    if (!lease) return false;
    let m = this.lookupMisses.get(dir);
    if (!m || m.lease !== lease) {
      if (this.lookupMisses.size >= LOOKUP_MISS_DIRS_MAX) this.lookupMisses.clear();
      this.lookupMisses.set(dir, (m = { lease, count: 0 }));
    }
    return ++m.count >= LISTING_AFTER_MISSES;
  }

  /** Asks the cluster, bypassing the cache, and caches the answer (under a lease when the
   * cluster grants one, the absence of the entry too). */
  private async fetchAttr(p: string, d: Deadline): Promise<Attr> {
    d.caller = this.asCaller(p, d.caller);
    const generation = this.attrs.generation;
    if (this.leases && this.client.attrLeased) {
      const identity = this.leases.identity;
      const { attr, grant } = await this.client.attrLeased(p, d, identity);
      const lease = grant ? this.leases.granted(leaseKeyOf(p), grant, identity) : null;
      this.attrs.setLeased(p, attr, lease, generation);
      if (attr === null) throw new DfsError('FS_ERROR', 'no such file', 'ENOENT');
      return attr;
    }
    const attr = await this.client.attr(p, d);
    this.attrs.setIfUnchanged(p, attr, generation);
    return attr;
  }

  /** A directory's entries: the leased listing if this mount holds one, else the cluster's
   * (cached under a lease when granted). */
  private async listDir(p: string, d: Deadline): Promise<{ entries: DirEntry[] }> {
    const generation = this.attrs.generation;
    const held = this.attrs.listing(p);
    if (held) return { entries: [...held.byName].map(([name, attr]) => ({ name, attr })) };
    if (this.leases && this.client.dirLeased) {
      const identity = this.leases.identity;
      const { entries, grant } = await this.client.dirLeased(p, d, identity);
      const lease = grant ? this.leases.granted(p, grant, identity) : null;
      this.attrs.setListing(p, entries, lease, generation, (name) => childPath(p, name));
      return { entries };
    }
    const entries = await this.client.dir(p, d);
    for (const e of entries) this.attrs.setIfUnchanged(childPath(p, e.name), e.attr, generation);
    return { entries };
  }

  /** A regular file with writes still buffered here is at least as long as they reach. */
  private withBufferedSize(p: string, attr: Attr): Attr {
    if ((attr.mode & S_IFMT) !== S_IFREG) return attr;
    let size = attr.size;
    for (const h of this.handles.related(p, attr.ino)) if (h.writes) size = Math.max(size, h.writes.dirtyEnd);
    return size === attr.size ? attr : { ...attr, size };
  }

  private async statfs(d: Deadline): Promise<Fuse.StatFs> {
    const st = await this.client.statfs(d);
    // fuse-native passes every field as a uint32: count in larger blocks when the numbers
    // would not fit, as statvfs(3) allows (f_frsize is the unit of the block counts).
    let bsize = st.bsize > 0 ? st.bsize : 4096;
    let blocks = st.blocks;
    let bfree = st.bfree;
    let bavail = st.bavail;
    while (blocks > UINT32_MAX) {
      bsize *= 2;
      blocks = Math.floor(blocks / 2);
      bfree = Math.floor(bfree / 2);
      bavail = Math.floor(bavail / 2);
    }
    return {
      bsize,
      frsize: bsize,
      blocks,
      bfree,
      bavail,
      files: Math.min(st.files, UINT32_MAX),
      ffree: Math.min(st.ffree, UINT32_MAX),
      favail: Math.min(st.ffree, UINT32_MAX),
      fsid: 0,
      flag: 0,
      namemax: st.namemax || 255,
    };
  }

  private async readdir(path: string, d: Deadline): Promise<{ names: string[]; stats: Fuse.Stat[] }> {
    const p = checkPath(path);
    const { entries } = await this.listDir(p, d);
    if (this.config.atime === 'relatime') this.readAccess(p, this.attrs.get(p) ?? (await this.fetchAttr(p, d)));
    const names = ['.', '..'];
    const dirStub = (a: Attr | undefined): Fuse.Stat => (a ? toStat(a) : toStat(stubDirAttr()));
    const stats = [dirStub(this.attrs.get(p)), dirStub(this.attrs.get(parentOf(p)))];
    for (const e of entries) {
      if (p === '/' && `/${e.name}` === ORPHANS_DIR) continue;
      const child = childPath(p, e.name);
      names.push(e.name);
      stats.push(toStat(this.withBufferedSize(child, e.attr)));
    }
    return { names, stats };
  }

  /**
   * A file was read or a directory listed: atime moves as relatime says (relatimeDue), by an
   * `atime` op that the storage nodes decide on again with the cluster's time. The read does
   * not wait for it; a stat through this mount does (getattr), so the change is there to
   * see as on a local disk. Most reads need none: only the first after a change, or a day.
   */
  private readAccess(p: string, attr: Attr, through?: OpenFile): void {
    if (this.config.atime !== 'relatime' || !relatimeDue(attr, Date.now()) || this.atimeUpdates.has(p)) return;
    const d = new Deadline(this.config.deadlineMs);
    // Its result is not kept: it runs in the background, and may come back after a fresher
    // answer than its own.
    const done = this.client
      .op({ type: 'atime', path: p, ...(through ? inoOf(through) : {}) }, undefined, d)
      .then(
        () => undefined,
        (err: unknown) => this.logger.debug({ err, path: p }, 'atime not updated'),
      )
      .finally(() => {
        d.dispose();
        this.attrs.invalidate(p);
        this.forgetInKernel(p);
        this.atimeUpdates.delete(p);
      });
    this.atimeUpdates.set(p, done);
  }

  // ---- Namespace ops -------------------------------------------------------------

  /** Sends one op that makes or changes the entry `p` (if given): drops what the cache held
   * for it and its parent once the op is done, whatever the outcome (an answer fetched
   * meanwhile may predate the op, and the generation check refuses it), then caches the
   * attributes the op reports. `drop` replaces that dropping when given.
   *
   * An op that adds or removes a name (`names`) also keeps the directory's leased listing
   * and attributes current rather than dropping them, so that a run of creates or unlinks
   * in one directory asks the cluster once per call: only when the mount held that listing
   * and lease when the op left and nothing else in the cache changed while it was on its
   * way (another call of this mount may have changed the directory meanwhile, and its
   * result may have come first). */
  private async mutate(op: Op, d: Deadline, p?: string, data?: Buffer, names?: { dir: string; name: string; added: boolean }, drop?: () => void, caller?: Caller): Promise<OpResult> {
    const generation = this.attrs.generation;
    // The lease held when the op leaves: its result is as fresh as that lease while it
    // holds (a lease granted later may postdate a change after this op).
    const lease = p !== undefined ? (this.leases?.current(leaseKeyOf(p)) ?? null) : null;
    const dirLease = names ? (this.leases?.current(leaseKeyOf(names.dir)) ?? null) : null;
    const listing = names ? this.attrs.listing(names.dir) : undefined;
    const dropNow = drop ?? (() => p !== undefined && this.attrs.invalidate(p));
    let r: OpResult;
    try {
      r = await this.client.op(op, data, d, caller);
    } catch (err) {
      dropNow();
      throw err;
    }
    // Nothing this op's result covers (its path, its directory) changed through another
    // call of this mount while it was on its way.
    const quiet = !(p !== undefined && this.attrs.changedSince(generation, p, r.attr?.ino)) && !(names && this.attrs.changedSince(generation, names.dir));
    const listingNow = names ? this.attrs.listing(names.dir) : undefined;
    dropNow();
    if (p !== undefined && r.attr) this.attrs.setOwn(p, r.attr, quiet ? lease : null);
    if (names && quiet) {
      if (r.parent) this.attrs.setOwn(names.dir, r.parent, dirLease);
      if (listing && listingNow === listing) this.attrs.keepListing(names.dir, listing, names.name, names.added && r.attr ? r.attr : null);
    }
    return r;
  }

  private async mkdir(path: string, mode: number, owner: Owner, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    this.attrs.forget(p);
    await this.mutate({ type: 'mkdir', path: p, mode: mode & 0o7777, uid: owner.uid, gid: owner.gid }, d, p, undefined, nameOf(p, true), undefined, owner);
  }

  private async rmdir(path: string, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    try {
      await this.mutate({ type: 'rmdir', path: p }, d);
    } finally {
      this.attrs.invalidateTree(p);
    }
  }

  /** unlink from the kernel: libfuse unlinks a hidden name after the last close of its file,
   * which the mount has usually done already (release). */
  private async unlinkFromKernel(path: string, d: Deadline): Promise<void> {
    if (OrphanTable.isHiddenName(path)) {
      if (this.orphans.takeRetired(path)) return;
      const orphan = this.orphans.orphanOf(path);
      if (orphan !== undefined) {
        // Still open here (an open that raced libfuse's last release): its last close
        // removes it, and until then the hidden name stands for it.
        if (!this.orphanUnused(orphan)) return;
        this.orphans.forget(orphan);
        return this.unlink(orphan, d);
      }
      // Its orphan is gone, and the name it was hidden from holds another file.
      if (this.orphans.wasRenamedOver(path)) return;
    }
    const p = this.resolveWire(path);
    // Open here on a node libfuse does not know as open (it was opened through the alias
    // of a replaced name: mount/replaced-alias.ts), so libfuse did not hide it; libfuse
    // does not hold such an open back either, so the opens under way are waited for.
    await this.opensSettled(p);
    if (this.handles.related(p).length > 0) {
      await this.toOrphan(checkEntryPath(p), false, d);
      return;
    }
    return this.unlink(p, d);
  }

  private async unlink(path: string, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    const multi = this.mayHaveOtherNames(p);
    // The other names of the inode changed too: their link count.
    await this.mutate({ type: 'unlink', path: p }, d, undefined, undefined, nameOf(p, false), () => this.dropAttrs(p, multi));
  }

  /** rename from the kernel: either libfuse hiding an open file, or a rename. True when
   * libfuse may keep the replaced entry's node under an alias (mount/replaced-alias.ts). */
  private async renameFromKernel(from: string, to: string, caller: Fuse.Caller | null, d: Deadline): Promise<boolean> {
    if (OrphanTable.isHiddenName(to) && this.orphans.resolve(to) === to && !isReservedPath(from)) {
      await this.hide(this.orphans.resolve(from), to, caller, d);
      return false;
    }
    return this.rename(this.resolveWire(from, 'source'), this.resolveWire(to, 'new'), d);
  }

  /** libfuse hides the open file `p` under `hiddenPath` because the caller unlinks it or
   * renames another file over it: keep it as an orphan (mount/orphans.ts). */
  private async hide(p: string, hiddenPath: string, caller: Fuse.Caller | null, d: Deadline): Promise<void> {
    checkEntryPath(p);
    // A rename over the open file: the name must stay until that rename replaces it.
    const keepName = caller !== null && inRenameSyscall(caller.pid) === true;
    const orphan = await this.toOrphan(p, keepName, d);
    this.orphans.add(hiddenPath, orphan, keepName ? p : null);
  }

  /** Moves the file at `p` (renamed, or linked when `keepName`) to a fresh orphan, with
   * the handles open on it here. */
  private async toOrphan(p: string, keepName: boolean, d: Deadline): Promise<string> {
    const orphan = this.orphans.nextPath();
    const ino = this.attrs.get(p)?.ino;
    const open = this.handles.related(p);
    await this.flushAll(open, d);
    await this.makeOrphansDir(d);
    const multi = this.mayHaveOtherNames(p);
    try {
      await this.mutate(keepName ? { type: 'link', from: p, to: orphan } : { type: 'rename', from: p, to: orphan }, d);
    } finally {
      this.dropAttrs(p, multi || keepName, ino);
    }
    for (const h of open) h.path = orphan;
    return orphan;
  }

  private async makeOrphansDir(d: Deadline): Promise<void> {
    if (this.orphansDirMade) return;
    try {
      // Only the mount itself reaches it (the kernel never sees it), as root.
      await this.client.op({ type: 'mkdir', path: ORPHANS_DIR, mode: 0o700, uid: 0, gid: 0 }, undefined, d);
    } catch (err) {
      if (!(err instanceof DfsError && err.errno === 'EEXIST')) throw err;
    }
    this.orphansDirMade = true;
  }

  /** Removes the orphans that mounts on this host left behind when they died (best effort:
   * a failure is logged and the orphans wait for the next mount). */
  async removeStaleOrphans(): Promise<number> {
    const d = new Deadline(this.config.deadlineMs);
    let removed = 0;
    try {
      let entries: Array<{ name: string }>;
      try {
        entries = await this.client.dir(ORPHANS_DIR, d);
      } catch (err) {
        if (err instanceof DfsError && err.errno === 'ENOENT') return 0;
        throw err;
      }
      for (const e of entries) {
        const pid = orphanOwner(e.name);
        if (pid === null || pid === process.pid || processExists(pid)) continue;
        await this.client.op({ type: 'unlink', path: `${ORPHANS_DIR}/${e.name}` }, undefined, d);
        removed++;
      }
    } catch (err) {
      this.logger.warn({ err, removed }, 'could not remove the orphans of dead mounts');
    } finally {
      d.dispose();
    }
    return removed;
  }

  /** True when the rename replaced an entry that is not a directory with one of its type. */
  private async rename(from: string, to: string, d: Deadline): Promise<boolean> {
    const src = checkEntryPath(from, 'from');
    const dst = checkEntryPath(to, 'to');
    // Writes buffered under the old name must not be applied after the rename, nor writes
    // to a file the rename replaces.
    await this.flushAll([...this.handles.within(src), ...this.handles.related(dst)], d);
    // Open here on a node libfuse does not know as open (opened through the alias of a
    // replaced name: mount/replaced-alias.ts), so libfuse did not hide it: the holders keep
    // the file they opened.
    if (src !== dst) {
      await this.opensSettled(dst);
      if (this.handles.related(dst).length > 0) await this.toOrphan(dst, true, d);
    }
    const replacedMulti = this.attrs.get(dst) !== undefined && this.mayHaveOtherNames(dst);
    try {
      const r = await this.mutate({ type: 'rename', from: src, to: dst }, d);
      this.handles.rename(src, dst);
      this.orphans.rename(src, dst);
      for (const h of this.handles.all()) {
        if (h.openedAs !== null && OrphanTable.isHiddenName(h.openedAs)) h.openedAs = renamePath(h.openedAs, src, dst) ?? h.openedAs;
      }
      const type = r.attr && r.attr.mode & S_IFMT;
      return r.replacedMode !== undefined && type !== S_IFDIR && type === (r.replacedMode & S_IFMT);
    } finally {
      this.attrs.invalidateTree(src);
      this.attrs.invalidateTree(dst);
      // A replaced file with other names: their link count dropped.
      if (replacedMulti) this.attrs.clear();
    }
  }

  private async link(from: string, to: string, d: Deadline): Promise<void> {
    const src = checkEntryPath(from, 'from');
    const dst = checkEntryPath(to, 'to');
    // The kernel may keep the source's attributes (kernelMayKeepAttr), which say one link:
    // none is given it while the link is under way, and what it keeps is taken back before
    // the link is sent (an inode's attributes need no lock the link call holds), and again
    // after, for a getattr answered just before the link began whose reply reached the
    // kernel after the first notification (FUSE threads send replies on their own).
    this.linking.set(src, (this.linking.get(src) ?? 0) + 1);
    try {
      await this.forgetAttrInKernel(src);
      await this.mutate({ type: 'link', from: src, to: dst }, d);
      await this.forgetAttrInKernel(src);
    } finally {
      // Every name of the inode has a new link count; some may not be matched by inode
      // number (see dropAttrs), and links are rare: start afresh.
      this.attrs.clear();
      const n = (this.linking.get(src) ?? 1) - 1;
      if (n <= 0) this.linking.delete(src);
      else this.linking.set(src, n);
    }
  }

  private async symlink(target: string, path: string, owner: Owner, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    this.attrs.forget(p);
    await this.mutate({ type: 'symlink', path: p, target, uid: owner.uid, gid: owner.gid }, d, p, undefined, nameOf(p, true), undefined, owner);
  }

  // ---- Attribute changes ---------------------------------------------------------

  /** Runs a change to the attributes of `p` after flushing the writes buffered for it. */
  private async setattr(p: string, op: Op, d: Deadline, knownIno?: number, through?: OpenFile): Promise<void> {
    const ino = knownIno ?? this.attrs.get(p)?.ino;
    await this.flushAll(this.handles.related(p, ino), d);
    const multi = this.mayHaveOtherNames(p);
    let r: OpResult;
    try {
      r = await this.mutate(op, d);
    } finally {
      this.dropAttrs(p, multi, ino);
      this.invalidateReads(p, ino);
    }
    // A change through an open file lands where its inode is now.
    if (through && this.followInode(through, r)) return;
    if (r.attr) this.attrs.setOwn(p, r.attr);
  }

  private async chmod(path: string, mode: number, d: Deadline, viaFd = false): Promise<void> {
    const p = checkPath(path);
    // fchmod of a file open here: by its inode, wherever another mount moved it (when the
    // handles open on that name agree on one inode).
    const open = viaFd ? this.handles.openAs(p) : [];
    const h = open[0];
    if (h && h.ino > 0 && open.every((o) => o.ino === h.ino)) {
      await this.setattr(h.path, { type: 'chmod', path: h.path, ino: h.ino, mode: mode & 0o7777 }, d, h.ino, h);
      return;
    }
    await this.setattr(p, { type: 'chmod', path: p, mode: mode & 0o7777 }, d);
  }

  private async chown(path: string, uid: number, gid: number, d: Deadline): Promise<void> {
    const p = checkPath(path);
    if (uid === ID_UNCHANGED || gid === ID_UNCHANGED) {
      // The op carries both ids; keep the one chown(2) leaves unchanged as it is now.
      const now = await this.fetchAttr(p, d);
      if (uid === ID_UNCHANGED) uid = now.uid;
      if (gid === ID_UNCHANGED) gid = now.gid;
    }
    await this.setattr(p, { type: 'chown', path: p, uid, gid }, d);
  }

  /** utimensat(2): each time is a value, 'now' or null (leave it), passed on as such. */
  private async utimens(path: string, atime: Fuse.TimeArg, mtime: Fuse.TimeArg, d: Deadline): Promise<void> {
    const p = checkPath(path);
    if (atime === null && mtime === null) return; // both UTIME_OMIT: nothing changes, not even ctime
    // 'now' is stamped with the op's time by the proxy that sequences it and null leaves a
    // time as the cluster has it, so no clock but the cluster's is used and no time is
    // read here and written back over a change another mount made meanwhile.
    const ms = (t: Fuse.TimeArg) => (t === null || t === 'now' ? t : t.ms);
    const op: Op = { type: 'utimens', path: p, atimeMs: ms(atime), mtimeMs: ms(mtime) };
    if (atime !== null && atime !== 'now' && atime.nsec !== 0) op.atimeNsec = atime.nsec;
    if (mtime !== null && mtime !== 'now' && mtime.nsec !== 0) op.mtimeNsec = mtime.nsec;
    await this.setattr(p, op, d);
  }

  private async truncate(path: string, size: number, caller: Fuse.Caller | null, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    await this.dropSetgidOnWrite(p, caller, d);
    await this.setattr(p, { type: 'truncate', path: p, size }, d);
  }

  private async ftruncate(fd: number, size: number, caller: Fuse.Caller | null, d: Deadline): Promise<void> {
    const h = this.handle(fd);
    await this.dropSetgidOnWrite(h.path, caller, d, h);
    await this.setattr(h.path, { type: 'truncate', path: h.path, ...inoOf(h), size }, d, h.ino, h);
  }

  /**
   * fallocate(2), one replicated op applied alike on every node (storage/brick.ts). Like a
   * truncate it goes through setattr: the file's buffered writes are committed first, so
   * none lands after it and undoes a punched hole, and what this mount caches of the file
   * is dropped after. A mode the cluster does not apply is EOPNOTSUPP without a round trip.
   * An allocation larger than the space the fullest node has left is ENOSPC here, before
   * it is sequenced: a node that ran out applying it could not answer like the others.
   */
  private async fallocate(fd: number, mode: number, offset: number, size: number, d: Deadline): Promise<void> {
    const h = this.handle(fd);
    if (!FALLOCATE_MODES.has(mode)) throw new DfsError('FS_ERROR', `fallocate mode 0x${mode.toString(16)} is not supported`, 'EOPNOTSUPP');
    if ((mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) === 0) {
      const fs = await this.client.statfs(d);
      if (size > fs.bavail * fs.bsize) throw new DfsError('FS_ERROR', 'not that much space left on the cluster', 'ENOSPC');
    }
    await this.setattr(h.path, { type: 'fallocate', path: h.path, ...inoOf(h), mode, offset, size }, d, h.ino, h);
  }

  /**
   * A write or truncate by anyone but root clears setuid, and setgid where it marks the
   * file as executable by its group (the kernel asks for those as a chmod), and since
   * Linux 6.2 also a setgid without group-exec when the writer is not in the file's group:
   * that last one FUSE leaves to the file system (fuse_setattr only clears the first two
   * without handle_killpriv), so the mount clears it itself, before the data lands.
   */
  private async dropSetgidOnWrite(p: string, caller: Fuse.Caller | null, d: Deadline, through?: OpenFile): Promise<void> {
    if (!caller || caller.uid === 0) return;
    // Through an open file: its inode's, wherever it is now.
    const attr = through ? await this.fgetattr(through, d) : (this.attrs.get(p) ?? (await this.fetchAttr(p, d)));
    if ((attr.mode & S_ISGID) === 0 || (attr.mode & S_IXGRP) !== 0 || (attr.mode & S_IFMT) !== S_IFREG) return;
    if (callerInGroup(caller, attr.gid)) return;
    const path = through?.path ?? p;
    await this.setattr(path, { type: 'chmod', path, ...(through ? inoOf(through) : {}), mode: attr.mode & 0o7777 & ~S_ISGID }, d, attr.ino, through);
  }

  // ---- Files ---------------------------------------------------------------------

  private async mknod(path: string, mode: number, dev: number, owner: Owner, d: Deadline): Promise<void> {
    const p = checkEntryPath(path);
    // mknod(2) with no type bits makes a regular file; the kernel has already refused device
    // nodes to callers without CAP_MKNOD.
    const type = (mode & S_IFMT) || S_IFREG;
    this.attrs.forget(p);
    await this.mutate({ type: 'mknod', path: p, mode: type | (mode & 0o7777), rdev: dev >>> 0, uid: owner.uid, gid: owner.gid }, d, p, undefined, nameOf(p, true), undefined, owner);
  }

  // ---- Extended attributes (user.* only; the cluster keeps its own in trusted.*) ------

  private async setxattr(path: string, name: string, value: Buffer, flags: number, d: Deadline): Promise<void> {
    const p = checkPath(path);
    // The kernel has already let only CAP_SYS_ADMIN through to trusted.* (xattr(7)).
    if (xattrNamespaceOf(name) === null) throw new DfsError('FS_ERROR', 'only user.* and trusted.* attributes are supported', 'EOPNOTSUPP');
    const f = flags & (XATTR_CREATE | XATTR_REPLACE);
    if (f === (XATTR_CREATE | XATTR_REPLACE)) throw new DfsError('FS_ERROR', 'XATTR_CREATE and XATTR_REPLACE together', 'EINVAL');
    await this.mutate({ type: 'setxattr', path: p, name, flags: f as 0 | 1 | 2 }, d, p, value);
  }

  private async getxattr(path: string, name: string, d: Deadline): Promise<Buffer> {
    const p = checkPath(path);
    // The kernel asks for security.capability before every write and for other namespaces
    // on ls -l: none is ever stored, so the answer needs no round trip. A namespace Linux
    // does not know is EOPNOTSUPP, as on a local disk.
    if (xattrNamespaceOf(name) === null) {
      throw KNOWN_XATTR_NAMESPACES.some((ns) => name.startsWith(ns))
        ? new DfsError('FS_ERROR', 'no such attribute', 'ENODATA')
        : new DfsError('FS_ERROR', 'unknown attribute namespace', 'EOPNOTSUPP');
    }
    return this.client.xattr(p, name, d);
  }

  /** listxattr(2) lists trusted.* only to a caller with CAP_SYS_ADMIN, which the mount
   * takes to be root (uid 0), as ext4 does. */
  private async listxattr(path: string, caller: Fuse.Caller | null, d: Deadline): Promise<string[]> {
    const names = await this.client.xattrs(checkPath(path), d);
    return caller?.uid === 0 ? names : names.filter((n) => xattrNamespaceOf(n) !== 'trusted.');
  }

  private async removexattr(path: string, name: string, d: Deadline): Promise<void> {
    const p = checkPath(path);
    if (xattrNamespaceOf(name) === null) throw new DfsError('FS_ERROR', 'only user.* and trusted.* attributes are supported', 'EOPNOTSUPP');
    await this.mutate({ type: 'removexattr', path: p, name }, d, p);
  }

  private async create(path: string, mode: number, flags: number, owner: Owner, d: Deadline): Promise<number> {
    const p = checkEntryPath(path);
    this.attrs.forget(p);
    // The kernel calls create only after its lookup found no such name, but another mount
    // may create it meanwhile. With O_EXCL the op then fails (EEXIST: two mounts racing for
    // one lock file must not both win); a plain O_CREAT opens the other mount's file, as
    // open(2) would, and truncates it if O_TRUNC was asked.
    const exclusive = (flags & fsConstants.O_EXCL) !== 0;
    const r = await this.mutate({ type: 'create', path: p, mode: mode & 0o7777, uid: owner.uid, gid: owner.gid, exclusive }, d, p, undefined, nameOf(p, true), undefined, owner);
    const attr = r.attr;
    const writable = (flags & O_ACCMODE) !== fsConstants.O_RDONLY;
    if (!exclusive && writable && flags & fsConstants.O_TRUNC && attr && attr.size > 0) {
      await this.setattr(p, { type: 'truncate', path: p, size: 0 }, d, attr.ino);
    }
    return this.openHandle(p, attr?.ino ?? 0, (attr?.nlink ?? 1) > 1, writable, d.caller, null, null, null, (flags & fsConstants.O_APPEND) !== 0);
  }

  private async open(path: string, flags: number, d: Deadline, openedAs: string | null = null): Promise<number> {
    const p = checkPath(path);
    let settle = (): void => {};
    const settled = new Promise<void>((resolve) => (settle = resolve));
    const opens = this.opening.get(p) ?? new Set<Promise<void>>();
    this.opening.set(p, opens.add(settled));
    let opened = false;
    try {
      // Close-to-open: an open revalidates against the cluster, unless a lease vouches for
      // what is cached (the cluster revokes it before any change is acknowledged).
      const attr = this.attrs.getLeased(p) ?? (await this.fetchAttr(p, d));
      const writable = (flags & O_ACCMODE) !== fsConstants.O_RDONLY;
      // The kernel turns O_TRUNC into a truncate before the open (libfuse 2 does not ask for
      // atomic_o_trunc), but honour it if it comes.
      if (writable && flags & fsConstants.O_TRUNC && attr.size > 0) {
        await this.setattr(p, { type: 'truncate', path: p, size: 0 }, d);
      }
      const readable = (flags & O_ACCMODE) !== fsConstants.O_WRONLY;
      const fh = this.openHandle(p, attr.ino, attr.nlink > 1, writable, d.caller, readable ? attr : null, openedAs, attr.size, (flags & fsConstants.O_APPEND) !== 0);
      opened = true;
      return fh;
    } finally {
      opens.delete(settled);
      if (opens.size === 0) this.opening.delete(p);
      settle();
      // An orphan whose last close came while this failed open was on its way.
      if (!opened && this.orphanUnused(p)) await this.removeOrphan(p, d);
    }
  }

  private openHandle(p: string, ino: number, multiLink: boolean, writable: boolean, opener: Deadline['caller'], atimeFrom: Attr | null = null, openedAs: string | null = null, sizeAtOpen: number | null = null, append = false): number {
    const h = this.handles.add((fh) => ({ fh, path: p, kernelPath: p, ino, openedAs, multiLink, writable, append, privilegesChecked: false, atimeFrom, writes: null, readAhead: null, sizeAtOpen, opener }));
    if (!h) throw new DfsError('FS_ERROR', 'too many open files', 'ENFILE');
    return h.fh;
  }

  private handle(fd: number): OpenFile {
    const h = this.handles.get(fd);
    if (!h) throw new DfsError('FS_ERROR', `no open file ${fd}`, 'EBADF');
    return h;
  }

  private async read(fd: number, len: number, pos: number, d: Deadline): Promise<Buffer> {
    const h = this.handle(fd);
    if (h.atimeFrom) {
      this.readAccess(h.path, h.atimeFrom, h);
      h.atimeFrom = null;
    }
    // Reads see what this mount wrote, even if it is still buffered.
    await this.flushAll(this.handles.related(h.path, h.ino), d);
    h.readAhead ??= new ReadAhead((offset, size) => this.fetchData(h, offset, size), this.config.readAheadBytes, () => h.sizeAtOpen);
    return raceDeadline(h.readAhead.read(pos, len), d);
  }

  /** One ranged read for the read-ahead, under its own deadline (a window fetched ahead
   * outlives the call that started it). */
  private async fetchData(h: OpenFile, offset: number, size: number): Promise<Buffer> {
    const d = new Deadline(this.config.deadlineMs);
    d.caller = this.asCaller(h.path, h.opener);
    try {
      return await this.client.data(h.path, offset, size, d, h.ino || undefined);
    } finally {
      d.dispose();
    }
  }

  private async write(fd: number, buf: Buffer, len: number, pos: number, caller: Fuse.Caller | null, d: Deadline): Promise<void> {
    const h = this.handle(fd);
    if (!h.writable) throw new DfsError('FS_ERROR', 'handle is read-only', 'EBADF');
    if (!h.privilegesChecked) {
      h.privilegesChecked = true;
      await this.dropSetgidOnWrite(h.path, caller, d, h);
    }
    h.writes ??= h.append ? this.appendStream(h) : new WriteBuffer((offset, data, extents) => this.sendChunk(h, offset, data, extents), this.config.writeLimits, this.dirtyBudget);
    this.invalidateReads(h.path, h.ino);
    // Each handle coalesces its own writes, so bytes another handle of this file wrote
    // earlier and has not committed yet must commit first wherever they overlap these:
    // overlapping writes land in the order they were made (a log written by two
    // processes). An append lands past everything another handle wrote at an offset, so
    // those commit first; appends through two descriptors need not (each descriptor's
    // land in order, whole, and none over another). `buf` stays valid until we answer.
    for (const other of this.handles.related(h.path, h.ino)) {
      if (other === h || !other.writes || other.writes === h.writes) continue;
      const before = h.append ? other.writes.mode === 'offset' && other.writes.dirty : other.writes.overlaps(pos, pos + len);
      // A failure there is that handle's own, sticky error: it does not fail this write.
      if (before) await other.writes.flush().catch(() => undefined);
    }
    // WriteBuffer copies the bytes before this returns: fuse-native detaches `buf` after
    // the callback.
    await h.writes.write(pos, buf.subarray(0, len)).catch(lostWrite);
  }

  /** The append stream `h` writes to: its file's on this mount (appendStreams), sent
   * through whichever O_APPEND handle of the file is open when a chunk leaves. */
  private appendStream(h: OpenFile): WriteBuffer {
    const shared = h.ino === 0 ? undefined : this.appendStreams.get(h.ino);
    if (shared) return shared;
    const stream: WriteBuffer = new WriteBuffer(
      (offset, data, extents) => this.sendChunk(this.handles.related(h.path, h.ino).find((o) => o.append && o.writes === stream) ?? h, offset, data, extents),
      this.config.writeLimits,
      this.dirtyBudget,
      'append',
    );
    if (h.ino !== 0) this.appendStreams.set(h.ino, stream);
    return stream;
  }

  /** Whom a request about `p` names: `caller`, but no one for an orphan, which the kernel
   * has no name for any more (its access was decided when it was opened) and which lives in
   * a directory only the mount's host credential may search. */
  private asCaller(p: string, caller: Deadline['caller']): Deadline['caller'] {
    return this.orphans.isOrphan(p) ? null : caller;
  }

  /** Sends one write op of the buffer (a chunk, or many extents packed), under its own
   * deadline. */
  private async sendChunk(h: OpenFile, offset: number, data: Buffer, extents?: Extent[]): Promise<void> {
    const d = new Deadline(this.config.deadlineMs);
    d.caller = this.asCaller(h.path, h.opener);
    // The op names the inode: it lands wherever the file is now (storage/inode-index.ts).
    let op: Op;
    if (h.append) {
      if (extents) throw new Error('an append buffer packed extents'); // one stream, one extent
      op = { type: 'write', path: h.path, ...inoOf(h), offset: 0, append: true };
    } else op = extents ? { type: 'write', path: h.path, ...inoOf(h), offset, extents } : { type: 'write', path: h.path, ...inoOf(h), offset };
    try {
      if (h.multiLink) {
        const path = h.path;
        const r = await this.client.op(op, data, d).finally(() => this.dropAttrs(path, true, h.ino));
        this.followInode(h, r);
        return;
      }
      // The op answers with the file's attributes after it: they answer the getattr that
      // follows, and the directory's listing keeps the file with them (a write changes
      // neither the directory nor the file's name). Dropping the listing instead made
      // every small file written in a big directory cost a listing of it.
      const path = h.path;
      const r = await this.mutate(op, d, path, data, nameOf(path, true), () => this.attrs.invalidateFile(path));
      this.followInode(h, r);
      // The kernel kept the bytes in its page cache at the offset it thought the end was;
      // the cluster put them at the end it found: drop those pages.
      if (h.append) this.forgetInKernel(h.kernelPath);
    } finally {
      d.dispose();
    }
  }

  private async flushHandle(fd: number, d: Deadline): Promise<void> {
    const h = this.handle(fd);
    if (h.writes) await raceDeadline(h.writes.flush().catch(lostWrite), d);
  }

  private async release(fd: number, d: Deadline): Promise<void> {
    const h = this.handles.get(fd);
    if (!h) return;
    try {
      if (h.writes) await raceDeadline(h.writes.flush().catch(lostWrite), d);
    } finally {
      this.closeHandle(h);
    }
    // The last descriptor of an unlinked file: it goes now.
    if (this.orphanUnused(h.path)) await this.removeOrphan(h.path, d);
  }

  /**
   * After an op placed by the inode of the open file `h`: when the cluster found the inode
   * under another path than the handle's (another mount renamed it, or a directory above
   * it), the handles of that inode here follow it, and what was cached under the old path
   * is dropped (it may name another file by now, or nothing). Returns whether it moved.
   */
  private followInode(h: OpenFile, r: OpResult): boolean {
    if (r.path === undefined || r.path === h.path || h.ino === 0) return false;
    const old = h.path;
    for (const other of this.handles.related(old, h.ino)) if (other.ino === h.ino && other.path === old) other.path = r.path;
    this.attrs.invalidate(old);
    this.attrs.invalidateIno(h.ino);
    return true;
  }

  /** Forgets the open handle `h`, its writes sent or given up. */
  private closeHandle(h: OpenFile): void {
    this.handles.delete(h.fh);
    // The last O_APPEND handle of its file here: the stream (flushed by release) goes.
    if (h.append && h.writes && this.appendStreams.get(h.ino) === h.writes && !this.handles.all().some((o) => o.writes === h.writes)) this.appendStreams.delete(h.ino);
    // While it was open for writing the kernel was given no time for it, but an answer
    // from before may still be kept, and the writes sent since moved its times.
    if (h.writable) this.forgetInKernel(h.path);
  }

  /** Resolves once the opens of `p` under way now have ended. */
  private async opensSettled(p: string): Promise<void> {
    const opens = this.opening.get(p);
    if (opens) await Promise.all([...opens]);
  }

  /** Whether `p` is an orphan with no descriptor open on it here, nor one being opened. */
  private orphanUnused(p: string): boolean {
    return this.orphans.isOrphan(p) && !this.opening.has(p) && this.handles.related(p).length === 0;
  }

  private async removeOrphan(p: string, d: Deadline): Promise<void> {
    this.orphans.retire(p);
    await this.unlink(p, d).catch((err: unknown) => this.logger.warn({ err, path: p }, 'could not remove an orphan'));
  }

  /** Whether a change to `p` may show under names we cannot find by inode number: a file
   * with several links, or one whose attributes we do not have. (Inode numbers also do not
   * match across storage nodes yet: docs/cluster.md, known limits.) */
  private mayHaveOtherNames(p: string): boolean {
    const a = this.attrs.get(p);
    return !a || ((a.mode & S_IFMT) !== S_IFDIR && a.nlink > 1);
  }

  /** Drops the cached attributes a change to `p` makes stale: `p`, its parent, every cached
   * name of its inode, and everything when `multi` says other names may exist. */
  private dropAttrs(p: string, multi: boolean, ino?: number): void {
    this.attrs.invalidate(p);
    if (ino !== undefined) this.attrs.invalidateIno(ino);
    if (multi) this.attrs.clear();
  }

  private invalidateReads(p: string, ino?: number): void {
    for (const h of this.handles.related(p, ino)) h.readAhead?.invalidate();
  }

  /** Commits what `handles` buffered before another call goes ahead. A handle whose
   * buffered data was lost reports that itself, at its next write, flush or close; the
   * call that only wanted to see the data is not failed for it. */
  private async flushAll(handles: OpenFile[], d: Deadline): Promise<void> {
    const dirty = handles.filter((h) => h.writes?.dirty);
    if (dirty.length === 0) return;
    await raceDeadline(Promise.allSettled(dirty.map((h) => h.writes!.flush())), d);
  }

  /** Flushes every open handle (on unmount), within `timeoutMs`. Returns how many failed. */
  async flushEverything(timeoutMs: number): Promise<number> {
    const d = new Deadline(timeoutMs);
    try {
      const results = await raceDeadline(
        Promise.allSettled(this.handles.all().map((h) => h.writes?.flush() ?? Promise.resolve())),
        d,
      );
      return results.filter((r) => r.status === 'rejected').length;
    } finally {
      d.dispose();
    }
  }
}

// ---- Helpers ----------------------------------------------------------------------

/** The inode an op on the open file `h` names, when known (storage/inode-index.ts). */
function inoOf(h: { ino: number }): { ino?: number } {
  return h.ino > 0 ? { ino: h.ino } : {};
}

/** The name `p` adds to or removes from its directory (DfsFileSystem.mutate). */
function nameOf(p: string, added: boolean): { dir: string; name: string; added: boolean } {
  return { dir: parentOf(p), name: p.slice(p.lastIndexOf('/') + 1), added };
}

/** Validates a path from the kernel locally, so an over-long name is ENAMETOOLONG without a
 * round trip (the kernel lets FUSE names of up to 1024 bytes through). */
export function checkPath(path: string, what = 'path'): string {
  return validatePath(path, what);
}

export function checkEntryPath(path: string, what = 'path'): string {
  return validateEntryPath(path, what);
}

export function toStat(a: Attr): Fuse.Stat {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
    dev: 0,
    nlink: a.nlink,
    ino: a.ino,
    rdev: a.rdev,
    blksize: BLOCK_SIZE_PREFERRED,
    blocks: a.blocks,
    atime: a.atimeMs,
    mtime: a.mtimeMs,
    ctime: a.ctimeMs,
    atimeNsec: a.atimeNsec,
    mtimeNsec: a.mtimeNsec,
    ctimeNsec: a.ctimeNsec,
  };
}

/** A write buffered earlier and acknowledged to the application did not reach the cluster:
 * report EIO (or the reason a local file system would also report late), never the
 * transport's own error code. */
function lostWrite(err: unknown): never {
  if (err instanceof DfsError && errnoOfLostWrite(err) !== EIO) throw err;
  const why = err instanceof Error ? err.message : String(err);
  throw new DfsError('UNAVAILABLE', `buffered write lost: ${why}`);
}

/** Whether the calling thread has `gid` as its fsgid or a supplementary group
 * (/proc/<tid>/status, proc(5)); a thread that is gone counts as not a member. */
function callerInGroup(caller: Fuse.Caller, gid: number): boolean {
  return caller.gid === gid || callerGroups.of(caller.pid, caller.uid, caller.gid).includes(gid);
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function stubDirAttr(): Attr {
  return { ino: 0, mode: S_IFDIR | 0o755, nlink: 2, uid: 0, gid: 0, rdev: 0, size: 0, blocks: 0, atimeMs: 0, mtimeMs: 0, ctimeMs: 0 };
}

/** Who owns what a call creates, and the caller's supplementary groups: the op carries
 * them as its caller (common/identity.ts), and every node checks its permissions again at
 * apply, as the kernel checked them here. */
interface Owner {
  uid: number;
  gid: number;
  groups: number[];
}

/** POSIX: a new file belongs to the calling process's fsuid and fsgid (libfuse's context
 * carries exactly those). */
function ownerOf(caller: Fuse.Caller): Owner {
  // The patched fuse-native always passes the caller (mount/fuse-mount.ts refuses an
  // unpatched one); without it, files would silently belong to the wrong user.
  if (caller === undefined || caller === null) throw new Error('fuse-native passed no caller: is the dfs patch applied?');
  return { uid: caller.uid, gid: caller.gid, groups: callerGroups.of(caller.pid, caller.uid, caller.gid).slice(0, CALLER_GROUPS_MAX) };
}


