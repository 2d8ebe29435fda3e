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
 * A stop signals only recorded pids that still carry the recorded start time and command
 * line (processes.ts), so a reused pid is never killed; it stops the supervisor first, so
 * that nothing it stops is started again behind its back.
 *
 * The launcher is in pieces, one concern each, and this module re-exports them so that
 * its callers (the `dfs` command, twenty test files) import from one place:
 *   cluster-file.ts       the cluster.json record, and its lock (file-lock.ts)
 *   ports.ts              free loopback ports, and the ports of the last start
 *   cluster-processes.ts  spawning, recording and stopping the processes
 *   probes.ts             HTTP and Redis readiness probes, and the wait for a ready cluster
 *   cluster-mounts.ts     dfs-mount processes
 *   cluster-handle.ts     the `Cluster` handle that startCluster returns
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { nodeAliveKey } from '../common/redis-keys';
import { clusterFilePath, readClusterFile, STOP_ORDER, updateClusterFile, upsertRecord, withClusterLock, writeClusterFile, type ClusterFile, type ProcessRecord } from './cluster-file';
import { makeCluster, type Cluster } from './cluster-handle';
import {
  adminUrlOf,
  assertBuilt,
  describeExit,
  DFS_MAIN,
  failure,
  NODE_COUNT_MAX,
  nextNodeTemplate,
  PROXY_COUNT_MAX,
  PROXY_MAIN,
  spawnRecorded,
  stopRecorded,
  STORAGE_MAIN,
  schemeOf,
  storageTemplate,
  supervisorTemplate,
  redisAuthArgs,
  tlsArgs,
  useAdminCredential,
  type Running,
} from './cluster-processes';
import { freePorts, readPreviousPorts, writePorts } from './ports';
import { countRedisKeys, pingRedis, probeReady, READY_TIMEOUT_MS } from './probes';
import { isSameProcess, pollUntil } from './processes';
import { NODE_RUNTIME_FLAGS } from '../common/node-runtime';
import { ensureCa } from './certs';
import { ensureRedisAcl, readRedisLogin } from './redis-acl';
import { registerRedisAuth } from '../common/redis-auth';

export * from './cluster-file';
export * from './cluster-handle';
export * from './cluster-mounts';
export * from './cluster-processes';
export * from './ports';
export * from './probes';

