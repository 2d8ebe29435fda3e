/*
 * Going to the background, the way mount helpers do: `dfs-mount MOUNTPOINT` returns once
 * the file system is mounted, with the mount served by a detached child.
 *
 * The parent starts itself again with -f, detached, stdin closed and stdout/stderr to a
 * log file, plus an IPC channel that serves as the readiness pipe. The child mounts and
 * then reports `mounted` (or `failed` with the reason) over the channel and closes it. The
 * parent exits 0 on `mounted`, and prints the reason and exits 1 on `failed`, or if the
 * child dies or says nothing within a bound.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Set in the child's environment: report readiness over the IPC channel. */
export const READY_ENV = 'DFS_MOUNT_READY_IPC';
/** How long the parent waits for the child to mount. */
export const DAEMON_START_MS_MAX = 60_000;

export type ReadyMessage = { type: 'mounted' } | { type: 'failed'; error: string };

/** Where a background mount's log goes: the user's runtime directory, else the temp dir. */
export function daemonLogPath(mountpoint: string): string {
  const dir = process.env.XDG_RUNTIME_DIR || tmpdir();
  const name = mountpoint.replace(/^\/+/, '').replace(/[^A-Za-z0-9._-]+/g, '_').slice(-120) || 'root';
  return join(dir, `dfs-mount-${name}.log`);
}

/** Runs in the parent: starts the detached child and waits for its report. Resolves with
 * the exit code the parent should exit with. */
export async function daemonize(mountpoint: string, childArgs: string[]): Promise<number> {
  const logPath = daemonLogPath(mountpoint);
  try {
    mkdirSync(join(logPath, '..'), { recursive: true });
  } catch {
    // the directory exists, or openSync below says what is wrong
  }
  const logFd = openSync(logPath, 'a');
  const child = spawn(process.execPath, [...process.execArgv, process.argv[1]!, ...childArgs], {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'ipc'],
    env: { ...process.env, [READY_ENV]: '1' },
    cwd: '/',
  });
  closeSync(logFd);
  return new Promise<number>((resolve) => {
    let settled = false;
    const finish = (code: number, message?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (message) process.stderr.write(message + '\n');
      if (child.connected) child.disconnect();
      child.unref();
      resolve(code);
    };
    const timer = setTimeout(() => {
      finish(1, `dfs-mount: ${mountpoint} was not mounted within ${DAEMON_START_MS_MAX} ms (log: ${logPath})`);
      if (child.pid !== undefined) child.kill('SIGTERM');
    }, DAEMON_START_MS_MAX);
    child.on('message', (m: ReadyMessage) => {
      if (m.type === 'mounted') finish(0);
      else finish(1, `dfs-mount: ${m.error}`);
    });
    child.on('error', (err) => finish(1, `dfs-mount: cannot start: ${err.message}`));
    child.on('exit', (code, signal) => finish(1, `dfs-mount: exited (${signal ?? code}) before mounting; log: ${logPath}`));
  });
}

/** Runs in the child: tells a waiting parent how mounting went, then drops the channel. */
export function reportReady(msg: ReadyMessage): Promise<void> {
  if (!process.env[READY_ENV] || !process.send) return Promise.resolve();
  return new Promise((resolve) => {
    process.send!(msg, undefined, {}, () => {
      if (process.connected) process.disconnect();
      resolve();
    });
  });
}
