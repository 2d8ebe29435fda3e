/*
 * Redis users and passwords (issue 13 item 5; docs/security.md, "Redis"). Redis holds what
 * the cluster agrees on, so no one reaches it without a password, and each kind of process
 * gets a Redis user limited (Redis ACL rules) to the commands and keys it needs:
 *
 *   - node:  its heartbeat (`dfs:node:*:alive`), read the membership and who leads (a stopping
 *            node waits for a leader only while there is one), mark `dfs:leases-used`;
 *   - proxy: the sequence counter, the leader's lease, the membership and the registry
 *            hashes; heartbeats read-only (a proxy's password cannot forge or delete one);
 *   - admin: the `dfs` command and the test harness: every `dfs:*` key.
 * The `default` user is off, so a connection without a password gets NOAUTH on every
 * command.
 *
 * A process gets its user and password from a file (`--redis-auth FILE`, or the file named
 * by $DFS_REDIS_AUTH), never on its command line, where `ps` would show it. The file is
 * JSON `{ "username": "...", "password": "..." }`, mode 0600. `dfs local up` makes one per
 * role under DATA/redis-auth/ (cli/redis-acl.ts) and an ACL file for its Redis that holds
 * only the passwords' SHA-256 hashes.
 *
 * Clients in the `dfs` process (probes, `dfs node remove`, the test harness) find the
 * password for a Redis URL here (registerRedisAuth / redisAuthFor), as they find their TLS
 * material in common/tls.ts.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';

export type RedisRole = 'admin' | 'proxy' | 'node';
export const REDIS_ROLES: readonly RedisRole[] = ['admin', 'proxy', 'node'];

/** What every role may do to keep a connection (ioredis's ready check is INFO) and run a transaction. */
const CONNECTION_COMMANDS = '+ping +info +hello +quit +auth +client|setname +client|id +select +multi +exec +discard';

/**
 * The ACL rules of each role (Redis 7 ACL syntax: `~pattern` read and write, `%R~pattern`
 * read only). Commands a Lua script calls are checked against the caller's rules too, so
 * the scripts' keys are listed here like any other.
 */
export const REDIS_ACL_RULES: Readonly<Record<RedisRole, string>> = {
  node: `resetkeys %R~dfs:membership %R~dfs:leader ~dfs:node:*:alive ~dfs:leases-used resetchannels -@all ${CONNECTION_COMMANDS} +get +set +exists +eval +evalsha`,
  proxy: `resetkeys ~dfs:seq ~dfs:epoch ~dfs:leader ~dfs:membership ~dfs:nodes ~dfs:joining ~dfs:removing %R~dfs:node:*:alive %R~dfs:leases-used ~dfs:locks:* ~dfs:lock-session:* %R~dfs:revoked resetchannels &dfs:locks-changed -@all ${CONNECTION_COMMANDS} +get +mget +set +del +incr +exists +pexpire +hgetall +hget +hkeys +hset +hdel +scan +eval +evalsha +publish +subscribe +unsubscribe`,
  admin: `resetkeys ~dfs:* resetchannels -@all ${CONNECTION_COMMANDS} +@read +@write +@keyspace +@scripting -flushall -flushdb -debug`,
};

export interface RedisAuth {
  username: string;
  password: string;
}

const RedisAuthSchema = z.object({
  username: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/),
  password: z.string().regex(/^[A-Za-z0-9_-]{16,256}$/),
});

/** Reads a password file; the error names the file and what is wrong with it. */
export function readRedisAuthFile(file: string): RedisAuth {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`cannot read the Redis password file ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error(`the Redis password file ${file} is not JSON { "username", "password" }`);
  }
  const r = RedisAuthSchema.safeParse(raw);
  if (!r.success) throw new Error(`the Redis password file ${file} is malformed: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/**
 * A process's Redis login: `--redis-auth FILE`, else $DFS_REDIS_AUTH, else none. Without
 * --insecure one is required (a cluster whose Redis takes no password is open to every
 * local user); under --insecure none is taken, and the caller's start warning says so.
 */
export function loadRedisAuth(values: { 'redis-auth'?: string; insecure?: boolean }, env: NodeJS.ProcessEnv = process.env): RedisAuth | null {
  const file = values['redis-auth'] ?? env.DFS_REDIS_AUTH;
  if (values.insecure) {
    if (values['redis-auth'] !== undefined) throw new Error('--insecure and --redis-auth exclude each other (--insecure uses Redis without a password)');
    return null;
  }
  if (file === undefined || file === '') throw new Error('--redis-auth FILE (or $DFS_REDIS_AUTH) is required: the Redis user and password of this process (`dfs local up` makes them), or --insecure');
  return readRedisAuthFile(file);
}

/** The option parseArgs takes for it. */
export const REDIS_AUTH_ARG_OPTIONS = { 'redis-auth': { type: 'string' } } as const;

/** ioredis options for a login (none: no options). */
export function redisAuthOptions(auth: RedisAuth | null | undefined): { username?: string; password?: string } {
  return auth ? { username: auth.username, password: auth.password } : {};
}

const authByUrl = new Map<string, RedisAuth>();

/** Makes this process's Redis clients for `url` log in as `auth` (the `dfs` command and
 * the harness, as admin). */
export function registerRedisAuth(url: string, auth: RedisAuth): void {
  authByUrl.set(url, auth);
}

/** The ioredis options this process logs in to `url` with: what was registered for it,
 * else the file $DFS_REDIS_AUTH names (a cluster elsewhere), else none. */
export function redisAuthFor(url: string, env: NodeJS.ProcessEnv = process.env): { username?: string; password?: string } {
  const registered = authByUrl.get(url);
  if (registered) return redisAuthOptions(registered);
  return env.DFS_REDIS_AUTH ? redisAuthOptions(readRedisAuthFile(env.DFS_REDIS_AUTH)) : {};
}
