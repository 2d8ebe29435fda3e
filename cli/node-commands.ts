/*
 * `dfs node …` and `dfs local add-node`: adding and removing storage nodes while the
 * cluster runs (docs/cluster.md, Membership changes).
 *
 * (Their synopses and options are in command-table.ts.)
 *
 * `node start` runs a storage node in the foreground (as a container's command would): it
 * heartbeats, the leader registers it and makes it a learner, the primary feeds it (from
 * memory, its log, or by a full sync) and the leader promotes it to the in-sync set once it
 * is close. A removal request an earlier `node remove` left for the same ID is withdrawn
 * first.
 *
 * `node remove` asks the leader (a field of KEY_REMOVING in Redis) to drain the node: out
 * of the in-sync set first (no new reads, commits stop waiting for it), then out of the
 * membership. It waits until the membership no longer names it; with --data (a local
 * cluster) it then stops the node's process and forgets its record. The primary first hands
 * its role to another in-sync node (proxy/leader.ts). Once the node left, the request stays
 * while the process that left runs; when the ID starts again (another boot: a StatefulSet
 * scaled back up) the leader deletes it and the node rejoins (docs/cluster.md, "A removed
 * node that starts again").
 *
 * `credential revoke` lives here too, as the other command that writes Redis as admin.
 */
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { redisAuthFor, registerRedisAuth } from '../common/redis-auth';
import { readRedisLogin } from './redis-acl';
import { certFiles, readMaterial } from './certs';
import { sealRemoval } from '../common/membership-seal';
import { redisTlsOptions, type TlsMaterial } from '../common/tls';
import { DfsError } from '../common/errors';
import { KEY_REMOVING, KEY_REVOKED, nodeAliveKey } from '../common/redis-keys';
import { REVOKED_POLL_MS } from '../proxy/revocations';
import { normalizeSerial } from '../common/tls';
import { encodeRemoval } from '../common/registry';
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
  // The local cluster's admin login for its Redis (cli/redis-acl.ts); --redis URL elsewhere
  // takes $DFS_REDIS_AUTH (common/redis-auth.ts).
  const login = readRedisLogin(description.tlsDir, 'admin');
  if (login !== null) registerRedisAuth(description.redisUrl, login);
  return description.redisUrl;
}

/** `tls`: the certificate this command presents to a `rediss://` Redis, and the CA it
 * checks that Redis's certificate against (a cluster's Redis, as the chart runs it). */
