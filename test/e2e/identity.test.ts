/*
 * End to end through two real FUSE mounts whose reads are pinned to different storage
 * nodes (dfs-mount --read-node): every node gives the same identity (inode numbers, times,
 * link counts, types) for the same files, so `stat` prints the same through either mount.
 * Also through the mount: the names of a hard link share one inode number, a FIFO made on
 * dfs works as a FIFO, and user.* extended attributes set through one mount are read
 * through the other.
 *
 *   node dist/test/e2e/identity.test.js      (root, /dev/fuse, after npm run build)
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync, symlinkSync, linkSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { isFuseMounted } from '../../cli/mounts';
import { pollUntil } from '../../cli/processes';

const COMMAND_TIMEOUT_MS = 30_000;
const CONVERGE_MS = 15_000;
/** Every field of stat(1) that belongs to the file rather than to the mount (not %d, %m). */
const STAT_FORMAT = '%n|%i|%s|%b|%f|%u|%g|%h|%t|%T|%x|%y|%z';

let root = '';
let cluster: Cluster | null = null;
let m1 = '';
let m2 = '';

function mustRun(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, timeout: COMMAND_TIMEOUT_MS, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function emergencyCleanup(): void {
  for (const m of [m1, m2]) if (m && isFuseMounted(m)) spawnSync('fusermount', ['-uz', m]);
}

test.before(async () => {
  root = mkdtempSync(join(tmpdir(), 'dfs-e2e-identity-'));
  process.on('exit', emergencyCleanup);
  cluster = await startCluster({ dataDir: join(root, 'cluster'), nodes: 3, proxies: 2 });
  m1 = join(root, 'm1');
  m2 = join(root, 'm2');
  mkdirSync(m1);
  mkdirSync(m2);
  await cluster.mount(m1, { args: ['--read-node', cluster.nodes[0]!.id, '--attr-timeout-ms', '0'] });
  await cluster.mount(m2, { args: ['--read-node', cluster.nodes[2]!.id, '--attr-timeout-ms', '0'] });
});

test.after(async () => {
  try {
    await cluster?.stop();
  } finally {
    emergencyCleanup();
    process.off('exit', emergencyCleanup);
    if (root) rmSync(root, { recursive: true, force: true });
  }
});

test('stat of 100 files prints the same through mounts reading from different nodes', async () => {
  const d = join(m1, 'tree');
  mkdirSync(d);
  const names: string[] = [];
  for (let i = 0; i < 100; i++) {
    const name = `tree/f${String(i).padStart(3, '0')}`;
    const p = join(m1, name);
    if (i % 10 === 9) {
      mkdirSync(p, { mode: 0o750 });
    } else if (i % 10 === 8) {
      symlinkSync(`f${i - 1}`, p);
    } else if (i % 10 === 7) {
      linkSync(join(m1, `tree/f${String(i - 1).padStart(3, '0')}`), p);
    } else {
      writeFileSync(p, Buffer.alloc(i * 100, i));
      if (i % 3 === 0) chmodSync(p, 0o600);
    }
    names.push(name);
  }
  mustRun('touch', ['-d', '@1234567890', 'tree/f000'], m1);
  mustRun('mkfifo', ['tree/fifo'], m1);
  names.push('tree/fifo', 'tree', '.');
  const statThrough = (m: string) => mustRun('stat', ['-c', STAT_FORMAT, ...names], m);
  // Node n3 may apply the last ops a moment after n1 answered: poll until they agree, then
  // compare once more so the assertion is about a settled state.
  await pollUntil(() => (statThrough(m1) === statThrough(m2) ? true : undefined), CONVERGE_MS).catch(() => undefined);
  const one = statThrough(m1);
  const two = statThrough(m2);
  assert.fixture(two, one);
  assert.is(one.trim().split('\n').length, names.length);
});

test('the names of a hard link share one inode number; a new file gets a new one', () => {
  writeFileSync(join(m1, 'a'), 'x');
  linkSync(join(m1, 'a'), join(m1, 'b'));
  writeFileSync(join(m1, 'c'), 'y');
  const [a, b, c] = ['a', 'b', 'c'].map((n) => statSync(join(m2, n)).ino);
  assert.is(a, b);
  assert.is.not(a, c);
  assert.is(statSync(join(m1, 'a')).ino, a, 'the same number through either mount');
  assert.is.not(a, statSync(m2).ino, 'no file shares the root directory\'s inode number');
});

test('a FIFO made on dfs passes data from a writer to a reader', async () => {
  mustRun('mkfifo', ['pipe'], m1);
  assert.ok(statSync(join(m2, 'pipe')).isFIFO(), 'a FIFO through the other mount too');
  const reader = spawn('cat', [join(m1, 'pipe')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  reader.stdout.on('data', (c: Buffer) => (out += c.toString()));
  const done = new Promise<number | null>((resolve) => reader.on('close', resolve));
  mustRun('sh', ['-c', 'echo through-the-fifo > pipe'], m1);
  const timer = setTimeout(() => reader.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
  assert.is(await done, 0);
  clearTimeout(timer);
  assert.is(out, 'through-the-fifo\n');
});

test('user.* attributes set through one mount are read through the other', () => {
  writeFileSync(join(m1, 'x'), 'x');
  const py = (script: string, m: string) => mustRun('python3', ['-c', `import os, errno\n${script}`], m);
  py("os.setxattr('x', 'user.colour', b'blue')\nos.setxattr('x', 'user.size', b'')", m1);
  const seen = py(
    [
      "print(sorted(os.listxattr('x')))",
      "print(os.getxattr('x', 'user.colour'))",
      "try:\n  os.setxattr('x', 'user.colour', b'red', os.XATTR_CREATE)\nexcept OSError as e:\n  print(errno.errorcode[e.errno])",
      "try:\n  os.getxattr('x', 'user.none')\nexcept OSError as e:\n  print(errno.errorcode[e.errno])",
      "os.removexattr('x', 'user.size')",
      "print(sorted(os.listxattr('x')))",
      // Over Python's first 128-byte try: it needs ERANGE to ask again with room.
      "os.setxattr('x', 'user.long', b'L' * 1000)",
      "print(len(os.getxattr('x', 'user.long')))",
      "try:\n  os.setxattr('x', 'user.huge', b'H' * 4000)\nexcept OSError as e:\n  print(errno.errorcode[e.errno])",
    ].join('\n'),
    m2,
  );
  assert.is(seen, "['user.colour', 'user.size']\nb'blue'\nEEXIST\nENODATA\n['user.colour']\n1000\nENOSPC\n");
});

test.run();
