/*
 * mount/fuse-ops.ts against an in-memory fake of the cluster client: the handler logic
 * without a kernel. Checks the close-to-open rules (writes buffered until flush, getattr and
 * reads see buffered data, open revalidates), ordering (setattr after buffered writes),
 * renames of open files, local path checks, and that lost writes surface as EIO.
 *
 *   node dist/test/unit/mount-fuse-ops.test.js
 */
import { constants as fsConstants } from 'node:fs';
import { constants } from 'node:os';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import pino from 'pino';
import type Fuse from 'fuse-native';
import type { Attr, DirEntry, OpResult, StatFs } from '../../common/api';
import { DfsError, fsError } from '../../common/errors';
import type { Op } from '../../common/ops';
import { parentOf } from '../../common/paths';
import { DfsFileSystem, MOUNT_CONFIG_DEFAULTS, type ClusterClient } from '../../mount/fuse-ops';
import { MountMetrics } from '../../mount/metrics';
import { ORPHANS_DIR } from '../../mount/orphans';
import { ALIAS_MARKER_BYTES, ALIAS_PREFIX } from '../../mount/replaced-alias';
import { parseMetricsText } from '../bench/cost';

const E = constants.errno;
/** The process every call comes from, as the patched fuse-native passes it. */
const CALLER: Fuse.Caller = { uid: 1234, gid: 5678, pid: 4321, umask: 0o022 };
/** open(2) flags of a plain create: O_CREAT | O_WRONLY (the kernel adds O_EXCL only when asked). */
const CREATE_FLAGS = fsConstants.O_CREAT | fsConstants.O_WRONLY;
const logger = pino({ level: 'silent' });

interface Node {
  attr: Attr;
  data: Buffer;
  target?: string;
  xattrs?: Map<string, Buffer>;
}

/** A tiny path-keyed cluster: enough semantics for the handlers' logic. */
class FakeCluster implements ClusterClient {
  nodes = new Map<string, Node>();
  ops: Op[] = [];
  attrCalls: string[] = [];
  failWrites = false;
  private ino = 100;

  constructor() {
    this.nodes.set('/', { attr: this.mkAttr(0o040755), data: Buffer.alloc(0) });
  }

  private mkAttr(mode: number): Attr {
    return { ino: this.ino++, mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, blocks: 0, atimeMs: 0, mtimeMs: 0, ctimeMs: 0 };
  }

