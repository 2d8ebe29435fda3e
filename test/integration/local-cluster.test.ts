/*
 * The local cluster launcher and the `dfs local` commands, with real processes: Redis, the
 * storage nodes and the proxies on loopback, in a temp directory.
 *
 * What must hold: a started cluster is recorded in cluster.json with every pid and brick,
 * every recorded process runs and the proxies see all nodes in sync; stopping leaves none
 * of those pids running; `dfs local down` is idempotent and never signals a pid that no
 * longer belongs to the recorded process. Every test cleans up its processes and temp
 * directory even when it fails, and waits by polling conditions with deadlines.
 *
 *   node dist/test/integration/local-cluster.test.js
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  clusterFilePath,
  fetchClusterStatus,
  httpGet,
  readClusterFile,
  startCluster,
  stopRecorded,
  type ClusterFile,
} from '../../cli/local-cluster';
import { isRunning, isSameProcess, pollUntil, processStartTime } from '../../cli/processes';
import { cleanupsFor } from '../helpers/cleanups';
import { runDfs as runCli, type CliResult } from '../helpers/dfs-cli';

const EXIT_WAIT_MS = 15_000;

const cleanups = cleanupsFor(test);

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dfs-local-cluster-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Stops whatever a data directory still records, whatever state a test left it in. */
function stopLeftovers(dataDir: string): void {
  cleanups.push(async () => {
    const description = readClusterFile(dataDir);
    if (description !== null) await stopRecorded(description);
  });
}

async function allExited(pids: number[], timeoutMs = EXIT_WAIT_MS): Promise<boolean> {
  return (await pollUntil(() => (pids.every((pid) => !isRunning(pid)) ? true : undefined), timeoutMs)) === true;
}

function assertNoStackTrace(result: CliResult): void {
  assert.not.match(result.stderr, /\n\s+at /, `expected a one-line error, got:\n${result.stderr}`);
}

test('startCluster records every process, all run, the proxies see every node in sync; stop ends them all', async () => {
  const dataDir = tempDir();
  const cluster = await startCluster({ dataDir, nodes: 3, proxies: 2 });
  cleanups.push(() => cluster.stop());

  const description = readClusterFile(dataDir);
  assert.ok(description, 'cluster.json exists');
  const kinds = description.processes.map((record) => record.kind).sort();
  assert.equal(kinds, ['proxy', 'proxy', 'redis', 'storage', 'storage', 'storage']);
  for (const record of description.processes) {
    assert.ok(record.pid > 0, `${record.id} has a pid`);
    assert.ok(isSameProcess(record), `${record.kind} ${record.id} (pid ${record.pid}) runs`);
    assert.ok(existsSync(record.logFile), `${record.id} logs to ${record.logFile}`);
  }
  for (const node of cluster.nodes) {
    assert.is(node.brickDir, join(dataDir, 'nodes', node.id, 'brick'));
    assert.ok(statSync(node.brickDir).isDirectory(), `${node.brickDir} is a directory`);
    const record = description.processes.find((candidate) => candidate.id === node.id);
    assert.is(record?.brickDir, node.brickDir);
  }
  assert.is(cluster.proxyUrls.length, 2);
  assert.equal(description.proxyUrls, cluster.proxyUrls);

  for (const url of cluster.proxyUrls) {
    const ready = await httpGet(`${url}/readyz`);
    assert.is(ready.status, 200, `${url}/readyz`);
  }
  const view = await fetchClusterStatus(cluster.proxyUrls);
  assert.ok(view, 'a proxy answers /v1/cluster');
  assert.equal([...(view.status.membership?.inSync ?? [])].sort(), ['n1', 'n2', 'n3']);

  const pids = description.processes.map((record) => record.pid);
  await cluster.stop();
  assert.ok(await allExited(pids), `all of ${pids.join(', ')} exited`);
  assert.not.ok(existsSync(clusterFilePath(dataDir)), 'stop removes cluster.json');
});

test('a killed proxy is restarted by the harness and the cluster is ready again', async () => {
  const dataDir = tempDir();
  const cluster = await startCluster({ dataDir, nodes: 1, proxies: 2 });
  cleanups.push(() => cluster.stop());

  const before = cluster.proxies[1]!.pid;
  cluster.killProcess('proxy', 'p2');
  assert.ok(await allExited([before]), 'p2 exited after SIGKILL');
  assert.not.ok(cluster.isRunning('proxy', 'p2'));
  await cluster.restartProcess('proxy', 'p2');
  assert.is.not(cluster.proxies[1]!.pid, before);
  await cluster.waitReady();
  assert.ok(cluster.isRunning('proxy', 'p2'));
  const recorded = readClusterFile(dataDir)!.processes.find((record) => record.id === 'p2');
  assert.is(recorded?.pid, cluster.proxies[1]!.pid, 'cluster.json follows the restart');
});

