/*
 * End to end through three real FUSE mounts of one cluster (issue 15, acceptance 5 and 6):
 * open files are addressed by inode, so renames through another mount change nothing for
 * their descriptors, and O_APPEND writes are placed at the end of the file when applied,
 * so appends from several mounts never overwrite each other.
 *
 * Writers and readers are child processes (their system calls block; this process keeps
 * renaming meanwhile). Each writes or reads through its own descriptor, opened once.
 *
 *   node dist/test/e2e/open-files.test.js      (root, /dev/fuse, after npm run build)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runDfs } from '../helpers/dfs-cli';
import { pollFor, startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';

const RENAMES = 100;
/** How long one rename may wait for the writer to land a line in the renamed file. */
const PROGRESS_TIMEOUT_MS = 60_000;
const APPENDERS_PER_MOUNT = 2;
const LINES_PER_APPENDER = 1_000;
const FSYNC_EVERY = 50;
const PYTHON = '/usr/bin/python3';

let mc: MountedCluster | null = null;
let a = '';
let b = '';
let c = '';

test.before(async () => {
  mc = await startMountedCluster({ prefix: 'e2e-open-files', mounts: ['a', 'b', 'c'] });
  [a, b, c] = mc.mountpoints as [string, string, string];
});

test.after(async () => {
  await mc?.stop();
});

/**
 * A writer: opens `file` once (`flags` 'a' for O_APPEND, 'w' for writes at its position),
 * writes `line <n>\n` and fsyncs, again and again, until its stdin ends; then fchmods the
 * file to 0640, fstats it, closes and prints { lines, errors, size, mode } as JSON.
 */
const WRITER = String.raw`
const fs = require('fs');
const [file, flags] = process.argv.slice(1);
const fd = fs.openSync(file, flags);
process.stdout.write('ready\n');
let lines = 0, stop = false;
const errors = [];
process.stdin.on('end', () => (stop = true));
process.stdin.resume();
function step() {
  if (stop || errors.length >= 10) {
    let size = -1, mode = -1;
    try {
      fs.fchmodSync(fd, 0o640);
      const st = fs.fstatSync(fd);
      size = st.size;
      mode = st.mode & 0o7777;
    } catch (e) { errors.push('fchmod or fstat: ' + e.code); }
    try { fs.closeSync(fd); } catch (e) { errors.push('close: ' + e.code); }
    process.stdout.write(JSON.stringify({ lines, errors, size, mode }));
    return;
  }
  try {
    fs.writeSync(fd, 'line ' + lines + '\n');
    fs.fsyncSync(fd);
    lines++;
  } catch (e) { errors.push(e.code + ' after ' + lines + ' lines'); }
  setImmediate(step);
}
step();
`;

/**
 * A reader: opens `file` once and reads it through to its end, again and again as it
 * grows, until its stdin ends and a read then finds nothing more; prints { bytes, text,
 * errors } as JSON.
 */
const READER = String.raw`
const fs = require('fs');
const [file] = process.argv.slice(1);
const fd = fs.openSync(file, 'r');
process.stdout.write('ready\n');
const chunks = [];
let at = 0, stop = false, reads = 0;
const errors = [];
process.stdin.on('end', () => (stop = true));
process.stdin.resume();
const buf = Buffer.alloc(65536);
function step() {
  let n = 0;
  try {
    n = fs.readSync(fd, buf, 0, buf.length, at);
    reads++;
  } catch (e) { errors.push(e.code + ' at ' + at); }
  if (n > 0) { chunks.push(Buffer.from(buf.subarray(0, n))); at += n; return setImmediate(step); }
  if ((stop && errors.length === 0 && reads > 0 && n === 0) || errors.length >= 10) {
    const wasStopped = stop;
    // One more read after the stop: the writer had closed by then.
    if (wasStopped && !step.last) { step.last = true; return setImmediate(step); }
    fs.closeSync(fd);
    process.stdout.write(JSON.stringify({ bytes: at, text: Buffer.concat(chunks).toString(), errors }));
    return;
  }
  setTimeout(step, 20);
}
step();
`;

/** An appender: opens `file` with O_APPEND once, writes `count` lines `<tag> <i> <pad>\n`,
 * fsyncing every `every`; prints { errors, position, size } (the descriptor's position and
 * fstat's size after the last fsync, which a local disk makes equal when no one else
 * appends after it). */
const APPENDER = String.raw`
const fs = require('fs');
const [file, tag, count, every] = process.argv.slice(1);
const fd = fs.openSync(file, 'a');
const errors = [];
const pad = 'x'.repeat(40 + (tag.length * 7) % 23);
for (let i = 0; i < Number(count); i++) {
  try {
    fs.writeSync(fd, tag + ' ' + i + ' ' + pad + '\n');
    if ((i + 1) % Number(every) === 0) fs.fsyncSync(fd);
  } catch (e) { errors.push(e.code + ' at line ' + i); if (errors.length >= 10) break; }
}
fs.fsyncSync(fd);
fs.closeSync(fd);
process.stdout.write(JSON.stringify({ errors }));
`;

