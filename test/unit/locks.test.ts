/*
 * The lock table's pure core (common/locks.ts): event scripts of requests by owners in
 * sessions, each with the outcome it must have and the table it must leave, including
 * lapsed sessions and malformed requests.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createLogger } from '../../common/log';
import { Deadline } from '../../mount/deadline';
import { F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK, LOCK_EX, LOCK_NB, LOCK_UN, LOCK_WAIT, MountLocks } from '../../mount/locks';
import { applyLockRequest, decodeLockTable, encodeLockTable, findConflict, lockRequestProblem, LOCK_END_MAX, LOCKS_PER_FILE_MAX, type HeldLock, type LockKind, type LockRequest, type LockType } from '../../common/locks';

const A = { session: 's1', owner: '00000000000000aa' };
const B = { session: 's2', owner: '00000000000000bb' };
const A2 = { session: 's1', owner: '00000000000000a2' };
type Who = typeof A;

function req(who: Who, kind: LockKind, type: LockType, start = 0, end = LOCK_END_MAX): LockRequest {
  return { kind, type, start, end, pid: who === A ? 1 : who === B ? 2 : 3, path: '/f', ...who };
}

/** The table, as `owner type start-end` strings, sorted. */
function show(locks: readonly HeldLock[]): string[] {
  return locks.map((l) => `${l.kind} ${l.owner.slice(-2)} ${l.type} ${l.start}-${l.end === LOCK_END_MAX ? 'EOF' : l.end}`).sort();
}

type Script = Array<[LockRequest, 'ok' | 'refused', string[]]>;

function run(script: Script, alive: (s: string) => boolean = () => true): void {
  let table: HeldLock[] = [];
  script.forEach(([r, outcome, after], i) => {
    const out = applyLockRequest(table, r, alive);
    assert.is(out.granted ? 'ok' : 'refused', outcome, `step ${i}`);
    assert.equal(show(out.locks), [...after].sort(), `table after step ${i}`);
    table = out.locks;
  });
}

test('POSIX: conflicts, shared ranges, upgrade and downgrade', () => {
  run([
    [req(A, 'posix', 'r', 0, 100), 'ok', ['posix aa r 0-100']],
    [req(B, 'posix', 'r', 50, 150), 'ok', ['posix aa r 0-100', 'posix bb r 50-150']],
    [req(A, 'posix', 'w', 0, 100), 'refused', ['posix aa r 0-100', 'posix bb r 50-150']],
    [req(B, 'posix', 'u', 50, 150), 'ok', ['posix aa r 0-100']],
    [req(A, 'posix', 'w', 0, 100), 'ok', ['posix aa w 0-100']],
    [req(A, 'posix', 'r', 0, 100), 'ok', ['posix aa r 0-100']],
    [req(A2, 'posix', 'w', 100, 200), 'ok', ['posix aa r 0-100', 'posix a2 w 100-200']],
    [req(B, 'posix', 'r', 99, 101), 'refused', ['posix aa r 0-100', 'posix a2 w 100-200']],
  ]);
});

test('POSIX: unlocking the middle splits, touching ranges of one type merge', () => {
  run([
    [req(A, 'posix', 'w', 0, 100), 'ok', ['posix aa w 0-100']],
    [req(A, 'posix', 'u', 40, 60), 'ok', ['posix aa w 0-40', 'posix aa w 60-100']],
    [req(A, 'posix', 'r', 30, 70), 'ok', ['posix aa w 0-30', 'posix aa r 30-70', 'posix aa w 70-100']],
    [req(A, 'posix', 'w', 30, 70), 'ok', ['posix aa w 0-100']],
    [req(A, 'posix', 'w', 100, 110), 'ok', ['posix aa w 0-110']],
    [req(A, 'posix', 'w', 200), 'ok', ['posix aa w 0-110', 'posix aa w 200-EOF']],
    [req(A, 'posix', 'u', 0), 'ok', []],
  ]);
});

test('flock: whole file, per owner, a refused conversion loses the old lock', () => {
  run([
    [req(A, 'flock', 'r'), 'ok', ['flock aa r 0-EOF']],
    [req(B, 'flock', 'r'), 'ok', ['flock aa r 0-EOF', 'flock bb r 0-EOF']],
    [req(A, 'flock', 'w'), 'refused', ['flock bb r 0-EOF']],
    [req(B, 'flock', 'w'), 'ok', ['flock bb w 0-EOF']],
    [req(B, 'flock', 'w'), 'ok', ['flock bb w 0-EOF']],
    // The kinds are apart.
    [req(A, 'posix', 'w'), 'ok', ['flock bb w 0-EOF', 'posix aa w 0-EOF']],
    [req(B, 'flock', 'u'), 'ok', ['posix aa w 0-EOF']],
  ]);
});

