/*
 * Partition scenarios with real processes (issue 14, acceptance 1): Redis, two proxies,
 * three storage nodes and two mounts, each in its own network namespace (test/helpers/
 * netns.ts); 4 writers and 2 readers (test/helpers/register-worker.ts) through the two
 * mounts while a nemesis cuts and heals links; then a checker that is not the workload
 * (test/helpers/register-checker.ts), `dfs verify`, and the storage logs for the
 * primaries of each epoch.
 *
 * A scenario runs `scenarioMs` (60 s unless DFS_PARTITION_SCENARIO_MS says otherwise):
 * 10 s calm, the cut, and the heal 25 s before the end, so that writes can be seen to
 * resume. What it prints and checks: acknowledged writes lost, stale reads,
 * non-linearizable registers, committing primaries per epoch, `dfs verify` after healing,
 * and how long after the heal the first write was acknowledged (at most 10 s).
 *
 * The lab runs in plaintext (`--insecure` on every process): each process has its own
 * address in its namespace, and what is tested here is replication under cuts; TLS and
 * its role checks are tested in test/integration/security.test.ts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PROXY_MAIN, STORAGE_MAIN } from '../../cli/cluster-processes';
import { isFuseMounted } from '../../cli/mounts';
import { NODE_RUNTIME_FLAGS } from '../../common/node-runtime';
import type { ClusterStatus } from '../../common/api';
import { TestClient } from './client';
import { runDfs } from './dfs-cli';
import { pollFor, removeTree } from './mounted-cluster';
import { NetLab } from './netns';
import { checkRegisters, REGISTER_BYTES, type CheckResult, type RegisterOp } from './register-checker';

export const PARTIES = ['redis', 'p1', 'p2', 'n1', 'n2', 'n3', 'm1', 'm2'];
const REDIS_PORT = 6379;
const PROXY_PORT = 7400;
const NODE_PORT = 7500;
const MOUNT_DEADLINE_MS = 10_000;
const REGISTERS = ['r1', 'r2', 'r3', 'r4', 'r5'];
/** The burst register: written only for BURST_MS from the cut on, so a write acknowledged
 * then and lost later stays lost in its final value. The other writers go on writing, and a
 * write of theirs lost in the cut is overwritten by the next one; only a read that happens
 * to fall between the two shows it, which made a planted bug slip through one run in
 * several. */
const BURST_REGISTER = 'r5';
const BURST_MS = 3_000;
const WORKER = join(__dirname, 'register-worker.js');
const DFS_MOUNT = join(__dirname, '..', '..', '..', 'bin', 'dfs-mount');
/** How long after the heal the first write must be acknowledged. */
export const RESUME_MS_MAX = 10_000;

export interface Lab {
  net: NetLab;
  root: string;
  proxyUrls: string[];
  mountpoints: string[];
  /** The dfs-mount processes, as `mountpoints`. */
  mountProcesses: ChildProcess[];
  client: TestClient;
  stop(): Promise<void>;
  /** SIGKILLs a storage node; with `wipe`, its data directory goes too (a lost disk). */
  killNode(id: string, wipe: boolean): Promise<void>;
  /** Starts a storage node again under its ID, on whatever its data directory holds. */
  startNode(id: string): void;
}

export interface ScenarioReport extends CheckResult {
  name: string;
  primariesPerEpochMax: number;
  verifyOk: boolean;
  resumeMs: number | null;
  writesFailed: number;
  /** The longest time without an acknowledged write. */
  stallMs: number;
}

