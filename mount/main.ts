/*
 * dfs-mount: mounts the cluster at a directory.
 *
 *   dfs-mount MOUNTPOINT [--proxy URL[,URL…]] [-f] [--attr-timeout-ms N] [--deadline-ms N]
 *                        [--allow-other | --private] [--debug-fuse] [--metrics-addr HOST:PORT]
 *
 * Without -f it goes to the background once mounted (mount/daemon.ts). In the foreground
 * it serves the mount until SIGINT or SIGTERM, then commits what it can of the data still
 * buffered (within SHUTDOWN_FLUSH_MS), unmounts and exits 0. If the mount disappears
 * underneath it (`fusermount -u`), it exits too rather than linger. With --metrics-addr it
 * serves its request counts (mount/metrics.ts) there, bound before mounting so that a taken
 * port is a start-up error.
 */
import { runMain } from '../common/config';
import { createLogger } from '../common/log';
import { WRITE_BYTES_MAX } from '../common/limits';
import { daemonize, reportReady } from './daemon';
import { Deadline } from './deadline';
import { DfsFileSystem, KNOWN_XATTR_NAMESPACES, MOUNT_CONFIG_DEFAULTS, type MountConfig } from './fuse-ops';
import { isMounted, parseCli, USAGE, type Cli } from './mount-args';
import { checkFuseNativePatched, DfsFuse, mountFuse, unmountFuse } from './fuse-mount';
import { metricsAddrText, MountMetrics, serveMetrics } from './metrics';
import { ProxyClient } from './proxy-client';
import { assertScheme, loadProcessTls } from '../common/tls';
import { resolveWriteBufferLimits } from './write-buffer';

/** How long a stopping mount tries to commit buffered writes before unmounting. A handle
 * may hold tens of MiB of random writes (mount/write-buffer.ts), a few seconds of
 * replication; within MOUNT_STOP_GRACE_MS of `dfs local` (cli/local-cluster.ts). */
export const SHUTDOWN_FLUSH_MS = 10_000;
/** How long mounting may take (fuse-native reports success only when the kernel's INIT
 * arrives; if it never does, we must not wait forever). */
export const MOUNT_MS_MAX = 30_000;
/** How often the mount checks that it is still mounted. */
export const MOUNTED_CHECK_MS = 2_000;

