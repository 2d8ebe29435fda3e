/*
 * The local cluster's supervisor: `dfs local supervise --data DIR`, a small long-lived
 * process that `dfs local up` starts (detached, recorded in cluster.json as kind
 * `supervisor`) and `dfs local down` stops first. It does for a local cluster what the
 * kubelet does for a pod with `restartPolicy: Always`: a process that dies is started
 * again, with the same command line, environment, working directory and log file (so on
 * the same port and data), and cluster.json records its new pid and a restart count.
 *
 * How a tick goes (every SUPERVISE_POLL_MS):
 *   1. read cluster.json; when it is gone, or records another supervisor, exit: the
 *      cluster was stopped, or this supervisor was replaced;
 *   2. for each supervised record (every process but the supervisor; a mount only while
 *      its mount point is listed, because `unmount` unlists it before stopping it), ask
 *      /proc whether the recorded process still runs (processes.ts: pid, start time and
 *      command line; the processes are not our children, so there is no exit to wait on);
 *   3. feed alive or dead to the backoff (restart-backoff.ts, pure), and when it says so,
 *      restart: a mount's dead FUSE mount is unmounted first (dfs-mount cannot mount over
 *      it); then, under the cluster.json lock, check the record is still the dead one and
 *      still supervised, spawn, and write the new record. Nothing else is changed, so a
 *      concurrent writer loses nothing.
 *
 * SIGTERM or SIGINT ends the loop after the current tick, so a restart that was under way
 * is recorded before `down` reads cluster.json again. If the supervisor itself dies,
 * nothing restarts it: `dfs local status` shows it stopped, and `dfs local supervise
 * --data DIR` started by hand takes over (it records itself in place of the dead one).
 */
import { resolve } from 'node:path';
import { DfsError } from '../common/errors';
import { createLogger, type Logger } from '../common/log';
import { RestartNotes } from './supervisor-notes';
import { readClusterFile, withClusterLock, writeClusterFile, type ClusterFile, type ProcessRecord } from './cluster-file';
import { spawnRecorded, supervisorTemplate } from './cluster-processes';
import { isFuseMounted, unmountFuse } from './mounts';
import { isSameProcess, processStartTime, readCommandLine } from './processes';
import { DEFAULT_BACKOFF_POLICY, initialRestartState, stepRestart, validateBackoffPolicy, type BackoffPolicy, type RestartState } from './restart-backoff';

/** How often the supervisor looks at every process. */
export const SUPERVISE_POLL_MS = 200;

export interface SuperviseOptions {
  policy?: BackoffPolicy;
  pollMs?: number;
  logger?: Logger;
}

/** The records the supervisor restarts when they die. */
export function supervisedRecords(description: ClusterFile): ProcessRecord[] {
  return description.processes.filter((record) => {
    if (record.kind === 'supervisor') return false;
    if (record.kind === 'mount') return description.mounts.some((mount) => mount.processId === record.id);
    return true;
  });
}

function sameIdentity(a: ProcessRecord, b: ProcessRecord): boolean {
  return a.pid === b.pid && a.startTime === b.startTime;
}

/**
 * Makes this process the cluster's recorded supervisor: `dfs local up` recorded it already;
 * started by hand, it takes the place of a dead one. Refuses when another one runs.
 */
async function claim(dataDir: string): Promise<void> {
  const self = process.pid;
  await withClusterLock(dataDir, () => {
    const description = readClusterFile(dataDir);
    if (description === null) throw new DfsError('BAD_REQUEST', `no cluster is recorded in ${dataDir}; start one with \`dfs local up --data ${dataDir}\``);
    const recorded = description.processes.find((record) => record.kind === 'supervisor');
    if (recorded?.pid === self) return;
    if (recorded !== undefined && isSameProcess(recorded)) {
      throw new DfsError('BAD_REQUEST', `a supervisor already runs for ${dataDir} (pid ${recorded.pid})`);
    }
    // Our own command line is the surest marker of ourselves (however `dfs` was invoked).
    const template = supervisorTemplate(dataDir);
    const argv = [process.execPath, ...process.argv.slice(1)];
    const record: ProcessRecord = { ...template, argv, markers: [readCommandLine(self) ?? argv.join(' ')], pid: self, startTime: processStartTime(self) };
    description.processes = [record, ...description.processes.filter((candidate) => candidate !== recorded)];
    writeClusterFile(description);
  });
}

