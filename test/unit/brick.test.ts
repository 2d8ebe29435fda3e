/* The brick: ops applied as a local file system would, times from the op, and no way out. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Brick } from '../../storage/brick';
import { DfsError } from '../../common/errors';
import { tempDir } from '../helpers/temp';

const T = 1_700_000_000_000;

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
    assert.equal(b.apply({ type: 'mkdir', path: '/d', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T).errno, undefined);
    assert.is(b.apply({ type: 'mkdir', path: '/d', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T).errno, 'EEXIST');
    const c = b.apply({ type: 'create', path: '/d/f', mode: 0o640, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T + 1);
    assert.is(c.attr!.mode & 0o7777, 0o640);
    assert.is(b.apply({ type: 'create', path: '/d/f', mode: 0o600, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T).errno, 'EEXIST');
    assert.is(b.apply({ type: 'create', path: '/d/f', mode: 0o600, uid: 0, gid: 0, exclusive: false }, Buffer.alloc(0), T).errno, undefined);
    const w = b.apply({ type: 'write', path: '/d/f', offset: 3 }, Buffer.from('abc'), T + 2);
    assert.is(w.attr!.size, 6);
    assert.is(Math.round(w.attr!.mtimeMs), T + 2);
    assert.equal([...(await b.read('/d/f', 0, 100))], [0, 0, 0, 97, 98, 99]);
    assert.is(b.apply({ type: 'rmdir', path: '/d' }, Buffer.alloc(0), T).errno, 'ENOTEMPTY');
    assert.is(b.apply({ type: 'rmdir', path: '/d/f' }, Buffer.alloc(0), T).errno, 'ENOTDIR');
    assert.is(b.apply({ type: 'unlink', path: '/d' }, Buffer.alloc(0), T).errno, 'EISDIR');
    assert.is(b.apply({ type: 'unlink', path: '/nope' }, Buffer.alloc(0), T).errno, 'ENOENT');
    b.apply({ type: 'mkdir', path: '/d/e', mode: 0o750, uid: 0, gid: 0 }, Buffer.alloc(0), T + 1);
    assert.is(b.apply({ type: 'rename', from: '/d', to: '/d/e/x' }, Buffer.alloc(0), T).errno, 'EINVAL');
    assert.is(b.apply({ type: 'rename', from: '/d', to: '/d/f/x' }, Buffer.alloc(0), T).errno, 'ENOTDIR');
    assert.is(b.apply({ type: 'link', from: '/d', to: '/d2' }, Buffer.alloc(0), T).errno, 'EPERM');
    const l = b.apply({ type: 'link', from: '/d/f', to: '/g' }, Buffer.alloc(0), T + 3);
    assert.is(l.attr!.nlink, 2);
    assert.is(b.apply({ type: 'truncate', path: '/g', size: 1 }, Buffer.alloc(0), T + 4).attr!.size, 1);
    assert.is(readFileSync(join(root, 'd/f'), 'latin1'), '\0');
    assert.is(Math.round(lstatSync(join(root, 'd')).mtimeMs), T + 1, 'parent mtime is the create time');
  }));

test('symlinks are stored as links and never followed', () =>
  withBrick(async (b, root, outside) => {
    b.apply({ type: 'symlink', path: '/out', target: outside, uid: 0, gid: 0 }, Buffer.alloc(0), T);
    assert.is(await b.readlink('/out'), outside);
    assert.ok((await b.attr('/out')).mode & 0o120000);
    // Through the link: refused, and nothing appears outside.
    assert.is(b.apply({ type: 'create', path: '/out/evil', mode: 0o644, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T).errno, 'ELOOP');
    assert.is(b.apply({ type: 'mkdir', path: '/out/evil', mode: 0o755, uid: 0, gid: 0 }, Buffer.alloc(0), T).errno, 'ELOOP');
    assert.is(b.apply({ type: 'rename', from: '/out', to: '/out/x' }, Buffer.alloc(0), T).errno, 'ELOOP');
    assert.ok(!existsSync(join(outside, 'evil')));
    // The last component is not followed either.
    b.apply({ type: 'symlink', path: '/s', target: join(outside, 'secret'), uid: 0, gid: 0 }, Buffer.alloc(0), T);
    assert.is(b.apply({ type: 'write', path: '/s', offset: 0 }, Buffer.from('pwned'), T).errno, 'ELOOP');
    assert.is(b.apply({ type: 'truncate', path: '/s', size: 0 }, Buffer.alloc(0), T).errno, 'ELOOP');
    assert.is(b.apply({ type: 'chmod', path: '/s', mode: 0o777 }, Buffer.alloc(0), T).errno, 'EOPNOTSUPP');
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
    assert.is(b.apply({ type: 'unlink', path: '/planted/secret' }, Buffer.alloc(0), T).errno, 'ELOOP');
    assert.ok(existsSync(join(outside, 'secret')));
  }));

test('directory listings carry attributes, without . and ..', () =>
  withBrick(async (b) => {
    for (const n of ['a', 'b', 'c']) b.apply({ type: 'create', path: `/${n}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }, Buffer.alloc(0), T);
    const entries = await b.dir('/');
    assert.equal(entries.map((e) => e.name).sort(), ['a', 'b', 'c']);
    assert.ok(entries.every((e) => (e.attr.mode & 0o170000) === 0o100000));
  }));

test.run();
