/*
 * The processes of a local cluster: where their programs are, how one is spawned and
 * recorded (stdout and stderr appended to its log, its pid and start time taken at once so
 * that processes.ts can tell it from a later process with the same pid), the templates of
 * the records (storage node, supervisor), and how a whole recorded cluster is stopped in
 * order. An error about a process quotes the end of its log.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { readClusterFile, STOP_ORDER, type ClusterFile, type ProcessRecord } from './cluster-file';
import { isFuseMounted, unmountFuse } from './mounts';
import { freePorts } from './ports';
import { processStartTime, STOP_GRACE_MS, stopProcesses } from './processes';
import { NODE_RUNTIME_FLAGS } from '../common/node-runtime';
import { registerClientTls, type Role } from '../common/tls';
import { ADMIN_CREDENTIAL } from '../common/credential';
import { ensureCert, readMaterial } from './certs';
import { readRedisLogin, redisAuthFile } from './redis-acl';
import { registerRedisAuth, type RedisRole } from '../common/redis-auth';

/** The repository root: this file runs as dist/cli/cluster-processes.js. */
export const REPO_ROOT = resolve(__dirname, '..', '..');
export const STORAGE_MAIN = join(REPO_ROOT, 'dist', 'storage', 'main.js');
export const PROXY_MAIN = join(REPO_ROOT, 'dist', 'proxy', 'main.js');
export const MOUNT_BIN = join(REPO_ROOT, 'bin', 'dfs-mount');
/** The `dfs` command itself, which runs the supervisor (`dfs local supervise`). */
export const DFS_MAIN = join(REPO_ROOT, 'dist', 'cli', 'dfs.js');

/** How long a mount gets after SIGTERM: dfs-mount commits buffered writes for up to 10 s
 * (SHUTDOWN_FLUSH_MS), then unmounts. */
export const MOUNT_STOP_GRACE_MS = 15_000;
/** How much of a log an error quotes. */
export const LOG_TAIL_BYTES = 4_096;
export const LOG_TAIL_LINES = 25;
/** Bounds on what a local cluster may be asked to run. */
export const NODE_COUNT_MAX = 16;
export const PROXY_COUNT_MAX = 16;

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

// ---------------------------------------------------------------------------------------
// spawning

export interface Running {
  record: ProcessRecord;
  child: ChildProcess | null;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null;
}

export function assertBuilt(file: string): void {
  if (!existsSync(file)) {
    throw new DfsError('UNAVAILABLE', `${file} does not exist; run \`npm run build\` first`);
  }
}

