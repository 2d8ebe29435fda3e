/*
 * Supervision in `dfs local`, with real processes: a storage node, a proxy and Redis
 * killed with SIGKILL come back (new pid, restart count 1; Redis on its port with its data;
 * the cluster serves writes and reads through the restarted proxy and from the restarted
 * node), and `dfs local down` stops the supervisor before the rest, so that nothing is
 * started again behind it: afterwards no process ever recorded runs, and no process on the
 * machine carries the command line of one. The programmatic API's supervised mode gets
 * the same from killProcess and restartProcess.
 *
 * Every wait is a poll of a condition with a deadline; every process and directory is
 * removed again even when a test fails.
 *
 *   node dist/test/integration/local-supervise.test.js
 */
import type { StatusProcess } from '../../cli/dfs';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clusterFilePath, readClusterFile, startCluster, stopRecorded, useAdminCredential, type ProcessRecord } from '../../cli/local-cluster';
import { isRunning, isSameProcess, pollUntil, readCommandLine, stopProcesses } from '../../cli/processes';
import { RESTART_BACKOFF_MS_MAX } from '../../cli/restart-backoff';
import { cleanupsFor } from '../helpers/cleanups';
import { Redis } from 'ioredis';
import { redisAuthFor } from '../../common/redis-auth';
import { KEY_MEMBERSHIP, KEY_SEQ } from '../../common/redis-keys';
import { TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';

/** A restart takes the supervisor's poll and backoff, then a process start on a busy machine. */
const RESTART_DEADLINE_MS = RESTART_BACKOFF_MS_MAX + 30_000;
/** A write waits while the restarted node rejoins and the proxies see it. */
const SERVE_DEADLINE_MS = 30_000;

const cleanups = cleanupsFor(test);

/** A process as `dfs local status --json` lists it. */
type StatusEntry = Pick<StatusProcess, 'kind' | 'id' | 'pid' | 'alive' | 'restarts' | 'url'>;

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'dfs-local-supervise-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * Every process identity a data directory ever recorded (pid, start time, markers), as
 * seen on each look at cluster.json, so that the end of a test can check them all, and
 * its cleanup can stop exactly these and nothing else.
 */
function trackRecords(dataDir: string): { look(): void; all(): ProcessRecord[] } {
  const seen = new Map<string, ProcessRecord>();
  const look = () => {
    for (const record of readClusterFile(dataDir)?.processes ?? []) seen.set(`${record.pid}/${record.startTime}`, record);
  };
  cleanups.push(async () => {
    const description = readClusterFile(dataDir);
    if (description !== null) await stopRecorded(description);
    await stopProcesses([...seen.values()], 2_000);
  });
  return { look, all: () => [...seen.values()] };
}

/** Live processes on this machine whose command line carries all of `markers`. */
function processesWith(markers: string[]): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    const cmdline = readCommandLine(pid);
    if (cmdline !== null && markers.every((marker) => cmdline.includes(marker)) && isRunning(pid)) pids.push(pid);
  }
  return pids;
}

/** The `time` of the last line of a process's log (pino JSON lines) that matches; null if none. */
function lastLogged(logFile: string, match: (line: Record<string, unknown>) => boolean): number | null {
  let text: string;
  try {
    text = readFileSync(logFile, 'utf8');
  } catch {
    return null;
  }
  let time: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith('{')) continue;
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(line) as Record<string, unknown>;
    } catch {
      continue; // a line being written
    }
    if (match(parsed)) time = Number(parsed.time);
  }
  return time;
}

async function localStatus(dataDir: string): Promise<{ code: number | null; processes: StatusEntry[] }> {
  const result = await runDfs(['local', 'status', '--data', dataDir, '--json']);
  return { code: result.code, processes: (JSON.parse(result.stdout) as { processes: StatusEntry[] }).processes };
}

function entry(processes: StatusEntry[], kind: string, id: string): StatusEntry {
  const found = processes.find((candidate) => candidate.kind === kind && candidate.id === id);
  assert.ok(found, `status lists ${kind} ${id}`);
  return found;
}

/** Retries a request until it answers 200 or the deadline passes; the same reqId each
 * time, so a retried mutation is applied once. */
