/*
 * Type declarations for fuse-native 2.2.6 (it ships none) as patched by dfs
 * (patches/fuse-native+2.2.6.patch, applied and built by scripts/build-fuse-native.js),
 * limited to what dfs-mount uses. The shapes follow the patched index.js: every handler
 * takes a callback whose first argument is the FUSE return code (0 or a negative errno; for
 * read and write the byte count), and a stat's times may be numbers in milliseconds (a
 * fraction keeps the part below the millisecond, down to the nanosecond) or Dates.
 *
 * What the patch adds: utimens gets both times, each of which may be "now" or "leave it";
 * create, mknod, mkdir and symlink get the calling process after their callback, and create
 * also its open flags; `context()` gives the caller of any handler, synchronously; getattr
 * and fgetattr may say how long the kernel may keep their answer, and `invalidatePath` and
 * `invalidateEntry`, `invalidateInode` take it back (item 13).
 */
declare module 'fuse-native' {
  namespace Fuse {
    interface Stat {
      mode: number;
      uid: number;
      gid: number;
      size: number;
      dev?: number;
      nlink: number;
      ino: number;
      rdev?: number;
      blksize?: number;
      blocks: number;
      atime: number | Date;
      mtime: number | Date;
      ctime: number | Date;
      /** The nanoseconds within the millisecond (dfs patch), exact; else the fraction of the
       * milliseconds counts. */
      atimeNsec?: number;
      mtimeNsec?: number;
      ctimeNsec?: number;
    }

    interface StatFs {
      bsize: number;
      frsize: number;
      blocks: number;
      bfree: number;
      bavail: number;
      files: number;
      ffree: number;
      favail: number;
      fsid: number;
      flag: number;
      namemax: number;
    }

    type Done = (code: number) => void;

    /** How long the kernel may keep a getattr's answer (dfs patch, item 13): milliseconds
     * for both the entry (the name) and the attributes, or each on its own; one left out
     * keeps libfuse's option (dfs-mount's: 0). With ENOENT from a lookup, entryMs is how
     * long the kernel may remember that the name does not exist. */
    type CacheTimes = number | { entryMs?: number; attrMs?: number };

    type StatAnswer = (code: number, st?: Stat, cache?: CacheTimes) => void;

    /** The process that made a call: libfuse's fuse_get_context(), so the uid and gid are
     * its file system ids (fsuid, fsgid). */
    interface Caller {
      uid: number;
      gid: number;
      pid: number;
      umask: number;
      /** The call is libfuse answering a kernel SETATTR that changes only ctime
       * (chown(f, -1, -1)): the file system should move ctime (dfs patch). */
      ctimeOnly?: boolean;
    }

    /** A POSIX lock as libfuse gives it: len 0 means to the end of the file. */
    interface Flock {
      type: number;
      start: number;
      len: number;
      pid: number;
    }

    /** A time given to utimens: whole milliseconds since the epoch and the nanoseconds
     * within the millisecond, 'now' for UTIME_NOW, or null for UTIME_OMIT (leave it). */
    type TimeArg = { ms: number; nsec: number } | 'now' | null;

