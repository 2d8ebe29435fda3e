/*
 * Everyday tools in the mount (issue 3): git and rsync behave as on the local disk.
 * (tar has its own file, tools-tar.test.ts: extracting 2,000 files takes most of a file's
 * five minutes.)
 *
 * - git: the same 200-file tree is made on the local disk and in the mount, and the same
 *   script runs in both: init, add, commit, log, status, fsck, then a second commit with a
 *   change, a rename (git mv) and a removal, diff, gc, fsck, checkout of the first commit and
 *   back. Author, committer and dates are fixed, so the commit IDs must be the same.
 * - rsync -a of a local tree (varied modes, owners, times, symlinks) into the mount and back
 *   out: diff -r finds nothing; an itemized dry run (-n -i) finds nothing to change either
 *   way (so times, modes, owners and sizes survived), also with checksums (-c); after
 *   changing some source files, rsync into the mount transfers exactly what rsync into a
 *   local copy transfers.
 *
 *   node dist/test/e2e/tools.test.js      (root, /dev/fuse, redis-server, git, rsync)
 */
import { appendFileSync, existsSync, mkdirSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { tempDir } from '../helpers/temp';
import { generateTree, mustRun, runCommand } from '../helpers/tree-gen';

const TOOL_TIMEOUT_MS = 180_000;
const GIT_TREE = { seed: 3_200, files: 200, dirs: 15, symlinks: 5, modes: true };
const RSYNC_TREE = { seed: 3_300, files: 300, dirs: 20, symlinks: 10, modes: true, mtimes: true, owners: true };

/** The git session, as one shell script; its output must not depend on where it runs. */
const GIT_SCRIPT = String.raw`
set -e
g() { git -c user.name='dfs test' -c user.email=dfs@example.invalid -c init.defaultBranch=main -c gc.auto=0 "$@"; }
g init -q .
g add -A
g commit -q -m 'first commit'
g log --format='%H %s'
echo "status: [$(g status --porcelain)]"
g fsck --full --strict 2>&1
g ls-files -s | sha256sum
one=$(g ls-files | sed -n 3p); two=$(g ls-files | sed -n 7p); three=$(g ls-files | sed -n 11p)
echo "changed" >> "$one"
g mv "$two" moved-by-git
g rm -q "$three"
echo "status: [$(g status --porcelain | sort)]"
g add -A
g commit -q -m 'second commit'
g log --format='%H %s'
g diff --stat HEAD~1 HEAD
g gc -q
g fsck --full --strict 2>&1
g count-objects -v | grep -E '^(count|in-pack|packs|garbage)'
g checkout -q HEAD~1
echo "status after checkout of the first commit: [$(g status --porcelain)]"
if [ -L "$three" ] || [ -e "$three" ]; then echo "the removed entry is back"; fi
g checkout -q main
echo "status back on main: [$(g status --porcelain)]"
g log --oneline | wc -l
`;

let env: MountedCluster | null = null;
let local: { path: string; remove: () => void } | null = null;

function gitEnv(home: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: home,
    LANG: 'C.UTF-8',
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_AUTHOR_DATE: '2020-02-02T12:00:00Z',
    GIT_COMMITTER_DATE: '2020-02-02T12:00:00Z',
  };
}

/** rsync's itemized output of a dry run: one line per thing it would change. */
function rsyncItemize(from: string, to: string, extra: string[] = []): string {
  return mustRun('rsync', ['-a', '-n', '-i', ...extra, `${from}/`, `${to}/`], { timeoutMs: TOOL_TIMEOUT_MS }).trim();
}

test.before(async () => {
  local = tempDir('tools');
  // One mount and bulk work: the attribute cache a user would turn on for it (README,
  // dfs-mount); the strict default is the conformance suite's.
  env = await startMountedCluster({ prefix: 'tools', mounts: ['m'], mountArgs: ['--attr-timeout-ms', '1000'] });
});

test.after(async () => {
  await env?.stop();
  local?.remove();
});

