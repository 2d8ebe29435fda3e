/*
 * The `dfs` command: runs a whole cluster on one machine and reports on a cluster.
 *
 * Its subcommands (`local up|status|down|supervise|add-node`, `node start|remove`,
 * `status`, `verify`), their synopses and options are a table in command-table.ts: this
 * module looks a command up there, parses its arguments with parseArgs from the table,
 * answers `--help` from it, and runs the handler below.
 *
 * `local up` starts Redis, the storage nodes and the proxies as detached processes (they
 * outlive this command), records them in DIR/cluster.json, optionally mounts the cluster
 * with dfs-mount, and starts a supervisor (supervisor.ts) that restarts whatever of that
 * dies. `local down` stops exactly what that file records, the supervisor first. The data
 * directory defaults to $DFS_DATA, else ~/.dfs/local. Expected failures print one line
 * and exit non-zero; only a bug prints a stack trace.
 */
import { homedir } from 'node:os';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ClusterStatus, VerifyReport } from '../common/api';
import { request } from 'undici';
import { intOption } from '../common/config';
import { DfsError } from '../common/errors';
import {
  NODE_COUNT_MAX,
  PROXY_COUNT_MAX,
  fetchClusterStatus,
  fetchRedisPersistenceErrors,
  liveProcesses,
  mountRecorded,
  readClusterFile,
  startCluster,
  stopRecorded,
  clusterFilePath,
  STOP_ORDER,
  type ClusterFile,
} from './local-cluster';
import { commandHelp, commandsUnder, findCommand, groupUsage, overallUsage, parseArgsOptions } from './command-table';
import { isFuseMounted } from './mounts';
import { isSameProcess } from './processes';
import { supervise } from './supervisor';
import { localAddNode, nodeRemove, nodeStart } from './node-commands';
import { readRestartProblems, restartProblemKey, type RestartProblem } from './supervisor-notes';
import { rmSync } from 'node:fs';

/** A mistake in the command line: printed with the usage, exit code 2. */
class UsageError extends Error {}

/** Exit codes of `dfs local status`, after the LSB convention for status actions. */
const STATUS_RUNNING = 0;
const STATUS_DEGRADED = 1;
const STATUS_NOT_RUNNING = 3;

function defaultDataDir(): string {
  return resolve(process.env.DFS_DATA || resolve(homedir(), '.dfs', 'local'));
}

function out(line = ''): void {
  process.stdout.write(line + '\n');
}

/** Every option of every command (command-table.ts), as parseArgs gives them. */
interface Values {
  help?: boolean;
  data?: string;
  nodes?: string;
  proxies?: string;
  mount?: string;
  private?: boolean;
  'no-supervise'?: boolean;
  json?: boolean;
  proxy?: string;
  redis?: string;
  id?: string;
  port?: string;
  host?: string;
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, index) => (widths[index] = Math.max(widths[index] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index]!))).join('  ').trimEnd());
}

// ---------------------------------------------------------------------------------------
// dfs local up

