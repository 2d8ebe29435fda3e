/*
 * Credentials and certificate claims (common/credential.ts, common/tls.ts): the claims a
 * certificate carries, read back; "squash, then check"; subtree confinement; and the
 * certificate names Node prints, parsed.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { actAs, claimedIdentity, confinePath, credentialClaims, NOBODY_ID, parseCredential, parseIdSet, type Credential } from '../../common/credential';
import { identityOfNames, redisTlsOptions, uriNamesOf, type TlsMaterial } from '../../common/tls';
import { DfsError } from '../../common/errors';

const user: Credential = { uids: [[1000, 1000]], gids: [[1000, 1000], [100, 100]], squashRoot: true, subtree: null };

function refused(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return e instanceof DfsError ? `${e.code} ${e.errno ?? ''}`.trim() : 'other';
  }
  return 'allowed';
}

test('claims round-trip through a credential', () => {
  for (const c of [user, { uids: 'any', gids: 'any', squashRoot: false, subtree: null }, { uids: [[1, 5]], gids: [], squashRoot: true, subtree: '/home/a b,c' }] as Credential[]) {
    assert.equal(parseCredential('mount', credentialClaims(c)), c);
  }
});

test('malformed claims make a certificate worth nothing', () => {
  for (const bad of [['uid:x'], ['uid:5-1'], ['uid:4294967296'], ['squash:maybe'], ['squash:root', 'squash:none'], ['subtree:%2F..%2Fx'], ['subtree:a']]) {
    assert.is(parseCredential('mount', bad), null, bad.join(' '));
  }
  assert.is(identityOfNames(['urn:dfs:role:mount', 'urn:dfs:role:admin']), null);
  assert.is(identityOfNames(['urn:dfs:role:root']), null);
  assert.is(identityOfNames(['urn:other:role:admin']), null);
});

test('admin acts as anyone; node and proxy as no user', () => {
  assert.equal(identityOfNames(['urn:dfs:role:admin', 'urn:dfs:uid:5'])?.credential.uids, 'any');
  const node = identityOfNames(['urn:dfs:role:node', 'urn:dfs:id:n1'])!;
  assert.is(node.id, 'n1');
  assert.is(refused(() => actAs(node.credential, { uid: 0, gid: 0, groups: [] })), 'FS_ERROR EPERM');
});

test('squash, then check', () => {
  const table: Array<[string, { uid: number; gid: number; groups: number[] }, Credential, string]> = [
    ['own ids', { uid: 1000, gid: 1000, groups: [100] }, user, 'allowed'],
    ['root, squashed to nobody, not listed', { uid: 0, gid: 1000, groups: [] }, user, 'FS_ERROR EPERM'],
    ['gid 0', { uid: 1000, gid: 0, groups: [] }, user, 'FS_ERROR EPERM'],
    ['group 0 among the groups', { uid: 1000, gid: 1000, groups: [0] }, user, 'FS_ERROR EPERM'],
    ['another uid', { uid: 1001, gid: 1000, groups: [] }, user, 'FS_ERROR EPERM'],
    ['root, nobody listed', { uid: 0, gid: 0, groups: [] }, { ...user, uids: [[1000, 1000], [NOBODY_ID, NOBODY_ID]], gids: [[NOBODY_ID, NOBODY_ID]] }, 'allowed'],
    ['root unsquashed, any', { uid: 0, gid: 0, groups: [0] }, { uids: 'any', gids: 'any', squashRoot: false, subtree: null }, 'allowed'],
  ];
  for (const [what, claimed, cred, expect] of table) assert.is(refused(() => actAs(cred, claimed)), expect, what);
  assert.equal(actAs({ ...user, uids: [[NOBODY_ID, NOBODY_ID]], gids: [[NOBODY_ID, NOBODY_ID]] }, { uid: 0, gid: 0, groups: [0] }), { uid: NOBODY_ID, gid: NOBODY_ID, groups: [NOBODY_ID] });
});

test('identity headers: parsed, bounded, defaulting to the credential\'s lowest ids', () => {
  const h = (m: Record<string, string>) => (name: string) => m[name];
  assert.equal(claimedIdentity(h({}), user), { uid: 1000, gid: 100, groups: [] });
  assert.equal(claimedIdentity(h({ 'x-dfs-uid': '5', 'x-dfs-gid': '6', 'x-dfs-groups': '7,8' }), user), { uid: 5, gid: 6, groups: [7, 8] });
  for (const bad of <Array<Record<string, string>>>[{ 'x-dfs-uid': '-1' }, { 'x-dfs-uid': '1e3' }, { 'x-dfs-gid': '4294967296' }, { 'x-dfs-groups': '1,,2' }, { 'x-dfs-groups': Array(1025).fill('1').join(',') }]) {
    assert.is(refused(() => claimedIdentity(h(bad), user)), 'BAD_REQUEST', JSON.stringify(bad).slice(0, 60));
  }
});

test('a subtree is the client\'s root, and validated paths cannot leave it', () => {
  const c = { ...user, subtree: '/home/ann' };
  assert.is(confinePath(c, '/'), '/home/ann');
  assert.is(confinePath(c, '/x/y'), '/home/ann/x/y');
  assert.is(confinePath(user, '/x'), '/x');
});

test('id sets from the command line', () => {
  assert.equal(parseIdSet('1000,2000-2999', '--uids'), [[1000, 1000], [2000, 2999]]);
  assert.is(parseIdSet('*', '--uids'), 'any');
  assert.throws(() => parseIdSet('10-1', '--uids'));
  assert.throws(() => parseIdSet('', '--uids'));
});

test('the subject alternative names Node prints', () => {
  assert.equal(uriNamesOf('URI:urn:dfs:role:node, URI:urn:dfs:id:n1, IP Address:127.0.0.1, DNS:localhost'), ['urn:dfs:role:node', 'urn:dfs:id:n1']);
  assert.equal(uriNamesOf('URI:"urn:dfs:subtree:a,b", DNS:x'), ['urn:dfs:subtree:a,b']);
  assert.equal(uriNamesOf(undefined), []);
});

test('Redis: plaintext only on loopback or --insecure; rediss:// with the process\'s certificate', () => {
  const tls: TlsMaterial = { ca: Buffer.from('ca'), cert: Buffer.from('cert'), key: Buffer.from('key') };
  assert.equal(redisTlsOptions('redis://127.0.0.1:6379', tls), {});
  assert.equal(redisTlsOptions('redis://localhost:6379', tls), {});
  assert.equal(redisTlsOptions('redis://[::1]:6379', tls), {});
  assert.throws(() => redisTlsOptions('redis://10.0.0.5:6379', tls), /rediss/);
  assert.equal(redisTlsOptions('redis://10.0.0.5:6379', null), {});
  assert.equal(redisTlsOptions('rediss://10.0.0.5:6379', tls), { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } });
});

test.run();
