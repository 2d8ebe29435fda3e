/*
 * Cache leases: which changes conflict with which keys (common/leases.ts), the primary's
 * table (storage/leases.ts: grants, polls, revocations that wait for acks or a lapse, the
 * gate around a new primary) and the mount's side (mount/leases.ts).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { conflictsWith, leaseConflictsOf, leaseKeyOf, parseLeaseHeader } from '../../common/leases';
import { LeaseGate, LeaseTable } from '../../storage/leases';
import { MountLeases, type PollResult } from '../../mount/leases';
import { createLogger } from '../../common/log';

const logger = createLogger('test');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a change conflicts with the keys of its names, their parents, and moved subtrees', () => {
  assert.is(leaseKeyOf('/a/b'), '/a');
  assert.is(leaseKeyOf('/a'), '/');
  assert.is(leaseKeyOf('/'), '/');
  const create = leaseConflictsOf({ type: 'create', path: '/d/e/f', mode: 0o644, uid: 0, gid: 0, exclusive: false });
  assert.ok(conflictsWith(create, '/d/e'));
  assert.ok(conflictsWith(create, '/d'));
  assert.not.ok(conflictsWith(create, '/'));
  assert.not.ok(conflictsWith(create, '/d/e/f'));
  const chmod = leaseConflictsOf({ type: 'chmod', path: '/d/f', mode: 0o600 });
  assert.ok(conflictsWith(chmod, '/d'));
  assert.not.ok(conflictsWith(chmod, '/'));
  const rename = leaseConflictsOf({ type: 'rename', from: '/a/dir', to: '/b/dir' });
  for (const key of ['/a', '/', '/b', '/a/dir', '/a/dir/sub/deeper', '/b/dir/x']) assert.ok(conflictsWith(rename, key), key);
  assert.not.ok(conflictsWith(rename, '/a/dirt'));
  assert.not.ok(conflictsWith(rename, '/c'));
  const link = leaseConflictsOf({ type: 'link', from: '/x/f', to: '/y/g' });
  assert.ok(conflictsWith(link, '/x'), 'the source link count changes');
  assert.ok(conflictsWith(link, '/y'));
  const rmdir = leaseConflictsOf({ type: 'rmdir', path: '/r/s' });
  assert.ok(conflictsWith(rmdir, '/r/s'));
  assert.equal(leaseConflictsOf({ type: 'noop' }), { keys: [], trees: [] });
});

test('the lease header parses or is refused', () => {
  assert.equal(parseLeaseHeader('abc-1;12;3000'), { session: 'abc-1', lease: 12, ms: 3000 });
  assert.is(parseLeaseHeader(undefined), null);
  assert.is(parseLeaseHeader('abc;x;3000'), null);
  assert.is(parseLeaseHeader('a b;1;1'), null);
});

test('a revocation waits for the holder to acknowledge it; the changer itself is not asked', async () => {
  const t = new LeaseTable(Date.now, 5_000);
  const g = t.grant('m1', '/d')!;
  assert.ok(g);
  assert.is(t.grant('m1', '/d')!.lease, g.lease, 'one lease per mount and key');
  assert.is(await t.revoke(leaseConflictsOf({ type: 'chmod', path: '/d/f', mode: 0o600 }), 'm1'), 0, 'own change');
  let done = false;
  const revoking = t.revoke(leaseConflictsOf({ type: 'chmod', path: '/d/f', mode: 0o600 }), 'm2').then((n) => {
    done = true;
    return n;
  });
  const answer = await t.poll('m1', [], 1_000);
  assert.equal(answer, { session: g.session, revoked: [g.lease] });
  await sleep(20);
  assert.not.ok(done, 'not done before the ack');
  await t.poll('m1', [g.lease], 0);
  assert.is(await revoking, 1);
  const again = t.grant('m1', '/d')!;
  assert.is.not(again.lease, g.lease, 'a revoked lease is never granted again');
  assert.is(again.session, g.session);
});

test('a held poll is answered at once when a lease is revoked', async () => {
  const t = new LeaseTable(Date.now, 5_000);
  const g = t.grant('m1', '/d')!;
  const started = Date.now();
  const polling = t.poll('m1', [], 3_000);
  await sleep(10);
  void t.revoke(leaseConflictsOf({ type: 'unlink', path: '/d/x' }), null);
  const answer = await polling;
  assert.equal(answer.revoked, [g.lease]);
  assert.ok(Date.now() - started < 1_000, 'woken, not held to the end');
});

test('a holder that never answers: the revocation ends when its session lapses, not before', async () => {
  const t = new LeaseTable(Date.now, 150);
  t.grant('m1', '/d');
  const started = Date.now();
  const n = await t.revoke(leaseConflictsOf({ type: 'create', path: '/d/n', mode: 0o644, uid: 0, gid: 0, exclusive: false }), 'm2');
  const took = Date.now() - started;
  assert.is(n, 1);
  assert.ok(took >= 140 && took < 2_000, `took ${took} ms`);
});

test('polls that renew a session keep a revocation waiting until the mount acknowledges it', async () => {
  const t = new LeaseTable(Date.now, 150);
  const g = t.grant('m1', '/d')!;
  let done = false;
  const revoking = t.revoke(leaseConflictsOf({ type: 'chmod', path: '/d/f', mode: 0o600 }), null).then(() => (done = true));
  // A mount that polls but has not acknowledged yet (its answer may be on its way).
  for (let i = 0; i < 4; i++) {
    await t.poll('m1', [], 0);
    await sleep(80);
  }
  assert.not.ok(done, 'renewed past the old lapse, still waiting');
  await t.poll('m1', [g.lease], 0);
  await revoking;
  assert.ok(done);
});

test('a lapsed session is replaced: its leases are gone, and a poll says so', async () => {
  const t = new LeaseTable(Date.now, 50);
  const g = t.grant('m1', '/d')!;
  await sleep(80);
  assert.equal(await t.poll('m1', [], 0), { session: null, revoked: [] });
  const g2 = t.grant('m1', '/d')!;
  assert.is.not(g2.session, g.session);
  assert.is(t.size, 1);
});

test('a directory moved revokes the leases below it', async () => {
  const t = new LeaseTable(Date.now, 100);
  t.grant('m1', '/a/b/c');
  t.grant('m1', '/z');
  const revoking = t.revoke(leaseConflictsOf({ type: 'rename', from: '/a/b', to: '/q' }), null);
  assert.is(t.size, 1, 'the unrelated lease stays');
  assert.is(await revoking, 1);
});

test('a new primary waits out older leases before acknowledging, unless none were ever granted', async () => {
  let primary = true;
  const role = () => ({ primary, confirmedAtMs: Date.now() });
  const waited = new LeaseGate({ role, leaseMs: 120, grantFreshMs: 30, marker: { mark: async () => true, isSet: async () => true } });
  let started = Date.now();
  await waited.beforeAck({ keys: [], trees: [] }, null);
  assert.ok(Date.now() - started >= 140, 'waited lease + fresh');
  started = Date.now();
  await waited.beforeAck({ keys: [], trees: [] }, null);
  assert.ok(Date.now() - started < 100, 'only once');

  const fresh = new LeaseGate({ role, leaseMs: 5_000, grantFreshMs: 1_000, marker: { mark: async () => true, isSet: async () => false } });
  started = Date.now();
  await fresh.beforeAck({ keys: [], trees: [] }, null);
  assert.ok(Date.now() - started < 1_000, 'no lease was ever granted: no wait');

  // Grants wait for the mark, and stop when the node is no longer primary or unsure.
  assert.is(fresh.grantable(), null, 'not marked yet');
  await sleep(5);
  assert.ok(fresh.grantable(), 'marked');
  primary = false;
  assert.is(fresh.grantable(), null);
  const stale = new LeaseGate({ role: () => ({ primary: true, confirmedAtMs: Date.now() - 5_000 }) });
  assert.is(stale.grantable(), null, 'not confirmed recently');
  const refused = new LeaseGate({ role, marker: { mark: async () => false, isSet: async () => true } });
  refused.grantable();
  await sleep(5);
  assert.is(refused.grantable(), null, 'the membership did not name it: no mark, no grant');
});

test('the mount: leases hold until revoked, renewed by polls, and a grant revoked on its way is refused', async () => {
  let now = 0;
  const polls: Array<{ identity: string; acks: number[]; answer: (r: PollResult) => void }> = [];
  const dropped: string[][] = [];
  const leases = new MountLeases('m', {
    poll: (identity, acks) => new Promise<PollResult>((answer) => polls.push({ identity, acks, answer })),
    dropped: (keys) => {
      dropped.push(keys);
    },
    logger,
    now: () => now,
  });
  const id = leases.identity;
  const ref = leases.granted('/d', { session: 's1', lease: 1, ms: 1_000, sentAtMs: 0 }, id)!;
  assert.ok(leases.valid(ref));
  assert.is(leases.current('/d'), ref);
  await sleep(0);
  assert.is(polls.length, 1, 'a poll runs while there is a session');
  now = 900;
  polls.shift()!.answer({ session: 's1', revoked: [] }); // sent at 0: renews nothing new
  await sleep(0);
  now = 950;
  polls.shift()!.answer({ session: 's1', revoked: [] }); // sent at 900
  await sleep(0);
  now = 1_850;
  assert.ok(leases.valid(ref), 'renewed from when the poll was sent');
  now = 1_901;
  assert.not.ok(leases.valid(ref), 'lapsed without a further renewal');
  now = 1_000;
  const other = leases.granted('/e', { session: 's1', lease: 2, ms: 1_000, sentAtMs: 1_000 }, id)!;
  await sleep(0);
  polls.shift()!.answer({ session: 's1', revoked: [2] });
  await sleep(0);
  assert.not.ok(leases.valid(other));
  assert.equal(dropped.at(-1), ['/e']);
  assert.equal(polls[0]!.acks, [2], 'the next poll acknowledges');
  assert.is(leases.granted('/e', { session: 's1', lease: 2, ms: 1_000, sentAtMs: 1_000 }, id), null, 'revoked before its grant arrived');
  assert.is(leases.granted('/f', { session: 's1', lease: 3, ms: 1_000, sentAtMs: 1_000 }, 'old-identity'), null);
  // The primary no longer knows the session: everything goes, under a new identity.
  polls.shift()!.answer({ session: null, revoked: [] });
  await sleep(0);
  assert.not.ok(leases.valid(ref));
  assert.is.not(leases.identity, id);
  leases.stop();
});

test('a revocation is sent in every poll answer until acknowledged: an answer lost on its way loses nothing', async () => {
  const t = new LeaseTable(Date.now, 5_000);
  const g = t.grant('m1', '/d')!;
  let done = false;
  const revoking = t.revoke(leaseConflictsOf({ type: 'chmod', path: '/d/f', mode: 0o600 }), 'm2').then(() => (done = true));
  assert.equal((await t.poll('m1', [], 1_000)).revoked, [g.lease]); // lost: the mount never hears it
  const started = Date.now();
  const again = await t.poll('m1', [], 1_000);
  assert.equal(again, { session: g.session, revoked: [g.lease] }, 'sent again');
  assert.ok(Date.now() - started < 500, 'at once, not held');
  assert.not.ok(done);
  // An ack of the same number for another session (an older primary's table) settles nothing.
  assert.equal((await t.poll('m1', [g.lease], 0, 'an-older-session')).revoked, [g.lease]);
  assert.not.ok(done);
  assert.equal((await t.poll('m1', [g.lease], 0, g.session)).revoked, [], 'acknowledged: not sent again');
  await revoking;
  assert.ok(done);
});

test('the mount and the primary: a poll answer with a revocation lost on its way, the lease is still given up', async () => {
  const t = new LeaseTable(Date.now, 5_000);
  let lose = 0;
  const leases = new MountLeases('m', {
    poll: async (identity, acks) => {
      const answer = await t.poll(identity, acks, 20);
      if (answer.revoked.length > 0 && lose > 0) {
        lose--;
        throw new Error('the proxy lost the answer');
      }
      return answer;
    },
    dropped: () => undefined,
    logger,
  });
  const g = t.grant(leases.identity, '/')!;
  const ref = leases.granted('/', { ...g, sentAtMs: performance.now() }, leases.identity)!;
  assert.ok(leases.valid(ref));
  lose = 1;
  const revoking = t.revoke(leaseConflictsOf({ type: 'create', path: '/r1', mode: 0o644, uid: 0, gid: 0, exclusive: false }), 'other');
  // Acknowledged by the mount, not lapsed (the session is still polled): without that the
  // change would wait for as long as the mount polls.
  const outcome = await Promise.race([revoking.then(() => 'acknowledged'), sleep(2_000).then(() => 'still waiting')]);
  assert.is(outcome, 'acknowledged');
  assert.is(lose, 0, 'an answer was lost');
  assert.not.ok(leases.valid(ref), 'the lease the lost answer revoked is given up');
  leases.stop();
});

test('the mount: a poll answered for a session taken up meanwhile still revokes, and one not yet taken up refuses its grant', async () => {
  const polls: Array<{ acks: number[]; answer: (r: PollResult) => void }> = [];
  const leases = new MountLeases('m', {
    poll: (_identity, acks) => new Promise<PollResult>((answer) => polls.push({ acks, answer })),
    dropped: () => undefined,
    logger,
    now: () => 0,
  });
  const id = leases.identity;
  leases.granted('/a', { session: 's1', lease: 1, ms: 1_000, sentAtMs: 0 }, id);
  await sleep(0);
  assert.is(polls.length, 1);
  // A new primary's grant comes while the poll is out; the poll reaches that primary.
  const ref = leases.granted('/', { session: 's2', lease: 7, ms: 1_000, sentAtMs: 0 }, id)!;
  assert.ok(leases.valid(ref));
  polls.shift()!.answer({ session: 's2', revoked: [7] });
  await sleep(0);
  await sleep(0);
  assert.not.ok(leases.valid(ref), 'revoked, though the poll left under s1');
  assert.equal(polls[0]?.acks, [7], 'and acknowledged');
  // The other order: the answer revokes a lease of a session whose grant is still on its way.
  polls.shift()!.answer({ session: 's3', revoked: [9] });
  await sleep(0);
  assert.is(leases.granted('/', { session: 's3', lease: 9, ms: 1_000, sentAtMs: 0 }, id), null, 'its grant is refused');
  leases.stop();
});

test('the mount: acks of a session given up while their poll failed are not sent under the next session', async () => {
  const polls: Array<{ acks: number[]; ackSession: string; answer: (r: PollResult) => void; fail: (e: Error) => void }> = [];
  const leases = new MountLeases('m', {
    poll: (_identity, acks, ackSession) => new Promise<PollResult>((answer, fail) => polls.push({ acks, ackSession, answer, fail })),
    dropped: () => undefined,
    logger,
    now: () => 0,
  });
  const id = leases.identity;
  leases.granted('/a', { session: 's1', lease: 1, ms: 1_000, sentAtMs: 0 }, id);
  await sleep(0);
  polls.shift()!.answer({ session: 's1', revoked: [1] });
  await sleep(0);
  await sleep(0);
  assert.equal(polls[0]!.acks, [1]);
  assert.is(polls[0]!.ackSession, 's1');
  // A new primary's grant (its lease 1 is another lease) while that poll is out, and it fails.
  leases.granted('/b', { session: 's2', lease: 1, ms: 1_000, sentAtMs: 0 }, id);
  polls.shift()!.fail(new Error('cut off'));
  await sleep(300);
  assert.ok(polls.length > 0, 'polling again');
  assert.equal(polls[0]!.acks, [], 'the ack of s1 is not sent as one of s2');
  leases.stop();
});

test.run();
