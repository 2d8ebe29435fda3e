/*
 * End to end through a real FUSE mount: what the dfs patch to fuse-native
 * (patches/fuse-native+2.2.6.patch) fixes, seen by ordinary commands.
 *
 * What must hold:
 * - `touch -d`, os.utime and `cp -p` set the access and the modification time each as
 *   asked (2.2.6 set both to the access time), in `stat` and in every storage node's brick;
 * - `touch -m -d` changes only the modification time, `touch -a -d` only the access time,
 *   and `touch -a` / `touch` use the current time for the times they set (UTIME_NOW and
 *   UTIME_OMIT reach the mount);
 * - times keep the nanoseconds (2.2.6 kept milliseconds) and may be before 1970;
 * - a file, a node made by mknod, a directory and a symlink created by an unprivileged
 *   process belong to that process's uid and gid, in `stat` and in every brick; what root
 *   creates stays root's.
 * The mount runs with --allow-other so that other users may use it. The cluster, the mount
 * and the temp dir go away after the suite, even when it fails.
 *
 *   node dist/test/e2e/fuse-native-patch.test.js      (root, /dev/fuse, after npm run build)
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { isFuseMounted } from '../../cli/mounts';
import { pollUntil } from '../../cli/processes';
import { attrOf, readMeta } from '../../storage/brick';

const CONVERGE_MS = 10_000;
const COMMAND_TIMEOUT_MS = 30_000;
/** How far "now" set through the mount may be from this process's clock. */
const NOW_SLACK_S = 30;
/** The unprivileged users the ownership tests run as (nobody, and one with a distinct gid). */
const NOBODY = { uid: 65534, gid: 65534 };
const OTHER = { uid: 1000, gid: 2000 };
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

let root = '';
let mnt = '';
let cluster: Cluster | null = null;

// ---- helpers ----------------------------------------------------------------------------

function run(cmd: string, args: string[], cwd = mnt): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { cwd, timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8' });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function mustRun(cmd: string, args: string[], cwd = mnt): string {
  const r = run(cmd, args, cwd);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Runs `cmd` as another user, with no supplementary groups (util-linux setpriv). */
function runAs(user: { uid: number; gid: number }, cmd: string, args: string[]): string {
  return mustRun('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--clear-groups', cmd, ...args]);
}

/** The times of `path` in nanoseconds, as stat(2) reports them through the mount. */
function statNs(path: string): { atimeNs: bigint; mtimeNs: bigint } {
  const st = statSync(path, { bigint: true });
  return { atimeNs: st.atimeNs, mtimeNs: st.mtimeNs };
}

/** `stat -c '%X %Y'`: the access and modification times in whole seconds. */
function statSeconds(path: string): [number, number] {
  const [atime, mtime] = mustRun('stat', ['-c', '%X %Y', path]).trim().split(' ').map(Number);
  return [atime!, mtime!];
}

function owner(path: string): [number, number] {
  const st = lstatSync(path);
  return [st.uid, st.gid];
}

/** Waits until every brick's copy of `relative` satisfies `check`; returns the bricks that do not. */
async function waitForBricks(relative: string, check: (brickPath: string) => boolean): Promise<string[]> {
  const failing = () =>
    cluster!.nodes
      .map((node) => join(node.brickDir, relative))
      .filter((brickPath) => {
        try {
          return !check(brickPath);
        } catch {
          return true;
        }
      });
  await pollUntil(() => (failing().length === 0 ? true : undefined), CONVERGE_MS);
  return failing();
}

// ---- setup and cleanup --------------------------------------------------------------------

/** Runs on any exit, even a crash: detach our mount point. */
function emergencyCleanup(): void {
  if (mnt && isFuseMounted(mnt)) spawnSync('fusermount', ['-uz', mnt]);
}

async function cleanUp(): Promise<void> {
  try {
    await cluster?.stop();
  } catch (err) {
    process.stderr.write(`stopping the cluster failed: ${(err as Error).message}\n`);
  }
  cluster = null;
  emergencyCleanup();
  process.off('exit', emergencyCleanup);
  if (root) rmSync(root, { recursive: true, force: true });
  root = '';
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    process.stderr.write(`${signal}: cleaning up before exiting\n`);
    void cleanUp().finally(() => process.exit(1));
  });
}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'dfs-e2e-fuse-patch-'));
  // Other users must reach the mount point through it.
  chmodSync(root, 0o755);
  process.on('exit', emergencyCleanup);
  cluster = await startCluster({ dataDir: join(root, 'cluster'), nodes: 3, proxies: 1 });
  mnt = join(root, 'mnt');
  mkdirSync(mnt);
  await cluster.mount(mnt, { args: ['--allow-other'] });
});

test.after(cleanUp);

// ---- times --------------------------------------------------------------------------------

test('touch -d sets both times; os.utime sets each as asked, in stat and in every brick', async () => {
  const f = join(mnt, 'times');
  mustRun('touch', ['-d', '@1000000000', f]);
  assert.equal(statSeconds(f), [1_000_000_000, 1_000_000_000]);

  // The times differ: fuse-native 2.2.6 made the modification time the access time.
  mustRun(PYTHON, ['-c', 'import os, sys; os.utime(sys.argv[1], (1000000000, 1500000000))', f]);
  assert.equal(statSeconds(f), [1_000_000_000, 1_500_000_000]);
  const differing = await waitForBricks('times', (p) => lstatSync(p).mtimeMs === 1_500_000_000_000);
  assert.equal(differing, [], 'every brick has the modification time');
});

