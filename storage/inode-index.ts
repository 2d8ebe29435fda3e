/*
 * Where an inode is on a brick now: ops and reads on an open file address it by its
 * cluster-wide inode number (the `ino` of `user.dfs.meta`, storage/brick.ts), not by the
 * path it was opened at, so a rename of the file or of a directory above it, through any
 * mount, changes nothing for its open descriptors (issue 15; NFS file handles, GlusterFS
 * GFIDs and CephFS inodes do the same).
 *
 * The brick stays laid out by path (DESIGN.md, The brick). Beside it each node keeps, in
 * memory only, a bounded map from inode number to the path it was last seen at, and every
 * answer is checked against the brick before it is used: the place found is one whose
 * `user.dfs.meta` holds that inode number now. So the map is only ever a hint, and the
 * outcome of an op placed by inode depends on the brick alone, the same on every node (the
 * op log replays it, full sync and a restart need no rebuild: a node that starts empty
 * finds inodes the slow way once). An inode is looked for, in order:
 *   1. at the path the op or read carries (where the mount last knew the file: right
 *      unless something was renamed, and the name it holds open for a file with several);
 *   2. where the map last saw it (kept up to date at apply: a rename moves every entry at or
 *      below its source, a create records the new inode);
 *   3. by a walk of the whole brick, depth first (the rare case: renamed before the node
 *      had it in its map, or a name the map lost to its bound);
 * and when the walk does not find it, the inode has no name left, and the number is
 * remembered as gone (inode numbers are never reused, and a nameless inode never gets a
 * name again), so a descriptor of a file another mount deleted costs one walk, not one a
 * call. The brick then goes by the path, as before inodes travelled (Brick.placeOf): a file
 * unlinked through another mount is gone for this mount's descriptors, as with NFS. A file
 * unlinked while open through the same mount keeps a name in the orphan directory
 * (mount/orphans.ts), so it is found as any other.
 *
 * With hard links, any name of the inode serves: every name reaches the same inode, so the
 * op's effect is the same whichever one a node finds first.
 *
 * The module does no I/O: the brick hands it `inoAt` and `entriesOf`, synchronous, so a walk
 * sees one state of the brick (apply runs one op at a time and never awaits).
 */
import { isWithin } from '../common/paths';

/** Inodes whose last place is remembered; past it the least recently used are dropped. */
export const INODE_PLACES_MAX = 16_384;
/** Inode numbers remembered as having no name left. */
export const INODES_GONE_MAX = 4_096;

export interface BrickLookup {
  /** The inode number at a cluster path, or null when nothing is there. */
  inoAt(path: string): number | null;
  /** The entries of a directory: names (wire strings) and whether each is a directory. */
  entriesOf(dir: string): Array<{ name: string; isDir: boolean }>;
}

function childOf(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

export class InodeIndex {
  /** ino → path, least recently used first (a Map keeps insertion order). */
  private readonly places = new Map<number, string>();
  private readonly gone = new Set<number>();
  /** Walks of the whole brick made so far (a figure for tests and metrics). */
  walkCount = 0;

  constructor(private readonly brick: BrickLookup) {}

  /** Where `ino` is now, trying `hint` first; null when it has no name. */
  resolve(ino: number, hint: string | null): string | null {
    if (hint !== null && this.brick.inoAt(hint) === ino) {
      this.remember(ino, hint);
      return hint;
    }
    const known = this.places.get(ino);
    if (known !== undefined && this.brick.inoAt(known) === ino) {
      this.remember(ino, known);
      return known;
    }
    if (this.gone.has(ino)) return null;
    const found = this.walk(ino);
    if (found === null) {
      if (this.gone.size >= INODES_GONE_MAX) this.gone.delete(this.gone.values().next().value!);
      this.gone.add(ino);
      this.places.delete(ino);
      return null;
    }
    this.remember(ino, found);
    return found;
  }

  /** A new inode at `path` (create, mkdir, mknod, symlink). */
  created(ino: number, path: string): void {
    this.remember(ino, path);
  }

  /** `from` was renamed to `to`: every remembered place at or below `from` moves. */
  renamed(from: string, to: string): void {
    for (const [ino, path] of this.places) {
      if (path === from) this.places.set(ino, to);
      else if (from !== '/' && isWithin(path, from)) this.places.set(ino, to + path.slice(from.length));
    }
  }

  /** The brick was replaced (full sync): what was remembered of it may not hold. The gone
   * set stays true (a copied brick is at a later state). */
  reset(): void {
    this.places.clear();
  }

  private remember(ino: number, path: string): void {
    this.places.delete(ino);
    if (this.places.size >= INODE_PLACES_MAX) this.places.delete(this.places.keys().next().value!);
    this.places.set(ino, path);
  }

  /** The first path holding `ino`, depth first with a stack (a tree may be thousands deep). */
  private walk(ino: number): string | null {
    this.walkCount++;
    const stack = ['/'];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      for (const { name, isDir } of this.brick.entriesOf(dir)) {
        const p = childOf(dir, name);
        if (this.brick.inoAt(p) === ino) return p;
        if (isDir) stack.push(p);
      }
    }
    return null;
  }
}
