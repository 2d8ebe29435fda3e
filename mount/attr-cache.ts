/*
 * The mount's attribute cache: path -> attributes, for `ttlMs` (the --attr-timeout-ms
 * option, default 0: what the cluster answers is not kept), and the results of this
 * mount's own changes for at least `ownTtlMs`.
 *
 * Why own changes are kept even at 0: after every create, chmod, chown or utimens the
 * kernel asks for the attributes again at once (it caches none: below), and the op has
 * just returned them, as of the cluster's order. Asking the cluster again costs a round trip
 * per call (a `tar -x` took 60% longer). The price: for `ownTtlMs` after this mount changed a
 * file, a change another mount makes to the same file may show here only when that time is
 * up or at the next `open`, whichever comes first; what the cluster answered a stat is
 * still never reused.
 *
 * Why in user space and not only in the kernel: the kernel's attribute cache is keyed by its
 * own inodes, and libfuse's path-based API gives each name of a hard link its own kernel
 * inode, so a change through one name leaves the other name's cached link count, mode or
 * owner stale (FUSE-NATIVE.md, Attribute caching and hard links). So the mount's options
 * tell the kernel to cache nothing (attr_timeout=0, entry_timeout=0), the kernel keeps only
 * what an answer resting on a lease allows it (names, and the attributes of directories and
 * of files with one name: mount/fuse-ops.ts, kernelTimes), and the mount answers the
 * kernel's other getattr calls from this cache, which
 * it can invalidate precisely: every change made through this mount drops the changed path,
 * its parent directory, every other name of the same inode and, for a rename or rmdir,
 * everything below. Changes made through other mounts are seen after at most `ttlMs`, and
 * at once by `open`, which always asks the cluster (close-to-open).
 *
 * Entries come from getattr answers, op results and directory listings (which answer the
 * getattr storm of `ls -l`). The cache is bounded (`entriesMax`); the oldest entry goes
 * first. The clock is injected for tests.
 */
import type { Attr, DirEntry } from '../common/api';
import { isWithin, parentOf } from '../common/paths';
import type { LeaseRef } from './leases';

export const ATTR_CACHE_ENTRIES_MAX = 100_000;
/** How long the attributes an op of this mount returned are kept at least (see above). */
export const OWN_CHANGE_TTL_MS = 200;
/** Paths (and inodes) whose last change is remembered, and trees (see changedSince). */
const CHANGE_RECORD_MAX = 4096;
const CHANGE_TREES_MAX = 64;

interface Entry {
  /** null: known not to exist (only ever under a lease). */
  attr: Attr | null;
  expiresAtMs: number;
  /** The cache lease it is held under (mount/leases.ts), if any: while that is valid the
   * entry answers whatever its age. */
  lease: LeaseRef | null;
}

export interface Listing {
  /** name -> attributes, as listed (kept current by this mount's own changes). */
  byName: Map<string, Attr>;
  lease: LeaseRef;
}

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

/** Whether a leased entry may answer for its path: the attributes of a file with other
 * names can change through a name in another directory, whose lease says nothing here. */
function leaseCovers(attr: Attr | null): boolean {
  return attr === null || (attr.mode & S_IFMT) === S_IFDIR || attr.nlink <= 1;
}

export class AttrCache {
  private readonly entries = new Map<string, Entry>();
  /** inode -> the cached paths that name it, so that hard links are dropped together. */
  private readonly pathsByIno = new Map<number, Set<string>>();

  /** Directory -> its listing, held under the lease on it. */
  private readonly listings = new Map<string, Listing>();
  /** Whether a lease still holds (mount/leases.ts); none hold without it. */
  leaseValid: (lease: LeaseRef) => boolean = () => false;

  constructor(
    private readonly ttlMs: number,
    private readonly entriesMax: number = ATTR_CACHE_ENTRIES_MAX,
    private readonly now: () => number = Date.now,
    private readonly ownTtlMs: number = OWN_CHANGE_TTL_MS,
  ) {}

  /** Counts invalidations. An answer fetched while a change to what it describes happened
   * may predate that change, so it is cached only if nothing it covers changed since the
   * generation it was asked at (changedSince). Changes elsewhere do not count: with a single
   * counter for the whole cache, eight loops creating files each in its own directory kept
   * every answer and every op result out of the cache, and each create cost three more
   * round trips than it did alone. */
  private generationCount = 0;
  /** The generation at which each path, inode and tree was last changed through this mount,
   * and before which everything counts as changed (clear, or the record pruned). */
  private readonly changedPaths = new Map<string, number>();
  private readonly changedInos = new Map<number, number>();
  private changedTrees: { dir: string; at: number }[] = [];
  private changedAllAt = 0;

