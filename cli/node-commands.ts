/*
 * `dfs node …` and `dfs local add-node`: adding and removing storage nodes while the
 * cluster runs (docs/cluster.md, Membership changes).
 *
 * (Their synopses and options are in command-table.ts.)
 *
 * `node start` runs a storage node in the foreground (as a container's command would): it
 * registers, the leader makes it a learner, the primary feeds it (from memory, its log, or
 * by a full sync) and the leader promotes it to the in-sync set once it is close. A
 * removal request an earlier `node remove` left for the same ID is withdrawn first.
 *
 * `node remove` asks the leader (a field of KEY_REMOVING in Redis) to drain the node: out
 * of the in-sync set first (no new reads, commits stop waiting for it), then out of the
 * membership. It waits until the membership no longer names it; with --data (a local
 * cluster) it then stops the node's process and forgets its record. The primary first hands
 * its role to another in-sync node (proxy/leader.ts).
 */
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { DfsError } from '../common/errors';
import { KEY_NODES, KEY_REMOVING, nodeAliveKey } from '../common/redis-keys';
import { readMembership } from '../proxy/leader';
import { addNodeRecorded, readClusterFile, STORAGE_MAIN, updateClusterFile } from './local-cluster';
import { isSameProcess, pollUntil, stopProcesses } from './processes';
import { NODE_RUNTIME_FLAGS } from '../common/node-runtime';

/** How long `node remove` waits for the leader to drain the node and drop it. */
const REMOVE_WAIT_MS = 30_000;
const REDIS_OPTIONS = { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000, lazyConnect: true } as const;

type Out = (line: string) => void;

function redisUrlOf(values: { redis?: string; data?: string }, defaultDataDir: string): string {
  if (values.redis !== undefined && values.data !== undefined) throw new DfsError('BAD_REQUEST', 'give either --redis or --data, not both');
  if (values.redis !== undefined) return values.redis;
  if (values.data === undefined && process.env.DFS_REDIS) return process.env.DFS_REDIS;
  const dataDir = resolve(values.data ?? defaultDataDir);
  const description = readClusterFile(dataDir);
  if (description === null) throw new DfsError('BAD_REQUEST', `no local cluster in ${dataDir}; give --redis URL`);
  return description.redisUrl;
}

async function withRedis<T>(url: string, fn: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(url, REDIS_OPTIONS);
  redis.on('error', () => undefined); // each command reports its own failure
  try {
    await redis.connect().catch((e: Error) => {
      throw new DfsError('UNAVAILABLE', `Redis at ${url} does not answer: ${e.message}`);
    });
    return await fn(redis);
  } finally {
    redis.disconnect();
  }
}

export async function nodeRemove(id: string, values: { redis?: string; data?: string }, defaultDataDir: string, out: Out): Promise<number> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new DfsError('BAD_REQUEST', `${JSON.stringify(id)} is not a node ID`);
  const url = redisUrlOf(values, defaultDataDir);
  await withRedis(url, async (redis) => {
    const m = await readMembership(redis);
    if (m === null) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    if (m.nodes[id] !== undefined) {
      await redis.hset(KEY_REMOVING, id, JSON.stringify({ requestedAtMs: Date.now() }));
      out(
        m.primary === id
          ? `${id} is the primary: its role goes to another in-sync node first, then it drains out of the membership…`
          : `draining ${id}: out of the in-sync set, then out of the membership…`,
      );
      const gone = await pollUntil(async () => {
        const now = await readMembership(redis);
        return now !== null && now.nodes[id] === undefined ? true : undefined;
      }, REMOVE_WAIT_MS, 200);
      if (!gone) throw new DfsError('TIMEOUT', `the leader did not remove ${id} within ${REMOVE_WAIT_MS} ms (is a proxy running?); the request stays in Redis`);
    }
    // A local cluster: stop the node's process, unrecorded first so that no supervisor
    // restarts it. Elsewhere the process is the operator's to stop; until then (and until
    // `dfs node start` withdraws it) the request stays, so its heartbeats do not bring it
    // back as a new member.
    let stopped = false;
    if (values.redis === undefined) {
      const dataDir = resolve(values.data ?? defaultDataDir);
      const record = readClusterFile(dataDir)?.processes.find((r) => r.kind === 'storage' && r.id === id);
      if (record !== undefined) {
        await updateClusterFile(dataDir, (current) => {
          current.processes = current.processes.filter((r) => !(r.kind === 'storage' && r.id === id));
        });
        if (isSameProcess(record)) await stopProcesses([record]);
        out(`stopped storage node ${id} (pid ${record.pid}); its data stays in ${record.dataDir ?? 'its data directory'}`);
        stopped = true;
      }
    }
    if (stopped) await redis.multi().hdel(KEY_NODES, id).del(nodeAliveKey(id)).hdel(KEY_REMOVING, id).exec();
    out(stopped ? `removed ${id} from the cluster` : `removed ${id} from the membership; stop its process now (\`dfs node start --id ${id} …\` brings it back)`);
  });
  return 0;
}

export async function localAddNode(dataDir: string, out: Out): Promise<number> {
  const record = await addNodeRecorded(dataDir);
  out(`started storage node ${record.id} (pid ${record.pid}) at ${record.url}; it joins as a learner and enters the in-sync set once caught up (watch: dfs status)`);
  return 0;
}

/** Runs the storage node in the foreground with the given arguments; returns its exit code. */
export async function nodeStart(args: string[], out: Out): Promise<number> {
  // The storage node's own options pass through (strict: false); only these two are ours.
  const { values } = parseArgs({ args, options: { id: { type: 'string' }, redis: { type: 'string' } }, strict: false, allowPositionals: true });
  const id = typeof values.id === 'string' ? values.id : undefined;
  if (id === undefined) throw new DfsError('BAD_REQUEST', 'dfs node start wants --id ID');
  const url = typeof values.redis === 'string' ? values.redis : (process.env.DFS_REDIS ?? 'redis://127.0.0.1:6379');
  await withRedis(url, async (redis) => {
    if ((await redis.hdel(KEY_REMOVING, id)) > 0) out(`withdrew the earlier request to remove ${id}`);
  });
  const child = spawn(process.execPath, [...NODE_RUNTIME_FLAGS, STORAGE_MAIN, ...args], { stdio: 'inherit' });
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGTERM', forward);
  process.on('SIGINT', forward);
  return new Promise((resolveExit) => child.on('exit', (code, signal) => resolveExit(code ?? (signal ? 128 : 1))));
}