async function until200<T extends { status: number }>(what: string, request: () => Promise<T>): Promise<T> {
  let last = 'no answer';
  const answer = await pollUntil(async () => {
    try {
      const result = await request();
      if (result.status === 200) return result;
      last = `HTTP ${result.status} ${JSON.stringify((result as { json?: unknown }).json)}`;
    } catch (error) {
      last = (error as Error).message;
    }
    return undefined;
  }, SERVE_DEADLINE_MS, 200);
  assert.ok(answer, `${what} within ${SERVE_DEADLINE_MS} ms (last: ${last})`);
  return answer;
}

test('dfs local up restarts a killed storage node, proxy and Redis; down stops the supervisor first and leaves nothing running', async () => {
  const dataDir = tempDir();
  const records = trackRecords(dataDir);

  const up = await runDfs(['local', 'up', '--data', dataDir, '--nodes', '3', '--proxies', '2']);
  records.look();
  assert.is(up.code, 0, `dfs local up failed:\n${up.stdout}\n${up.stderr}`);
  assert.match(up.stdout, /restarted/);
  // This test's clients authenticate as the `dfs` command does: the cluster's admin.
  useAdminCredential(readClusterFile(dataDir)!);

  const before = await localStatus(dataDir);
  records.look();
  assert.is(before.code, 0, 'everything runs');
  assert.equal(before.processes.map((p) => p.kind).sort(), ['proxy', 'proxy', 'redis', 'storage', 'storage', 'storage', 'supervisor']);
  for (const p of before.processes) {
    assert.ok(p.alive, `${p.kind} ${p.id} runs`);
    assert.is(p.restarts, 0, `${p.kind} ${p.id} was not restarted`);
  }

  // Something for a restarted Redis to have kept: sequence IDs taken before it died.
  const early = new TestClient(entry(before.processes, 'proxy', 'p2').url!);
  cleanups.push(() => early.close());
  const mkdir = await until200('mkdir before the kills', () => early.op({ type: 'mkdir', path: '/before', mode: 0o755, uid: 0, gid: 0 }, undefined, 'supervise-mkdir'));
  const seqBefore = mkdir.json.seq as number;
  assert.ok(seqBefore >= 1);
  const redisUrl = entry(before.processes, 'redis', 'redis').url!;

  const victims = [entry(before.processes, 'storage', 'n2'), entry(before.processes, 'proxy', 'p1'), entry(before.processes, 'redis', 'redis')];
  for (const victim of victims) process.kill(victim.pid, 'SIGKILL');

  let last = before;
  const restarted = await pollUntil(async () => {
    last = await localStatus(dataDir);
    records.look();
    const back = victims.every((victim) => {
      const now = entry(last.processes, victim.kind, victim.id);
      return now.pid !== victim.pid && now.alive && now.restarts >= 1;
    });
    return back ? last : undefined;
  }, RESTART_DEADLINE_MS, 200);
  assert.ok(restarted, `n2, p1 and Redis restarted within ${RESTART_DEADLINE_MS} ms; last status:\n${JSON.stringify(last.processes, null, 2)}`);
  for (const victim of victims) assert.is(entry(restarted.processes, victim.kind, victim.id).restarts, 1, `${victim.id} restarted once`);
  for (const p of before.processes.filter((candidate) => !victims.includes(candidate))) {
    const now = entry(restarted.processes, p.kind, p.id);
    assert.is(now.pid, p.pid, `${p.kind} ${p.id} kept running`);
    assert.is(now.restarts, 0, `${p.kind} ${p.id} was not restarted`);
  }

  // Redis came back on its port with its append-only file: what it held before is there.
  assert.is(entry(restarted.processes, 'redis', 'redis').url, redisUrl, 'Redis kept its port');
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 , ...redisAuthFor(redisUrl) });
  cleanups.push(() => redis.disconnect());
  await redis.connect();
  assert.ok(Number(await redis.get(KEY_SEQ)) >= seqBefore, `dfs:seq is still ${seqBefore} or more (it holds ${await redis.get(KEY_SEQ)})`);
  assert.ok(await redis.get(KEY_MEMBERSHIP), 'the membership survived');
  redis.disconnect();

  // The restarted proxy serves, and the restarted node takes part in the commit.
  const proxy = new TestClient(entry(restarted.processes, 'proxy', 'p1').url!);
  cleanups.push(() => proxy.close());
  const data = randomBytes(100_000);
  const own = { uid: 0, gid: 0 };
  await until200('create through the restarted proxy', () => proxy.op({ type: 'create', path: '/after-restart', mode: 0o644, ...own, exclusive: false }, undefined, 'supervise-create'));
  await until200('write through the restarted proxy', () => proxy.op({ type: 'write', path: '/after-restart', offset: 0 }, data, 'supervise-write'));
  const listing = await until200('list through the restarted proxy', () => proxy.get('/v1/dir', { path: '/' }));
  assert.equal((listing.json as { entries: Array<{ name: string }> }).entries.map((e) => e.name).sort(), ['after-restart', 'before']);
  const read = await until200('read through the restarted proxy', () => proxy.get('/v1/data', { path: '/after-restart', offset: 0, size: data.length }));
  assert.ok(read.bytes.equals(data), 'the read returns what was written');
  const fromNode = await until200('read from the restarted node', () => proxy.get('/v1/data', { path: '/after-restart', offset: 0, size: data.length }, { 'dfs-read-node': 'n2' }));
  assert.ok(fromNode.bytes.equals(data), 'the restarted node has the write');

  // A process dies just before down, and down starts while its restart is due (the
  // supervisor logged it gone, and restarts it after 200 ms): the supervisor must stop
  // before it restarts p2 behind down's back.
  const p2 = entry(restarted.processes, 'proxy', 'p2');
  process.kill(p2.pid, 'SIGKILL');
  const supervisorLog = join(dataDir, 'logs', 'supervisor.log');
  const noticed = await pollUntil(() => (lastLogged(supervisorLog, (line) => line.msg === 'process is gone; restarting after backoff' && line.id === 'p2') !== null ? true : undefined), RESTART_DEADLINE_MS);
  assert.ok(noticed, `the supervisor noticed p2 died; its log:\n${readFileSync(supervisorLog, 'utf8')}`);
  const down = await runDfs(['local', 'down', '--data', dataDir]);
  assert.is(down.code, 0, `dfs local down failed:\n${down.stdout}\n${down.stderr}`);
  assert.not.ok(existsSync(clusterFilePath(dataDir)), 'down removes cluster.json');

  // Down stopped the supervisor before anything else: its last words come before every
  // other process's (each logs when SIGTERM arrives; pino's `time` is ms since the epoch).
  const supervisorStopped = lastLogged(supervisorLog, (line) => String(line.msg).startsWith('stopping'));
  assert.ok(supervisorStopped !== null, 'the supervisor logged that it stops');
  for (const id of ['n1', 'n2', 'n3', 'p1']) {
    const stopped = lastLogged(join(dataDir, 'logs', `${id}.log`), (line) => line.msg === 'stopping');
    assert.ok(stopped !== null, `${id} logged that it stops`);
    assert.ok(supervisorStopped <= stopped, `the supervisor stopped (${supervisorStopped}) before ${id} was asked to (${stopped})`);
  }

  const everRecorded = records.all();
  const kinds = new Set(everRecorded.map((record) => record.kind));
  assert.ok(kinds.has('supervisor'), 'the supervisor was recorded');
  for (const record of everRecorded) {
    assert.not.ok(isSameProcess(record), `${record.kind} ${record.id} (pid ${record.pid}) is not running after down`);
    // Also one started from the same record that cluster.json never showed us.
    assert.equal(processesWith(record.markers), [], `no process runs as ${record.kind} ${record.id} (${record.markers.join(' | ')})`);
  }
});

test('startCluster with supervise: killProcess, and restartProcess waits for the supervisor\'s restart', async () => {
  const dataDir = tempDir();
  const records = trackRecords(dataDir);
  const cluster = await startCluster({ dataDir, nodes: 1, proxies: 1, supervise: true });
  cleanups.push(() => cluster.stop());
  records.look();
  assert.ok(cluster.supervised);

  const before = cluster.nodes[0]!.pid;
  cluster.killProcess('storage', 'n1');
  await cluster.restartProcess('storage', 'n1');
  records.look();
  const after = cluster.nodes[0]!.pid;
  assert.is.not(after, before, 'n1 has a new pid');
  assert.ok(cluster.isRunning('storage', 'n1'));
  const record = cluster.records().find((candidate) => candidate.kind === 'storage' && candidate.id === 'n1');
  assert.is(record?.pid, after, 'records() follows the supervisor');
  assert.is(record?.restartCount, 1);
  assert.throws(() => cluster.killProcess('storage', 'nope'), /no storage process nope/);
  await cluster.waitReady();

  await cluster.stop();
  for (const r of records.all()) assert.not.ok(isSameProcess(r), `${r.kind} ${r.id} (pid ${r.pid}) is not running after stop`);
});

test.run();