test("a lapsed session's locks count for nothing and are dropped", () => {
  let table: HeldLock[] = [];
  table = applyLockRequest(table, req(A, 'posix', 'w'), () => true).locks;
  const whileAlive = applyLockRequest(table, req(B, 'posix', 'w', 0, 1), () => true);
  assert.not.ok(whileAlive.granted);
  assert.is(whileAlive.changed, false, 'a refusal changes nothing');
  const lapsed = applyLockRequest(table, req(B, 'posix', 'w', 0, 1), (s) => s !== 's1');
  assert.ok(lapsed.granted);
  assert.equal(show(lapsed.locks), ['posix bb w 0-1']);
});

test('F_GETLK reports the conflicting lock that starts first, never the caller own', () => {
  const table = applyLockRequest(applyLockRequest([], req(A, 'posix', 'r', 50, 60), () => true).locks, req(A2, 'posix', 'w', 10, 20), () => true).locks;
  assert.is(findConflict(table, req(B, 'posix', 'w', 0, 100), () => true)?.start, 10);
  assert.is(findConflict(table, req(B, 'posix', 'r', 0, 100), () => true)?.owner, A2.owner);
  assert.is(findConflict(table, req(A, 'posix', 'w', 50, 60), () => true), null);
  assert.is(findConflict(table, req(B, 'posix', 'u', 0, 100), () => true), null);
});

test('a full table refuses a new lock, not an unlock', () => {
  let table: HeldLock[] = [];
  for (let i = 0; i < LOCKS_PER_FILE_MAX; i++) table.push({ ...req(A, 'posix', 'w', 2 * i, 2 * i + 1), type: 'w' });
  const more = applyLockRequest(table, req(B, 'posix', 'w', 3 * LOCKS_PER_FILE_MAX, 3 * LOCKS_PER_FILE_MAX + 1), () => true);
  assert.not.ok(more.granted);
  assert.ok(!more.granted && more.conflict === null, 'refused for room, with no conflicting lock');
  assert.ok(applyLockRequest(table, req(A, 'posix', 'u', 0, 1), () => true).granted);
});

test('malformed requests are named', () => {
  const good = req(A, 'posix', 'w', 0, 10);
  assert.is(lockRequestProblem(good), null);
  assert.match(lockRequestProblem({ ...good, kind: 'x' as LockKind })!, /kind/);
  assert.match(lockRequestProblem({ ...good, type: 'x' as LockType })!, /type/);
  assert.match(lockRequestProblem({ ...good, owner: 'zz' })!, /owner/);
  assert.match(lockRequestProblem({ ...good, start: 10, end: 10 })!, /range/);
  assert.match(lockRequestProblem({ ...good, start: -1 })!, /range/);
  assert.match(lockRequestProblem({ ...good, end: LOCK_END_MAX + 2 })!, /range/);
  assert.match(lockRequestProblem({ ...good, pid: -1 })!, /pid/);
});

test('a stored table is checked field by field', () => {
  const table = applyLockRequest([], req(A, 'posix', 'w', 0, 10), () => true).locks;
  assert.equal(decodeLockTable(encodeLockTable(table)), table);
  assert.equal(decodeLockTable(null), []);
  assert.throws(() => decodeLockTable('{'), /not JSON/);
  assert.throws(() => decodeLockTable('{}'), /array/);
  assert.throws(() => decodeLockTable(JSON.stringify([{ ...table[0], start: 'x' }])), /range/);
  assert.throws(() => decodeLockTable(JSON.stringify([{ ...table[0], type: 'u' }])), /unlock/);
  assert.throws(() => decodeLockTable(JSON.stringify([{ ...table[0], session: 1 }])), /session/);
});

/** A mount's lock side against a fake cluster that records what it was asked. */
function mountLocks(answer: (api: string, body: Record<string, unknown>) => unknown) {
  const asked: Array<{ api: string; body: Record<string, unknown> }> = [];
  const hooks: string[] = [];
  const locks = new MountLocks(
    {
      locks: async (api, body) => {
        asked.push({ api, body });
        return answer(api, body);
      },
    },
    createLogger('test'),
    (fd) => ({ ino: 40 + fd, path: `/f${fd}` }),
    { beforeChange: async (fd) => void hooks.push(`flush ${fd}`), afterGrant: async (fd) => void hooks.push(`drop ${fd}`) },
  );
  return { locks, asked, hooks };
}

