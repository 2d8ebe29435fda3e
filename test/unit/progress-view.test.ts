/* The command line's progress (cli/progress-view.ts) as plain lines, the text `dfs status`
 * prints, the rate window, and the NDJSON reader the progress travels through. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ndjsonValues } from '../../common/ndjson';
import { RateWindow } from '../../common/rate-window';
import { formatDuration, progressFraction, progressText, ProgressView } from '../../cli/progress-view';

const MIB = 1024 * 1024;

test('the progress line: share, bytes, entries, rate and ETA; unknowns say so', () => {
  assert.is(progressText({ entries: 30, totalEntries: 66, bytes: 460 * MIB, totalBytes: 1024 * MIB, bytesPerSecond: 76 * MIB }), '44% 460.0 MiB of 1.0 GiB, 30 of 66 entries, 76.0 MiB/s, ETA 7s');
  assert.is(progressText({ entries: 3, totalEntries: null, bytes: 100, totalBytes: null }), '?% 100 B of ?, 3 of ? entries, 0 B/s, ETA ?');
  assert.is(progressText({ entries: 66, totalEntries: 66, bytes: 5, totalBytes: 5, bytesPerSecond: 0 }), '100% 5 B of 5 B, 66 of 66 entries, 0 B/s, ETA 0s');
  // No bytes to copy (empty files only): the share follows the entries.
  assert.is(progressFraction({ entries: 5, totalEntries: 20, bytes: 0, totalBytes: 0 }), 0.25);
  assert.is(progressFraction({ entries: 0, totalEntries: 0, bytes: 0, totalBytes: 0 }), 1);
  assert.is(formatDuration(7.4), '7s');
  assert.is(formatDuration(185), '3m05s');
  assert.is(formatDuration(3720), '1h02m');
});

test('not a terminal: a line each tenth, none before the totals, one closing 100% line', () => {
  const lines: string[] = [];
  const view = new ProgressView('verify', { write: (text: string) => lines.push(text), isTTY: false });
  view.update({ entries: 1, totalEntries: null, bytes: 10, totalBytes: null });
  assert.equal(lines, [], 'nothing to measure against yet');
  const total = 1000;
  for (let done = 0; done <= total; done += 25) view.update({ entries: done / 25, totalEntries: 40, bytes: done, totalBytes: total });
  view.finish({ entries: 40, totalEntries: 40, bytes: total, totalBytes: total });
  view.update({ entries: 40, totalEntries: 40, bytes: total, totalBytes: total });
  const shares = lines.map((l) => Number(/^verify: (\d+)% /.exec(l)![1]));
  assert.equal(shares, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
  assert.match(lines[lines.length - 1]!, /^verify: 100% 1000 B of 1000 B, 40 of 40 entries, .* \(done\)\n$/);
  assert.ok(lines.every((l) => !l.includes('\x1b')));
});

test('the rate over a window of samples', () => {
  const w = new RateWindow(5000);
  assert.is(w.note(0, 0), 0);
  assert.is(w.note(1000, 100), 100);
  assert.is(w.note(2000, 300), 150);
  // Samples older than the window go, but for the last one before it (2 s: none came
  // between), so the span covers the window: 2 s to 12 s moved 900.
  w.note(10_000, 1000);
  assert.is(w.note(12_000, 1200), 90);
  w.note(16_000, 1600);
  // Now 10 s is the last sample at or before the window's start (11 s).
  assert.is(w.note(16_000, 1600), (1600 - 1000) / 6);
});

async function* pieces(...chunks: string[]): AsyncGenerator<Uint8Array> {
  for (const c of chunks) yield Buffer.from(c);
}

test('NDJSON: values split anywhere, a last line without its newline, and a line over the limit refused', async () => {
  const values: unknown[] = [];
  for await (const v of ndjsonValues(pieces('{"a":1}\n{"b"', ':"é', '"}\n\n', '[1,', '2]'), 100)) values.push(v);
  assert.equal(values, [{ a: 1 }, { b: 'é' }, [1, 2]]);
  // A multi-byte character cut between two pieces still decodes.
  const e = Buffer.from('{"c":"é"}\n');
  const split = async function* () {
    yield e.subarray(0, 7);
    yield e.subarray(7);
  };
  const got: unknown[] = [];
  for await (const v of ndjsonValues(split(), 100)) got.push(v);
  assert.equal(got, [{ c: 'é' }]);
  let err: unknown = null;
  try {
    for await (const _ of ndjsonValues(pieces('{"x":"', 'a'.repeat(200), '"}\n'), 100)) void _;
  } catch (x) {
    err = x;
  }
  assert.match(String((err as Error)?.message), /over 100 bytes/);
  err = null;
  try {
    for await (const _ of ndjsonValues(pieces('not json\n'), 100)) void _;
  } catch (x) {
    err = x;
  }
  assert.match(String((err as Error)?.message), /not JSON/);
});

test.run();
