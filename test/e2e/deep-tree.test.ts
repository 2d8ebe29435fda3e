/*
 * A tree deeper than PATH_MAX through a real mount (issue 19): built 16 KiB deep with chdir
 * and relative names, as a local disk allows; files written, read back, renamed across
 * levels, chmod'ed and hard-linked. A fourth storage node added afterwards copies it by
 * full sync, and `dfs verify` finds it identical to the others; `rm -rf` through the mount
 * removes it everywhere.
 *
 *   node dist/test/e2e/deep-tree.test.js      (root, /dev/fuse, redis-server, python3)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pollFor, startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { runDfs, type CliResult } from '../helpers/dfs-cli';

const PYTHON = '/usr/bin/python3';
/** How long the fourth node may take to copy the tree and join the in-sync set. */
const JOIN_TIMEOUT_MS = 120_000;
/** 82 levels of 200-byte names: about 16.5 KiB below the mount's root. */
const LEVELS = 82;
const NAME = (i: number) => String(i).padStart(3, '0') + 'e'.repeat(197);

let env: MountedCluster | null = null;

test.after(async () => {
  await env?.stop();
});

/** Runs a Python script with `cwd` as its working directory; fails the test if it fails. */
function python(cwd: string, script: string): string {
  const r = spawnSync(PYTHON, ['-c', script], { cwd, encoding: 'utf8', timeout: 120_000 });
  assert.is(r.status, 0, `python failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

async function verify(dataDir: string): Promise<CliResult> {
  return runDfs(['verify', '--data', dataDir]);
}

test('a 16 KiB deep tree: built with chdir, renamed across levels, hard-linked, copied to a new node by full sync, removed with rm -rf', async () => {
  env = await startMountedCluster({ prefix: 'deep', mounts: ['M'] });
  const mnt = env.mountpoints[0]!;
  const out = python(
    mnt,
    String.raw`
import os
for i in range(${LEVELS}):
    name = '%03d' % i + 'e' * 197
    os.mkdir(name)
    os.chdir(name)
    if i % 10 == 0:
        with open('f%03d' % i, 'wb') as f:
            f.write(b'level %d' % i)
with open('leaf', 'wb') as f:
    f.write(b'deep leaf' * 1000)
print('depth', len(os.getcwd()) - len('${mnt}'))
print('read', open('leaf', 'rb').read() == b'deep leaf' * 1000)
up = '../' * 40
os.rename('leaf', up + 'moved-up')
os.link(up + 'moved-up', 'linked-down')
os.chmod('linked-down', 0o640)
st = os.stat(up + 'moved-up')
print('link', st.st_nlink, oct(st.st_mode & 0o777))
os.rename(up + '../f040', 'f040-down')
print('moved', open('f040-down', 'rb').read())
print('names', sorted(os.listdir('.')))
`,
  );
  const depth = Number(/depth (\d+)/.exec(out)?.[1]);
  assert.ok(depth > 16 * 1024, `the tree is ${depth} bytes deep`);
  assert.match(out, /read True/);
  assert.match(out, /link 2 0o640/);
  assert.match(out, /moved b'level 40'/);
  assert.match(out, /names \['f040-down', 'linked-down'\]/);

  const dataDir = env.cluster.dataDir;
  const before = await verify(dataDir);
  assert.is(before.code, 0, before.stdout + before.stderr);

  // A fourth node copies every brick entry, the deep ones too, and joins the in-sync set.
  const n4 = await env.cluster.addNode();
  const joined = await pollFor(`${n4.id} to join and verify identical`, JOIN_TIMEOUT_MS, async () => {
    const v = await verify(dataDir);
    return v.code === 0 && new RegExp(`^\\s+${n4.id}: \\d+ entries`, 'm').test(v.stdout) ? v : undefined;
  });
  assert.match(joined.stdout, /identical/);
  const counts = [...joined.stdout.matchAll(/^\s+(n\d+): (\d+) entries/gm)].map((m) => [m[1], Number(m[2])] as const);
  assert.is(counts.length, 4, joined.stdout);
  assert.ok(counts.every(([, n]) => n === counts[0]![1] && n > LEVELS), joined.stdout);
  // Identical manifests say the new brick holds all of it; its top is within reach here.
  assert.ok(lstatSync(join(n4.brickDir, NAME(0), NAME(1))).isDirectory(), 'the tree is in the new brick');

  const rm = spawnSync('rm', ['-rf', NAME(0)], { cwd: mnt, encoding: 'utf8' });
  assert.is(rm.status, 0, rm.stderr);
  assert.not.ok(existsSync(join(mnt, NAME(0))));
  const after = await verify(dataDir);
  assert.is(after.code, 0, after.stdout + after.stderr);
  assert.match(after.stdout, new RegExp(`^\\s+${n4.id}: 1 entries`, 'm'), 'only the root is left, on every node');
});

if (existsSync('/dev/fuse') && existsSync(PYTHON)) {
  test.run();
} else {
  process.stdout.write('no /dev/fuse or no python3: this suite cannot run here\n');
  process.exitCode = 1;
}