async function serve(cli: Cli): Promise<void> {
  const logger = createLogger('dfs-mount', { mountpoint: cli.mountpoint });
  // Before anything else: an unpatched fuse-native would mount and then get times and
  // owners wrong without a word.
  checkFuseNativePatched();
  const config: MountConfig = {
    ...MOUNT_CONFIG_DEFAULTS,
    attrTimeoutMs: cli.attrTimeoutMs,
    leases: cli.leases,
    deadlineMs: cli.deadlineMs,
    atime: cli.atime,
  };
  if (config.writeLimits.chunkBytesMax > WRITE_BYTES_MAX) throw new Error('write chunk is over WRITE_BYTES_MAX');
  resolveWriteBufferLimits(config.writeLimits); // throws on invalid limits, before mounting
  if (!(config.mountDirtyBytesMax > 0)) throw new Error('mountDirtyBytesMax must be positive');
  // The file system names its lease identity in every op it sends (mount/leases.ts).
  let leaseIdentity: () => string | undefined = () => undefined;
  const metrics = new MountMetrics();
  if (cli.metricsAddr !== undefined) {
    const address = metricsAddrText(cli.metricsAddr);
    try {
      await serveMetrics(metrics.registry, cli.metricsAddr, logger);
    } catch (err) {
      throw new Error(`cannot serve metrics on ${address}: ${err instanceof Error ? err.message : String(err)}`);
    }
    logger.info({ url: `http://${address}/metrics` }, 'serving metrics');
  }
  const tls = loadProcessTls(cli.tls, logger);
  for (const url of cli.proxies) assertScheme(url, tls, '--proxy');
  const client = new ProxyClient({
    tls,
    urls: cli.proxies,
    logger,
    metrics,
    identity: () => leaseIdentity(),
    // With several proxies, one hung proxy must leave time to try the others.
    attemptTimeoutMs: cli.proxies.length > 1 ? Math.max(1_000, Math.floor(cli.deadlineMs / 2)) : cli.deadlineMs,
    ...(cli.readNode !== undefined ? { readNode: cli.readNode } : {}),
  });

  // Refuse to mount a cluster we cannot reach: a typo in --proxy should be an error now,
  // not EIO on every call later.
  const probe = new Deadline(cli.deadlineMs);
  try {
    await client.statfs(probe);
  } catch (err) {
    await client.close();
    throw new Error(`cannot reach the cluster at ${cli.proxies.join(',')}: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    probe.dispose();
  }

  const fs = new DfsFileSystem({ client, logger, config, metrics });
  leaseIdentity = () => fs.leaseIdentity();
  const fuse = new DfsFuse(cli.mountpoint, fs.handlers(), { allowOther: cli.allowOther, debug: cli.debugFuse, absentXattrNamespaces: [...KNOWN_XATTR_NAMESPACES] });
  fs.callerOf = () => fuse.context();
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([
      mountFuse(fuse),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`mounting took over ${MOUNT_MS_MAX} ms`)), MOUNT_MS_MAX);
      }),
    ]);
  } catch (err) {
    await client.close();
    const why = err instanceof Error ? err.message : String(err);
    throw new Error(`cannot mount ${cli.mountpoint}: ${why}`);
  } finally {
    clearTimeout(timer);
  }
  logger.info({ proxies: cli.proxies, attrTimeoutMs: config.attrTimeoutMs, leases: config.leases, deadlineMs: config.deadlineMs }, 'mounted');
  if (!DfsFuse.ctimeOnlySetattrHooked()) {
    logger.warn('libfuse is not the 2.9 this mount knows: chown(f, -1, -1) will not move ctime');
  }
  if (!DfsFuse.kernelCacheHooked()) {
    logger.warn('libfuse is not the 2.9 this mount knows: the kernel cannot be let cache attributes or names, and a lock holder may read pages the kernel kept from before the lock');
  } else if (fs.leases) {
    // What a lease vouches for, the kernel may keep too, as long as the mount can take it
    // back before the lease is given up (mount/fuse-ops.ts, kernelTimes).
    fs.kernel = { invalidatePath: (p) => fuse.invalidatePath(p), invalidateEntry: (p) => fuse.invalidateEntry(p), invalidateInode: (p) => fuse.invalidateInode(p) };
  }
  if (DfsFuse.kernelCacheHooked()) fs.dropKernelPages = (p) => fuse.invalidatePath(p);
  if (!DfsFuse.renameKeepsReplaced()) {
    logger.warn('libfuse is not the 2.9 this mount knows: an open or stat racing a rename over its name may fail with ENOENT');
  }
  void fs.removeStaleOrphans().then((removed) => {
    if (removed > 0) logger.info({ removed }, 'removed the open-but-unlinked files of mounts that died');
  });

  let stopping = false;
  const stop = async (why: string, unmount: boolean): Promise<void> => {
    if (stopping) return;
    stopping = true;
    logger.info({ why }, 'stopping');
    let code = 0;
    try {
      const failed = await fs.flushEverything(SHUTDOWN_FLUSH_MS);
      if (failed > 0) logger.error({ failed }, 'some buffered writes could not be committed');
    } catch (err) {
      logger.error({ err }, 'buffered writes not committed before unmount');
    }
    if (unmount) {
      try {
        await unmountFuse(fuse);
        logger.info('unmounted');
      } catch (err) {
        logger.error({ err }, 'unmount failed');
        code = 1;
      }
    }
    // The locks this mount held are free at once, not when its session lapses.
    await fs.locks?.close(SHUTDOWN_FLUSH_MS);
    await client.close();
    process.exit(code);
  };
  process.on('SIGINT', () => void stop('SIGINT', true));
  process.on('SIGTERM', () => void stop('SIGTERM', true));
  process.on('SIGHUP', () => void stop('SIGHUP', true));
  setInterval(() => {
    if (!stopping && !isMounted(cli.mountpoint)) void stop('unmounted from outside', false);
  }, MOUNTED_CHECK_MS).unref();

  await reportReady({ type: 'mounted' });
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let cli: Cli | 'help';
  try {
    cli = parseCli(argv);
  } catch (err) {
    await reportReady({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
    throw err;
  }
  if (cli === 'help') {
    process.stdout.write(USAGE);
    return;
  }
  if (!cli.foreground) {
    // The child runs in / (a daemon must not keep a directory busy), so it gets the
    // resolved mount point and every option spelled out.
    const childArgs = [
      cli.mountpoint,
      '--proxy', cli.proxies.join(','),
      '--attr-timeout-ms', String(cli.attrTimeoutMs),
      '--deadline-ms', String(cli.deadlineMs),
      cli.allowOther ? '--allow-other' : '--private',
      ...(cli.leases ? [] : ['--no-leases']),
      '--atime', cli.atime,
      ...(cli.readNode !== undefined ? ['--read-node', cli.readNode] : []),
      ...(cli.debugFuse ? ['--debug-fuse'] : []),
      ...(cli.metricsAddr !== undefined ? ['--metrics-addr', metricsAddrText(cli.metricsAddr)] : []),
      '-f',
    ];
    const code = await daemonize(cli.mountpoint, childArgs);
    process.exit(code);
  }
  try {
    await serve(cli);
  } catch (err) {
    await reportReady({ type: 'failed', error: err instanceof Error ? err.message : String(err) });
    throw err;
  }
}

runMain(main);
