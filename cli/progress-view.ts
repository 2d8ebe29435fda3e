/*
 * Progress of long work on the command line (`dfs verify`, `dfs node sync-progress`): a
 * cli-progress bar on stderr when stderr is a terminal, else a plain line now and then
 * (each tenth of the way, at least every PLAIN_EVERY_MS while it moves, and at the end),
 * so that a log or a pipe gets a few readable lines rather than a stream of carriage
 * returns. Only stderr: what a command prints on stdout (`--json`) is the same either way.
 *
 * The figures are entries and bytes done against their totals (null while the work has
 * not counted them yet: nothing is drawn until then). The bar follows the bytes, or the
 * entries when there are no bytes to do (a brick of empty files). The rate is the caller's
 * (a node measures its own full sync) or measured here from the updates; the ETA is the
 * bytes left at that rate. `progressText` is the same line for `dfs status`.
 */
import { SingleBar } from 'cli-progress';
import { RateWindow } from '../common/rate-window';
import { formatBytes } from './format';

export interface ProgressFigures {
  entries: number;
  bytes: number;
  totalEntries: number | null;
  totalBytes: number | null;
  /** The rate as the worker measured it; absent: measured here. */
  bytesPerSecond?: number;
}

/** A plain line at least this often while the figures move (and at every tenth). */
const PLAIN_EVERY_MS = 5000;
/** The rate shown is over this window of updates. */
const RATE_WINDOW_MS = 5000;

/** How far, from 0 to 1: by bytes, or by entries when there are no bytes to do. */
export function progressFraction(f: ProgressFigures): number | null {
  if (f.totalBytes === null || f.totalEntries === null) return null;
  if (f.totalBytes > 0) return Math.min(1, f.bytes / f.totalBytes);
  if (f.totalEntries > 0) return Math.min(1, f.entries / f.totalEntries);
  return 1;
}

/** `1h02m`, `3m05s`, `42s`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

/** The parts of a progress line: `45%`, `460.0 MiB of 1.0 GiB`, `1234 of 5000 entries`,
 * `85.0 MiB/s`, `ETA 7s` (`ETA ?` while no rate is known). */
export function progressParts(f: ProgressFigures, bytesPerSecond: number): { percent: string; bytes: string; entries: string; rate: string; eta: string } {
  const fraction = progressFraction(f);
  const left = f.totalBytes === null ? null : Math.max(0, f.totalBytes - f.bytes);
  return {
    percent: fraction === null ? '?%' : `${Math.floor(fraction * 100)}%`,
    bytes: `${formatBytes(f.bytes)} of ${f.totalBytes === null ? '?' : formatBytes(f.totalBytes)}`,
    entries: `${f.entries} of ${f.totalEntries ?? '?'} entries`,
    rate: `${formatBytes(Math.round(bytesPerSecond))}/s`,
    eta: left === 0 ? 'ETA 0s' : bytesPerSecond > 0 && left !== null ? `ETA ${formatDuration(left / bytesPerSecond)}` : 'ETA ?',
  };
}

/** One line: `45% 460.0 MiB of 1.0 GiB, 1234 of 5000 entries, 85.0 MiB/s, ETA 7s`. */
export function progressText(f: ProgressFigures, bytesPerSecond = f.bytesPerSecond ?? 0): string {
  const p = progressParts(f, bytesPerSecond);
  return `${p.percent} ${p.bytes}, ${p.entries}, ${p.rate}, ${p.eta}`;
}

interface Output {
  write(text: string): unknown;
  isTTY?: boolean;
}

export class ProgressView {
  private bar: SingleBar | null = null;
  private barTotal = 0;
  private readonly rate = new RateWindow(RATE_WINDOW_MS);
  private lastPlainMs = 0;
  private lastPlainTenth = -1;
  private lastPlainText = '';
  private finished = false;

  /** `label` starts every line (`verify`, `n4 from n2`); `out` is stderr unless a test says. */
  constructor(
    private readonly label: string,
    private readonly out: Output = process.stderr,
    private readonly tty = out.isTTY === true,
  ) {}

  update(f: ProgressFigures): void {
    if (this.finished) return;
    const now = Date.now();
    const measured = this.rate.note(now, f.bytes);
    const fraction = progressFraction(f);
    if (fraction === null) return; // nothing to measure against yet
    const bytesPerSecond = f.bytesPerSecond ?? measured;
    if (this.tty) this.draw(f, bytesPerSecond);
    else this.plain(f, bytesPerSecond, fraction, now, false);
  }

  /** The work is done: draws `f` (its last figures) and lets the terminal go. */
  finish(f: ProgressFigures): void {
    if (this.finished) return;
    const bytesPerSecond = f.bytesPerSecond ?? this.rate.note(Date.now(), f.bytes);
    if (this.tty) {
      if (progressFraction(f) !== null) this.draw(f, bytesPerSecond);
      this.bar?.stop();
    } else if (progressFraction(f) !== null) {
      this.plain(f, bytesPerSecond, progressFraction(f)!, Date.now(), true);
    }
    this.finished = true;
  }

  /** The work failed or was given up: the bar stops where it is. */
  abandon(): void {
    if (this.finished) return;
    this.bar?.stop();
    this.finished = true;
  }

  private draw(f: ProgressFigures, bytesPerSecond: number): void {
    const byBytes = f.totalBytes! > 0;
    const total = byBytes ? f.totalBytes! : Math.max(f.totalEntries!, 0);
    const value = byBytes ? f.bytes : f.entries;
    const p = progressParts(f, bytesPerSecond);
    // Not `eta`: cli-progress fills its own {eta} token in over the payload's.
    const payload = { label: this.label, done: p.bytes, entries: p.entries, rate: p.rate, etaText: p.eta };
    if (this.bar === null) {
      this.bar = new SingleBar({
        stream: this.out as NodeJS.WritableStream,
        format: '{label} [{bar}] {percentage}% | {done} | {entries} | {rate} | {etaText}',
        barsize: 30,
        hideCursor: true,
        // Not cli-progress's own SIGINT handler: the command decides what an interrupt does.
        gracefulExit: false,
      });
      this.barTotal = total;
      this.bar.start(total, value, payload);
      return;
    }
    if (total !== this.barTotal) {
      this.barTotal = total;
      this.bar.setTotal(total);
    }
    this.bar.update(value, payload);
  }

  private plain(f: ProgressFigures, bytesPerSecond: number, fraction: number, now: number, last: boolean): void {
    // The line at 100% is the closing one, which says it is done.
    if (fraction >= 1 && !last) return;
    const tenth = Math.floor(fraction * 10);
    const text = progressText(f, bytesPerSecond);
    const due = last || tenth > this.lastPlainTenth || (now - this.lastPlainMs >= PLAIN_EVERY_MS && text !== this.lastPlainText);
    if (!due) return;
    this.lastPlainMs = now;
    this.lastPlainTenth = tenth;
    this.lastPlainText = text;
    this.out.write(`${this.label}: ${text}${last ? ' (done)' : ''}\n`);
  }
}
