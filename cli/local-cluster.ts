/*
 * The local cluster launcher: one Redis, N storage nodes and M proxies as child processes
 * on loopback, with all their data under one directory. `dfs local up|status|down` and the
 * integration, end-to-end and benchmark suites all start clusters through here, so a test
 * runs exactly the processes a developer runs.
 *
 * How a start goes:
 *   1. reserve a free loopback port per process (bind port 0, read it, close);
 *   2. start `redis-server` in the foreground (we own its pid) and wait for PONG;
 *   3. start the storage nodes and the proxies, stdout and stderr into <dataDir>/logs/<id>.log,
 *      and record every process in <dataDir>/cluster.json (pid, start time, URL, brick);
 *   4. poll until every proxy's /readyz is 200 and /v1/cluster shows all N nodes in sync;
 *   5. with `supervise` (on for `dfs local up`), start `dfs local supervise` (supervisor.ts),
 *      recorded like the others, which from then on restarts any recorded process that dies.
 * A process that exits or does not become ready before the deadline fails the start: what
 * was started is stopped and the error names the process and quotes the end of its log.
 *
 * cluster.json is how another process (`dfs local status`, `dfs local down`, the
 * supervisor) finds the processes later. Once a supervisor may be writing it too, every
 * change is a read-modify-write under <dataDir>/cluster.json.lock (updateClusterFile), and
 * each writer changes only the records it owns, so that no writer puts back a pid another
 * has replaced. A stop signals only recorded pids that still carry the recorded start
 * time and command line (processes.ts), so a reused pid is never killed; it stops the
 * supervisor first, so that nothing it stops is started again behind its back.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readSync, rmSync, statSync, writeFileSync, fstatSync } from 'node:fs';
import { createServer, connect, type Server } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { Client, request } from 'undici';
import { DfsError } from '../common/errors';
import type { ClusterStatus } from '../common/api';
import { h2cClientOptions } from '../common/h2c';
import { nodeAliveKey } from '../common/redis-keys';
import { findMount, isFuseMounted, unmountFuse } from './mounts';
import { readRecordFile, tryLock, writeRecordFile } from './record-files';
import { STOP_GRACE_MS, isSameProcess, pollUntil, processStartTime, signalProcess, stopProcesses, type ProcessIdentity } from './processes';
import { RESTART_BACKOFF_MS_MAX } from './restart-backoff';

/** The repository root: this file runs as dist/cli/local-cluster.js. */
export const REPO_ROOT = resolve(__dirname, '..', '..');
export const STORAGE_MAIN = join(REPO_ROOT, 'dist', 'storage', 'main.js');
export const PROXY_MAIN = join(REPO_ROOT, 'dist', 'proxy', 'main.js');
export const MOUNT_BIN = join(REPO_ROOT, 'bin', 'dfs-mount');
/** The `dfs` command itself, which runs the supervisor (`dfs local supervise`). */
export const DFS_MAIN = join(REPO_ROOT, 'dist', 'cli', 'dfs.js');
export const CLUSTER_FILE_NAME = 'cluster.json';

/** How long a start may take before it is declared failed. */
export const READY_TIMEOUT_MS = 20_000;
/** How long Redis may take to answer PING after it was spawned. */
export const REDIS_READY_TIMEOUT_MS = 10_000;
/** How long a mount may take to appear in /proc/mounts. */
export const MOUNT_READY_TIMEOUT_MS = 20_000;
/** How long a mount gets after SIGTERM: dfs-mount commits buffered writes for up to 10 s
 * (SHUTDOWN_FLUSH_MS), then unmounts. */
export const MOUNT_STOP_GRACE_MS = 15_000;
/** One readiness probe (HTTP request or PING). */
export const PROBE_TIMEOUT_MS = 2_000;
/** How much of a log an error quotes. */
export const LOG_TAIL_BYTES = 4_096;
export const LOG_TAIL_LINES = 25;
/** Bounds on what a local cluster may be asked to run. */
export const NODE_COUNT_MAX = 16;
export const PROXY_COUNT_MAX = 16;
/** How long a writer of cluster.json waits for another's lock before it gives up. Writers
 * hold it for one read, a spawn and one write, so this is very long. */
export const CLUSTER_LOCK_WAIT_MS = 10_000;
const CLUSTER_LOCK_POLL_MS = 10;
/** How long `restartProcess` of a supervised cluster waits for the supervisor to restart
 * the process: the longest backoff, plus a start and a few of the supervisor's polls. */
export const SUPERVISED_RESTART_WAIT_MS = RESTART_BACKOFF_MS_MAX + 10_000;

export type ProcessKind = 'supervisor' | 'redis' | 'proxy' | 'storage' | 'mount';
/** The order in which a cluster is stopped: the supervisor first, so that it restarts none
 * of the others; the mounts next, then each process before what it depends on. */
export const STOP_ORDER: readonly ProcessKind[] = ['supervisor', 'mount', 'proxy', 'storage', 'redis'];

/** One process of a local cluster, as recorded in cluster.json. */
export interface ProcessRecord extends ProcessIdentity {
  kind: ProcessKind;
  id: string;
  url: string | null;
  port: number | null;
  logFile: string;
  /** The command and its arguments, so that the harness can restart the process. */
  argv: string[];
  /** Storage nodes: the node's data directory and the brick inside it. */
  dataDir?: string;
  brickDir?: string;
  /** Mounts: where the file system is mounted. */
  mountpoint?: string;
  /** How often the supervisor has restarted this process (absent: never), and when last. */
  restartCount?: number;
  restartedAt?: string;
}

export interface MountRecord {
  mountpoint: string;
  /** The id of the `mount` process record that serves it. */
  processId: string;
  proxyUrls: string[];
}

export interface ClusterFile {
  version: 1;
  dataDir: string;
  createdAt: string;
  redisUrl: string;
  proxyUrls: string[];
  processes: ProcessRecord[];
  mounts: MountRecord[];
}

