/*
 * Deterministic test trees for the tools suites (git, tar, rsync): directories, regular
 * files of varied sizes, modes, owners and modification times, symlinks and hard links,
 * all drawn from a seed, so the same call always builds the same tree. Also a small
 * command runner with a deadline for the tools themselves.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lutimesSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { prng } from './prng';

export interface TreeSpec {
  seed: number;
  files: number;
  dirs: number;
  symlinks?: number;
  hardlinks?: number;
  /** Give files and directories varied modes (else 0644 and 0755). */
  modes?: boolean;
  /** Give files and directories varied modification times (else the time of creation). */
  mtimes?: boolean;
  /** Give files varied owners (root only). */
  owners?: boolean;
  /** File sizes to choose from. */
  sizes?: number[];
}

export interface TreeStats {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  bytes: number;
}

const FILE_MODES = [0o644, 0o600, 0o755, 0o444, 0o700, 0o640, 0o664, 0o750, 0o4755, 0o2755, 0o1644, 0o400];
const DIR_MODES = [0o755, 0o750, 0o775, 0o700, 0o1777, 0o2775];
const OWNERS: Array<[number, number]> = [
  [0, 0],
  [1234, 1234],
  [2000, 2345],
  [65534, 65534],
];
/** 2001-09-09 to 2023-11-14, whole seconds (tar's default format keeps seconds). */
const MTIME_MIN_S = 1_000_000_000;
const MTIME_SPAN_S = 700_000_000;

/** Builds the tree under `root` (which must exist) and returns what it made. */
export function generateTree(root: string, spec: TreeSpec): TreeStats {
  const rng = prng(spec.seed);
  const sizes = spec.sizes ?? [0, 1, 17, 100, 1000, 4096, 5000, 20_000, 70_000];
  const dirs = [''];
  for (let i = 0; i < spec.dirs; i++) {
    const dir = join(rng.pick(dirs), `dir-${String(i).padStart(3, '0')}`);
    mkdirSync(join(root, dir));
    dirs.push(dir);
  }
  const files: string[] = [];
  let bytes = 0;
  for (let i = 0; i < spec.files; i++) {
    const file = join(rng.pick(dirs), `file-${String(i).padStart(4, '0')}${rng.pick(['', '.txt', '.bin', '.c', ' with space'])}`);
    const size = rng.pick(sizes);
    // Text for small files (git diffs read well), random bytes for the rest.
    const data = size <= 1000 ? Buffer.from(`line ${i}\n`.repeat(Math.ceil(size / 8)).slice(0, size)) : rng.bytes(size);
    writeFileSync(join(root, file), data);
    bytes += size;
    files.push(file);
  }
  for (const file of files) {
    const path = join(root, file);
    if (spec.owners) {
      const [uid, gid] = rng.pick(OWNERS);
      chownSync(path, uid, gid);
    }
    if (spec.modes) chmodSync(path, rng.pick(FILE_MODES));
    if (spec.mtimes) {
      const t = MTIME_MIN_S + rng.int(MTIME_SPAN_S);
      utimesSync(path, t, t);
    }
  }
  let hardlinks = 0;
  for (let i = 0; i < (spec.hardlinks ?? 0) && files.length > 0; i++) {
    linkSync(join(root, rng.pick(files)), join(root, rng.pick(dirs), `hardlink-${i}`));
    hardlinks++;
  }
  let symlinks = 0;
  for (let i = 0; i < (spec.symlinks ?? 0); i++) {
    const target = rng.next() < 0.8 && files.length > 0 ? `../${rng.pick(files)}` : `dangling-target-${i}`;
    const link = join(root, rng.pick(dirs), `symlink-${i}`);
    symlinkSync(target, link);
    if (spec.mtimes) {
      const t = MTIME_MIN_S + rng.int(MTIME_SPAN_S);
      lutimesSync(link, t, t);
    }
    symlinks++;
  }
  // Directories last, deepest first, so that their times are not moved by what is created
  // in them afterwards.
  for (const dir of dirs.slice(1).reverse()) {
    const path = join(root, dir);
    if (spec.modes) chmodSync(path, rng.pick(DIR_MODES));
    if (spec.mtimes) {
      const t = MTIME_MIN_S + rng.int(MTIME_SPAN_S);
      utimesSync(path, t, t);
    }
  }
  return { files: files.length, dirs: dirs.length - 1, symlinks, hardlinks, bytes };
}

export interface CommandResult {
  status: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs a command with a deadline (SIGKILL past it). */
export function runCommand(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): CommandResult {
  const started = Date.now();
  const r = spawnSync(cmd, args, {
    cwd: opts.cwd,
    env: opts.env ?? process.env,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 120_000,
    killSignal: 'SIGKILL',
    maxBuffer: 64 * 1024 * 1024,
  });
  const signal = r.signal ? ` (killed by ${r.signal}${r.error ? `: ${r.error.message}` : ''})` : '';
  return { status: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + signal, ms: Date.now() - started };
}

/** Runs a command that must succeed; returns its stdout. */
export function mustRun(cmd: string, args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): string {
  const r = runCommand(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (in ${opts.cwd ?? '.'}) exited ${r.status}:\n${r.stderr.slice(-4000)}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}
