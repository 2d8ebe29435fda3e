/*
 * Mounts of a local cluster: `dfs local up --mount DIR`, `dfs local mount`-style calls of
 * the harness (Cluster.mount). Each runs `dfs-mount MOUNTPOINT --proxy URL,URL -f` as a
 * recorded process under the next free mount ID (m1, m2…), and is ready once the kernel
 * lists the FUSE mount (mounts.ts reads /proc/mounts). The caller records the process and
 * the mount in cluster.json.
 */
import { mkdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { readClusterFile, updateClusterFile, upsertRecord, type ClusterFile, type MountRecord, type ProcessRecord } from './cluster-file';
import { assertBuilt, describeExit, failure, MOUNT_BIN, spawnRecorded, tlsArgs, type Running } from './cluster-processes';
import { findMount, isFuseMounted } from './mounts';
import { pollUntil, stopProcesses } from './processes';
import { NODE_RUNTIME_FLAGS } from '../common/node-runtime';

/** How long a mount may take to appear in /proc/mounts. */
export const MOUNT_READY_TIMEOUT_MS = 20_000;

export interface MountOptions {
  /** Extra dfs-mount arguments, for example ['--attr-timeout', '0']. */
  args?: string[];
  timeoutMs?: number;
}

export interface StartMountOptions extends MountOptions {
  id: string;
  mountpoint: string;
  proxyUrls: string[];
  logFile: string;
  detached?: boolean;
  env?: NodeJS.ProcessEnv;
  /** The cluster's certificates: the mount gets an admin-host credential there (every
   * uid, unsquashed, as a trusted NFS host: docs/security.md); null: --insecure. */
  tlsDir?: string | null;
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
export async function mountFor(
  description: ClusterFile,
  mountpoint: string,
  options: Omit<StartMountOptions, 'id' | 'mountpoint' | 'proxyUrls' | 'logFile' | 'tlsDir'>,
): Promise<{ running: Running; mount: MountRecord }> {
  const target = resolve(mountpoint);
  const id = nextMountId(description);
  const running = await startMount({
    ...options,
    id,
    mountpoint: target,
    proxyUrls: description.proxyUrls,
    logFile: join(description.dataDir, 'logs', `mount-${id}.log`),
    tlsDir: description.tlsDir ?? null,
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
      argv: [process.execPath, ...NODE_RUNTIME_FLAGS, MOUNT_BIN, mountpoint, '--proxy', options.proxyUrls.join(','), '-f', ...tlsArgs(options.tlsDir ?? null, options.id, 'mount', '127.0.0.1'), ...(options.args ?? [])],
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