  async op(op: Op, data: Buffer | undefined): Promise<OpResult> {
    this.ops.push(op);
    const seq = this.ops.length;
    const get = (p: string): Node => {
      const n = this.nodes.get(p);
      if (!n) throw fsError('ENOENT');
      return n;
    };
    switch (op.type) {
      case 'create':
      case 'mknod':
      case 'mkdir':
      case 'symlink': {
        const existing = this.nodes.get(op.path);
        // A create that is not exclusive keeps the file that is there (common/ops.ts).
        if (existing && op.type === 'create' && !op.exclusive) return { seq, attr: { ...existing.attr } };
        if (existing) throw fsError('EEXIST');
        get(parentOf(op.path));
        const type = op.type === 'mkdir' ? 0o040000 : op.type === 'symlink' ? 0o120000 : op.type === 'mknod' ? op.mode & 0o170000 : 0o100000;
        const n: Node = { attr: this.mkAttr(type | (op.type === 'symlink' ? 0o777 : op.mode & 0o7777)), data: Buffer.alloc(0) };
        if (op.type === 'symlink') n.target = op.target;
        n.attr.uid = op.uid;
        n.attr.gid = op.gid;
        this.nodes.set(op.path, n);
        return { seq, attr: { ...n.attr } };
      }
      case 'write': {
        if (this.failWrites) throw new DfsError('UNAVAILABLE', 'cluster down');
        const n = get(op.path);
        // An append lands at the end as the file stands now (storage/brick.ts).
        const at = op.append ? n.data.length : op.offset;
        const end = at + data!.length;
        if (n.data.length < end) n.data = Buffer.concat([n.data, Buffer.alloc(end - n.data.length)]);
        data!.copy(n.data, at);
        n.attr.size = n.data.length;
        return { seq, attr: { ...n.attr } };
      }
      case 'truncate': {
        const n = get(op.path);
        n.data = Buffer.concat([n.data, Buffer.alloc(Math.max(0, op.size - n.data.length))]).subarray(0, op.size);
        n.attr.size = op.size;
        return { seq, attr: { ...n.attr } };
      }
      case 'rename': {
        const moved = get(op.from);
        const replaced = this.nodes.get(op.to);
        for (const [p, n] of [...this.nodes]) {
          if (p === op.from || p.startsWith(op.from + '/')) {
            this.nodes.delete(p);
            this.nodes.set(op.to + p.slice(op.from.length), n);
          }
        }
        return replaced ? { seq, attr: { ...moved.attr }, replacedMode: replaced.attr.mode } : { seq, attr: { ...moved.attr } };
      }
      case 'link': {
        // One node under two names.
        if (this.nodes.has(op.to)) throw fsError('EEXIST');
        this.nodes.set(op.to, get(op.from));
        return { seq, attr: { ...get(op.from).attr } };
      }
      case 'chown': {
        const n = get(op.path);
        n.attr.uid = op.uid;
        n.attr.gid = op.gid;
        return { seq, attr: { ...n.attr } };
      }
      case 'utimens': {
        const n = get(op.path);
        const now = 42; // the op's time, which the proxy stamps
        if (op.atimeMs !== null) n.attr.atimeMs = op.atimeMs === 'now' ? now : op.atimeMs;
        if (op.mtimeMs !== null) n.attr.mtimeMs = op.mtimeMs === 'now' ? now : op.mtimeMs;
        return { seq, attr: { ...n.attr } };
      }
      case 'setxattr': {
        const n = get(op.path);
        n.xattrs ??= new Map();
        if (op.flags === 1 && n.xattrs.has(op.name)) throw fsError('EEXIST');
        if (op.flags === 2 && !n.xattrs.has(op.name)) throw fsError('ENODATA');
        n.xattrs.set(op.name, Buffer.from(data!));
        return { seq, attr: { ...n.attr } };
      }
      case 'removexattr': {
        const n = get(op.path);
        if (!n.xattrs?.delete(op.name)) throw fsError('ENODATA');
        return { seq, attr: { ...n.attr } };
      }
      case 'unlink':
      case 'rmdir':
        get(op.path);
        this.nodes.delete(op.path);
        return { seq };
      default:
        return { seq };
    }
  }

  async attr(path: string): Promise<Attr> {
    this.attrCalls.push(path);
    const n = this.nodes.get(path);
    if (!n) throw fsError('ENOENT');
    return { ...n.attr };
  }

  async dir(path: string): Promise<DirEntry[]> {
    const out: DirEntry[] = [];
    for (const [p, n] of this.nodes) if (p !== '/' && parentOf(p) === path) out.push({ name: p.slice(p.lastIndexOf('/') + 1), attr: { ...n.attr } });
    return out;
  }

  async data(path: string, offset: number, size: number): Promise<Buffer> {
    const n = this.nodes.get(path);
    if (!n) throw fsError('ENOENT');
    return Buffer.from(n.data.subarray(offset, offset + size));
  }

  async link(): Promise<string> {
    return 'target';
  }

  async xattr(path: string, name: string): Promise<Buffer> {
    const v = this.nodes.get(path)?.xattrs?.get(name);
    if (!v) throw fsError('ENODATA');
    return v;
  }

  async xattrs(path: string): Promise<string[]> {
    return [...(this.nodes.get(path)?.xattrs?.keys() ?? [])];
  }

  async statfs(): Promise<StatFs> {
    return { bsize: 4096, blocks: 2 ** 33, bfree: 2 ** 32, bavail: 2 ** 32, files: 10, ffree: 5, namemax: 255 };
  }
}

