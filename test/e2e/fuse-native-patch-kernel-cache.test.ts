/*
 * End to end through a real FUSE mount: the kernel caching the dfs patch to fuse-native
 * lets a file system ask for (patches/fuse-native+2.2.6.patch item 13), on a tiny
 * in-memory file system mounted with DfsFuse (dfs-mount's own options: every libfuse
 * timeout 0), served by this process and stat'ed through the mount by the thread pool
 * (fs.promises), so that the main thread stays free to answer.
 *
 * What must hold:
 * - with cache times on getattr answers, repeated stats of a name reach no handler, and a
 *   change made behind the kernel's back stays unseen, until invalidatePath: then the very
 *   next stat shows it;
 * - fgetattr's times hold the same way (libfuse asks it for the entry a create made);
 * - invalidatePath of a name the file system renamed or removed makes the old name go;
 *   invalidateEntry drops a negative entry (a name that was not there) kept by entryMs;
 * - invalidateInode drops the attributes and not the name, and a handler may wait for it
 *   before answering a lookup in the same directory;
 * - without times (the default) every stat asks the handler, as before the patch;
 * - invalidating a path libfuse never looked up is a no-op that says so;
 * - an invalidation asked for by a handler before it answers does not deadlock the mount
 *   (the kernel holds the directory's lock for the lookup being answered), and takes
 *   effect after the answer.
 * The mount and the temp dir go away after the suite, even when it fails.
 *
 *   node dist/test/e2e/fuse-native-patch-kernel-cache.test.js     (root, /dev/fuse)
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Fuse from 'fuse-native';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isFuseMounted } from '../../cli/mounts';
import { DfsFuse, mountFuse, unmountFuse } from '../../mount/fuse-mount';

/** Long enough that nothing in a test outlives it by accident. */
const CACHE_MS = 60_000;
const STATS_REPEATED = 20;
const ENOENT = -2;

// ---- the in-memory file system ----------------------------------------------------------

interface Node {
  mode: number;
  ino: number;
}

let nextIno = 2;
const nodes = new Map<string, Node>();
/** Calls to getattr and fgetattr per path, since the last reset. */
const getattrCalls = new Map<string, number>();
const fgetattrCalls = new Map<string, number>();
/** The times getattr and fgetattr give with each answer (undefined: none). */
let getattrCache: Fuse.CacheTimes | undefined;
let fgetattrCache: Fuse.CacheTimes | undefined;
/** The entry time getattr gives with ENOENT (undefined: none). */
let negativeEntryMs: number | undefined;
/** Called by getattr before it answers; when it gives a promise, the answer waits for it. */
let beforeGetattr: ((path: string) => Promise<unknown> | void) | null = null;

function put(path: string, mode: number): void {
  nodes.set(path, { mode, ino: nextIno++ });
}

function statOf(node: Node): Fuse.Stat {
  const now = Date.now();
  return { mode: node.mode, uid: 0, gid: 0, size: 0, nlink: 1, ino: node.ino, blocks: 0, atime: now, mtime: now, ctime: now };
}

function count(calls: Map<string, number>, path: string): void {
  calls.set(path, (calls.get(path) ?? 0) + 1);
}

const handlers: Fuse.Handlers = {
  getattr(path, cb) {
    count(getattrCalls, path);
    const answer = () => {
      const node = nodes.get(path);
      if (node === undefined) return cb(ENOENT, undefined, negativeEntryMs === undefined ? undefined : { entryMs: negativeEntryMs });
      cb(0, statOf(node), getattrCache);
    };
    const wait = beforeGetattr?.(path);
    if (wait) void wait.then(answer, answer);
    else answer();
  },
  fgetattr(path, _fd, cb) {
    count(fgetattrCalls, path);
    const node = nodes.get(path);
    if (node === undefined) return cb(ENOENT);
    cb(0, statOf(node), fgetattrCache);
  },
  open(path, _flags, cb) {
    cb(nodes.has(path) ? 0 : ENOENT, 1);
  },
  create(path, mode, cb) {
    put(path, 0o100000 | (mode & 0o7777));
    cb(0, 1);
  },
  release(_path, _fd, cb) {
    cb(0);
  },
  readdir(path, cb) {
    const prefix = path === '/' ? '/' : `${path}/`;
    const names = [...nodes.keys()].filter((p) => p !== '/' && p.startsWith(prefix) && !p.slice(prefix.length).includes('/'));
    cb(0, names.map((p) => p.slice(prefix.length)));
  },
};

// ---- setup and cleanup --------------------------------------------------------------------

let root = '';
let mnt = '';
let fuse: DfsFuse | null = null;

function emergencyCleanup(): void {
  if (mnt && isFuseMounted(mnt)) spawnSync('fusermount', ['-uz', mnt]);
}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'dfs-e2e-kcache-'));
  mnt = root;
  process.on('exit', emergencyCleanup);
  put('/', 0o40755);
  fuse = new DfsFuse(mnt, handlers);
  await mountFuse(fuse);
});

