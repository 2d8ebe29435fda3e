/* The write-ahead log: appends, recovery from a torn tail, refusal of damage, trimming,
 * reads for a lagging peer, and the reset a full sync does. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, mkdirSync, readdirSync, truncateSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OpLog, type LogEntry } from '../../storage/op-log';
import { withTempDir } from '../helpers/temp';

const entry = (seq: number, bytes = 10, epoch = 1): LogEntry => ({
  header: { epoch, seq, reqId: `r${seq}`, timeMs: 1000 + seq, op: { type: 'write', path: '/f', offset: seq } },
  data: Buffer.alloc(bytes, seq % 256),
});

test('appended entries come back after a reopen, from the applied point', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1), entry(2)]);
    await log.append([entry(3)]);
    await log.close();
    const { log: again, entries } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 1);
    assert.is(again.lastSeq, 3);
    assert.equal(entries.map((e) => e.header.seq), [2, 3]);
    assert.ok(entries[1]!.data.equals(entry(3).data));
    await again.close();
  }));

test('a torn last record is cut away and the log goes on from before it', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1), entry(2, 1000)]);
    await log.close();
    const [seg] = readdirSync(dir);
    const file = join(dir, seg!);
    truncateSync(file, statSync(file).size - 100);
    const { log: again, entries } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.is(again.lastSeq, 1);
    assert.equal(entries.map((e) => e.header.seq), [1]);
    await again.append([entry(2)]);
    await again.close();
    const { entries: after } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.equal(after.map((e) => e.header.seq), [1, 2]);
  }));

test('a damaged record in the middle stops the node from starting', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1, 100), entry(2, 100)]);
    await log.close();
    const [seg] = readdirSync(dir);
    const file = join(dir, seg!);
    const buf = readFileSync(file);
    buf[60] ^= 0xff;
    writeFileSync(file, buf);
    let failed = false;
    try {
      await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    } catch (e) {
      failed = /damaged/.test((e as Error).message);
    }
    assert.ok(failed, 'expected a damaged-log error');
  }));

test('segments roll over and old ones are trimmed outside the keep window', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 2000, keepOps: 5 }, 0);
    for (let seq = 1; seq <= 40; seq++) await log.append([entry(seq, 500)]);
    const before = readdirSync(dir).length;
    assert.ok(before > 5, `expected several segments, got ${before}`);
    await log.trim(40);
    const left = readdirSync(dir).sort();
    assert.ok(left.length < before);
    const firstKept = Number(left[0]!.slice(0, 20));
    assert.ok(firstKept <= 35, `ops after ${40 - 5} must still be in the log (first segment starts at ${firstKept})`);
    await log.close();
    const { entries } = await OpLog.open(dir, { segmentBytesMax: 2000, keepOps: 5 }, 35);
    assert.equal(entries.map((e) => e.header.seq), [36, 37, 38, 39, 40]);
  }));

test('an append that skips a sequence ID is a programmer error', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1)]);
    let threw = false;
    try {
      await log.append([entry(3)]);
    } catch {
      threw = true;
    }
    assert.ok(threw);
    await log.close();
    appendFileSync(join(dir, 'not-a-segment.txt'), 'ignored');
  }));

test('a peer is fed from any point the log still holds, across segments, before and after a reopen', () =>
  withTempDir('wal', async (dir) => {
    const config = { segmentBytesMax: 3000, keepOps: 150 };
    const { log } = await OpLog.open(dir, config, 0);
    for (let seq = 1; seq <= 400; seq += 4) await log.append([entry(seq, 50), entry(seq + 1, 50), entry(seq + 2, 50), entry(seq + 3, 50)]);
    assert.ok(readdirSync(dir).length > 5, 'several segments');
    const check = async (l: OpLog, from: number, bytesMax: number, want: number[]) => {
      const got = await l.read(from, bytesMax);
      assert.equal(got?.map((e) => e.header.seq), want, `read from ${from}`);
      for (const e of got ?? []) assert.ok(e.data.equals(entry(e.header.seq, 50).data));
    };
    await check(log, 1, 200, [1, 2, 3, 4]);
    await check(log, 63, 150, [63, 64, 65]);
    await check(log, 130, 50 * 40, Array.from({ length: 40 }, (_, i) => 130 + i));
    await check(log, 399, 10_000, [399, 400]);
    await check(log, 401, 10_000, []);
    await log.trim(400);
    assert.is(await log.read(1, 100), null, 'trimmed away: a full sync is needed');
    assert.ok(log.firstSeq > 1 && log.firstSeq <= 250, `first ${log.firstSeq}`);
    await check(log, 260, 100, [260, 261]);
    await log.close();
    const { log: again } = await OpLog.open(dir, config, 400);
    await check(again, 260, 100, [260, 261]);
    assert.is(await again.read(again.firstSeq - 1, 100), null);
    await again.close();
  }));

test('a full sync empties the log; it goes on from the copied point, and after a reopen ends there', () =>
  withTempDir('wal', async (dir) => {
    const config = { segmentBytesMax: 1 << 20, keepOps: 100 };
    const { log } = await OpLog.open(dir, config, 0);
    await log.append([entry(1), entry(2)]);
    await log.reset(50);
    assert.equal(readdirSync(dir), []);
    assert.is(log.lastSeq, 50);
    assert.is(await log.read(2, 100), null);
    let error: unknown = null;
    await log.append([entry(52)]).catch((e: unknown) => (error = e));
    assert.match(String(error), /append gap/);
    await log.append([entry(51)]);
    await log.close();
    const { log: again, entries } = await OpLog.open(dir, config, 50);
    assert.equal([again.lastSeq, entries.map((e) => e.header.seq)], [51, [51]]);
    await again.close();
    await withTempDir('wal-empty', async (empty) => {
      const { log: fresh } = await OpLog.open(empty, config, 70);
      assert.equal([fresh.lastSeq, fresh.firstSeq, await fresh.read(70, 100)], [70, 71, null]);
      await fresh.close();
    });
  }));

test('a cut drops the tail across segments, durably, and the log goes on from the cut with its epochs', () =>
  withTempDir('wal', async (dir) => {
    const config = { segmentBytesMax: 300, keepOps: 100 };
    const { log } = await OpLog.open(dir, config, 0);
    for (let seq = 1; seq <= 12; seq++) await log.append([entry(seq, 50, seq <= 5 ? 1 : 2)]);
    assert.ok(readdirSync(dir).length >= 3, 'the entries span several segments');
    assert.equal(log.epochRuns(), [{ from: 1, epoch: 1 }, { from: 6, epoch: 2 }]);
    await log.truncateAfter(4);
    assert.is(log.lastSeq, 4);
    assert.equal(log.epochRuns(), [{ from: 1, epoch: 1 }]);
    assert.equal((await log.read(1, 1 << 20))!.map((e) => e.header.seq), [1, 2, 3, 4]);
    await log.append([entry(5, 50, 3), entry(6, 50, 3)]);
    await log.close();
    const { log: again, entries } = await OpLog.open(dir, config, 0);
    assert.equal(entries.map((e) => [e.header.seq, e.header.epoch]), [[1, 1], [2, 1], [3, 1], [4, 1], [5, 3], [6, 3]]);
    assert.equal(again.epochRuns(), [{ from: 1, epoch: 1 }, { from: 5, epoch: 3 }]);
    // A cut at a segment's first entry removes that segment whole; a cut at the end is nothing.
    await again.truncateAfter(6);
    assert.is(again.lastSeq, 6);
    await again.close();
  }));

test('a cut at every point, segment boundaries included, reopens to exactly the entries before it', async () => {
  const config = { segmentBytesMax: 300, keepOps: 100 };
  for (let cut = 1; cut < 12; cut++) {
    await withTempDir('wal', async (dir) => {
      const { log } = await OpLog.open(dir, config, 0);
      for (let seq = 1; seq <= 12; seq++) await log.append([entry(seq, 50)]);
      await log.truncateAfter(cut);
      await log.close();
      const { log: again, entries } = await OpLog.open(dir, config, 0);
      assert.equal(entries.map((e) => e.header.seq), Array.from({ length: cut }, (_, i) => i + 1), `cut after ${cut}`);
      await again.append([entry(cut + 1)]);
      await again.close();
    });
  }
});

test.run();

/* Direct I/O (O_DIRECT where the file system takes it): appends of every size across block
 * boundaries, the padding a crash leaves, and the buffered path beside it. */