const OWNER = '0000000000000001';

test('the mount: one session, unlocks of nothing answered at once, data around a grant', async () => {
  const { locks, asked, hooks } = mountLocks((api, body) => (api === 'locks/session' ? { ok: true } : { granted: body.type !== 'w' || body.start !== 100 }));
  const d = new Deadline(5_000);
  // A close's unlock by an owner that never locked here: no request.
  assert.is(await locks.lock('/f1', 1, F_SETLK, { type: F_UNLCK, start: 0, len: 0, pid: 7 }, OWNER, d), undefined);
  assert.is(asked.length, 0);
  assert.is(await locks.lock('/f1', 1, F_SETLK, { type: F_WRLCK, start: 0, len: 10, pid: 7 }, OWNER, d), undefined);
  assert.equal(asked.map((a) => a.api), ['locks/session', 'locks']);
  assert.equal(asked[1]!.body, { cmd: 'set', kind: 'posix', ino: 41, path: '/f1', owner: OWNER, type: 'w', start: 0, end: 10, pid: 7, waitMs: 0, session: asked[0]!.body.session });
  assert.equal(hooks, ['flush 1', 'drop 1']);
  // Refused without waiting: EAGAIN; with F_SETLKW: one round, then "not yet".
  await locks.lock('/f1', 1, F_SETLK, { type: F_WRLCK, start: 100, len: 1, pid: 7 }, OWNER, d).then(
    () => assert.unreachable('refused'),
    (err: Error & { errno?: string }) => assert.is(err.errno, 'EAGAIN'),
  );
  assert.is(await locks.lock('/f1', 1, F_SETLKW, { type: F_WRLCK, start: 100, len: 1, pid: 7 }, OWNER, d), LOCK_WAIT);
  assert.ok((asked.at(-1)!.body.waitMs as number) > 0, 'a blocking request waits at the proxy');
  // The close's unlock now goes out, once; the next one is answered here again.
  const before = asked.length;
  await locks.lock('/f1', 1, F_SETLK, { type: F_UNLCK, start: 0, len: 0, pid: 7 }, OWNER, d);
  await locks.lock('/f1', 1, F_SETLK, { type: F_UNLCK, start: 0, len: 0, pid: 7 }, OWNER, d);
  assert.is(asked.length, before + 1);
  // flock: the same shape, whole file.
  assert.is(await locks.flock('/f2', 2, LOCK_EX | LOCK_NB, OWNER, 9, d), undefined);
  assert.equal([asked.at(-1)!.body.kind, asked.at(-1)!.body.start, asked.at(-1)!.body.end], ['flock', 0, LOCK_END_MAX]);
  assert.is(await locks.flock('/f2', 2, LOCK_UN, OWNER, 9, d), undefined);
  await locks.close(1_000);
  assert.equal(asked.at(-1)!.body, { session: asked[0]!.body.session, close: true });
  d.dispose();
});

test('the mount: a session the cluster let lapse is replaced, its locks forgotten', async () => {
  let renewals = 0;
  const { locks, asked } = mountLocks((api, body) => {
    if (api === 'locks/session') {
      if (body.create) return { ok: true };
      renewals++;
      return { ok: false };
    }
    return { granted: true };
  });
  const d = new Deadline(10_000);
  await locks.lock('/f1', 1, F_SETLK, { type: F_WRLCK, start: 0, len: 0, pid: 7 }, OWNER, d);
  const first = asked[0]!.body.session;
  const deadlineMs = Date.now() + 5_000;
  while (renewals === 0 && Date.now() < deadlineMs) await new Promise((resolve) => setTimeout(resolve, 20));
  assert.is(renewals, 1, 'renewed, and found lapsed');
  // The lock went with the session: the close's unlock needs no request now.
  const n = asked.length;
  await locks.lock('/f1', 1, F_SETLK, { type: F_UNLCK, start: 0, len: 0, pid: 7 }, OWNER, d);
  assert.is(asked.length, n);
  await locks.lock('/f1', 1, F_SETLK, { type: F_WRLCK, start: 0, len: 0, pid: 7 }, OWNER, d);
  const sessions = asked.filter((a) => a.api === 'locks/session' && a.body.create).map((a) => a.body.session);
  assert.is(sessions.length, 2);
  assert.is.not(sessions[1], first, 'a new session');
  await locks.close(1_000);
  d.dispose();
});

test.run();
