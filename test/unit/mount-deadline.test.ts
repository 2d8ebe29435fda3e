/*
 * raceDeadline (mount/deadline.ts): the race gives up at the deadline, and the work it gave
 * up on may fail later without a rejection that nobody handles. A dfs-mount died of one
 * during a partition (e2e/partitions-b): a read's deadline ran out while its handle's writes
 * were committed, raceDeadline answered TIMEOUT at once without waiting on the read-ahead
 * fetch it had been handed, and that fetch timed out 10 s later into Node's default for an
 * unhandled rejection, which ends the process.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DfsError } from '../../common/errors';
import { Deadline, raceDeadline } from '../../mount/deadline';

/** Runs `fn`, then lets a few turns of the event loop pass, and gives the unhandled
 * rejections Node reported meanwhile. */
async function unhandledDuring(fn: () => Promise<void>): Promise<unknown[]> {
  const seen: unknown[] = [];
  const listener = (reason: unknown) => void seen.push(reason);
  process.on('unhandledRejection', listener);
  try {
    await fn();
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
  } finally {
    process.off('unhandledRejection', listener);
  }
  return seen;
}

/** A promise and the means to reject it later. */
function later<T>(): { p: Promise<T>; reject: (e: unknown) => void } {
  let reject!: (e: unknown) => void;
  const p = new Promise<T>((_, r) => (reject = r));
  return { p, reject };
}

test('a deadline already passed answers TIMEOUT, and the work failing later is no unhandled rejection', async () => {
  const seen = await unhandledDuring(async () => {
    const work = later<Buffer>();
    const passed = new Deadline(0);
    const err = await raceDeadline(work.p, passed).then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof DfsError && err.code === 'TIMEOUT', `answered ${String(err)}`);
    work.reject(new DfsError('TIMEOUT', 'the fetch gave up'));
  });
  assert.equal(seen, []);
});

test('a deadline that passes during the race answers TIMEOUT, and the work failing later is no unhandled rejection', async () => {
  const seen = await unhandledDuring(async () => {
    const work = later<Buffer>();
    // raceDeadline's timer does not keep the process alive (unref): this one does.
    const alive = setTimeout(() => undefined, 10_000);
    const err = await raceDeadline(work.p, new Deadline(5)).then(
      () => null,
      (e: unknown) => e,
    );
    clearTimeout(alive);
    assert.ok(err instanceof DfsError && err.code === 'TIMEOUT');
    work.reject(new Error('late'));
  });
  assert.equal(seen, []);
});

test('work that ends first gives its value or its error', async () => {
  assert.is(await raceDeadline(Promise.resolve(7), new Deadline(10_000)), 7);
  const err = await raceDeadline(Promise.reject(new Error('no')), new Deadline(10_000)).then(
    () => null,
    (e: unknown) => (e as Error).message,
  );
  assert.is(err, 'no');
});

test.run();