/** Runs until SIGTERM or SIGINT, or until cluster.json no longer records this supervisor. */
export async function supervise(dataDirOption: string, options: SuperviseOptions = {}): Promise<void> {
  const dataDir = resolve(dataDirOption);
  const policy = options.policy ?? DEFAULT_BACKOFF_POLICY;
  validateBackoffPolicy(policy);
  const pollMs = options.pollMs ?? SUPERVISE_POLL_MS;
  const logger = options.logger ?? createLogger('supervisor', { dataDir });

  let stopping = false;
  let wake: (() => void) | null = null;
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'stopping: restarts nothing from here on');
    stopping = true;
    wake?.();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  await claim(dataDir);
  logger.info({ pollMs, ...policy }, 'supervising the local cluster');
  // Why a restart fails, for `dfs local status` (supervisor-notes.ts).
  const notes = new RestartNotes(dataDir, (error) => logger.warn({ err: error.message }, 'cannot record why a restart failed'));
  const states = new Map<string, RestartState>();

  /**
   * Restarts one dead process. 'started': a start was made (the process may still die at
   * once); 'failed': none could be, try again after the next backoff; 'skipped': the record
   * changed meanwhile (stopped, unlisted, or restarted by someone else), nothing to do.
   */
  const restart = async (dead: ProcessRecord): Promise<'started' | 'failed' | 'skipped'> => {
    if (dead.kind === 'mount' && dead.mountpoint !== undefined && isFuseMounted(dead.mountpoint)) {
      // A dead dfs-mount leaves its mount behind ("Transport endpoint is not connected").
      try {
        const outcome = await unmountFuse(dead.mountpoint);
        logger.info({ kind: dead.kind, id: dead.id, mountpoint: dead.mountpoint, how: outcome.how }, 'unmounted the dead mount');
      } catch (error) {
        logger.error({ kind: dead.kind, id: dead.id, mountpoint: dead.mountpoint, err: (error as Error).message }, 'cannot unmount the dead mount; retrying after backoff');
        return 'failed';
      }
    }
    if (stopping) return 'skipped';
    const started = await withClusterLock(dataDir, async (): Promise<ProcessRecord | null> => {
      const current = readClusterFile(dataDir);
      const index = current?.processes.findIndex((record) => record.kind === dead.kind && record.id === dead.id) ?? -1;
      const recorded = current?.processes[index];
      // Stopped, or someone else restarted, replaced or unlisted it since we looked.
      if (current == null || recorded === undefined || !sameIdentity(recorded, dead) || !supervisedRecords(current).includes(recorded)) return null;
      // Spawning under the lock costs milliseconds: libuv returns once the child exec'd.
      // Detached, as `dfs local up` starts them: in their own session, they outlive us.
      const running = await spawnRecorded(omitIdentity(recorded), true, process.env);
      const fresh: ProcessRecord = { ...running.record, restartCount: (recorded.restartCount ?? 0) + 1, restartedAt: new Date().toISOString() };
      current.processes[index] = fresh;
      writeClusterFile(current);
      return fresh;
    });
    if (started === null) return 'skipped';
    logger.info({ kind: started.kind, id: started.id, oldPid: dead.pid, newPid: started.pid, restartCount: started.restartCount }, 'restarted');
    return 'started';
  };

  while (!stopping) {
    let description: ClusterFile | null;
    try {
      description = readClusterFile(dataDir);
    } catch (error) {
      logger.error({ err: (error as Error).message }, 'cannot read cluster.json; trying again');
      await pause();
      continue;
    }
    if (description === null) {
      logger.info('cluster.json is gone: the cluster was stopped; exiting');
      break;
    }
    const own = description.processes.find((record) => record.kind === 'supervisor');
    if (own?.pid !== process.pid) {
      logger.info({ recordedPid: own?.pid ?? null }, 'cluster.json records another supervisor; exiting');
      break;
    }
    const watched = supervisedRecords(description);
    for (const key of states.keys()) if (!watched.some((record) => keyOf(record) === key)) states.delete(key);
    for (const record of watched) {
      if (stopping) break;
      const key = keyOf(record);
      const nowMs = Date.now();
      const state = states.get(key) ?? initialRestartState(nowMs, policy);
      if (isSameProcess(record)) {
        states.set(key, stepRestart(state, { type: 'seen-alive', nowMs }, policy).state);
        continue;
      }
      const step = stepRestart(state, { type: 'seen-dead', nowMs }, policy);
      states.set(key, step.state);
      if (step.died) {
        logger.warn({ kind: record.kind, id: record.id, deadPid: record.pid, uptimeMs: step.died.uptimeMs, restartInMs: step.died.restartInMs }, 'process is gone; restarting after backoff');
      }
      if (!step.restart) continue;
      let outcome: 'started' | 'failed' | 'skipped';
      try {
        outcome = await restart(record);
      } catch (error) {
        // Cannot spawn (the binary is gone, no file descriptors…), or the lock is stuck.
        logger.error({ kind: record.kind, id: record.id, err: (error as Error).message }, 'restart failed; retrying after backoff');
        notes.failed(record.kind, record.id, (error as Error).message);
        outcome = 'failed';
      }
      if (outcome === 'started') notes.started(record.kind, record.id);
      // A failed start counts as a start that died at once: the next wait is longer.
      if (outcome !== 'skipped') states.set(key, stepRestart(step.state, { type: 'restarted', nowMs: Date.now() }, policy).state);
    }
    await pause();
  }
  process.off('SIGTERM', onSignal);
  process.off('SIGINT', onSignal);

  function pause(): Promise<void> {
    if (stopping) return Promise.resolve();
    return new Promise((done) => {
      const timer = setTimeout(finish, pollMs);
      function finish() {
        clearTimeout(timer);
        wake = null;
        done();
      }
      wake = finish;
    });
  }
}

function keyOf(record: ProcessRecord): string {
  return `${record.kind}/${record.id}`;
}

function omitIdentity(record: ProcessRecord): Omit<ProcessRecord, 'pid' | 'startTime'> {
  const { pid: _pid, startTime: _startTime, restartCount: _count, restartedAt: _at, ...template } = record;
  return template;
}