export interface ClusterOptions {
  dataDir: string;
  nodes?: number;
  proxies?: number;
  host?: string;
  /** Where process logs go; default <dataDir>/logs. */
  logDir?: string;
  /** Children outlive this process (`dfs local up`); otherwise they are killed when it exits. */
  detached?: boolean;
  /** Keep Redis's data in <dataDir>/redis across restarts (append-only file); default: on
   * when supervised, since a Redis restarted empty has lost the cluster's sequence and
   * membership. */
  redisPersistent?: boolean;
  readyTimeoutMs?: number;
  /** Extra environment for every child (for example DFS_LOG_LEVEL). */
  env?: Record<string, string>;
  /** Extra storage-node arguments (for example ['--log-keep-ops', '50']); nodes added later
   * get the same. */
  nodeArgs?: string[];
  /**
   * Start a supervisor that restarts any process that dies (`dfs local up` does; default
   * off, so that a test that kills a process decides itself when it comes back). In a
   * supervised cluster, killProcess kills and the supervisor restarts; restartProcess
   * waits for that restart.
   */
  supervise?: boolean;
}

export interface NodeHandle {
  id: string;
  url: string;
  port: number;
  pid: number;
  dataDir: string;
  brickDir: string;
}

export interface ProxyHandle {
  id: string;
  url: string;
  port: number;
  pid: number;
}

export interface MountOptions {
  /** Extra dfs-mount arguments, for example ['--attr-timeout', '0']. */
  args?: string[];
  timeoutMs?: number;
}

export interface Cluster {
  dataDir: string;
  clusterFile: string;
  /** A supervisor restarts what dies (ClusterOptions.supervise). */
  supervised: boolean;
  redisUrl: string;
  proxyUrls: string[];
  nodes: NodeHandle[];
  proxies: ProxyHandle[];
  redis: { pid: number; url: string; port: number };
  /** The recorded processes, as in cluster.json. */
  records(): ProcessRecord[];
  /** Stops every process this cluster started (mounts first), and removes cluster.json. */
  stop(): Promise<void>;
  /** Sends a signal to one process (SIGKILL by default): `killProcess('storage', 'n2')`. */
  killProcess(kind: ProcessKind, id: string, signal?: NodeJS.Signals): void;
  /** Starts a stopped or killed process again, same arguments and port; in a supervised
   * cluster, waits until the supervisor has done so. */
  restartProcess(kind: ProcessKind, id: string): Promise<void>;
  isRunning(kind: ProcessKind, id: string): boolean;
  logTail(kind: ProcessKind, id: string): string;
  /** Polls until every proxy is ready and every node is in sync. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Starts one more storage node (the next free ID) and records it; it joins as a learner. */
  addNode(): Promise<NodeHandle>;
  /** Mounts the cluster with dfs-mount -f and records the mount; stop() unmounts it. */
  mount(mountpoint: string, options?: MountOptions): Promise<ProcessRecord>;
  /** Unmounts and stops one recorded mount. */
  unmount(mountpoint: string): Promise<void>;
}

// ---------------------------------------------------------------------------------------
// cluster.json

export function clusterFilePath(dataDir: string): string {
  return join(resolve(dataDir), CLUSTER_FILE_NAME);
}

/** Reads <dataDir>/cluster.json; null when there is none. Throws on a corrupt file. */
export function readClusterFile(dataDir: string): ClusterFile | null {
  const file = clusterFilePath(dataDir);
  // One cut short (record-files.ts) is replaced by the version before it.
  const read = readRecordFile(file, (text) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new DfsError('BAD_REQUEST', `${file} is not valid JSON; move it away if no cluster runs from ${dataDir}`);
    }
    const value = parsed as Partial<ClusterFile>;
    if (value.version !== 1 || !Array.isArray(value.processes) || !Array.isArray(value.mounts)) {
      throw new DfsError('BAD_REQUEST', `${file} is not a dfs cluster description (version 1)`);
    }
    return value as ClusterFile;
  });
  return read?.value ?? null;
}

/** Writes cluster.json atomically (temp file, then rename), so a reader never sees half. */
export function writeClusterFile(description: ClusterFile): void {
  writeRecordFile(clusterFilePath(description.dataDir), JSON.stringify(description, null, 2) + '\n');
}

/**
 * Runs `critical` holding <dataDir>/cluster.json.lock, a file that names its holder (pid
 * and start time), published whole (record-files.ts, tryLock). A lock whose holder no
 * longer runs (it crashed holding it), or that is empty or cut short and not new, is
 * broken; one held longer than CLUSTER_LOCK_WAIT_MS by a live process is
 * an error, not a wait without end. (Two writers breaking the same dead holder's lock at
 * once could both go on; that needs a crash inside a critical section of milliseconds
 * first, and a local cluster has at most a few writers.)
 */
export async function withClusterLock<T>(dataDir: string, critical: () => T | Promise<T>): Promise<T> {
  const lockFile = `${clusterFilePath(dataDir)}.lock`;
  const holder = `${process.pid} ${processStartTime(process.pid)}`;
  let other = '';
  const acquired = await pollUntil(() => {
    const taken = tryLock(lockFile, holder, (pid, startTime) => processStartTime(pid) === startTime);
    if (taken === true) return true;
    other = taken;
    return undefined;
  }, CLUSTER_LOCK_WAIT_MS, CLUSTER_LOCK_POLL_MS);
  if (!acquired) {
    throw new DfsError('TIMEOUT', `${lockFile} is held by pid ${other.split(' ')[0] || '?'} for more than ${CLUSTER_LOCK_WAIT_MS} ms`);
  }
  try {
    return await critical();
  } finally {
    rmSync(lockFile, { force: true });
  }
}

/**
 * Read-modify-write of cluster.json under the lock: `change` edits the description as it
 * is on disk now, which is then written back. Resolves with the new description, or null
 * (and calls nothing) when there is no cluster.json any more.
 */
