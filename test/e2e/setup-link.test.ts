/*
 * Two checkouts on one machine (issue 20): the `dfs` on the PATH stays the user's. Clone A
 * runs its setup and gets the links; clone B runs `.ci/run` (as CI does in a temporary
 * clone) and leaves them alone, and its tests run B's own bin/ first on the PATH; `setup
 * --link` in B takes them over when asked; once B is deleted, A's setup takes back the
 * dangling links. Through them, `dfs --help` and `dfs local up --mount DIR` run A's code.
 *
 * It is real but cheap: the clones are `git clone --shared` of this checkout's HEAD (so
 * commit first), with node_modules linked to this checkout's and A's dist/ copied from it;
 * setup.sh and .ci/run run for real with the links in a temp $DFS_BIN_DIR, and only `npm`
 * is a stub on the PATH that records how it was called (the build and the suites are not
 * what this tests, and would take the full test run again).
 *
 *   node dist/test/e2e/setup-link.test.js      (root, /dev/fuse, after npm run build)
 */
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readClusterFile, REPO_ROOT, stopRecorded } from '../../cli/local-cluster';
import { isFuseMounted, unmountFuse } from '../../cli/mounts';
import { cleanupsFor } from '../helpers/cleanups';

/** setup.sh checks packages and the fuse-native build; `local up` waits for a cluster and a mount. */
const COMMAND_TIMEOUT_MS = 120_000;

const cleanups = cleanupsFor(test);

interface Result {
  code: number | null;
  output: string;
}