function setup(config: Partial<typeof MOUNT_CONFIG_DEFAULTS> = {}) {
  const cluster = new FakeCluster();
  const metrics = new MountMetrics();
  const fs = new DfsFileSystem({
    client: cluster,
    logger,
    config: { ...MOUNT_CONFIG_DEFAULTS, writeLimits: { chunkBytesMax: 64, inflightMax: 2 }, ...config },
    metrics,
  });
  const h = fs.handlers() as Required<Fuse.Handlers>;
  const call = <T = unknown>(f: (cb: (code: number, v?: T) => void) => void): Promise<{ code: number; v?: T }> =>
    new Promise((resolve) => f((code, v) => resolve({ code, v })));
  return { cluster, fs, h, call, metrics };
}

test('create, write, flush: nothing is sent before flush, and flush commits it', async () => {
  const { cluster, h, call } = setup();
  const c = await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS));
  assert.is(c.code, 0);
  const fd = c.v!;
  assert.ok(fd >= 1);
  assert.is(cluster.nodes.get('/f')!.attr.uid, 1234, 'owned by the calling process');
  const w = await call((cb) => h.write('/f', fd, Buffer.from('hello'), 5, 0, cb));
  assert.is(w.code, 5, 'write answers with the byte count');
  assert.is(cluster.ops.filter((o) => o.type === 'write').length, 0);
  const st = await call<Fuse.Stat>((cb) => h.getattr('/f', cb));
  assert.is(st.v!.size, 5, 'getattr reports the size of buffered data');
  assert.is((await call((cb) => h.flush('/f', fd, cb))).code, 0);
  assert.is(cluster.nodes.get('/f')!.data.toString(), 'hello');
  assert.is((await call((cb) => h.release('/f', fd, cb))).code, 0);
});

test('every FUSE request is counted by operation, failed ones too', async () => {
  const { h, call, metrics } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.getattr('/f', cb));
  await call((cb) => h.fgetattr('/f', fd, cb));
  await call((cb) => h.release('/f', fd, cb));
  assert.is((await call((cb) => h.getattr('/missing', cb))).code, -2);
  const counts = Object.fromEntries(
    parseMetricsText(await metrics.registry.metrics())
      .filter((sample) => sample.name === 'dfs_mount_fuse_requests_total')
      .map((sample) => [sample.labels.op, sample.value]),
  );
  assert.equal(counts, { create: 1, getattr: 3, release: 1 });
});

test('a read sees data buffered by another handle of the same file', async () => {
  const { h, call } = setup();
  const a = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/f', a, Buffer.from('abcdef'), 6, 0, cb));
  const b = (await call<number>((cb) => h.open('/f', 0, cb))).v!;
  const buf = Buffer.alloc(100);
  const r = await call((cb) => h.read('/f', b, buf, 100, 0, cb));
  assert.is(r.code, 6);
  assert.is(buf.subarray(0, 6).toString(), 'abcdef');
});

test('open revalidates attributes with the cluster even when they are cached', async () => {
  const { cluster, h, call } = setup({ attrTimeoutMs: 60_000 });
  await call((cb) => h.mknod('/f', 0o100644, 0, cb, CALLER));
  await call((cb) => h.getattr('/f', cb));
  await call((cb) => h.getattr('/f', cb));
  const before = cluster.attrCalls.length;
  await call((cb) => h.getattr('/f', cb));
  assert.is(cluster.attrCalls.length, before, 'getattr is served from the cache');
  await call((cb) => h.open('/f', 0, cb));
  assert.is(cluster.attrCalls.length, before + 1, 'open asked the cluster');
});

test('setattr ops wait for buffered writes (cp -p sets times before close)', async () => {
  const { cluster, h, call } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/f', fd, Buffer.from('data'), 4, 0, cb));
  assert.is((await call((cb) => h.utimens('/f', { ms: 1000, nsec: 0 }, { ms: 2000, nsec: 0 }, cb))).code, 0);
  const types = cluster.ops.map((o) => o.type);
  assert.equal(types, ['create', 'write', 'utimens']);
  const t = cluster.ops[2] as Extract<Op, { type: 'utimens' }>;
  assert.is(t.atimeMs, 1000);
  assert.is(t.mtimeMs, 2000);
});

