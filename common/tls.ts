/*
 * Authenticated transport (DESIGN.md, Security; docs/security.md): every hop is TLS with
 * the cluster's CA, and every process presents a certificate that names its role. This
 * module is the one place where that is set up and read:
 *
 *   - loadProcessTls: a process's --ca/--cert/--key (or --insecure, logged as a warning);
 *   - serverTlsOptions: both sides authenticate (requestCert + rejectUnauthorized), so a
 *     caller without a certificate of this cluster's CA, or with an expired one, is cut off
 *     in the handshake and never reaches a handler;
 *   - clientConnectOptions: undici's `connect` options, which also check that the server
 *     holds the role the caller expects (a proxy talks only to storage nodes, and so on);
 *   - peerIdentityOf / requireRoles: the Hono edge reads the caller's certificate once per
 *     connection (cached on the TLS socket or HTTP/2 session) and refuses a route to a role
 *     it is not for, with 403 FORBIDDEN.
 *
 * A certificate says who it is in URI subject alternative names (`urn:dfs:role:node`,
 * `urn:dfs:id:n1`, and for a mount its credential: common/credential.ts). The names are
 * read from the certificate the TLS layer verified against the CA, so only the CA's
 * holder (`dfs`) can grant them. No crypto is done here: Node's TLS does it all.
 */
import { readFileSync } from 'node:fs';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { Context, MiddlewareHandler } from 'hono';
import { DfsError } from './errors';
import type { Logger } from './log';
import { parseCredential, type Credential } from './credential';

/** What a certificate may be: a storage node, a proxy, a mount (a client host), or admin. */
export type Role = 'node' | 'proxy' | 'mount' | 'admin';
export const ROLES: readonly Role[] = ['node', 'proxy', 'mount', 'admin'];

/** The PEM files a process authenticates with, read at start-up. */
export interface TlsMaterial {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** Who is on the other end of a connection, as its certificate says. */
export interface PeerIdentity {
  role: Role;
  /** The node, proxy or mount ID the certificate names, if any. */
  id: string | null;
  /** What the caller may act as (mounts and admin; common/credential.ts). */
  credential: Credential;
  /** The certificate's serial number (upper-case hex, no leading zeros), for revocation
   * (proxy/revocations.ts); null when not known. */
  serial?: string | null;
}

/** The URI SAN prefix of every dfs claim. */
export const SAN_PREFIX = 'urn:dfs:';

/** The URI subject alternative names of a certificate: Node formats them as
 * `URI:a, IP Address:b`, quoting a name that holds a comma or quote as JSON (our names
 * never do: they are percent-encoded). */
export function uriNamesOf(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  const names: string[] = [];
  for (const part of subjectAltName.split(', ')) {
    if (!part.startsWith('URI:')) continue;
    let v = part.slice(4);
    if (v.startsWith('"')) {
      try {
        v = JSON.parse(v) as string;
      } catch {
        continue;
      }
    }
    names.push(v);
  }
  return names;
}

/** The identity a certificate's names claim; null when it names no valid role. */
export function identityOfNames(uris: string[]): PeerIdentity | null {
  const claims = uris.filter((u) => u.startsWith(SAN_PREFIX)).map((u) => u.slice(SAN_PREFIX.length));
  const roles = claims.filter((c) => c.startsWith('role:')).map((c) => c.slice(5));
  if (roles.length !== 1 || !ROLES.includes(roles[0] as Role)) return null;
  const role = roles[0] as Role;
  const ids = claims.filter((c) => c.startsWith('id:')).map((c) => c.slice(3));
  if (ids.length > 1) return null;
  const credential = parseCredential(role, claims);
  if (credential === null) return null;
  return { role, id: ids[0] ?? null, credential };
}

export function identityOfCertificate(cert: PeerCertificate | null | undefined): PeerIdentity | null {
  if (!cert || Object.keys(cert).length === 0) return null;
  const identity = identityOfNames(uriNamesOf(cert.subjectaltname));
  if (identity === null) return null;
  return { ...identity, serial: typeof cert.serialNumber === 'string' ? normalizeSerial(cert.serialNumber) : null };
}

/** A certificate serial number as one spelling: upper-case hex without separators or
 * leading zeros (Node's `serialNumber` keeps the DER's leading zero byte; OpenSSL's
 * `-serial` may too); null for anything that is not a serial number (at most 20 bytes). */
export function normalizeSerial(text: string): string | null {
  const hex = text.trim().replace(/:/g, '').toUpperCase();
  if (!/^[0-9A-F]{1,40}$/.test(hex)) return null;
  return hex.replace(/^0+(?=.)/, '');
}

// ---------------------------------------------------------------------------------------
// processes' options

/** The options every dfs process takes for its transport (parseArgs form). */
export const TLS_ARG_OPTIONS = {
  ca: { type: 'string' },
  cert: { type: 'string' },
  key: { type: 'string' },
  insecure: { type: 'boolean' },
} as const;

/** Reads --ca/--cert/--key, or accepts --insecure (null: plaintext) with a warning that
 * says what it gives up. Anything else (a missing file, half the options) stops start-up. */
export function loadProcessTls(values: { ca?: string; cert?: string; key?: string; insecure?: boolean }, logger: Logger): TlsMaterial | null {
  const given = [values.ca, values.cert, values.key].filter((v) => v !== undefined && v !== '');
  if (values.insecure) {
    if (given.length > 0) throw new Error('--insecure and --ca/--cert/--key exclude each other');
    logger.warn('--insecure: plaintext transport, no authentication, Redis without a password; anyone who reaches this port or Redis may act as any user and any cluster process (README, Security)');
    return null;
  }
  if (given.length !== 3) throw new Error('--ca, --cert and --key are required (the cluster CA and this process\'s certificate and key; `dfs local up` makes them), or --insecure for plaintext');
  const read = (file: string, what: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new Error(`cannot read the ${what} ${file}: ${(e as Error).message}`);
    }
  };
  return { ca: read(values.ca!, 'CA certificate'), cert: read(values.cert!, 'certificate'), key: read(values.key!, 'key') };
}

