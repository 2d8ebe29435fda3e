/*
 * The aliases libfuse gives the node of a file a rename replaced (dfs patch item 12,
 * mount/replaced-alias.ts): a path ending in one stands for the name, and says which node
 * the call is on; nothing else is taken for one.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ALIAS_MARKER_BYTES, ALIAS_PREFIX, parseReplacedAlias } from '../../mount/replaced-alias';

/** An alias as fuse-native.c makes it. */
const alias = (nodeid: number, name: string): string =>
  (ALIAS_PREFIX + nodeid.toString(16).padStart(16, '0')).padEnd(ALIAS_MARKER_BYTES, '~') + name;

test('a path ending in an alias stands for the name in the same directory', () => {
  assert.equal(parseReplacedAlias(`/d/${alias(0x2a, 't')}`), { key: alias(0x2a, ''), path: '/d/t' });
  assert.is(parseReplacedAlias(`/${alias(7, 'top')}`)?.path, '/top');
  const long = 'n'.repeat(255);
  assert.is(parseReplacedAlias(`/a/b/${alias(3, long)}`)?.path, `/a/b/${long}`, 'a name of NAME_MAX bytes');
  const bytes = Buffer.from([0xff, 0x41, 0xe9]).toString('latin1');
  assert.is(parseReplacedAlias(`/d/${alias(3, bytes)}`)?.path, `/d/${bytes}`, 'any bytes, one char each');
});

test('the key tells nodes apart, not names', () => {
  assert.is(parseReplacedAlias(`/d/${alias(5, 'a')}`)?.key, parseReplacedAlias(`/e/${alias(5, 'b')}`)?.key);
  assert.is.not(parseReplacedAlias(`/d/${alias(5, 't')}`)?.key, parseReplacedAlias(`/d/${alias(6, 't')}`)?.key);
});

test('every other path is not an alias', () => {
  // A name of up to 1024 bytes may come from the kernel (FUSE_NAME_MAX), so it is never one.
  const longest = `${ALIAS_PREFIX}${'0'.repeat(16)}`.padEnd(1024, '~');
  for (const p of ['/', '/d/t', `/d/${ALIAS_PREFIX}`, `/d/${longest}`, `/d/${'x'.repeat(1100)}`, `/${alias(1, 't')}/under`]) {
    assert.is(parseReplacedAlias(p), null, p.slice(0, 40));
  }
});

test.run();
