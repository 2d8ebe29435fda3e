/*
 * `dfs local up --mount` and the harness's mount, end to end through a real FUSE mount:
 * a file written at the mount point lands, byte for byte, in every storage node's brick;
 * `dfs local status` reports the mount and its process; `dfs local down` (and the
 * harness's stop) leaves no mount and none of the processes behind.
 *
 *   node dist/test/e2e/local-mount.test.js      (root, /dev/fuse, after npm run build)
 */
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clusterFilePath, readClusterFile, startCluster, stopRecorded } from '../../cli/local-cluster';
import { isFuseMounted } from '../../cli/mounts';
import { isRunning, pollUntil } from '../../cli/processes';
import { cleanupsFor } from '../helpers/cleanups';
import { runDfs as runCli } from '../helpers/dfs-cli';

const CONVERGE_MS = 10_000;

const cleanups = cleanupsFor(test);

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dfs-local-mount-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Whatever a test leaves mounted or running under `dataDir` goes, even when it failed. */
function cleanUpAfter(dataDir: string, mountpoint: string): void {
  cleanups.push(async () => {
    const description = readClusterFile(dataDir);
    if (description !== null) await stopRecorded(description);
    if (isFuseMounted(mountpoint)) spawnSync('fusermount', ['-uz', mountpoint]);
  });
}

/** Waits until every brick holds `relative` with exactly `content`. */
async function convergedOnBricks(brickDirs: string[], relative: string, content: Buffer): Promise<string[]> {
  const differing = () =>
    brickDirs.filter((brick) => {
      try {
        return !readFileSync(join(brick, relative)).equals(content);
      } catch {
        return true;
      }
    });
  await pollUntil(() => (differing().length === 0 ? true : undefined), CONVERGE_MS);
  return differing();
}