export async function updateClusterFile(dataDir: string, change: (description: ClusterFile) => void): Promise<ClusterFile | null> {
  return withClusterLock(dataDir, () => {
    const description = readClusterFile(dataDir);
    if (description === null) return null;
    change(description);
    writeClusterFile(description);
    return description;
  });
}

/** Puts `record` in place of the recorded process of the same kind and ID, or adds it. */
export function upsertRecord(description: ClusterFile, record: ProcessRecord): void {
  const index = description.processes.findIndex((candidate) => candidate.kind === record.kind && candidate.id === record.id);
  if (index === -1) description.processes.push(record);
  else description.processes[index] = record;
}

/** The recorded processes that are still running as recorded. */
export function liveProcesses(description: ClusterFile): ProcessRecord[] {
  return description.processes.filter((record) => isSameProcess(record));
}

// ---------------------------------------------------------------------------------------
// small I/O helpers

/**
 * Free TCP ports on `host`: bind, read the port, close. A preferred port (the one a
 * process had last time) is taken when it is free, else any free port (port 0). Another
 * process could take a port before we use it; on loopback that is rare enough.
 */
export async function freePorts(count: number, host = '127.0.0.1', preferred: Array<number | undefined> = []): Promise<number[]> {
  // All servers stay open until every port is read, so the ports are distinct.
  const servers: Server[] = [];
  const listen = (port: number) =>
    new Promise<Server | null>((resolvePromise) => {
      const server = createServer();
      server.once('error', () => resolvePromise(null));
      server.listen(port, host, () => resolvePromise(server));
    });
  try {
    const ports: number[] = [];
    for (let index = 0; index < count; index++) {
      const wanted = preferred[index];
      let server = wanted !== undefined && wanted > 0 ? await listen(wanted) : null;
      server ??= await listen(0);
      if (server === null) throw new DfsError('UNAVAILABLE', `cannot listen on ${host}`);
      servers.push(server);
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('listen gave no port');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((done) => server.close(() => done()))));
  }
}

/** The ports of the last cluster started in a data directory, by process id. */
const PORTS_FILE_NAME = 'ports.json';

function readPreviousPorts(dataDir: string): Record<string, number> {
  try {
    const parsed = JSON.parse(readFileSync(join(dataDir, PORTS_FILE_NAME), 'utf8')) as unknown;
    if (parsed === null || typeof parsed !== 'object') return {};
    const ports: Record<string, number> = {};
    for (const [id, port] of Object.entries(parsed)) if (Number.isInteger(port)) ports[id] = port as number;
    return ports;
  } catch {
    return {};
  }
}

/** The last lines of a log file, for error messages. */
export function readLogTail(logFile: string, bytes = LOG_TAIL_BYTES, lines = LOG_TAIL_LINES): string {
  let fd: number;
  try {
    fd = openSync(logFile, 'r');
  } catch {
    return '(no log)';
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, bytes);
    const buffer = Buffer.alloc(length);
    readSync(fd, buffer, 0, length, size - length);
    const text = buffer.toString('utf8').split('\n');
    if (size > length) text.shift(); // a partial first line
    const tail = text.slice(-lines - 1).join('\n').trimEnd();
    return tail.length > 0 ? tail : '(empty log)';
  } finally {
    closeSync(fd);
  }
}

export interface HTTPAnswer {
  status: number;
  text: string;
}

