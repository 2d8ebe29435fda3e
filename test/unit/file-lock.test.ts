/*
 * The cluster.json lock (cli/file-lock.ts): what a lock file left behind looks like, and
 * that each such file is broken rather than waited on, while a live holder's is not.
 */
import { existsSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LOCK_UNWRITTEN_MS, withFileLock } from '../../cli/file-lock';
import { processStartTime } from '../../cli/processes';

let dir = '';
test.before.each(() => {
  dir = mkdtempSync(join(tmpdir(), 'dfs-file-lock-'));
});
test.after.each(() => rmSync(dir, { recursive: true, force: true }));

const lockIn = () => join(dir, 'cluster.json.lock');

/** Sets a file's times `ageMs` into the past. */
function age(file: string, ageMs: number): void {
  const then = new Date(Date.now() - ageMs);
  utimesSync(file, then, then);
}

test('a free lock is taken, held while the critical section runs, and released after', async () => {
  const lockFile = lockIn();
  const seen = await withFileLock(lockFile, () => existsSync(lockFile));
  assert.is(seen, true);
  assert.is(existsSync(lockFile), false);
});

test('released after a critical section that throws', async () => {
  const lockFile = lockIn();
  let thrown: unknown = null;
  try {
    await withFileLock(lockFile, () => {
      throw new Error('boom');
    });
  } catch (error) {
    thrown = error;
  }
  assert.match(String(thrown), 'boom');
  assert.is(existsSync(lockFile), false);
});

test('a lock whose holder no longer runs is broken', async () => {
  const lockFile = lockIn();
  // No process has pid 2^22 + 1 (above Linux's pid_max).
  writeFileSync(lockFile, `4194305 12345`);
  assert.is(await withFileLock(lockFile, () => 'ran', 2_000), 'ran');
});

test('an empty lock file left behind (a full disk, a crash before the write) is broken once old', async () => {
  const lockFile = lockIn();
  writeFileSync(lockFile, '');
  age(lockFile, LOCK_UNWRITTEN_MS + 1_000);
  assert.is(await withFileLock(lockFile, () => 'ran', 2_000), 'ran');
});

test('a lock file that names no holder is broken once old, too', async () => {
  const lockFile = lockIn();
  writeFileSync(lockFile, 'garbage\0\0');
  age(lockFile, LOCK_UNWRITTEN_MS + 1_000);
  assert.is(await withFileLock(lockFile, () => 'ran', 2_000), 'ran');
});

test('a fresh empty lock file is a holder between its create and its write: waited on', async () => {
  const lockFile = lockIn();
  writeFileSync(lockFile, '');
  let thrown: unknown = null;
  try {
    await withFileLock(lockFile, () => 'ran', 300);
  } catch (error) {
    thrown = error;
  }
  assert.match(String(thrown), 'for more than 300 ms');
});

test('a live holder is waited on, and outwaiting the bound is an error naming it', async () => {
  const lockFile = lockIn();
  writeFileSync(lockFile, `${process.pid} ${processStartTime(process.pid)}`);
  age(lockFile, LOCK_UNWRITTEN_MS + 1_000);
  let thrown: unknown = null;
  try {
    await withFileLock(lockFile, () => 'ran', 300);
  } catch (error) {
    thrown = error;
  }
  assert.match(String(thrown), `held by pid ${process.pid}`);
  assert.is(existsSync(lockFile), true, 'a live holder keeps its lock');
});

test.run();