async function localUp(values: Values): Promise<number> {
  const dataDir = resolve(values.data ?? defaultDataDir());
  let nodes: number;
  let proxies: number;
  try {
    nodes = intOption(values.nodes, 'nodes', 3, 1, NODE_COUNT_MAX);
    proxies = intOption(values.proxies, 'proxies', 2, 1, PROXY_COUNT_MAX);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }

  const existing = readClusterFile(dataDir);
  if (existing !== null) {
    const live = liveProcesses(existing);
    if (live.length > 0) {
      const list = live.map((record) => `${record.kind} ${record.id} pid ${record.pid}`).join(', ');
      throw new DfsError('BAD_REQUEST', `a cluster is already up in ${dataDir} (${list}); run \`dfs local down --data ${dataDir}\` first, or choose another --data`);
    }
    // Nothing recorded runs any more (a reboot, or processes killed by hand): clear what
    // is left, such as a dead FUSE mount, and start afresh on the same data.
    await stopRecorded(existing);
    rmSync(clusterFilePath(dataDir), { force: true });
  }

  out(`starting a local cluster in ${dataDir} (${nodes} storage nodes, ${proxies} proxies)...`);
  const supervised = values['no-supervise'] !== true;
  const cluster = await startCluster({ dataDir, nodes, proxies, detached: true, redisPersistent: true, supervise: supervised });
  if (values.mount !== undefined) {
    try {
      await mountRecorded(dataDir, values.mount, { detached: true, ...(values.private ? { args: ['--private'] } : {}) });
    } catch (error) {
      // Leave nothing half up: a cluster without the mount the user asked for is a failure.
      await cluster.stop().catch(() => undefined);
      throw error;
    }
  }
  const description = readClusterFile(dataDir)!;
  out('the cluster is up:');
  printProcesses(description);
  out();
  out(`logs:   ${resolve(dataDir, 'logs')}`);
  out(`proxies: ${description.proxyUrls.join(',')}`);
  if (values.mount === undefined) {
    out(`mount it with: dfs-mount MOUNTPOINT --proxy ${description.proxyUrls.join(',')}`);
  }
  out(supervised ? 'a process that dies is restarted (log: logs/supervisor.log)' : 'not supervised: a process that dies stays down');
  out(`stop it with:  dfs local down --data ${dataDir}`);
  return 0;
}

// ---------------------------------------------------------------------------------------
// dfs local supervise

async function localSupervise(values: Values): Promise<number> {
  await supervise(resolve(values.data ?? defaultDataDir()));
  return 0;
}

// ---------------------------------------------------------------------------------------
// dfs local status

export interface StatusProcess {
  kind: string;
  id: string;
  pid: number;
  alive: boolean;
  /** How often the supervisor restarted it. */
  restarts: number;
  url: string | null;
  brickDir?: string;
  mountpoint?: string;
  logFile: string;
  /** Down, and the supervisor's restarts of it fail: why. */
  restartProblem?: RestartProblem;
}

interface StatusMount {
  mountpoint: string;
  pid: number | null;
  alive: boolean;
  mounted: boolean;
}

function describeProcesses(description: ClusterFile): { processes: StatusProcess[]; mounts: StatusMount[] } {
  const problems = readRestartProblems(description.dataDir);
  const processes = description.processes.map((record) => ({
    kind: record.kind,
    id: record.id,
    pid: record.pid,
    alive: isSameProcess(record),
    restarts: record.restartCount ?? 0,
    // Why the supervisor cannot restart it, while it is down (supervisor-notes.ts).
    ...(problems[restartProblemKey(record.kind, record.id)] !== undefined && !isSameProcess(record) ? { restartProblem: problems[restartProblemKey(record.kind, record.id)] } : {}),
    url: record.url,
    ...(record.brickDir !== undefined ? { brickDir: record.brickDir } : {}),
    ...(record.mountpoint !== undefined ? { mountpoint: record.mountpoint } : {}),
    logFile: record.logFile,
  }));
  const mounts = description.mounts.map((mount) => {
    const record = description.processes.find((candidate) => candidate.kind === 'mount' && candidate.id === mount.processId);
    return {
      mountpoint: mount.mountpoint,
      pid: record?.pid ?? null,
      alive: record !== undefined && isSameProcess(record),
      mounted: isFuseMounted(mount.mountpoint),
    };
  });
  return { processes, mounts };
}

function printProcesses(description: ClusterFile): void {
  const { processes, mounts } = describeProcesses(description);
  const rows = [['KIND', 'ID', 'PID', 'STATE', 'RESTARTS', 'URL', 'BRICK / MOUNT POINT']];
  for (const entry of processes) {
    let where = entry.brickDir ?? '';
    if (entry.mountpoint !== undefined) {
      const mount = mounts.find((candidate) => candidate.mountpoint === entry.mountpoint);
      where = `${entry.mountpoint} (${mount?.mounted ? 'mounted' : 'not mounted'})`;
    }
    rows.push([entry.kind, entry.id, String(entry.pid), entry.alive ? 'running' : 'stopped', String(entry.restarts), entry.url ?? '-', where]);
  }
  for (const line of table(rows)) out('  ' + line);
  for (const entry of processes) {
    const p = entry.restartProblem;
    if (p) out(`  ${entry.kind} ${entry.id} cannot be restarted: ${p.error} (${p.failures} attempts since ${p.since})`);
  }
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
}