async function withRedis<T>(url: string, fn: (redis: Redis) => Promise<T>, tls: TlsMaterial | null = null): Promise<T> {
  const redis = new Redis(url, { ...REDIS_OPTIONS, ...redisAuthFor(url), ...redisTlsOptions(url, tls) });
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

/** The admin certificate that seals a removal: the local cluster's (--data), else the
 * credential $DFS_CREDENTIAL names (DIR/NAME: NAME.crt, NAME.key, ca.crt); null for an
 * --insecure cluster or when none is given. */
function adminTlsOf(values: { redis?: string; data?: string }, defaultDataDir: string): TlsMaterial | null {
  // The local cluster's, unless a Redis elsewhere is named (--redis, or $DFS_REDIS without --data).
  if (values.redis === undefined && (values.data !== undefined || !process.env.DFS_REDIS)) {
    const tlsDir = readClusterFile(resolve(values.data ?? defaultDataDir))?.tlsDir;
    return tlsDir ? readMaterial(certFiles(tlsDir, 'admin')) : null;
  }
  const credential = process.env.DFS_CREDENTIAL;
  return credential ? readMaterial({ ca: join(dirname(credential), 'ca.crt'), cert: `${credential}.crt`, key: `${credential}.key` }) : null;
}

export async function nodeRemove(id: string, values: { redis?: string; data?: string }, defaultDataDir: string, out: Out): Promise<number> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(id)) throw new DfsError('BAD_REQUEST', `${JSON.stringify(id)} is not a node ID`);
  const url = redisUrlOf(values, defaultDataDir);
  const adminTls = adminTlsOf(values, defaultDataDir);
  await withRedis(url, async (redis) => {
    const m = await readMembership(redis);
    if (m === null) throw new DfsError('UNAVAILABLE', 'the cluster has no membership yet');
    if (m.nodes[id] !== undefined) {
      // Sealed with the admin certificate: the leader drains no node on a request any
      // proxy's Redis login could have written (docs/security.md, "Redis").
      const request = { requestedAtMs: Date.now() };
      await redis.hset(KEY_REMOVING, id, encodeRemoval(adminTls ? sealRemoval(id, request, adminTls) : request));
      out(
        m.primary === id
          ? `${id} is the primary: its role goes to another in-sync node first, then it drains out of the membership…`
          : `draining ${id}: out of the in-sync set, then out of the membership…`,
      );
      const gone = await pollUntil(async () => {
        const now = await readMembership(redis);
        return now !== null && now.nodes[id] === undefined ? true : undefined;
      }, REMOVE_WAIT_MS, 200);
      if (!gone) throw new DfsError('TIMEOUT', `the leader did not remove ${id} within ${REMOVE_WAIT_MS} ms (is a proxy running? over TLS the request must be sealed with the admin credential: --data DIR, or $DFS_CREDENTIAL); the request stays in Redis`);
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
    // The leader deleted its registration when it left the membership; its last heartbeat
    // goes too, so that the request can go without the leader registering it again.
    if (stopped) await redis.multi().del(nodeAliveKey(id)).hdel(KEY_REMOVING, id).exec();
    out(stopped ? `removed ${id} from the cluster` : `removed ${id} from the membership; stop its process now (a scale-down). Started again later under this ID, it rejoins as a learner`);
  }, adminTls);
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

// ---------------------------------------------------------------------------------------
// dfs credential revoke

/**
 * Revokes a mount credential: its certificate's serial number goes into KEY_REVOKED with
 * the admin login, and every proxy refuses it within a second (proxy/revocations.ts).
 * `--name` reads the certificate `dfs credential issue` wrote in the local cluster's TLS
 * directory; `--serial` names one issued elsewhere (`openssl x509 -noout -serial`).
 */
export async function credentialRevoke(values: { name?: string; serial?: string; redis?: string; data?: string; json?: boolean }, defaultDataDir: string, out: Out): Promise<number> {
  if ((values.name === undefined) === (values.serial === undefined)) throw new DfsError('BAD_REQUEST', 'give --name NAME (a credential this cluster issued) or --serial HEX, one of them');
  let serial: string | null;
  let name: string;
  if (values.serial !== undefined) {
    serial = normalizeSerial(values.serial);
    if (serial === null) throw new DfsError('BAD_REQUEST', `--serial wants a certificate serial number in hex (openssl x509 -noout -serial), not ${JSON.stringify(values.serial)}`);
    name = values.name ?? `serial ${serial}`;
  } else {
    name = values.name!;
    if (values.redis !== undefined) throw new DfsError('BAD_REQUEST', '--name reads the certificate from a local cluster (--data); for a cluster elsewhere give --serial');
    const tlsDir = readClusterFile(resolve(values.data ?? defaultDataDir))?.tlsDir;
    if (!tlsDir) throw new DfsError('BAD_REQUEST', `no TLS cluster in ${resolve(values.data ?? defaultDataDir)}: nothing to revoke`);
    if (name === 'admin' || /^(n|p|m)\d+$/.test(name)) throw new DfsError('BAD_REQUEST', `${name} is a process's certificate: those are renewed with the CA (docs/security.md), not revoked`);
    const file = certFiles(tlsDir, name).cert;
    let pem: string;
    try {
      pem = readFileSync(file, 'utf8');
    } catch (e) {
      throw new DfsError('BAD_REQUEST', `no credential ${JSON.stringify(name)}: cannot read ${file}: ${(e as Error).message}`);
    }
    serial = normalizeSerial(new X509Certificate(pem).serialNumber);
    if (serial === null) throw new DfsError('INTERNAL', `${file} has no usable serial number`);
  }
  const url = redisUrlOf(values, defaultDataDir);
  const added = await withRedis(url, (redis) => redis.hset(KEY_REVOKED, serial!, JSON.stringify({ name, revokedAtMs: Date.now() })));
  if (values.json) out(JSON.stringify({ name, serial, alreadyRevoked: added === 0 }));
  else out(`${added === 0 ? 'already revoked' : 'revoked'}: ${name} (serial ${serial}); every proxy refuses it within ${REVOKED_POLL_MS / 1000} s`);
  return 0;
}