test('dfs local up, status --json, dfs status, a refused second up, down, and down again', async () => {
  const dataDir = tempDir();
  stopLeftovers(dataDir);

  // Unsupervised, so that the process killed below stays down and status can report it;
  // supervision has its own suite (local-supervise.test.ts).
  const up = await runCli(['local', 'up', '--data', dataDir, '--nodes', '3', '--proxies', '2', '--no-supervise']);
  assert.is(up.code, 0, `dfs local up failed:\n${up.stdout}\n${up.stderr}`);
  assert.match(up.stdout, /the cluster is up/);
  // What it waited for, step by step (issue 18).
  assert.match(up.stdout, /^  waiting for the storage nodes to register in Redis: \d of 3$/m);
  assert.match(up.stdout, /^  starting 2 proxies$/m);
  assert.match(up.stdout, /^  every node in sync$/m);
  assert.match(up.stdout, /^status page: http:\/\/127\.0\.0\.1:\d+\/ui /m);

  const status = await runCli(['local', 'status', '--data', dataDir, '--json']);
  assert.is(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout) as {
    processes: Array<{ kind: string; id: string; pid: number; alive: boolean; url: string | null; brickDir?: string }>;
    mounts: unknown[];
    cluster: { membership: { inSync: string[] } | null } | null;
  };
  const kinds = parsed.processes.map((entry) => entry.kind).sort();
  assert.equal(kinds, ['proxy', 'proxy', 'redis', 'storage', 'storage', 'storage']);
  for (const entry of parsed.processes) {
    assert.ok(entry.alive, `${entry.kind} ${entry.id} is alive`);
    assert.ok(entry.pid > 0);
    assert.ok(entry.url, `${entry.id} has a URL`);
    if (entry.kind === 'storage') assert.is(entry.brickDir, join(dataDir, 'nodes', entry.id, 'brick'));
  }
  assert.equal(parsed.mounts, []);
  assert.equal([...(parsed.cluster?.membership?.inSync ?? [])].sort(), ['n1', 'n2', 'n3']);

  const human = await runCli(['local', 'status', '--data', dataDir]);
  assert.is(human.code, 0, human.stderr);
  assert.match(human.stdout, /storage\s+n1/);

  const clusterView = await runCli(['status', '--data', dataDir, '--json']);
  assert.is(clusterView.code, 0, clusterView.stderr);
  const view = JSON.parse(clusterView.stdout) as { epoch: number; membership: { primary: string } | null };
  assert.ok(view.membership?.primary, 'dfs status shows a primary');
  // A cluster named by URL is asked with the credential $DFS_CREDENTIAL names.
  const viewHuman = await runCli(['status', '--proxy', parsed.processes.find((entry) => entry.kind === 'proxy')!.url!], undefined, { DFS_CREDENTIAL: join(dataDir, 'tls', 'admin') });
  assert.is(viewHuman.code, 0, viewHuman.stderr);
  assert.match(viewHuman.stdout, /leader/);

  // A mount credential for another host, signed by this cluster's CA (docs/security.md).
  const issued = await runCli(['credential', 'issue', '--name', 'ann', '--uids', '1000', '--gids', '1000,100', '--subtree', '/home/ann', '--data', dataDir, '--json']);
  assert.is(issued.code, 0, issued.stderr);
  const files = JSON.parse(issued.stdout) as { ca: string; cert: string; key: string };
  assert.is(statSync(files.key).mode & 0o777, 0o600);
  const names = new X509Certificate(readFileSync(files.cert)).subjectAltName ?? '';
  for (const claim of ['urn:dfs:role:mount', 'urn:dfs:uid:1000', 'urn:dfs:gid:100', 'urn:dfs:squash:root', 'urn:dfs:subtree:%2Fhome%2Fann']) assert.ok(names.includes(claim), `${claim} in ${names}`);
  assert.is((await runCli(['credential', 'issue', '--name', 'admin', '--uids', '*', '--gids', '*', '--data', dataDir])).code, 2);

  // A node added to the running cluster joins (in sync at once: nothing was written yet),
  // and a removed one leaves the membership, its process stopped and unrecorded.
  const added = await runCli(['local', 'add-node', '--data', dataDir]);
  assert.is(added.code, 0, added.stdout + added.stderr);
  assert.match(added.stdout, /started storage node n4/);
  const n4Pid = (JSON.parse((await runCli(['local', 'status', '--data', dataDir, '--json'])).stdout) as typeof parsed).processes.find((e) => e.id === 'n4')!.pid;
  const deadline = Date.now() + 30_000;
  let n4State = '';
  while (Date.now() < deadline && n4State !== 'in-sync') {
    const v = JSON.parse((await runCli(['status', '--data', dataDir, '--json'])).stdout) as { nodes: Array<{ id: string; state: string }> };
    n4State = v.nodes.find((n) => n.id === 'n4')?.state ?? '';
    if (n4State !== 'in-sync') await new Promise((r) => setTimeout(r, 200));
  }
  assert.is(n4State, 'in-sync');
  const removed = await runCli(['node', 'remove', 'n4', '--data', dataDir]);
  assert.is(removed.code, 0, removed.stdout + removed.stderr);
  assert.ok(await allExited([n4Pid]), 'n4 was stopped');
  const afterRemove = JSON.parse((await runCli(['status', '--data', dataDir, '--json'])).stdout) as { membership: { nodes: Record<string, string> }; nodes: Array<{ id: string }> };
  assert.equal(Object.keys(afterRemove.membership.nodes).sort(), ['n1', 'n2', 'n3']);
  assert.not.ok(afterRemove.nodes.some((n) => n.id === 'n4'), 'n4 is no longer registered');

  const again = await runCli(['local', 'up', '--data', dataDir]);
  assert.is(again.code, 1, 'a second up on a running cluster is refused');
  assert.match(again.stderr, /already up/);
  assertNoStackTrace(again);

  // One process dies: status says so (exit 1, alive false), and down still stops the rest.
  const victim = parsed.processes.find((entry) => entry.kind === 'proxy' && entry.id === 'p2')!;
  process.kill(victim.pid, 'SIGKILL');
  assert.ok(await allExited([victim.pid]), 'p2 died');
  const degraded = await runCli(['local', 'status', '--data', dataDir, '--json']);
  assert.is(degraded.code, 1, 'status of a partly running cluster exits 1');
  const degradedView = JSON.parse(degraded.stdout) as { processes: Array<{ id: string; alive: boolean }> };
  assert.equal(degradedView.processes.filter((entry) => !entry.alive).map((entry) => entry.id), ['p2']);

  const pids = parsed.processes.map((entry) => entry.pid);
  const down = await runCli(['local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, `dfs local down failed:\n${down.stdout}\n${down.stderr}`);
  assert.ok(await allExited(pids), 'down leaves none of the processes running');
  assert.not.ok(existsSync(clusterFilePath(dataDir)));

  const after = await runCli(['local', 'status', '--data', dataDir, '--json']);
  assert.is(after.code, 3, 'status of a stopped cluster exits 3');
  assert.equal(JSON.parse(after.stdout).processes, []);
  const downAgain = await runCli(['local', 'down', '--data', dataDir]);
  assert.is(downAgain.code, 0, 'down is idempotent');
});

test('dfs local down never signals a recorded pid that now belongs to another process', async () => {
  const dataDir = tempDir();
  const bystander = spawn('sleep', ['120'], { stdio: 'ignore' });
  cleanups.push(() => {
    bystander.kill('SIGKILL');
  });
  const pid = bystander.pid!;
  assert.ok(await pollUntil(() => (processStartTime(pid) !== null ? true : undefined), 5_000));
  // A record whose pid was reused: same pid, but another start time and command line.
  const description: ClusterFile = {
    version: 1,
    dataDir,
    createdAt: new Date().toISOString(),
    redisUrl: 'redis://127.0.0.1:1',
    proxyUrls: [],
    processes: [
      { kind: 'proxy', id: 'p1', pid, startTime: '1', markers: ['dist/proxy/main.js'], url: null, port: null, logFile: join(dataDir, 'p1.log'), argv: [] },
      { kind: 'storage', id: 'n1', pid, startTime: processStartTime(pid), markers: ['dist/storage/main.js'], url: null, port: null, logFile: join(dataDir, 'n1.log'), argv: [] },
    ],
    mounts: [],
  };
  writeFileSync(clusterFilePath(dataDir), JSON.stringify(description));

  const status = await runCli(['local', 'status', '--data', dataDir, '--json']);
  assert.is(status.code, 3, 'nothing recorded runs');
  const down = await runCli(['local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, down.stderr);
  assert.ok(isRunning(pid), 'the bystander still runs');
});

test('the CLI answers mistakes with one line and a non-zero exit', async () => {
  const dataDir = tempDir();
  const badCount = await runCli(['local', 'up', '--data', dataDir, '--nodes', 'three']);
  assert.is(badCount.code, 2);
  assert.match(badCount.stderr, /--nodes/);
  assertNoStackTrace(badCount);

  const unknown = await runCli(['frobnicate']);
  assert.is(unknown.code, 2);
  assert.match(unknown.stderr, /unknown command/);

  const badFlag = await runCli(['local', 'status', '--nope']);
  assert.is(badFlag.code, 2);
  assertNoStackTrace(badFlag);

  const noProxy = await runCli(['status', '--proxy', 'http://127.0.0.1:1']);
  assert.is(noProxy.code, 1);
  assert.match(noProxy.stderr, /no proxy answers/);
  assertNoStackTrace(noProxy);

  const nothing = await runCli(['status', '--data', dataDir]);
  assert.is(nothing.code, 1);
  assert.match(nothing.stderr, /no local cluster/);
  assertNoStackTrace(nothing);
});

test.run();