function printClusterView(proxyUrl: string, status: ClusterStatus): void {
  const membership = status.membership;
  out(`cluster (as ${proxyUrl} sees it): leader ${status.leader ?? 'none'}, epoch ${status.epoch}, seq ${status.seq}`);
  if (membership === null) {
    out('  no membership yet');
  } else {
    out(`  primary ${membership.primary || 'none'}, in sync [${membership.inSync.join(', ')}], membership epoch ${membership.epoch}`);
  }
  const rows = [['NODE', 'ROLE', 'STATE', 'APPLIED', 'LAG', 'READS', 'URL']];
  for (const node of status.nodes ?? []) {
    let state: string = node.state ?? (node.alive ? 'in-sync' : 'down');
    if (state === 'syncing' && node.sync) state += ` (${node.sync.entries} entries, ${formatBytes(node.sync.bytes)} from ${node.sync.source})`;
    if (state === 'in-sync' && node.confirming) state += ' (confirming)';
    if (node.space === 'low' && state !== 'down') state += ' (low on space)';
    const reads = node.reads === undefined ? '-' : `${node.reads}${node.slow ? ' (slow)' : ''}`;
    rows.push([node.id, node.role, state, node.appliedSeq === null ? '-' : String(node.appliedSeq), node.lag === null || node.lag === undefined ? '-' : String(node.lag), reads, node.url]);
  }
  for (const line of table(rows)) out('  ' + line);
}

async function localStatus(values: Values): Promise<number> {
  const dataDir = resolve(values.data ?? defaultDataDir());
  const description = readClusterFile(dataDir);
  if (description === null) {
    if (values.json) out(JSON.stringify({ dataDir, processes: [], mounts: [], cluster: null }, null, 2));
    else out(`no local cluster in ${dataDir} (start one with \`dfs local up --data ${dataDir}\`)`);
    return STATUS_NOT_RUNNING;
  }
  const { processes, mounts } = describeProcesses(description);
  const [view, redisErrors] = await Promise.all([fetchClusterStatus(description.proxyUrls), fetchRedisPersistenceErrors(description.redisUrl)]);
  const aliveCount = processes.filter((entry) => entry.alive).length;
  const code = aliveCount === 0 ? STATUS_NOT_RUNNING : aliveCount === processes.length && mounts.every((mount) => mount.mounted) ? STATUS_RUNNING : STATUS_DEGRADED;

  if (values.json) {
    out(JSON.stringify({ dataDir, redisUrl: description.redisUrl, proxyUrls: description.proxyUrls, processes, mounts, redisErrors, cluster: view?.status ?? null }, null, 2));
    return code;
  }
  out(`local cluster in ${dataDir}${code === STATUS_RUNNING ? '' : code === STATUS_DEGRADED ? ' (degraded: not everything runs)' : ' (stopped)'}`);
  printProcesses(description);
  // A full disk stops Redis writing its append-only file; it then refuses writes.
  if (redisErrors !== null && redisErrors.length > 0) out(`  redis cannot write its data (${redisErrors.join(', ')}): is its disk full? see ${description.processes.find((p) => p.kind === 'redis')?.logFile ?? 'its log'}`);
  out();
  if (view === null) out(`no proxy answers GET /v1/cluster (${description.proxyUrls.join(', ')})`);
  else printClusterView(view.proxyUrl, view.status);
  return code;
}

// ---------------------------------------------------------------------------------------
// dfs local down