test('utimens sends each time as given, or "now" or "left alone" for the cluster to resolve', async () => {
  const { cluster, h, call } = setup();
  await call((cb) => h.mknod('/f', 0o100644, 0, cb, CALLER));
  const utimens = () => cluster.ops.filter((o): o is Extract<Op, { type: 'utimens' }> => o.type === 'utimens');
  // Both given, below the millisecond too (touch -d, cp -p, tar -x): the nanoseconds exactly.
  assert.is((await call((cb) => h.utimens('/f', { ms: 1_000_000_000_123, nsec: 456_789 }, { ms: 1_500_000_000_000, nsec: 500_000 }, cb))).code, 0);
  assert.equal(utimens().at(-1), { type: 'utimens', path: '/f', atimeMs: 1_000_000_000_123, mtimeMs: 1_500_000_000_000, atimeNsec: 456_789, mtimeNsec: 500_000 });
  // touch -m -d: the access time is left alone; the mount neither reads nor resends it.
  const attrCalls = cluster.attrCalls.length;
  assert.is((await call((cb) => h.utimens('/f', null, { ms: 1_600_000_000_000, nsec: 0 }, cb))).code, 0);
  assert.equal(utimens().at(-1), { type: 'utimens', path: '/f', atimeMs: null, mtimeMs: 1_600_000_000_000 });
  assert.is(cluster.attrCalls.length, attrCalls, 'no attribute read to fill in the time left alone');
  // touch -a: the access time is the op's own time, the modification time stays.
  assert.is((await call((cb) => h.utimens('/f', 'now', null, cb))).code, 0);
  assert.equal(utimens().at(-1), { type: 'utimens', path: '/f', atimeMs: 'now', mtimeMs: null });
  assert.is(cluster.nodes.get('/f')!.attr.mtimeMs, 1_600_000_000_000);
  // Both left alone: nothing to send.
  const count = cluster.ops.length;
  assert.is((await call((cb) => h.utimens('/f', null, null, cb))).code, 0);
  assert.is(cluster.ops.length, count);
});

test('utimens leaving mtime alone commits the buffered writes first', async () => {
  const { cluster, h, call } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/f', fd, Buffer.from('data'), 4, 0, cb));
  assert.is((await call((cb) => h.utimens('/f', { ms: 5000, nsec: 0 }, null, cb))).code, 0);
  assert.equal(cluster.ops.map((o) => o.type), ['create', 'write', 'utimens']);
  const t = cluster.ops[2] as Extract<Op, { type: 'utimens' }>;
  assert.is(t.atimeMs, 5000);
  assert.is(t.mtimeMs, null);
});

test('overlapping writes through two handles land in the order they were made', async () => {
  const { cluster, h, call } = setup();
  const plain = (await call<number>((cb) => h.create('/n', 0o644, cb, CALLER, CREATE_FLAGS))).v!;
  const app = (await call<number>((cb) => h.open('/n', fsConstants.O_WRONLY | fsConstants.O_APPEND, cb))).v!;
  // As the conformance case: plain writes PLAIN, the O_APPEND handle appends at 5, then
  // plain writes ! at its own position 5, over the first byte of +app.
  await call((cb) => h.write('/n', plain, Buffer.from('PLAIN'), 5, 0, cb));
  await call((cb) => h.write('/n', app, Buffer.from('+app'), 4, 5, cb));
  await call((cb) => h.write('/n', plain, Buffer.from('!'), 1, 5, cb));
  await call((cb) => h.release('/n', plain, cb));
  await call((cb) => h.release('/n', app, cb));
  assert.is(cluster.nodes.get('/n')!.data.toString(), 'PLAIN!app');
});

test('mknod makes FIFOs, sockets and devices with their type and device number', async () => {
  const { cluster, h, call } = setup();
  assert.is((await call((cb) => h.mknod('/fifo', 0o010640, 0, cb, CALLER))).code, 0);
  assert.is((await call((cb) => h.mknod('/tty', 0o020620, 0x0400, cb, CALLER))).code, 0);
  assert.is((await call((cb) => h.mknod('/plain', 0o644, 0, cb, CALLER))).code, 0, 'no type bits: a regular file');
  const mknods = cluster.ops.filter((o): o is Extract<Op, { type: 'mknod' }> => o.type === 'mknod');
  assert.equal(mknods.map((o) => [o.mode, o.rdev]), [[0o010640, 0], [0o020620, 0x0400], [0o100644, 0]]);
});

