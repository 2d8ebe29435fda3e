/*
 * Names a rename replaced, as libfuse (with the dfs patch, item 12) still hands them over.
 *
 * A process that looks a name up just before another renames a file over it goes on with
 * the node of the replaced file: its open or stat reaches libfuse on that node after the
 * rename. libfuse 2 would have dropped the node's name and failed the call with ENOENT,
 * though the name never went missing (on a local disk the call succeeds). With the patch,
 * when the mount's rename answers that the replaced entry may keep its node (it was not a
 * directory, and what replaced it has the same type), libfuse renames the node, in its own
 * table only, to an alias in the same directory: ALIAS_PREFIX and the node's id, padded
 * with '~' to ALIAS_MARKER_BYTES, then the name. The kernel never sends a FUSE file system
 * a name that long (FUSE_NAME_MAX is 1024 bytes), so no name anybody makes passes for an
 * alias.
 *
 * A path ending in an alias is served as the path of the name, which holds the file that
 * replaced it: the call acts as if it came after the rename it overlapped. The node's id
 * tells calls on the same node apart: once one opened a file through the alias, the others
 * on that node reach the file it opened (the mount's handle, which follows the file into an
 * orphan when a later rename or unlink takes the name: mount/orphans.ts), not whatever the
 * name holds by then.
 */

/** What the patch writes first in an alias (fuse-native.c: FUSE_NATIVE_ALIAS_PREFIX); the
 * node's id follows, in 16 hex digits. */
export const ALIAS_PREFIX = '.dfs-replaced.';
/** How many bytes of an alias come before the name (FUSE_NATIVE_ALIAS_MARKER). */
export const ALIAS_MARKER_BYTES = 1040;
/** The longest name the kernel sends a FUSE file system (the kernel's fs/fuse). */
const FUSE_NAME_MAX = 1024;

export interface ReplacedAlias {
  /** The alias without the name: which node the call is on. */
  key: string;
  /** The path of the name it stands for. */
  path: string;
}

/** The alias that `path` (one char per byte, as fuse-native gives it) ends in, or null.
 * Only the last component can be one: libfuse aliases nothing that has children. */
export function parseReplacedAlias(path: string): ReplacedAlias | null {
  const slash = path.lastIndexOf('/');
  const last = path.slice(slash + 1);
  if (last.length <= FUSE_NAME_MAX || !last.startsWith(ALIAS_PREFIX)) return null;
  return { key: last.slice(0, ALIAS_MARKER_BYTES), path: path.slice(0, slash + 1) + last.slice(ALIAS_MARKER_BYTES) };
}