/** How long Redis may take to answer PING after it was spawned. */
export const REDIS_READY_TIMEOUT_MS = 10_000;

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
  /** Plaintext, no certificates (`dfs local up --insecure`): every process logs a warning.
   * Default: TLS with a CA and a certificate per process under <dataDir>/tls. */
  insecure?: boolean;
  /** Told, as one line each, what the start is doing and what it waits for (`dfs local
   * up` prints them): each step, and whenever what it waits for changes. */
  onProgress?: (line: string) => void;
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
  const progress = options.onProgress ?? (() => undefined);
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
  // Private to the user running the cluster: bricks, logs, Redis's files (issue 13).
  for (const dir of [dataDir, logDir, redisDir]) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
  }
  const env: NodeJS.ProcessEnv = { ...process.env, ...(options.env ?? {}) };

  // A cluster restarted on the same data keeps its ports when they are free, so that the
  // node URLs recorded in its membership (kept by a persistent Redis) still hold.
  const ids = ['redis', ...Array.from({ length: nodeCount }, (_, i) => `n${i + 1}`), ...Array.from({ length: proxyCount }, (_, i) => `p${i + 1}`)];
  // Each node and proxy also has an admin port (metrics and probes without a certificate).
  ids.push(...ids.slice(1).map((id) => `${id}-admin`));
  const previous = readPreviousPorts(dataDir);
  const allPorts = await freePorts(ids.length, host, ids.map((id) => previous[id]));
  writePorts(dataDir, Object.fromEntries(ids.map((id, i) => [id, allPorts[i]!])));
  const [redisPort, ...ports] = allPorts;
  const redisUrl = `redis://${host}:${redisPort}`;
  // The CA and every process's certificate (cli/certs.ts), kept across restarts; Redis
  // listens on loopback only, where plaintext is allowed (common/tls.ts, redisTlsOptions).
  const tlsDir = options.insecure ? null : join(dataDir, 'tls');
  if (tlsDir !== null) ensureCa(tlsDir);
  // Redis's users and passwords (cli/redis-acl.ts), beside the certificates; none under
  // --insecure. This program's own Redis clients log in as admin.
  const aclFile = tlsDir === null ? null : ensureRedisAcl(tlsDir);
  const adminLogin = readRedisLogin(tlsDir, 'admin');
  if (adminLogin !== null) registerRedisAuth(redisUrl, adminLogin);
  const scheme = schemeOf(tlsDir);
  const description: ClusterFile = {
    version: 1,
    dataDir,
    createdAt: new Date().toISOString(),
    redisUrl,
    proxyUrls: [],
    processes: [],
    mounts: [],
    tlsDir,
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
      // Every write fsynced before Redis answers it (docs/cluster.md, "Redis that forgets"):
      // with the default everysec, a crash may forget INCRs already answered, and the
      // counter would hand out a sequence ID twice (and the epoch name two memberships).
      '--appendfsync', 'always',
      // Its users (default off) from the ACL file, so that no one reaches it without a password.
      ...(aclFile === null ? [] : ['--aclfile', aclFile]),
    ];
    progress(`starting Redis on port ${redisPort}`);
    const redis = await start({
      kind: 'redis', id: 'redis', url: redisUrl, port: redisPort!, logFile: join(logDir, 'redis.log'),
      argv: redisArgv, markers: ['redis-server', String(redisPort)],
    });
    const pong = await pollUntil(async () => {
      if (redis.exit !== null) throw failure(redis, describeExit(redis));
      return (await pingRedis(redisUrl)) ? true : undefined;
    }, REDIS_READY_TIMEOUT_MS, 50);
    if (!pong) throw failure(redis, `does not answer PING after ${REDIS_READY_TIMEOUT_MS} ms`);

    const nodeIds: string[] = [];
    progress(`starting ${nodeCount} storage node${nodeCount === 1 ? '' : 's'}`);
    for (let index = 0; index < nodeCount; index++) {
      const id = `n${index + 1}`;
      const port = ports[index]!;
      const nodeDataDir = join(dataDir, 'nodes', id);
      mkdirSync(nodeDataDir, { recursive: true, mode: 0o700 });
      nodeIds.push(id);
      const adminPort = ports[nodeCount + proxyCount + index]!;
      await start(storageTemplate({ id, port, adminPort, host, dataDir, logDir, redisUrl, nodeArgs: options.nodeArgs ?? [], tlsDir }));
    }
    // The leader's first membership is the nodes registered when it first looks, so the
    // proxies start only once every node is: the cluster then always starts the same way,
    // all nodes in sync at the first epoch, the lowest ID primary.
    const aliveKeys = nodeIds.map((id) => nodeAliveKey(id));
    let registered = 0;
    let registeredSaid = -1;
    const allRegistered = await pollUntil(async () => {
      for (const running of runnings) {
        if (running.exit !== null) throw failure(running, `${describeExit(running)} while the cluster was starting`);
      }
      registered = (await countRedisKeys(redisUrl, aliveKeys)) ?? 0;
      if (registered !== registeredSaid) {
        registeredSaid = registered;
        progress(`waiting for the storage nodes to register in Redis: ${registered} of ${nodeIds.length}`);
      }
      return registered === nodeIds.length ? true : undefined;
    }, readyTimeoutMs, 50);
    if (!allRegistered) {
      for (const running of runnings.filter((candidate) => candidate.record.kind === 'storage')) {
        if ((await countRedisKeys(redisUrl, [nodeAliveKey(running.record.id)])) !== 1) {
          throw failure(running, `did not register in Redis within ${readyTimeoutMs} ms`);
        }
      }
      throw new DfsError('TIMEOUT', `only ${registered} of ${nodeIds.length} storage nodes registered in Redis within ${readyTimeoutMs} ms`);
    }

    progress(`starting ${proxyCount} prox${proxyCount === 1 ? 'y' : 'ies'}`);
    for (let index = 0; index < proxyCount; index++) {
      const id = `p${index + 1}`;
      const port = ports[nodeCount + index]!;
      const adminPort = ports[2 * nodeCount + proxyCount + index]!;
      await start({
        kind: 'proxy', id, url: `${scheme}://${host}:${port}`, port, adminUrl: adminUrlOf(host, adminPort), logFile: join(logDir, `${id}.log`),
        argv: [process.execPath, ...NODE_RUNTIME_FLAGS, PROXY_MAIN, '--id', id, '--port', String(port), '--host', host, '--admin-port', String(adminPort), '--admin-host', host, '--redis', redisUrl, ...tlsArgs(tlsDir, id, 'proxy', host), ...redisAuthArgs(tlsDir, 'proxy')],
        markers: [PROXY_MAIN, `--id ${id} `, `--port ${port}`],
      });
    }
    description.proxyUrls = runnings.filter((running) => running.record.kind === 'proxy').map((running) => running.record.url!);
    await save();
    // This program's own probes (and a test's clients) authenticate as admin.
    useAdminCredential({ ...description, processes: runnings.map((running) => running.record) }, host);

    await probeReady(runnings, nodeIds, readyTimeoutMs, undefined, (what) => progress(`waiting for the cluster to be ready: ${what}`));
    progress('every node in sync');
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


/** `dfs local add-node`: starts the next storage node of a running local cluster, detached,
 * and records it (the supervisor, if any, restarts it like the others). */
export async function addNodeRecorded(dataDir: string): Promise<ProcessRecord> {
  const description = readClusterFile(dataDir);
  if (description === null) throw new DfsError('BAD_REQUEST', `no cluster is recorded in ${resolve(dataDir)}`);
  const template = await nextNodeTemplate(description);
  useAdminCredential({ ...description, processes: [...description.processes, { ...template, pid: 0, startTime: '' } as ProcessRecord] });
  const running = await spawnRecorded(template, true, process.env);
  await updateClusterFile(dataDir, (current) => upsertRecord(current, running.record));
  return running.record;
}