/** Starts the lab, or says why it cannot (the suite skips with that). */
export async function startLab(extraNodeEnv: Record<string, string> = {}): Promise<Lab | string> {
  const net = NetLab.create(PARTIES);
  if (typeof net === 'string') return net;
  const root = mkdtempSync(join(tmpdir(), 'dfs-partitions-'));
  const logs = join(root, 'logs');
  mkdirSync(logs);
  const addr = (p: string) => net.party(p).addr;
  const redisUrl = `redis://${addr('redis')}:${REDIS_PORT}`;
  const proxyUrls = ['p1', 'p2'].map((p) => `http://${addr(p)}:${PROXY_PORT}`);
  const mountpoints = ['m1', 'm2'].map((m) => join(root, m));
  const env = { ...process.env, ...extraNodeEnv };
  let client: TestClient | null = null;
  const stop = async () => {
    await client?.close().catch(() => undefined);
    for (const mp of mountpoints) if (isFuseMounted(mp)) spawnSync('fusermount', ['-uz', mp]);
    net.destroy();
    if (process.env.DFS_TEST_KEEP_LOGS) spawnSync('cp', ['-r', logs, join(process.env.DFS_TEST_KEEP_LOGS, `partitions-${Date.now()}`)]);
    removeTree(root);
  };
  try {
    mkdirSync(join(root, 'redis'));
    net.spawn('redis', ['redis-server', '--port', String(REDIS_PORT), '--bind', addr('redis'), '--protected-mode', 'no', '--dir', join(root, 'redis'), '--save', '', '--appendonly', 'yes', '--appendfsync', 'always'], join(logs, 'redis.log'));
    const nodes = new Map<string, ChildProcess>();
    const startNode = (n: string) => {
      nodes.set(n, net.spawn(n, [process.execPath, ...NODE_RUNTIME_FLAGS, STORAGE_MAIN, '--id', n, '--data', join(root, n), '--port', String(NODE_PORT), '--host', addr(n), '--redis', redisUrl, '--insecure'], join(logs, `${n}.log`), env));
    };
    const killNode = async (n: string, wipe: boolean) => {
      const child = nodes.get(n)!;
      if (child.exitCode === null && child.signalCode === null) {
        const gone = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGKILL');
        await gone;
      }
      if (wipe) removeTree(join(root, n));
    };
    for (const n of ['n1', 'n2', 'n3']) startNode(n);
    for (const p of ['p1', 'p2']) {
      net.spawn(p, [process.execPath, ...NODE_RUNTIME_FLAGS, PROXY_MAIN, '--id', p, '--port', String(PROXY_PORT), '--host', addr(p), '--redis', redisUrl, '--insecure'], join(logs, `${p}.log`), env);
    }
    client = new TestClient(proxyUrls[0]!);
    const c = client;
    await pollFor('three nodes in sync', 60_000, async () => {
      try {
        const a = await c.get('/v1/cluster');
        const st = a.json as ClusterStatus;
        return a.status === 200 && st.membership?.inSync.length === 3 ? true : undefined;
      } catch {
        return undefined;
      }
    });
    const mountProcesses: ChildProcess[] = [];
    for (const [i, m] of ['m1', 'm2'].entries()) {
      mkdirSync(mountpoints[i]!);
      mountProcesses[i] = net.spawn(m, [process.execPath, DFS_MOUNT, mountpoints[i]!, '--proxy', proxyUrls.join(','), '-f', '--deadline-ms', String(MOUNT_DEADLINE_MS), '--insecure'], join(logs, `${m}.log`), env);
    }
    await pollFor('both mounts', 30_000, () => mountpoints.every((mp) => isFuseMounted(mp)));
    for (const r of REGISTERS) writeFileSync(join(mountpoints[0]!, r), ''.padEnd(REGISTER_BYTES, ' '));
    return { net, root, proxyUrls, mountpoints, mountProcesses, client, stop, killNode, startNode };
  } catch (e) {
    await stop();
    throw e;
  }
}

async function status(lab: Lab): Promise<ClusterStatus | undefined> {
  for (const url of lab.proxyUrls) {
    const c = url === lab.proxyUrls[0] ? lab.client : new TestClient(url);
    try {
      const a = await c.get('/v1/cluster');
      if (a.status === 200) return a.json as ClusterStatus;
    } catch {
      // try the other proxy
    } finally {
      if (c !== lab.client) await c.close();
    }
  }
  return undefined;
}

