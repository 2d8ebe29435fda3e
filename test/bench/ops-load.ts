/*
 * A load generator for the write path without a mount: a local cluster (3 storage nodes,
 * 1 proxy by default) and N ops sent straight to a proxy's `POST /v1/ops`, the way
 * mount/proxy-client.ts sends them, from C concurrent loops. It reports ops/s and the CPU
 * spent per op summed over every cluster process (Redis, proxies, storage nodes: utime +
 * stime from /proc/<pid>/stat), so that the cost of sequencing, replication and apply can
 * be seen apart from FUSE's.
 *
 *   node dist/test/bench/ops-load.js [--ops 2000] [--concurrency 1,8] [--write-ops 100]
 *        [--nodes 3] [--proxies 1]
 *
 * OPS_LOAD_NODE_OPTIONS is passed to the cluster's processes as NODE_OPTIONS, for example
 * `--require /tmp/profile.js` with a script that starts node:inspector's Profiler and
 * writes the profile on exit (node refuses --cpu-prof in NODE_OPTIONS).
 *
 * Phases, for each concurrency: a warm-up, `create` (empty files, exclusive), then
 * `write1M` (1 MiB writes at offsets 0..15 MiB of one file per loop). Each line gives
 * ops/s, CPU ms per op over the cluster (and the kernel's part, `sys`) and each process's
 * share; the last line, how Redis was asked for sequence IDs (EVAL or EVALSHA).
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { redisAuthFor } from '../../common/redis-auth';
import { Pool } from 'undici';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { intOption } from '../../common/config';
import { encodeFrame } from '../../common/frame';
import type { Op } from '../../common/ops';

const MIB = 1024 * 1024;
const CLK_TCK = 100;

/** utime and stime of a process, in ms. */
function cpuMsOf(pid: number): [number, number] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return [(Number(fields[11]) * 1000) / CLK_TCK, (Number(fields[12]) * 1000) / CLK_TCK];
}

let sysMs = 0;

function clusterCpuMs(cluster: Cluster): Record<string, number> {
  const pids: Array<[string, number]> = [['redis', cluster.redis.pid], ...cluster.proxies.map((p): [string, number] => [p.id, p.pid]), ...cluster.nodes.map((n): [string, number] => [n.id, n.pid])];
  const out: Record<string, number> = {};
  sysMs = 0;
  for (const [id, pid] of pids) {
    const [user, sys] = cpuMsOf(pid);
    out[id] = user + sys;
    sysMs += sys;
  }
  return out;
}

async function sendOp(pool: Pool, op: Op, data?: Buffer): Promise<void> {
  const res = await pool.request({ method: 'POST', path: '/v1/ops', body: encodeFrame({ reqId: randomUUID(), op }, data), headers: { 'content-type': 'application/octet-stream' } });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${op.type}: ${res.statusCode} ${text}`);
  const r = JSON.parse(text) as { errno?: string };
  if (r.errno) throw new Error(`${op.type}: ${r.errno}`);
}

async function phase(cluster: Cluster, name: string, count: number, concurrency: number, make: (loop: number, i: number) => Promise<void>): Promise<void> {
  const before = clusterCpuMs(cluster);
  const sysBefore = sysMs;
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, loop) => {
      for (let i = next++; i < count; i = next++) await make(loop, i);
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  const after = clusterCpuMs(cluster);
  const per = Object.fromEntries(Object.keys(after).map((k) => [k, (after[k]! - before[k]!) / count]));
  const total = Object.values(per).reduce((a, b) => a + b, 0);
  const detail = Object.entries(per)
    .map(([k, v]) => `${k} ${v.toFixed(2)}`)
    .join(', ');
  console.log(`${name.padEnd(8)} c=${String(concurrency).padEnd(2)} ${String(count).padStart(5)} ops ${(count / seconds).toFixed(1).padStart(8)} ops/s  cpu ${total.toFixed(2).padStart(6)} ms/op, sys ${((sysMs - sysBefore) / count).toFixed(2)}  (${detail})`);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      ops: { type: 'string' },
      'write-ops': { type: 'string' },
      concurrency: { type: 'string', default: '1,8' },
      nodes: { type: 'string' },
      proxies: { type: 'string' },
    },
  });
  const ops = intOption(values.ops, 'ops', 2000, 1);
  const writeOps = intOption(values['write-ops'], 'write-ops', 100, 0);
  const concurrencies = values.concurrency!.split(',').map((c) => intOption(c, 'concurrency', 1, 1, 256));
  const dataDir = mkdtempSync(join(tmpdir(), 'dfs-ops-load-'));
  const cluster = await startCluster({ dataDir, nodes: intOption(values.nodes, 'nodes', 3, 1), proxies: intOption(values.proxies, 'proxies', 1, 1), env: { DFS_LOG_LEVEL: 'warn', ...(process.env.OPS_LOAD_NODE_OPTIONS ? { NODE_OPTIONS: process.env.OPS_LOAD_NODE_OPTIONS } : {}) } });
  const pool = new Pool(cluster.proxyUrls[0]!, { connections: 64, pipelining: 1 });
  try {
    await cluster.waitReady();
    const data = Buffer.alloc(MIB, 0x5a);
    for (const c of concurrencies) {
      const run = randomUUID().slice(0, 8);
      // Warm up connections and code paths.
      await phase(cluster, 'warmup', 50 * c, c, (loop, i) => sendOp(pool, { type: 'create', path: `/w-${run}-${loop}-${i}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }));
      await phase(cluster, 'create', ops, c, (loop, i) => sendOp(pool, { type: 'create', path: `/c-${run}-${i}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }));
      if (writeOps > 0) {
        for (let loop = 0; loop < c; loop++) await sendOp(pool, { type: 'create', path: `/d-${run}-${loop}`, mode: 0o644, uid: 0, gid: 0, exclusive: true });
        await phase(cluster, 'write1M', writeOps, c, (loop, i) => sendOp(pool, { type: 'write', path: `/d-${run}-${loop}`, offset: (i % 16) * MIB }, data));
      }
    }
    // How the sequencer's script reached Redis (EVAL with its text, or EVALSHA).
    const redis = new Redis(cluster.redisUrl, redisAuthFor(cluster.redisUrl));
    const stats = (await redis.info('commandstats')).split('\n').filter((l) => /cmdstat_(eval|evalsha|incr):/.test(l));
    console.log(stats.map((l) => l.trim().replace(/,usec_per_call.*/, '')).join('  '));
    redis.disconnect();
  } finally {
    await pool.close();
    await cluster.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
