/* The write-ahead log: appends, recovery from a torn tail, refusal of damage, trimming. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, readdirSync, truncateSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OpLog, type LogEntry } from '../../storage/op-log';
import { tempDir } from '../helpers/temp';

const entry = (seq: number, bytes = 10): LogEntry => ({
  header: { epoch: 1, seq, reqId: `r${seq}`, timeMs: 1000 + seq, op: { type: 'write', path: '/f', offset: seq } },
  data: Buffer.alloc(bytes, seq % 256),
});

test('appended entries come back after a reopen, from the applied point', async () => {
  const dir = tempDir('wal');
  try {
    const { log } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1), entry(2)]);
    await log.append([entry(3)]);
    await log.close();
    const { log: again, entries } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 1);
    assert.is(again.lastSeq, 3);
    assert.equal(entries.map((e) => e.header.seq), [2, 3]);
    assert.ok(entries[1]!.data.equals(entry(3).data));
    await again.close();
  } finally {
    dir.remove();
  }
});

test('a torn last record is cut away and the log goes on from before it', async () => {
  const dir = tempDir('wal');
  try {
    const { log } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1), entry(2, 1000)]);
    await log.close();
    const [seg] = readdirSync(dir.path);
    const file = join(dir.path, seg!);
    truncateSync(file, statSync(file).size - 100);
    const { log: again, entries } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.is(again.lastSeq, 1);
    assert.equal(entries.map((e) => e.header.seq), [1]);
    await again.append([entry(2)]);
    await again.close();
    const { entries: after } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.equal(after.map((e) => e.header.seq), [1, 2]);
  } finally {
    dir.remove();
  }
});

test('a damaged record in the middle stops the node from starting', async () => {
  const dir = tempDir('wal');
  try {
    const { log } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1, 100), entry(2, 100)]);
    await log.close();
    const [seg] = readdirSync(dir.path);
    const file = join(dir.path, seg!);
    const buf = readFileSync(file);
    buf[60] ^= 0xff;
    writeFileSync(file, buf);
    let failed = false;
    try {
      await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    } catch (e) {
      failed = /damaged/.test((e as Error).message);
    }
    assert.ok(failed, 'expected a damaged-log error');
  } finally {
    dir.remove();
  }
});

test('segments roll over and old ones are trimmed outside the keep window', async () => {
  const dir = tempDir('wal');
  try {
    const { log } = await OpLog.open(dir.path, { segmentBytesMax: 2000, keepOps: 5 }, 0);
    for (let seq = 1; seq <= 40; seq++) await log.append([entry(seq, 500)]);
    const before = readdirSync(dir.path).length;
    assert.ok(before > 5, `expected several segments, got ${before}`);
    await log.trim(40);
    const left = readdirSync(dir.path).sort();
    assert.ok(left.length < before);
    const firstKept = Number(left[0]!.slice(0, 20));
    assert.ok(firstKept <= 35, `ops after ${40 - 5} must still be in the log (first segment starts at ${firstKept})`);
    await log.close();
    const { entries } = await OpLog.open(dir.path, { segmentBytesMax: 2000, keepOps: 5 }, 35);
    assert.equal(entries.map((e) => e.header.seq), [36, 37, 38, 39, 40]);
  } finally {
    dir.remove();
  }
});

test('an append that skips a sequence ID is a programmer error', async () => {
  const dir = tempDir('wal');
  try {
    const { log } = await OpLog.open(dir.path, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1)]);
    let threw = false;
    try {
      await log.append([entry(3)]);
    } catch {
      threw = true;
    }
    assert.ok(threw);
    await log.close();
    appendFileSync(join(dir.path, 'not-a-segment.txt'), 'ignored');
  } finally {
    dir.remove();
  }
});

test.run();