test('user.* and trusted.* attributes go to the cluster; other namespaces are answered here', async () => {
  const { cluster, h, call } = setup();
  await call((cb) => h.mknod('/f', 0o100644, 0, cb, CALLER));
  const value = Buffer.from('hello');
  assert.is((await call((cb) => h.setxattr('/f', 'user.k', value, 0, 1, cb))).code, 0);
  value.fill(0); // fuse-native detaches the kernel's buffer: the handler must have copied it
  assert.is((await call((cb) => h.setxattr('/f', 'user.k', Buffer.from('x'), 0, 1, cb))).code, -E.EEXIST);
  const got = await call<Buffer>((cb) => h.getxattr('/f', 'user.k', 0, cb));
  assert.is(got.v!.toString(), 'hello');
  assert.equal((await call<string[]>((cb) => h.listxattr('/f', cb))).v, ['user.k']);
  const opsBefore = cluster.ops.length;
  assert.is((await call<Buffer>((cb) => h.getxattr('/f', 'security.capability', 0, cb))).code, -E.ENODATA);
  assert.is((await call((cb) => h.setxattr('/f', 'security.x', Buffer.from('x'), 0, 0, cb))).code, -E.EOPNOTSUPP);
  assert.is(cluster.ops.length, opsBefore, 'neither reached the cluster');
  // The kernel lets only CAP_SYS_ADMIN reach trusted.*; listing shows them to root alone.
  assert.is((await call((cb) => h.setxattr('/f', 'trusted.x', Buffer.from('t'), 0, 0, cb))).code, 0);
  assert.equal((await call<string[]>((cb) => h.listxattr('/f', cb))).v, ['user.k'], 'not root: trusted.* not listed');
  assert.is((await call((cb) => h.removexattr('/f', 'user.k', cb))).code, 0);
  assert.is((await call<Buffer>((cb) => h.getxattr('/f', 'user.k', 0, cb))).code, -E.ENODATA);
});

test('what create, mknod, mkdir and symlink make belongs to the calling process', async () => {
  const { cluster, h, call } = setup();
  const alice: Fuse.Caller = { uid: 1001, gid: 1002, pid: 1, umask: 0 };
  const bob: Fuse.Caller = { uid: 2001, gid: 2002, pid: 2, umask: 0 };
  assert.is((await call((cb) => h.mkdir('/d', 0o777, cb, alice))).code, 0);
  assert.is((await call<number>((cb) => h.create('/d/f', 0o644, cb, bob, CREATE_FLAGS))).code, 0);
  assert.is((await call((cb) => h.mknod('/d/n', 0o100644, 0, cb, alice))).code, 0);
  assert.is((await call((cb) => h.symlink('f', '/d/l', cb, bob))).code, 0);
  const owner = (p: string) => [cluster.nodes.get(p)!.attr.uid, cluster.nodes.get(p)!.attr.gid];
  assert.equal(owner('/d'), [1001, 1002]);
  assert.equal(owner('/d/f'), [2001, 2002]);
  assert.equal(owner('/d/n'), [1001, 1002]);
  assert.equal(owner('/d/l'), [2001, 2002]);
});

