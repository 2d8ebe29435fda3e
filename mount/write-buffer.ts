/*
 * The write buffer of one open file handle: a bounded map of dirty extents, sent to the
 * cluster in few large ops.
 *
 * Data flow. `write(offset, data)` copies the bytes (fuse-native detaches the kernel's
 * buffer after the callback) into the dirty-extent map: a sorted list of non-overlapping,
 * non-touching extents, where a write merges with every extent it overlaps or touches and
 * its bytes win over the older ones. A sequential writer's bytes are copied once, from the
 * caller's buffer straight into the buffer of the chunk that leaves (see `write`). Bytes
 * leave the map packed into ops, which join a queue (FIFO) and start from there as slots
 * free up. They leave it when:
 * - an extent reaches `chunkBytesMax`: its full chunks are queued at once, one op each,
 *   and the write waits until they have started. This is the sequential path (cp, dd):
 *   the kernel's 128 KiB writes grow one extent, and every full chunk leaves while the
 *   next fills, several in flight;
 * - `flush()` (flush, fsync, close): everything dirty is packed, in offset order, into ops
 *   of up to `chunkBytesMax` bytes and `extentsPerOpMax` extents (a `write` op with
 *   `extents`, common/ops.ts), and flush waits until every op is committed, so flush,
 *   fsync and close return only once the cluster has the data (close-to-open, DESIGN.md);
 * - the map holds more than `dirtyBytesMax` bytes, or the mount's dirty bytes pass its
 *   shared DirtyBudget: the whole map is packed and queued, and the write goes on without
 *   waiting for it, so that a random writer does not stall while megabytes replicate;
 *   only when the previous such batch has not all started yet does the write wait for it
 *   (back-pressure: a handle holds at most about twice `dirtyBytesMax`, plus what is in
 *   flight);
 * - no write for `idleSendMs`, or the oldest dirty byte is `dirtyAgeMsMax` old: the map
 *   is queued in the background, so data an application leaves in a file it keeps open
 *   (a log, a database) reaches the cluster soon, as a kernel's writeback would.
 * So random small writes (a database, fio randwrite) become one op per megabyte of dirty
 * data instead of one replicated op per write.
 *
 * Ordering. Up to `inflightMax` ops are in flight together, started in queue order; the
 * op at the head waits while it overlaps one in flight (any of their extents), so two
 * versions of the same bytes can never commit in the wrong order, and ops that do not
 * overlap commute. Within the map there is one version of each byte, so ops packed from it
 * never overlap each other.
 *
 * Until it is committed a byte stays visible to `dirtyEnd` and `overlaps`, whether it is
 * in the map, queued or in flight.
 *
 * Errors. The application was told its write succeeded before the op was sent, so an op
 * that fails later is remembered (sticky) and reported by every later write, flush and
 * close of this handle; its data is never dropped silently.
 *
 * Appends (an O_APPEND descriptor, `mode` 'append'). The cluster places each append at
 * the end of the file as it stands when the op is applied (common/ops.ts), so the offsets
 * the kernel passes are ignored: the buffer numbers appended bytes in a stream of its own,
 * where they coalesce as a sequential writer's do, and sends them as appends one op at a
 * time, in order, so that a descriptor's appends land in the order they were made and a
 * buffered append is never turned into a write at an offset. Until committed, an append
 * overlaps any range (it may land anywhere past the end) and gives no `dirtyEnd`.
 *
 * Operations on one buffer run one at a time in arrival order (a promise chain), so that
 * concurrent writes from several threads of an application cannot interleave halfway. The module does no I/O itself: the
 * sender is injected, which keeps it unit-testable.
 */
import { WRITE_BYTES_MAX, WRITE_EXTENTS_MAX } from '../common/limits';

/** [offset, length] of one range of a write op. */
export type Extent = [offset: number, size: number];

/** Sends one write op: `data` at `offset`, or, with `extents` (sorted, not overlapping,
 * the first at `offset`), the extents' bytes concatenated in `data`. */
export type ChunkSender = (offset: number, data: Buffer, extents?: Extent[]) => Promise<void>;

export interface WriteBufferLimits {
  /** The most data one write op carries (≤ WRITE_BYTES_MAX). */
  chunkBytesMax: number;
  /** Ops in flight at once per handle. */
  inflightMax: number;
  /** Dirty bytes are sent after this long without a write; 0 never. */
  idleSendMs?: number;
  /** Dirty bytes are sent once the oldest is this old, even while writes keep coming; 0
   * never. */
  dirtyAgeMsMax?: number;
  /** Dirty bytes one handle holds before it sends them without waiting for flush. */
  dirtyBytesMax?: number;
  /** Extents packed in one op (≤ WRITE_EXTENTS_MAX). */
  extentsPerOpMax?: number;
}

