/*
 * The `Cluster` handle: what startCluster gives a test (and `dfs local up`) to drive a
 * running local cluster: its URLs, nodes and proxies, and kill, restart, add a node,
 * mount, unmount, wait until ready, stop. It keeps the processes it started (`Running`:
 * record, child, exit); in a supervised cluster the supervisor replaces records of what it
 * restarts, so the handle takes those over from cluster.json before it looks at one.
 */
import { rmSync } from 'node:fs';
import { resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { clusterFilePath, readClusterFile, updateClusterFile, upsertRecord, type ClusterFile, type ProcessKind, type ProcessRecord } from './cluster-file';
import { mountFor, type MountOptions } from './cluster-mounts';
import { MOUNT_STOP_GRACE_MS, nextNodeTemplate, readLogTail, spawnRecorded, stopRecorded, useAdminCredential, type Running } from './cluster-processes';
import { isFuseMounted, unmountFuse } from './mounts';
import { probeReady, READY_TIMEOUT_MS } from './probes';
import { isSameProcess, pollUntil, signalProcess, stopProcesses, type ProcessIdentity } from './processes';
import { RESTART_BACKOFF_MS_MAX } from './restart-backoff';

/** How long `restartProcess` of a supervised cluster waits for the supervisor to restart
 * the process: the longest backoff, plus a start and a few of the supervisor's polls. */
export const SUPERVISED_RESTART_WAIT_MS = RESTART_BACKOFF_MS_MAX + 10_000;

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

export function makeCluster(
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
      useAdminCredential({ ...description, processes: [{ ...template, pid: 0, startTime: 0 } as unknown as ProcessRecord] });
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