test('create is exclusive only with O_EXCL; a plain O_CREAT that lost a race opens the file', async () => {
  const { cluster, h, call } = setup();
  const excl = fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY;
  assert.is((await call<number>((cb) => h.create('/lock', 0o644, cb, CALLER, excl))).code, 0);
  assert.is((cluster.ops.at(-1) as Extract<Op, { type: 'create' }>).exclusive, true);
  // Another mount made /lock between the kernel's lookup and this create.
  assert.is((await call<number>((cb) => h.create('/lock', 0o644, cb, CALLER, excl))).code, -E.EEXIST);

  const fd = (await call<number>((cb) => h.create('/f', 0o644, cb, CALLER, CREATE_FLAGS))).v!;
  assert.is((cluster.ops.at(-1) as Extract<Op, { type: 'create' }>).exclusive, false);
  await call((cb) => h.write('/f', fd, Buffer.from('kept'), 4, 0, cb));
  await call((cb) => h.release('/f', fd, cb));
  const again = await call<number>((cb) => h.create('/f', 0o644, cb, CALLER, fsConstants.O_CREAT | fsConstants.O_RDWR));
  assert.is(again.code, 0, 'the existing file is opened');
  const buf = Buffer.alloc(10);
  assert.is((await call((cb) => h.read('/f', again.v!, buf, 10, 0, cb))).code, 4);
  assert.is(buf.subarray(0, 4).toString(), 'kept');
  // With O_TRUNC it is truncated, as open(2) would.
  const trunc = fsConstants.O_CREAT | fsConstants.O_WRONLY | fsConstants.O_TRUNC;
  assert.is((await call<number>((cb) => h.create('/f', 0o644, cb, CALLER, trunc))).code, 0);
  assert.is(cluster.nodes.get('/f')!.data.length, 0);
});

test('ftruncate flushes first; chown with -1 keeps that id', async () => {
  const { cluster, h, call } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/f', fd, Buffer.from('0123456789'), 10, 0, cb));
  assert.is((await call((cb) => h.ftruncate('/f', fd, 4, cb))).code, 0);
  assert.is(cluster.nodes.get('/f')!.data.toString(), '0123');
  assert.is((await call((cb) => h.chown('/f', 0xffffffff, 42, cb))).code, 0);
  assert.is(cluster.nodes.get('/f')!.attr.uid, 1234);
  assert.is(cluster.nodes.get('/f')!.attr.gid, 42);
});

test('fallocate commits the buffered writes first, then sends one op; unsupported modes and too much space are refused here', async () => {
  const { cluster, h, call } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/f', fd, Buffer.from('0123456789'), 10, 0, cb));
  const sent = cluster.ops.length;
  assert.is((await call((cb) => h.fallocate('/f', fd, 0x03, 2, 4, cb))).code, 0);
  assert.equal(cluster.ops.slice(sent).map((o) => o.type), ['write', 'fallocate'], 'no buffered write lands after the punched hole');
  assert.equal(cluster.ops[cluster.ops.length - 1], { type: 'fallocate', path: '/f', ino: 101, mode: 3, offset: 2, size: 4 }, 'by the inode of the open file');
  const before = cluster.ops.length;
  assert.is((await call((cb) => h.fallocate('/f', fd, 0x08, 0, 4096, cb))).code, -E.EOPNOTSUPP, 'COLLAPSE_RANGE');
  assert.is((await call((cb) => h.fallocate('/f', fd, 0x02, 0, 4096, cb))).code, -E.EOPNOTSUPP, 'PUNCH_HOLE without KEEP_SIZE');
  assert.is((await call((cb) => h.fallocate('/f', fd, 0, 0, 2 ** 50, cb))).code, -E.ENOSPC, 'more than the cluster has left');
  assert.is(cluster.ops.length, before, 'none of them reached the cluster');
  assert.is((await call((cb) => h.fallocate('/f', 999, 0, 0, 10, cb))).code, -E.EBADF);
});