export function describeExit(running: Running): string {
  const exit = running.exit;
  if (exit === null) return 'exited';
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

export function failure(running: Running, what: string): DfsError {
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
  const fd = openSync(record.logFile, 'a', 0o600);
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
// certificates (cli/certs.ts; docs/security.md)

/** A process's transport arguments: its certificate in `tlsDir` (issued or renewed now),
 * or --insecure when the cluster runs without TLS (tlsDir null). */
export function tlsArgs(tlsDir: string | null, name: string, role: Role, host: string): string[] {
  if (tlsDir === null) return ['--insecure'];
  const files = ensureCert(tlsDir, name, { role, hosts: [host], ...(role === 'mount' ? { credential: ADMIN_CREDENTIAL } : {}) });
  return ['--ca', files.ca, '--cert', files.cert, '--key', files.key];
}

/** A process's Redis login: the password file of its role (cli/redis-acl.ts), named on
 * the command line, the password itself never; nothing for an --insecure cluster. */
export function redisAuthArgs(tlsDir: string | null, role: RedisRole): string[] {
  return tlsDir === null ? [] : ['--redis-auth', redisAuthFile(tlsDir, role)];
}

/** `http` or `https`, as the cluster runs. */
export function schemeOf(tlsDir: string | null | undefined): string {
  return tlsDir ? 'https' : 'http';
}

/** The admin credential of a TLS cluster (issued if missing), registered for every URL it
 * records, and the admin's Redis password for its Redis, so that this program's probes and clients (the `dfs` command, the harness)
 * authenticate to it. Nothing for an --insecure cluster. */
export function useAdminCredential(description: Pick<ClusterFile, 'tlsDir' | 'proxyUrls' | 'processes'> & Partial<Pick<ClusterFile, 'redisUrl'>>, host = '127.0.0.1'): void {
  if (!description.tlsDir) return;
  const login = readRedisLogin(description.tlsDir, 'admin');
  if (login !== null && description.redisUrl) registerRedisAuth(description.redisUrl, login);
  const material = readMaterial(ensureCert(description.tlsDir, 'admin', { role: 'admin', hosts: [host] }));
  const urls = [...description.proxyUrls, ...description.processes.flatMap((record) => (record.url && record.kind !== 'redis' ? [record.url] : []))];
  registerClientTls(urls, material, join(description.tlsDir, 'admin'));
}

/** A storage node's record, less what spawning adds. */
export function storageTemplate(o: { id: string; port: number; adminPort: number; host: string; dataDir: string; logDir: string; redisUrl: string; nodeArgs: string[]; tlsDir: string | null }): Omit<ProcessRecord, 'pid' | 'startTime'> {
  const nodeDataDir = join(o.dataDir, 'nodes', o.id);
  mkdirSync(nodeDataDir, { recursive: true, mode: 0o700 });
  return {
    kind: 'storage', id: o.id, url: `${schemeOf(o.tlsDir)}://${o.host}:${o.port}`, port: o.port, adminUrl: adminUrlOf(o.host, o.adminPort), logFile: join(o.logDir, `${o.id}.log`),
    // The transport's options come before --redis: nextNodeTemplate copies what follows it.
    argv: [process.execPath, ...NODE_RUNTIME_FLAGS, STORAGE_MAIN, '--id', o.id, '--data', nodeDataDir, '--port', String(o.port), '--host', o.host, '--admin-port', String(o.adminPort), '--admin-host', o.host, ...tlsArgs(o.tlsDir, o.id, 'node', o.host), ...redisAuthArgs(o.tlsDir, 'node'), '--redis', o.redisUrl, ...o.nodeArgs],
    markers: [STORAGE_MAIN, `--id ${o.id} `, `--port ${o.port}`],
    dataDir: nodeDataDir,
    brickDir: join(nodeDataDir, 'brick'),
  };
}

/** The admin port's base URL (common/admin-server.ts): plain HTTP, an IPv6 host in brackets. */
export function adminUrlOf(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The template of the next storage node of a recorded cluster: one past the highest node
 * ID, a free port, the host, Redis and extra arguments of the cluster's first node. */
export async function nextNodeTemplate(description: ClusterFile): Promise<Omit<ProcessRecord, 'pid' | 'startTime'>> {
  const storage = description.processes.filter((record) => record.kind === 'storage');
  if (storage.length >= NODE_COUNT_MAX) throw new DfsError('BAD_REQUEST', `a local cluster has at most ${NODE_COUNT_MAX} storage nodes`);
  const first = storage[0];
  if (first === undefined) throw new DfsError('BAD_REQUEST', 'the cluster records no storage node to model a new one on');
  const numbers = storage.map((record) => Number(record.id.slice(1))).filter((n) => Number.isSafeInteger(n));
  const id = `n${Math.max(0, ...numbers) + 1}`;
  const argv = first.argv;
  const host = argv[argv.indexOf('--host') + 1]!;
  const redisAt = argv.indexOf('--redis');
  const [port, adminPort] = await freePorts(2, host);
  return storageTemplate({ id, port: port!, adminPort: adminPort!, host, dataDir: description.dataDir, logDir: dirname(first.logFile), redisUrl: argv[redisAt + 1]!, nodeArgs: argv.slice(redisAt + 2), tlsDir: description.tlsDir ?? null });
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
