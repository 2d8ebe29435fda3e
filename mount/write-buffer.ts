/*
 * The write buffer of one open file handle: coalesces the kernel's 128 KiB writes into
 * large chunks and sends them to the cluster in the background.
 *
 * Data flow. `write(offset, data)` copies the bytes (fuse-native detaches the kernel's
 * buffer after the callback) into the pending chunk when they continue it; a write that
 * does not continue it first sends the pending chunk. A chunk that reaches `chunkBytesMax`
 * is sent at once. Up to `inflightMax` chunks are in flight together; a chunk that
 * overlaps one in flight waits for it, so that two versions of the same bytes can never
 * commit in the wrong order (chunks that do not overlap commute). `flush()` sends the
 * pending chunk and waits for every chunk in flight: flush, fsync and close return only
 * once the cluster committed the data (close-to-open, DESIGN.md).
 *
 * A pending chunk that sees no more writes for `idleSendMs` is sent on its own, so data an
 * application leaves in a file it keeps open (a log) still reaches the cluster soon, and
 * an idle handle holds no more than what is in flight.
 *
 * Errors. The application was told its write succeeded before the chunk was sent, so a
 * chunk that fails later is remembered (sticky) and reported by every later write, flush
 * and close of this handle; its data is never dropped silently.
 *
 * Operations on one buffer run one at a time in arrival order (a promise chain), so that
 * concurrent writes from several threads of an application cannot interleave halfway.
 * The module does no I/O itself: the sender is injected, which keeps it unit-testable.
 */

export type ChunkSender = (offset: number, data: Buffer) => Promise<void>;

export interface WriteBufferLimits {
  /** The largest chunk sent in one write op (≤ WRITE_BYTES_MAX). */
  chunkBytesMax: number;
  /** Chunks in flight at once per handle. */
  inflightMax: number;
  /** A pending chunk idle this long is sent without waiting for flush; 0 never. */
  idleSendMs?: number;
}

export const WRITE_BUFFER_DEFAULTS: WriteBufferLimits = { chunkBytesMax: 1024 * 1024, inflightMax: 4, idleSendMs: 1_000 };

/** The first allocation of a pending chunk; it doubles up to chunkBytesMax as data comes. */
const PENDING_BYTES_INITIAL = 64 * 1024;

interface Pending {
  offset: number;
  buf: Buffer;
  size: number;
}

interface Inflight {
  offset: number;
  end: number;
  done: Promise<void>;
}

export class WriteBuffer {
  private pending: Pending | null = null;
  private readonly inflight = new Set<Inflight>();
  private failure: unknown = null;
  private chain: Promise<void> = Promise.resolve();
  private idleTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly send: ChunkSender,
    private readonly limits: WriteBufferLimits = WRITE_BUFFER_DEFAULTS,
  ) {
    if (!(limits.chunkBytesMax > 0 && limits.inflightMax >= 1)) throw new Error('invalid write buffer limits');
  }

  /** The first error of a background send, if any (sticky). */
  get error(): unknown {
    return this.failure;
  }

  /** True while some written data is not yet committed. */
  get dirty(): boolean {
    return this.pending !== null || this.inflight.size > 0;
  }

  /** The end of the furthest uncommitted byte, or 0: the file is at least this long, even
   * when the cluster does not know it yet (getattr must not shrink the kernel's size). */
  get dirtyEnd(): number {
    let end = this.pending ? this.pending.offset + this.pending.size : 0;
    for (const c of this.inflight) end = Math.max(end, c.end);
    return end;
  }

  /** True when some uncommitted byte lies in [offset, end). */
  overlaps(offset: number, end: number): boolean {
    const p = this.pending;
    if (p && p.offset < end && offset < p.offset + p.size) return true;
    for (const c of this.inflight) if (c.offset < end && offset < c.end) return true;
    return false;
  }

  get pendingBytes(): number {
    return this.pending?.size ?? 0;
  }

  get inflightCount(): number {
    return this.inflight.size;
  }

  /** Buffers a copy of `data` at `offset`. Resolves once the bytes are copied (and, when the
   * buffer is full, once a chunk could be sent); rejects with the sticky error. */
  write(offset: number, data: Buffer): Promise<void> {
    // Copy now, synchronously: the caller's buffer is detached once its callback ran, and
    // the chained step below may run later.
    const copy = Buffer.from(data);
    return this.serialize(async () => {
      this.throwIfFailed();
      if (this.pending && offset !== this.pending.offset + this.pending.size) await this.sendPending();
      let done = 0;
      while (done < copy.length) {
        if (!this.pending) this.pending = { offset: offset + done, buf: Buffer.allocUnsafe(0), size: 0 };
        const p = this.pending;
        const take = Math.min(copy.length - done, this.limits.chunkBytesMax - p.size);
        ensureCapacity(p, p.size + take, this.limits.chunkBytesMax);
        copy.copy(p.buf, p.size, done, done + take);
        p.size += take;
        done += take;
        if (p.size >= this.limits.chunkBytesMax) await this.sendPending();
      }
      this.armIdleSend();
      this.throwIfFailed();
    });
  }

  private armIdleSend(): void {
    const ms = this.limits.idleSendMs ?? 0;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (ms <= 0 || !this.pending) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      // A failure is kept as the sticky error, reported by the next call on the handle.
      this.serialize(() => this.sendPending()).catch(() => undefined);
    }, ms);
    this.idleTimer.unref();
  }

  /** Sends everything and waits until all of it is committed; rejects with the sticky
   * error if any chunk failed. */
  flush(): Promise<void> {
    return this.serialize(async () => {
      if (this.pending) await this.sendPending();
      while (this.inflight.size > 0) await Promise.all([...this.inflight].map((c) => c.done));
      this.throwIfFailed();
    });
  }

  private throwIfFailed(): void {
    if (this.failure !== null) throw this.failure;
  }

  private serialize(step: () => Promise<void>): Promise<void> {
    const run = this.chain.then(step);
    // The chain itself never rejects, so one failed step does not poison the next.
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Starts sending the pending chunk once there is room for it, without waiting for it to
   * commit. */
  private async sendPending(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    const offset = p.offset;
    const end = p.offset + p.size;
    for (;;) {
      const blockers = [...this.inflight].filter((c) => c.offset < end && offset < c.end);
      if (blockers.length === 0 && this.inflight.size < this.limits.inflightMax) break;
      await Promise.race((blockers.length > 0 ? blockers : [...this.inflight]).map((c) => c.done));
    }
    const data = p.buf.subarray(0, p.size);
    const chunk: Inflight = { offset, end, done: Promise.resolve() };
    chunk.done = Promise.resolve()
      .then(() => this.send(offset, data))
      .then(
      () => {
        this.inflight.delete(chunk);
      },
      (err: unknown) => {
        this.inflight.delete(chunk);
        if (this.failure === null) this.failure = err;
      },
    );
    this.inflight.add(chunk);
  }
}

function ensureCapacity(p: Pending, needed: number, max: number): void {
  if (p.buf.length >= needed) return;
  let cap = Math.max(p.buf.length, PENDING_BYTES_INITIAL);
  while (cap < needed) cap *= 2;
  const grown = Buffer.allocUnsafe(Math.min(cap, max));
  p.buf.copy(grown, 0, 0, p.size);
  p.buf = grown;
}