test('touch -m changes only the modification time, touch -a only the access time', () => {
  const f = join(mnt, 'one-time');
  mustRun('touch', ['-d', '@1000000000', f]);
  mustRun('touch', ['-m', '-d', '@1500000000', f]);
  assert.equal(statSeconds(f), [1_000_000_000, 1_500_000_000], 'touch -m keeps the access time');
  mustRun('touch', ['-a', '-d', '@1200000000', f]);
  assert.equal(statSeconds(f), [1_200_000_000, 1_500_000_000], 'touch -a keeps the modification time');
});

test('touch -a and touch use the current time (UTIME_NOW) for what they set', () => {
  const f = join(mnt, 'now');
  mustRun('touch', ['-d', '@1000000000', f]);
  const nowS = () => Math.floor(Date.now() / 1000);
  mustRun('touch', ['-a', f]);
  const [atime, mtime] = statSeconds(f);
  assert.ok(Math.abs(atime - nowS()) <= NOW_SLACK_S, `access time ${atime} is now (${nowS()})`);
  assert.is(mtime, 1_000_000_000, 'the modification time is left alone');
  mustRun('touch', [f]);
  const [atime2, mtime2] = statSeconds(f);
  assert.ok(Math.abs(atime2 - nowS()) <= NOW_SLACK_S && Math.abs(mtime2 - nowS()) <= NOW_SLACK_S, `both are now: ${atime2} ${mtime2}`);
});

test('times keep their nanoseconds, and may be before 1970', () => {
  const f = join(mnt, 'precise');
  mustRun('touch', [f]);
  const atimeNs = 1_000_000_000_123_456_789n;
  const mtimeNs = 1_500_000_000_987_654_321n;
  mustRun(PYTHON, ['-c', `import os, sys; os.utime(sys.argv[1], ns=(${atimeNs}, ${mtimeNs}))`, f]);
  const st = statNs(f);
  assert.is(st.atimeNs, atimeNs, 'atime to the nanosecond');
  assert.is(st.mtimeNs, mtimeNs, 'mtime to the nanosecond');

  mustRun('touch', ['-d', '@-86400', f]);
  assert.equal(statSeconds(f), [-86_400, -86_400]);
});

test('cp -p keeps the times of what it copies', () => {
  const src = join(root, 'cp-src');
  writeFileSync(src, 'x'.repeat(100_000));
  utimesSync(src, 1_100_000_000, 1_300_000_000);
  mustRun('cp', ['-p', src, join(mnt, 'cp-dst')]);
  assert.equal(statSeconds(join(mnt, 'cp-dst')), [1_100_000_000, 1_300_000_000]);
});

// ---- ownership ----------------------------------------------------------------------------

test('what an unprivileged process creates is its own, in stat and in every brick', async () => {
  const shared = join(mnt, 'shared');
  mkdirSync(shared);
  chmodSync(shared, 0o1777);
  runAs(NOBODY, 'touch', [join(shared, 'file')]);
  runAs(NOBODY, 'mkdir', [join(shared, 'dir')]);
  runAs(NOBODY, 'ln', ['-s', 'file', join(shared, 'link')]);
  runAs(NOBODY, PYTHON, ['-c', 'import os, stat, sys; os.mknod(sys.argv[1], 0o644 | stat.S_IFREG)', join(shared, 'node')]);
  runAs(OTHER, 'mkdir', [join(shared, 'other-dir')]);
  runAs(OTHER, 'sh', ['-c', `echo hello > '${join(shared, 'other-file')}'`]);
  mustRun('touch', [join(shared, 'root-file')]);

  const want: Record<string, [number, number]> = {
    'shared/file': [NOBODY.uid, NOBODY.gid],
    'shared/dir': [NOBODY.uid, NOBODY.gid],
    'shared/link': [NOBODY.uid, NOBODY.gid],
    'shared/node': [NOBODY.uid, NOBODY.gid],
    'shared/other-dir': [OTHER.uid, OTHER.gid],
    'shared/other-file': [OTHER.uid, OTHER.gid],
    'shared/root-file': [0, 0],
  };
  for (const [relative, ids] of Object.entries(want)) {
    assert.equal(owner(join(mnt, relative)), ids, `${relative} through the mount`);
    // On a brick the owner lives in the identity attribute (storage/brick.ts), never on the
    // file, which is the storage node's own.
    const differing = await waitForBricks(relative, (p) => {
      const a = attrOf(lstatSync(p), readMeta(p));
      return a.uid === ids[0] && a.gid === ids[1];
    });
    assert.equal(differing, [], `${relative} in every brick`);
  }
  // The owner may use what it made: nobody writes to its file and into its directory.
  runAs(NOBODY, 'sh', ['-c', `echo data > '${join(shared, 'file')}' && touch '${join(shared, 'dir', 'inner')}'`]);
  assert.equal(owner(join(shared, 'dir', 'inner')), [NOBODY.uid, NOBODY.gid]);
});

test.run();
