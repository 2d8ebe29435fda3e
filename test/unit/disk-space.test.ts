/*
 * A full disk, for real (docs/space.md): the op log, the request-ID journal and the space
 * guard on a small tmpfs of their own, mounted and removed by each test (needs root, as
 * the storage node does).
 *
 * - an append that finds no room fails with NO_SPACE and leaves the log valid: reopened,
 *   it holds every entry appended before, none half-written, and a later append (once
 *   there is room) continues it;
 * - the journal cuts a line it could not write whole, and a launcher record that cannot be
 *   written whole is left as it was;
 * - the guard holds its reserve, says `low` below the floor, frees the reserve on demand,
 *   is `full` until room comes back, makes the reserve again then, and counts the floor
 *   as used in statfs.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DfsError } from '../../common/errors';
import { createLogger } from '../../common/log';
import { pollUntil } from '../../cli/processes';
import { writeRecordFile } from '../../cli/record-files';
import { DedupJournal } from '../../storage/dedup-journal';
import { RESERVE_FILE, SpaceGuard, type SpaceState } from '../../storage/disk-space';
import { OpLog, type LogEntry } from '../../storage/op-log';
import { tempDir } from '../helpers/temp';

const MiB = 1024 * 1024;
const logger = createLogger('test', {});

const entry = (seq: number, bytes: number): LogEntry => ({
  header: { epoch: 1, seq, reqId: `r${seq}`, timeMs: 1000 + seq, op: { type: 'write', path: '/f', offset: 0 } },
  data: Buffer.alloc(bytes, seq % 256),
});

/** Runs `fn` in a tmpfs of `sizeMiB`, unmounted and removed afterwards. */
async function withSmallFs(sizeMiB: number, fn: (dir: string, resize: (mib: number) => void) => Promise<void>): Promise<void> {
  const root = tempDir('space');
  const dir = join(root.path, 'fs');
  mkdirSync(dir);
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', dir], { encoding: 'utf8' });
  assert.is(mounted.status, 0, `mount tmpfs: ${mounted.stderr}`);
  const resize = (mib: number) => {
    const r = spawnSync('mount', ['-o', `remount,size=${mib}m`, dir], { encoding: 'utf8' });
    assert.is(r.status, 0, `remount: ${r.stderr}`);
  };
  try {
    await fn(dir, resize);
  } finally {
    spawnSync('umount', [dir]);
    root.remove();
  }
}

test('an append that finds no room is NO_SPACE, leaves the log valid, and a later one continues it', () =>
  withSmallFs(8, async (dir) => {
    const config = { segmentBytesMax: 64 * MiB, keepOps: 100 };
    const { log } = await OpLog.open(join(dir, 'wal'), config, 0);
    writeFileSync(join(dir, 'other'), Buffer.alloc(MiB));
    let seq = 0;
    let refused: unknown = null;
    // 1 MiB at a time into 8 MiB: some fit, one does not.
    for (let i = 0; i < 20 && refused === null; i++) {
      try {
        await log.append([entry(seq + 1, MiB / 2), entry(seq + 2, MiB / 2)]);
        seq += 2;
      } catch (e) {
        refused = e;
      }
    }
    assert.ok(refused instanceof DfsError && refused.code === 'NO_SPACE', `refused with NO_SPACE, not ${String(refused)}`);
    assert.ok(seq >= 4, `some appends fit first (${seq})`);
    assert.is(log.lastSeq, seq);
    // Room again (a file someone else held goes): the next append continues the log.
    rmSync(join(dir, 'other'));
    const small = entry(seq + 1, 100);
    await log.append([small]);
    await log.close();
    const { log: again, entries } = await OpLog.open(join(dir, 'wal'), config, 0);
    assert.is(again.lastSeq, seq + 1, 'every entry appended is there, the refused ones are not');
    assert.equal(
      entries.map((e) => e.header.seq),
      Array.from({ length: seq + 1 }, (_, i) => i + 1),
    );
    assert.ok(entries[seq]!.data.equals(small.data));
    await again.close();
  }));