/** One GET with a deadline; the connection is not kept alive, so a CLI exits promptly. */
export async function httpGet(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<HTTPAnswer> {
  const answer = await request(url, {
    method: 'GET',
    reset: true,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: answer.statusCode, text: await answer.body.text() };
}

/** GET /v1/cluster from the first proxy that answers; null when none does. */
export async function fetchClusterStatus(proxyUrls: string[], timeoutMs = PROBE_TIMEOUT_MS): Promise<{ proxyUrl: string; status: ClusterStatus } | null> {
  for (const proxyUrl of proxyUrls) {
    try {
      const answer = await httpGet(`${proxyUrl}/v1/cluster`, timeoutMs);
      if (answer.status === 200) return { proxyUrl, status: JSON.parse(answer.text) as ClusterStatus };
    } catch {
      // Try the next proxy.
    }
  }
  return null;
}

/**
 * One Redis command over a raw RESP connection (the launcher needs two, PING and EXISTS,
 * before any client library would be worth its reconnect logic). Resolves with the first
 * reply line (`+PONG`, `:2`), or null when Redis does not answer in time.
 */
export function redisCommand(host: string, port: number, args: string[], timeoutMs = PROBE_TIMEOUT_MS): Promise<string | null> {
  return new Promise((resolvePromise) => {
    const socket = connect({ host, port });
    let received = '';
    const finish = (line: string | null) => {
      socket.destroy();
      resolvePromise(line);
    };
    socket.setTimeout(timeoutMs, () => finish(null));
    socket.once('error', () => finish(null));
    socket.once('connect', () => {
      const parts = args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`);
      socket.write(`*${args.length}\r\n${parts.join('')}`);
    });
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const end = received.indexOf('\r\n');
      if (end !== -1) finish(received.slice(0, end));
    });
  });
}

export async function pingRedis(host: string, port: number, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return (await redisCommand(host, port, ['PING'], timeoutMs)) === '+PONG';
}

/** GET a storage node's /node/v1/state over HTTP/2 cleartext; null when it does not answer. */
export async function fetchNodeState(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<{ epoch: number; role: string; appliedSeq: number } | null> {
  const client = new Client(url, h2cClientOptions({ headersTimeout: timeoutMs, bodyTimeout: timeoutMs }));
  try {
    const answer = await client.request({ method: 'GET', path: '/node/v1/state', signal: AbortSignal.timeout(timeoutMs) });
    const text = await answer.body.text();
    return answer.statusCode === 200 ? (JSON.parse(text) as { epoch: number; role: string; appliedSeq: number }) : null;
  } catch {
    return null;
  } finally {
    await client.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------
// spawning

export interface Running {
  record: ProcessRecord;
  child: ChildProcess | null;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

function assertBuilt(file: string): void {
  if (!existsSync(file)) {
    throw new DfsError('UNAVAILABLE', `${file} does not exist; run \`npm run build\` first`);
  }
}

function describeExit(running: Running): string {
  const exit = running.exit;
  if (exit === null) return 'exited';
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

function failure(running: Running, what: string): DfsError {
  const { record } = running;
  return new DfsError(
    'UNAVAILABLE',
    `${record.kind} ${record.id} (pid ${record.pid}) ${what}; end of ${record.logFile}:\n${readLogTail(record.logFile)}`,
  );
}

/** Spawns one process with stdout and stderr appended to its log and records its identity. */
export async function spawnRecorded(
  record: Omit<ProcessRecord, 'pid' | 'startTime'>,
  detached: boolean,
  env: NodeJS.ProcessEnv,
): Promise<Running> {
  const fd = openSync(record.logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(record.argv[0]!, record.argv.slice(1), {
      cwd: REPO_ROOT,
      env,
      stdio: ['ignore', fd, fd],
      detached,
    });
  } finally {
    closeSync(fd);
  }
  const pid = child.pid;
  if (pid === undefined) {
    const error = await new Promise<Error>((resolveError) => child.once('error', resolveError));
    const hint = (error as NodeJS.ErrnoException).code === 'ENOENT' ? ` (is ${record.argv[0]} installed? scripts/setup.sh installs it)` : '';
    throw new DfsError('UNAVAILABLE', `cannot start ${record.kind} ${record.id}: ${error.message}${hint}`);
  }
  const running: Running = {
    record: { ...record, pid, startTime: processStartTime(pid) },
    child,
    exit: null,
  };
  child.on('error', () => {
    // Signals to an exited child can fail; the exit handler below records the outcome.
  });
  child.on('exit', (code, signal) => {
    // After a restart the record describes a newer child; the old one's exit is history.
    if (running.child === child) running.exit = { code, signal };
  });
  if (detached) child.unref();
  return running;
}

// ---------------------------------------------------------------------------------------
// stopping

/**
 * Stops what a cluster description records: the supervisor first (so that it restarts
 * nothing of what follows), then the mounts, the proxies, the storage nodes and Redis (so
 * that nothing logs a storm of errors about a dependency that went first).
 *
 * Once the supervisor is gone, cluster.json is read again: a process the supervisor
 * restarted after `description` was read is recorded there, and is stopped too.
 *
 * A mount is asked to stop with SIGTERM, on which dfs-mount commits its buffered writes,
 * unmounts and exits. A mount still there afterwards (busy, or its process died) is
 * unmounted with `fusermount -u`, then `fusermount -uz` when it stays busy past a bound.
 * Signals only processes that are still the recorded ones. Throws if one cannot be stopped.
 */
export async function stopRecorded(description: ClusterFile): Promise<void> {
  const problems: string[] = [];
  let records = description.processes;
  let mounts = description.mounts;
  for (const kind of STOP_ORDER) {
    if (kind === 'mount') {
      // The supervisor is stopped: what cluster.json records now is final.
      let current: ClusterFile | null = null;
      try {
        current = readClusterFile(description.dataDir);
      } catch {
        // A corrupt file: stop what the caller knows of.
      }
      if (current !== null) {
        const known = (record: ProcessRecord) => records.some((other) => other.pid === record.pid && other.startTime === record.startTime);
        records = [...records, ...current.processes.filter((record) => !known(record))];
        mounts = [...mounts, ...current.mounts.filter((mount) => !mounts.some((other) => other.mountpoint === mount.mountpoint))];
      }
    }
    const ofKind = records.filter((record) => record.kind === kind);
    if (ofKind.length > 0) {
      const outcome = await stopProcesses(ofKind, kind === 'mount' ? MOUNT_STOP_GRACE_MS : STOP_GRACE_MS);
      for (const pid of outcome.stuck) problems.push(`${kind} pid ${pid} did not exit after SIGKILL`);
    }
    if (kind !== 'mount') continue;
    for (const mount of mounts) {
      try {
        if (isFuseMounted(mount.mountpoint)) await unmountFuse(mount.mountpoint);
      } catch (error) {
        problems.push((error as Error).message);
      }
    }
  }
  if (problems.length > 0) throw new DfsError('INTERNAL', `stopping the cluster in ${description.dataDir}: ${problems.join('; ')}`);
}

// ---------------------------------------------------------------------------------------
// readiness

/**
 * Polls until every proxy is ready and every node in sync. A process that is gone fails
 * the wait at once, unless a supervisor restarts it: then `refresh` (which takes over the
 * supervisor's records) runs before each look, and a process down is only not ready yet.
 */
async function probeReady(runnings: Running[], nodeIds: string[], timeoutMs: number, supervised?: { refresh: () => void }): Promise<void> {
  let problem: { running: Running | null; what: string } = { running: null, what: 'not ready' };
  const ready = await pollUntil(async () => {
    supervised?.refresh();
    for (const running of runnings) {
      if (running.exit !== null || !isSameProcess(running.record)) {
        if (supervised === undefined) throw failure(running, `${describeExit(running)} while the cluster was starting`);
        problem = { running, what: 'is down (the supervisor restarts it)' };
        return undefined;
      }
    }
    const proxies = runnings.filter((running) => running.record.kind === 'proxy');
    for (const proxy of proxies) {
      try {
        const answer = await httpGet(`${proxy.record.url}/readyz`);
        if (answer.status !== 200) {
          problem = { running: proxy, what: `is not ready (GET /readyz: ${answer.status} ${answer.text.slice(0, 200)})` };
          return undefined;
        }
      } catch (error) {
        problem = { running: proxy, what: `does not answer GET /readyz (${(error as Error).message})` };
        return undefined;
      }
    }
    const view = await fetchClusterStatus(proxies.map((proxy) => proxy.record.url!));
    if (view === null) {
      problem = { running: proxies[0] ?? null, what: 'does not answer GET /v1/cluster' };
      return undefined;
    }
    const membership = view.status.membership;
    const inSync = membership?.inSync ?? [];
    const missing = nodeIds.filter((id) => !inSync.includes(id));
    if (membership === null || missing.length > 0) {
      const node = runnings.find((running) => running.record.kind === 'storage' && running.record.id === missing[0]) ?? null;
      problem = { running: node, what: `is not in sync (in sync: [${inSync.join(', ')}], missing: [${missing.join(', ')}])` };
      return undefined;
    }
    // Every node must have adopted that membership (nodes poll for it), or the first write
    // could meet a node that still acts on an older one.
    for (const running of runnings.filter((candidate) => candidate.record.kind === 'storage')) {
      const state = await fetchNodeState(running.record.url!);
      if (state === null || state.epoch < membership.epoch) {
        problem = { running, what: `has not adopted membership epoch ${membership.epoch} (GET /node/v1/state: ${state === null ? 'no answer' : `epoch ${state.epoch}`})` };
        return undefined;
      }
    }
    return true;
  }, timeoutMs, 100);
  if (ready) return;
  const { running, what } = problem;
  if (running === null) throw new DfsError('TIMEOUT', `the cluster is ${what} after ${timeoutMs} ms`);
  throw failure(running, `${what} after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------------------
// the launcher

export async function startCluster(options: ClusterOptions): Promise<Cluster> {
  const nodeCount = options.nodes ?? 3;
  const proxyCount = options.proxies ?? 2;
  const host = options.host ?? '127.0.0.1';
  const detached = options.detached ?? false;
  const supervise = options.supervise ?? false;
  const readyTimeoutMs = options.readyTimeoutMs ?? READY_TIMEOUT_MS;
  if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > NODE_COUNT_MAX) {
    throw new DfsError('BAD_REQUEST', `nodes must be an integer from 1 to ${NODE_COUNT_MAX}, not ${nodeCount}`);
  }
  if (!Number.isInteger(proxyCount) || proxyCount < 1 || proxyCount > PROXY_COUNT_MAX) {
    throw new DfsError('BAD_REQUEST', `proxies must be an integer from 1 to ${PROXY_COUNT_MAX}, not ${proxyCount}`);
  }
  assertBuilt(STORAGE_MAIN);
  assertBuilt(PROXY_MAIN);
  if (supervise) assertBuilt(DFS_MAIN);

  const dataDir = resolve(options.dataDir);
  const logDir = resolve(options.logDir ?? join(dataDir, 'logs'));
  const redisDir = join(dataDir, 'redis');
  for (const dir of [dataDir, logDir, redisDir]) mkdirSync(dir, { recursive: true });
  const env: NodeJS.ProcessEnv = { ...process.env, ...(options.env ?? {}) };

  // A cluster restarted on the same data keeps its ports when they are free, so that the
  // node URLs recorded in its membership (kept by a persistent Redis) still hold.
  const ids = ['redis', ...Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`), ...Array.from({ length: proxyCount }, (_, i) => `p${i + 1}`)];
  const previous = readPreviousPorts(dataDir);
  const allPorts = await freePorts(ids.length, host, ids.map((id) => previous[id]));
  writeFileSync(join(dataDir, PORTS_FILE_NAME), JSON.stringify(Object.fromEntries(ids.map((id, i) => [id, allPorts[i]])), null, 2) + '\n');
  const [redisPort, ...ports] = allPorts;
  const redisUrl = `redis://${host}:${redisPort}`;
  const description: ClusterFile = {
    version: 1,
    dataDir,
    createdAt: new Date().toISOString(),
    redisUrl,
    proxyUrls: [],
    processes: [],
    mounts: [],
  };
  const runnings: Running[] = [];
  // Until the supervisor runs, this is the only writer; the lock is for the supervisor's
  // first look (`dfs local supervise` records itself when it does not find itself).
  const save = () =>
    withClusterLock(dataDir, () => {
      description.processes = runnings.map((running) => running.record);
      writeClusterFile(description);
    });

  // Children of an attached cluster die with this process, even when a test forgets to
  // stop it or crashes: 'exit' handlers run synchronously, and kill() is synchronous. The
  // supervisor goes first, and what it restarted is in cluster.json, not in `runnings`.
  const killOnExit = () => {
    const records = runnings.map((running) => running.record);
    if (supervise) {
      try {
        records.push(...(readClusterFile(dataDir)?.processes ?? []));
      } catch {
        // A corrupt file: kill what we know of.
      }
    }
    records.sort((a, b) => STOP_ORDER.indexOf(a.kind) - STOP_ORDER.indexOf(b.kind));
    for (const record of records) {
      if (isSameProcess(record)) {
        try {
          process.kill(record.pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
    }
  };
  if (!detached) process.on('exit', killOnExit);

  const start = async (record: Omit<ProcessRecord, 'pid' | 'startTime'>): Promise<Running> => {
    const running = await spawnRecorded(record, detached, env);
    runnings.push(running);
    await save();
    return running;
  };

  try {
    const redisArgv = [
      'redis-server',
      '--port', String(redisPort),
      '--bind', host,
      '--dir', redisDir,
      '--daemonize', 'no',
      '--save', '',
      '--appendonly', (options.redisPersistent ?? supervise) ? 'yes' : 'no',
    ];
    const redis = await start({
      kind: 'redis', id: 'redis', url: redisUrl, port: redisPort!, logFile: join(logDir, 'redis.log'),
      argv: redisArgv, markers: ['redis-server', String(redisPort)],
    });
    const pong = await pollUntil(async () => {
      if (redis.exit !== null) throw failure(redis, describeExit(redis));
      return (await pingRedis(host, redisPort!)) ? true : undefined;
    }, REDIS_READY_TIMEOUT_MS, 50);
    if (!pong) throw failure(redis, `does not answer PING after ${REDIS_READY_TIMEOUT_MS} ms`);

    const nodeIds: string[] = [];
    for (let index = 0; index < nodeCount; index++) {
      const id = `n${index + 1}`;
      const port = ports[index]!;
      const nodeDataDir = join(dataDir, 'nodes', id);
      mkdirSync(nodeDataDir, { recursive: true });
      nodeIds.push(id);
      await start(storageTemplate({ id, port, host, dataDir, logDir, redisUrl, nodeArgs: options.nodeArgs ?? [] }));
    }
    // The leader's first membership is the nodes registered when it first looks, so the
    // proxies start only once every node is: the cluster then always starts the same way,
    // all nodes in sync at the first epoch, the lowest ID primary.
    const aliveKeys = nodeIds.map((id) => nodeAliveKey(id));
    let registered = '';
    const allRegistered = await pollUntil(async () => {
      for (const running of runnings) {
        if (running.exit !== null) throw failure(running, `${describeExit(running)} while the cluster was starting`);
      }
      registered = (await redisCommand(host, redisPort!, ['EXISTS', ...aliveKeys])) ?? '';
      return registered === `:${nodeIds.length}` ? true : undefined;
    }, readyTimeoutMs, 50);
    if (!allRegistered) {
      for (const running of runnings.filter((candidate) => candidate.record.kind === 'storage')) {
        if ((await redisCommand(host, redisPort!, ['EXISTS', nodeAliveKey(running.record.id)])) !== ':1') {
          throw failure(running, `did not register in Redis within ${readyTimeoutMs} ms`);
        }
      }
      throw new DfsError('TIMEOUT', `only ${registered.slice(1) || 0} of ${nodeIds.length} storage nodes registered in Redis within ${readyTimeoutMs} ms`);
    }

    for (let index = 0; index < proxyCount; index++) {
      const id = `p${index + 1}`;
      const port = ports[nodeCount + index]!;
      await start({
        kind: 'proxy', id, url: `http://${host}:${port}`, port, logFile: join(logDir, `${id}.log`),
        argv: [process.execPath, PROXY_MAIN, '--id', id, '--port', String(port), '--host', host, '--redis', redisUrl],
        markers: [PROXY_MAIN, `--id ${id} `, `--port ${port}`],
      });
    }
    description.proxyUrls = runnings.filter((running) => running.record.kind === 'proxy').map((running) => running.record.url!);
    await save();

    await probeReady(runnings, nodeIds, readyTimeoutMs);
    // The supervisor starts last: a process that fails during the start fails the start,
    // rather than being restarted into the same failure.
    if (supervise) await start(supervisorTemplate(dataDir, logDir));
  } catch (error) {
    await stopRecorded(description).catch(() => undefined);
    if (!detached) process.off('exit', killOnExit);
    rmSync(clusterFilePath(dataDir), { force: true });
    throw error;
  }

  return makeCluster(description, runnings, { detached, supervised: supervise, env, killOnExit, nodeIds: runnings.filter((r) => r.record.kind === 'storage').map((r) => r.record.id) });
}

/** A storage node's record, less what spawning adds. */
function storageTemplate(o: { id: string; port: number; host: string; dataDir: string; logDir: string; redisUrl: string; nodeArgs: string[] }): Omit<ProcessRecord, 'pid' | 'startTime'> {
  const nodeDataDir = join(o.dataDir, 'nodes', o.id);
  mkdirSync(nodeDataDir, { recursive: true });
  return {
    kind: 'storage', id: o.id, url: `http://${o.host}:${o.port}`, port: o.port, logFile: join(o.logDir, `${o.id}.log`),
    argv: [process.execPath, STORAGE_MAIN, '--id', o.id, '--data', nodeDataDir, '--port', String(o.port), '--host', o.host, '--redis', o.redisUrl, ...o.nodeArgs],
    markers: [STORAGE_MAIN, `--id ${o.id} `, `--port ${o.port}`],
    dataDir: nodeDataDir,
    brickDir: join(nodeDataDir, 'brick'),
  };
}

/** The template of the next storage node of a recorded cluster: one past the highest node
 * ID, a free port, the host, Redis and extra arguments of the cluster's first node. */
async function nextNodeTemplate(description: ClusterFile): Promise<Omit<ProcessRecord, 'pid' | 'startTime'>> {
  const storage = description.processes.filter((record) => record.kind === 'storage');
  if (storage.length >= NODE_COUNT_MAX) throw new DfsError('BAD_REQUEST', `a local cluster has at most ${NODE_COUNT_MAX} storage nodes`);
  const first = storage[0];
  if (first === undefined) throw new DfsError('BAD_REQUEST', 'the cluster records no storage node to model a new one on');
  const numbers = storage.map((record) => Number(record.id.slice(1))).filter((n) => Number.isSafeInteger(n));
  const id = `n${Math.max(0, ...numbers) + 1}`;
  const argv = first.argv;
  const host = argv[argv.indexOf('--host') + 1]!;
  const redisAt = argv.indexOf('--redis');
  const [port] = await freePorts(1, host);
  return storageTemplate({ id, port: port!, host, dataDir: description.dataDir, logDir: dirname(first.logFile), redisUrl: argv[redisAt + 1]!, nodeArgs: argv.slice(redisAt + 2) });
}

/** `dfs local add-node`: starts the next storage node of a running local cluster, detached,
 * and records it (the supervisor, if any, restarts it like the others). */
export async function addNodeRecorded(dataDir: string): Promise<ProcessRecord> {
  const description = readClusterFile(dataDir);
  if (description === null) throw new DfsError('BAD_REQUEST', `no cluster is recorded in ${resolve(dataDir)}`);
  const running = await spawnRecorded(await nextNodeTemplate(description), true, process.env);
  await updateClusterFile(dataDir, (current) => upsertRecord(current, running.record));
  return running.record;
}

/** The supervisor's record, less what spawning adds. (`dfs local supervise` run by hand
 * records itself with its own command line instead: supervisor.ts.) */
export function supervisorTemplate(dataDir: string, logDir = join(dataDir, 'logs')): Omit<ProcessRecord, 'pid' | 'startTime'> {
  const data = resolve(dataDir);
  return {
    kind: 'supervisor', id: 'supervisor', url: null, port: null, logFile: join(logDir, 'supervisor.log'),
    argv: [process.execPath, DFS_MAIN, 'local', 'supervise', '--data', data],
    markers: [DFS_MAIN, 'local supervise', `--data ${data}`],
  };
}

function makeCluster(
  description: ClusterFile,
  runnings: Running[],
  context: { detached: boolean; supervised: boolean; env: NodeJS.ProcessEnv; killOnExit: () => void; nodeIds: string[] },
): Cluster {
  const dataDir = description.dataDir;
  const redisRunning = runnings.find((running) => running.record.kind === 'redis')!;
  const nodes: NodeHandle[] = runnings
    .filter((running) => running.record.kind === 'storage')
    .map((running) => ({
      id: running.record.id, url: running.record.url!, port: running.record.port!, pid: running.record.pid,
      dataDir: running.record.dataDir!, brickDir: running.record.brickDir!,
    }));
  const proxies: ProxyHandle[] = runnings
    .filter((running) => running.record.kind === 'proxy')
    .map((running) => ({ id: running.record.id, url: running.record.url!, port: running.record.port!, pid: running.record.pid }));
  const redis = { pid: redisRunning.record.pid, url: description.redisUrl, port: redisRunning.record.port! };
  /** In a supervised cluster, the pid killProcess killed, until restartProcess saw it replaced. */
  const killed = new Map<string, ProcessIdentity>();
  let stopped = false;

  const adopt = (running: Running, record: ProcessRecord) => {
    running.record = record;
    const handle = record.kind === 'storage' ? nodes.find((node) => node.id === record.id) : record.kind === 'proxy' ? proxies.find((proxy) => proxy.id === record.id) : undefined;
    if (handle) handle.pid = record.pid;
    if (record.kind === 'redis') redis.pid = record.pid;
    description.processes = runnings.map((candidate) => candidate.record);
  };
  /** The supervisor replaces the records of what it restarts: take them over from
   * cluster.json before looking at one. */
  const refresh = () => {
    if (!context.supervised || stopped) return;
    let current: ClusterFile | null = null;
    try {
      current = readClusterFile(dataDir);
    } catch {
      return; // a corrupt file: keep what we know
    }
    for (const running of runnings) {
      const recorded = current?.processes.find((candidate) => candidate.kind === running.record.kind && candidate.id === running.record.id);
      if (recorded === undefined) continue;
      if (recorded.pid !== running.record.pid || recorded.startTime !== running.record.startTime) {
        // Not our child any more: its exit is not ours to report.
        running.child = null;
        running.exit = null;
      }
      adopt(running, recorded);
    }
  };
  const find = (kind: ProcessKind, id: string): Running => {
    refresh();
    const running = runnings.find((candidate) => candidate.record.kind === kind && candidate.record.id === id);
    if (running === undefined) throw new DfsError('BAD_REQUEST', `no ${kind} process ${id} in this cluster`);
    return running;
  };

  const cluster: Cluster = {
    dataDir,
    clusterFile: clusterFilePath(dataDir),
    supervised: context.supervised,
    redisUrl: description.redisUrl,
    proxyUrls: description.proxyUrls,
    nodes,
    proxies,
    redis,
    records: () => {
      refresh();
      return runnings.map((running) => running.record);
    },

    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        await stopRecorded(description);
      } finally {
        if (!context.detached) process.off('exit', context.killOnExit);
        rmSync(clusterFilePath(dataDir), { force: true });
      }
    },

    killProcess(kind, id, signal = 'SIGKILL') {
      const running = find(kind, id);
      const { pid, startTime, markers } = running.record;
      if (!signalProcess(running.record, signal)) {
        throw new DfsError('BAD_REQUEST', `${kind} ${id} (pid ${pid}) is not running`);
      }
      if (context.supervised) killed.set(`${kind}/${id}`, { pid, startTime, markers });
    },

    async restartProcess(kind, id) {
      const running = find(kind, id);
      if (context.supervised) {
        // The supervisor restarts it; starting it here as well would race it for the port.
        const key = `${kind}/${id}`;
        const gone = killed.get(key) ?? (isSameProcess(running.record) ? null : running.record);
        if (gone === null) throw new DfsError('BAD_REQUEST', `${kind} ${id} (pid ${running.record.pid}) is still running; kill it first`);
        const back = await pollUntil(() => {
          const current = find(kind, id).record;
          return current.pid !== gone.pid && isSameProcess(current) ? true : undefined;
        }, SUPERVISED_RESTART_WAIT_MS);
        if (!back) {
          const supervisor = runnings.find((candidate) => candidate.record.kind === 'supervisor');
          const log = supervisor === undefined ? '(no supervisor)' : readLogTail(supervisor.record.logFile);
          throw new DfsError('TIMEOUT', `the supervisor did not restart ${kind} ${id} within ${SUPERVISED_RESTART_WAIT_MS} ms; end of its log:\n${log}`);
        }
        killed.delete(key);
        return;
      }
      if (isSameProcess(running.record)) {
        throw new DfsError('BAD_REQUEST', `${kind} ${id} (pid ${running.record.pid}) is still running; kill it first`);
      }
      const { pid: _pid, startTime: _startTime, ...template } = running.record;
      const fresh = await spawnRecorded(template, context.detached, context.env);
      running.child = fresh.child;
      running.exit = null;
      fresh.child?.on('exit', (code, signal) => {
        if (running.child === fresh.child) running.exit = { code, signal };
      });
      adopt(running, fresh.record);
      await updateClusterFile(dataDir, (current) => upsertRecord(current, fresh.record));
    },

    isRunning(kind, id) {
      return isSameProcess(find(kind, id).record);
    },

    logTail(kind, id) {
      return readLogTail(find(kind, id).record.logFile);
    },

    async waitReady(timeoutMs = READY_TIMEOUT_MS) {
      const serving = runnings.filter((running) => running.record.kind !== 'mount' && running.record.kind !== 'supervisor');
      await probeReady(serving, context.nodeIds, timeoutMs, context.supervised ? { refresh } : undefined);
    },

    async addNode() {
      refresh();
      const template = await nextNodeTemplate({ ...description, processes: runnings.map((running) => running.record) });
      const running = await spawnRecorded(template, context.detached, context.env);
      runnings.push(running);
      description.processes = runnings.map((candidate) => candidate.record);
      await updateClusterFile(dataDir, (current) => upsertRecord(current, running.record));
      const node: NodeHandle = { id: template.id, url: template.url!, port: template.port!, pid: running.record.pid, dataDir: template.dataDir!, brickDir: template.brickDir! };
      nodes.push(node);
      context.nodeIds.push(node.id);
      return node;
    },

    async mount(mountpoint, mountOptions = {}) {
      const { running, mount } = await mountFor(description, mountpoint, { detached: context.detached, env: context.env, ...mountOptions });
      runnings.push(running);
      description.processes = runnings.map((candidate) => candidate.record);
      description.mounts.push(mount);
      await updateClusterFile(dataDir, (current) => {
        upsertRecord(current, running.record);
        current.mounts.push(mount);
      });
      return running.record;
    },

    async unmount(mountpoint) {
      const target = resolve(mountpoint);
      const mount = description.mounts.find((candidate) => candidate.mountpoint === target);
      if (mount === undefined) throw new DfsError('BAD_REQUEST', `${target} is not a mount of this cluster`);
      // Unlisted first: the supervisor restarts only listed mounts, and must not restart
      // this one while it is being stopped.
      description.mounts = description.mounts.filter((candidate) => candidate !== mount);
      await updateClusterFile(dataDir, (current) => {
        current.mounts = current.mounts.filter((candidate) => candidate.mountpoint !== target);
      });
      const running = find('mount', mount.processId);
      await stopProcesses([running.record], MOUNT_STOP_GRACE_MS);
      if (isFuseMounted(target)) await unmountFuse(target);
    },
  };
  return cluster;
}

// ---------------------------------------------------------------------------------------
// mounts

export interface StartMountOptions extends MountOptions {
  id: string;
  mountpoint: string;
  proxyUrls: string[];
  logFile: string;
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
}

/** The ID of the next mount: one past the highest recorded, so that a mount made after an
 * unmount does not take the ID (and the record) of the one before. */
function nextMountId(description: ClusterFile): string {
  const numbers = description.processes
    .filter((record) => record.kind === 'mount')
    .map((record) => Number(record.id.slice(1)))
    .filter((n) => Number.isSafeInteger(n));
  return `m${Math.max(0, ...numbers) + 1}`;
}

/** Mounts the cluster `description` records at `mountpoint`, under the next mount ID, with
 * every proxy; the caller records the process and the mount. */
async function mountFor(
  description: ClusterFile,
  mountpoint: string,
  options: Omit<StartMountOptions, 'id' | 'mountpoint' | 'proxyUrls' | 'logFile'>,
): Promise<{ running: Running; mount: MountRecord }> {
  const target = resolve(mountpoint);
  const id = nextMountId(description);
  const running = await startMount({
    ...options,
    id,
    mountpoint: target,
    proxyUrls: description.proxyUrls,
    logFile: join(description.dataDir, 'logs', `mount-${id}.log`),
  });
  return { running, mount: { mountpoint: target, processId: id, proxyUrls: description.proxyUrls } };
}

/**
 * Runs `dfs-mount MOUNTPOINT --proxy URL,URL -f` as our child (so that we know its pid)
 * and waits until the kernel lists the FUSE mount. The mount point is created if missing.
 */
async function startMount(options: StartMountOptions): Promise<Running> {
  assertBuilt(MOUNT_BIN);
  const mountpoint = resolve(options.mountpoint);
  mkdirSync(mountpoint, { recursive: true });
  if (!statSync(mountpoint).isDirectory()) throw new DfsError('BAD_REQUEST', `${mountpoint} is not a directory`);
  if (findMount(mountpoint) !== null && isFuseMounted(mountpoint)) {
    throw new DfsError('BAD_REQUEST', `${mountpoint} is already a FUSE mount point; unmount it first (fusermount -u ${mountpoint})`);
  }
  const running = await spawnRecorded(
    {
      kind: 'mount', id: options.id, url: null, port: null, logFile: options.logFile,
      argv: [process.execPath, MOUNT_BIN, mountpoint, '--proxy', options.proxyUrls.join(','), '-f', ...(options.args ?? [])],
      markers: [MOUNT_BIN, mountpoint],
      mountpoint,
    },
    options.detached ?? false,
    options.env ?? process.env,
  );
  const timeoutMs = options.timeoutMs ?? MOUNT_READY_TIMEOUT_MS;
  const mounted = await pollUntil(() => {
    if (running.exit !== null) throw failure(running, `${describeExit(running)} before ${mountpoint} was mounted`);
    return isFuseMounted(mountpoint) ? true : undefined;
  }, timeoutMs, 50);
  if (!mounted) {
    await stopProcesses([running.record], 2_000);
    throw failure(running, `did not mount ${mountpoint} within ${timeoutMs} ms`);
  }
  return running;
}

/** Mounts an already running cluster described by cluster.json and records the mount there. */
export async function mountRecorded(dataDir: string, mountpoint: string, options: MountOptions & { detached?: boolean } = {}): Promise<ProcessRecord> {
  const description = readClusterFile(dataDir);
  if (description === null) throw new DfsError('BAD_REQUEST', `no cluster is recorded in ${resolve(dataDir)}`);
  const { running, mount } = await mountFor(description, mountpoint, {
    detached: options.detached ?? true,
    ...(options.args ? { args: options.args } : {}),
    ...(options.timeoutMs ? { timeoutMs: options.timeoutMs } : {}),
  });
  await updateClusterFile(dataDir, (current) => {
    upsertRecord(current, running.record);
    current.mounts.push(mount);
  });
  return running.record;
}