    interface Handlers {
      init?(cb: Done): void;
      access?(path: string, mode: number, cb: Done): void;
      statfs?(path: string, cb: (code: number, st?: StatFs) => void): void;
      getattr?(path: string, cb: StatAnswer): void;
      fgetattr?(path: string, fd: number, cb: StatAnswer): void;
      flush?(path: string, fd: number, cb: Done): void;
      fsync?(path: string, datasync: number, fd: number, cb: Done): void;
      readdir?(path: string, cb: (code: number, names?: string[], stats?: Stat[]) => void): void;
      truncate?(path: string, size: number, cb: Done): void;
      ftruncate?(path: string, fd: number, size: number, cb: Done): void;
      /** fallocate(2) on an open file (dfs patch item 14): `mode` is the FALLOC_FL_* bits. */
      fallocate?(path: string, fd: number, mode: number, offset: number, length: number, cb: Done): void;
      /** fcntl locks (dfs patch item 17): cmd F_GETLK, F_SETLK or F_SETLKW; `owner` is the
       * kernel's lock owner as 16 hex digits. cb(1): a blocking request not granted yet. */
      lock?(path: string, fd: number, cmd: number, lock: Flock, owner: string, cb: (code: number, found?: Flock) => void): void;
      /** flock(2) (dfs patch item 17): `op` the LOCK_* bits. cb(1): not granted yet. */
      flock?(path: string, fd: number, op: number, owner: string, cb: Done): void;
      utimens?(path: string, atime: TimeArg, mtime: TimeArg, cb: Done): void;
      readlink?(path: string, cb: (code: number, target?: string) => void): void;
      chown?(path: string, uid: number, gid: number, cb: Done): void;
      chmod?(path: string, mode: number, cb: Done): void;
      mknod?(path: string, mode: number, dev: number, cb: Done, caller: Caller): void;
      open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
      read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Done): void;
      write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Done): void;
      release?(path: string, fd: number, cb: Done): void;
      /** `flags` are the open(2) flags (O_EXCL among them). */
      create?(path: string, mode: number, cb: (code: number, fd?: number) => void, caller: Caller, flags: number): void;
      unlink?(path: string, cb: Done): void;
      /** cb(1) for a success after which libfuse may keep the replaced entry's node under an
       * alias (dfs patch item 12); libfuse gets 0. */
      rename?(src: string, dest: string, cb: Done): void;
      link?(src: string, dest: string, cb: Done): void;
      symlink?(target: string, path: string, cb: Done, caller: Caller): void;
      mkdir?(path: string, mode: number, cb: Done, caller: Caller): void;
      rmdir?(path: string, cb: Done): void;
      /** `value` is the kernel's buffer, detached after the callback. `position` is macOS's. */
      setxattr?(path: string, name: string, value: Buffer, position: number, flags: number, cb: Done): void;
      /** Answer with the whole value; a code < 0 is an errno. */
      getxattr?(path: string, name: string, position: number, cb: (code: number, value?: Buffer) => void): void;
      listxattr?(path: string, cb: (code: number, names?: string[]) => void): void;
      removexattr?(path: string, name: string, cb: Done): void;
    }

    interface Options {
      timeout?: number | false;
      force?: boolean;
      mkdir?: boolean;
      debug?: boolean;
      autoUnmount?: boolean;
      defaultPermissions?: boolean;
      allowOther?: boolean;
      fsname?: string;
      subtype?: string;
      /** dfs patch item 15: getxattr of a name with one of these prefixes ('security.') is
       * answered ENODATA by the addon, without calling the handler. */
      absentXattrNamespaces?: string[];
      [key: string]: unknown;
    }
  }

  class Fuse {
    constructor(mnt: string, handlers: Fuse.Handlers, opts?: Fuse.Options);
    readonly mnt: string;
    readonly opts: Fuse.Options;
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    protected _fuseOptions(): string;
    /** The caller of the handler running now; valid only before that handler first awaits. */
    context(): Fuse.Caller | null;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    /** Set by the dfs patch (undefined in an unpatched fuse-native). */
    static readonly DFS_PATCH_LEVEL: number | undefined;
    /** Whether the last mount hooked libfuse's setattr for ctime-only changes (dfs patch). */
    static ctimeOnlySetattrHooked(): boolean;
    /** Whether the last mount keeps a name a rename replaced resolvable for the calls on
     * their way (dfs patch item 12). */
    static renameKeepsReplaced(): boolean;
    /** Whether the last mount lets getattr answers carry cache times and invalidation
     * reach the kernel (dfs patch item 13; libfuse 2.9's private layouts checked). */
    static kernelCacheHooked(): boolean;
    /** Makes the kernel drop its entry for `path`, the inode's attributes and its cached
     * data. Resolves true once the kernel has taken that, false at once when libfuse has no
     * node for the path (the kernel then caches nothing of it). Rejects (err.errno) when
     * the kernel refuses, or EAGAIN when too many are queued. Main thread only; a handler
     * must not wait for it before answering a call on the path or its directory. */
    invalidatePath(path: string): Promise<boolean>;
    /** Makes the kernel drop its entry for the name `path`, positive or negative, and its
     * directory's attributes. False at once when libfuse has no node for the directory. */
    invalidateEntry(path: string): Promise<boolean>;
    /** Makes the kernel drop the attributes and cached data of the inode `path` leads to,
     * not the name: no directory lock is taken, so a handler may wait for it before
     * answering a call on a name in that directory. False at once when libfuse has no node
     * for the path. */
    invalidateInode(path: string): Promise<boolean>;
    static readonly [errno: string]: unknown;
  }

  export = Fuse;
}