test('a journal line the disk cannot take whole is cut away, and the next one starts clean', () =>
  withSmallFs(1, async (dir) => {
    const journal = DedupJournal.open(dir, 10_000, 0);
    // Fill the file system but for a few bytes, then write a line longer than that.
    let fill = 0;
    try {
      for (;;) {
        writeFileSync(join(dir, `fill${fill}`), Buffer.alloc(64 * 1024));
        fill++;
      }
    } catch (e) {
      assert.is((e as NodeJS.ErrnoException).code, 'ENOSPC');
    }
    let failed = false;
    try {
      for (let i = 1; i < 10_000; i++) journal.record(`req-${'x'.repeat(2000)}-${i}`, { seq: i });
    } catch (e) {
      failed = (e as NodeJS.ErrnoException).code === 'ENOSPC';
    }
    assert.ok(failed, 'the journal met ENOSPC');
    const before = readFileSync(join(dir, 'dedup.journal'), 'utf8');
    assert.ok(before === '' || before.endsWith('\n'), 'no line is left half-written');
    rmSync(join(dir, 'fill0'));
    journal.record('after', { seq: 99_999 });
    journal.close();
    const lines = readFileSync(join(dir, 'dedup.journal'), 'utf8').trim().split('\n');
    for (const line of lines) JSON.parse(line); // every line whole
    assert.equal(JSON.parse(lines[lines.length - 1]!), ['after', { seq: 99_999 }]);
  }));

test('a record write the disk cannot take leaves the record as it was, and no temporary file', () =>
  withSmallFs(1, async (dir) => {
    const file = join(dir, 'cluster.json');
    writeRecordFile(file, '{"v":1}');
    let failed = '';
    try {
      writeRecordFile(file, JSON.stringify({ v: 2, pad: 'x'.repeat(2 * MiB) }));
    } catch (e) {
      failed = (e as NodeJS.ErrnoException).code ?? '';
    }
    assert.is(failed, 'ENOSPC');
    assert.is(readFileSync(file, 'utf8'), '{"v":1}');
    assert.equal(readdirSync(dir).sort(), ['cluster.json']);
  }));

test('the space guard: reserve held, low below the floor, reserve freed on demand, full until room comes back', () =>
  withSmallFs(32, async (dir, resize) => {
    const states: SpaceState[] = [];
    const tights: boolean[] = [];
    const guard = new SpaceGuard(dir, { reserveBytes: 4 * MiB, floorBytes: 8 * MiB, pollMs: 20 }, logger, (s) => states.push(s), (t) => tights.push(t));
    await guard.start();
    // A poll the timer began before the change may still be under way: wait it out, then
    // read afresh.
    const freshPoll = async () => {
      await guard.poll();
      await guard.poll();
    };
    try {
      assert.is(guard.state, 'ok');
      assert.is(statSync(join(dir, RESERVE_FILE)).size, 4 * MiB, 'the reserve is written');
      // statfs counts the floor as used (the reserve is a file, so it is used already).
      const raw = { bsize: 4096, blocks: 8192, bfree: 6000, bavail: 6000, files: 100, ffree: 50, namemax: 255 };
      assert.is(guard.statfs(raw).bavail, 6000 - 2048);
      assert.is(guard.statfs({ ...raw, bavail: 100, bfree: 100 }).bavail, 0);

      assert.not.ok(guard.tight);
      // Within two floors of full: the log is tight, and nothing is refused yet.
      writeFileSync(join(dir, 'hog'), Buffer.alloc(14 * MiB));
      await freshPoll();
      assert.equal([guard.state, guard.tight, tights[tights.length - 1]], ['ok', true, true]);
      // Someone fills the file system to under the floor: low.
      writeFileSync(join(dir, 'hog'), Buffer.alloc(22 * MiB));
      await freshPoll();
      assert.is(guard.state, 'low');
      // Ops in flight count against the floor too.
      rmSync(join(dir, 'hog'));
      await freshPoll();
      assert.is(guard.state, 'ok');
      guard.noteAdmitted(4 * MiB);
      assert.is(guard.state, 'low', 'a 4 MiB op in flight counts six times against 28 MiB free');
      guard.noteSettled(4 * MiB);
      assert.is(guard.state, 'ok');

      // ENOSPC: the reserve goes, once.
      assert.ok(await guard.release());
      assert.is(statSync(join(dir, RESERVE_FILE)).size, 0);
      assert.not.ok(await guard.release(), 'nothing left to release');
      guard.markFull();
      assert.is(guard.state, 'full');
      // Full until a poll finds at least the floor free; the reserve is made again then.
      writeFileSync(join(dir, 'hog'), Buffer.alloc(26 * MiB));
      await freshPoll();
      assert.is(guard.state, 'full');
      resize(64);
      const back = await pollUntil(() => (guard.state === 'ok' ? true : undefined), 2000, 20);
      assert.ok(back, `ok again once the file system grew (state ${guard.state})`);
      assert.is(statSync(join(dir, RESERVE_FILE)).size, 4 * MiB, 'the reserve is made again');
      assert.equal([...new Set(states)].sort(), ['full', 'low', 'ok']);
    } finally {
      guard.stop();
    }
  }));

test.run();
