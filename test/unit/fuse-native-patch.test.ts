/*
 * scripts/build-fuse-native.js, which applies patches/fuse-native+2.2.6.patch to
 * node_modules/fuse-native and builds the addon: the patch applies to the package as
 * published, applying it again changes nothing, a package changed some other way is
 * refused, and this work tree's build is current. The published files are rebuilt by
 * reverse-applying the patch to a copy of the installed ones, in a temp dir.
 *
 *   node dist/test/unit/fuse-native-patch.test.js      (after scripts/setup.sh; needs GNU patch)
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { FUSE_NATIVE_PATCH_LEVEL } from '../../mount/fuse-mount';

const REPO_ROOT = resolve(__dirname, '..', '..', '..');
const SCRIPT = join(REPO_ROOT, 'scripts', 'build-fuse-native.js');
// A plain script, not part of the TypeScript build.
const build = require(SCRIPT) as {
  applyPatch(pkgDir: string, patchFile?: string): 'applied' | 'already';
  patchedFiles(patchText: string): string[];
  PATCH_FILE: string;
  PRISTINE_DIR: string;
};
const INSTALLED = dirname(require.resolve('fuse-native/package.json', { paths: [REPO_ROOT] }));
const FILES = build.patchedFiles(readFileSync(build.PATCH_FILE, 'utf8'));

const dirs: string[] = [];
test.after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** A package dir holding the patched files as installed here, turned back into the published ones. */
function publishedCopy(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dfs-fuse-native-patch-'));
  dirs.push(dir);
  for (const file of FILES) copyFileSync(join(INSTALLED, file), join(dir, file));
  const r = spawnSync('patch', ['-p1', '--batch', '--silent', '--reverse', '-i', build.PATCH_FILE], { cwd: dir, encoding: 'utf8' });
  assert.is(r.status, 0, `the patch reverses cleanly from the installed files: ${r.stdout}${r.stderr}`);
  return dir;
}

const read = (dir: string, file: string) => readFileSync(join(dir, file), 'utf8');

test('the patch touches fuse-native.c and index.js, and fixes the utimens bug', () => {
  assert.equal([...FILES].sort(), ['fuse-native.c', 'index.js']);
  const published = publishedCopy();
  // 2.2.6 passed the access time as both times.
  assert.match(read(published, 'fuse-native.c'), 'FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)');
  assert.not.match(read(published, 'index.js'), 'DFS_PATCH_LEVEL');
  assert.not.match(read(INSTALLED, 'fuse-native.c'), 'FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)');
  assert.match(read(INSTALLED, 'fuse-native.c'), 'ops.flag_utime_omit_ok = 1;');
});

test('applying it to the published files gives the installed ones; applying again changes nothing', () => {
  const dir = publishedCopy();
  assert.is(build.applyPatch(dir), 'applied');
  for (const file of FILES) {
    assert.is(read(dir, file), read(INSTALLED, file), `${file} is patched as installed`);
    assert.ok(existsSync(join(dir, build.PRISTINE_DIR, file)), `the published ${file} is kept`);
  }
  assert.is(build.applyPatch(dir), 'applied', 'again: from the kept published files');
  for (const file of FILES) assert.is(read(dir, file), read(INSTALLED, file), `${file} is patched once`);
});

test('files patched by hand, with no published copy kept, count as already patched', () => {
  const dir = publishedCopy();
  const r = spawnSync('patch', ['-p1', '--batch', '--silent', '-i', build.PATCH_FILE], { cwd: dir, encoding: 'utf8' });
  assert.is(r.status, 0);
  assert.is(build.applyPatch(dir), 'already');
  for (const file of FILES) assert.is(read(dir, file), read(INSTALLED, file));
});

test('a package changed some other way is refused, not patched over', () => {
  const dir = publishedCopy();
  const c = read(dir, 'fuse-native.c').replace('FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)', 'FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)');
  writeFileSync(join(dir, 'fuse-native.c'), c);
  assert.throws(() => build.applyPatch(dir), /neither fuse-native 2\.2\.6 as published nor patched/);
});

test('the patch level is the same in the C source, index.js, the build script and the mount', () => {
  const patch = readFileSync(build.PATCH_FILE, 'utf8');
  const c = /^\+static const uint32_t dfs_patch_level = (\d+);$/m.exec(patch);
  const js = /^\+const DFS_PATCH_LEVEL = (\d+)$/m.exec(patch);
  assert.ok(c && js, 'the patch sets both levels');
  assert.is(Number(c![1]), FUSE_NATIVE_PATCH_LEVEL);
  assert.is(Number(js![1]), FUSE_NATIVE_PATCH_LEVEL);
  assert.is((require(SCRIPT) as { PATCH_LEVEL: number }).PATCH_LEVEL, FUSE_NATIVE_PATCH_LEVEL);
});

test('this work tree has the patched addon built (the script has nothing to do)', () => {
  const r = spawnSync(process.execPath, [SCRIPT, '--check'], { encoding: 'utf8' });
  assert.is(r.status, 0, r.stdout + r.stderr);
  // And the package loads as the patched one, at the level the mount is written for.
  assert.is((require(INSTALLED) as { DFS_PATCH_LEVEL?: number }).DFS_PATCH_LEVEL, FUSE_NATIVE_PATCH_LEVEL);
});

test.run();
