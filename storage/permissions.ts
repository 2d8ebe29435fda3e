/*
 * POSIX permission checks, as Linux makes them (fs/namei.c, fs/attr.c, fs/xattr.c), for an
 * op or a read on behalf of a caller (common/identity.ts). Pure: the brick hands in the
 * identity of the inodes involved (Meta: owner, group, permission bits) as they stand at
 * the op's sequence ID, so every node reaches the same errno.
 *
 * What is checked: search permission on every directory of a path; write and search on the
 * directory an entry is added to or removed from; the sticky bit (only the owner of the
 * entry or of the directory, or root, removes or renames it: EPERM); moving a directory to
 * another parent needs write permission on it (its `..` changes); chmod and explicit times
 * only by the owner or root (EPERM), `touch` (both times now) also by whoever may write;
 * chown only by root, and a change of group by the owner to a group of theirs; chmod by
 * one outside the file's group clears setgid; new inodes owned by the caller; `trusted.*`
 * attributes only for root (EPERM to change, ENODATA to read); `user.*` ones need write
 * (or read) permission, and on a sticky directory its owner. Root (uid 0) passes every
 * read and write check, and a search check where the inode is a directory or anyone may
 * execute it.
 *
 * What is not: writes to an open file (write, fallocate, truncate of a descriptor) are
 * checked at open by the mount's kernel, and a file's mode may change while it is open, so
 * a write op is checked for write permission only when its caller is not the mount's
 * kernel-checked root (a client that skips the kernel has no open file to hold).
 */
import type { Caller } from '../common/identity';

export const R_OK = 4;
export const W_OK = 2;
export const X_OK = 1;

/** What a check needs of an inode. */
export interface InodeIdentity {
  mode: number; // the permission bits, 0o7777
  uid: number;
  gid: number;
  isDir: boolean;
}

export function inGroup(caller: Caller, gid: number): boolean {
  return caller.gid === gid || caller.groups.includes(gid);
}

/** Whether `caller` may access `inode` for every bit of `want` (R_OK | W_OK | X_OK), as
 * generic_permission decides (no ACLs). */
export function mayAccess(caller: Caller, inode: InodeIdentity, want: number): boolean {
  if (caller.uid === 0) {
    // CAP_DAC_OVERRIDE: read and write always; execute a directory, or a file someone may run.
    return (want & X_OK) === 0 || inode.isDir || (inode.mode & 0o111) !== 0;
  }
  const bits = caller.uid === inode.uid ? (inode.mode >> 6) & 7 : inGroup(caller, inode.gid) ? (inode.mode >> 3) & 7 : inode.mode & 7;
  return (bits & want) === want;
}

export function isOwnerOrRoot(caller: Caller, inode: InodeIdentity): boolean {
  return caller.uid === 0 || caller.uid === inode.uid;
}

/** The sticky rule (check_sticky): in a sticky directory, only the entry's owner, the
 * directory's owner or root may remove or rename the entry. */
export function stickyForbids(caller: Caller, dir: InodeIdentity, entry: InodeIdentity): boolean {
  return (dir.mode & 0o1000) !== 0 && caller.uid !== 0 && caller.uid !== entry.uid && caller.uid !== dir.uid;
}
