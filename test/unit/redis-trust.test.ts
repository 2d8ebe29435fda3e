/*
 * Redis locked and distrusted, the pure parts (docs/security.md, "Redis"): the seal on a
 * membership (what passes and every way one fails), the epoch bound, the password files
 * and the ACL file `dfs local up` makes.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ensureCa, issueCert, readMaterial } from '../../cli/certs';
import { ensureRedisAcl, readRedisLogin, redisAclFile, redisAuthFile } from '../../cli/redis-acl';
import { SealChecker, sealMembership, sealRemoval } from '../../common/membership-seal';
import { loadRedisAuth, readRedisAuthFile, REDIS_ACL_RULES } from '../../common/redis-auth';
import { EPOCH_AHEAD_MAX, epochRefusal, parseMembership, encodeMembership, type MembershipRecord } from '../../common/registry';
import { tempDir } from '../helpers/temp';

const s = suite('redis trust');
const dir = tempDir('redis-trust');
const tlsDir = join(dir.path, 'tls');
const otherDir = join(dir.path, 'other');
ensureCa(tlsDir);
ensureCa(otherDir);
const proxy = readMaterial(issueCert(tlsDir, 'p1', { role: 'proxy' }));
const node = readMaterial(issueCert(tlsDir, 'n1', { role: 'node' }));
const stranger = readMaterial(issueCert(otherDir, 'p1', { role: 'proxy' }));
const checker = new SealChecker(proxy.ca);
const M: MembershipRecord = { epoch: 7, primary: 'n1', inSync: ['n1', 'n2'], nodes: { n2: 'https://127.0.0.1:2', n1: 'https://127.0.0.1:1' } };

s.after(() => dir.remove());

s('a membership sealed by a proxy of the cluster passes, through Redis text and back', () => {
  const sealed = parseMembership(encodeMembership(sealMembership(M, proxy)));
  assert.is(checker.refusal(sealed), null);
  // Key order does not matter: the seal covers the fields, not the text.
  const reordered = parseMembership(JSON.stringify({ seal: sealed.seal, nodes: { n1: M.nodes.n1, n2: M.nodes.n2 }, inSync: M.inSync, primary: M.primary, epoch: M.epoch }));
  assert.is(checker.refusal(reordered), null);
});

s('every way a seal fails is refused with its reason', () => {
  const sealed = sealMembership(M, proxy);
  const cases: Array<[string, MembershipRecord, RegExp]> = [
    ['no seal', M, /no seal/],
    ['another primary', { ...sealed, primary: 'n2' }, /does not match/],
    ['another epoch', { ...sealed, epoch: 8 }, /does not match/],
    ['a URL rewritten', { ...sealed, nodes: { ...sealed.nodes, n2: 'https://127.0.0.1:9' } }, /does not match/],
    ['a node added', { ...sealed, nodes: { ...sealed.nodes, n9: 'https://127.0.0.1:9' } }, /does not match/],
    ['another CA', sealMembership(M, stranger), /not issued by this cluster's CA/],
    ['a node\'s key', sealMembership(M, node), /role node, not proxy/],
    ['a garbage certificate', { ...sealed, seal: { cert: 'x', sig: sealed.seal!.sig } }, /does not parse/],
    ['a garbage signature', { ...sealed, seal: { cert: sealed.seal!.cert, sig: 'AAAA' } }, /does not match/],
  ];
  for (const [what, m, reason] of cases) {
    const why = checker.refusal(m);
    assert.ok(why !== null && reason.test(why), `${what}: ${why}`);
  }
  // Expired by the clock the checker is given.
  assert.match(checker.refusal(sealed, Date.now() + 10_000 * 24 * 3600 * 1000) ?? '', /not valid now/);
});

s('a removal request counts only with an admin seal over its node and time', () => {
  const admin = readMaterial(issueCert(tlsDir, 'admin', { role: 'admin' }));
  const r = { requestedAtMs: 1_000 };
  const sealed = sealRemoval('n1', r, admin);
  assert.is(checker.removalRefusal('n1', sealed), null);
  // The leader's drain mark does not touch the seal.
  assert.is(checker.removalRefusal('n1', { ...sealed, drainedAtMs: 2_000 }), null);
  assert.match(checker.removalRefusal('n1', r) ?? '', /no seal/);
  assert.match(checker.removalRefusal('n2', sealed) ?? '', /does not match/);
  assert.match(checker.removalRefusal('n1', { ...sealed, requestedAtMs: 5 }) ?? '', /does not match/);
  assert.match(checker.removalRefusal('n1', sealRemoval('n1', r, proxy)) ?? '', /role proxy, not admin/);
  assert.match(checker.refusal(sealMembership(M, admin)) ?? '', /role admin, not proxy/);
});

s('an epoch more than the bound above the newest known is refused; a fresh reader bounds nothing', () => {
  assert.is(epochRefusal(10 + EPOCH_AHEAD_MAX, 10), null);
  assert.match(epochRefusal(11 + EPOCH_AHEAD_MAX, 10) ?? '', /more than/);
  assert.match(epochRefusal(Number.MAX_SAFE_INTEGER, 5) ?? '', /more than/);
  assert.is(epochRefusal(Number.MAX_SAFE_INTEGER, 0), null);
  assert.throws(() => parseMembership(JSON.stringify({ ...M, epoch: 2 ** 53 })), /epoch/);
  assert.throws(() => parseMembership(JSON.stringify({ ...M, nodes: { ...M.nodes, n2: 'file:///etc/passwd' } })), /http/);
});

s('dfs local up: a password per role (0600), an ACL file of hashes with default off', () => {
  const acl = ensureRedisAcl(tlsDir);
  assert.is(acl, redisAclFile(tlsDir));
  const text = readFileSync(acl, 'utf8');
  assert.match(text, /^user default off /m);
  for (const role of ['admin', 'proxy', 'node'] as const) {
    const file = redisAuthFile(tlsDir, role);
    assert.is(statSync(file).mode & 0o777, 0o600, file);
    const login = readRedisLogin(tlsDir, role)!;
    assert.is(login.username, role);
    assert.ok(login.password.length >= 64);
    assert.not.ok(text.includes(login.password), 'no password in the ACL file');
    assert.ok(text.includes(`user ${role} on resetpass #${createHash('sha256').update(login.password).digest('hex')} ${REDIS_ACL_RULES[role]}`), role);
  }
  assert.is(statSync(acl).mode & 0o777, 0o600);
  // A second start keeps the passwords.
  const before = readFileSync(redisAuthFile(tlsDir, 'proxy'), 'utf8');
  ensureRedisAcl(tlsDir);
  assert.is(readFileSync(redisAuthFile(tlsDir, 'proxy'), 'utf8'), before);
  assert.is(readRedisLogin(null, 'proxy'), null);
});

s('a process\'s login: a file or $DFS_REDIS_AUTH, required unless --insecure, clear errors', () => {
  const file = redisAuthFile(tlsDir, 'node');
  assert.is(loadRedisAuth({ 'redis-auth': file }, {})!.username, 'node');
  assert.is(loadRedisAuth({}, { DFS_REDIS_AUTH: file })!.username, 'node');
  assert.is(loadRedisAuth({ insecure: true }, { DFS_REDIS_AUTH: file }), null);
  assert.throws(() => loadRedisAuth({}, {}), /--redis-auth FILE .* is required/);
  assert.throws(() => loadRedisAuth({ insecure: true, 'redis-auth': file }, {}), /exclude each other/);
  assert.throws(() => readRedisAuthFile(join(dir.path, 'none.json')), /cannot read the Redis password file/);
  const bad = join(dir.path, 'bad.json');
  writeFileSync(bad, '{"username":"a b","password":"short"}');
  assert.throws(() => readRedisAuthFile(bad), /malformed: username.*password/);
  writeFileSync(bad, 'nope');
  assert.throws(() => readRedisAuthFile(bad), /not JSON/);
});

s.run();
