/*
 * The Redis users of a local cluster (common/redis-auth.ts; docs/security.md, "Redis"):
 * one password per role, made at the first `dfs local up` and kept beside the certificates
 * in DATA/tls/ (a directory of mode 0700):
 *
 *   redis-admin.json, redis-proxy.json, redis-node.json   { username, password }, 0600
 *   redis-users.acl                                      Redis's ACL file, 0600
 *
 * The ACL file names each user with its rules and the SHA-256 of its password (`#hex`), so
 * it holds no password itself, and turns the `default` user off (ensureRedisAcl says why
 * it keeps its permissions). It is written again at
 * every `up` from the password files and REDIS_ACL_RULES, so rules changed in a new version
 * take effect at the next start. Rotation: remove the redis-*.json files while the cluster
 * is down; the next `up` makes new passwords (and the ACL file for them).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { readRedisAuthFile, REDIS_ACL_RULES, REDIS_ROLES, type RedisAuth, type RedisRole } from '../common/redis-auth';

/** Random bytes per password (hex-encoded: 64 characters). */
const PASSWORD_BYTES = 32;

export function redisAuthFile(tlsDir: string, role: RedisRole): string {
  return join(tlsDir, `redis-${role}.json`);
}

export function redisAclFile(tlsDir: string): string {
  return join(tlsDir, 'redis-users.acl');
}

/** Makes the password files that are missing and writes the ACL file; returns its path. */
export function ensureRedisAcl(tlsDir: string): string {
  // `default` is off: a connection starts unauthenticated and gets NOAUTH until it logs in
  // as one of the users below. It keeps every permission all the same, because Redis 7.0
  // replays the transactions of its append-only file (a script's writes) as `default`,
  // and refuses them (NOPERM, the data silently gone after a restart) when `default` may
  // not run them; a user that is off cannot be logged in as, whatever it may run.
  const lines = ['user default off resetkeys ~* &* +@all'];
  for (const role of REDIS_ROLES) {
    const file = redisAuthFile(tlsDir, role);
    if (!existsSync(file)) {
      const auth: RedisAuth = { username: role, password: randomBytes(PASSWORD_BYTES).toString('hex') };
      writeFileSync(file, `${JSON.stringify(auth)}\n`, { mode: 0o600, flag: 'wx' });
    }
    const auth = readRedisAuthFile(file);
    const hash = createHash('sha256').update(auth.password).digest('hex');
    lines.push(`user ${auth.username} on resetpass #${hash} ${REDIS_ACL_RULES[role]}`);
  }
  writeFileSync(redisAclFile(tlsDir), `${lines.join('\n')}\n`, { mode: 0o600 });
  return redisAclFile(tlsDir);
}

/** The login of `role` for a cluster's Redis; null for an --insecure cluster (no tlsDir). */
export function readRedisLogin(tlsDir: string | null | undefined, role: RedisRole): RedisAuth | null {
  return tlsDir ? readRedisAuthFile(redisAuthFile(tlsDir, role)) : null;
}