/** A URL's scheme must match the transport: https with TLS, http only with --insecure. */
export function assertScheme(url: string, tls: TlsMaterial | null, what: string): void {
  const scheme = new URL(url).protocol;
  if (tls && scheme !== 'https:') throw new Error(`${what} ${url} must be https:// (or run with --insecure)`);
  if (!tls && scheme !== 'http:') throw new Error(`${what} ${url} is https:// but this process runs --insecure`);
}

// ---------------------------------------------------------------------------------------
// servers

/** TLS options of a server: the caller must present a certificate of the cluster's CA. */
export function serverTlsOptions(tls: TlsMaterial): { ca: Buffer; cert: Buffer; key: Buffer; requestCert: true; rejectUnauthorized: true; minVersion: 'TLSv1.2' } {
  return { ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' };
}

/** The caller's identity, read once per TLS connection (or HTTP/2 session). */
const identities = new WeakMap<object, PeerIdentity | null>();

/** The caller of a request served over TLS; null for a plaintext server or a certificate
 * that names no role. */
export function peerIdentityOf(c: Context): PeerIdentity | null {
  const incoming = (c.env as { incoming?: { socket?: TLSSocket; stream?: { session?: { socket?: TLSSocket } } } } | undefined)?.incoming;
  if (!incoming) return null;
  // HTTP/2: one session per connection; HTTP/1.1: the socket.
  const key: object | undefined = incoming.stream?.session ?? incoming.socket;
  const socket = incoming.stream?.session?.socket ?? incoming.socket;
  if (!key || !socket || typeof socket.getPeerCertificate !== 'function') return null;
  let id = identities.get(key);
  if (id === undefined) {
    id = identityOfCertificate(socket.getPeerCertificate());
    identities.set(key, id);
  }
  return id;
}

/** The identity every request of an --insecure process is taken to have: anyone is admin. */
export const INSECURE_IDENTITY: PeerIdentity = { role: 'admin', id: null, credential: { uids: 'any', gids: 'any', squashRoot: false, subtree: null } };

/**
 * Middleware: the route table says which roles may call each path; a path not in it is
 * left to the router (404). With `secure` false (--insecure) every caller passes.
 */
export function requireRoles(secure: boolean, table: Record<string, readonly Role[]>, fallback: readonly Role[] | null = null, revoked?: (serial: string | null) => boolean): MiddlewareHandler {
  return async (c, next) => {
    if (!secure) {
      c.set('identity' as never, INSECURE_IDENTITY as never);
      return next();
    }
    const identity = peerIdentityOf(c);
    if (!identity) throw new DfsError('FORBIDDEN', 'the client certificate names no dfs role');
    if (revoked?.(identity.serial ?? null)) throw new DfsError('FORBIDDEN', `the client certificate (serial ${identity.serial}) is revoked`);
    const allowed = table[c.req.path] ?? fallback;
    if (allowed && !allowed.includes(identity.role)) {
      throw new DfsError('FORBIDDEN', `${c.req.method} ${c.req.path} is not for a ${identity.role} certificate`);
    }
    c.set('identity' as never, identity as never);
    return next();
  };
}

/** The identity requireRoles found for this request. */
export function identityOf(c: Context): PeerIdentity {
  const id = c.get('identity' as never) as PeerIdentity | undefined;
  if (!id) throw new DfsError('FORBIDDEN', 'no identity');
  return id;
}

// ---------------------------------------------------------------------------------------
// clients

/**
 * undici `connect` options: present this process's certificate, trust only the cluster's
 * CA, and accept the server only if its certificate names the expected role (and ID, when
 * the caller knows which node it means) (besides the
 * usual host name check, which the certificates pass: `dfs` puts each process's host in
 * them). TLS sessions are cached by undici per origin, so a reconnect resumes rather than
 * redoing the full handshake.
 */
export function clientConnectOptions(tls: TlsMaterial, expect: readonly Role[], expectId?: string): { ca: Buffer; cert: Buffer; key: Buffer; checkServerIdentity: (host: string, cert: PeerCertificate) => Error | undefined } {
  return {
    ca: tls.ca,
    cert: tls.cert,
    key: tls.key,
    checkServerIdentity: (host, cert) => {
      const err = checkServerIdentity(host, cert);
      if (err) return err;
      const id = identityOfCertificate(cert);
      if (!id || !expect.includes(id.role)) return new Error(`the server at ${host} is not a dfs ${expect.join(' or ')} (its certificate says ${id?.role ?? 'nothing'})`);
      // A URL in the membership answers for one node ID: another node's certificate there
      // (a URL rewritten in Redis) is refused.
      if (expectId !== undefined && id.id !== expectId) return new Error(`the server at ${host} is ${id.role} ${id.id ?? '(no id)'}, not ${expectId}`);
      return undefined;
    },
  };
}

/**
 * Credentials a client-side program (the `dfs` command, the test harness) uses for the
 * URLs it talks to, by origin: several clusters (and CAs) may be known at once.
 */
const clientTlsByOrigin = new Map<string, { tls: TlsMaterial; source: string | null }>();

/** `source`: where the credential's files are (DIR/NAME, as $DFS_CREDENTIAL names them),
 * for a program that passes it on to a `dfs` command it runs. */
export function registerClientTls(urls: string[], tls: TlsMaterial, source: string | null = null): void {
  for (const url of urls) clientTlsByOrigin.set(new URL(url).origin, { tls, source });
}

export function clientTlsFor(url: string): TlsMaterial | undefined {
  return clientTlsByOrigin.get(new URL(url).origin)?.tls;
}

export function clientCredentialSourceFor(url: string): string | null {
  return clientTlsByOrigin.get(new URL(url).origin)?.source ?? null;
}

// ---------------------------------------------------------------------------------------
// Redis

/**
 * ioredis options for the Redis at `url`: `rediss://` is TLS with the cluster's CA and
 * this process's certificate. Plain `redis://` is allowed on loopback (only this machine's
 * users reach it: `dfs local`'s Redis) and under --insecure; anywhere else it is refused at
 * start-up, since everything the cluster agrees on passes through Redis.
 */
export function redisTlsOptions(url: string, tls: TlsMaterial | null): { tls?: { ca: Buffer; cert: Buffer; key: Buffer } } {
  const u = new URL(url);
  if (u.protocol === 'rediss:') {
    // Under --insecure, ioredis's own TLS for rediss:// (the system's CAs, no certificate).
    return tls ? { tls: { ca: tls.ca, cert: tls.cert, key: tls.key } } : {};
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = host === 'localhost' || host === '::1' || /^127\./.test(host);
  if (tls && !loopback) throw new Error(`--redis ${url} is plaintext to a host that is not loopback: use rediss:// (TLS), or --insecure`);
  return {};
}
