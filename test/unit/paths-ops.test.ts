/* Path and op validation: what is refused before a sequence ID is taken. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DfsError, httpStatusOf } from '../../common/errors';
import { parseClientOpHeader, validateOp } from '../../common/ops';
import { validatePath } from '../../common/paths';
import { WRITE_BYTES_MAX, WRITE_EXTENTS_MAX } from '../../common/limits';

function codeOf(fn: () => unknown): string | null {
  try {
    fn();
    return null;
  } catch (e) {
    assert.ok(e instanceof DfsError, `not a DfsError: ${String(e)}`);
    return (e as DfsError).code;
  }
}

const cases: Array<[string, unknown, string | null]> = [
  ['root', '/', null],
  ['plain', '/a/b c/ü', null],
  ['any byte but / and NUL', '/a\u0001\u007f*?\\:', null],
  ['relative', 'a/b', 'BAD_PATH'],
  ['empty', '', 'BAD_PATH'],
  ['not a string', 42, 'BAD_PATH'],
  ['dot-dot', '/a/../b', 'BAD_PATH'],
  ['leading dot-dot', '/..', 'BAD_PATH'],
  ['dot', '/a/./b', 'BAD_PATH'],
  ['double slash', '/a//b', 'BAD_PATH'],
  ['trailing slash', '/a/', 'BAD_PATH'],
  ['NUL', '/a\0b', 'BAD_PATH'],
  ['255-byte name', '/' + 'n'.repeat(255), null],
  ['256-byte name', '/' + 'n'.repeat(256), 'NAME_TOO_LONG'],
  ['255 bytes of two-byte characters', '/' + 'é'.repeat(128), 'NAME_TOO_LONG'],
  ['4096-byte path: PATH_MAX bounds a call, not a tree', '/' + Array.from({ length: 16 }, () => 'd'.repeat(254)).join('/') + '/' + 'f'.repeat(4096 - 16 * 255 - 1), null],
  ['65536-byte path', '/' + Array.from({ length: 256 }, () => 'd'.repeat(255)).join('/'), null],
  ['65537-byte path', '/' + Array.from({ length: 256 }, () => 'd'.repeat(255)).join('/') + '/e', 'NAME_TOO_LONG'],
];

for (const [name, path, code] of cases) {
  test(`path: ${name}`, () => {
    assert.is(codeOf(() => validatePath(path)), code);
  });
}

test('bad paths are 400, over-long ones too, oversize bodies 413', () => {
  assert.is(httpStatusOf(new DfsError('BAD_PATH', '')), 400);
  assert.is(httpStatusOf(new DfsError('NAME_TOO_LONG', '')), 400);
  assert.is(httpStatusOf(new DfsError('TOO_LARGE', '')), 413);
  assert.is(httpStatusOf(new DfsError('FS_ERROR', '', 'ENOENT')), 404);
  assert.is(httpStatusOf(new DfsError('FS_ERROR', '', 'ENOTEMPTY')), 409);
});

test('fallocate: the modes every node applies alike pass; others are EOPNOTSUPP before sequencing', () => {
  const fa = (mode: number, offset = 0, size = 4096) => validateOp({ type: 'fallocate', path: '/f', mode, offset, size }, 0);
  for (const mode of [0, 0x01, 0x03, 0x10, 0x11]) assert.is(codeOf(() => fa(mode)), null, `mode ${mode}`);
  for (const mode of [0x02, 0x08, 0x09, 0x20, 0x40, 0x04]) assert.is(codeOf(() => fa(mode)), 'FS_ERROR', `mode ${mode}`);
  assert.is(codeOf(() => fa(0, Number.MAX_SAFE_INTEGER, 10)), 'FS_ERROR', 'past the largest offset: EFBIG');
  assert.is(codeOf(() => validateOp({ type: 'fallocate', path: '/', mode: 0, offset: 0, size: 1 }, 0)), 'BAD_PATH');
});

test('every path-bearing op field is validated', () => {
  assert.is(codeOf(() => validateOp({ type: 'rename', from: '/a', to: '/../x' }, 0)), 'BAD_PATH');
  assert.is(codeOf(() => validateOp({ type: 'rename', from: '/../a', to: '/x' }, 0)), 'BAD_PATH');
  assert.is(codeOf(() => validateOp({ type: 'link', from: '/a', to: '/b/..' }, 0)), 'BAD_PATH');
  assert.is(codeOf(() => validateOp({ type: 'mkdir', path: '/', mode: 0o755, uid: 0, gid: 0 }, 0)), 'BAD_PATH');
  assert.is(codeOf(() => validateOp({ type: 'chmod', path: '/', mode: 0o755 }, 0)), null);
  assert.is(codeOf(() => validateOp({ type: 'symlink', path: '/l', target: 'x\0y', uid: 0, gid: 0 }, 0)), 'BAD_PATH');
  assert.is(codeOf(() => validateOp({ type: 'symlink', path: '/l', target: '../../etc/passwd', uid: 0, gid: 0 }, 0)), null);
});

test('data travels only with writes, and within the limit', () => {
  assert.is(codeOf(() => validateOp({ type: 'unlink', path: '/a' }, 1)), 'BAD_REQUEST');
  assert.is(codeOf(() => validateOp({ type: 'write', path: '/a', offset: 0 }, WRITE_BYTES_MAX)), null);
  assert.is(codeOf(() => validateOp({ type: 'write', path: '/a', offset: 0 }, WRITE_BYTES_MAX + 1)), 'TOO_LARGE');
});

test('mknod types and extended attribute names are checked before sequencing', () => {
  const errnoOf = (fn: () => unknown) => {
    try {
      fn();
      return null;
    } catch (e) {
      return (e as DfsError).errno ?? (e as DfsError).code;
    }
  };
  assert.is(errnoOf(() => validateOp({ type: 'mknod', path: '/p', mode: 0o010644, rdev: 0, uid: 0, gid: 0 }, 0)), null);
  assert.is(errnoOf(() => validateOp({ type: 'mknod', path: '/p', mode: 0o040755, rdev: 0, uid: 0, gid: 0 }, 0)), 'EINVAL', 'mknod of a directory');
  assert.is(errnoOf(() => validateOp({ type: 'setxattr', path: '/p', name: 'user.x', flags: 0 }, 10)), null);
  assert.is(errnoOf(() => validateOp({ type: 'setxattr', path: '/p', name: 'trusted.', flags: 0 }, 10)), 'EOPNOTSUPP');
  assert.is(errnoOf(() => validateOp({ type: 'setxattr', path: '/p', name: 'trusted.x', flags: 0 }, 10)), null, "root's trusted.* is stored");
  assert.is(errnoOf(() => validateOp({ type: 'setxattr', path: '/p', name: 'user.' + 'n'.repeat(251), flags: 0 }, 10)), 'ERANGE');
  assert.is(errnoOf(() => validateOp({ type: 'setxattr', path: '/p', name: 'user.x', flags: 0 }, 64 * 1024 + 1)), 'E2BIG');
  assert.is(errnoOf(() => validateOp({ type: 'removexattr', path: '/p', name: 'security.selinux' }, 0)), 'EOPNOTSUPP');
});

test('a write with extents: sorted, not overlapping, first at the offset, adding up to the data', () => {
  const w = (offset: number, extents: Array<[number, number]>) => ({ type: 'write' as const, path: '/a', offset, extents });
  assert.is(codeOf(() => validateOp(w(10, [[10, 4], [20, 2], [22, 1]]), 7)), null, 'touching extents are fine');
  assert.is(codeOf(() => validateOp(w(10, [[10, 4], [20, 2]]), 7)), 'BAD_REQUEST', 'lengths add up to less than the data');
  assert.is(codeOf(() => validateOp(w(10, [[10, 4], [20, 2]]), 5)), 'BAD_REQUEST', 'more than the data');
  assert.is(codeOf(() => validateOp(w(10, [[20, 2], [10, 4]]), 6)), 'BAD_REQUEST', 'not sorted');
  assert.is(codeOf(() => validateOp(w(10, [[10, 4], [13, 2]]), 6)), 'BAD_REQUEST', 'overlapping');
  assert.is(codeOf(() => validateOp(w(0, [[10, 4]]), 4)), 'BAD_REQUEST', 'first extent not at the offset');
  assert.is(codeOf(() => validateOp(w(0, [[0, 0]]), 0)), 'BAD_REQUEST', 'an empty extent');
  assert.is(codeOf(() => validateOp(w(0, []), 0)), 'BAD_REQUEST', 'no extent');
  assert.is(codeOf(() => validateOp(w(Number.MAX_SAFE_INTEGER - 1, [[Number.MAX_SAFE_INTEGER - 1, 2]]), 2)), 'BAD_REQUEST', 'past the largest offset');
  const many = (n: number) => Array.from({ length: n }, (_, i): [number, number] => [i * 2, 1]);
  assert.is(codeOf(() => validateOp(w(0, many(WRITE_EXTENTS_MAX)), WRITE_EXTENTS_MAX)), null);
  assert.is(codeOf(() => validateOp(w(0, many(WRITE_EXTENTS_MAX + 1)), WRITE_EXTENTS_MAX + 1)), 'BAD_REQUEST', 'too many extents');
  // On the wire: the shape is checked when the header is parsed, the rest by validateOp.
  const parsed = (op: unknown) => parseClientOpHeader({ reqId: 'r', op });
  assert.is(codeOf(() => parsed(w(0, many(WRITE_EXTENTS_MAX + 1)))), 'BAD_REQUEST');
  assert.is(codeOf(() => parsed({ type: 'write', path: '/a', offset: 0, extents: [[0, -1]] })), 'BAD_REQUEST');
  assert.is(codeOf(() => parsed({ type: 'write', path: '/a', offset: 0, extents: [[0, 1, 2]] })), 'BAD_REQUEST');
  assert.is(codeOf(() => parsed({ type: 'write', path: '/a', offset: 0, extents: [[0.5, 1]] })), 'BAD_REQUEST');
  assert.equal(parsed(w(0, [[0, 1]])).op, w(0, [[0, 1]]), 'extents survive parsing');
  assert.is(httpStatusOf(new DfsError('BAD_REQUEST', 'x')), 400);
});

test('malformed client headers are refused', () => {
  assert.is(codeOf(() => parseClientOpHeader({ reqId: 'r', op: { type: 'format-disk' } })), 'BAD_REQUEST');
  assert.is(codeOf(() => parseClientOpHeader({ reqId: '', op: { type: 'unlink', path: '/a' } })), 'BAD_REQUEST');
  assert.is(codeOf(() => parseClientOpHeader({ reqId: 'r', op: { type: 'chmod', path: '/a', mode: 0o170000 } })), 'BAD_REQUEST');
  assert.is(codeOf(() => parseClientOpHeader({ reqId: 'r', op: { type: 'write', path: '/a', offset: -1 } })), 'BAD_REQUEST');
  assert.is(codeOf(() => parseClientOpHeader({ reqId: 'r', op: { type: 'unlink', path: '/a' } })), null);
});

test.run();