export async function currentPrimary(lab: Lab): Promise<string> {
  const st = await pollFor('a membership', 20_000, () => status(lab).then((s) => s?.membership ?? undefined));
  return st.primary;
}

let scenarioCount = 0;

/** The epochs in which more than one node took the primary role, from the storage logs. */
function primariesPerEpoch(lab: Lab): number {
  const byEpoch = new Map<number, Set<string>>();
  for (const n of ['n1', 'n2', 'n3']) {
    for (const line of readFileSync(join(lab.root, 'logs', `${n}.log`), 'utf8').split('\n')) {
      if (!line.includes('"role changed"') || !line.includes('"role":"primary"')) continue;
      const epoch = (JSON.parse(line) as { epoch: number }).epoch;
      if (!byEpoch.has(epoch)) byEpoch.set(epoch, new Set());
      byEpoch.get(epoch)!.add(n);
    }
  }
  return Math.max(0, ...[...byEpoch.values()].map((s) => s.size));
}

/**
 * Runs the workload for `scenarioMs` with `cut` applied 10 s in and `heal` 25 s before the
 * end, then checks. `meanwhile`, if given, runs 15 s after the cut (a lost disk).
 */
export async function runScenario(
  lab: Lab,
  name: string,
  cut: () => Promise<void> | void,
  heal: () => Promise<void> | void,
  meanwhile?: () => Promise<void>,
): Promise<ScenarioReport> {
  const scenarioMs = Number(process.env.DFS_PARTITION_SCENARIO_MS || 60_000);
  const startMs = Date.now();
  const until = startMs + scenarioMs;
  const [d1, d2] = lab.mountpoints as [string, string];
  // Values unique across scenarios on one lab: each scenario's writers have their own
  // names, and the checker starts from what each register holds now.
  const run = `s${++scenarioCount}`;
  const initials = new Map<string, string>();
  for (const r of REGISTERS) initials.set(r, readFileSync(join(d1, r), 'utf8').trim());
  const workers: Array<{ args: string[] }> = [
    { args: ['write', d1, 'r1', `${run}w1`] },
    { args: ['write', d1, 'r2', `${run}w2`] },
    { args: ['write', d2, 'r3', `${run}w3`] },
    { args: ['write', d2, 'r4', `${run}w4`] },
    { args: ['read', d1, REGISTERS.join(','), 'rd1'] },
    { args: ['read', d2, REGISTERS.join(','), 'rd2'] },
  ];
  const spawnWorker = (args: string[], untilMs: number) => {
    const child = spawn(process.execPath, [WORKER, ...args, String(untilMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout!.on('data', (b: Buffer) => (text += b.toString()));
    return new Promise<string>((resolve) => child.on('exit', () => resolve(text)));
  };
  const outputs = workers.map((w) => spawnWorker(w.args, until));
  await new Promise((r) => setTimeout(r, 10_000));
  await cut();
  outputs.push(spawnWorker(['write', d1, BURST_REGISTER, `${run}w5`], Date.now() + BURST_MS));
  if (meanwhile) {
    await new Promise((r) => setTimeout(r, 15_000));
    await meanwhile();
  }
  await new Promise((r) => setTimeout(r, Math.max(0, until - 25_000 - Date.now())));
  await heal();
  lab.net.healAll();
  const healAt = Date.now();
  const history: RegisterOp[] = (await Promise.all(outputs)).flatMap((t) => t.split('\n').filter(Boolean).map((l) => JSON.parse(l) as RegisterOp));
  // Healed: every node back in sync, then each register's final value through a mount.
  await pollFor('every node in sync after the heal', 90_000, async () => {
    const st = await status(lab);
    return st?.membership?.inSync.length === 3 && !st.belowFloor ? true : undefined;
  });
  const finals = new Map<string, string>();
  for (const r of REGISTERS) {
    let lastError = '';
    const value = await pollFor(`the final value of ${r}`, 30_000, () => {
      try {
        return readFileSync(join(d1, r), 'utf8').trim();
      } catch (e) {
        lastError = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
        return undefined;
      }
    }).catch(async (e: Error) => {
      throw new Error(`${e.message} through m1 (last error ${lastError}); ${await registerViews(lab, r)}`);
    });
    finals.set(r, value);
  }
  const check = checkRegisters(history, finals, initials);
  const firstAfter = history.filter((o) => o.kind === 'write' && o.ok && o.completeMs !== null && o.completeMs >= healAt).map((o) => o.completeMs!);
  const resumeMs = firstAfter.length > 0 ? Math.min(...firstAfter) - healAt : null;
  // The longest time no write was acknowledged, from the cut to the heal and after.
  const ackTimes = history.filter((o) => o.kind === 'write' && o.ok && o.completeMs !== null).map((o) => o.completeMs!).sort((a, b) => a - b);
  let stallMs = 0;
  for (let i = 1; i < ackTimes.length; i++) stallMs = Math.max(stallMs, ackTimes[i]! - ackTimes[i - 1]!);
  const v = await runDfs(['verify', '--proxy', lab.proxyUrls.join(',')]);
  const report: ScenarioReport = {
    ...check,
    name,
    primariesPerEpochMax: primariesPerEpoch(lab),
    verifyOk: v.code === 0,
    resumeMs,
    writesFailed: history.filter((o) => o.kind === 'write' && !o.ok).length,
    stallMs,
  };
  console.log(
    `  ${name}: ${report.writesAcked} writes acknowledged (${report.writesFailed} failed), ${report.reads} reads; ` +
      `${report.lostWrites} acknowledged writes lost, ${report.staleReads} stale reads, ${report.nonLinearizable.length} non-linearizable registers, ` +
      `at most ${report.primariesPerEpochMax} primary per epoch; dfs verify ${report.verifyOk ? 'passed' : 'FAILED'}; ` +
      `first write ${resumeMs === null ? 'never' : `${resumeMs} ms`} after the heal; longest time without an acknowledged write ${stallMs} ms`,
  );
  for (const p of report.problems.slice(0, 10)) console.log(`    ${p}`);
  return report;
}

/** Names the files under the lab's logs, for a failure to be looked into. */
export function logFiles(lab: Lab): string[] {
  return readdirSync(join(lab.root, 'logs')).map((f) => join(lab.root, 'logs', f));
}

/** What each side says of register `r`, for a failure's message: the mounts, m1's listing
 * of the root, the cluster through a proxy, and m1's last log lines. */
async function registerViews(lab: Lab, r: string): Promise<string> {
  const views: string[] = [];
  // A mount that died is unmounted (auto_unmount), and its mount point is an empty
  // directory: ENOENT for every name, which a cache answering ENOENT looks the same as.
  for (const [i, d] of lab.mountpoints.entries()) {
    const child = lab.mountProcesses[i];
    const exited = child && (child.exitCode !== null || child.signalCode !== null) ? `, its process exited (${child.exitCode ?? child.signalCode})` : '';
    views.push(`m${i + 1} ${isFuseMounted(d) ? 'is mounted' : 'is NOT mounted'}${exited}`);
  }
  for (const [i, d] of lab.mountpoints.entries()) {
    try {
      views.push(`m${i + 1} reads ${JSON.stringify(readFileSync(join(d, r), 'utf8').trim())}`);
    } catch (e) {
      views.push(`m${i + 1} read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
  }
  try {
    views.push(`m1 lists [${readdirSync(lab.mountpoints[0]!).join(', ')}]`);
  } catch (e) {
    views.push(`m1 list: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const a = await lab.client.get('/v1/attr', { path: `/${r}` });
    views.push(`the cluster's attr: ${a.status} ${JSON.stringify(a.json)}`);
  } catch (e) {
    views.push(`the cluster's attr: ${(e as Error).message}`);
  }
  try {
    const log = readFileSync(join(lab.root, 'logs', 'm1.log'), 'utf8').trim().split('\n');
    views.push(`m1's last log lines:\n${log.slice(-12).join('\n')}`);
  } catch {
    // no log to show
  }
  return views.join('; ');
}
