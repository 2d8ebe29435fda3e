/*
 * Is the local cluster up? The probes `dfs local` and the harness ask: an HTTP GET with a
 * deadline (a proxy's /readyz and /v1/cluster), a storage node's /node/v1/state over
 * HTTP/2 (TLS with the credential registered for the URL, common/tls.ts
 * registerClientTls; cleartext for an --insecure cluster), and Redis (PING, and EXISTS on the nodes' heartbeat keys) through
 * ioredis on a short-lived connection that never reconnects. Each probe answers within
 * PROBE_TIMEOUT_MS, null or false when there is no answer; `probeReady` polls them until
 * the whole cluster is ready, or says which process is not and quotes its log.
 */
import { Redis } from 'ioredis';
import { redisAuthFor } from '../common/redis-auth';
import { Agent, Client, request, type Dispatcher } from 'undici';
import type { ClusterStatus } from '../common/api';
import { DfsError } from '../common/errors';
import { h2ClientOptions } from '../common/h2c';
import { clientConnectOptions, clientTlsFor, type TlsMaterial } from '../common/tls';
import { describeExit, failure, type Running } from './cluster-processes';
import { isSameProcess, pollUntil } from './processes';

/** How long a start may take before it is declared failed. */
export const READY_TIMEOUT_MS = 20_000;
/** One readiness probe (HTTP request or Redis command). */
export const PROBE_TIMEOUT_MS = 2_000;

export interface HTTPAnswer {
  status: number;
  text: string;
}

/** One HTTPS agent per credential, for the one-off requests below. */
const agents = new WeakMap<TlsMaterial, Agent>();

/** The dispatcher that authenticates to `url` with the credential registered for it;
 * undefined (undici's global one) for a plaintext URL. */
export function dispatcherFor(url: string): Dispatcher | undefined {
  const tls = clientTlsFor(url);
  if (!tls) return undefined;
  let agent = agents.get(tls);
  if (!agent) {
    agent = new Agent({ connect: clientConnectOptions(tls, ['proxy', 'node']) });
    agents.set(tls, agent);
  }
  return agent;
}

/** One GET with a deadline; the connection is not kept alive, so a CLI exits promptly. */
export async function httpGet(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<HTTPAnswer> {
  const dispatcher = dispatcherFor(url);
  const answer = await request(url, {
    ...(dispatcher ? { dispatcher } : {}),
    method: 'GET',
    reset: true,
    headersTimeout: timeoutMs,
    bodyTimeout: timeoutMs,
    signal: AbortSignal.timeout(timeoutMs),
  });
  return { status: answer.statusCode, text: await answer.body.text() };
}

/** GET /v1/cluster from the first proxy that answers; null when none does. */
export async function fetchClusterStatus(proxyUrls: string[], timeoutMs = PROBE_TIMEOUT_MS): Promise<{ proxyUrl: string; status: ClusterStatus } | null> {
  for (const proxyUrl of proxyUrls) {
    try {
      const answer = await httpGet(`${proxyUrl}/v1/cluster`, timeoutMs);
      if (answer.status === 200) return { proxyUrl, status: JSON.parse(answer.text) as ClusterStatus };
    } catch {
      // Try the next proxy.
    }
  }
  return null;
}

/**
 * Runs `command` on a fresh connection to the Redis at `url`, and closes it; null when
 * Redis does not answer within `timeoutMs`. No reconnects, no offline queue: a probe that
 * fails is asked again by its caller's poll, not by the client.
 */
export async function askRedis<T>(url: string, command: (redis: Redis) => Promise<T>, timeoutMs = PROBE_TIMEOUT_MS): Promise<T | null> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    ...redisAuthFor(url),
  });
  redis.on('error', () => undefined); // the command's own failure says enough
  try {
    await redis.connect();
    return await command(redis);
  } catch {
    return null;
  } finally {
    redis.disconnect();
  }
}

/**
 * What `INFO persistence` says failed: its `*_status:err` fields (`aof_last_write_status`:
 * Redis could not write its append-only file, as on a full disk, and refuses writes until
 * it can; `rdb_last_bgsave_status`, `aof_last_bgrewrite_status`). Empty when all is well.
 */
export function redisPersistenceErrors(info: string): string[] {
  const errors: string[] = [];
  for (const line of info.split(/\r?\n/)) {
    const m = /^(\w+_status):(\w+)$/.exec(line.trim());
    if (m && m[2] === 'err') errors.push(m[1]!);
  }
  return errors;
}