export const WRITE_BUFFER_DEFAULTS: WriteBufferLimits = {
  chunkBytesMax: 1024 * 1024,
  inflightMax: 4,
  idleSendMs: 1_000,
  dirtyAgeMsMax: 5_000,
  dirtyBytesMax: 32 * 1024 * 1024,
  extentsPerOpMax: WRITE_EXTENTS_MAX,
};

/** The limits with every one left out filled in (the timers off, the bounds at their
 * defaults), checked; throws on invalid ones. The mount calls it once at start-up. */
export function resolveWriteBufferLimits(limits: WriteBufferLimits): Required<WriteBufferLimits> {
  const l: Required<WriteBufferLimits> = {
    chunkBytesMax: limits.chunkBytesMax,
    inflightMax: limits.inflightMax,
    idleSendMs: limits.idleSendMs ?? 0,
    dirtyAgeMsMax: limits.dirtyAgeMsMax ?? 0,
    dirtyBytesMax: limits.dirtyBytesMax ?? WRITE_BUFFER_DEFAULTS.dirtyBytesMax!,
    extentsPerOpMax: limits.extentsPerOpMax ?? WRITE_EXTENTS_MAX,
  };
  const intIn = (v: number, min: number, max: number): boolean => Number.isSafeInteger(v) && v >= min && v <= max;
  const valid =
    intIn(l.chunkBytesMax, 1, WRITE_BYTES_MAX) &&
    intIn(l.inflightMax, 1, Number.MAX_SAFE_INTEGER) &&
    intIn(l.extentsPerOpMax, 1, WRITE_EXTENTS_MAX) &&
    l.idleSendMs >= 0 &&
    l.dirtyAgeMsMax >= 0 &&
    l.dirtyBytesMax > 0;
  if (!valid) throw new Error(`invalid write buffer limits: ${JSON.stringify(limits)}`);
  return l;
}

/**
 * The dirty bytes all handles of a mount may hold together, shared by their buffers: past
 * it, the handle that writes queues its own dirty extents (and waits for its previous
 * batch to start first). Counted: bytes in the maps and queued, not yet started. An
 * extent's buffer may be up to twice its bytes while it grows (it doubles), or a whole
 * chunk when it continues a sequential stream (one extent of a handle at a time), and each
 * handle also holds up to inflightMax × chunkBytesMax bytes in flight, not counted here.
 */
export const DIRTY_BYTES_MOUNT_MAX = 256 * 1024 * 1024;

export class DirtyBudget {
  private used = 0;

  constructor(readonly bytesMax: number) {
    if (!(bytesMax > 0)) throw new Error('invalid dirty budget');
  }

  get bytesUsed(): number {
    return this.used;
  }

  get exceeded(): boolean {
    return this.used > this.bytesMax;
  }

  charge(bytes: number): void {
    this.used += bytes;
    if (this.used < 0) throw new Error('dirty budget below zero');
  }
}

/** The first allocation of an extent that grows; it doubles as data comes. */
const EXTENT_BYTES_INITIAL = 64 * 1024;

interface Dirty {
  offset: number;
  /** Its bytes are buf[0, size); buf may be longer (room to grow). */
  buf: Buffer;
  size: number;
}

/** One write op, queued or in flight. */
interface Outgoing {
  /** Sorted, not overlapping. */
  extents: Extent[];
  data: Buffer;
  end: number;
  /** Settles once the op committed or failed (in flight only). */
  done: Promise<void>;
}

export class WriteBuffer {
  /** Sorted by offset; no two overlap or touch. */
  private readonly map: Dirty[] = [];
  private mapBytes = 0;
  /** When the oldest byte in the map was written (ms), or 0 when the map is empty. */
  private dirtySinceMs = 0;
  /** Ops packed from the map, not started yet, in the order they must start. */
  private readonly queue: Outgoing[] = [];
  private queueBytes = 0;
  /** Resolved each time the queue empties. */
  private drainWaiters: Array<() => void> = [];
  private readonly inflight = new Set<Outgoing>();
  private failure: unknown = null;
  private chain: Promise<void> = Promise.resolve();
  /** Steps of the chain not settled yet: none, and a write may place its bytes at once. */
  private steps = 0;
  /** Where the last chunk queueFullChunks sent ended: an extent that starts here continues
   * a sequential stream, and gets a whole chunk's buffer at once (no growing copies). */
  private sentEnd = -1;
  private timer: NodeJS.Timeout | null = null;
  private readonly limits: Required<WriteBufferLimits>;