async function localDown(values: Values): Promise<number> {
  const dataDir = resolve(values.data ?? defaultDataDir());
  const description = readClusterFile(dataDir);
  if (description === null) {
    out(`no local cluster recorded in ${dataDir}; nothing to stop`);
    return 0;
  }
  const live = liveProcesses(description).sort((a, b) => STOP_ORDER.indexOf(a.kind) - STOP_ORDER.indexOf(b.kind));
  const mounted = description.mounts.filter((mount) => isFuseMounted(mount.mountpoint));
  await stopRecorded(description);
  rmSync(clusterFilePath(dataDir), { force: true });
  for (const mount of mounted) out(`unmounted ${mount.mountpoint}`);
  out(`stopped ${live.length} process${live.length === 1 ? '' : 'es'}${live.length > 0 ? ' (' + live.map((record) => (record.kind === record.id ? record.kind : `${record.kind} ${record.id}`)).join(', ') + ')' : ''}; data stays in ${dataDir}`);
  return 0;
}

// ---------------------------------------------------------------------------------------
// dfs status

/** The proxies a command asks: --proxy, else $DFS_PROXY, else the local cluster's. */
function resolveProxyUrls(values: { proxy?: string; data?: string }): string[] {
  if (values.proxy !== undefined && values.data !== undefined) throw new UsageError('give either --proxy or --data, not both');
  const proxyList = values.proxy ?? (values.data === undefined ? process.env.DFS_PROXY : undefined);
  if (proxyList !== undefined && proxyList !== '') {
    const proxyUrls = proxyList.split(',').map((url) => url.trim().replace(/\/+$/, '')).filter((url) => url.length > 0);
    for (const url of proxyUrls) {
      if (!/^https?:\/\/[^/]+$/.test(url)) throw new UsageError(`--proxy wants URLs like http://127.0.0.1:7600, not ${JSON.stringify(url)}`);
    }
    return proxyUrls;
  }
  const dataDir = resolve(values.data ?? defaultDataDir());
  const description = readClusterFile(dataDir);
  if (description === null) {
    throw new DfsError('BAD_REQUEST', `no local cluster in ${dataDir}; give --proxy URL to ask a cluster elsewhere`);
  }
  return description.proxyUrls;
}

async function clusterStatus(values: Values): Promise<number> {
  const proxyUrls = resolveProxyUrls(values);
  const view = await fetchClusterStatus(proxyUrls);
  if (view === null) throw new DfsError('UNAVAILABLE', `no proxy answers GET /v1/cluster (${proxyUrls.join(', ')})`);
  if (values.json) out(JSON.stringify(view.status, null, 2));
  else printClusterView(view.proxyUrl, view.status);
  return 0;
}

// ---------------------------------------------------------------------------------------
// dfs verify

/** How long a verify may take: every node reads its whole brick. */
const VERIFY_TIMEOUT_MS = 300_000;

async function clusterVerify(values: Values): Promise<number> {
  const proxyUrls = resolveProxyUrls(values);
  let report: VerifyReport | null = null;
  const failures: string[] = [];
  for (const url of proxyUrls) {
    try {
      const res = await request(`${url}/v1/verify`, { method: 'POST', headersTimeout: VERIFY_TIMEOUT_MS, bodyTimeout: VERIFY_TIMEOUT_MS });
      const body = await res.body.json().catch(() => null);
      if (res.statusCode !== 200) {
        failures.push(`${url}: HTTP ${res.statusCode} ${JSON.stringify(body)}`);
        continue;
      }
      report = body as VerifyReport;
      break;
    } catch (e) {
      failures.push(`${url}: ${(e as Error).message}`);
    }
  }
  if (report === null) throw new DfsError('UNAVAILABLE', `no proxy could run the verify (${failures.join('; ')})`);
  if (values.json) {
    out(JSON.stringify(report, null, 2));
    return report.ok ? 0 : 1;
  }
  out(`verify at sequence ID ${report.at}: ${report.ok ? 'the in-sync replicas are identical' : 'DIFFERENCES FOUND'}`);
  for (const n of report.nodes) out('error' in n ? `  ${n.id}: ${n.error}` : `  ${n.id}: ${n.entries} entries`);
  for (const d of report.differences) {
    out(`  ${d.path}:`);
    for (const [id, e] of Object.entries(d.nodes)) out(`    ${id}: ${e === null ? 'missing' : JSON.stringify(e)}`);
  }
  if (report.more > 0) out(`  … and ${report.more} more differing paths`);
  return report.ok ? 0 : 1;
}