/** Redis's persistence errors (redisPersistenceErrors); null when Redis does not answer. */
export async function fetchRedisPersistenceErrors(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<string[] | null> {
  const info = await askRedis(url, (redis) => redis.info('persistence'), timeoutMs);
  return info === null ? null : redisPersistenceErrors(info);
}

export async function pingRedis(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return (await askRedis(url, (redis) => redis.ping(), timeoutMs)) === 'PONG';
}

/** How many of `keys` exist; null when Redis does not answer. */
export async function countRedisKeys(url: string, keys: string[], timeoutMs = PROBE_TIMEOUT_MS): Promise<number | null> {
  return askRedis(url, (redis) => redis.exists(...keys), timeoutMs);
}

/** GET a storage node's /node/v1/state over HTTP/2; null when it does not answer. */
export async function fetchNodeState(url: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<{ epoch: number; role: string; appliedSeq: number } | null> {
  const client = new Client(url, h2ClientOptions({ headersTimeout: timeoutMs, bodyTimeout: timeoutMs }, clientTlsFor(url)));
  try {
    const answer = await client.request({ method: 'GET', path: '/node/v1/state', signal: AbortSignal.timeout(timeoutMs) });
    const text = await answer.body.text();
    return answer.statusCode === 200 ? (JSON.parse(text) as { epoch: number; role: string; appliedSeq: number }) : null;
  } catch {
    return null;
  } finally {
    await client.close().catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------
// readiness

/**
 * Polls until every proxy is ready and every node in sync. A process that is gone fails
 * the wait at once, unless a supervisor restarts it: then `refresh` (which takes over the
 * supervisor's records) runs before each look, and a process down is only not ready yet.
 */
export async function probeReady(runnings: Running[], nodeIds: string[], timeoutMs: number, supervised?: { refresh: () => void }, onWaiting?: (what: string) => void): Promise<void> {
  let problem: { running: Running | null; what: string } = { running: null, what: 'not ready' };
  // What it waits for, told once each time it changes (`dfs local up` prints it).
  let said = '';
  const tell = () => {
    const what = `${problem.running ? `${problem.running.record.id} ` : ''}${problem.what}`;
    if (what !== said) onWaiting?.(what);
    said = what;
  };
  const ready = await pollUntil(async () => {
    const answer = await readyRound();
    if (answer === undefined) tell();
    return answer;
  }, timeoutMs, 100);
  if (ready) return;
  const { running, what } = problem;
  if (running === null) throw new DfsError('TIMEOUT', `the cluster is ${what} after ${timeoutMs} ms`);
  throw failure(running, `${what} after ${timeoutMs} ms`);

  async function readyRound(): Promise<true | undefined> {
    supervised?.refresh();
    for (const running of runnings) {
      if (running.exit !== null || !isSameProcess(running.record)) {
        if (supervised === undefined) throw failure(running, `${describeExit(running)} while the cluster was starting`);
        problem = { running, what: 'is down (the supervisor restarts it)' };
        return undefined;
      }
    }
    const proxies = runnings.filter((running) => running.record.kind === 'proxy');
    for (const proxy of proxies) {
      try {
        const answer = await httpGet(`${proxy.record.url}/readyz`);
        if (answer.status !== 200) {
          problem = { running: proxy, what: `is not ready (GET /readyz: ${answer.status} ${answer.text.slice(0, 200)})` };
          return undefined;
        }
      } catch (error) {
        problem = { running: proxy, what: `does not answer GET /readyz (${(error as Error).message})` };
        return undefined;
      }
    }
    const view = await fetchClusterStatus(proxies.map((proxy) => proxy.record.url!));
    if (view === null) {
      problem = { running: proxies[0] ?? null, what: 'does not answer GET /v1/cluster' };
      return undefined;
    }
    const membership = view.status.membership;
    const inSync = membership?.inSync ?? [];
    const missing = nodeIds.filter((id) => !inSync.includes(id));
    if (membership === null || missing.length > 0) {
      const node = runnings.find((running) => running.record.kind === 'storage' && running.record.id === missing[0]) ?? null;
      problem = { running: node, what: `is not in sync (in sync: [${inSync.join(', ')}], missing: [${missing.join(', ')}])` };
      return undefined;
    }
    // Every node must have adopted that membership (nodes poll for it), or the first write
    // could meet a node that still acts on an older one.
    for (const running of runnings.filter((candidate) => candidate.record.kind === 'storage')) {
      const state = await fetchNodeState(running.record.url!);
      if (state === null || state.epoch < membership.epoch) {
        problem = { running, what: `has not adopted membership epoch ${membership.epoch} (GET /node/v1/state: ${state === null ? 'no answer' : `epoch ${state.epoch}`})` };
        return undefined;
      }
    }
    return true;
  }
}