  get generation(): number {
    return this.generationCount;
  }

  /** Whether `path` (with inode `ino`, when known) may have changed through this mount since
   * `generation`: itself, a name of its inode, a tree above it, or everything. */
  changedSince(generation: number, path: string, ino?: number): boolean {
    if (this.changedAllAt > generation) return true;
    if ((this.changedPaths.get(path) ?? -1) > generation) return true;
    if (ino !== undefined && (this.changedInos.get(ino) ?? -1) > generation) return true;
    return this.changedTrees.some((t) => t.at > generation && isWithin(path, t.dir));
  }

  /** A new generation, at which `paths`, `inos` and `trees` change. */
  private recordChange(paths: Iterable<string>, inos: Iterable<number> = [], trees: string[] = []): void {
    const at = ++this.generationCount;
    for (const p of paths) this.changedPaths.set(p, at);
    for (const i of inos) this.changedInos.set(i, at);
    for (const dir of trees) this.changedTrees.push({ dir, at });
    // Bounded: past the limits, forget the details and count everything as changed now
    // (answers in flight are then refused, which is always safe).
    if (this.changedPaths.size > CHANGE_RECORD_MAX || this.changedInos.size > CHANGE_RECORD_MAX || this.changedTrees.length > CHANGE_TREES_MAX) {
      this.changedPaths.clear();
      this.changedInos.clear();
      this.changedTrees = [];
      this.changedAllAt = at;
    }
  }

  /** Caches an attribute fetched when the generation was `generation`, unless it may have
   * changed since. */
  setIfUnchanged(path: string, attr: Attr, generation: number): void {
    if (!this.changedSince(generation, path, attr.ino)) this.set(path, attr);
  }

  get size(): number {
    return this.entries.size;
  }

  /** The attributes of `path`, if cached and still good. */
  get(path: string): Attr | undefined {
    return this.lookup(path) ?? undefined;
  }

  /** The attributes of `path`; null when it is known not to exist; undefined when nothing
   * usable is cached. */
  lookup(path: string): Attr | null | undefined {
    const e = this.entries.get(path);
    if (e) {
      if (e.lease && this.leaseValid(e.lease) && leaseCovers(e.attr)) return e.attr;
      if (e.expiresAtMs > this.now() && e.attr) return e.attr;
      if (!(e.lease && this.leaseValid(e.lease))) this.delete(path);
    }
    // A name missing from a directory's leased listing does not exist.
    if (path !== '/') {
      const dir = this.listing(parentOf(path));
      if (dir && !dir.byName.has(path.slice(path.lastIndexOf('/') + 1))) return null;
    }
    return undefined;
  }

  /** The lease an answer for `path` rests on: the lease of its cached attributes (when
   * they answer), or of its absence (a negative entry, or its directory's listing without
   * it); null when the answer rests on none. */
  leaseBehind(path: string): LeaseRef | null {
    const e = this.entries.get(path);
    if (e?.lease && this.leaseValid(e.lease) && leaseCovers(e.attr)) return e.lease;
    if (e?.attr) return null;
    if (path === '/') return null;
    const dir = this.listing(parentOf(path));
    return dir && !dir.byName.has(path.slice(path.lastIndexOf('/') + 1)) ? dir.lease : null;
  }

  /** Only what a lease vouches for (what open may use instead of asking: close-to-open). */
  getLeased(path: string): Attr | undefined {
    const e = this.entries.get(path);
    return e?.lease && e.attr && this.leaseValid(e.lease) && leaseCovers(e.attr) ? e.attr : undefined;
  }

  set(path: string, attr: Attr): void {
    this.put(path, attr, this.ttlMs, null);
  }

  /** Caches the attributes an op of this mount returned (see the header), under `lease`
   * when the mount held it from before it sent the op. */
  setOwn(path: string, attr: Attr, lease: LeaseRef | null = null): void {
    this.put(path, attr, Math.max(this.ttlMs, this.ownTtlMs), lease && this.leaseValid(lease) ? lease : null);
  }

  /** Caches an answer fetched under a lease (attr null: no such entry), unless something
   * was invalidated since `generation`. */
  setLeased(path: string, attr: Attr | null, lease: LeaseRef | null, generation: number): void {
    if (this.changedSince(generation, path, attr?.ino)) return;
    if (attr === null) {
      if (lease && this.leaseValid(lease)) this.put(path, null, 0, lease);
      else this.delete(path);
      return;
    }
    this.put(path, attr, this.ttlMs, lease && this.leaseValid(lease) ? lease : null);
  }

  /** The leased listing of `dir`, if it holds. */
  listing(dir: string): Listing | undefined {
    const l = this.listings.get(dir);
    if (l && !this.leaseValid(l.lease)) {
      this.listings.delete(dir);
      return undefined;
    }
    return l;
  }

