/*
 * The `dfs` command: runs a whole cluster on one machine and reports on a cluster.
 *
 * Its subcommands (`local up|status|down|supervise|add-node`, `node start|remove`,
 * `status`, `verify`, `selftest`, `top`), their synopses and options are a table in command-table.ts: this
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
import type { ClusterStatus, ManifestProgress, SyncProgress, VerifyReport } from '../common/api';
import { VERIFY_REPORT_BYTES_MAX } from '../common/limits';
import { ndjsonValues } from '../common/ndjson';
import { ProgressView, progressText, type ProgressFigures } from './progress-view';
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
import { credentialRevoke, localAddNode, nodeRemove, nodeStart } from './node-commands';
import { readRestartProblems, restartProblemKey, type RestartProblem } from './supervisor-notes';
import { rmSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { registerClientTls } from '../common/tls';
import { parseIdSet } from '../common/credential';
import { validatePath } from '../common/paths';
import { certFiles, CREDENTIAL_DAYS, issueCert, readMaterial } from './certs';
import { dispatcherFor } from './probes';
import { useAdminCredential } from './cluster-processes';
import { runTop } from './top';
import { Selftest } from './selftest';
import { formatBytes } from './format';

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
  'min-in-sync'?: string;
  json?: boolean;
  proxy?: string;
  admin?: string;
  'interval-ms'?: string;
  'timeout-ms'?: string;
  count?: string;
  'wait-ms'?: string;
  redis?: string;
  id?: string;
  port?: string;
  host?: string;
  insecure?: boolean;
  name?: string;
  uids?: string;
  gids?: string;
  'no-squash'?: boolean;
  subtree?: string;
  days?: string;
}

function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, index) => (widths[index] = Math.max(widths[index] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, index) => (index === row.length - 1 ? cell : cell.padEnd(widths[index]!))).join('  ').trimEnd());
}

// ---------------------------------------------------------------------------------------
// dfs local up

/** What a local cluster's processes write (Redis's files, logs, records, bricks) is the
 * user's alone: they inherit this process's umask (issue 13: state files 0600, directories
 * 0700). */
const LOCAL_CLUSTER_UMASK = 0o077;