test.after(async () => {
  try {
    if (fuse) await unmountFuse(fuse);
  } finally {
    emergencyCleanup();
    process.off('exit', emergencyCleanup);
    rmSync(root, { recursive: true, force: true });
  }
});

test.before.each(() => {
  getattrCache = undefined;
  fgetattrCache = undefined;
  negativeEntryMs = undefined;
  beforeGetattr = null;
});

/** The mode bits of `path` as stat(2) through the mount reports them. */
async function modeOf(path: string): Promise<number> {
  return (await stat(join(mnt, path))).mode & 0o7777;
}

async function statFails(path: string): Promise<string | null> {
  try {
    await stat(join(mnt, path));
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'unknown';
  }
}

async function statRepeatedly(path: string): Promise<void> {
  for (let i = 0; i < STATS_REPEATED; i++) await stat(join(mnt, path));
}

// ---- tests ----------------------------------------------------------------------------------

test('the patched addon hooked libfuse for kernel caching', () => {
  assert.ok(DfsFuse.kernelCacheHooked(), 'this machine has the libfuse 2.9 the patch mirrors');
});

test('without cache times every stat asks the handler, and a change shows at once (as before)', async () => {
  put('/plain', 0o100644);
  assert.is(await modeOf('/plain'), 0o644);
  const before = getattrCalls.get('/plain') ?? 0;
  await statRepeatedly('/plain');
  assert.ok((getattrCalls.get('/plain') ?? 0) - before >= STATS_REPEATED, `${STATS_REPEATED} stats, ${(getattrCalls.get('/plain') ?? 0) - before} getattrs`);
  nodes.get('/plain')!.mode = 0o100600;
  assert.is(await modeOf('/plain'), 0o600, 'no invalidation needed');
});

test('with cache times repeated stats reach no handler; a change is unseen until invalidatePath', async () => {
  getattrCache = CACHE_MS;
  put('/cached', 0o100644);
  assert.is(await modeOf('/cached'), 0o644);
  const before = getattrCalls.get('/cached') ?? 0;
  assert.ok(before >= 1, 'the first stat asked');
  await statRepeatedly('/cached');
  assert.is(getattrCalls.get('/cached'), before, 'the kernel answered the repeated stats');

  nodes.get('/cached')!.mode = 0o100600;
  assert.is(await modeOf('/cached'), 0o644, 'the kernel still has the old mode: the cache is in use');
  assert.is(getattrCalls.get('/cached'), before);

  assert.is(await fuse!.invalidatePath('/cached'), true);
  assert.is(await modeOf('/cached'), 0o600, 'the very next stat shows the new mode');
  assert.is(getattrCalls.get('/cached'), before + 1, 'fetched once more, and cached again');
  await statRepeatedly('/cached');
  assert.is(getattrCalls.get('/cached'), before + 1);
});

test('entry and attribute times apply separately', async () => {
  getattrCache = { entryMs: CACHE_MS, attrMs: 0 };
  put('/entry-only', 0o100644);
  await modeOf('/entry-only');
  const before = getattrCalls.get('/entry-only')!;
  await statRepeatedly('/entry-only');
  // The name is cached, not the attributes: each stat is one getattr (not a lookup and a getattr).
  assert.is(getattrCalls.get('/entry-only')! - before, STATS_REPEATED);
  nodes.get('/entry-only')!.mode = 0o100600;
  assert.is(await modeOf('/entry-only'), 0o600);
});

test('fgetattr times hold for the file a create made (libfuse asks fgetattr for its entry)', async () => {
  // getattr gives no times, so whatever the kernel keeps came from fgetattr's answer.
  fgetattrCache = CACHE_MS;
  const handle = await open(join(mnt, 'created'), 'wx', 0o644);
  await handle.close();
  assert.ok((fgetattrCalls.get('/created') ?? 0) >= 1, 'the create asked fgetattr');
  const before = getattrCalls.get('/created') ?? 0;
  await statRepeatedly('/created');
  assert.is(getattrCalls.get('/created') ?? 0, before, 'the kernel answered the stats from the create');
  nodes.get('/created')!.mode = 0o100600;
  assert.is(await modeOf('/created'), 0o644, 'still cached');
  assert.is(await fuse!.invalidatePath('/created'), true);
  assert.is(await modeOf('/created'), 0o600, 'the next stat asks again');
  // A lookup and a getattr: getattr's own answers carry no times.
  assert.is(getattrCalls.get('/created'), before + 2);
});

test('invalidatePath makes a name the file system renamed or removed go, in a subdirectory', async () => {
  getattrCache = CACHE_MS;
  put('/dir', 0o40755);
  put('/dir/old', 0o100644);
  put('/dir/gone', 0o100644);
  assert.is(await modeOf('/dir/old'), 0o644);
  assert.is(await modeOf('/dir/gone'), 0o644);

  // Renamed and removed behind the kernel's back: the cached names still answer.
  nodes.set('/dir/new', nodes.get('/dir/old')!);
  nodes.delete('/dir/old');
  nodes.delete('/dir/gone');
  assert.is(await statFails('/dir/old'), null, 'the old name is still cached');
  assert.is(await statFails('/dir/gone'), null, 'the removed name is still cached');

  assert.is(await fuse!.invalidatePath('/dir/old'), true);
  assert.is(await fuse!.invalidatePath('/dir/gone'), true);
  assert.is(await statFails('/dir/old'), 'ENOENT');
  assert.is(await statFails('/dir/gone'), 'ENOENT');
  assert.is(await modeOf('/dir/new'), 0o644, 'the new name is found');
});

