/*
 * The proxy process: wires Redis, the sequencer, leader duties, the node pool and the
 * client API, and serves HTTPS (HTTP/1.1 with keep-alive), every client authenticated by
 * its certificate (common/tls.ts); plaintext HTTP only under --insecure.
 *
 *   node dist/proxy/main.js --id p1 --port 7400 [--host 127.0.0.1] --redis URL
 *        [--admin-port N [--admin-host H]] [--stop-timeout-ms N] --ca FILE --cert FILE --key FILE --redis-auth FILE | --insecure
 *
 * With --admin-port it also serves /metrics, /healthz, /readyz and the status page /ui
 * (proxy/status-page.ts) over plain HTTP/1.1 without a client certificate
 * (common/admin-server.ts, docs/security.md).
 *
 * SIGTERM stops it gracefully within --stop-timeout-ms (docs/cluster.md, "Stopping a
 * proxy"): it stops accepting connections and says not ready, gives up the leader lease if
 * it holds it (another proxy leads at its next round, not after the lease lapses), lets
 * the requests in flight finish, closing each connection as it goes idle, then exits.
 */
import https from 'node:https';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { RevokedSerials } from './revocations';
import { Redis } from 'ioredis';
import { loadRedisAuth, REDIS_AUTH_ARG_OPTIONS, redisAuthOptions } from '../common/redis-auth';
import type { ClusterStatus, Membership } from '../common/api';
import { intOption, requireOption, runMain } from '../common/config';
import { HTTP_HEADER_BYTES_MAX, PROXY_BODY_BYTES_IN_FLIGHT_MAX, PROXY_CONNECTIONS_PER_CLIENT_MAX, PROXY_HEADERS_TIMEOUT_MS, PROXY_REQUEST_TIMEOUT_MS } from '../common/limits';
import { BodyBudget, capConnectionsPerClient } from '../common/http';
import { createLogger } from '../common/log';
import { loadProcessTls, redisTlsOptions, serverTlsOptions, TLS_ARG_OPTIONS } from '../common/tls';
import { KEY_EPOCH, KEY_JOINING, KEY_LEADER, KEY_MEMBERSHIP, KEY_SEQ } from '../common/redis-keys';
import { epochRefusal, parseMembership } from '../common/registry';
import { SealChecker } from '../common/membership-seal';
import { ADMIN_ARG_OPTIONS, adminAddressOf, serveAdmin } from '../common/admin-server';
import { createProxyApp } from './app';
import { ProxyMetrics } from './metrics';
import { statusPages } from './status-page';
import { LeaderDuty, readNodes } from './leader';
import { NodePool } from './node-pool';
import { RedisSequencer } from './sequencer';
import { LockStore } from './locks';

const MEMBERSHIP_POLL_MS = 300;
/** How long a proxy stays ready on the membership it holds without reading Redis: a Redis
 * blip must not take every proxy out of a Service at once, and one cut off for longer
 * cannot sequence anything. */
const READY_MEMBERSHIP_AGE_MS_MAX = 30_000;
/** The longest a SIGTERM takes by default (--stop-timeout-ms): a mutation in flight has
 * its deadline (8 s by default) to finish, and the whole stays well within Kubernetes's
 * default grace period of 30 s. */
