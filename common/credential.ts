/*
 * Client identity (docs/security.md, Credentials). A mount does not simply say which user
 * it acts for, as NFS's AUTH_SYS lets it: its certificate, issued by `dfs credential
 * issue`, says which uids and gids it may act as, whether root is squashed, and
 * optionally a subtree it is confined to. The proxy holds every request to that
 * (`actAs`, `confinePath`) before anything is sequenced or read.
 *
 * The claims are URI subject alternative names of the certificate, after `urn:dfs:`:
 *   uid:1000  uid:2000-2999  uid:*     (repeatable: the uids it may act as)
 *   gid:1000  gid:*                    (the gids, primary or supplementary)
 *   squash:root | squash:none          (default root: uid and gid 0 become 65534)
 *   subtree:%2Fhome%2Fann              (percent-encoded: the client's / is this directory)
 * An admin certificate may act as anyone, unsquashed, over the whole tree; node and proxy
 * certificates act for no user (the proxy's identity headers are trusted by the nodes
 * because a proxy sent them: storage/app.ts).
 *
 * The rule is "squash, then check": uid 0 becomes 65534 under root squash, and then the
 * result must be one the credential lists. So a credential for uid 1000 only refuses a
 * request as root outright, and one that also lists 65534 lets the client's root act as
 * nobody, as NFS's root_squash does.
 */
import { DfsError, fsError } from './errors';
import { validatePath } from './paths';

/** uid_t/gid_t ranges, inclusive. */
export type IdSet = 'any' | ReadonlyArray<readonly [number, number]>;

export interface Credential {
  uids: IdSet;
  gids: IdSet;
  /** uid 0 and gid 0 become NOBODY_ID before the check. */
  squashRoot: boolean;
  /** The directory the client's `/` stands for; null: the whole tree. */
  subtree: string | null;
}

/** The anonymous identity of root squash (NFS's default anonuid/anongid). */
export const NOBODY_ID = 65534;
const ID_MAX = 0xffffffff;
/** Supplementary groups one request may name (Linux's NGROUPS_MAX is 65536; a header is
 * bounded well below that). */
export const GROUPS_MAX = 1024;

/** The request headers a caller's identity travels in, mount → proxy → node. */
export const HEADER_UID = 'x-dfs-uid';
export const HEADER_GID = 'x-dfs-gid';
export const HEADER_GROUPS = 'x-dfs-groups';

export const ADMIN_CREDENTIAL: Credential = { uids: 'any', gids: 'any', squashRoot: false, subtree: null };
const NOBODY_CREDENTIAL: Credential = { uids: [], gids: [], squashRoot: true, subtree: null };

function parseIdRange(text: string): readonly [number, number] | 'any' | null {
  if (text === '*') return 'any';
  const m = /^(\d{1,10})(?:-(\d{1,10}))?$/.exec(text);
  if (!m) return null;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo > ID_MAX || hi > ID_MAX || hi < lo) return null;
  return [lo, hi];
}

/** The credential a certificate's claims (without `urn:dfs:`) give a role; null when a
 * claim is malformed (the certificate is then worth nothing). */
export function parseCredential(role: string, claims: string[]): Credential | null {
  if (role === 'admin') return ADMIN_CREDENTIAL;
  if (role !== 'mount') return NOBODY_CREDENTIAL;
  const uids: Array<readonly [number, number]> = [];
  const gids: Array<readonly [number, number]> = [];
  let anyUid = false;
  let anyGid = false;
  let squash: boolean | null = null;
  let subtree: string | null = null;
  for (const claim of claims) {
    const colon = claim.indexOf(':');
    const kind = claim.slice(0, colon);
    const value = claim.slice(colon + 1);
    if (kind === 'uid' || kind === 'gid') {
      const r = parseIdRange(value);
      if (r === null) return null;
      if (r === 'any') kind === 'uid' ? (anyUid = true) : (anyGid = true);
      else (kind === 'uid' ? uids : gids).push(r);
    } else if (kind === 'squash') {
      if (squash !== null || (value !== 'root' && value !== 'none')) return null;
      squash = value === 'root';
    } else if (kind === 'subtree') {
      if (subtree !== null) return null;
      try {
        subtree = validatePath(decodeURIComponent(value), 'subtree');
      } catch {
        return null;
      }
      if (subtree === '/') subtree = null;
    }
  }
  return { uids: anyUid ? 'any' : uids, gids: anyGid ? 'any' : gids, squashRoot: squash ?? true, subtree };
}

