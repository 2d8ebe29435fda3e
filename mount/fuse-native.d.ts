/*
 * Type declarations for fuse-native 2.2.6 (it ships none), limited to what dfs-mount uses.
 * The shapes follow the package's index.js: every handler ends with a callback whose first
 * argument is the FUSE return code (0 or a negative errno; for read and write the byte
 * count), and a stat's times may be numbers in milliseconds or Dates.
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

    interface Handlers {
      init?(cb: Done): void;
      access?(path: string, mode: number, cb: Done): void;
      statfs?(path: string, cb: (code: number, st?: StatFs) => void): void;
      getattr?(path: string, cb: (code: number, st?: Stat) => void): void;
      fgetattr?(path: string, fd: number, cb: (code: number, st?: Stat) => void): void;
      flush?(path: string, fd: number, cb: Done): void;
      fsync?(path: string, datasync: number, fd: number, cb: Done): void;
      readdir?(path: string, cb: (code: number, names?: string[], stats?: Stat[]) => void): void;
      truncate?(path: string, size: number, cb: Done): void;
      ftruncate?(path: string, fd: number, size: number, cb: Done): void;
      utimens?(path: string, atime: number | Date, mtime: number | Date, cb: Done): void;
      readlink?(path: string, cb: (code: number, target?: string) => void): void;
      chown?(path: string, uid: number, gid: number, cb: Done): void;
      chmod?(path: string, mode: number, cb: Done): void;
      mknod?(path: string, mode: number, dev: number, cb: Done): void;
      open?(path: string, flags: number, cb: (code: number, fd?: number) => void): void;
      read?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Done): void;
      write?(path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Done): void;
      release?(path: string, fd: number, cb: Done): void;
      create?(path: string, mode: number, cb: (code: number, fd?: number) => void): void;
      unlink?(path: string, cb: Done): void;
      rename?(src: string, dest: string, cb: Done): void;
      link?(src: string, dest: string, cb: Done): void;
      symlink?(target: string, path: string, cb: Done): void;
      mkdir?(path: string, mode: number, cb: Done): void;
      rmdir?(path: string, cb: Done): void;
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
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    static readonly [errno: string]: unknown;
  }

  export = Fuse;
}