  /** Append mode: where the next appended byte goes in the buffer's own stream. */
  private appendEnd = 0;

  constructor(
    private readonly send: ChunkSender,
    limits: WriteBufferLimits = WRITE_BUFFER_DEFAULTS,
    private readonly budget: DirtyBudget = new DirtyBudget(Number.MAX_SAFE_INTEGER),
    readonly mode: 'offset' | 'append' = 'offset',
  ) {
    const resolved = resolveWriteBufferLimits(limits);
    // Appends commute with nothing: one in flight at a time keeps them in order.
    this.limits = mode === 'append' ? { ...resolved, inflightMax: 1 } : resolved;
  }

  /** The first error of a background send, if any (sticky). */
  get error(): unknown {
    return this.failure;
  }

  /** True while some written data is not yet committed. */
  get dirty(): boolean {
    return this.map.length > 0 || this.queue.length > 0 || this.inflight.size > 0;
  }

  /** The end of the furthest uncommitted byte (dirty or in flight), or 0: the file is at
   * least this long, even when the cluster does not know it yet (getattr must not shrink
   * the kernel's size). */
  get dirtyEnd(): number {
    if (this.mode === 'append') return 0;
    const last = this.map[this.map.length - 1];
    let end = last ? last.offset + last.size : 0;
    for (const c of this.queue) end = Math.max(end, c.end);
    for (const c of this.inflight) end = Math.max(end, c.end);
    return end;
  }

  /** True when some uncommitted byte lies in [offset, end). */
  overlaps(offset: number, end: number): boolean {
    if (end <= offset) return false;
    if (this.mode === 'append') return this.dirty;
    let i = this.firstEndingAfter(offset);
    if (this.map[i] && this.map[i]!.offset + this.map[i]!.size === offset) i++; // touches only
    const e = this.map[i];
    if (e && e.offset < end) return true;
    const range: Extent[] = [[offset, end - offset]];
    for (const c of this.queue) if (extentsOverlap(c.extents, range)) return true;
    for (const c of this.inflight) if (extentsOverlap(c.extents, range)) return true;
    return false;
  }

  /** Bytes in the dirty map (not yet sent). */
  get dirtyBytes(): number {
    return this.mapBytes;
  }

  /** Extents in the dirty map. */
  get extentCount(): number {
    return this.map.length;
  }

  /** Bytes in ops queued, not started yet. */
  get queuedBytes(): number {
    return this.queueBytes;
  }

