/*
 * mount/errno.ts: every error the mount can meet becomes the errno a local file system
 * would give, and anything unknown becomes EIO.
 *
 *   node dist/test/unit/mount-errno.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { constants } from 'node:os';
import Fuse from 'fuse-native';
import { DfsError, fsError } from '../../common/errors';
import { errnoOf, errnoOfError, errnoOfLostWrite, EIO } from '../../mount/errno';

const E = constants.errno;
const fuse = Fuse as unknown as Record<string, number>;

test('errno names map to fuse-native constants (negative Linux values)', () => {
  for (const name of ['ENOENT', 'EEXIST', 'ENOTEMPTY', 'EACCES', 'EPERM', 'EXDEV', 'ENAMETOOLONG', 'ENOSPC', 'EISDIR', 'ENOTDIR', 'ELOOP', 'EINVAL']) {
    assert.is(errnoOf(name), fuse[name], name);
    assert.is(errnoOf(name), -(E as Record<string, number>)[name]!, name);
  }
});

test('a name fuse-native does not list falls back to the OS table; nonsense is EIO', () => {
  assert.is(errnoOf('ENOTSUP'), -E.ENOTSUP);
  assert.is(errnoOf('EWHATEVER'), EIO);
  assert.is(errnoOf('not an errno'), EIO);
  assert.is(errnoOf(undefined), EIO);
  assert.is(EIO, -5);
});

test('DfsError codes map as the brief says', () => {
  const table: Array<[DfsError, number]> = [
    [fsError('ENOENT'), -E.ENOENT],
    [fsError('ENOTEMPTY'), -E.ENOTEMPTY],
    [fsError('EXDEV'), -E.EXDEV],
    [new DfsError('FS_ERROR', 'no errno'), EIO],
    [new DfsError('NAME_TOO_LONG', 'x'), -E.ENAMETOOLONG],
    [new DfsError('BAD_PATH', 'x'), -E.EINVAL],
    [new DfsError('BAD_REQUEST', 'x'), -E.EINVAL],
    [new DfsError('TOO_LARGE', 'x'), -E.EFBIG],
    [new DfsError('UNAVAILABLE', 'x'), EIO],
    [new DfsError('TIMEOUT', 'x'), EIO],
    [new DfsError('BARRIER_TIMEOUT', 'x'), EIO],
    [new DfsError('NOT_PRIMARY', 'x'), EIO],
    [new DfsError('INTERNAL', 'x'), EIO],
  ];
  for (const [err, want] of table) assert.is(errnoOfError(err), want, `${err.code} ${err.errno ?? ''}`);
});

test('errors that are not DfsErrors (transport, bugs) are EIO', () => {
  assert.is(errnoOfError(new Error('ECONNREFUSED')), EIO);
  assert.is(errnoOfError(Object.assign(new Error('x'), { code: 'ENOENT' })), EIO, 'a local fs error is not a cluster answer');
  assert.is(errnoOfError('string'), EIO);
  assert.is(errnoOfError(undefined), EIO);
});

test('a lost buffered write is EIO, except the late reasons a local disk also gives', () => {
  assert.is(errnoOfLostWrite(new DfsError('UNAVAILABLE', 'down')), EIO);
  assert.is(errnoOfLostWrite(fsError('ENOENT')), EIO, 'the file vanished: the data is lost');
  assert.is(errnoOfLostWrite(fsError('ENOSPC')), -E.ENOSPC);
  assert.is(errnoOfLostWrite(fsError('EDQUOT')), -E.EDQUOT);
  assert.is(errnoOfLostWrite(fsError('EFBIG')), -E.EFBIG);
  assert.is(errnoOfLostWrite(new Error('socket')), EIO);
});

test.run();
