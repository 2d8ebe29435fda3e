/*
 * Who a request acts as (issue 13, item 3): a uid, a primary gid and supplementary groups,
 * as a local process has. A mutation carries it in its op header (`caller`, common/ops.ts)
 * and so in the log, so that every node checks the op's permissions against the same
 * brick and reaches the same errno; a read carries it in request headers, which the proxy
 * forwards to the node that serves it. Who may claim which identity is the credential's
 * business (item 2: the proxy checks the claim against the mount's credential).
 */
import { z } from 'zod';
import { DfsError } from './errors';

/** A supplementary group list is at most this long (Linux's NGROUPS_MAX is 65536; a
 * process rarely has more than a few dozen, and a header must stay small). */
export const CALLER_GROUPS_MAX = 256;
/** The identity of a read that names none: nobody (NFS's anonymous uid). */
export const NOBODY_UID = 65534;
export const NOBODY: Caller = { uid: NOBODY_UID, gid: NOBODY_UID, groups: [] };
/** Root, as the mount's own reads act (it is a trusted host: the kernel of its machine
 * checked the caller's permissions before the call reached it, default_permissions). */
export const ROOT_CALLER: Caller = { uid: 0, gid: 0, groups: [] };

export const HEADER_UID = 'x-dfs-uid';
export const HEADER_GID = 'x-dfs-gid';
export const HEADER_GROUPS = 'x-dfs-groups';

const id = z.number().int().min(0).max(0xfffffffe);
export const CallerSchema = z.object({ uid: id, gid: id, groups: z.array(id).max(CALLER_GROUPS_MAX) });
export type Caller = z.infer<typeof CallerSchema>;

function idOf(raw: string, name: string): number {
  if (!/^\d{1,10}$/.test(raw)) throw new DfsError('BAD_REQUEST', `${name} must be a number`);
  const n = Number(raw);
  if (n > 0xfffffffe) throw new DfsError('BAD_REQUEST', `${name} is out of range`);
  return n;
}

/** The identity a read's headers name; NOBODY without `x-dfs-uid`. */
export function callerFromHeaders(header: (name: string) => string | undefined): Caller {
  const uid = header(HEADER_UID);
  if (uid === undefined) return NOBODY;
  const gid = header(HEADER_GID);
  const groups = header(HEADER_GROUPS);
  const list = groups === undefined || groups === '' ? [] : groups.split(',');
  if (list.length > CALLER_GROUPS_MAX) throw new DfsError('BAD_REQUEST', `${HEADER_GROUPS} lists more than ${CALLER_GROUPS_MAX} groups`);
  return { uid: idOf(uid, HEADER_UID), gid: gid === undefined ? NOBODY_UID : idOf(gid, HEADER_GID), groups: list.map((g) => idOf(g, HEADER_GROUPS)) };
}

/** The headers that carry `caller`. */
export function callerHeaders(caller: Caller): Record<string, string> {
  return { [HEADER_UID]: String(caller.uid), [HEADER_GID]: String(caller.gid), [HEADER_GROUPS]: caller.groups.join(',') };
}
