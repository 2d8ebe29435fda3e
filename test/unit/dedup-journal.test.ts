/* The request-ID table on disk (storage/dedup-journal.ts): what a restart loads back. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DEDUP_JOURNAL_FILE, DedupJournal } from '../../storage/dedup-journal';
import { withTempDir } from '../helpers/temp';

const lines = (dir: string) => readFileSync(join(dir, DEDUP_JOURNAL_FILE), 'utf8').split('\n').filter((l) => l !== '').length;

test('recorded answers come back after a reopen, in apply order, up to the applied point', () =>
  withTempDir('dedup', (dir) => {
    const j = DedupJournal.open(dir, 10, 0);
    assert.equal(j.loaded, []);
    j.record('a', { seq: 1 });
    j.record('b', { seq: 2, errno: 'EEXIST' });
    j.record('c', { seq: 3 });
    j.close();
    // The brick's mark says 2: the op at 3 is replayed, so its line must not answer for it.
    const again = DedupJournal.open(dir, 10, 2);
    assert.equal(again.loaded, [
      ['a', { seq: 1 }],
      ['b', { seq: 2, errno: 'EEXIST' }],
    ]);
    assert.is(lines(dir), 2, 'the dropped line is gone from the file too');
    again.close();
  }));

test('a line torn by a crash is dropped, and appending goes on cleanly after it', () =>
  withTempDir('dedup', (dir) => {
    const j = DedupJournal.open(dir, 10, 0);
    j.record('a', { seq: 1 });
    j.close();
    appendFileSync(join(dir, DEDUP_JOURNAL_FILE), '["b",{"se');
    const again = DedupJournal.open(dir, 10, 5);
    assert.equal(again.loaded, [['a', { seq: 1 }]]);
    again.record('c', { seq: 3 });
    again.close();
    assert.equal(DedupJournal.open(dir, 10, 5).loaded, [
      ['a', { seq: 1 }],
      ['c', { seq: 3 }],
    ]);
  }));

test('the journal is rewritten with the newest entries once it holds twice the table', () =>
  withTempDir('dedup', (dir) => {
    const j = DedupJournal.open(dir, 3, 0);
    const table: Array<[string, { seq: number }]> = [];
    for (let seq = 1; seq <= 6; seq++) {
      j.record(`r${seq}`, { seq });
      table.push([`r${seq}`, { seq }]);
      j.compact(() => table.slice(-3));
    }
    assert.is(lines(dir), 3, 'compacted at six lines to the newest three');
    j.close();
    assert.equal(
      DedupJournal.open(dir, 3, 6).loaded.map(([id]) => id),
      ['r4', 'r5', 'r6'],
    );
  }));

test('a full sync replaces the table whole', () =>
  withTempDir('dedup', (dir) => {
    const j = DedupJournal.open(dir, 10, 0);
    j.record('old', { seq: 1 });
    j.rewrite([['copied', { seq: 40 }]]);
    j.record('next', { seq: 41 });
    j.close();
    assert.equal(DedupJournal.open(dir, 10, 41).loaded.map(([id]) => id), ['copied', 'next']);
  }));

test.run();
