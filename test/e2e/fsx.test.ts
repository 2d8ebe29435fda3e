/*
 * fsx for dfs: a seeded random sequence of file operations on a few files in a real mount,
 * each checked against an in-memory model of what the files must hold (after the manner of
 * the classic fsx from BSD and xfstests, without mmap).
 *
 * Operations: writes of random data at random offsets (small and large, inside the file,
 * across its end, past it leaving holes, and around the 128 KiB FUSE request and 1 MiB
 * mount chunk boundaries), truncates that shrink and grow (ftruncate and truncate by path),
 * reads of random ranges, opening and closing descriptors (up to two per file, so that
 * writes buffered for one descriptor meet reads and truncates through the other), fsync
 * and fdatasync. After every operation the size seen through fstat must be the model's;
 * every read must return the model's bytes; every FULL_CHECK_EVERY operations every file
 * is read whole through a fresh descriptor; at the end every file is read whole through
 * this mount and through a second one (close-to-open).
 *
 * On a mismatch the test fails with the seed, the operation's index, the first differing
 * offset and the last operations, so that `DFS_FSX_SEED=<seed>` repeats the run exactly.
 *
 *   node dist/test/e2e/fsx.test.js                 (root, /dev/fuse, redis-server)
 *   DFS_FSX_SEED=1234 DFS_FSX_OPS=20000 node dist/test/e2e/fsx.test.js
 *   DFS_FSX_LOCAL=1 DFS_FSX_SEED=1234 node dist/test/e2e/fsx.test.js    (the same on the local disk)
 */
import { closeSync, fdatasyncSync, fstatSync, fsyncSync, openSync, readSync, truncateSync, ftruncateSync, writeSync, existsSync, constants } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { prng, type Prng } from '../helpers/prng';
import { tempDir } from '../helpers/temp';

