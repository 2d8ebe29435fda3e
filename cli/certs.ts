/*
 * The cluster's certificates (docs/security.md): a CA per cluster, and a certificate per
 * process and per credential, each naming its role and, for a mount, what it may act as
 * (common/tls.ts, common/credential.ts).
 *
 * They are made with the `openssl` command (OpenSSL 3, which Debian ships and setup.sh
 * checks for), not a JavaScript library: no new dependency, nothing hand-rolled, and the
 * files are the ordinary PEM any TLS tool reads. Keys are EC P-256 (fast handshakes, small
 * certificates). A directory holds one cluster's: `ca.crt` and `ca.key`, and `NAME.crt`
 * with `NAME.key` for each process or credential; the directory is 0700 and every key
 * 0600, so only the cluster's user can read them.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { randomBytes, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { DfsError } from '../common/errors';
import { credentialClaims, type Credential } from '../common/credential';
import { SAN_PREFIX, type Role, type TlsMaterial } from '../common/tls';

/** How long what `dfs` issues stays valid, by default. */
export const CA_DAYS = 3650;
export const PROCESS_CERT_DAYS = 825;
export const CREDENTIAL_DAYS = 90;
/** `dfs local up` issues a process certificate again when it expires within this long. */
export const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;
/** A certificate name: a file name, also an id in the certificate. */
const NAME = /^[A-Za-z0-9_-]{1,64}$/;

export interface CertFiles {
  ca: string;
  cert: string;
  key: string;
}

export function certFiles(dir: string, name: string): CertFiles {
  return { ca: join(dir, 'ca.crt'), cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

export function readMaterial(files: CertFiles): TlsMaterial {
  return { ca: readFileSync(files.ca), cert: readFileSync(files.cert), key: readFileSync(files.key) };
}

function openssl(args: string[], what: string): void {
  const r = spawnSync('openssl', args, { encoding: 'utf8', timeout: 30_000 });
  if (r.error) throw new DfsError('UNAVAILABLE', `cannot run openssl to ${what}: ${r.error.message} (scripts/setup.sh installs it)`);
  if (r.status !== 0) throw new DfsError('INTERNAL', `openssl failed to ${what}: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
}

function privateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** Makes the CA in `dir` unless there is one. Its name carries a random tag, so that two
 * clusters' CAs are told apart in errors. */
export function ensureCa(dir: string): CertFiles {
  const subject = `dfs cluster CA ${randomBytes(6).toString('hex')}`;
  privateDir(dir);
  const files = { ca: join(dir, 'ca.crt'), cert: join(dir, 'ca.crt'), key: join(dir, 'ca.key') };
  if (existsSync(files.ca) && existsSync(files.key)) return files;
  openssl(
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.key, '-out', files.ca,
      '-subj', `/CN=${subject}`, '-days', String(CA_DAYS),
      '-addext', 'basicConstraints=critical,CA:TRUE,pathlen:0', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'],
    'make the cluster CA',
  );
  chmodSync(files.key, 0o600);
  return files;
}

export interface IssueOptions {
  role: Role;
  /** The id the certificate names (a node's, a proxy's, a mount's); default: the name. */
  id?: string;
  /** A mount's credential (ignored for other roles). */
  credential?: Credential;
  /** Host names and IP addresses a server certificate is valid for. */
  hosts?: string[];
  /** Validity in days; a negative number makes one already expired (tests). */
  days?: number;
}

/**
 * Issues `NAME.crt` and `NAME.key` in `dir`, signed by the CA there. The key never leaves
 * the directory. Serial numbers are random (OpenSSL's default without a serial file).
 */
export function issueCert(dir: string, name: string, o: IssueOptions): CertFiles {
  if (!NAME.test(name) || name === 'ca') throw new DfsError('BAD_REQUEST', `a certificate name is 1 to 64 letters, digits, - or _ (not "ca"), not ${JSON.stringify(name)}`);
  const files = certFiles(dir, name);
  if (!existsSync(files.ca) || !existsSync(join(dir, 'ca.key'))) throw new DfsError('BAD_REQUEST', `no cluster CA in ${dir}`);
  const claims = [`role:${o.role}`, `id:${o.id ?? name}`, ...(o.role === 'mount' && o.credential ? credentialClaims(o.credential) : [])];
  const hosts = [...new Set(['127.0.0.1', 'localhost', ...(o.hosts ?? [])])];
  const san = [...claims.map((c) => `URI:${SAN_PREFIX}${c}`), ...hosts.map((h) => (isIP(h) ? `IP:${h}` : `DNS:${h}`))].join(',');
  const csr = join(dir, `${name}.csr`);
  try {
    openssl(
      ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', files.key, '-out', csr, '-subj', `/CN=${o.role} ${o.id ?? name}`,
        '-addext', `subjectAltName=${san}`, '-addext', 'basicConstraints=critical,CA:FALSE', '-addext', 'keyUsage=critical,digitalSignature',
        '-addext', 'extendedKeyUsage=serverAuth,clientAuth'],
      `make the key of ${name}`,
    );
    chmodSync(files.key, 0o600);
    openssl(['x509', '-req', '-in', csr, '-CA', files.ca, '-CAkey', join(dir, 'ca.key'), '-days', String(o.days ?? PROCESS_CERT_DAYS), '-copy_extensions', 'copyall', '-out', files.cert], `sign the certificate of ${name}`);
  } finally {
    rmSync(csr, { force: true });
  }
  return files;
}

/** Issues `name` unless a certificate of that name, for the same role, stays valid past
 * RENEW_BEFORE_MS and was signed by the CA in `dir`. */
export function ensureCert(dir: string, name: string, o: IssueOptions): CertFiles {
  const files = certFiles(dir, name);
  if (existsSync(files.cert) && existsSync(files.key)) {
    try {
      const cert = new X509Certificate(readFileSync(files.cert));
      const ca = new X509Certificate(readFileSync(files.ca));
      const fresh = Date.parse(cert.validTo) - Date.now() > RENEW_BEFORE_MS;
      const sameRole = (cert.subjectAltName ?? '').includes(`URI:${SAN_PREFIX}role:${o.role}`);
      const hostsCovered = (o.hosts ?? []).every((h) => (cert.subjectAltName ?? '').includes(isIP(h) ? `IP Address:${h}` : `DNS:${h}`));
      if (fresh && sameRole && hostsCovered && cert.verify(ca.publicKey)) return files;
    } catch {
      // Unreadable: issue it again.
    }
  }
  return issueCert(dir, name, o);
}