async function localUp(values: Values): Promise<number> {
  process.umask(LOCAL_CLUSTER_UMASK);
  const dataDir = resolve(values.data ?? defaultDataDir());
  let nodes: number;
  let proxies: number;
  let minInSync: number;
  try {
    nodes = intOption(values.nodes, 'nodes', 3, 1, NODE_COUNT_MAX);
    proxies = intOption(values.proxies, 'proxies', 2, 1, PROXY_COUNT_MAX);
    minInSync = intOption(values['min-in-sync'], 'min-in-sync', 0, 1, nodes);
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
  const nodeArgs = minInSync > 0 ? ['--min-in-sync', String(minInSync)] : [];
  const cluster = await startCluster({ dataDir, nodes, proxies, detached: true, redisPersistent: true, supervise: supervised, nodeArgs, insecure: values.insecure === true, onProgress: (line) => out(`  ${line}`) });
  if (values.insecure) out('warning: --insecure: plaintext, no authentication; anyone who can reach these ports can act as any user (README, Security)');
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
  const statusPage = description.processes.find((r) => r.kind === 'proxy' && r.adminUrl);
  if (statusPage) out(`status page: ${statusPage.adminUrl}/ui (and dfs top)`);
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
  process.umask(LOCAL_CLUSTER_UMASK);
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

function printClusterView(proxyUrl: string, status: ClusterStatus): void {
  const membership = status.membership;
  out(`cluster (as ${proxyUrl} sees it): leader ${status.leader ?? 'none'}, epoch ${status.epoch}, seq ${status.seq}`);
  if (membership === null) {
    out('  no membership yet');
  } else {
    out(`  primary ${membership.primary || 'none'}, in sync [${membership.inSync.join(', ')}], membership epoch ${membership.epoch}`);
  }
  if (status.belowFloor) {
    out(`  FLOOR NOT MET: ${status.belowFloor.copies} in-sync cop${status.belowFloor.copies === 1 ? 'y' : 'ies'}, ${status.belowFloor.floor} required (--min-in-sync): writes wait and are not acknowledged`);
  }
  const rows = [['NODE', 'ROLE', 'STATE', 'APPLIED', 'LAG', 'READS', 'URL']];
  for (const node of status.nodes ?? []) {
    let state: string = node.state ?? (node.alive ? 'in-sync' : 'down');
    if (state === 'syncing' && node.sync) state += ` (from ${node.sync.source})`;
    if (state === 'in-sync' && node.confirming) state += ' (confirming)';
    if (node.space === 'low' && state !== 'down') state += ' (low on space)';
    const reads = node.reads === undefined ? '-' : `${node.reads}${node.slow ? ' (slow)' : ''}`;
    rows.push([node.id, node.role, state, node.appliedSeq === null ? '-' : String(node.appliedSeq), node.lag === null || node.lag === undefined ? '-' : String(node.lag), reads, node.url]);
  }
  for (const line of table(rows)) out('  ' + line);
  // A full sync under way: how far, against the totals its source announced.
  for (const node of status.nodes ?? []) {
    if (node.state === 'syncing' && node.sync) out(`  ${node.id} full sync from ${node.sync.source}${node.sync.seq === null ? '' : ` at seq ${node.sync.seq}`}: ${syncProgressText(node.sync)}`);
  }
  printLocks(status);
}

/** A full sync's progress line, as a node reported it (an older node leaves the totals out). */
function syncProgressText(sync: SyncProgress): string {
  return progressText({ entries: sync.entries, bytes: sync.bytes, totalEntries: sync.totalEntries ?? null, totalBytes: sync.totalBytes ?? null, bytesPerSecond: sync.bytesPerSecond ?? 0 });
}

/** The advisory locks held (docs/locks.md), by mount and file. */
function printLocks(status: ClusterStatus): void {
  const locks = status.locks;
  if (locks === undefined) return;
  out();
  if (locks.length === 0) {
    out('locks: none held');
    return;
  }
  out(`locks: ${locks.length} held${status.locksTruncated ? ' (the first files only)' : ''}`);
  const byMount = new Map<string, typeof locks>();
  for (const l of locks) {
    const key = `${l.mount || '?'} (session ${l.session})`;
    byMount.set(key, [...(byMount.get(key) ?? []), l]);
  }
  for (const [mount, held] of byMount) {
    out(`  ${mount}`);
    const rows = [['FILE', 'INODE', 'KIND', 'TYPE', 'RANGE', 'PID', 'OWNER']];
    held.sort((x, y) => x.path.localeCompare(y.path) || x.start - y.start);
    for (const l of held) {
      const range = l.kind === 'flock' ? 'whole file' : `${l.start}-${l.end >= Number.MAX_SAFE_INTEGER ? 'EOF' : String(l.end - 1)}`;
      rows.push([l.path, String(l.ino), l.kind, l.type === 'w' ? 'exclusive' : 'shared', range, String(l.pid), l.owner]);
    }
    for (const line of table(rows)) out('    ' + line);
  }
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
  useAdminCredential(description);
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
// dfs credential issue

/** Issues a mount credential (or an admin one) signed by the local cluster's CA. */
async function credentialIssue(values: Values): Promise<number> {
  const dataDir = resolve(values.data ?? defaultDataDir());
  const description = readClusterFile(dataDir);
  const tlsDir = description?.tlsDir ?? null;
  if (tlsDir === null) throw new DfsError('BAD_REQUEST', `no TLS cluster in ${dataDir} (none is recorded, or it runs --insecure): nothing to issue a credential with`);
  const name = values.name;
  if (name === undefined || name === 'admin' || /^(n|p|m)\d+$/.test(name)) throw new UsageError('--name is required, and must not be admin or a process\'s (n1, p1, m1…)');
  let days: number;
  let credential;
  try {
    days = intOption(values.days, 'days', CREDENTIAL_DAYS, 1, 3650);
    if (values.uids === undefined || values.gids === undefined) throw new Error('--uids and --gids are required (use * for all)');
    credential = {
      uids: parseIdSet(values.uids, '--uids'),
      gids: parseIdSet(values.gids, '--gids'),
      squashRoot: values['no-squash'] !== true,
      subtree: values.subtree === undefined ? null : validatePath(values.subtree, '--subtree'),
    };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const files = issueCert(tlsDir, name, { role: 'mount', id: name, credential, days });
  if (values.json) out(JSON.stringify(files, null, 2));
  else {
    out(`issued ${name}, valid ${days} days: ${files.cert} (key ${files.key}, CA ${files.ca})`);
    out(`mount with: dfs-mount DIR --proxy ${description!.proxyUrls.join(',')} --ca ${files.ca} --cert ${files.cert} --key ${files.key}`);
  }
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
      if (!/^https?:\/\/[^/]+$/.test(url)) throw new UsageError(`--proxy wants URLs like https://127.0.0.1:7600, not ${JSON.stringify(url)}`);
    }
    // A cluster elsewhere: the credential $DFS_CREDENTIAL names (DIR/NAME: DIR/NAME.crt,
    // DIR/NAME.key and the cluster's DIR/ca.crt).
    const credential = process.env.DFS_CREDENTIAL;
    if (credential) registerClientTls(proxyUrls, readMaterial(certFiles(dirname(resolve(credential)), basename(credential))));
    return proxyUrls;
  }
  const dataDir = resolve(values.data ?? defaultDataDir());
  const description = readClusterFile(dataDir);
  if (description === null) {
    throw new DfsError('BAD_REQUEST', `no local cluster in ${dataDir}; give --proxy URL to ask a cluster elsewhere`);
  }
  useAdminCredential(description);
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

/** `POST /v1/verify?progress=1` on one proxy: its progress lines go to `view` (summed over
 * the nodes; totals once every in-sync node has counted its brick), and its report is the
 * answer, with the last figures. A proxy of an older build answers the report alone, as
 * JSON. */
async function verifyWithProgress(url: string, view: ProgressView): Promise<{ report: VerifyReport; figures: ProgressFigures | null }> {
  const dispatcher = dispatcherFor(url);
  const res = await request(`${url}/v1/verify?progress=1`, { ...(dispatcher ? { dispatcher } : {}), method: 'POST', headersTimeout: VERIFY_TIMEOUT_MS, bodyTimeout: VERIFY_TIMEOUT_MS });
  if (res.statusCode !== 200) {
    const body = await res.body.json().catch(() => null);
    throw new Error(`HTTP ${res.statusCode} ${JSON.stringify(body)}`);
  }
  if (!String(res.headers['content-type'] ?? '').includes('ndjson')) return { report: (await res.body.json()) as VerifyReport, figures: null };
  let figures: ProgressFigures | null = null;
  for await (const value of ndjsonValues(res.body, VERIFY_REPORT_BYTES_MAX)) {
    const line = value as Partial<{ progress: { nodeCount: number; nodes: Record<string, ManifestProgress> }; report: VerifyReport; error: { code: string; message: string } }>;
    if (line.progress) {
      const nodes = Object.values(line.progress.nodes);
      const counted = nodes.length === line.progress.nodeCount && nodes.every((n) => n.totalEntries !== null && n.totalBytes !== null);
      figures = {
        entries: nodes.reduce((sum, n) => sum + n.entries, 0),
        bytes: nodes.reduce((sum, n) => sum + n.bytes, 0),
        totalEntries: counted ? nodes.reduce((sum, n) => sum + n.totalEntries!, 0) : null,
        totalBytes: counted ? nodes.reduce((sum, n) => sum + n.totalBytes!, 0) : null,
      };
      view.update(figures);
    } else if (line.report) {
      return { report: line.report, figures };
    } else if (line.error) {
      throw new Error(`${line.error.code}: ${line.error.message}`);
    }
  }
  throw new Error('the answer ended before the report');
}

async function clusterVerify(values: Values): Promise<number> {
  const proxyUrls = resolveProxyUrls(values);
  let report: VerifyReport | null = null;
  const failures: string[] = [];
  for (const url of proxyUrls) {
    const view = new ProgressView('verify');
    try {
      const answer = await verifyWithProgress(url, view);
      if (answer.figures) view.finish(answer.figures);
      report = answer.report;
      break;
    } catch (e) {
      failures.push(`${url}: ${(e as Error).message}`);
    } finally {
      view.abandon();
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
// dfs selftest

/** The default deadline of `dfs selftest`: verify reads every brick. */
const SELFTEST_TIMEOUT_MS = 120_000;

async function clusterSelftest(values: Values): Promise<number> {
  const proxyUrls = resolveProxyUrls(values);
  const timeoutMs = intOption(values['timeout-ms'], 'timeout-ms', SELFTEST_TIMEOUT_MS, 1000, 3_600_000);
  return new Selftest(proxyUrls, timeoutMs, out).run();
}

// ---------------------------------------------------------------------------------------
// dfs node sync-progress

/** How often the node's progress is asked for (its heartbeat is every second). */
const SYNC_POLL_MS = 500;
/** How long a node may be unknown, down or unreachable before the command gives up. */
const SYNC_WAIT_MS_DEFAULT = 60_000;

/**
 * Follows a node's full sync to its end, as the leader's status reports it from the node's
 * heartbeat: a bar (or plain lines) on stderr, one line on stdout once it is done. A node
 * that is in sync and copies nothing gets its last full sync shown, if its process made
 * one, else a line saying so. Exit 0 when the sync finished (or there was none), 1 when the
 * node stayed unknown, down or unreachable for --wait-ms.
 */
async function nodeSyncProgress(values: Values, id: string): Promise<number> {
  const proxyUrls = resolveProxyUrls(values);
  let waitMs: number;
  try {
    waitMs = intOption(values['wait-ms'], 'wait-ms', SYNC_WAIT_MS_DEFAULT, 1000, 24 * 3600_000);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  let view: ProgressView | null = null;
  let followingSinceMs: number | null = null;
  let absentSinceMs: number | null = null;
  const onInterrupt = () => {
    view?.abandon();
    process.exit(130);
  };
  process.once('SIGINT', onInterrupt);
  const figuresOf = (sync: SyncProgress): ProgressFigures => ({ entries: sync.entries, bytes: sync.bytes, totalEntries: sync.totalEntries ?? null, totalBytes: sync.totalBytes ?? null, bytesPerSecond: sync.bytesPerSecond ?? 0 });
  const done = (sync: SyncProgress): number => {
    view ??= new ProgressView(`${id} from ${sync.source}`);
    view.finish(figuresOf(sync));
    const seconds = ((sync.finishedAtMs ?? Date.now()) - sync.startedAtMs) / 1000;
    out(`${id}: full sync from ${sync.source} done at seq ${sync.seq ?? '?'}: ${sync.entries} entries, ${sync.bytes} bytes (${formatBytes(sync.bytes)}) in ${seconds.toFixed(1)} s (${formatBytes(Math.round(sync.bytesPerSecond ?? 0))}/s)`);
    return 0;
  };
  try {
    for (;;) {
      const answer = await fetchClusterStatus(proxyUrls);
      const node = answer?.status.nodes?.find((n) => n.id === id);
      if (!node || !node.alive) {
        absentSinceMs ??= Date.now();
        if (Date.now() - absentSinceMs >= waitMs) {
          throw new DfsError('UNAVAILABLE', answer === null ? `no proxy answers GET /v1/cluster (${proxyUrls.join(', ')})` : node ? `${id} is down` : `the cluster has no node ${id}`);
        }
      } else {
        absentSinceMs = null;
        const sync = node.sync ?? null;
        const last = node.lastSync ?? null;
        if (sync !== null) {
          // A new attempt (another source) starts its own bar.
          if (followingSinceMs !== sync.startedAtMs) {
            view?.abandon();
            view = new ProgressView(`${id} from ${sync.source}`);
            followingSinceMs = sync.startedAtMs;
          }
          view!.update(figuresOf(sync));
        } else if (node.state === 'syncing') {
          // Syncing, and no attempt under way yet (it picks a source): an earlier sync of the
          // same process in lastSync is not this one.
        } else if (last !== null && (followingSinceMs === null || last.startedAtMs >= followingSinceMs)) {
          return done(last);
        } else if (followingSinceMs === null && node.state === 'in-sync') {
          out(`${id} is in sync and is not copying a brick`);
          return 0;
        }
      }
      await new Promise((r) => setTimeout(r, SYNC_POLL_MS));
    }
  } finally {
    view?.abandon();
    process.off('SIGINT', onInterrupt);
  }
}

// ---------------------------------------------------------------------------------------
// dfs top

async function clusterTop(values: Values): Promise<number> {
  if (values.admin !== undefined && values.data !== undefined) throw new UsageError('give either --admin or --data, not both');
  let adminUrls: string[];
  if (values.admin !== undefined) {
    adminUrls = values.admin.split(',').map((url) => url.trim().replace(/\/+$/, '')).filter((url) => url.length > 0);
    for (const url of adminUrls) {
      if (!/^http:\/\/[^/]+$/.test(url)) throw new UsageError(`--admin wants URLs like http://127.0.0.1:7410, not ${JSON.stringify(url)}`);
    }
    if (adminUrls.length === 0) throw new UsageError('--admin names no URL');
  } else {
    const dataDir = resolve(values.data ?? defaultDataDir());
    const description = readClusterFile(dataDir);
    if (description === null) throw new DfsError('BAD_REQUEST', `no local cluster in ${dataDir}; give --admin URL for a cluster elsewhere`);
    adminUrls = description.processes.filter((r) => r.kind === 'proxy' && r.adminUrl).map((r) => r.adminUrl!);
    if (adminUrls.length === 0) throw new DfsError('BAD_REQUEST', `the cluster in ${dataDir} records no proxy admin port (started before dfs had them: restart it)`);
  }
  let intervalMs: number;
  let count: number | null;
  try {
    intervalMs = intOption(values['interval-ms'], 'interval-ms', 1000, 100, 60_000);
    count = values.count === undefined ? null : intOption(values.count, 'count', 1, 1);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  await runTop(adminUrls, intervalMs, count, (text) => process.stdout.write(text));
  return 0;
}

// ---------------------------------------------------------------------------------------

/** What each command of the table runs. */
const HANDLERS: Record<string, (values: Values, positionals: string[], args: string[]) => Promise<number>> = {
  'local up': (values) => localUp(values),
  'local status': (values) => localStatus(values),
  'local down': (values) => localDown(values),
  'local supervise': (values) => localSupervise(values),
  'local add-node': (values) => {
    process.umask(LOCAL_CLUSTER_UMASK);
    return localAddNode(resolve(values.data ?? defaultDataDir()), out);
  },
  'node start': (_values, _positionals, args) => nodeStart(args, out),
  'node remove': (values, positionals) => nodeRemove(positionals[0]!, values, defaultDataDir(), out),
  'node sync-progress': (values, positionals) => nodeSyncProgress(values, positionals[0]!),
  'credential issue': (values) => credentialIssue(values),
  'credential revoke': (values) => credentialRevoke(values, defaultDataDir(), out),
  status: (values) => clusterStatus(values),
  verify: (values) => clusterVerify(values),
  selftest: (values) => clusterSelftest(values),
  top: (values) => clusterTop(values),
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
