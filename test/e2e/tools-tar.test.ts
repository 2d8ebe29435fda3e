/*
 * tar in the mount (issue 3, tools; split from tools.test.ts because extracting 2,000 files
 * through the mount takes over a minute and a half, and each test file has 5 minutes).
 *
 * A 2,000-file tree is made on the local disk with varied modes (setuid, setgid, sticky
 * included), owners, modification times, symlinks and hard links, and archived. Then:
 * - `tar -x` of the archive into the mount, and `tar -d` (compare) against it is clean:
 *   contents, sizes, modes, owners, modification times, link targets;
 * - `tar -c` of the extracted tree in the mount, extracted again on the local disk, is
 *   clean against the original archive, and its verbose listing (types, modes, owners,
 *   times of every entry, directories included) equals that of the same round trip done
 *   entirely on the local disk (the reference: whatever tar keeps or loses locally).
 *
 *   node dist/test/e2e/tools-tar.test.js      (root, /dev/fuse, redis-server, GNU tar)
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { tempDir } from '../helpers/temp';
import { generateTree, mustRun, runCommand } from '../helpers/tree-gen';

const TAR_TIMEOUT_MS = 240_000;
const TREE = { seed: 20_003, files: 2000, dirs: 60, symlinks: 30, hardlinks: 20, modes: true, mtimes: true, owners: true };
const DIFF_LINES_SHOWN = 40;

let env: MountedCluster | null = null;
let local: { path: string; remove: () => void } | null = null;
let archive = '';
let inMount = '';

/** `tar -d`: no output and exit 0 when the tree matches the archive. */
function tarCompare(tarFile: string, dir: string): string {
  const r = runCommand('tar', ['--numeric-owner', '-df', tarFile, '-C', dir], { timeoutMs: TAR_TIMEOUT_MS });
  const lines = (r.stdout + r.stderr).split('\n').filter((line) => line !== '');
  if (r.status === 0 && lines.length === 0) return '';
  return `tar -d exited ${r.status} with ${lines.length} lines:\n${lines.slice(0, DIFF_LINES_SHOWN).join('\n')}`;
}

/**
 * A verbose listing as comparable lines: a hard link's entry is listed under whichever name
 * tar met first, which depends on readdir order, so types `h` read as `-` and sizes and
 * "link to" parts are dropped (tar -d checks sizes and links).
 */
function listing(tarFile: string): string[] {
  const out = mustRun('tar', ['--numeric-owner', '--full-time', '-tvf', tarFile], { timeoutMs: TAR_TIMEOUT_MS });
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const m = /^(\S)(\S+)\s+(\S+)\s+\d+\s+(\S+ \S+)\s+(.*)$/.exec(line);
      if (!m) return line;
      const type = m[1] === 'h' ? '-' : m[1];
      const name = m[5]!.replace(/ link to .*$/, '');
      return `${type}${m[2]} ${m[3]} ${m[4]} ${name}`;
    })
    .sort();
}

function setDifference(a: string[], b: string[]): string[] {
  const inB = new Set(b);
  return a.filter((line) => !inB.has(line));
}

test.before(async () => {
  local = tempDir('tools-tar');
  // One mount and bulk work: the attribute cache a user would turn on for it (README,
  // dfs-mount); the strict default is the conformance suite's. It halves this suite's time.
  env = await startMountedCluster({ prefix: 'tools-tar', mounts: ['m'], mountArgs: ['--attr-timeout-ms', '1000'] });
  inMount = join(env.mountpoints[0]!, 'extracted');
  const src = join(local.path, 'src');
  mkdirSync(src);
  const stats = generateTree(src, TREE);
  archive = join(local.path, 'src.tar');
  mustRun('tar', ['--numeric-owner', '-cf', archive, '-C', src, '.']);
  process.stdout.write(`tar: archive of ${JSON.stringify(stats)}\n`);
});

test.after(async () => {
  await env?.stop();
  local?.remove();
});

test('tar -x of a 2,000-file archive into the mount; tar -d against the archive is clean', () => {
  mkdirSync(inMount);
  const r = runCommand('tar', ['--numeric-owner', '-xf', archive, '-C', inMount], { timeoutMs: TAR_TIMEOUT_MS });
  process.stdout.write(`tar -x into the mount: ${r.ms} ms\n`);
  assert.is(r.status, 0, `tar -x failed:\n${r.stderr.slice(-3000)}`);
  assert.is(r.stderr, '', 'tar -x printed no warnings');
  assert.is(tarCompare(archive, inMount), '', 'tar -d finds no differences');
});

test('tar -c of it gives the same contents, modes, owners and times as the same round trip on the local disk', () => {
  assert.ok(existsSync(join(inMount, 'dir-000')), 'the extraction happened');
  const backFromMount = join(local!.path, 'back-from-mount.tar');
  const r = runCommand('tar', ['--numeric-owner', '-cf', backFromMount, '-C', inMount, '.'], { timeoutMs: TAR_TIMEOUT_MS });
  process.stdout.write(`tar -c from the mount: ${r.ms} ms\n`);
  assert.is(r.status, 0, `tar -c failed:\n${r.stderr.slice(-3000)}`);
  assert.is(r.stderr, '', 'tar -c printed no warnings (such as "file changed as we read it")');

  // The reference: the same extraction and archive, on the local disk.
  const localCopy = join(local!.path, 'local-copy');
  mkdirSync(localCopy);
  mustRun('tar', ['--numeric-owner', '-xf', archive, '-C', localCopy]);
  const backFromLocal = join(local!.path, 'back-from-local.tar');
  mustRun('tar', ['--numeric-owner', '-cf', backFromLocal, '-C', localCopy, '.']);

  // Extracted on the local disk, the archive made in the mount matches the original.
  const again = join(local!.path, 'again');
  mkdirSync(again);
  mustRun('tar', ['--numeric-owner', '-xf', backFromMount, '-C', again]);
  assert.is(tarCompare(archive, again), '', 'the archive made in the mount, extracted locally, matches the original');

  const want = listing(backFromLocal);
  const got = listing(backFromMount);
  const missing = setDifference(want, got);
  const extra = setDifference(got, want);
  if (missing.length > 0 || extra.length > 0) {
    writeFileSync(join(local!.path, 'listing-diff.txt'), `${missing.join('\n')}\n---\n${extra.join('\n')}\n`);
  }
  assert.equal(
    { missing: missing.slice(0, DIFF_LINES_SHOWN), extra: extra.slice(0, DIFF_LINES_SHOWN), counts: [missing.length, extra.length] },
    { missing: [], extra: [], counts: [0, 0] },
    'tar -tv of the archive made in the mount equals that of the local round trip (missing: only in the local one; extra: only in the mount\'s)',
  );
});

if (existsSync('/dev/fuse')) {
  test.run();
} else {
  process.stdout.write('no /dev/fuse: the tar suite cannot run here\n');
  process.exitCode = 1;
}
