/*
 * End to end through a real FUSE mount: patch item 15 (patches/fuse-native+2.2.6.patch).
 * A tiny in-memory file system mounted with DfsFuse and absentXattrNamespaces: a getxattr
 * of a name in those namespaces is answered ENODATA without reaching the handler, any
 * other name reaches it as before; without the option every name reaches it.
 *
 *   node dist/test/e2e/fuse-native-patch-xattr.test.js     (root, /dev/fuse)
 */
import { execFile, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type Fuse from 'fuse-native';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isFuseMounted } from '../../cli/mounts';
import { DfsFuse, mountFuse, unmountFuse } from '../../mount/fuse-mount';

const ENOENT = -2;
const ENODATA = -61;
const run = promisify(execFile);

/** getxattr calls the handler saw, by attribute name. */
const calls = new Map<string, number>();

const handlers: Fuse.Handlers = {
  getattr(path, cb) {
    const now = Date.now();
    if (path === '/') return cb(0, { mode: 0o40755, uid: 0, gid: 0, size: 0, nlink: 2, ino: 1, blocks: 0, atime: now, mtime: now, ctime: now });
    if (path === '/f') return cb(0, { mode: 0o100644, uid: 0, gid: 0, size: 0, nlink: 1, ino: 2, blocks: 0, atime: now, mtime: now, ctime: now });
    cb(ENOENT);
  },
  getxattr(_path, name, _position, cb) {
    calls.set(name, (calls.get(name) ?? 0) + 1);
    if (name === 'user.colour') return cb(0, Buffer.from('blue'));
    cb(ENODATA);
  },
};

/** os.getxattr in another process (this one's main thread answers the mount), as the
 * value in hex or the errno name. */
async function getxattr(path: string, name: string): Promise<string> {
  const script = 'import os,sys,errno\ntry: print(os.getxattr(sys.argv[1], sys.argv[2]).hex())\nexcept OSError as e: print(errno.errorcode[e.errno])';
  const { stdout } = await run('python3', ['-c', script, path, name]);
  return stdout.trim();
}

const mounts: { root: string; fuse: DfsFuse }[] = [];

async function mountWith(opts: { absentXattrNamespaces?: string[] }): Promise<string> {
  const root = mkdtempSync(join(tmpdir(), 'dfs-e2e-xattr-'));
  const fuse = new DfsFuse(root, handlers, opts);
  await mountFuse(fuse);
  mounts.push({ root, fuse });
  return root;
}

function emergencyCleanup(): void {
  for (const m of mounts) if (isFuseMounted(m.root)) spawnSync('fusermount', ['-uz', m.root]);
}

test.before(() => {
  process.on('exit', emergencyCleanup);
});

test.after(async () => {
  try {
    for (const m of mounts) await unmountFuse(m.fuse);
  } finally {
    emergencyCleanup();
    process.off('exit', emergencyCleanup);
    for (const m of mounts) rmSync(m.root, { recursive: true, force: true });
  }
});

test.before.each(() => calls.clear());

test('names in the absent namespaces are ENODATA without a call to the handler; others reach it', async () => {
  const root = await mountWith({ absentXattrNamespaces: ['security.', 'system.'] });
  const f = join(root, 'f');
  assert.is(await getxattr(f, 'security.capability'), 'ENODATA');
  assert.is(await getxattr(f, 'security.selinux'), 'ENODATA');
  assert.is(await getxattr(f, 'system.posix_acl_access'), 'ENODATA');
  assert.is(await getxattr(f, 'user.colour'), Buffer.from('blue').toString('hex'));
  assert.is(await getxattr(f, 'user.none'), 'ENODATA');
  assert.equal(Object.fromEntries(calls), { 'user.colour': 1, 'user.none': 1 });
});

test('without the option every name reaches the handler, as before the patch', async () => {
  const root = await mountWith({});
  const f = join(root, 'f');
  assert.is(await getxattr(f, 'security.capability'), 'ENODATA');
  assert.is(await getxattr(f, 'user.colour'), Buffer.from('blue').toString('hex'));
  assert.is(calls.get('security.capability'), 1);
  assert.is(calls.get('user.colour'), 1);
});

test('a namespace list the addon cannot take is refused at construction', () => {
  assert.throws(() => new DfsFuse('/nonexistent', handlers, { absentXattrNamespaces: ['bad\nname'] }), /absentXattrNamespaces/);
  assert.throws(() => new DfsFuse('/nonexistent', handlers, { absentXattrNamespaces: [''] }), /absentXattrNamespaces/);
});

test.run();
