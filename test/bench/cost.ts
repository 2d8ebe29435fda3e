/*
 * What a benchmark phase cost, in figures that a busy machine does not move much: the CPU
 * time of every process of the cluster (utime + stime from /proc/<pid>/stat, proc(5)), and
 * the requests the mount served and sent (its /metrics, mount/metrics.ts). Wall-clock rates
 * change with whatever else runs on the machine; CPU time and request counts per call
 * change with the code.
 *
 * A phase is measured by taking a CostSample before and after it: the counters are
 * scraped first and the CPU read last on the way in, the other way round on the way out,
 * so that the scrapes themselves fall outside the measured CPU time.
 */
import { execFileSync } from 'node:child_process';
import { readProcStat } from '../../cli/processes';
import type { ProcessKind, ProcessRecord } from '../../cli/local-cluster';

export { parseMetricsText, type MetricSample } from '../../common/metrics-text';
import { parseMetricsText, type MetricSample } from '../../common/metrics-text';


/** The sum of every sample named `name`, over all its label sets (0 when there are none). */
export function sumMetric(samples: MetricSample[], name: string): number {
  return samples.filter((sample) => sample.name === name).reduce((sum, sample) => sum + sample.value, 0);
}

/** `getconf CLK_TCK`: the unit of /proc/<pid>/stat's times (normally 100 per second). */
export function clockTicksPerSecond(): number {
  const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
  if (!Number.isSafeInteger(ticks) || ticks <= 0) throw new Error(`getconf CLK_TCK gave ${ticks}`);
  return ticks;
}

/** The processes whose CPU a phase is charged: all but the supervisor, which the bench
 * does not start and which does no work for a request. */
export const COSTED_KINDS: readonly ProcessKind[] = ['mount', 'proxy', 'storage', 'redis'];

/** CPU time so far, in clock ticks, per process kind, of `records` (the cluster's). */
export function cpuTicksByKind(records: ProcessRecord[]): Map<ProcessKind, number> {
  const ticks = new Map<ProcessKind, number>();
  for (const record of records) {
    if (!COSTED_KINDS.includes(record.kind)) continue;
    const stat = readProcStat(record.pid);
    // A process of the cluster that died would make every figure after it wrong.
    if (stat === null) throw new Error(`${record.kind} ${record.id} (pid ${record.pid}) is gone`);
    ticks.set(record.kind, (ticks.get(record.kind) ?? 0) + stat.utimeTicks + stat.stimeTicks);
  }
  return ticks;
}

/** The mount's request counters, as the bench reads them from its /metrics. */
export interface RequestCounts {
  fuse: number;
  cluster: number;
}

export function requestCounts(metricsText: string): RequestCounts {
  const samples = parseMetricsText(metricsText);
  return {
    fuse: sumMetric(samples, 'dfs_mount_fuse_requests_total'),
    cluster: sumMetric(samples, 'dfs_mount_cluster_requests_total'),
  };
}

/** What a phase cost in total: CPU milliseconds per process kind, and the requests. */
export interface PhaseCost {
  cpuMsByKind: Map<ProcessKind, number>;
  cpuMs: number;
  requests: RequestCounts;
}

export interface CostSample {
  ticks: Map<ProcessKind, number>;
  requests: RequestCounts;
}

/** The difference of two samples, the CPU in milliseconds at `ticksPerSecond`. */
export function costBetween(before: CostSample, after: CostSample, ticksPerSecond: number): PhaseCost {
  const cpuMsByKind = new Map<ProcessKind, number>();
  let cpuMs = 0;
  for (const [kind, ticks] of after.ticks) {
    const ms = ((ticks - (before.ticks.get(kind) ?? 0)) * 1000) / ticksPerSecond;
    cpuMsByKind.set(kind, ms);
    cpuMs += ms;
  }
  return {
    cpuMsByKind,
    cpuMs,
    requests: { fuse: after.requests.fuse - before.requests.fuse, cluster: after.requests.cluster - before.requests.cluster },
  };
}