const STOP_TIMEOUT_MS_DEFAULT = 12_000;
/** What a stop keeps, after the requests in flight, for closing Redis and the node pool. */
const STOP_CLOSE_MS = 1_000;
/** How often a stopping proxy closes the connections that went idle. */
const STOP_POLL_MS = 50;

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
      'stop-timeout-ms': { type: 'string' },
      ...ADMIN_ARG_OPTIONS,
      ...TLS_ARG_OPTIONS,
      ...REDIS_AUTH_ARG_OPTIONS,
    },
    strict: true,
  });
  const id = requireOption(values.id, 'id');
  const port = intOption(values.port, 'port', 7400, 1, 65535);
  const host = values.host!;
  const leaseMs = intOption(values['lease-ms'], 'lease-ms', 3000, 200);
  const mutationDeadlineMs = intOption(values['mutation-deadline-ms'], 'mutation-deadline-ms', 8000, 100);
  const nodeTimeoutMs = intOption(values['node-timeout-ms'], 'node-timeout-ms', 8000, 100);
  const stopTimeoutMs = intOption(values['stop-timeout-ms'], 'stop-timeout-ms', STOP_TIMEOUT_MS_DEFAULT, STOP_CLOSE_MS + 1000, 600_000);
  const adminAddress = adminAddressOf(values);
  const logger = createLogger('proxy', { proxyId: id });
  const tls = loadProcessTls(values, logger);
  // Its Redis user and password (common/redis-auth.ts): a file, never the command line.
  const redisAuth = loadRedisAuth(values);

  const redis = new Redis(values.redis!, { maxRetriesPerRequest: 1, connectTimeout: 2000, commandTimeout: 2000, ...redisTlsOptions(values.redis!, tls), ...redisAuthOptions(redisAuth) });
  redis.on('error', (err) => logger.debug({ err: err.message }, 'redis error'));
  const sequencer = new RedisSequencer(redis);
  const nodes = new NodePool(nodeTimeoutMs, logger, tls);
  const leader = new LeaderDuty(redis, id, leaseMs, logger, tls);
  // A connection of its own for the lock change notices (a subscribed one takes nothing else).
  const lockEvents = redis.duplicate();
  lockEvents.on('error', (err) => logger.debug({ err: err.message }, 'redis (lock events) error'));
  const locks = new LockStore(redis, lockEvents);

  // The membership this proxy acts on: one that parses, carries a good seal (a proxy of this
  // cluster published it: common/membership-seal.ts) and whose epoch is within a bound of
  // the one held. Anything else in Redis is refused with a logged reason (once per text),
  // and the proxy keeps the one it has (docs/security.md, "Redis").
  let membership: Membership | null = null;
  const seals = tls ? new SealChecker(tls.ca) : null;
  let refusedText = '';
  let acceptedText = '';
  /** When Redis last answered a membership read. */
  let membershipReadAtMs = 0;
  const refreshMembership = async (): Promise<Membership | null> => {
    const text = await redis.get(KEY_MEMBERSHIP);
    membershipReadAtMs = Date.now();
    if (!text || text === refusedText || text === acceptedText) return membership;
    let m: Membership;
    try {
      m = parseMembership(text);
    } catch (e) {
      return refuseMembership(text, (e as Error).message);
    }
    const why = seals?.refusal(m) ?? epochRefusal(m.epoch, membership?.epoch ?? 0);
    if (why !== null) return refuseMembership(text, why);
    if (!membership || m.epoch >= membership.epoch) {
      membership = m;
      acceptedText = text;
    }
    return membership;
  };
  const refuseMembership = (text: string, reason: string): Membership | null => {
    if (text !== refusedText) logger.warn({ reason, epoch: membership?.epoch ?? null }, 'refused the membership in Redis');
    refusedText = text;
    return membership;
  };

  const clusterStatus = async (): Promise<ClusterStatus> => {
    const [leaderId, epoch, seq, m, views, joining] = await Promise.all([
      redis.get(KEY_LEADER),
      redis.get(KEY_EPOCH),
      redis.get(KEY_SEQ),
      refreshMembership(),
      readNodes(redis, (reason) => logger.warn({ reason }, 'refused a registry value')),
      redis.hgetall(KEY_JOINING),
    ]);
    const loads = new Map(nodes.loads().map((l) => [l.id, l]));
    const held = await locks.list().catch(() => null);
    return {
      leader: leaderId,
      epoch: Number(epoch ?? 0),
      seq: Number(seq ?? 0),
      membership: m,
      ...(held ? { locks: held.locks, locksTruncated: held.truncated } : {}),
      belowFloor: views.find((v) => v.id === m?.primary && v.alive)?.belowFloor ?? null,
      nodes: views.map((v) => ({
        id: v.id,
        url: v.url,
        alive: v.alive,
        role: m?.primary === v.id ? 'primary' : m?.inSync.includes(v.id) ? 'backup' : 'joining',
        state: !v.alive ? 'down' : v.syncing ? 'syncing' : v.space === 'full' ? 'full' : m?.inSync.includes(v.id) ? 'in-sync' : 'joining',
        space: v.space,
        confirming: m?.inSync.includes(v.id) === true && joining[v.id] !== undefined,
        sync: v.sync,
        lastSync: v.lastSync,
        appliedSeq: v.appliedSeq,
        lag: v.appliedSeq === null ? null : Math.max(0, Number(seq ?? 0) - v.appliedSeq),
        // As this proxy sees it: reads it sent there, and whether it holds reads back.
        reads: loads.get(v.id)?.reads ?? 0,
        slow: loads.get(v.id)?.slow ?? false,
      })),
    };
  };

  /** Set by SIGTERM: not ready (a Service stops sending it clients), and draining. */
  let stopping = false;
  // Ready: it holds a membership with a primary, read from Redis lately (the 300 ms poll
  // keeps it fresh), and it is not stopping. It does not ask Redis itself: a probe that
  // did would take every proxy out of the Service at the same Redis blip.
  const ready = async (): Promise<boolean> => !stopping && membership !== null && membership.nodes[membership.primary] !== undefined && Date.now() - membershipReadAtMs < READY_MEMBERSHIP_AGE_MS_MAX;

  const metrics = new ProxyMetrics({
    isLeader: () => leader.isLeader,
    cluster: async () => {
      const status = await clusterStatus();
      return { seq: status.seq, nodeStates: status.nodes.map((n) => n.state) };
    },
  });
  // Revoked mount credentials, read before the first request is served (a proxy that
  // cannot read them yet starts all the same, and reads them on its next look).
  const revoked = tls ? new RevokedSerials(redis, logger) : null;
  await revoked?.start();
  const app = createProxyApp({ metrics, sequencer, nodes, logger, membership: () => membership, refreshMembership, clusterStatus, ready, mutationDeadlineMs, locks, bodyBudget: new BodyBudget(PROXY_BODY_BYTES_IN_FLIGHT_MAX), secure: tls !== null, revoked: revoked ? (serial) => revoked.has(serial) : undefined });
  const server = serve({
    fetch: app.fetch,
    port,
    hostname: host,
    serverOptions: { maxHeaderSize: HTTP_HEADER_BYTES_MAX, keepAliveTimeout: 65_000, headersTimeout: PROXY_HEADERS_TIMEOUT_MS, requestTimeout: PROXY_REQUEST_TIMEOUT_MS, ...(tls ? serverTlsOptions(tls) : {}) },
    ...(tls ? { createServer: https.createServer } : {}),
  });
  capConnectionsPerClient(server as import('node:net').Server, PROXY_CONNECTIONS_PER_CLIENT_MAX, logger);
  // Requests whose answer is not finished (a read's body streams after the handler
  // returns): a stop waits for these.
  let requestsInFlight = 0;
  server.on('request', (_req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    requestsInFlight++;
    res.once('close', () => requestsInFlight--);
    // Stopping: the client learns with this answer not to send another on this connection.
    if (stopping) res.setHeader('connection', 'close');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  logger.info({ url: `${tls ? 'https' : 'http'}://${host}:${port}` }, 'proxy listening');
  const adminServer = adminAddress
    ? await serveAdmin(adminAddress, { registry: metrics.registry, ready, logger, pages: statusPages(clusterStatus) }).catch((err: Error) => {
        throw new Error(`cannot serve the admin port on ${adminAddress.host}:${adminAddress.port}: ${err.message}`);
      })
    : null;
  if (adminAddress) logger.info({ url: `http://${adminAddress.host.includes(':') ? `[${adminAddress.host}]` : adminAddress.host}:${adminAddress.port}` }, 'admin port listening');

  leader.start();
  const poll = setInterval(() => refreshMembership().catch(() => undefined), MEMBERSHIP_POLL_MS);
  await refreshMembership().catch(() => undefined);

  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    const startedAt = Date.now();
    logger.info({ signal, stopTimeoutMs, requestsInFlight }, 'stopping');
    setTimeout(() => {
      logger.warn({ stopTimeoutMs, requestsInFlight }, 'the stop took too long: exiting');
      process.exit(0);
    }, stopTimeoutMs).unref();
    const http = server as import('node:http').Server;
    // No new connections; a keep-alive connection is closed once it is idle, so that a
    // client's next request goes to another proxy rather than wait here.
    http.close();
    revoked?.stop();
    adminServer?.close();
    const released = leader.release().catch((err: Error) => logger.warn({ err: err.message }, 'giving up the leader lease failed; it lapses'));
    clearInterval(poll);
    const drained = (async () => {
      while (requestsInFlight > 0 && Date.now() - startedAt < stopTimeoutMs - STOP_CLOSE_MS) {
        http.closeIdleConnections();
        await new Promise((resolve) => setTimeout(resolve, STOP_POLL_MS));
      }
      if (requestsInFlight > 0) logger.warn({ requestsInFlight }, 'requests still in flight at the stop timeout: closing their connections');
      else logger.info({ ms: Date.now() - startedAt }, 'requests in flight finished');
      http.closeAllConnections();
    })();
    void Promise.allSettled([released, drained])
      .then(() => nodes.close())
      .then(() => Promise.all([redis.quit().catch(() => undefined), lockEvents.quit().catch(() => undefined)]))
      .finally(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
});
