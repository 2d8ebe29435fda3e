/*
 * The record of a local cluster: <dataDir>/cluster.json, which names every process that
 * `dfs local up` or the test harness started (kind, ID, pid and start time, command line,
 * URL, log, data), and every mount. It is how another process (`dfs local status`, `dfs
 * local down`, the supervisor) finds them later.
 *
 * Once a supervisor may be writing it too, every change is a read-modify-write under
 * <dataDir>/cluster.json.lock (updateClusterFile; the lock is file-lock.ts), and each
 * writer changes only the records it owns, so that no writer puts back a pid another has
 * replaced. A write is atomic (temp file, fsync, then rename), so a reader never sees half,
 * and the version it replaces is kept to read instead of one found cut short
 * (record-files.ts).
 */
import { join, resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { withFileLock } from './file-lock';
import { readRecordFile, writeRecordFile } from './record-files';
import { isSameProcess, type ProcessIdentity } from './processes';

export const CLUSTER_FILE_NAME = 'cluster.json';
/** How long a writer of cluster.json waits for another's lock (file-lock.ts). */
export { LOCK_WAIT_MS as CLUSTER_LOCK_WAIT_MS } from './file-lock';

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
  /** Storage nodes and proxies: the admin port's base URL (plain HTTP, no client
   * certificate: /metrics, /healthz, /readyz, and a proxy's /ui). Absent in files
   * written before it existed. */
  adminUrl?: string;
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
  /** The cluster's certificates (cli/certs.ts); null or absent: started --insecure. */
  tlsDir?: string | null;
}

// ---------------------------------------------------------------------------------------

export function clusterFilePath(dataDir: string): string {
  return join(resolve(dataDir), CLUSTER_FILE_NAME);
}

/** Reads <dataDir>/cluster.json; null when there is none. One cut short is replaced by
 * the version before it (record-files.ts); throws when neither is a description. */
export function readClusterFile(dataDir: string): ClusterFile | null {
  const file = clusterFilePath(dataDir);
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

/** Writes cluster.json atomically (temp file, fsync, rename; record-files.ts), so a reader
 * never sees half, and a write that fails (a full disk) leaves the old one. */
export function writeClusterFile(description: ClusterFile): void {
  writeRecordFile(clusterFilePath(description.dataDir), JSON.stringify(description, null, 2) + '\n');
}

/** Runs `critical` holding <dataDir>/cluster.json.lock (file-lock.ts). */
export async function withClusterLock<T>(dataDir: string, critical: () => T | Promise<T>): Promise<T> {
  return withFileLock(`${clusterFilePath(dataDir)}.lock`, critical);
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