test('git init, add, commit, log, gc, fsck, checkout on 200 files: the same output and commit IDs as on the local disk', () => {
  const home = join(local!.path, 'home');
  mkdirSync(home);
  const localRepo = join(local!.path, 'repo');
  const mountRepo = join(env!.mountpoints[0]!, 'repo');
  mkdirSync(localRepo);
  mkdirSync(mountRepo);
  generateTree(localRepo, GIT_TREE);
  generateTree(mountRepo, GIT_TREE);
  const want = runCommand('sh', ['-c', GIT_SCRIPT], { cwd: localRepo, env: gitEnv(home), timeoutMs: TOOL_TIMEOUT_MS });
  assert.is(want.status, 0, `the git script fails on the local disk:\n${want.stderr}`);
  const got = runCommand('sh', ['-c', GIT_SCRIPT], { cwd: mountRepo, env: gitEnv(home), timeoutMs: TOOL_TIMEOUT_MS });
  process.stdout.write(`git script: ${want.ms} ms locally, ${got.ms} ms in the mount\n`);
  assert.fixture(`${got.stdout}exit ${got.status}\n${got.stderr}`, `${want.stdout}exit ${want.status}\n${want.stderr}`);
});

test('rsync -a into the mount and back out: diff -r finds nothing, an itemized dry run nothing to change', () => {
  const rsync = runCommand('rsync', ['--version']);
  assert.is(rsync.status, 0, 'rsync is installed (scripts/setup.sh must install it)');
  const src = join(local!.path, 'rsync-src');
  const back = join(local!.path, 'rsync-back');
  const inMount = join(env!.mountpoints[0]!, 'rsync-dst');
  mkdirSync(src);
  generateTree(src, RSYNC_TREE);

  const into = runCommand('rsync', ['-a', `${src}/`, `${inMount}/`], { timeoutMs: TOOL_TIMEOUT_MS });
  process.stdout.write(`rsync -a into the mount: ${into.ms} ms\n`);
  assert.is(into.status, 0, `rsync into the mount failed:\n${into.stderr}`);
  const out = runCommand('rsync', ['-a', `${inMount}/`, `${back}/`], { timeoutMs: TOOL_TIMEOUT_MS });
  assert.is(out.status, 0, `rsync out of the mount failed:\n${out.stderr}`);

  const diff = runCommand('diff', ['-r', '--no-dereference', src, back], { timeoutMs: TOOL_TIMEOUT_MS });
  assert.is(`${diff.stdout}${diff.stderr}`, '', 'diff -r of the source and the round trip');
  assert.is(diff.status, 0);
  assert.is(rsyncItemize(src, inMount), '', 'rsync -a -n -i: nothing differs between the source and the mount (times, modes, owners, sizes, links)');
  assert.is(rsyncItemize(src, inMount, ['-c']), '', 'rsync -a -n -i -c: no content differs');
  assert.is(rsyncItemize(inMount, back), '', 'rsync -a -n -i: nothing differs between the mount and the copy made from it');
});

test('rsync -a after changes transfers exactly what it transfers into a local copy', () => {
  const src = join(local!.path, 'rsync-src');
  const inMount = join(env!.mountpoints[0]!, 'rsync-dst');
  assert.ok(existsSync(inMount), 'the first rsync happened');
  const localCopy = join(local!.path, 'rsync-local-copy');
  mustRun('rsync', ['-a', `${src}/`, `${localCopy}/`]);
  // Change some files: content (same size and time too, which only -c would notice, is not
  // done: rsync -a skips it on both sides alike), times and modes.
  const files = mustRun('find', [src, '-type', 'f'])
    .split('\n')
    .filter((line) => line !== '')
    .sort();
  files.slice(0, 5).forEach((file) => appendFileSync(file, 'appended\n'));
  files.slice(5, 10).forEach((file, i) => utimesSync(file, 1_200_000_000 + i, 1_200_000_000 + i));
  files.slice(10, 15).forEach((file) => mustRun('chmod', ['g+w,o-r', file]));
  const format = ['--out-format=%i %n%L'];
  const want = mustRun('rsync', ['-a', ...format, `${src}/`, `${localCopy}/`]).split('\n').sort().join('\n');
  const got = mustRun('rsync', ['-a', ...format, `${src}/`, `${inMount}/`], { timeoutMs: TOOL_TIMEOUT_MS }).split('\n').sort().join('\n');
  assert.fixture(got, want);
  assert.is(rsyncItemize(src, inMount), '', 'nothing left to change');
});

if (existsSync('/dev/fuse')) {
  test.run();
} else {
  process.stdout.write('no /dev/fuse: the tools suite cannot run here\n');
  process.exitCode = 1;
}