const sized = (seq: number) => entry(seq, (seq * 977) % 9000);

for (const direct of [true, false]) {
  test(`appends of odd sizes across blocks and segments come back whole (direct: ${direct})`, () =>
    withTempDir('wal', async (dir) => {
      const config = { segmentBytesMax: 64 * 1024, keepOps: 1000, direct };
      const { log } = await OpLog.open(dir, config, 0);
      for (let seq = 1; seq <= 120; ) {
        const batch = [sized(seq)];
        if (seq % 3 === 0) batch.push(sized(seq + 1), sized(seq + 2));
        await log.append(batch);
        seq += batch.length;
      }
      const mid = await log.read(50, 1 << 30);
      assert.equal(mid?.map((e) => e.header.seq), Array.from({ length: log.lastSeq - 49 }, (_, i) => 50 + i));
      await log.close();
      assert.ok(readdirSync(dir).filter((n) => n.endsWith('.wal')).length > 3, 'several segments');
      assert.not.ok(readdirSync(dir).includes('.direct-probe'), 'the probe file is gone');
      const { log: again, entries } = await OpLog.open(dir, config, 0);
      assert.is(entries.length, again.lastSeq);
      for (const e of entries) assert.ok(e.data.equals(sized(e.header.seq).data), `entry ${e.header.seq}`);
      await again.close();
    }));
}

test('a crash after a direct append leaves zero padding, which recovery cuts away', () =>
  withTempDir('wal', async (dir) => {
    const { log } = await OpLog.open(dir, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    await log.append([entry(1, 100)]);
    await log.append([entry(2, 5000)]);
    const [seg] = readdirSync(dir).filter((n) => n.endsWith('.wal'));
    // What a crash leaves is the segment as written, not cut back by close: a copy of it
    // now. On a file system without O_DIRECT there is nothing to pad: pad it by hand.
    const image = readFileSync(join(dir, seg!));
    await log.close();
    const crashed = join(dir, 'crashed');
    mkdirSync(crashed);
    const file = join(crashed, seg!);
    writeFileSync(file, image.length % 4096 === 0 ? image : Buffer.concat([image, Buffer.alloc(4096 - (image.length % 4096))]));
    const framesEnd = statSync(join(dir, seg!)).size;
    assert.ok(statSync(file).size > framesEnd, 'padding past the frames');
    const { log: again, entries } = await OpLog.open(crashed, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.equal(entries.map((e) => e.header.seq), [1, 2]);
    assert.is(statSync(file).size, framesEnd, 'cut back to the frames');
    await again.append([entry(3, 300)]);
    await again.close();
    const { log: last, entries: after } = await OpLog.open(crashed, { segmentBytesMax: 1 << 20, keepOps: 100 }, 0);
    assert.equal(after.map((e) => e.header.seq), [1, 2, 3]);
    assert.ok(after[1]!.data.equals(entry(2, 5000).data));
    await last.close();
  }));