interface Child {
  proc: ChildProcess;
  /** Everything it printed, once it exited. */
  done: Promise<string>;
  /** Resolves once it printed `ready` (its descriptor is open). */
  ready: Promise<void>;
}

function startScript(script: string, args: string[]): Child {
  const proc = spawn(process.execPath, ['-e', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady = (): void => {};
  const ready = new Promise<void>((resolve) => (onReady = resolve));
  proc.stdout!.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    if (out.startsWith('ready\n')) onReady();
  });
  proc.stderr!.on('data', (chunk: Buffer) => (err += chunk.toString()));
  const done = new Promise<string>((resolve, reject) => {
    proc.on('error', reject);
    proc.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`child exited ${code}: ${err}`))));
  });
  return { proc, done, ready };
}

/** Ends a child's stdin and waits (bounded) for its JSON answer. */
async function finish<T>(child: Child, timeoutMs = 120_000): Promise<T> {
  child.proc.stdin!.end();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      child.proc.kill('SIGKILL');
      reject(new Error(`child did not finish in ${timeoutMs} ms`));
    }, timeoutMs);
  });
  try {
    const out = await Promise.race([child.done, timeout]);
    return JSON.parse(out.startsWith('ready\n') ? out.slice('ready\n'.length) : out) as T;
  } finally {
    clearTimeout(timer);
  }
}

/** The size of `path` once it is larger than `size` (the writer landed a line there). */
async function grown(path: string, size: number): Promise<number> {
  return pollFor(`${path} to grow past ${size} bytes`, PROGRESS_TIMEOUT_MS, () => {
    const now = statSync(path).size;
    return now > size ? now : undefined;
  });
}

/** Lines `line 0` … `line n-1`, each once, in order. */
function checkLines(text: string, n: number, what: string): void {
  const lines = text.split('\n');
  assert.is(lines.pop(), '', `${what} ends with a whole line`);
  assert.is(lines.length, n, `${what}: ${n} lines`);
  for (const [i, line] of lines.entries()) {
    if (line !== `line ${i}`) assert.unreachable(`${what}: line ${i} is ${JSON.stringify(line)}`);
  }
}

async function rotation(kind: 'file' | 'directory', flags: 'a' | 'w'): Promise<void> {
  const dir = `rot-${kind}`;
  mkdirSync(join(a, dir));
  writeFileSync(join(a, dir, 'app.log'), '');
  const writer = startScript(WRITER, [join(b, dir, 'app.log'), flags]);
  // The writer has its file open and one line landed before the renames start.
  await grown(join(a, dir, 'app.log'), 0);
  const reader = startScript(READER, [join(c, dir, 'app.log')]);
  await Promise.race([reader.ready, reader.done]);
  let dirName = dir;
  let fileName = 'app.log';
  for (let i = 1; i <= RENAMES; i++) {
    // logrotate's move, through another mount; then the writer must land a line where the
    // file is now before the next one.
    const size = statSync(join(a, dirName, fileName)).size;
    if (kind === 'file') {
      const next = `app.log.${i}`;
      renameSync(join(a, dirName, fileName), join(a, dirName, next));
      fileName = next;
    } else {
      const next = `${dir}.${i}`;
      renameSync(join(a, dirName), join(a, next));
      dirName = next;
    }
    await grown(join(a, dirName, fileName), size);
  }
  const w = await finish<{ lines: number; errors: string[]; size: number; mode: number }>(writer);
  const r = await finish<{ bytes: number; text: string; errors: string[] }>(reader);
  process.stdout.write(`${kind} renamed ${RENAMES} times (${flags === 'a' ? 'O_APPEND' : 'offset'} writer): ${w.lines} lines written and fsynced, ${w.errors.length} writer errors, reader got ${r.bytes} bytes with ${r.errors.length} errors\n`);
  assert.equal(w.errors, [], 'the writer never failed');
  assert.equal(r.errors, [], 'the reader never failed');
  assert.ok(w.lines > RENAMES, `the writer landed ${w.lines} lines, one or more after each rename`);
  const final = readFileSync(join(a, dirName, fileName), 'utf8');
  checkLines(final, w.lines, `the renamed file ${dirName}/${fileName}`);
  assert.is(w.size, final.length, "the writer's fstat at the end: the whole file");
  assert.is(w.mode, 0o640, "the writer's fchmod reached its file");
  assert.is(statSync(join(a, dirName, fileName)).mode & 0o7777, 0o640, 'as every mount sees it');
  assert.is(r.text, final, "the reader's descriptor read every line");
  assert.not.ok(existsSync(join(a, dir, 'app.log')) && kind === 'directory', 'the old directory name is gone');
}

test('log rotation: a writer on mount B and a reader on mount C follow a file mount A renames 100 times', async () => {
  await rotation('file', 'a');
});

test('log rotation: they follow it while mount A renames its directory 100 times', async () => {
  await rotation('directory', 'w');
});

