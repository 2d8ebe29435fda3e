/*
 * Sealed memberships (issue 13 item 5; docs/security.md, "Redis"). Redis is shared: every
 * proxy holds a Redis login that may write `dfs:membership`, since any proxy may become the
 * leader. So the Redis password alone must not be enough to name a primary, an in-sync set
 * or a node URL. The leader signs every membership it publishes with its proxy
 * certificate's key (the `seal`: that certificate and an ECDSA signature over the record),
 * and nodes and proxies act only on a membership whose seal checks out: the certificate
 * was issued by the cluster's CA, is valid now, names the role `proxy`, and its key signed
 * exactly these fields. A membership rewritten in Redis by anyone without a proxy's key
 * is refused with a logged reason and the holder keeps the one it has; the leader then
 * publishes a sealed one again (proxy/leader.ts). Likewise a request to remove a node
 * (`dfs:removing`) is acted on only when sealed by an admin certificate (`dfs node remove`).
 *
 * The signed bytes are a canonical encoding of the fields (canonicalMembership), not the
 * text in Redis, so that key order and the seal itself do not matter. Node's crypto does
 * the signing and checking; nothing is hand-rolled.
 */
import { sign, verify, X509Certificate } from 'node:crypto';
import type { MembershipRecord, Removal } from './registry';
import { identityOfNames, uriNamesOf, type Role, type TlsMaterial } from './tls';

/** The fields a seal covers, in a fixed order; maps sorted by node ID. */
export function canonicalMembership(m: MembershipRecord): Buffer {
  const sorted = (record: Record<string, string> | undefined) => (record ? Object.entries(record).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)) : null);
  return Buffer.from(JSON.stringify(['dfs-membership-v1', m.epoch, m.primary, m.inSync, sorted(m.nodes), sorted(m.incarnations)]));
}

/** A seal: the signer's certificate (PEM) and its signature (base64) over the record. */
export interface Seal {
  cert: string;
  sig: string;
}

function sealOf(bytes: Buffer, tls: TlsMaterial): Seal {
  return { cert: tls.cert.toString('utf8'), sig: sign('sha256', bytes, tls.key).toString('base64') };
}

/** The membership with the seal of this process's certificate and key. */
export function sealMembership(m: MembershipRecord, tls: TlsMaterial): MembershipRecord {
  const { seal: _old, ...fields } = m;
  return { ...fields, seal: sealOf(canonicalMembership(fields), tls) };
}

/** The fields of a removal request a seal covers: the node and when it was asked. */
export function canonicalRemoval(id: string, r: Removal): Buffer {
  return Buffer.from(JSON.stringify(['dfs-removal-v1', id, r.requestedAtMs]));
}

/** A removal request sealed by the `dfs` command's admin certificate (`dfs node remove`):
 * the proxy's Redis login may write `dfs:removing`, so the leader drains no node on a
 * request without an admin's seal. */
export function sealRemoval(id: string, r: Removal, tls: TlsMaterial): Removal {
  return { ...r, seal: sealOf(canonicalRemoval(id, r), tls) };
}

/** Checks certificates once: the CA's parsed certificate and the seals' certificates seen. */
export class SealChecker {
  private readonly ca: X509Certificate;
  private readonly checkedCerts = new Map<string, { cert: X509Certificate; role: Role | null }>();

  constructor(caPem: Buffer) {
    this.ca = new X509Certificate(caPem);
  }

  /** Why `m` may not be acted on (it must be sealed by a proxy); null when its seal is good. */
  refusal(m: MembershipRecord, nowMs = Date.now()): string | null {
    if (!m.seal) return 'it carries no seal (it was not published by a proxy of this cluster)';
    return this.check(canonicalMembership(m), m.seal, 'proxy', nowMs);
  }

  /** Why a removal request may not be acted on (it must be sealed by admin); null when good. */
  removalRefusal(id: string, r: Removal, nowMs = Date.now()): string | null {
    if (!r.seal) return 'it carries no seal (`dfs node remove` seals it with the admin certificate)';
    return this.check(canonicalRemoval(id, r), r.seal, 'admin', nowMs);
  }

  private check(bytes: Buffer, seal: Seal, role: Role, nowMs: number): string | null {
    let entry = this.checkedCerts.get(seal.cert);
    if (entry === undefined) {
      let cert: X509Certificate;
      try {
        cert = new X509Certificate(seal.cert);
      } catch {
        return 'its seal\'s certificate does not parse';
      }
      if (!cert.checkIssued(this.ca) || !cert.verify(this.ca.publicKey)) return 'its seal\'s certificate was not issued by this cluster\'s CA';
      entry = { cert, role: identityOfNames(uriNamesOf(cert.subjectAltName))?.role ?? null };
      if (this.checkedCerts.size >= SEAL_CERTS_MAX) this.checkedCerts.clear();
      this.checkedCerts.set(seal.cert, entry);
    }
    if (entry.role !== role) return `its seal's certificate names ${entry.role ? `the role ${entry.role}` : 'no role'}, not ${role}`;
    const { cert } = entry;
    if (nowMs < Date.parse(cert.validFrom) || nowMs > Date.parse(cert.validTo)) return 'its seal\'s certificate is not valid now';
    let good = false;
    try {
      good = verify('sha256', bytes, cert.publicKey, Buffer.from(seal.sig, 'base64'));
    } catch {
      good = false;
    }
    return good ? null : 'its seal does not match its fields';
  }
}

/** Proxy certificates a checker remembers (a cluster has a few; rotation adds more). */
const SEAL_CERTS_MAX = 64;