  /** Caches a directory's listing fetched under `lease`, and its entries' attributes. */
  setListing(dir: string, entries: DirEntry[], lease: LeaseRef | null, generation: number, childPath: (name: string) => string): void {
    // A change to an entry also changes its directory (invalidate); one through another
    // name of an entry's inode does not, hence the inodes.
    if (this.changedSince(generation, dir) || entries.some((e) => this.changedSince(generation, childPath(e.name), e.attr.ino))) return;
    const held = lease && this.leaseValid(lease) ? lease : null;
    for (const e of entries) this.put(childPath(e.name), e.attr, this.ttlMs, held);
    if (held) this.listings.set(dir, { byName: new Map(entries.map((e) => [e.name, e.attr])), lease: held });
  }

  /** Puts back a listing that this mount's own op changed by one name (`attr` null: the
   * name is gone), while its lease holds. */
  keepListing(dir: string, listing: Listing, name: string, attr: Attr | null): void {
    if (!this.leaseValid(listing.lease)) return;
    if (attr) listing.byName.set(name, attr);
    else listing.byName.delete(name);
    this.listings.set(dir, listing);
  }

  /** Drops the listings of `keys` (their leases were revoked or lost; the entries cached
   * under them die with the lease). */
  dropKeys(keys: string[]): void {
    for (const k of keys) this.listings.delete(k);
  }

  private put(path: string, attr: Attr | null, ttlMs: number, lease: LeaseRef | null): void {
    // A newer answer replaces what was kept, even when it is not to be kept itself.
    this.delete(path); // (and re-inserting keeps Map order oldest-first)
    if (ttlMs <= 0 && !lease) return;
    this.entries.set(path, { attr, expiresAtMs: this.now() + ttlMs, lease });
    if (attr) {
      let names = this.pathsByIno.get(attr.ino);
      if (!names) this.pathsByIno.set(attr.ino, (names = new Set()));
      names.add(path);
    }
    while (this.entries.size > this.entriesMax) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
  }

  private delete(path: string): void {
    const e = this.entries.get(path);
    if (!e) return;
    this.entries.delete(path);
    if (!e.attr) return;
    const names = this.pathsByIno.get(e.attr.ino);
    if (names) {
      names.delete(path);
      if (names.size === 0) this.pathsByIno.delete(e.attr.ino);
    }
  }

  /** Drops `path`, its parent (whose mtime, size or link count the change affects) and
   * every cached name of the same inode. */
  invalidate(path: string): void {
    const e = this.entries.get(path);
    this.recordChange([path, parentOf(path), ...(e?.attr ? (this.pathsByIno.get(e.attr.ino) ?? []) : [])], e?.attr ? [e.attr.ino] : []);
    this.delete(path);
    this.delete(parentOf(path));
    this.listings.delete(parentOf(path));
    this.listings.delete(path);
    if (e?.attr) this.invalidateIno(e.attr.ino);
  }

  /** Drops what a change to the content of the file `path` (a write) makes stale: its
   * attributes under every cached name of its inode, and its directory's listing, which
   * holds them; not the directory's own attributes, which such a change leaves alone. */
  invalidateFile(path: string): void {
    const e = this.entries.get(path);
    this.recordChange([path, ...(e?.attr ? (this.pathsByIno.get(e.attr.ino) ?? []) : [])], e?.attr ? [e.attr.ino] : []);
    this.delete(path);
    this.listings.delete(parentOf(path));
    if (e?.attr) this.invalidateIno(e.attr.ino);
  }

  /** Drops only `path` (a change to it is about to be sent; its directory's listing stays,
   * for the op's result to update). */
  forget(path: string): void {
    this.recordChange([path]);
    this.delete(path);
  }

  /** Drops every name of inode `ino` (hard links share it). */
  invalidateIno(ino: number): void {
    const names = this.pathsByIno.get(ino);
    this.recordChange(names ?? [], [ino]);
    if (names) for (const p of [...names]) this.delete(p);
  }

  /** Drops `dir` and everything below it, and its parent. */
  invalidateTree(dir: string): void {
    this.invalidate(dir);
    this.recordChange([], [], [dir]);
    for (const p of [...this.entries.keys()]) if (isWithin(p, dir)) this.delete(p);
    for (const p of [...this.listings.keys()]) if (isWithin(p, dir)) this.listings.delete(p);
  }

  clear(): void {
    this.changedAllAt = ++this.generationCount;
    this.changedPaths.clear();
    this.changedInos.clear();
    this.changedTrees = [];
    this.entries.clear();
    this.pathsByIno.clear();
    this.listings.clear();
  }
}