const SEED = process.env.DFS_FSX_SEED ? Number(process.env.DFS_FSX_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const OPS = Number(process.env.DFS_FSX_OPS ?? 10_000);
const FILE_COUNT = 3;
/** Descriptors open at once per file (DFS_FSX_HANDLES=1 keeps to one, to tell a single
 * handle's bugs from bugs between handles). */
const HANDLES_PER_FILE_MAX = Number(process.env.DFS_FSX_HANDLES ?? 2);
/** Files stay below this size (writes and truncates beyond it are clamped). */
const FILE_BYTES_MAX = 3 * 1024 * 1024;
const SMALL_IO_BYTES_MAX = 4096;
const LARGE_IO_BYTES_MAX = 300 * 1024;
const FULL_CHECK_EVERY = 500;
const LOG_TAIL_OPS = 40;
const KiB = 1024;
const MiB = 1024 * 1024;
/** Offsets where the kernel splits requests (128 KiB) and the mount cuts chunks (1 MiB). */
const BOUNDARY_STEPS = [128 * KiB, MiB];

interface Change {
  index: number;
  text: string;
  /** The bytes it set: a write's range, or a truncate's [new size, old size) or [old, new). */
  from: number;
  to: number;
}

interface FileModel {
  path: string;
  changes: Change[];
  /** The model's bytes; only the first `size` count. */
  data: Buffer;
  size: number;
  fds: number[];
}

class Fsx {
  private readonly rng: Prng;
  private readonly files: FileModel[];
  private readonly log: string[] = [];
  private index = 0;
  readonly counts: Record<string, number> = {};

  constructor(
    readonly seed: number,
    dir: string,
  ) {
    this.rng = prng(seed);
    this.files = Array.from({ length: FILE_COUNT }, (_, i) => ({ path: join(dir, `fsx-${i}`), changes: [], data: Buffer.alloc(0), size: 0, fds: [] }));
  }

  private random(): number {
    return this.rng.next();
  }

  private int(maxExclusive: number): number {
    return this.rng.int(maxExclusive);
  }

  private pick<T>(items: T[]): T {
    return this.rng.pick(items);
  }

  private bytes(length: number): Buffer {
    return this.rng.bytes(length);
  }

  private note(text: string): void {
    this.log.push(`#${this.index} ${text}`);
    if (this.log.length > LOG_TAIL_OPS) this.log.shift();
  }

  private fail(what: string, f?: FileModel, offset?: number): never {
    let history = '';
    if (f && offset !== undefined) {
      const touching = f.changes.filter((c) => c.from <= offset && offset < c.to).slice(-8);
      history = `\n  the last operations that set byte ${offset} of ${f.path}:\n    ${touching.map((c) => `#${c.index} ${c.text}`).join('\n    ') || '(none)'}`;
    }
    throw new Error(
      `fsx: ${what}\n  seed ${this.seed} (repeat with DFS_FSX_SEED=${this.seed}), operation #${this.index} of ${OPS}` +
        `${history}\n  last operations:\n    ${this.log.join('\n    ')}`,
    );
  }

  private changed(f: FileModel, text: string, from: number, to: number): void {
    if (to > from) f.changes.push({ index: this.index, text, from, to });
  }

  private ensureCapacity(f: FileModel, size: number): void {
    if (f.data.length >= size) return;
    const grown = Buffer.alloc(Math.max(size, Math.min(FILE_BYTES_MAX, f.data.length * 2)));
    f.data.copy(grown, 0, 0, f.size);
    f.data = grown;
  }

  /** Sets the model's size; `text` names the change in a byte's history (a write names its own). */
  private setSize(f: FileModel, size: number, text?: string): void {
    if (text !== undefined) this.changed(f, text, Math.min(size, f.size), Math.max(size, f.size));
    if (size > f.size) {
      this.ensureCapacity(f, size);
      f.data.fill(0, f.size, size);
    }
    f.size = size;
  }

  private fdOf(f: FileModel): number {
    if (f.fds.length === 0) this.openHandle(f);
    return this.pick(f.fds);
  }

  private openHandle(f: FileModel): void {
    const flags = constants.O_RDWR | (existsSync(f.path) ? 0 : constants.O_CREAT);
    f.fds.push(openSync(f.path, flags, 0o644));
    this.note(`open ${f.path.slice(-6)} -> ${f.fds.length} handles`);
  }

  /** The first offset where `got` and the model differ, or -1. */
  private firstDifference(f: FileModel, offset: number, got: Buffer): number {
    const want = f.data.subarray(offset, Math.min(f.size, offset + got.length));
    const n = Math.min(want.length, got.length);
    for (let i = 0; i < n; i++) if (want[i] !== got[i]) return offset + i;
    return want.length === got.length ? -1 : offset + n;
  }

  private checkSize(f: FileModel, fd: number, after: string): void {
    const size = fstatSync(fd).size;
    if (size !== f.size) this.fail(`after ${after}: fstat size ${size}, the model says ${f.size} (${f.path})`);
  }

  private readRange(fd: number, offset: number, length: number): Buffer {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const n = readSync(fd, buf, done, length - done, offset + done);
      if (n === 0) break;
      done += n;
    }
    return buf.subarray(0, done);
  }

  private offsetFor(f: FileModel): number {
    const r = this.random();
    if (r < 0.45) return this.int(f.size + 1);
    if (r < 0.6) return f.size; // append
    if (r < 0.7) return f.size + this.int(256 * KiB); // past the end: a hole
    // Around a boundary, within the file or a little past it.
    const step = this.pick(BOUNDARY_STEPS);
    const k = this.int(Math.floor((f.size + step) / step) + 1);
    return Math.max(0, k * step + this.int(64) - 32);
  }

  private lengthFor(): number {
    return this.random() < 0.8 ? 1 + this.int(SMALL_IO_BYTES_MAX) : 1 + this.int(LARGE_IO_BYTES_MAX);
  }

  private write(f: FileModel): void {
    const fd = this.fdOf(f);
    const offset = Math.min(this.offsetFor(f), FILE_BYTES_MAX - 1);
    const length = Math.min(this.lengthFor(), FILE_BYTES_MAX - offset);
    const data = this.bytes(length);
    const text = `write ${f.path.slice(-6)} fd${fd} offset ${offset} length ${length} (size ${f.size})`;
    this.note(text);
    const n = writeSync(fd, data, 0, length, offset);
    if (n !== length) this.fail(`write returned ${n}, not ${length}`);
    if (offset > f.size) this.setSize(f, offset, `(the hole before) ${text}`);
    this.setSize(f, Math.max(f.size, offset + length));
    data.copy(f.data, offset);
    this.changed(f, text, offset, offset + length);
    this.checkSize(f, fd, 'write');
  }

  private read(f: FileModel): void {
    const fd = this.fdOf(f);
    const offset = this.int(f.size + 2 * KiB);
    const length = this.random() < 0.8 ? 1 + this.int(SMALL_IO_BYTES_MAX * 4) : 1 + this.int(LARGE_IO_BYTES_MAX * 2);
    this.note(`read ${f.path.slice(-6)} fd${fd} offset ${offset} length ${length} (size ${f.size})`);
    const got = this.readRange(fd, offset, length);
    const wantLength = Math.max(0, Math.min(length, f.size - offset));
    if (got.length !== wantLength) this.fail(`read of ${length} at ${offset} returned ${got.length} bytes, the model has ${wantLength}`);
    const diff = this.firstDifference(f, offset, got);
    if (diff !== -1) this.fail(`read of ${length} at ${offset}: byte ${diff} is ${got[diff - offset]}, the model says ${f.data[diff]}`, f, diff);
  }

  private truncate(f: FileModel): void {
    const grow = this.random() < 0.5;
    const size = grow ? Math.min(FILE_BYTES_MAX, f.size + this.int(512 * KiB)) : this.int(f.size + 1);
    if (this.random() < 0.5 && f.fds.length > 0) {
      const fd = this.pick(f.fds);
      const text = `ftruncate ${f.path.slice(-6)} fd${fd} ${f.size} -> ${size}`;
      this.note(text);
      ftruncateSync(fd, size);
      this.setSize(f, size, text);
      this.checkSize(f, fd, 'ftruncate');
    } else {
      const text = `truncate ${f.path.slice(-6)} (path) ${f.size} -> ${size}`;
      this.note(text);
      if (!existsSync(f.path)) this.openHandle(f);
      truncateSync(f.path, size);
      this.setSize(f, size, text);
      this.checkSize(f, this.fdOf(f), 'truncate');
    }
  }

  private closeOne(f: FileModel): void {
    if (f.fds.length === 0) return this.openHandle(f);
    const fd = f.fds.splice(this.int(f.fds.length), 1)[0]!;
    this.note(`close ${f.path.slice(-6)} fd${fd}`);
    closeSync(fd);
  }

  private sync(f: FileModel): void {
    const fd = this.fdOf(f);
    if (this.random() < 0.5) {
      this.note(`fsync ${f.path.slice(-6)} fd${fd}`);
      fsyncSync(fd);
    } else {
      this.note(`fdatasync ${f.path.slice(-6)} fd${fd}`);
      fdatasyncSync(fd);
    }
    this.checkSize(f, fd, 'fsync');
  }

  /** Reads every file whole through a fresh descriptor (in `dir`, another mount's path if given). */
  fullCheck(what: string, dirOf: (f: FileModel) => string = (f) => f.path): void {
    for (const f of this.files) {
      if (!existsSync(dirOf(f))) {
        if (f.size === 0 && f.fds.length === 0) continue;
        this.fail(`${what}: ${dirOf(f)} does not exist`);
      }
      const fd = openSync(dirOf(f), 'r');
      try {
        const size = fstatSync(fd).size;
        if (size !== f.size) this.fail(`${what}: ${dirOf(f)} has size ${size}, the model says ${f.size}`);
        const got = this.readRange(fd, 0, f.size + 1);
        if (got.length !== f.size) this.fail(`${what}: reading ${dirOf(f)} whole gave ${got.length} bytes, the model has ${f.size}`);
        const diff = this.firstDifference(f, 0, got);
        if (diff !== -1) this.fail(`${what}: ${dirOf(f)} byte ${diff} is ${got[diff]}, the model says ${f.data[diff]}`, f, diff);
      } finally {
        closeSync(fd);
      }
    }
  }

  /** Operation weights: cumulative probabilities, drawn once per step. */
  private readonly mix: Array<[number, string, (f: FileModel) => void]> = [
    [0.36, 'write', (f) => this.write(f)],
    [0.66, 'read', (f) => this.read(f)],
    [0.78, 'truncate', (f) => this.truncate(f)],
    [0.86, 'close', (f) => this.closeOne(f)],
    [0.93, 'open', (f) => (f.fds.length < HANDLES_PER_FILE_MAX ? this.openHandle(f) : this.read(f))],
    [1, 'fsync', (f) => this.sync(f)],
  ];

  step(): void {
    const f = this.pick(this.files);
    const r = this.random();
    const [, name, op] = this.mix.find(([upTo]) => r < upTo) ?? this.mix[this.mix.length - 1]!;
    op(f);
    this.counts[name] = (this.counts[name] ?? 0) + 1;
  }

  run(count: number): void {
    for (this.index = 0; this.index < count; this.index++) {
      this.step();
      if ((this.index + 1) % FULL_CHECK_EVERY === 0) this.fullCheck(`full check after ${this.index + 1} operations`);
    }
  }

  closeAll(): void {
    for (const f of this.files) {
      for (const fd of f.fds) closeSync(fd);
      f.fds = [];
    }
  }

  sizes(): number[] {
    return this.files.map((f) => f.size);
  }
}

