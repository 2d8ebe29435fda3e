/*
 * The retry helper (common/retry.ts) on a fake clock: each test scripts what the attempts
 * answer and checks the waits taken, the attempts made and how the loop ended.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backoffMs, retry, validateRetryPolicy, type AttemptResult, type RetryPolicy } from '../../common/retry';

const policy: RetryPolicy = { attemptsMax: 6, backoffMsMin: 50, backoffMsMax: 300, backoffFactor: 2, jitter: 0, waitPastDeadline: 'clamp' };

/** A fake clock that sleeping advances, and a log of the waits. */
function fakeTime(startMs = 1_000) {
  let nowMs = startMs;
  const waits: number[] = [];
  return {
    clock: () => nowMs,
    sleep: async (ms: number) => {
      waits.push(ms);
      nowMs += ms;
    },
    advance: (ms: number) => (nowMs += ms),
    waits,
  };
}

const fail = (error: unknown = 'no', backoff?: boolean): AttemptResult<never> => (backoff === undefined ? { done: false, error } : { done: false, error, backoff });

test('the first attempt that is done ends the loop with its value; no wait before the first', async () => {
  const time = fakeTime();
  const seen: number[] = [];
  const outcome = await retry((index) => {
    seen.push(index);
    return index < 2 ? fail() : { done: true, value: 'yes' };
  }, { policy, deadlineAtMs: Infinity, clock: time.clock, sleep: time.sleep });
  assert.equal(outcome, { ok: true, value: 'yes', attempts: 3 });
  assert.equal(seen, [0, 1, 2]);
  assert.equal(time.waits, [50, 100]);
});

test('waits grow by the factor up to the bound, and the attempts bound stops the loop with the last error', async () => {
  const time = fakeTime();
  const outcome = await retry((index) => fail(`error ${index}`), { policy, deadlineAtMs: Infinity, clock: time.clock, sleep: time.sleep });
  assert.equal(outcome, { ok: false, stoppedBy: 'attempts', lastError: 'error 5', attempts: 6 });
  assert.equal(time.waits, [50, 100, 200, 300, 300]);
});

test('jitter shortens a wait by up to its fraction, at random', async () => {
  const time = fakeTime();
  const randoms = [0, 0.5, 0.999];
  await retry(() => fail(), {
    policy: { ...policy, attemptsMax: 4, jitter: 0.5 },
    deadlineAtMs: Infinity,
    clock: time.clock,
    sleep: time.sleep,
    random: () => randoms.shift()!,
  });
  assert.equal(time.waits.map((ms) => Math.round(ms * 1000) / 1000), [50, 75, 100.1]);
  for (const [k, ms] of time.waits.entries()) assert.ok(ms > backoffMs(policy, k) / 2 && ms <= backoffMs(policy, k));
});

test('backoff: false retries at once, and does not count as a wait', async () => {
  const time = fakeTime();
  await retry((index) => fail('x', index % 2 === 0 ? false : true), { policy, deadlineAtMs: Infinity, clock: time.clock, sleep: time.sleep });
  // Attempts 0, 2, 4 retry at once; 1 and 3 wait the first and second backoff.
  assert.equal(time.waits, [50, 100]);
});

test('clamp: a wait that would pass the deadline ends at it, and one last attempt looks then', async () => {
  const time = fakeTime(0);
  const at: number[] = [];
  const outcome = await retry(() => {
    at.push(time.clock());
    return fail();
  }, { policy: { ...policy, attemptsMax: 100 }, deadlineAtMs: 120, clock: time.clock, sleep: time.sleep });
  assert.equal(at, [0, 50, 120]);
  assert.equal(outcome, { ok: false, stoppedBy: 'deadline', lastError: 'no', attempts: 3 });
});

test('stop: a wait that would reach the deadline ends the loop before it', async () => {
  const time = fakeTime(0);
  const at: number[] = [];
  const outcome = await retry(() => {
    at.push(time.clock());
    return fail();
  }, { policy: { ...policy, attemptsMax: 100, waitPastDeadline: 'stop' }, deadlineAtMs: 120, clock: time.clock, sleep: time.sleep });
  assert.equal(at, [0, 50]);
  assert.equal(time.waits, [50]);
  assert.equal(outcome, { ok: false, stoppedBy: 'deadline', lastError: 'no', attempts: 2 });
});

test('an attempt that ends past the deadline is the last, even an immediate retry', async () => {
  const time = fakeTime(0);
  const outcome = await retry(() => {
    time.advance(200);
    return fail('slow', false);
  }, { policy, deadlineAtMs: 100, clock: time.clock, sleep: time.sleep });
  assert.equal(outcome, { ok: false, stoppedBy: 'deadline', lastError: 'slow', attempts: 1 });
});

test('an attempt that throws ends the loop with its error, not retried', async () => {
  const time = fakeTime();
  let calls = 0;
  let thrown: unknown = null;
  try {
    await retry(() => {
      calls++;
      throw new Error('fatal');
    }, { policy, deadlineAtMs: Infinity, clock: time.clock, sleep: time.sleep });
  } catch (error) {
    thrown = error;
  }
  assert.match(String(thrown), 'fatal');
  assert.is(calls, 1);
});

test('async attempts and the real clock: a condition met on the third look', async () => {
  let looks = 0;
  const outcome = await retry(async () => (++looks === 3 ? { done: true, value: looks } : fail()), {
    policy: { ...policy, backoffMsMin: 1, backoffMsMax: 1 },
    deadlineAtMs: Date.now() + 5_000,
  });
  assert.equal(outcome, { ok: true, value: 3, attempts: 3 });
});

test('a bad policy is refused', () => {
  assert.throws(() => validateRetryPolicy({ ...policy, attemptsMax: 0 }), /attemptsMax/);
  assert.throws(() => validateRetryPolicy({ ...policy, backoffMsMax: 10 }), /backoffMsMax/);
  assert.throws(() => validateRetryPolicy({ ...policy, backoffFactor: 0.5 }), /backoffFactor/);
  assert.throws(() => validateRetryPolicy({ ...policy, jitter: 2 }), /jitter/);
});

test.run();