test('dfs local up --mount: a file written at the mount point is in every brick; down leaves nothing', async () => {
  const root = tempDir();
  const dataDir = join(root, 'data');
  const mountpoint = join(root, 'mnt');
  cleanUpAfter(dataDir, mountpoint);

  const up = await runCli(['local', 'up', '--data', dataDir, '--mount', mountpoint]);
  assert.is(up.code, 0, `dfs local up --mount failed:\n${up.stdout}\n${up.stderr}`);
  assert.ok(isFuseMounted(mountpoint), `${mountpoint} is a FUSE mount`);

  const status = await runCli(['local', 'status', '--data', dataDir, '--json']);
  assert.is(status.code, 0, status.stdout + status.stderr);
  const parsed = JSON.parse(status.stdout) as {
    processes: Array<{ kind: string; pid: number; alive: boolean; brickDir?: string }>;
    mounts: Array<{ mountpoint: string; pid: number | null; alive: boolean; mounted: boolean }>;
  };
  assert.is(parsed.mounts.length, 1);
  assert.is(parsed.mounts[0]!.mountpoint, mountpoint);
  assert.ok(parsed.mounts[0]!.mounted && parsed.mounts[0]!.alive, 'the mount and its process are reported');
  assert.ok(parsed.processes.some((entry) => entry.kind === 'mount' && entry.alive));

  const content = Buffer.from(`hello from ${process.pid}\n`.repeat(1000));
  writeFileSync(join(mountpoint, 'hello.txt'), content);
  assert.ok(readFileSync(join(mountpoint, 'hello.txt')).equals(content), 'read back through the mount');
  const bricks = parsed.processes.filter((entry) => entry.kind === 'storage').map((entry) => entry.brickDir!);
  assert.is(bricks.length, 3);
  const differing = await convergedOnBricks(bricks, 'hello.txt', content);
  assert.equal(differing, [], 'every brick holds the file');

  const pids = parsed.processes.map((entry) => entry.pid);
  const down = await runCli(['local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, down.stdout + down.stderr);
  assert.not.ok(isFuseMounted(mountpoint), 'down unmounts');
  assert.ok(await pollUntil(() => (pids.every((pid) => !isRunning(pid)) ? true : undefined), 15_000), 'down stops every process');
  assert.not.ok(existsSync(clusterFilePath(dataDir)));
});

/** Runs a Python snippet as uid/gid 1234 (no /etc/passwd entry needed); its output. */
function asUser1234(script: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync('setpriv', ['--reuid=1234', '--regid=1234', '--clear-groups', '--inh-caps=-all', '/usr/bin/python3', '-c', script], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

const TRY_AS_USER = (body: string) => `
import os, errno
def T(f):
    try:
        r = f()
        print('ok', r if r is not None else '')
    except OSError as e:
        print(errno.errorcode[e.errno])
${body}
`;

test('dfs local up --mount as root lets every user in, the kernel checking permissions; --private keeps it to root', async () => {
  const root = tempDir();
  chmodSync(root, 0o755); // the user must reach the mount point
  const dataDir = join(root, 'data');
  const mountpoint = join(root, 'mnt');
  cleanUpAfter(dataDir, mountpoint);
  const up = await runCli(['local', 'up', '--data', dataDir, '--mount', mountpoint]);
  assert.is(up.code, 0, `dfs local up --mount failed:\n${up.stdout}\n${up.stderr}`);
  mkdirSync(join(mountpoint, 'open'));
  chmodSync(join(mountpoint, 'open'), 0o777);
  writeFileSync(join(mountpoint, 'secret'), 'root only', { mode: 0o600 });

  const user = asUser1234(
    TRY_AS_USER(`
os.chdir('${mountpoint}/open')
T(lambda: open('mine', 'w').write('hello from 1234'))
T(lambda: open('mine').read())
T(lambda: os.stat('mine').st_uid)
T(lambda: os.unlink('mine'))
T(lambda: os.listdir('.'))
T(lambda: open('${mountpoint}/secret').read())
`),
  );
  assert.is(user.code, 0, user.stderr);
  assert.is(user.stdout, 'ok 15\nok hello from 1234\nok 1234\nok \nok []\nEACCES\n');
  const down = await runCli(['local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, down.stdout + down.stderr);

  const upPrivate = await runCli(['local', 'up', '--data', dataDir, '--mount', mountpoint, '--private']);
  assert.is(upPrivate.code, 0, `dfs local up --mount --private failed:\n${upPrivate.stdout}\n${upPrivate.stderr}`);
  assert.ok(existsSync(join(mountpoint, 'open')), 'root still reaches it');
  const denied = asUser1234(TRY_AS_USER(`T(lambda: os.listdir('${mountpoint}/open'))`));
  assert.is(denied.stdout, 'EACCES\n', denied.stderr);
});

test('the harness mounts with dfs-mount -f, and stop unmounts even with a file open', async () => {
  const root = tempDir();
  const dataDir = join(root, 'data');
  const mountpoint = join(root, 'mnt');
  cleanUpAfter(dataDir, mountpoint);

  const cluster = await startCluster({ dataDir, nodes: 2, proxies: 1 });
  cleanups.push(() => cluster.stop());
  const mount = await cluster.mount(mountpoint);
  assert.ok(isFuseMounted(mountpoint));
  assert.ok(isRunning(mount.pid));

  writeFileSync(join(mountpoint, 'a.txt'), 'a');
  // A process holding a file open on the mount must not make stop hang or fail.
  const holder = spawn('sleep', ['60'], { cwd: mountpoint, stdio: 'ignore' });
  cleanups.push(() => {
    holder.kill('SIGKILL');
  });
  const pids = cluster.records().map((record) => record.pid);
  await cluster.stop();
  assert.not.ok(isFuseMounted(mountpoint), 'stop unmounts a busy mount (lazily)');
  assert.ok(await pollUntil(() => (pids.every((pid) => !isRunning(pid)) ? true : undefined), 15_000));
});

test.run();