  /** Ops queued, not started yet. */
  get queuedCount(): number {
    return this.queue.length;
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  /** Buffers a copy of `data` at `offset` (in append mode, after the bytes appended
   * before, whatever `offset` says). Resolves once the bytes are copied (and, when a
   * bound was passed, once what it sent could be started); rejects with the sticky error.
   * The bytes are copied before this returns: the caller's buffer is detached once its
   * callback ran, which may come first (a deadline). */
  write(offset: number, data: Buffer): Promise<void> {
    if (this.steps === 0 && this.failure === null) {
      // Nothing before this write is still running (a sequential writer's next write comes
      // once the last was answered): its bytes go into the map now, straight from the
      // caller's buffer, as the chained step would have placed them, and the step does
      // the rest. One copy instead of two.
      let index: number;
      try {
        index = this.place(offset, data, false);
      } catch (err) {
        return Promise.reject(err);
      }
      return this.serialize(() => this.afterPlace(index));
    }
    // A copy now, placed in turn once the steps before it ran.
    const copy = Buffer.from(data);
    return this.serialize(async () => {
      this.throwIfFailed();
      await this.afterPlace(this.place(offset, copy, true));
    });
  }

  /** Puts a write's bytes into the map (`owned`: `data` is the buffer's own copy); returns
   * the index of the extent that holds them, or -1 for an empty write. */
  private place(offset: number, data: Buffer, owned: boolean): number {
    if (data.length === 0) return -1;
    let at = offset;
    if (this.mode === 'append') {
      at = this.appendEnd;
      this.appendEnd += data.length;
    }
    return this.insert(at, data, owned);
  }

  /** What a write does once its bytes are in the map at `index`: sends full chunks, and
   * the map past its bounds. */
  private async afterPlace(index: number): Promise<void> {
    if (index < 0) return this.throwIfFailed();
    if (this.queueFullChunks(index)) await this.drained();
    if (this.mapBytes > this.limits.dirtyBytesMax || (this.budget.exceeded && this.mapBytes > 0)) {
      // The previous batch first, so that a handle holds at most two.
      await this.drained();
      this.queueAll();
    }
    this.armTimer();
    this.throwIfFailed();
  }

  /** Sends everything and waits until all of it is committed; rejects with the sticky
   * error if any op failed. */
  flush(): Promise<void> {
    return this.serialize(async () => {
      this.queueAll();
      await this.drained();
      while (this.inflight.size > 0) await Promise.all([...this.inflight].map((c) => c.done));
      this.throwIfFailed();
    });
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private serialize(step: () => Promise<void>): Promise<void> {
    this.steps++;
    const run = this.chain.then(step);
    // The chain itself never rejects, so one failed step does not poison the next.
    this.chain = run.then(
      () => void this.steps--,
      () => void this.steps--,
    );
    return run;
  }

  // ---- The map ---------------------------------------------------------------------

  /** The index of the first extent that ends at or after `offset` (touches or passes it). */
  private firstEndingAfter(offset: number): number {
    let lo = 0;
    let hi = this.map.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const e = this.map[mid]!;
      if (e.offset + e.size < offset) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Puts `data` at `offset`, merged with every extent it overlaps or touches; returns the
   * index of the extent that holds it. `owned`: `data` is the buffer's own copy and may be
   * kept as it is; otherwise it is the caller's, copied from. */
  private insert(offset: number, data: Buffer, owned: boolean): number {
    const end = offset + data.length;
    const lo = this.firstEndingAfter(offset);
    let hi = lo;
    while (hi < this.map.length && this.map[hi]!.offset <= end) hi++;
    if (this.map.length === 0) this.dirtySinceMs = Date.now();
    if (lo === hi) {
      let buf = data;
      if (offset === this.sentEnd && data.length < this.limits.chunkBytesMax) {
        // A sequential stream goes on: room for its whole next chunk now.
        buf = Buffer.allocUnsafe(this.limits.chunkBytesMax);
        data.copy(buf);
      } else if (!owned) {
        buf = Buffer.from(data);
      }
      this.map.splice(lo, 0, { offset, buf, size: data.length });
      this.charge(data.length);
      return lo;
    }
    // Every gap between the extents [lo, hi) lies inside [offset, end), so the merged
    // extent has no hole.
    const first = this.map[lo]!;
    const last = this.map[hi - 1]!;
    const start = Math.min(offset, first.offset);
    const stop = Math.max(end, last.offset + last.size);
    let before = 0;
    for (let k = lo; k < hi; k++) before += this.map[k]!.size;
    if (hi - lo === 1 && first.offset <= offset) {
      // Within or past the end of one extent (a sequential stream): in place.
      ensureCapacity(first, stop - start, this.limits.chunkBytesMax);
      data.copy(first.buf, offset - start);
      first.size = stop - start;
    } else {
      const buf = Buffer.allocUnsafe(stop - start);
      for (let k = lo; k < hi; k++) {
        const e = this.map[k]!;
        e.buf.copy(buf, e.offset - start, 0, e.size);
      }
      data.copy(buf, offset - start); // the later bytes win
      this.map.splice(lo, hi - lo, { offset: start, buf, size: stop - start });
    }
    this.charge(stop - start - before);
    return lo;
  }

  /** Removes the first `size` bytes of the extent at `index` and returns them. */
  private takeFront(index: number, offset: number, size: number): Buffer {
    const e = this.map[index]!;
    if (e.offset !== offset || size > e.size) throw new Error('write buffer: the map changed under a send');
    const taken = e.buf.subarray(0, size);
    if (size === e.size) {
      this.map.splice(index, 1);
    } else {
      // The rest gets its own copy: the taken bytes are on their way, and are never
      // written again through this extent.
      e.buf = Buffer.from(e.buf.subarray(size, e.size));
      e.offset += size;
      e.size -= size;
    }
    this.charge(-size);
    return taken;
  }

  /** Map bytes changed by `bytes` (queued bytes are charged to the budget apart). */
  private charge(bytes: number): void {
    this.mapBytes += bytes;
    this.budget.charge(bytes);
    if (this.map.length === 0) this.dirtySinceMs = 0;
  }

  // ---- Sending ---------------------------------------------------------------------

  /** The sequential path: whole chunks of the extent at `index` are queued, one op each.
   * Returns whether any was. */
  private queueFullChunks(index: number): boolean {
    const chunk = this.limits.chunkBytesMax;
    let queued = false;
    for (;;) {
      const e = this.map[index];
      if (!e || e.size < chunk) return queued;
      const offset = e.offset;
      this.enqueue([[offset, chunk]], [this.takeFront(index, offset, chunk)]);
      this.sentEnd = offset + chunk;
      queued = true;
    }
  }

  /** Packs the whole map, in offset order, into queued ops. */
  private queueAll(): void {
    this.clearTimer();
    const { chunkBytesMax, extentsPerOpMax } = this.limits;
    while (this.map.length > 0) {
      const extents: Extent[] = [];
      const parts: Buffer[] = [];
      let bytes = 0;
      while (this.map.length > 0 && bytes < chunkBytesMax && extents.length < extentsPerOpMax) {
        // Whole extents from the front; only the last of an op may be cut, and its rest
        // then stays first in the map.
        const e = this.map[0]!;
        const take = Math.min(e.size, chunkBytesMax - bytes);
        extents.push([e.offset, take]);
        parts.push(this.takeFront(0, e.offset, take));
        bytes += take;
      }
      this.enqueue(extents, parts);
    }
  }

  private enqueue(extents: Extent[], parts: Buffer[]): void {
    const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    const [lastOffset, lastSize] = extents[extents.length - 1]!;
    this.queue.push({ extents, data, end: lastOffset + lastSize, done: Promise.resolve() });
    this.queueBytes += data.length;
    this.budget.charge(data.length);
    this.pump();
  }

  /** Starts queued ops in order while a slot is free and the head overlaps nothing in
   * flight. Runs on every enqueue and every op that settles. */
  private pump(): void {
    while (this.queue.length > 0 && this.inflight.size < this.limits.inflightMax) {
      const head = this.queue[0]!;
      for (const c of this.inflight) if (extentsOverlap(c.extents, head.extents)) return;
      this.queue.shift();
      this.queueBytes -= head.data.length;
      this.budget.charge(-head.data.length);
      this.start(head);
    }
    if (this.queue.length === 0 && this.drainWaiters.length > 0) {
      const waiters = this.drainWaiters;
      this.drainWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** Resolves once every queued op has started. */
  private drained(): Promise<void> {
    if (this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  /** Starts one op, without waiting for it to commit. */
  private start(op: Outgoing): void {
    const [offset] = op.extents[0]!;
    const extents = op.extents.length > 1 ? op.extents : undefined;
    op.done = Promise.resolve()
      .then(() => this.send(offset, op.data, extents))
      .then(
        () => {
          this.inflight.delete(op);
          this.pump();
        },
        (err: unknown) => {
          this.inflight.delete(op);
          if (this.failure === null) this.failure = err;
          this.pump();
        },
      );
    this.inflight.add(op);
  }

  // ---- Timers ----------------------------------------------------------------------

  /** Arms the background send of the map for the earlier of: idle for idleSendMs, or the
   * oldest dirty byte dirtyAgeMsMax old. */
  private armTimer(): void {
    this.clearTimer();
    if (this.map.length === 0) return;
    const now = Date.now();
    let due = Infinity;
    if (this.limits.idleSendMs > 0) due = now + this.limits.idleSendMs;
    if (this.limits.dirtyAgeMsMax > 0) due = Math.min(due, this.dirtySinceMs + this.limits.dirtyAgeMsMax);
    if (due === Infinity) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      // A failure is kept as the sticky error, reported by the next call on the handle.
      this.serialize(async () => this.queueAll()).catch(() => undefined);
    }, Math.max(0, due - now));
    this.timer.unref();
  }

  private clearTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }
}

/** Whether two sorted lists of non-overlapping extents share a byte (one merge pass). */
export function extentsOverlap(a: readonly Extent[], b: readonly Extent[]): boolean {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const [ao, as] = a[i]!;
    const [bo, bs] = b[j]!;
    if (ao < bo + bs && bo < ao + as) return true;
    if (ao + as <= bo + bs) i++;
    else j++;
  }
  return false;
}

function ensureCapacity(e: Dirty, needed: number, chunkBytesMax: number): void {
  if (e.buf.length >= needed) return;
  let cap = Math.max(e.buf.length, EXTENT_BYTES_INITIAL);
  while (cap < needed) cap *= 2;
  // Up to a chunk, room to grow; past it, the extent is about to be sent in chunks.
  const grown = Buffer.allocUnsafe(Math.max(needed, Math.min(cap, chunkBytesMax)));
  e.buf.copy(grown, 0, 0, e.size);
  e.buf = grown;
}