test("a write through a descriptor of a file another mount moved takes back the leases of the directory it is in now", () => {
  mkdirSync(join(a, 'lease-from'));
  mkdirSync(join(a, 'lease-to'));
  writeFileSync(join(a, 'lease-from', 'f'), '');
  const fd = openSync(join(b, 'lease-from', 'f'), 'w');
  try {
    writeSync(fd, 'x');
    fsyncSync(fd);
    renameSync(join(a, 'lease-from', 'f'), join(a, 'lease-to', 'g'));
    // Mount C caches the file's attributes under its lease on lease-to.
    assert.is(statSync(join(c, 'lease-to', 'g')).size, 1);
    assert.is(statSync(join(c, 'lease-to', 'g')).size, 1);
    for (let round = 1; round <= 20; round++) {
      writeSync(fd, 'yyyy');
      fsyncSync(fd);
      assert.is(statSync(join(c, 'lease-to', 'g')).size, 1 + 4 * round, `round ${round}: C sees the write as soon as B's fsync returned`);
    }
  } finally {
    closeSync(fd);
  }
});

test('O_APPEND from two mounts, two processes each: every line lands whole, in each writer\'s order, the same on every node', async () => {
  const name = 'shared.log';
  writeFileSync(join(a, name), '');
  const children: Array<{ tag: string; child: Child }> = [];
  for (const [m, mnt] of [a, b].entries()) {
    for (let k = 0; k < APPENDERS_PER_MOUNT; k++) {
      const tag = `m${m}p${k}`;
      children.push({ tag, child: startScript(APPENDER, [join(mnt, name), tag, String(LINES_PER_APPENDER), String(FSYNC_EVERY)]) });
    }
  }
  for (const { tag, child } of children) {
    const r = await finish<{ errors: string[] }>(child, 240_000);
    assert.equal(r.errors, [], `${tag} never failed`);
  }
  for (const mnt of [a, b, c]) {
    const text = readFileSync(join(mnt, name), 'utf8');
    const lines = text.split('\n');
    assert.is(lines.pop(), '', 'the file ends with a whole line');
    const next = new Map(children.map(({ tag }) => [tag, 0]));
    let bad = 0;
    for (const line of lines) {
      const m = /^(m\dp\d) (\d+) x+$/.exec(line);
      if (!m || !next.has(m[1]!) || Number(m[2]) !== next.get(m[1]!)) {
        bad++;
        continue;
      }
      next.set(m[1]!, next.get(m[1]!)! + 1);
    }
    process.stdout.write(`${mnt}: ${lines.length} lines, ${bad} torn, missing or out of order\n`);
    assert.is(lines.length, children.length * LINES_PER_APPENDER, `exactly ${children.length * LINES_PER_APPENDER} lines`);
    assert.is(bad, 0, 'every line whole, each writer\'s in its own order');
    for (const [tag, n] of next) assert.is(n, LINES_PER_APPENDER, `all of ${tag}'s lines`);
  }
  const v = await runDfs(['verify', '--data', mc!.cluster.dataDir]);
  process.stdout.write(v.stdout);
  assert.is(v.code, 0, v.stdout + v.stderr);
  assert.match(v.stdout, /identical/);
});

/** Through an O_APPEND descriptor: another process appends through `other` while it is
 * open, then this one fstats, writes and fsyncs; prints the sizes and positions seen. */
const POSITION = String.raw`
import json, os, sys
path, other = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
with open(other, 'a') as o:
    o.write('a line from the other mount\n')
before = os.fstat(fd).st_size
os.write(fd, b'mine\n')
pos = os.lseek(fd, 0, os.SEEK_CUR)
os.fsync(fd)
size = os.fstat(fd).st_size
os.close(fd)
print(json.dumps({'before': before, 'pos': pos, 'size': size}))
`;

function positionRun(path: string, other: string): { before: number; pos: number; size: number } {
  const r = spawnSync(PYTHON, ['-c', POSITION, path, other], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { before: number; pos: number; size: number };
}

test("an O_APPEND writer's fstat, position and file match a local disk's after another mount appended", () => {
  const first = 'first line\n';
  const expected = `${first}a line from the other mount\nmine\n`;
  // The same program on a local disk, its other writer a second descriptor there.
  const local = mkdtempSync(join(tmpdir(), 'dfs-position-'));
  try {
    writeFileSync(join(local, 'p.log'), first);
    const onDisk = positionRun(join(local, 'p.log'), join(local, 'p.log'));
    assert.is(readFileSync(join(local, 'p.log'), 'utf8'), expected);
    writeFileSync(join(a, 'p.log'), first);
    const onDfs = positionRun(join(b, 'p.log'), join(a, 'p.log'));
    process.stdout.write(`local disk ${JSON.stringify(onDisk)}, dfs ${JSON.stringify(onDfs)}\n`);
    assert.is(readFileSync(join(c, 'p.log'), 'utf8'), expected, 'the append landed after the other mount\'s');
    assert.equal(onDfs, onDisk);
  } finally {
    rmSync(local, { recursive: true, force: true });
  }
});

if (existsSync('/dev/fuse') && existsSync(PYTHON)) {
  test.run();
} else {
  process.stdout.write('no /dev/fuse or no python3: this suite cannot run here\n');
  process.exitCode = 1;
}
