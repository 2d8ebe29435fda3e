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
 * Why in user space and not in the kernel: the kernel's attribute cache is keyed by its own
 * inodes, and libfuse's path-based API gives each name of a hard link its own kernel inode,
 * so a change through one name leaves the other name's cached link count, mode or owner
 * stale (FUSE-NATIVE.md, Attribute caching and hard links) and libfuse 2 has no call to
 * invalidate it. So the mount tells the kernel to cache nothing (attr_timeout=0,
 * entry_timeout=0) and answers the kernel's frequent getattr calls from this cache, which
 * it can invalidate precisely: every change made through this mount drops the changed path,
 * its parent directory, every other name of the same inode and, for a rename or rmdir,
 * everything below. Changes made through other mounts are seen after at most `ttlMs`, and
 * at once by `open`, which always asks the cluster (close-to-open).
 *
 * Entries come from getattr answers, op results and directory listings (which answer the
 * getattr storm of `ls -l`). The cache is bounded (`entriesMax`); the oldest entry goes
 * first. The clock is injected for tests.
 */
import type { Attr } from '../common/api';
import { isWithin, parentOf } from '../common/paths';

export const ATTR_CACHE_ENTRIES_MAX = 100_000;
/** How long the attributes an op of this mount returned are kept at least (see above). */
export const OWN_CHANGE_TTL_MS = 200;

interface Entry {
  attr: Attr;
  expiresAtMs: number;
}

export class AttrCache {
  private readonly entries = new Map<string, Entry>();
  /** inode -> the cached paths that name it, so that hard links are dropped together. */
  private readonly pathsByIno = new Map<number, Set<string>>();

  constructor(
    private readonly ttlMs: number,
    private readonly entriesMax: number = ATTR_CACHE_ENTRIES_MAX,
    private readonly now: () => number = Date.now,
    private readonly ownTtlMs: number = OWN_CHANGE_TTL_MS,
  ) {}

  /** Counts invalidations. An answer fetched while some change happened may predate the
   * change, so `setIfUnchanged` caches it only when the generation did not move. */
  private generationCount = 0;

  get generation(): number {
    return this.generationCount;
  }

  /** Caches an attribute fetched when the generation was `generation`, unless something
   * was invalidated since. */
  setIfUnchanged(path: string, attr: Attr, generation: number): void {
    if (generation === this.generationCount) this.set(path, attr);
  }

  get size(): number {
    return this.entries.size;
  }

  get(path: string): Attr | undefined {
    const e = this.entries.get(path);
    if (!e) return undefined;
    if (e.expiresAtMs <= this.now()) {
      this.delete(path);
      return undefined;
    }
    return e.attr;
  }

  set(path: string, attr: Attr): void {
    this.put(path, attr, this.ttlMs);
  }

  /** Caches the attributes an op of this mount returned (see the header). */
  setOwn(path: string, attr: Attr): void {
    this.put(path, attr, Math.max(this.ttlMs, this.ownTtlMs));
  }

  private put(path: string, attr: Attr, ttlMs: number): void {
    // A newer answer replaces what was kept, even when it is not to be kept itself.
    this.delete(path); // (and re-inserting keeps Map order oldest-first)
    if (ttlMs <= 0) return;
    this.entries.set(path, { attr, expiresAtMs: this.now() + ttlMs });
    let names = this.pathsByIno.get(attr.ino);
    if (!names) this.pathsByIno.set(attr.ino, (names = new Set()));
    names.add(path);
    while (this.entries.size > this.entriesMax) {
      const oldest = this.entries.keys().next().value as string;
      this.delete(oldest);
    }
  }

  private delete(path: string): void {
    const e = this.entries.get(path);
    if (!e) return;
    this.entries.delete(path);
    const names = this.pathsByIno.get(e.attr.ino);
    if (names) {
      names.delete(path);
      if (names.size === 0) this.pathsByIno.delete(e.attr.ino);
    }
  }

  /** Drops `path`, its parent (whose mtime, size or link count the change affects) and
   * every cached name of the same inode. */
  invalidate(path: string): void {
    this.generationCount++;
    const e = this.entries.get(path);
    this.delete(path);
    this.delete(parentOf(path));
    if (e) this.invalidateIno(e.attr.ino);
  }

  /** Drops every name of inode `ino` (hard links share it). */
  invalidateIno(ino: number): void {
    this.generationCount++;
    const names = this.pathsByIno.get(ino);
    if (names) for (const p of [...names]) this.delete(p);
  }

  /** Drops `dir` and everything below it, and its parent. */
  invalidateTree(dir: string): void {
    this.invalidate(dir);
    for (const p of [...this.entries.keys()]) if (isWithin(p, dir)) this.delete(p);
  }

  clear(): void {
    this.generationCount++;
    this.entries.clear();
    this.pathsByIno.clear();
  }
}