// ---------------------------------------------------------------------------------------

/** What each command of the table runs. */
const HANDLERS: Record<string, (values: Values, positionals: string[], args: string[]) => Promise<number>> = {
  'local up': (values) => localUp(values),
  'local status': (values) => localStatus(values),
  'local down': (values) => localDown(values),
  'local supervise': (values) => localSupervise(values),
  'local add-node': (values) => localAddNode(resolve(values.data ?? defaultDataDir()), out),
  'node start': (_values, _positionals, args) => nodeStart(args, out),
  'node remove': (values, positionals) => nodeRemove(positionals[0]!, values, defaultDataDir(), out),
  status: (values) => clusterStatus(values),
  verify: (values) => clusterVerify(values),
};

/** The usage a mistake is printed with: the command's own, else its group's, else all. */
let usageForErrors = overallUsage();

async function main(argv: string[]): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h') {
    process.stdout.write(overallUsage());
    return first === undefined ? 2 : 0;
  }
  if (first === 'help') {
    const command = findCommand(rest);
    const group = commandsUnder(rest[0] ?? '');
    process.stdout.write(command !== null ? commandHelp(command) : group.length > 0 ? groupUsage(rest[0]!) : overallUsage());
    return 0;
  }
  const command = findCommand(argv);
  if (command === null) {
    const group = commandsUnder(first);
    if (group.length === 0) throw new UsageError(`unknown command ${JSON.stringify(first)}`);
    usageForErrors = groupUsage(first);
    const [action] = rest;
    if (action === '--help' || action === '-h') {
      process.stdout.write(usageForErrors);
      return 0;
    }
    const actions = group.map((entry) => entry.words[1]).join(', ');
    throw new UsageError(action === undefined ? `dfs ${first} wants one of ${actions}` : `unknown action ${JSON.stringify(action)} for dfs ${first}`);
  }
  usageForErrors = commandHelp(command);
  const args = argv.slice(command.words.length);
  let parsed: { values: Values; positionals: string[] };
  try {
    // A command that passes options on (node start) takes what it does not know, unchecked.
    const strict = command.passesOn === undefined;
    const result = parseArgs({ args, options: parseArgsOptions(command), allowPositionals: true, strict });
    parsed = { values: result.values as Values, positionals: result.positionals };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (parsed.values.help === true) {
    process.stdout.write(usageForErrors);
    return 0;
  }
  const wanted = command.positionals?.count ?? 0;
  if (command.passesOn === undefined && parsed.positionals.length !== wanted) {
    throw new UsageError(wanted === 0 ? `unexpected argument ${JSON.stringify(parsed.positionals[0])}` : `dfs ${command.words.join(' ')} wants ${command.positionals!.name}`);
  }
  return HANDLERS[command.words.join(' ')]!(parsed.values, parsed.positionals, args);
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      process.stderr.write(`dfs: ${error.message}\n\n${usageForErrors}`);
      process.exit(2);
    }
    if (error instanceof DfsError) {
      process.stderr.write(`dfs: ${error.message}\n`);
      process.exit(1);
    }
    const code = (error as NodeJS.ErrnoException | null)?.code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) {
      // A system call failed (EACCES on the data directory, ENOSPC…): the message says which.
      process.stderr.write(`dfs: ${(error as Error).message}\n`);
      process.exit(1);
    }
    process.stderr.write(`dfs: internal error: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
