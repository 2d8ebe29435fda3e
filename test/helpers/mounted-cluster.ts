/*
 * A real cluster on loopback (cli/local-cluster.ts) with one or more real FUSE mounts of
 * it, for the end-to-end suites that use the mount as a file system (posix-conformance,
 * fsx, tools). Everything lives under one temp directory (0755, so that an unprivileged
 * user can reach the mounts, which run with --allow-other):
 *
 *   <root>/cluster/   the cluster's data directory (bricks, logs)
 *   <root>/<name>/    one mount point per requested mount name
 *
 * stop() unmounts and stops what this started and removes the temp directory. It also
 * runs on SIGTERM and SIGINT (the test runner's time limit), and on a plain exit a
 * synchronous last resort detaches our own mount points and kills our own recorded pids,
 * so that neither a failing nor a killed suite leaves a mount or a process behind.
 * DFS_TEST_KEEP_LOGS=DIR copies the cluster's and the mounts' logs there before removal.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { isFuseMounted } from '../../cli/mounts';
import { signalProcess } from '../../cli/processes';

export interface MountedCluster {
  root: string;
  cluster: Cluster;
  /** Mount points, in the order of the names asked for. */
  mountpoints: string[];
  stop(): Promise<void>;
}

export interface MountedClusterOptions {
  prefix: string;
  /** Names of the mount points under the root; each is mounted with dfs-mount -f. */
  mounts: string[];
  nodes?: number;
  proxies?: number;
  /** Extra dfs-mount arguments for every mount. */
  mountArgs?: string[];
  /** Extra dfs-mount arguments for one mount, by its name in `mounts` (after mountArgs). */
  mountArgsOf?: Record<string, string[]>;
  /** Extra storage-node arguments (ClusterOptions.nodeArgs). */
  nodeArgs?: string[];
}

/**
 * Removes a temp tree. GNU rm, because a case may leave a tree deeper than PATH_MAX, which
 * fs.rmSync cannot remove; --one-file-system, so that a mount that could not be unmounted
 * is never descended into.
 */
export function removeTree(path: string): void {
  const result = spawnSync('rm', ['-rf', '--one-file-system', path], { encoding: 'utf8' });
  if (result.status !== 0) process.stderr.write(`rm -rf ${path} failed: ${result.stderr}\n`);
}

export async function startMountedCluster(options: MountedClusterOptions): Promise<MountedCluster> {
  const root = mkdtempSync(join(tmpdir(), `dfs-${options.prefix}-`));
  chmodSync(root, 0o755);
  const mountpoints = options.mounts.map((name) => join(root, name));
  let cluster: Cluster | null = null;
  let stopped = false;

  const lastResort = (): void => {
    for (const mountpoint of mountpoints) {
      if (isFuseMounted(mountpoint)) spawnSync('fusermount', ['-uz', mountpoint]);
    }
    // Only pids that still carry the recorded start time and command line: ours.
    for (const record of cluster?.records() ?? []) signalProcess(record, 'SIGKILL');
    removeTree(root);
  };
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    try {
      await cluster?.stop();
    } catch (error) {
      process.stderr.write(`stopping the cluster failed: ${(error as Error).message}\n`);
    }
    for (const mountpoint of mountpoints) {
      if (isFuseMounted(mountpoint)) spawnSync('fusermount', ['-uz', mountpoint]);
    }
    process.off('exit', lastResort);
    // DFS_TEST_KEEP_LOGS=DIR keeps the processes' logs (for a failure to be looked into).
    const keep = process.env.DFS_TEST_KEEP_LOGS;
    if (keep) spawnSync('cp', ['-r', join(root, 'cluster', 'logs'), join(keep, `${options.prefix}-${Date.now()}`)]);
    removeTree(root);
  };
  process.on('exit', lastResort);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      process.stderr.write(`${signal}: stopping the cluster before exiting\n`);
      void stop().finally(() => process.exit(1));
    });
  }

  try {
    cluster = await startCluster({ dataDir: join(root, 'cluster'), nodes: options.nodes ?? 3, proxies: options.proxies ?? 2, nodeArgs: options.nodeArgs ?? [] });
    for (const [i, mountpoint] of mountpoints.entries()) {
      await cluster.mount(mountpoint, { args: [...(options.mountArgs ?? []), ...(options.mountArgsOf?.[options.mounts[i]!] ?? [])] });
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { root, cluster, mountpoints, stop };
}

/** Polls `check` until it returns something other than undefined/false, or throws at the deadline. */
export async function pollFor<T>(what: string, timeoutMs: number, check: () => T | undefined | false | Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