test('an open file follows a rename of its directory', async () => {
  const { cluster, h, call } = setup();
  await call((cb) => h.mkdir('/d', 0o40755, cb, CALLER));
  const fd = (await call<number>((cb) => h.create('/d/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write('/d/f', fd, Buffer.from('one'), 3, 0, cb));
  assert.is((await call((cb) => h.rename('/d', '/e', cb))).code, 0);
  assert.is(cluster.nodes.get('/e/f')!.data.toString(), 'one', 'buffered data was committed before the rename');
  await call((cb) => h.write('/e/f', fd, Buffer.from('two'), 3, 3, cb));
  await call((cb) => h.release('/e/f', fd, cb));
  assert.is(cluster.nodes.get('/e/f')!.data.toString(), 'onetwo');
});

/** The path libfuse (dfs patch item 12) gives a call on node `nodeid`, which a rename
 * replaced at `dir`/`name`. */
function aliasPath(dir: string, nodeid: number, name: string): string {
  return `${dir}/${(ALIAS_PREFIX + nodeid.toString(16).padStart(16, '0')).padEnd(ALIAS_MARKER_BYTES, '~')}${name}`;
}

async function writeFile(h: Required<Fuse.Handlers>, call: ReturnType<typeof setup>['call'], path: string, text: string): Promise<void> {
  const fd = (await call<number>((cb) => h.create(path, 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  await call((cb) => h.write(path, fd, Buffer.from(text), text.length, 0, cb));
  assert.is((await call((cb) => h.release(path, fd, cb))).code, 0);
}

test('a rename over an entry of its own type lets libfuse keep the replaced node; over nothing, another type or a directory it does not', async () => {
  const { h, call } = setup();
  await writeFile(h, call, '/a', 'a');
  await writeFile(h, call, '/b', 'b');
  await call((cb) => h.symlink('a', '/l', cb, CALLER));
  await call((cb) => h.mkdir('/d1', 0o40755, cb, CALLER));
  await call((cb) => h.mkdir('/d2', 0o40755, cb, CALLER));
  assert.is((await call((cb) => h.rename('/a', '/b', cb))).code, 1, 'a file over a file');
  assert.is((await call((cb) => h.rename('/b', '/c', cb))).code, 0, 'nothing replaced');
  assert.is((await call((cb) => h.rename('/c', '/l', cb))).code, 0, 'a file over a symlink');
  assert.is((await call((cb) => h.rename('/d1', '/d2', cb))).code, 0, 'a directory over a directory');
});

test('a call through the alias of a replaced name reaches the name; once it opened a file there, that file, even after the name is renamed over and unlinked', async () => {
  const { cluster, h, call } = setup();
  await writeFile(h, call, '/t', 'one');
  await writeFile(h, call, '/n', 'two');
  assert.is((await call((cb) => h.rename('/n', '/t', cb))).code, 1);
  const alias = aliasPath('', 7, 't');
  assert.is((await call<Fuse.Stat>((cb) => h.getattr(alias, cb))).v!.size, 3, 'what /t holds now');
  const fd = (await call<number>((cb) => h.open(alias, fsConstants.O_RDONLY, cb))).v!;
  // Another file takes the name: the one opened through the alias keeps its contents.
  await writeFile(h, call, '/n', 'three!');
  assert.is((await call((cb) => h.rename('/n', '/t', cb))).code, 1);
  assert.is((await call<Fuse.Stat>((cb) => h.getattr(alias, cb))).v!.size, 3, 'a stat on that node: the file it opened');
  assert.is((await call<Fuse.Stat>((cb) => h.getattr('/t', cb))).v!.size, 6);
  const buf = Buffer.alloc(10);
  assert.is((await call((cb) => h.read(alias, fd, buf, 10, 0, cb))).code, 3);
  assert.is(buf.subarray(0, 3).toString(), 'two');
  const orphans = [...cluster.nodes.keys()].filter((p) => p.startsWith(`${ORPHANS_DIR}/`));
  assert.is(orphans.length, 1, 'the opened file moved to an orphan');
  // Another alias of the same name, on another node: the name, not that file.
  assert.is((await call<Fuse.Stat>((cb) => h.getattr(aliasPath('', 8, 't'), cb))).v!.size, 6);
  // The name is unlinked while a file opened through an alias of it is open.
  const fd2 = (await call<number>((cb) => h.open(aliasPath('', 9, 't'), fsConstants.O_RDONLY, cb))).v!;
  assert.is((await call((cb) => h.unlink('/t', cb))).code, 0);
  assert.not.ok(cluster.nodes.has('/t'));
  assert.is((await call((cb) => h.read(aliasPath('', 9, 't'), fd2, buf, 10, 0, cb))).code, 6, 'still readable');
  assert.is(buf.subarray(0, 6).toString(), 'three!');
  await call((cb) => h.release(alias, fd, cb));
  await call((cb) => h.release(aliasPath('', 9, 't'), fd2, cb));
  assert.equal([...cluster.nodes.keys()].filter((p) => p.startsWith(`${ORPHANS_DIR}/`)), [], 'the last closes removed the orphans');
});

test('a lost background write is EIO at flush and close, not success', async () => {
  const { cluster, h, call } = setup();
  const fd = (await call<number>((cb) => h.create('/f', 0o100644, cb, CALLER, CREATE_FLAGS))).v!;
  cluster.failWrites = true;
  // 100 bytes with 64-byte chunks: one chunk goes out during the write and fails.
  await call((cb) => h.write('/f', fd, Buffer.alloc(100, 1), 100, 0, cb));
  assert.is((await call((cb) => h.flush('/f', fd, cb))).code, -E.EIO);
  assert.is((await call((cb) => h.fsync('/f', 0, fd, cb))).code, -E.EIO);
  assert.is((await call((cb) => h.write('/f', fd, Buffer.alloc(1), 1, 100, cb))).code, -E.EIO);
  assert.is((await call((cb) => h.release('/f', fd, cb))).code, -E.EIO);
});

test('names over 255 bytes are ENAMETOOLONG without asking the cluster', async () => {
  const { cluster, h, call } = setup();
  const long = '/' + 'n'.repeat(256);
  assert.is((await call((cb) => h.mkdir(long, 0o755, cb, CALLER))).code, -E.ENAMETOOLONG);
  assert.is((await call((cb) => h.create(long, 0o644, cb, CALLER, CREATE_FLAGS))).code, -E.ENAMETOOLONG);
  assert.is((await call((cb) => h.getattr(long, cb))).code, -E.ENAMETOOLONG);
  assert.is(cluster.ops.length, 0);
  assert.is(cluster.attrCalls.length, 0);
});

test('cluster errnos reach the application; unknown handles are EBADF', async () => {
  const { h, call } = setup();
  assert.is((await call((cb) => h.getattr('/nope', cb))).code, -E.ENOENT);
  await call((cb) => h.mkdir('/d', 0o755, cb, CALLER));
  assert.is((await call((cb) => h.mkdir('/d', 0o755, cb, CALLER))).code, -E.EEXIST);
  assert.is((await call((cb) => h.read('/d', 999, Buffer.alloc(1), 1, 0, cb))).code, -E.EBADF);
  assert.is((await call((cb) => h.mknod('/fifo', 0o010644, 0, cb, CALLER))).code, 0, 'FIFOs are supported');
  assert.is((await call((cb) => h.mknod('/fifo', 0o010644, 0, cb, CALLER))).code, -E.EEXIST);
});

test('readdir lists . and .. and the entries, and primes the attribute cache', async () => {
  const { cluster, h, call } = setup({ attrTimeoutMs: 60_000 });
  await call((cb) => h.mkdir('/d', 0o755, cb, CALLER));
  await call((cb) => h.mknod('/d/a', 0o100644, 0, cb, CALLER));
  await call((cb) => h.mknod('/d/b', 0o100644, 0, cb, CALLER));
  const r = await new Promise<{ code: number; names?: string[]; stats?: Fuse.Stat[] }>((resolve) =>
    h.readdir('/d', (code, names, stats) => resolve({ code, names, stats })),
  );
  assert.is(r.code, 0);
  assert.equal(r.names!.sort(), ['.', '..', 'a', 'b']);
  assert.is(r.stats!.length, r.names!.length);
  const before = cluster.attrCalls.length;
  await call((cb) => h.getattr('/d/a', cb));
  await call((cb) => h.getattr('/d/b', cb));
  assert.is(cluster.attrCalls.length, before, 'ls -l is answered from the listing');
});

test('statfs fits 64-bit counts into fuse-native uint32 fields', async () => {
  const { h, call } = setup();
  const r = await call<Fuse.StatFs>((cb) => h.statfs('/', cb));
  assert.is(r.code, 0);
  const st = r.v!;
  assert.ok(st.blocks <= 0xffffffff);
  assert.is(st.blocks * st.frsize, 2 ** 33 * 4096, 'the capacity is unchanged');
  assert.is(st.namemax, 255);
});

test.run();