let env: MountedCluster | null = null;
let fsx: Fsx | null = null;

/** DFS_FSX_LOCAL=1 runs the same operations in a local temp directory instead: a check of
 * the test itself (the local disk must always pass). */
const LOCAL = process.env.DFS_FSX_LOCAL === '1';
let dirs: [string, string] = ['', ''];
let localDir: { path: string; remove: () => void } | null = null;

test.before(async () => {
  process.stdout.write(`fsx seed ${SEED} (repeat with DFS_FSX_SEED=${SEED}), ${OPS} operations${LOCAL ? ', on the local disk' : ''}\n`);
  if (LOCAL) {
    localDir = tempDir('fsx-local');
    dirs = [localDir.path, localDir.path];
  } else {
    env = await startMountedCluster({ prefix: 'fsx', mounts: ['m1', 'm2'] });
    dirs = env.mountpoints as [string, string];
  }
});

test.after(async () => {
  try {
    fsx?.closeAll();
  } catch {
    // The mount may be gone; stopping cleans up.
  }
  await env?.stop();
  localDir?.remove();
});

test(`fsx: ${OPS} random operations on ${FILE_COUNT} files, checked against a model after each`, () => {
  fsx = new Fsx(SEED, dirs[0]);
  const started = Date.now();
  fsx.run(OPS);
  fsx.closeAll();
  fsx.fullCheck('final check through the same mount');
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(`fsx: ${OPS} operations in ${seconds.toFixed(1)} s ${JSON.stringify(fsx.counts)}, final sizes ${fsx.sizes().join(', ')}\n`);
});

test('fsx: a second mount reads the same final contents (close-to-open)', () => {
  assert.ok(fsx, 'the run happened');
  fsx!.fullCheck('final check through the second mount', (f) => f.path.replace(dirs[0], dirs[1]));
});

if (existsSync('/dev/fuse')) {
  test.run();
} else {
  process.stdout.write('no /dev/fuse: the fsx suite cannot run here\n');
  process.exitCode = 1;
}