test('a negative entry kept by entryMs hides a new name until invalidateEntry', async () => {
  getattrCache = CACHE_MS;
  negativeEntryMs = CACHE_MS;
  put('/neg', 0o40755);
  assert.is(await statFails('/neg/later'), 'ENOENT');
  const before = getattrCalls.get('/neg/later')!;
  for (let i = 0; i < STATS_REPEATED; i++) assert.is(await statFails('/neg/later'), 'ENOENT');
  assert.is(getattrCalls.get('/neg/later'), before, 'the kernel kept the negative entry');

  put('/neg/later', 0o100644);
  assert.is(await statFails('/neg/later'), 'ENOENT', 'still hidden by the negative entry');
  // libfuse has no node for a name that is not there: only its directory's entry can be dropped.
  assert.is(await fuse!.invalidatePath('/neg/later'), false);
  assert.is(await fuse!.invalidateEntry('/neg/later'), true);
  assert.is(await modeOf('/neg/later'), 0o644);
});

test('without an entry time an ENOENT is not kept', async () => {
  put('/neg2', 0o40755);
  assert.is(await statFails('/neg2/later'), 'ENOENT');
  put('/neg2/later', 0o100644);
  assert.is(await modeOf('/neg2/later'), 0o644);
});

test('invalidating what libfuse never looked up is a no-op that says so', async () => {
  assert.is(await fuse!.invalidatePath('/never/looked/up'), false);
  assert.is(await fuse!.invalidateEntry('/never/looked/up'), false);
  assert.is(await fuse!.invalidatePath('/'), true, 'the root always has a node');
  const refused = await fuse!.invalidatePath('relative').then(
    () => null,
    (err: NodeJS.ErrnoException) => err.errno,
  );
  assert.is(refused, -22, 'a path that is not absolute is EINVAL');
});

test('an invalidation asked for inside a handler waits for the answer, then applies', async () => {
  getattrCache = CACHE_MS;
  put('/inside', 0o40755);
  put('/inside/f', 0o100644);
  await modeOf('/inside');
  let invalidated: Promise<boolean> | null = null;
  beforeGetattr = (path) => {
    if (path === '/inside/f' && invalidated === null) invalidated = fuse!.invalidateEntry('/inside/f');
  };
  let timer: NodeJS.Timeout | undefined;
  const deadlocked = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the stat did not come back: deadlock')), 10_000);
  });
  try {
    assert.is(await Promise.race([modeOf('/inside/f'), deadlocked]), 0o644);
    assert.is(await Promise.race([invalidated!, deadlocked]), true);
  } finally {
    clearTimeout(timer);
  }
  const before = getattrCalls.get('/inside/f')!;
  await modeOf('/inside/f');
  assert.is(getattrCalls.get('/inside/f'), before + 1, 'the entry the answer made was dropped after it');
});

test('invalidateInode drops the attributes and keeps the name; a handler may wait for it', async () => {
  getattrCache = CACHE_MS;
  put('/inode-dir', 0o40755);
  put('/inode-dir/f', 0o100644);
  assert.is(await modeOf('/inode-dir/f'), 0o644);
  nodes.get('/inode-dir/f')!.mode = 0o100600;
  assert.is(await modeOf('/inode-dir/f'), 0o644, 'cached');
  const dirCalls = getattrCalls.get('/inode-dir')!;
  assert.is(await fuse!.invalidateInode('/inode-dir/f'), true);
  assert.is(await modeOf('/inode-dir/f'), 0o600, 'the attributes went');
  assert.is(getattrCalls.get('/inode-dir'), dirCalls, 'the directory was left alone');
  assert.is(await fuse!.invalidateInode('/inode-dir/never'), false, 'no node: nothing to drop');

  // Waited for by the answer to a lookup of another name in the directory (the kernel holds
  // the directory's lock until that lookup is answered): an inode's invalidation takes no
  // such lock, so it completes first.
  nodes.get('/inode-dir/f')!.mode = 0o100640;
  put('/inode-dir/h', 0o100644);
  let waited: boolean | null = null;
  beforeGetattr = (path) => (path === '/inode-dir/h' && waited === null ? fuse!.invalidateInode('/inode-dir/f').then((r) => void (waited = r)) : undefined);
  let timer: NodeJS.Timeout | undefined;
  const deadlocked = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('the lookup did not come back: the invalidation waited for it')), 10_000);
  });
  try {
    assert.is(await Promise.race([modeOf('/inode-dir/h'), deadlocked]), 0o644);
  } finally {
    clearTimeout(timer);
  }
  assert.is(waited, true, 'invalidated before the lookup was answered');
  assert.is(await modeOf('/inode-dir/f'), 0o640);
});

test.run();
