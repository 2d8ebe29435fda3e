/* The brick: ops applied as a local file system would, times from the op, and no way out. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Brick, inoOfSeq, ROOT_INO } from '../../storage/brick';
import { R_OK } from '../../storage/permissions';
import type { Caller } from '../../common/identity';
import { DfsError } from '../../common/errors';
import { tempDir } from '../helpers/temp';
import { brickSnapshotFrames, SnapshotWriter } from '../../storage/snapshot';
import { removeTree } from '../../storage/deep-path';

const T = 1_700_000_000_000;
let seq = 0;
const none = Buffer.alloc(0);

async function withBrick(fn: (b: Brick, root: string, outside: string) => Promise<void>): Promise<void> {
  const dir = tempDir('brick');
  try {
    const root = join(dir.path, 'brick');
    const outside = join(dir.path, 'outside');
    mkdirSync(outside);
    writeFileSync(join(outside, 'secret'), 'secret');
    const b = await Brick.open(root);
    await fn(b, root, outside);
  } finally {
    dir.remove();
  }
}

test('create, write, read back; errno outcomes like a local disk', () =>
  withBrick(async (b, root) => {
    assert.equal(b.apply({ type: 'mkdir', path: '/d', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T, ++seq).errno, undefined);
    assert.is(b.apply({ type: 'mkdir', path: '/d', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T, ++seq).errno, 'EEXIST');
    const c = b.apply({ type: 'create', path: '/d/f', mode: 0o640, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T + 1, ++seq);
    assert.is(c.attr!.mode & 0o7777, 0o640);
    assert.is(b.apply({ type: 'create', path: '/d/f', mode: 0o600, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T, ++seq).errno, 'EEXIST');
    assert.is(b.apply({ type: 'create', path: '/d/f', mode: 0o600, uid: 0, gid: 0, exclusive: false }, Buffer.alloc(0), T, ++seq).errno, undefined);
    const w = b.apply({ type: 'write', path: '/d/f', offset: 3 }, Buffer.from('abc'), T + 2, ++seq);
    assert.is(w.attr!.size, 6);
    assert.is(Math.round(w.attr!.mtimeMs), T + 2);
    assert.equal([...(await b.read('/d/f', 0, 100))], [0, 0, 0, 97, 98, 99]);
    assert.is(b.apply({ type: 'rmdir', path: '/d' }, Buffer.alloc(0), T, ++seq).errno, 'ENOTEMPTY');
    assert.is(b.apply({ type: 'rmdir', path: '/d/f' }, Buffer.alloc(0), T, ++seq).errno, 'ENOTDIR');
    assert.is(b.apply({ type: 'unlink', path: '/d' }, Buffer.alloc(0), T, ++seq).errno, 'EISDIR');
    assert.is(b.apply({ type: 'unlink', path: '/nope' }, Buffer.alloc(0), T, ++seq).errno, 'ENOENT');
    b.apply({ type: 'mkdir', path: '/d/e', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T + 1, ++seq);
    assert.is(b.apply({ type: 'rename', from: '/d', to: '/d/e/x' }, Buffer.alloc(0), T, ++seq).errno, 'EINVAL');
    assert.is(b.apply({ type: 'rename', from: '/d', to: '/d/f/x' }, Buffer.alloc(0), T, ++seq).errno, 'ENOTDIR');
    assert.is(b.apply({ type: 'link', from: '/d', to: '/d2' }, Buffer.alloc(0), T, ++seq).errno, 'EPERM');
    const l = b.apply({ type: 'link', from: '/d/f', to: '/g' }, Buffer.alloc(0), T + 3, ++seq);
    assert.is(l.attr!.nlink, 2);
    assert.is(b.apply({ type: 'truncate', path: '/g', size: 1 }, Buffer.alloc(0), T + 4, ++seq).attr!.size, 1);
    assert.is(readFileSync(join(root, 'd/f'), 'latin1'), '\0');
    assert.is(Math.round(lstatSync(join(root, 'd')).mtimeMs), T + 1, 'parent mtime is the create time');
  }));

test('symlinks are stored as links and never followed', () =>
  withBrick(async (b, root, outside) => {
    b.apply({ type: 'symlink', path: '/out', target: outside, uid: 0, gid: 0 }, Buffer.alloc(0), T, ++seq);
    assert.is(await b.readlink('/out'), outside);
    assert.ok((await b.attr('/out')).mode & 0o120000);
    // Through the link: refused, and nothing appears outside.
    assert.is(b.apply({ type: 'create', path: '/out/evil', mode: 0o644, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T, ++seq).errno, 'ELOOP');
    assert.is(b.apply({ type: 'mkdir', path: '/out/evil', mode: 0o755, uid: 0, gid: 0 }, Buffer.alloc(0), T, ++seq).errno, 'ELOOP');
    assert.is(b.apply({ type: 'rename', from: '/out', to: '/out/x' }, Buffer.alloc(0), T, ++seq).errno, 'ELOOP');
    assert.ok(!existsSync(join(outside, 'evil')));
    // The last component is not followed either.
    b.apply({ type: 'symlink', path: '/s', target: join(outside, 'secret'), uid: 0, gid: 0 }, Buffer.alloc(0), T, ++seq);
    assert.is(b.apply({ type: 'write', path: '/s', offset: 0 }, Buffer.from('pwned'), T, ++seq).errno, 'ELOOP');
    assert.is(b.apply({ type: 'truncate', path: '/s', size: 0 }, Buffer.alloc(0), T, ++seq).errno, 'ELOOP');
    assert.is(b.apply({ type: 'chmod', path: '/s', mode: 0o777 }, Buffer.alloc(0), T, ++seq).errno, 'EOPNOTSUPP');
    assert.is(readFileSync(join(outside, 'secret'), 'utf8'), 'secret');
    assert.is((lstatSync(join(outside, 'secret')).mode & 0o777) !== 0o777, true);
    for (const read of [() => b.read('/s', 0, 10), () => b.read('/out/secret', 0, 10), () => b.attr('/out/secret'), () => b.dir('/out')]) {
      let code = '';
      try {
        await read();
      } catch (e) {
        code = (e as DfsError).errno ?? '';
      }
      assert.is(code, 'ELOOP');
    }
  }));

test('a symlink planted in the brick directory by hand is not followed either', () =>
  withBrick(async (b, root, outside) => {
    symlinkSync(outside, join(root, 'planted'));
    assert.is(b.apply({ type: 'unlink', path: '/planted/secret' }, Buffer.alloc(0), T, ++seq).errno, 'ELOOP');
    assert.ok(existsSync(join(outside, 'secret')));
  }));

test('directory listings carry attributes, without . and ..', () =>
  withBrick(async (b) => {
    for (const n of ['a', 'b', 'c']) b.apply({ type: 'create', path: `/${n}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T, ++seq);
    const entries = await b.dir('/');
    assert.equal(entries.map((e) => e.name).sort(), ['a', 'b', 'c']);
    assert.ok(entries.every((e) => (e.attr.mode & 0o170000) === 0o100000));
  }));

test('inode numbers come from the creating op\'s sequence ID, never the root\'s, shared by hard links, kept by rename', () =>
  withBrick(async (b) => {
    assert.is((await b.attr('/')).ino, ROOT_INO);
    // The first op of a cluster has sequence ID 1: what it creates must not look like the root.
    const first = b.apply({ type: 'create', path: '/first', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1);
    assert.is.not(first.attr!.ino, ROOT_INO);
    const f = b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1000);
    assert.is(f.attr!.ino, inoOfSeq(1000));
    assert.is(b.apply({ type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }, none, T, 1001).attr!.ino, inoOfSeq(1001));
    assert.is(b.apply({ type: 'symlink', path: '/l', target: 'f', uid: 0, gid: 0 }, none, T, 1002).attr!.ino, inoOfSeq(1002));
    assert.is(b.apply({ type: 'link', from: '/f', to: '/d/h' }, none, T, 1003).attr!.ino, inoOfSeq(1000));
    assert.is(b.apply({ type: 'rename', from: '/f', to: '/g' }, none, T, 1004).attr!.ino, inoOfSeq(1000));
    assert.is((await b.attr('/d/h')).ino, inoOfSeq(1000));
    assert.is((await b.attr('/l')).ino, inoOfSeq(1002));
  }));

test('times change exactly where POSIX says, from the op, never from a read', () =>
  withBrick(async (b) => {
    const at = async (p: string) => {
      const a = await b.attr(p);
      return [a.atimeMs, a.mtimeMs, a.ctimeMs];
    };
    b.apply({ type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }, none, T, 1);
    b.apply({ type: 'create', path: '/d/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T + 10, 2);
    assert.equal(await at('/d/f'), [T + 10, T + 10, T + 10]);
    assert.equal(await at('/d'), [T, T + 10, T + 10], 'parent: mtime and ctime on create');
    b.apply({ type: 'write', path: '/d/f', offset: 0 }, Buffer.from('x'), T + 20, 3);
    await b.read('/d/f', 0, 1);
    assert.equal(await at('/d/f'), [T + 10, T + 20, T + 20], 'write: mtime and ctime; a read moves nothing');
    b.apply({ type: 'chmod', path: '/d/f', mode: 0o600 }, none, T + 30, 4);
    assert.equal(await at('/d/f'), [T + 10, T + 20, T + 30], 'chmod: ctime only');
    b.apply({ type: 'utimens', path: '/d/f', atimeMs: 5.25, mtimeMs: 7.5 }, none, T + 40, 5);
    assert.equal(await at('/d/f'), [5.25, 7.5, T + 40], 'utimens: exact times, ctime now');
    b.apply({ type: 'link', from: '/d/f', to: '/d/g' }, none, T + 50, 6);
    assert.is((await at('/d/f'))[2], T + 50, 'link: ctime of the inode');
    b.apply({ type: 'unlink', path: '/d/g' }, none, T + 60, 7);
    assert.is((await at('/d/f'))[2], T + 60, 'unlink of another name: ctime of the inode');
    assert.equal(await at('/d'), [T, T + 60, T + 60]);
    const before = await b.attr('/d/f');
    b.apply({ type: 'link', from: '/d/f', to: '/d/same' }, none, T + 70, 8);
    const dirBefore = await at('/d');
    assert.is(b.apply({ type: 'rename', from: '/d/f', to: '/d/same' }, none, T + 80, 9).errno, undefined);
    assert.equal(await at('/d'), dirBefore, 'rename onto another name of the same file changes nothing');
    assert.is((await b.attr('/d/f')).ino, before.ino);
  }));

test('a write with extents puts each range at its own offset, then stamps as a plain write', () =>
  withBrick(async (b) => {
    b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, ++seq);
    b.apply({ type: 'write', path: '/f', offset: 0 }, Buffer.from('..........'), T + 1, ++seq);
    const w = b.apply({ type: 'write', path: '/f', offset: 1, extents: [[1, 2], [5, 1], [12, 3]] }, Buffer.from('abcdef'), T + 2, ++seq);
    assert.is(w.errno, undefined);
    assert.is(w.attr!.size, 15, 'an extent past the end extends the file, with a hole');
    assert.equal([Math.round(w.attr!.mtimeMs), Math.round(w.attr!.ctimeMs)], [T + 2, T + 2]);
    assert.equal([...(await b.read('/f', 0, 100))], [...Buffer.from('.ab..c....\0\0def')]);
    // Invalid extents reach a brick only through a bug: refused before any byte is written.
    const bad = () => b.apply({ type: 'write', path: '/f', offset: 0, extents: [[0, 2], [1, 2]] }, Buffer.from('XXXX'), T + 3, ++seq);
    assert.throws(bad, (e: unknown) => e instanceof DfsError && e.code === 'BAD_REQUEST');
    assert.equal([...(await b.read('/f', 0, 100))], [...Buffer.from('.ab..c....\0\0def')], 'nothing written');
    assert.is(b.apply({ type: 'write', path: '/nope', offset: 0, extents: [[0, 1]] }, Buffer.from('x'), T + 4, ++seq).errno, 'ENOENT');
  }));

test('large writes (their aligned middle with O_DIRECT) land byte for byte as through the page cache', async () => {
  const dir = tempDir('brick-direct');
  try {
    // The same writes on a brick that uses O_DIRECT where the file system takes it, and on
    // one that never does; both must hold exactly what a model of the file holds.
    const bricks = [await Brick.open(join(dir.path, 'direct')), await Brick.open(join(dir.path, 'buffered'), { direct: false })];
    let model = Buffer.alloc(0);
    const put = (data: Buffer, offset: number) => {
      if (model.length < offset + data.length) model = Buffer.concat([model, Buffer.alloc(offset + data.length - model.length)]);
      data.copy(model, offset);
    };
    const writes: Array<[number, number] | ['append', number]> = [
      [0, 1 << 20], // aligned at both ends
      [100, 300_000], // unaligned at both ends, inside the file
      [4096 * 3, 5000], // small: the page cache only
      [(1 << 20) - 7, 2_600_000], // past the end, larger than the staging buffer
      ['append', 200_001],
      [8000, 130_000], // just over the size where O_DIRECT starts
    ];
    let n = 0;
    for (const b of bricks) b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 900 + n);
    for (const [at, size] of writes) {
      const data = randomBytes(size);
      const offset = at === 'append' ? model.length : at;
      n++;
      for (const b of bricks) {
        const op = at === 'append' ? { type: 'write' as const, path: '/f', offset: 0, append: true as const } : { type: 'write' as const, path: '/f', offset };
        const r = b.apply(op, data, T + n, 900 + n);
        assert.is(r.errno, undefined);
        assert.is(r.attr!.size, Math.max(model.length, offset + size));
      }
      put(data, offset);
    }
    for (const name of ['direct', 'buffered']) assert.ok(readFileSync(join(dir.path, name, 'f')).equals(model), `${name}: the file holds what was written`);
    assert.ok((await bricks[0]!.read('/f', 100, 300_000)).equals(model.subarray(100, 300_100)), 'a read through the brick sees it too');
  } finally {
    dir.remove();
  }
});

test('FIFOs, sockets and devices are virtual: typed in the identity, plain empty files on disk', () =>
  withBrick(async (b, root) => {
    const kinds: Array<[string, number, number]> = [['fifo', 0o010000, 0], ['sock', 0o140000, 0], ['chr', 0o020000, 0x0103], ['blk', 0o060000, 0x0801]];
    for (const [i, [name, kind, rdev]] of kinds.entries()) {
      const r = b.apply({ type: 'mknod', path: `/${name}`, mode: kind | 0o640, rdev, uid: 7, gid: 8 }, none, T, 100 + i);
      assert.is(r.errno, undefined);
      assert.is(r.attr!.mode, kind | 0o640);
      assert.is(r.attr!.rdev, rdev);
      assert.is(r.attr!.uid, 7);
      assert.ok(lstatSync(join(root, name)).isFile(), 'no real special file on the storage host');
      assert.is(b.apply({ type: 'write', path: `/${name}`, offset: 0 }, Buffer.from('x'), T, 200 + i).errno, 'EINVAL');
    }
    assert.is(b.apply({ type: 'mknod', path: '/fifo', mode: 0o010644, rdev: 0, uid: 0, gid: 0 }, none, T, 300).errno, 'EEXIST');
    const reg = b.apply({ type: 'mknod', path: '/reg', mode: 0o100600, rdev: 0, uid: 0, gid: 0 }, none, T, 301);
    assert.is(reg.attr!.mode, 0o100600);
    assert.is(b.apply({ type: 'write', path: '/reg', offset: 0 }, Buffer.from('ok'), T, 302).errno, undefined);
    const listed = (await b.dir('/')).find((e) => e.name === 'chr')!;
    assert.is(listed.attr.mode & 0o170000, 0o020000);
  }));

test('user extended attributes: create, replace, read, list, remove, with the local errnos', () =>
  withBrick(async (b) => {
    b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1);
    b.apply({ type: 'symlink', path: '/l', target: 'f', uid: 0, gid: 0 }, none, T, 2);
    const set = (name: string, value: string, flags: 0 | 1 | 2, t = T) => b.apply({ type: 'setxattr', path: '/f', name, flags }, Buffer.from(value), t, 3);
    assert.is(set('user.a', 'one', 2).errno, 'ENODATA', 'XATTR_REPLACE of a missing one');
    assert.is(set('user.a', 'one', 1, T + 5).errno, undefined);
    assert.is((await b.attr('/f')).ctimeMs, T + 5, 'setxattr changes ctime');
    assert.is(set('user.a', 'two', 1).errno, 'EEXIST', 'XATTR_CREATE of an existing one');
    assert.is(set('user.a', 'three', 2).errno, undefined);
    assert.is(set('user.b', '', 0).errno, undefined, 'an empty value is a value');
    assert.is((await b.xattr('/f', 'user.a')).toString(), 'three');
    assert.is((await b.xattr('/f', 'user.b')).length, 0);
    assert.equal((await b.xattrNames('/f')).sort(), ['user.a', 'user.b'], 'the cluster\'s own attribute is not listed');
    let code = '';
    try {
      await b.xattr('/f', 'user.none');
    } catch (e) {
      code = (e as DfsError).errno ?? '';
    }
    assert.is(code, 'ENODATA');
    assert.is(b.apply({ type: 'removexattr', path: '/f', name: 'user.a' }, none, T, 4).errno, undefined);
    assert.is(b.apply({ type: 'removexattr', path: '/f', name: 'user.a' }, none, T, 5).errno, 'ENODATA');
    assert.is(b.apply({ type: 'setxattr', path: '/l', name: 'user.a', flags: 0 }, Buffer.from('x'), T, 6).errno, 'EPERM', 'user.* on a symlink, as Linux');
    assert.is(b.apply({ type: 'setxattr', path: '/nope', name: 'user.a', flags: 0 }, Buffer.from('x'), T, 7).errno, 'ENOENT');
    // Past the inode's room: ENOSPC as an outcome, the same on every node (not a crash).
    assert.is(set('user.big', 'z'.repeat(3000), 0).errno, undefined);
    assert.is(set('user.more', 'z'.repeat(1000), 0).errno, 'ENOSPC');
    assert.is(set('user.big', 'z'.repeat(3800), 0).errno, undefined, 'replacing counts the new value, not both');
    assert.is(set('user.huge', 'z'.repeat(4000), 0).errno, 'ENOSPC');
    assert.is((await b.xattr('/f', 'user.big')).length, 3800);
  }));

test('trusted.* attributes are kept apart from the cluster\'s own: listed, set and removed without touching the identity', () =>
  withBrick(async (b, root) => {
    const r = b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1);
    const ino = r.attr!.ino;
    b.apply({ type: 'symlink', path: '/l', target: 'f', uid: 0, gid: 0 }, none, T, 2);
    assert.is(b.apply({ type: 'setxattr', path: '/f', name: 'trusted.t', flags: 0 }, Buffer.from('T'), T, 3).errno, undefined);
    assert.is(b.apply({ type: 'setxattr', path: '/f', name: 'trusted.dfs.meta', flags: 0 }, Buffer.from('garbage'), T, 4).errno, undefined, "a client's trusted.dfs.meta is its own attribute");
    assert.is((await b.xattr('/f', 'trusted.dfs.meta')).toString(), 'garbage');
    assert.is((await b.attr('/f')).ino, ino, 'the identity is untouched');
    assert.equal((await b.xattrNames('/f')).sort(), ['trusted.dfs.meta', 'trusted.t']);
    assert.is(b.apply({ type: 'removexattr', path: '/f', name: 'trusted.dfs.meta' }, none, T, 5).errno, undefined);
    assert.is((await b.attr('/f')).ino, ino, 'still untouched after the remove');
    assert.equal(await b.xattrNames('/f'), ['trusted.t']);
    assert.is(b.apply({ type: 'setxattr', path: '/l', name: 'trusted.s', flags: 0 }, Buffer.from('S'), T, 6).errno, undefined, 'trusted.* on a symlink, as Linux');
    assert.equal(await b.xattrNames('/l'), ['trusted.s']);
    const manifest = await b.manifest();
    assert.equal(Object.keys(manifest.find((e) => e.path === '/l')!.xattrs ?? {}), ['trusted.s'], 'verify compares them too');
    assert.ok(root.length > 0);
  }));

test('safe for its host: no setuid or setgid bit, device, FIFO or symlink on the brick, every file 0600 and directory 0700; the cluster sees its own modes and owners', () =>
  withBrick(async (b, root) => {
    const ok = (op: Parameters<Brick['apply']>[0], data = none) => assert.is(b.apply(op, data, T, ++seq).errno, undefined, JSON.stringify(op));
    ok({ type: 'mkdir', path: '/g', mode: 0o2775, uid: 1000, gid: 50 });
    ok({ type: 'create', path: '/g/suid', mode: 0o644, uid: 0, gid: 0, exclusive: true });
    ok({ type: 'chmod', path: '/g/suid', mode: 0o6755 });
    ok({ type: 'mknod', path: '/g/dev', mode: 0o020644, rdev: 0x0103, uid: 0, gid: 0 });
    ok({ type: 'mknod', path: '/g/fifo', mode: 0o010600, rdev: 0, uid: 1000, gid: 1000 });
    ok({ type: 'symlink', path: '/g/link', target: '/etc/shadow', uid: 1000, gid: 1000 });
    ok({ type: 'mkdir', path: '/t', mode: 0o1777, uid: 0, gid: 0 });
    const local: string[] = [];
    const walk = (rel: string) => {
      for (const name of readdirSync(join(root, rel))) {
        const st = lstatSync(join(root, rel, name));
        local.push(`${rel}/${name} ${(st.mode & 0o177777).toString(8)} ${st.uid}`);
        if (st.isDirectory()) walk(`${rel}/${name}`);
      }
    };
    walk('');
    const me = process.getuid!();
    assert.equal(local.sort(), [`/g 40700 ${me}`, `/g/dev 100600 ${me}`, `/g/fifo 100600 ${me}`, `/g/link 100600 ${me}`, `/g/suid 100600 ${me}`, `/t 40700 ${me}`]);
    assert.is(lstatSync(root).mode & 0o7777, 0o700, 'the brick root is private');
    const attr = async (p: string) => {
      const a = await b.attr(p);
      return `${a.mode.toString(8)} ${a.uid}:${a.gid} ${a.rdev}`;
    };
    assert.is(await attr('/g'), '42775 1000:50 0');
    assert.is(await attr('/g/suid'), '106755 0:50 0', 'setuid and setgid, and the group of the setgid directory');
    assert.is(await attr('/g/dev'), '20644 0:50 259');
    assert.is(await attr('/g/fifo'), '10600 1000:50 0');
    assert.is(await attr('/g/link'), '120777 1000:50 0');
    assert.is((await b.attr('/g/link')).size, '/etc/shadow'.length, "a symlink's size is its target's length");
    assert.is(await b.readlink('/g/link'), '/etc/shadow');
    assert.is(await attr('/t'), '41777 0:0 0');
    // chown clears setuid, and setgid with group execute, on anything but a directory.
    ok({ type: 'chown', path: '/g/suid', uid: 1000, gid: 1000 });
    assert.is(await attr('/g/suid'), '100755 1000:1000 0');
    ok({ type: 'chown', path: '/g', uid: 0, gid: 0 });
    assert.is(await attr('/g'), '42775 0:0 0', 'a directory keeps its setgid bit');
    // A readlink of what is not a symlink, a read or a listing through one: as a local disk.
    for (const [call, want] of [[() => b.readlink('/g/suid'), 'EINVAL'], [() => b.read('/g/link', 0, 1), 'ELOOP'], [() => b.dir('/g/link'), 'ELOOP'], [() => b.attr('/g/link/x'), 'ELOOP']] as const) {
      let code = '';
      try {
        await call();
      } catch (e) {
        code = (e as DfsError).errno ?? '';
      }
      assert.is(code, want);
    }
    assert.is(b.apply({ type: 'setxattr', path: '/g/link', name: 'user.x', flags: 0 }, Buffer.from('x'), T, ++seq).errno, 'EPERM', 'no user.* attributes on a symlink, as Linux');
  }));

test("clients' user.dfs.* attributes are their own, and the cluster's own are never listed", () =>
  withBrick(async (b) => {
    b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, ++seq);
    const ino = (await b.attr('/f')).ino;
    assert.is(b.apply({ type: 'setxattr', path: '/f', name: 'user.dfs.meta', flags: 0 }, Buffer.from('mine'), T, ++seq).errno, undefined);
    assert.is((await b.xattr('/f', 'user.dfs.meta')).toString(), 'mine');
    assert.equal(await b.xattrNames('/f'), ['user.dfs.meta']);
    assert.is((await b.attr('/f')).ino, ino, 'the identity is untouched');
    assert.is(b.apply({ type: 'removexattr', path: '/f', name: 'user.dfs.meta' }, none, T, ++seq).errno, undefined);
    assert.equal(await b.xattrNames('/f'), []);
    assert.is((await b.attr('/f')).ino, ino);
  }));

test('a brick of the older format is refused with the way out', async () => {
  const dir = tempDir('brick-old');
  try {
    const root = join(dir.path, 'brick');
    mkdirSync(root);
    writeFileSync(join(root, 'f'), 'data'); // entries, and no identity on the root
    let message = '';
    try {
      await Brick.open(root);
    } catch (e) {
      message = (e as Error).message;
    }
    assert.match(message, /older format/);
    assert.match(message, /full sync/);
  } finally {
    dir.remove();
  }
});

test('permissions at apply and at read: the errno Linux gives the caller, from the brick as it stands', () =>
  withBrick(async (b) => {
    const root: Caller = { uid: 0, gid: 0, groups: [] };
    const alice = { uid: 1000, gid: 1000, groups: [1000, 50] };
    const bob = { uid: 2000, gid: 2000, groups: [2000] };
    const as = (caller: Caller, op: Parameters<Brick['apply']>[0], data = none) => b.apply(op, data, T, ++seq, undefined, caller).errno ?? 'ok';
    const read = (caller: Caller, path: string, want: number) => {
      try {
        b.checkRead(caller, path, want);
        return 'ok';
      } catch (e) {
        return (e as DfsError).errno;
      }
    };
    assert.is(as(root, { type: 'mkdir', path: '/home', mode: 0o755, uid: 0, gid: 0 }), 'ok');
    assert.is(as(root, { type: 'mkdir', path: '/home/alice', mode: 0o700, uid: 1000, gid: 1000 }), 'ok');
    assert.is(as(root, { type: 'create', path: '/secret', mode: 0o600, uid: 0, gid: 0, exclusive: true }), 'ok');
    assert.is(as(root, { type: 'mkdir', path: '/tmp', mode: 0o1777, uid: 0, gid: 0 }), 'ok');
    // Creating: the directory's write permission, and one's own identity.
    assert.is(as(alice, { type: 'create', path: '/home/alice/f', mode: 0o600, uid: 1000, gid: 1000, exclusive: true }), 'ok');
    assert.is(as(alice, { type: 'create', path: '/home/x', mode: 0o600, uid: 1000, gid: 1000, exclusive: true }), 'EACCES');
    assert.is(as(alice, { type: 'create', path: '/tmp/as-root', mode: 0o600, uid: 0, gid: 0, exclusive: true }), 'EPERM', 'creating as someone else');
    assert.is(as(alice, { type: 'create', path: '/tmp/staff', mode: 0o600, uid: 1000, gid: 50, exclusive: true }), 'ok', 'a supplementary group');
    assert.is(as(bob, { type: 'create', path: '/home/alice/g', mode: 0o600, uid: 2000, gid: 2000, exclusive: true }), 'EACCES', 'no search in a 0700 directory');
    assert.is(as(alice, { type: 'mkdir', path: '/home', mode: 0o755, uid: 1000, gid: 1000 }), 'EEXIST', 'EEXIST before EACCES');
    // Reading.
    assert.is(read(bob, '/home/alice/f', R_OK), 'EACCES');
    assert.is(read(bob, '/home/alice/f', 0), 'EACCES', 'even its attributes: no search permission');
    assert.is(read(alice, '/home/alice/f', R_OK), 'ok');
    assert.is(read(alice, '/secret', R_OK), 'EACCES');
    assert.is(read(alice, '/secret', 0), 'ok');
    assert.is(read(root, '/home/alice/f', R_OK), 'ok');
    // Owners only: chmod, chown, explicit times; trusted.* is root's.
    assert.is(as(alice, { type: 'chmod', path: '/secret', mode: 0o666 }), 'EPERM');
    assert.is(as(alice, { type: 'chown', path: '/secret', uid: 1000, gid: 1000 }), 'EPERM');
    assert.is(as(alice, { type: 'chown', path: '/home/alice/f', uid: 1000, gid: 50 }), 'ok', 'the owner gives the file to a group of theirs');
    assert.is(as(alice, { type: 'chown', path: '/home/alice/f', uid: 1000, gid: 2000 }), 'EPERM', 'but not to another');
    assert.is(as(alice, { type: 'chown', path: '/home/alice/f', uid: 2000, gid: 50 }), 'EPERM', 'nor to another user');
    assert.is(as(alice, { type: 'utimens', path: '/secret', atimeMs: 0, mtimeMs: 0 }), 'EPERM');
    assert.is(as(alice, { type: 'utimens', path: '/secret', atimeMs: 'now', mtimeMs: 'now' }), 'EACCES', 'touch needs write permission');
    assert.is(as(alice, { type: 'setxattr', path: '/home/alice/f', name: 'trusted.x', flags: 0 }, Buffer.from('x')), 'EPERM');
    assert.is(as(alice, { type: 'setxattr', path: '/home/alice/f', name: 'user.x', flags: 0 }, Buffer.from('x')), 'ok');
    assert.is(as(bob, { type: 'setxattr', path: '/secret', name: 'user.x', flags: 0 }, Buffer.from('x')), 'EACCES');
    assert.is(as(alice, { type: 'write', path: '/secret', offset: 0 }, Buffer.from('x')), 'EACCES');
    assert.is(as(alice, { type: 'truncate', path: '/secret', size: 0 }), 'EACCES');
    // The sticky bit: only the owner of the entry or the directory removes or renames it.
    assert.is(as(bob, { type: 'create', path: '/tmp/bobs', mode: 0o666, uid: 2000, gid: 2000, exclusive: true }), 'ok');
    assert.is(as(alice, { type: 'unlink', path: '/tmp/bobs' }), 'EPERM');
    assert.is(as(alice, { type: 'rename', from: '/tmp/bobs', to: '/tmp/mine' }), 'EPERM');
    assert.is(as(alice, { type: 'write', path: '/tmp/bobs', offset: 0 }, Buffer.from('y')), 'ok', 'a 0666 file is anyone\'s to write');
    assert.is(as(bob, { type: 'unlink', path: '/tmp/bobs' }), 'ok');
    assert.is(as(alice, { type: 'unlink', path: '/secret' }), 'EACCES');
    // A directory moved to another parent needs write permission on itself.
    assert.is(as(root, { type: 'mkdir', path: '/tmp/ro', mode: 0o555, uid: 1000, gid: 1000 }), 'ok');
    assert.is(as(alice, { type: 'rename', from: '/tmp/ro', to: '/home/alice/ro' }), 'EACCES');
    assert.is(as(alice, { type: 'rename', from: '/tmp/ro', to: '/tmp/ro2' }), 'ok', 'within its directory it may');
    // chmod by one outside the file's group drops setgid; the cache follows a chmod.
    assert.is(as(alice, { type: 'chown', path: '/home/alice/f', uid: 1000, gid: 1000 }), 'ok');
    assert.is(as(root, { type: 'chown', path: '/home/alice/f', uid: 1000, gid: 3000 }), 'ok');
    assert.is(as(alice, { type: 'chmod', path: '/home/alice/f', mode: 0o2755 }), 'ok');
    assert.is((await b.attr('/home/alice/f')).mode & 0o7777, 0o755);
    assert.is(as(root, { type: 'chmod', path: '/home/alice', mode: 0o755 }), 'ok');
    assert.is(read(bob, '/home/alice/f', R_OK), 'ok', 'the directory is searchable now');
    // Without a caller an op is the cluster's own: applied as it always was.
    assert.is(b.apply({ type: 'chmod', path: '/secret', mode: 0o644 }, none, T, ++seq).errno, undefined);
  }));

test('an atime op moves atime as relatime does and nothing else', () =>
  withBrick(async (b) => {
    const at = async (p: string) => {
      const a = await b.attr(p);
      return [a.atimeMs, a.mtimeMs, a.ctimeMs];
    };
    b.apply({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1);
    assert.is(b.apply({ type: 'atime', path: '/f' }, none, T + 10, 2).errno, undefined);
    assert.equal(await at('/f'), [T + 10, T, T], 'atime was not after mtime: it moves, ctime does not');
    b.apply({ type: 'atime', path: '/f' }, none, T + 20, 3);
    assert.equal(await at('/f'), [T + 10, T, T], 'atime is after mtime and recent: it stays');
    b.apply({ type: 'atime', path: '/f' }, none, T + 10 + 24 * 3600 * 1000, 4);
    assert.equal(await at('/f'), [T + 10 + 24 * 3600 * 1000, T, T], 'a day old: it moves');
    assert.is(b.apply({ type: 'atime', path: '/none' }, none, T, 5).errno, 'ENOENT');
  }));

test('names that are not UTF-8 are stored as their bytes, with identity and xattrs, in every kind of inode', () =>
  withBrick(async (b, root) => {
    const dir = '/d\udcfe';
    const file = `${dir}/f\udcff`;
    const link = `${dir}/l\udc80`;
    assert.is(b.apply({ type: 'mkdir', path: dir, mode: 0o755, uid: 0, gid: 0 }, none, T, 1).errno, undefined);
    assert.is(b.apply({ type: 'create', path: file, mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 2).errno, undefined);
    assert.is(b.apply({ type: 'symlink', path: link, target: 'f\udcff', uid: 0, gid: 0 }, none, T, 3).errno, undefined);
    assert.ok(lstatSync(Buffer.concat([Buffer.from(root + '/d'), Buffer.of(0xfe), Buffer.from('/f'), Buffer.of(0xff)])).isFile(), 'the bytes themselves on disk');
    assert.is((await b.attr(file)).ino, 3, 'identity kept');
    assert.is((await b.attr(dir)).ino, 2);
    assert.is((await b.attr(link)).ino, 4);
    assert.is(await b.readlink(link), 'f\udcff', 'the target\'s bytes');
    assert.equal((await b.dir(dir)).map((e) => e.name).sort(), ['f\udcff', 'l\udc80']);
    for (const [i, p] of [dir, file].entries()) {
      assert.is(b.apply({ type: 'setxattr', path: p, name: 'user.k', flags: 0 }, Buffer.from('v'), T, 10 + i).errno, undefined, p);
      assert.is((await b.xattr(p, 'user.k')).toString(), 'v');
    }
    assert.is(b.apply({ type: 'setxattr', path: link, name: 'trusted.k', flags: 0 }, Buffer.from('s'), T, 12).errno, undefined);
    b.apply({ type: 'utimens', path: file, atimeMs: 1000, mtimeMs: 2000, mtimeNsec: 123 }, none, T + 5, 13);
    const a = await b.attr(file);
    assert.equal([a.atimeMs, a.mtimeMs, a.mtimeNsec, a.ctimeMs], [1000, 2000, 123, T + 5], 'times through the identity xattr');
    const manifest = await b.manifest();
    assert.ok(manifest.some((e) => e.path === file && e.xattrs?.['user.k']));
    assert.ok(manifest.some((e) => e.path === link && e.target === 'f\udcff' && e.xattrs?.['trusted.k']));
    assert.equal(readdirSync(`${root}.xattr-scratch`), [], 'no second names left behind');
    assert.is(b.apply({ type: 'rename', from: file, to: `${dir}/g\udcff` }, none, T, 14).errno, undefined);
    assert.is(b.apply({ type: 'unlink', path: `${dir}/g\udcff` }, none, T, 15).errno, undefined);
  }));

test('the brick marks every applied sequence ID itself, failed ops too, and keeps it across a reopen', () =>
  withBrick(async (b, root) => {
    assert.is(b.appliedSeqMark(), 0, 'a new brick has applied nothing');
    b.apply({ type: 'mkdir', path: '/m', mode: 0o755, uid: 0, gid: 0 }, none, T, 7);
    assert.is(b.appliedSeqMark(), 7);
    assert.is(b.apply({ type: 'mkdir', path: '/m', mode: 0o755, uid: 0, gid: 0 }, none, T, 8).errno, 'EEXIST');
    assert.is(b.appliedSeqMark(), 8, 'an op that failed was applied too');
    b.apply({ type: 'noop' }, none, T, 9);
    const again = await Brick.open(root);
    assert.is(again.appliedSeqMark(), 9, 'what a restarted node recovers from');
    assert.equal(await again.xattrNames('/'), [], 'not a client attribute');
  }));

test('a setgid directory gives new entries its group, and new subdirectories its setgid bit', () =>
  withBrick(async (b) => {
    b.apply({ type: 'mkdir', path: '/shared', mode: 0o2775, uid: 0, gid: 50 }, none, T, 1);
    assert.is((await b.attr('/shared')).mode & 0o7777, 0o2775);
    const f = b.apply({ type: 'create', path: '/shared/f', mode: 0o644, uid: 10, gid: 10, exclusive: true }, none, T, 2);
    assert.is(f.attr!.gid, 50);
    const d = b.apply({ type: 'mkdir', path: '/shared/d', mode: 0o755, uid: 10, gid: 10 }, none, T, 3);
    assert.is(d.attr!.gid, 50);
    assert.is(d.attr!.mode & 0o7777, 0o2755);
    const plain = b.apply({ type: 'mkdir', path: '/plain', mode: 0o755, uid: 10, gid: 10 }, none, T, 4);
    const g = b.apply({ type: 'create', path: '/plain/g', mode: 0o4755, uid: 10, gid: 10, exclusive: true }, none, T, 5);
    assert.is(plain.attr!.gid, 10);
    assert.is(g.attr!.gid, 10);
    assert.is(g.attr!.mode & 0o7777, 0o4755, 'the mode asked for, setuid included');
  }));

test('fallocate: allocate, keep-size, zero a range, punch holes; times as ext4; special files and directories refused', () =>
  withBrick(async (b) => {
    let seq = 0;
    const ok = (op: Parameters<Brick['apply']>[0], data = none, t = T) => {
      const r = b.apply(op, data, t, ++seq);
      assert.is(r.errno, undefined, op.type);
      return r;
    };
    ok({ type: 'create', path: '/f', mode: 0o644, uid: 0, gid: 0, exclusive: true });
    ok({ type: 'write', path: '/f', offset: 0 }, Buffer.alloc(10000, 'x'));
    const grown = ok({ type: 'fallocate', path: '/f', mode: 0, offset: 0, size: 65536 }, none, T + 5);
    assert.is(grown.attr!.size, 65536);
    assert.ok(grown.attr!.blocks * 512 >= 65536, 'the blocks are reserved');
    assert.is(grown.attr!.mtimeMs, T + 5);
    const kept = ok({ type: 'fallocate', path: '/f', mode: 0x01, offset: 65536, size: 65536 }, none, T + 6);
    assert.is(kept.attr!.size, 65536, 'KEEP_SIZE');
    assert.is(kept.attr!.ctimeMs, T + 6);
    ok({ type: 'fallocate', path: '/f', mode: 0x03, offset: 4096, size: 4096 });
    ok({ type: 'fallocate', path: '/f', mode: 0x10, offset: 10, size: 5 });
    const data = await b.read('/f', 0, 65536);
    assert.ok(data.subarray(0, 10).equals(Buffer.alloc(10, 'x')));
    assert.ok(data.subarray(10, 15).equals(Buffer.alloc(5)), 'zeroed');
    assert.ok(data.subarray(4096, 8192).equals(Buffer.alloc(4096)), 'punched');
    assert.ok(data.subarray(8192, 10000).equals(Buffer.alloc(1808, 'x')));
    ok({ type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 });
    assert.is(b.apply({ type: 'fallocate', path: '/d', mode: 0, offset: 0, size: 10 }, none, T, ++seq).errno, 'EISDIR');
    ok({ type: 'mknod', path: '/p', mode: 0o010644, rdev: 0, uid: 0, gid: 0 });
    assert.is(b.apply({ type: 'fallocate', path: '/p', mode: 0, offset: 0, size: 10 }, none, T, ++seq).errno, 'EINVAL');
    assert.is(b.apply({ type: 'fallocate', path: '/none', mode: 0, offset: 0, size: 10 }, none, T, ++seq).errno, 'ENOENT');
  }));

test('a tree far deeper than PATH_MAX, in both modes: every op, reads, the manifest, a snapshot of it, its removal', async () => {
  const dir = tempDir('brick-deep');
  const cwd = process.cwd();
  try {
    for (const relativeToCwd of [false, true]) {
      // A brick root well over 100 bytes long, as a data directory may be.
      const b = await Brick.open(join(dir.path, relativeToCwd ? 'rel' : 'abs', 'r'.repeat(120), 'brick'), { relativeToCwd });
      let seq = 0;
      const ok = (op: Parameters<Brick['apply']>[0], data = none) => {
        const r = b.apply(op, data, T, ++seq);
        assert.is(r.errno, undefined, `${op.type} ${'path' in op ? op.path.length : ''}`);
        return r;
      };
      // 17 KiB of directories: 85 names of 200 bytes, and short ones at the bottom.
      const dirs: string[] = [];
      let path = '';
      for (let i = 0; i < 85; i++) dirs.push((path += '/' + String(i).padStart(3, '0') + 'd'.repeat(197)));
      for (let i = 0; i < 50; i++) dirs.push((path += '/s'));
      for (const d of dirs) ok({ type: 'mkdir', path: d, mode: 0o755, uid: 0, gid: 0 });
      assert.ok(Buffer.byteLength(path) > 17_000);
      const mid = dirs[40]!; // about 8 KiB down
      const file = path + '/f';
      ok({ type: 'create', path: file, mode: 0o644, uid: 7, gid: 8, exclusive: true });
      ok({ type: 'write', path: file, offset: 0 }, Buffer.from('deep data'));
      assert.is((await b.read(file, 0, 100)).toString(), 'deep data');
      assert.is((await b.attr(file)).size, 9);
      assert.is((await b.attr(file)).uid, 7);
      assert.is((await b.attr(file)).ino, inoOfSeq(dirs.length + 1), "the cluster's inode number, kept in an xattr");
      ok({ type: 'chmod', path: file, mode: 0o600 });
      ok({ type: 'chown', path: file, uid: 9, gid: 9 });
      ok({ type: 'setxattr', path: file, name: 'user.k', flags: 0 }, Buffer.from('v'));
      assert.is((await b.xattr(file, 'user.k')).toString(), 'v');
      ok({ type: 'symlink', path: path + '/l', target: 'f', uid: 0, gid: 0 });
      assert.is(await b.readlink(path + '/l'), 'f');
      // Across levels: a hard link 8 KiB up, a rename back down, a directory moved up.
      ok({ type: 'link', from: file, to: mid + '/hard' });
      assert.is((await b.attr(file)).nlink, 2);
      ok({ type: 'rename', from: mid + '/hard', to: path + '/moved' });
      assert.is((await b.read(path + '/moved', 0, 100)).toString(), 'deep data');
      const sub = dirs[dirs.length - 1]!;
      ok({ type: 'rename', from: sub, to: mid + '/up' });
      assert.is((await b.read(mid + '/up/f', 0, 100)).toString(), 'deep data', 'the whole subtree moved up');
      assert.is(b.apply({ type: 'create', path: file, mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, ++seq).errno, 'ENOENT', 'its old place is gone');
      const names = (await b.dir(mid + '/up')).map((e) => e.name).sort();
      assert.equal(names, ['f', 'l', 'moved']);
      // A symlink among the directories of a deep path is refused, as for a short one.
      ok({ type: 'symlink', path: mid + '/sl', target: '.', uid: 0, gid: 0 });
      assert.is(b.apply({ type: 'create', path: mid + '/sl/' + 'x'.repeat(200) + '/y', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, ++seq).errno, 'ELOOP');
      const manifest = await b.manifest();
      assert.ok(manifest.some((e) => e.path === mid + '/up/f' && e.sha256 !== undefined));
      // A snapshot of the deep tree written elsewhere holds the same tree.
      const copyRoot = join(dir.path, `copy-${relativeToCwd}`, 'r'.repeat(120), 'brick');
      mkdirSync(join(copyRoot, '..'), { recursive: true });
      const writer = await SnapshotWriter.create(copyRoot);
      for await (const frame of brickSnapshotFrames(b.root)) await writer.put(frame.header, frame.data);
      await writer.finish();
      const copy = await Brick.open(copyRoot);
      assert.equal(await copy.manifest(), manifest, 'the copy is the same tree');
      await removeTree(copyRoot);
      assert.not.ok(existsSync(copyRoot), 'removed, though deeper than fs.rm can go');
      // And down again, through the brick.
      for (const name of ['f', 'l', 'moved']) ok({ type: 'unlink', path: mid + '/up/' + name });
      ok({ type: 'unlink', path: mid + '/sl' });
      ok({ type: 'rmdir', path: mid + '/up' });
      const rest = dirs.slice(0, -1).reverse();
      for (const d of rest) ok({ type: 'rmdir', path: d });
      assert.equal(await b.dir('/'), []);
      process.chdir(cwd);
    }
  } finally {
    process.chdir(cwd);
    dir.remove();
  }
});

test('two bricks given the same ops report identical attributes', async () => {
  const one = tempDir('brick-a');
  const two = tempDir('brick-b');
  try {
    // Different histories of the directories they live in must not matter.
    const a = await Brick.open(join(one.path, 'x', 'brick'));
    const b = await Brick.open(join(two.path, 'brick'));
    const ops: Array<Parameters<Brick['apply']>[0]> = [
      { type: 'mkdir', path: '/src', mode: 0o755, uid: 0, gid: 0 },
      ...Array.from({ length: 40 }, (_, i) => ({ type: 'create', path: `/src/f${i}`, mode: 0o644, uid: i, gid: i, exclusive: true }) as const),
      ...Array.from({ length: 40 }, (_, i) => ({ type: 'write', path: `/src/f${i}`, offset: i * 100 }) as const),
      { type: 'symlink', path: '/src/l', target: 'f1', uid: 0, gid: 0 },
      { type: 'link', from: '/src/f2', to: '/h' },
      { type: 'rename', from: '/src/f3', to: '/moved' },
      { type: 'truncate', path: '/src/f4', size: 10_000 },
      { type: 'unlink', path: '/src/f5' },
    ];
    ops.forEach((op, i) => {
      const data = op.type === 'write' ? Buffer.alloc(1000, i) : none;
      a.apply(op, data, T + i, i + 1);
      b.apply(op, data, T + i, i + 1);
    });
    for (const dir of ['/', '/src']) {
      assert.equal(await a.dir(dir), await b.dir(dir), `listing of ${dir}`);
    }
    assert.equal(await a.attr('/'), await b.attr('/'));
  } finally {
    one.remove();
    two.remove();
  }
});

test.run();

test('an op naming an inode applies wherever it is now: after renames of it and of its directory, on a brick that never saw them indexed, and by its path once it has no name', () =>
  withBrick(async (b) => {
    b.apply({ type: 'mkdir', path: '/d', mode: 0o755, uid: 0, gid: 0 }, none, T, 10);
    const ino = b.apply({ type: 'create', path: '/d/log', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 11).attr!.ino;
    b.apply({ type: 'create', path: '/d/other', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 12);
    // Renamed, then a new file takes the old name: the op names the inode, with the old path.
    b.apply({ type: 'rename', from: '/d/log', to: '/d/log.1' }, none, T, 13);
    b.apply({ type: 'create', path: '/d/log', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 14);
    const w = b.apply({ type: 'write', path: '/d/log', ino, offset: 0 }, Buffer.from('one\n'), T, 15);
    assert.is(w.path, '/d/log.1', 'the answer says where it applied');
    assert.is(w.attr!.ino, ino);
    assert.is((await b.read('/d/log', 0, 100)).length, 0, 'the new file at the old name is untouched');
    // The directory above it moves.
    b.apply({ type: 'rename', from: '/d', to: '/e' }, none, T, 16);
    assert.is(b.apply({ type: 'write', path: '/d/log', ino, offset: 0, append: true }, Buffer.from('two\n'), T, 17).path, '/e/log.1');
    assert.is(b.apply({ type: 'chmod', path: '/d/log.1', ino, mode: 0o600 }, none, T, 18).attr!.mode & 0o7777, 0o600);
    assert.is((await b.attr(b.placeOf(ino, '/d/log'))).mode & 0o7777, 0o600);
    assert.is((await b.read('/e/log.1', 0, 100)).toString(), 'one\ntwo\n');
    // A brick that never indexed the inode (a restarted node) finds it by a walk, once.
    const walksBefore = b.inodes.walkCount;
    b.inodes.reset();
    assert.is(b.apply({ type: 'truncate', path: '/d/log', ino, size: 3 }, none, T, 19).path, '/e/log.1');
    assert.is(b.inodes.walkCount, walksBefore + 1);
    assert.is(b.apply({ type: 'truncate', path: '/d/log', ino, size: 2 }, none, T, 20).path, '/e/log.1');
    assert.is(b.inodes.walkCount, walksBefore + 1, 'then it is indexed');
    // Gone (unlinked through another mount): by its path, as before inodes travelled, and
    // the number is remembered as gone (no walk per call).
    b.apply({ type: 'unlink', path: '/e/log.1' }, none, T, 21);
    assert.is(b.apply({ type: 'write', path: '/e/log.1', ino, offset: 0 }, Buffer.from('x'), T, 22).errno, 'ENOENT');
    const walks = b.inodes.walkCount;
    assert.is(b.placeOf(ino, '/e/log'), '/e/log');
    const other = b.apply({ type: 'write', path: '/e/log', ino, offset: 0 }, Buffer.from('x'), T, 23);
    assert.is(other.path, '/e/log');
    assert.is.not(other.attr!.ino, ino, 'the file now at the path');
    assert.is(b.inodes.walkCount, walks);
  }));

test('appends land at the end as each is applied, the same on two bricks applying the same ops', async () => {
  const dir = tempDir('brick-append');
  try {
    const bricks = [await Brick.open(join(dir.path, 'b1')), await Brick.open(join(dir.path, 'b2'))];
    for (const b of bricks) {
      b.apply({ type: 'create', path: '/log', mode: 0o644, uid: 0, gid: 0, exclusive: true }, none, T, 1);
      b.apply({ type: 'write', path: '/log', offset: 0 }, Buffer.from('head\n'), T, 2);
      // Two writers' appends, interleaved by sequence ID; and a plain write extending the file.
      b.apply({ type: 'write', path: '/log', offset: 0, append: true }, Buffer.from('a1\n'), T, 3);
      b.apply({ type: 'write', path: '/log', offset: 0, append: true }, Buffer.from('b1\n'), T, 4);
      b.apply({ type: 'write', path: '/log', offset: 11 }, Buffer.from('XY\n'), T, 5);
      const r = b.apply({ type: 'write', path: '/log', offset: 0, append: true }, Buffer.from('a2\n'), T, 6);
      assert.is(r.attr!.size, 17);
    }
    const texts = await Promise.all(bricks.map(async (b) => (await b.read('/log', 0, 100)).toString()));
    assert.is(texts[0], 'head\na1\nb1\nXY\na2\n');
    assert.is(texts[1], texts[0]);
  } finally {
    dir.remove();
  }
});
