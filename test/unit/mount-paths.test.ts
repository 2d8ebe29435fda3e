/*
 * Path handling in the mount: local validation (ENAMETOOLONG without a round trip), how
 * open handles follow a rename, the command line, and the libfuse option string.
 *
 *   node dist/test/unit/mount-paths.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { constants } from 'node:os';
import { checkEntryPath, checkPath } from '../../mount/fuse-ops';
import { errnoOfError } from '../../mount/errno';
import { childPath, HandleTable, renamePath } from '../../mount/handles';
import { buildFuseOptions, FUSE_OPTIONS_BYTES_MAX } from '../../mount/fuse-mount';
import { allowOtherByDefault, parseCli, userAllowOther, DEFAULT_PROXY_URL, type Cli } from '../../mount/mount-args';
import { daemonLogPath } from '../../mount/daemon';

const E = constants.errno;

function errnoOfCall(f: () => unknown): number | null {
  try {
    f();
    return null;
  } catch (err) {
    return errnoOfError(err);
  }
}

test('valid paths pass local validation', () => {
  assert.is(checkPath('/'), '/');
  assert.is(checkPath('/a/b c/d'), '/a/b c/d');
  assert.is(checkEntryPath('/' + 'x'.repeat(255)), '/' + 'x'.repeat(255));
});

test('a 256-byte name is ENAMETOOLONG; a path over 64 KiB too, and a deeper one than PATH_MAX is not', () => {
  assert.is(errnoOfCall(() => checkEntryPath('/' + 'x'.repeat(256))), -E.ENAMETOOLONG);
  assert.is(errnoOfCall(() => checkEntryPath('/d/' + 'é'.repeat(128))), -E.ENAMETOOLONG, 'bytes, not characters');
  const deep = '/' + Array.from({ length: 20 }, () => 'y'.repeat(204)).join('/');
  assert.ok(Buffer.byteLength(deep) > 4095);
  assert.is(checkPath(deep), deep, 'the kernel bounds each call, libfuse builds the whole path: any depth');
  const tooDeep = '/' + Array.from({ length: 330 }, () => 'y'.repeat(200)).join('/');
  assert.ok(Buffer.byteLength(tooDeep) > 64 * 1024);
  assert.is(errnoOfCall(() => checkPath(tooDeep)), -E.ENAMETOOLONG);
});

test('malformed paths are EINVAL, and the root is not an entry', () => {
  for (const p of ['', 'rel', '/a//b', '/a/./b', '/a/../b', '/a\0b']) assert.is(errnoOfCall(() => checkPath(p)), -E.EINVAL, JSON.stringify(p));
  assert.is(errnoOfCall(() => checkEntryPath('/')), -E.EINVAL);
});

test('renamePath moves the renamed path and everything below it, nothing else', () => {
  assert.is(renamePath('/a', '/a', '/b'), '/b');
  assert.is(renamePath('/a/x/y', '/a', '/b'), '/b/x/y');
  assert.is(renamePath('/ab', '/a', '/b'), null, 'a sibling with a common prefix is not below /a');
  assert.is(renamePath('/c', '/a', '/b'), null);
  assert.is(renamePath('/d/a', '/d/a', '/e/f/a'), '/e/f/a');
});

test('childPath joins under the root and below it', () => {
  assert.is(childPath('/', 'a'), '/a');
  assert.is(childPath('/a', 'b'), '/a/b');
});

test('the handle table numbers from 1 and follows renames', () => {
  const t = new HandleTable<{ fh: number; path: string; ino: number }>();
  const a = t.add((fh) => ({ fh, path: '/dir/f', ino: 7 }))!;
  const b = t.add((fh) => ({ fh, path: '/dir/sub/g', ino: 8 }))!;
  t.add((fh) => ({ fh, path: '/other', ino: 7 })); // a hard link of /dir/f
  assert.is(a.fh, 1);
  assert.is(b.fh, 2);
  assert.equal(
    t.related('/dir/f', 7).map((h) => h.fh),
    [1, 3],
  );
  assert.equal(
    t.within('/dir').map((h) => h.fh),
    [1, 2],
  );
  t.rename('/dir', '/moved');
  assert.is(t.get(1)!.path, '/moved/f');
  assert.is(t.get(2)!.path, '/moved/sub/g');
  assert.is(t.get(3)!.path, '/other');
  t.delete(1);
  assert.is(t.get(1), undefined);
  assert.is(t.size, 2);
  const d = t.add((fh) => ({ fh, path: '/n', ino: 9 }))!;
  assert.is(d.fh, 4, 'numbers are not reused at once');
});

function cli(argv: string[], env: NodeJS.ProcessEnv): Cli {
  const r = parseCli(argv, env);
  if (r === 'help') throw new Error('unexpected help');
  return r;
}

test('the command line: defaults, DFS_PROXY, several proxies, validation', () => {
  const dflt = cli(['/mnt/x'], {});
  assert.equal(dflt.proxies, [DEFAULT_PROXY_URL]);
  assert.is(dflt.foreground, false);
  assert.is(dflt.attrTimeoutMs, 0, 'strict by default: another mount\'s change shows at once');
  assert.is(dflt.atime, 'noatime');
  assert.is(dflt.deadlineMs, 10000);
  assert.is(dflt.leases, true, 'cached under leases by default');
  assert.is(cli(['/mnt/x', '--no-leases'], {}).leases, false);
  const env = cli(['/mnt/x', '-f'], { DFS_PROXY: 'http://h:1' });
  assert.ok(env.foreground);
  assert.equal(env.proxies, ['http://h:1']);
  const many = cli(['rel', '--proxy', 'http://a:1, http://b:2', '--attr-timeout-ms', '1000', '--deadline-ms', '2500', '--atime', 'relatime'], {});
  assert.equal(many.proxies, ['http://a:1', 'http://b:2']);
  assert.is(many.attrTimeoutMs, 1000);
  assert.is(many.atime, 'relatime');
  assert.throws(() => parseCli(['/m', '--atime', 'strictatime'], {}), /relatime or noatime/);
  assert.is(many.deadlineMs, 2500);
  assert.ok(many.mountpoint.startsWith('/'), 'the mount point is made absolute');
  assert.is(parseCli(['--help'], {}), 'help');
  assert.throws(() => parseCli([], {}), /MOUNTPOINT/);
  assert.throws(() => parseCli(['/m', '/n'], {}), /MOUNTPOINT/);
  assert.throws(() => parseCli(['/m', '--proxy', 'ftp://x'], {}), /http/);
  assert.throws(() => parseCli(['/m', '--proxy', 'not a url'], {}), /not a URL/);
  assert.throws(() => parseCli(['/m', '--deadline-ms', 'soon'], {}), /deadline-ms/);
  assert.throws(() => parseCli(['/m', '--bogus'], {}));
});

test('other users: allowed by default on a root mount, or where fuse.conf lets users allow them; --private, --allow-other', () => {
  assert.is(allowOtherByDefault(0, null), true, 'root: every user, as on a local disk');
  assert.is(allowOtherByDefault(1000, null), false, 'no fuse.conf: fusermount would refuse allow_other');
  assert.is(allowOtherByDefault(1000, '# mount_max = 1000\n#user_allow_other\n'), false, 'commented out');
  assert.is(allowOtherByDefault(1000, 'mount_max = 1000\n  user_allow_other  # yes\n'), true);
  assert.is(userAllowOther('user_allow_others\n'), false);
  const asRoot = process.getuid?.() === 0;
  assert.is(cli(['/m'], {}).allowOther, allowOtherByDefault());
  if (asRoot) assert.is(cli(['/m'], {}).allowOther, true);
  assert.is(cli(['/m', '--private'], {}).allowOther, false);
  assert.is(cli(['/m', '--allow-other'], {}).allowOther, true);
  assert.throws(() => parseCli(['/m', '--private', '--allow-other'], {}), /contradict/);
});

test('the libfuse option string has what we need and fits in 1024 bytes', () => {
  const s = buildFuseOptions({ allowOther: true, debug: true });
  assert.ok(s.startsWith('-o'));
  const opts = s.slice(2).split(',');
  for (const o of ['big_writes', 'max_write=131072', 'max_read=131072', 'default_permissions', 'fsname=dfs', 'subtype=dfs', 'use_ino', 'attr_timeout=0', 'entry_timeout=0', 'auto_unmount', 'allow_other']) {
    assert.ok(opts.includes(o), o);
  }
  assert.ok(Buffer.byteLength(s) <= FUSE_OPTIONS_BYTES_MAX);
  assert.not.ok(buildFuseOptions().includes('allow_other'));
  assert.ok(buildFuseOptions().includes('use_ino'), 'inode numbers are cluster-wide');
});

test('the background log path is one file name per mount point', () => {
  const p = daemonLogPath('/mnt/my dfs/x');
  assert.ok(/dfs-mount-mnt_my_dfs_x\.log$/.test(p), p);
});

test.run();
