/*
 * A local cluster run by an ordinary user (issue 13, acceptance 3): `dfs local up` as a
 * uid with no privilege, no capabilities and no /etc/passwd entry, in a directory it owns.
 * Every process of the cluster runs as that user; after a setuid chmod and a mknod of a
 * device through the API, no brick holds a setuid or setgid file, a device, FIFO, socket
 * or symlink, and nothing under the data directory has group or other bits. Files made
 * through a mount by that user show its uid, and chmod, touch -d, ln, ln -s, mkfifo and a
 * setgid directory behave as on a local disk.
 *
 * This machine's /dev/fuse is root's alone, so the mount is root's (--allow-other, the
 * kernel checking permissions), and the user works through it; with a /dev/fuse users may
 * open (most distributions), `dfs local up --mount ~/dfs` mounts as the user too.
 *
 *   node dist/test/e2e/unprivileged.test.js   (root, setpriv, /dev/fuse)
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readClusterFile, stopRecorded } from '../../cli/local-cluster';
import { certFiles } from '../../cli/certs';
import { useAdminCredential } from '../../cli/cluster-processes';
import { isFuseMounted } from '../../cli/mounts';
import { pollUntil } from '../../cli/processes';
import { cleanupsFor } from '../helpers/cleanups';
import { DFS_BIN } from '../helpers/dfs-cli';
import { TestClient } from '../helpers/client';

const USER = 4242;
const DFS_MOUNT_BIN = join(DFS_BIN, '..', 'dfs-mount');
const cleanups = cleanupsFor(test);

/** Runs argv as USER: no groups, no capabilities, its own HOME. */
function asUser(home: string, argv: string[], timeoutMs = 120_000): { code: number | null; out: string } {
  const r = spawnSync('setpriv', [`--reuid=${USER}`, `--regid=${USER}`, '--clear-groups', '--inh-caps=-all', 'env', `HOME=${home}`, ...argv], { encoding: 'utf8', timeout: timeoutMs });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

function statusField(pid: number, field: string): string {
  const m = new RegExp(`^${field}:\\s+(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `${field} of ${pid}`);
  return m[1]!;
}

/** The same steps in a local directory and in the mount, as USER; their `stat` lines. */
const SCRIPT = `set -e
cd "$1"
umask 022
echo hello > f
chmod 4755 f
touch -d '2001-02-03 04:05:06.123456789' f
ln f h
mkfifo p
ln -s f s
mkdir d
chmod 2775 d
touch d/x
mkdir -p sticky && chmod 1777 sticky
stat -c '%n %A %u %g %h %s %y' f h
stat -c '%n %A %u %g %h %s' p s d/x
stat -c '%n %A %u %g' d sticky
`;

test('an ordinary user runs the whole cluster: no privilege, safe bricks, private state, files that behave as on a local disk', async () => {
  const home = mkdtempSync(join(tmpdir(), 'dfs-unprivileged-'));
  chownSync(home, USER, USER);
  chmodSync(home, 0o700);
  const dataDir = join(home, 'data');
  const mountpoint = join(home, 'mnt');
  let mount: ChildProcess | null = null;
  cleanups.push(async () => {
    mount?.kill('SIGTERM');
    if (isFuseMounted(mountpoint)) spawnSync('fusermount', ['-uz', mountpoint]);
    const description = readClusterFile(dataDir);
    if (description !== null) await stopRecorded(description);
    rmSync(home, { recursive: true, force: true });
  });

  const up = asUser(home, [process.execPath, DFS_BIN, 'local', 'up', '--data', dataDir]);
  assert.is(up.code, 0, up.out);
  const cluster = readClusterFile(dataDir)!;
  // The cluster is TLS, with the CA and certificates `up` made under its data directory:
  // this process acts with its admin credential, as `dfs` run by root on that host would.
  useAdminCredential(cluster);
  assert.ok(cluster.tlsDir, 'a TLS cluster');
  const admin = certFiles(cluster.tlsDir, 'admin');
  const running = cluster.processes.filter((p) => p.kind !== 'mount');
  assert.ok(running.length >= 6, `redis, 3 nodes, 2 proxies, the supervisor: ${running.map((p) => p.kind).join(' ')}`);
  for (const p of running) {
    assert.is(statusField(p.pid, 'Uid').split(/\s+/)[0], String(USER), `${p.kind} ${p.id} runs as the user`);
    assert.is(statusField(p.pid, 'CapEff'), '0000000000000000', `${p.kind} ${p.id} has no capabilities`);
  }

  // Root, through the API: a setuid file and a device node.
  const api = new TestClient(cluster.proxyUrls[0]!);
  try {
    const ok = async (op: Parameters<TestClient['op']>[0]) => {
      const a = await api.op(op);
      assert.is(a.status, 200, JSON.stringify(a.json));
      assert.is(a.json.errno, undefined, JSON.stringify(op));
    };
    await ok({ type: 'create', path: '/suid', mode: 0o755, uid: 0, gid: 0, exclusive: true });
    await ok({ type: 'chmod', path: '/suid', mode: 0o4755 });
    await ok({ type: 'mkdir', path: '/sgid', mode: 0o2755, uid: 0, gid: 0 });
    await ok({ type: 'mknod', path: '/mem', mode: 0o020600, rdev: (1 << 8) | 1, uid: 0, gid: 0 });
    assert.is((await api.get('/v1/attr', { path: '/suid' })).json.mode, 0o104755, 'the cluster keeps the setuid bit');
    assert.is((await api.get('/v1/attr', { path: '/mem' })).json.mode, 0o020600, 'and the device');
  } finally {
    await api.close();
  }

  // The mount (root's, see the header) and the same steps as the user in both places.
  mkdirSync(mountpoint);
  mount = spawn(process.execPath, [DFS_MOUNT_BIN, mountpoint, '--proxy', cluster.proxyUrls.join(','), '-f', '--allow-other', '--ca', admin.ca, '--cert', admin.cert, '--key', admin.key], { stdio: 'ignore' });
  await pollUntil(() => (isFuseMounted(mountpoint) ? true : undefined), 30_000);
  const local = join(home, 'local');
  mkdirSync(local);
  chownSync(local, USER, USER);
  const onDisk = asUser(home, ['sh', '-c', SCRIPT, 'sh', local]);
  assert.is(onDisk.code, 0, onDisk.out);
  const onDfs = asUser(home, ['sh', '-c', SCRIPT, 'sh', mountpoint]);
  assert.is(onDfs.code, 0, onDfs.out);
  process.stdout.write(`as uid ${USER} through the mount:\n${onDfs.out}`);
  assert.is(onDfs.out, onDisk.out, 'the same as on a local disk');
  assert.match(onDfs.out, new RegExp(`^f -rwsr-xr-x ${USER} ${USER} 2 6 2001-02-03 04:05:06.123456789`, 'm'));

  // What the bricks and the data directory hold.
  const find = (...args: string[]) => spawnSync('find', [dataDir, ...args], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean);
  const setid = find('-perm', '/6000');
  const special = find('(', '-type', 'b', '-o', '-type', 'c', '-o', '-type', 'p', '-o', '-type', 's', '-o', '-type', 'l', ')');
  const groupOrOther = find('-perm', '/077');
  const notTheUsers = find('!', '-uid', String(USER));
  process.stdout.write(`find ${dataDir}: -perm /6000: ${setid.length}; devices, FIFOs, sockets, symlinks: ${special.length}; group/other bits: ${groupOrOther.length}; not the user's: ${notTheUsers.length}\n`);
  assert.equal(setid, [], 'no setuid or setgid file on any brick');
  assert.equal(special, [], 'no device, FIFO, socket or symlink');
  assert.equal(groupOrOther, [], 'every state file 0600 and directory 0700');
  assert.equal(notTheUsers, [], "everything is the user's own");

  const down = asUser(home, [process.execPath, DFS_BIN, 'local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, down.out);
});

test.run();
