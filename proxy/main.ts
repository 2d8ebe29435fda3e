/*
 * The proxy process: wires Redis, the sequencer, leader duties, the node pool and the
 * client API, and serves HTTP/1.1 with keep-alive.
 *
 *   node dist/proxy/main.js --id p1 --port 7400 [--host 127.0.0.1] --redis URL
 */
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { Redis } from 'ioredis';
import type { ClusterStatus, Membership } from '../common/api';
import { intOption, requireOption, runMain } from '../common/config';
import { HTTP_HEADER_BYTES_MAX } from '../common/limits';
import { createLogger } from '../common/log';
import { KEY_EPOCH, KEY_JOINING, KEY_LEADER, KEY_SEQ } from '../common/redis-keys';
import { createProxyApp } from './app';
import { LeaderDuty, readMembership, readNodes } from './leader';
import { NodePool } from './node-pool';
import { RedisSequencer } from './sequencer';

const MEMBERSHIP_POLL_MS = 300;

runMain(async () => {
  const { values } = parseArgs({
    options: {
      id: { type: 'string' },
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      redis: { type: 'string', default: process.env.DFS_REDIS ?? 'redis://127.0.0.1:6379' },
      'lease-ms': { type: 'string' },
      'mutation-deadline-ms': { type: 'string' },
      'node-timeout-ms': { type: 'string' },
    },
    strict: true,
  });
  const id = requireOption(values.id, 'id');
  const port = intOption(values.port, 'port', 7400, 1, 65535);
  const host = values.host!;
  const leaseMs = intOption(values['lease-ms'], 'lease-ms', 3000, 200);
  const mutationDeadlineMs = intOption(values['mutation-deadline-ms'], 'mutation-deadline-ms', 8000, 100);
  const nodeTimeoutMs = intOption(values['node-timeout-ms'], 'node-timeout-ms', 8000, 100);
  const logger = createLogger('proxy', { proxyId: id });

  const redis = new Redis(values.redis!, { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000 });
  redis.on('error', (err) => logger.debug({ err: err.message }, 'redis error'));
  const sequencer = new RedisSequencer(redis);
  const nodes = new NodePool(nodeTimeoutMs, logger);
  const leader = new LeaderDuty(redis, id, leaseMs, logger);

  let membership: Membership | null = null;
  const refreshMembership = async (): Promise<Membership | null> => {
    const m = await readMembership(redis);
    if (m && (!membership || m.epoch >= membership.epoch)) membership = m;
    return membership;
  };

  const clusterStatus = async (): Promise<ClusterStatus> => {
    const [leaderId, epoch, seq, m, views, joining] = await Promise.all([
      redis.get(KEY_LEADER),
      redis.get(KEY_EPOCH),
      redis.get(KEY_SEQ),
      readMembership(redis),
      readNodes(redis),
      redis.hgetall(KEY_JOINING),
    ]);
    const loads = new Map(nodes.loads().map((l) => [l.id, l]));
    return {
      leader: leaderId,
      epoch: Number(epoch ?? 0),
      seq: Number(seq ?? 0),
      membership: m,
      nodes: views.map((v) => ({
        id: v.id,
        url: v.url,
        alive: v.alive,
        role: m?.primary === v.id ? 'primary' : m?.inSync.includes(v.id) ? 'backup' : 'joining',
        state: !v.alive ? 'down' : v.syncing ? 'syncing' : v.space === 'full' ? 'full' : m?.inSync.includes(v.id) ? 'in-sync' : 'joining',
        space: v.space,
        confirming: m?.inSync.includes(v.id) === true && joining[v.id] !== undefined,
        sync: v.sync,
        appliedSeq: v.appliedSeq,
        lag: v.appliedSeq === null ? null : Math.max(0, Number(seq ?? 0) - v.appliedSeq),
        // As this proxy sees it: reads it sent there, and whether it holds reads back.
        reads: loads.get(v.id)?.reads ?? 0,
        slow: loads.get(v.id)?.slow ?? false,
      })),
    };
  };

  const ready = async (): Promise<boolean> => {
    try {
      await redis.ping();
      const m = await refreshMembership();
      return !!m && !!m.nodes[m.primary];
    } catch {
      return false;
    }
  };

  const app = createProxyApp({ sequencer, nodes, logger, membership: () => membership, refreshMembership, clusterStatus, ready, mutationDeadlineMs });
  const server = serve({
    fetch: app.fetch,
    port,
    hostname: host,
    serverOptions: { maxHeaderSize: HTTP_HEADER_BYTES_MAX, keepAliveTimeout: 65_000 },
  });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  logger.info({ url: `http://${host}:${port}` }, 'proxy listening');

  leader.start();
  const poll = setInterval(() => refreshMembership().catch(() => undefined), MEMBERSHIP_POLL_MS);
  await refreshMembership().catch(() => undefined);

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'stopping');
    leader.stop();
    clearInterval(poll);
    setTimeout(() => process.exit(0), 2000).unref();
    server.close();
    void nodes
      .close()
      .then(() => redis.quit().catch(() => undefined))
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});