function run(command: string, args: string[], options: { cwd: string; env: NodeJS.ProcessEnv }): Promise<Result> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(command, args, { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} ran over ${COMMAND_TIMEOUT_MS} ms:\n${output}`));
    }, COMMAND_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, output });
    });
  });
}

async function cloneOf(root: string, name: string): Promise<string> {
  const dir = join(root, name);
  const clone = await run('git', ['clone', '--quiet', '--shared', REPO_ROOT, dir], { cwd: root, env: process.env });
  assert.is(clone.code, 0, `git clone: ${clone.output}`);
  symlinkSync(join(REPO_ROOT, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

test('setup links into an empty bin dir; CI in a second clone leaves the links alone; dfs then runs the first clone', async () => {
  assert.ok(existsSync(join(REPO_ROOT, '.git')), 'this test clones the checkout it runs from');
  const root = mkdtempSync(join(tmpdir(), 'dfs-setup-link-'));
  cleanups.push(() => rmSync(root, { recursive: true, force: true }));
  const binDir = join(root, 'bin');
  const npmLog = join(root, 'npm.log');
  // The stub npm: one line per call, with where it ran, its arguments, and what `dfs` is then.
  writeFileSync(
    join(root, 'npm'),
    `#!/usr/bin/env bash\nprintf '%s|%s|%s\\n' "$PWD" "$*" "$(command -v dfs || echo none)" >> ${JSON.stringify(npmLog)}\n`,
  );
  chmodSync(join(root, 'npm'), 0o755);
  const env = { ...process.env, DFS_BIN_DIR: binDir, PATH: `${root}:${process.env.PATH}`, CI: 'true' };
  const linkOf = (command: string) => readlinkSync(join(binDir, command));

  const a = await cloneOf(root, 'a');
  cpSync(join(REPO_ROOT, 'dist'), join(a, 'dist'), { recursive: true });
  const b = await cloneOf(root, 'b');

  // A first: nothing is linked yet, so it links.
  const setupA = await run('bash', [join(a, 'scripts', 'setup.sh')], { cwd: a, env });
  assert.is(setupA.code, 0, setupA.output);
  assert.is(linkOf('dfs'), join(a, 'bin', 'dfs'));
  assert.is(linkOf('dfs-mount'), join(a, 'bin', 'dfs-mount'));
  assert.match(setupA.output, `linked ${join(binDir, 'dfs')} -> ${join(a, 'bin', 'dfs')} (was: none)`);

  // CI in B: the links stay A's, and `npm test` runs with B's bin/ first on the PATH.
  const ci = await run('bash', [join(b, '.ci', 'run')], { cwd: b, env });
  assert.is(ci.code, 0, ci.output);
  assert.is(linkOf('dfs'), join(a, 'bin', 'dfs'));
  assert.is(linkOf('dfs-mount'), join(a, 'bin', 'dfs-mount'));
  assert.match(ci.output, `left ${join(binDir, 'dfs')} as it is (--no-link)`);
  const calls = readFileSync(npmLog, 'utf8').trim().split('\n').map((line) => line.split('|'));
  const testCall = calls.find(([cwd, args]) => cwd === b && args === 'test');
  assert.ok(testCall, `.ci/run ran npm test in B: ${JSON.stringify(calls)}`);
  assert.is(testCall![2], join(b, 'bin', 'dfs'), 'the tests find B\'s own dfs first');

  // Setup in B without --link leaves a working link to another checkout; --link takes it.
  const setupB = await run('bash', [join(b, 'scripts', 'setup.sh')], { cwd: b, env });
  assert.is(setupB.code, 0, setupB.output);
  assert.is(linkOf('dfs'), join(a, 'bin', 'dfs'));
  assert.match(setupB.output, 'run scripts/setup.sh --link to point it at this checkout');
  const linkB = await run('bash', [join(b, 'scripts', 'setup.sh'), '--link'], { cwd: b, env });
  assert.is(linkB.code, 0, linkB.output);
  assert.is(linkOf('dfs'), join(b, 'bin', 'dfs'));

  // B is deleted: its links dangle, and A's setup takes them back.
  rmSync(b, { recursive: true, force: true });
  const againA = await run('bash', [join(a, 'scripts', 'setup.sh')], { cwd: a, env });
  assert.is(againA.code, 0, againA.output);
  assert.is(linkOf('dfs'), join(a, 'bin', 'dfs'));
  assert.match(againA.output, 'which no longer exists');

  // What the PATH now calls `dfs` is A's, and it works.
  const user = { ...env, PATH: `${binDir}:${process.env.PATH}` };
  const help = await run('dfs', ['--help'], { cwd: root, env: user });
  assert.is(help.code, 0, help.output);
  assert.match(help.output, 'dfs local up');

  const dataDir = join(root, 'data');
  const mountpoint = join(root, 'mnt');
  cleanups.push(async () => {
    const description = readClusterFile(dataDir);
    if (description !== null) await stopRecorded(description);
    if (isFuseMounted(mountpoint)) await unmountFuse(mountpoint);
  });
  const up = await run('dfs', ['local', 'up', '--data', dataDir, '--nodes', '1', '--proxies', '1', '--mount', mountpoint], { cwd: root, env: user });
  assert.is(up.code, 0, up.output);
  assert.ok(isFuseMounted(mountpoint), 'the cluster is mounted');
  writeFileSync(join(mountpoint, 'hello.txt'), 'hello\n');
  assert.is(readFileSync(join(mountpoint, 'hello.txt'), 'utf8'), 'hello\n');
  const description = readClusterFile(dataDir);
  assert.ok(description !== null);
  for (const record of description!.processes) {
    if (record.kind === 'redis') continue;
    // The script node runs: the first argument after node's own flags.
    const script = record.argv.slice(1).find((arg) => !arg.startsWith('--'));
    assert.ok(script !== undefined && script.startsWith(join(a, '')), `${record.kind} ${record.id} runs A's code: ${record.argv.join(' ')}`);
  }
  const down = await run('dfs', ['local', 'down', '--data', dataDir], { cwd: root, env: user });
  assert.is(down.code, 0, down.output);
  assert.not.ok(isFuseMounted(mountpoint), 'down unmounted it');
});

test.run();