/** The claims (without `urn:dfs:`) that say `credential`: the inverse of parseCredential. */
export function credentialClaims(credential: Credential): string[] {
  const ids = (kind: string, set: IdSet) => (set === 'any' ? [`${kind}:*`] : set.map(([lo, hi]) => (lo === hi ? `${kind}:${lo}` : `${kind}:${lo}-${hi}`)));
  return [
    ...ids('uid', credential.uids),
    ...ids('gid', credential.gids),
    `squash:${credential.squashRoot ? 'root' : 'none'}`,
    ...(credential.subtree ? [`subtree:${encodeURIComponent(credential.subtree)}`] : []),
  ];
}

/** Parses `1000,2000-2999` or `*` (the `dfs credential issue` options). */
export function parseIdSet(text: string, what: string): IdSet {
  if (text === '*') return 'any';
  const out: Array<readonly [number, number]> = [];
  for (const part of text.split(',')) {
    const r = parseIdRange(part.trim());
    if (r === null || r === 'any') throw new Error(`${what} wants ids or ranges like 1000,2000-2999, or *; not ${JSON.stringify(text)}`);
    out.push(r);
  }
  return out;
}

export function idAllowed(set: IdSet, id: number): boolean {
  if (set === 'any') return true;
  for (const [lo, hi] of set) if (id >= lo && id <= hi) return true;
  return false;
}

/** Who a request acts as, after root squash and the credential's check. */
export interface CallerIdentity {
  uid: number;
  gid: number;
  groups: number[];
}

function parseId(raw: string | undefined, what: string, dflt: number): number {
  if (raw === undefined || raw === '') return dflt;
  if (!/^\d{1,10}$/.test(raw) || Number(raw) > ID_MAX) throw new DfsError('BAD_REQUEST', `${what} must be a uid or gid (0 to ${ID_MAX})`);
  return Number(raw);
}

/** The lowest id of a set; 0 for any (root, for an admin's tools). */
function firstId(set: IdSet): number {
  return set === 'any' || set.length === 0 ? 0 : Math.min(...set.map(([lo]) => lo));
}

/** The caller's identity from the request headers, as claimed. A request without them
 * (an admin's tools, a mount's background flush) acts as the credential's lowest uid and
 * gid: root for admin and any-uid credentials. */
export function claimedIdentity(header: (name: string) => string | undefined, credential: Credential): CallerIdentity {
  const uid = parseId(header(HEADER_UID), HEADER_UID, firstId(credential.uids));
  const gid = parseId(header(HEADER_GID), HEADER_GID, firstId(credential.gids));
  const rawGroups = header(HEADER_GROUPS);
  const parts = rawGroups === undefined || rawGroups === '' ? [] : rawGroups.split(',');
  if (parts.length > GROUPS_MAX) throw new DfsError('BAD_REQUEST', `${HEADER_GROUPS} names more than ${GROUPS_MAX} groups`);
  // An empty element is a mistake, not root.
  return { uid, gid, groups: parts.map((p) => parseId(p.trim() === '' ? 'x' : p.trim(), HEADER_GROUPS, 0)) };
}

function squashed(credential: Credential, id: number): number {
  return credential.squashRoot && id === 0 ? NOBODY_ID : id;
}

/** A uid the request names (a new file's owner, a chown's): squashed, then checked. */
export function checkUid(credential: Credential, uid: number, what: string): number {
  const id = squashed(credential, uid);
  if (!idAllowed(credential.uids, id)) throw fsError('EPERM', `this credential may not act as uid ${uid}${id !== uid ? ` (squashed to ${id})` : ''} (${what})`);
  return id;
}

export function checkGid(credential: Credential, gid: number, what: string): number {
  const id = squashed(credential, gid);
  if (!idAllowed(credential.gids, id)) throw fsError('EPERM', `this credential may not act as gid ${gid}${id !== gid ? ` (squashed to ${id})` : ''} (${what})`);
  return id;
}

/** The identity a request acts as: root squashed, every id one the credential lists, else
 * EPERM (403). */
export function actAs(credential: Credential, claimed: CallerIdentity): CallerIdentity {
  return {
    uid: checkUid(credential, claimed.uid, 'caller'),
    gid: checkGid(credential, claimed.gid, 'caller'),
    groups: claimed.groups.map((g) => checkGid(credential, g, 'supplementary group')),
  };
}

/** The headers that carry `identity` on to a node. */
export function identityHeaders(identity: CallerIdentity): Record<string, string> {
  return { [HEADER_UID]: String(identity.uid), [HEADER_GID]: String(identity.gid), [HEADER_GROUPS]: identity.groups.join(',') };
}

/** A client's path in the whole tree: under the credential's subtree, the client's `/` is
 * that directory. Paths are validated (no `..`), so nothing leads out of it. */
export function confinePath(credential: Credential, path: string): string {
  if (credential.subtree === null) return path;
  return validatePath(path === '/' ? credential.subtree : credential.subtree + path, 'path');
}
