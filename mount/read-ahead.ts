/*
 * Read-ahead for one open file handle.
 *
 * The kernel reads a FUSE file in requests of at most 128 KiB. Fetching each from the
 * cluster would cost a round trip per 128 KiB, so when the reads are sequential (each
 * starts where the last one ended) the handle fetches a window of `windowBytes` (1 MiB)
 * and serves the following reads from it; when a read reaches the second half of a full
 * window, the next `READ_AHEAD_DEPTH` windows are fetched in the background, so several
 * requests are in flight at once and a streaming reader rarely waits: one window at a time
 * left the mount, the proxy and the node each idle half the time, waiting on the others. A read
 * that is not sequential fetches exactly what it asks for and leaves the windows alone.
 *
 * Consistency: the windows live only as long as the handle (a new open starts empty, which
 * is close-to-open), and the mount clears them on every write, truncate or other change to
 * the file made through this mount. Changes made through other mounts become visible at
 * the next open, as with NFS.
 *
 * No I/O here: the fetcher is injected.
 */

export type RangeFetcher = (offset: number, size: number) => Promise<Buffer>;

export const READ_AHEAD_WINDOW_BYTES = 1024 * 1024;
/** Windows fetched ahead of the one being read. */
export const READ_AHEAD_DEPTH = 3;
/** Windows kept per handle: the one being read and those fetched ahead of it. */
export const READ_AHEAD_WINDOWS_MAX = READ_AHEAD_DEPTH + 1;

interface Window {
  offset: number;
  size: number;
  data: Promise<Buffer>;
}

export class ReadAhead {
  private windows: Window[] = [];
  /** Where the next read starts if the reader is sequential. */
  private nextOffset = 0;

  /** `sizeHint` gives the file's size as last known (at open), or null: windows are not
   * fetched ahead from past it, where they would only come back empty. A read there still
   * asks the cluster, so a file that grew since is read whole. */
  constructor(
    private readonly fetch: RangeFetcher,
    private readonly windowBytes: number = READ_AHEAD_WINDOW_BYTES,
    private readonly sizeHint: () => number | null = () => null,
  ) {}

  /** Drops every window: the file changed. */
  invalidate(): void {
    this.windows = [];
  }

  get windowCount(): number {
    return this.windows.length;
  }

  async read(offset: number, size: number): Promise<Buffer> {
    const sequential = offset === this.nextOffset;
    this.nextOffset = offset + size;
    const end = offset + size;
    let w = this.windows.find((x) => x.offset <= offset && end <= x.offset + x.size);
    if (!w) {
      if (!sequential || this.windowBytes <= size) return this.fetch(offset, size);
      w = this.startWindow(offset, Math.max(size, this.windowBytes), offset);
    }
    const data = await w.data;
    // A full window means the file goes on: fetch the next one once the reader is past
    // the middle of this one.
    if (data.length === w.size && end > w.offset + w.size / 2) {
      let next = w.offset + w.size;
      const known = this.sizeHint();
      for (let i = 0; i < READ_AHEAD_DEPTH && (known === null || next < known); i++, next += this.windowBytes) {
        if (!this.windows.some((x) => x.offset === next)) this.startWindow(next, this.windowBytes, offset);
      }
    }
    return data.subarray(Math.min(offset - w.offset, data.length), Math.min(end - w.offset, data.length));
  }

  /** Starts fetching [offset, offset + size) while the reader is at `readOffset`. */
  private startWindow(offset: number, size: number, readOffset: number): Window {
    // Windows that end before the reader's position have been read already.
    this.windows = this.windows.filter((x) => x.offset + x.size > readOffset);
    while (this.windows.length >= READ_AHEAD_WINDOWS_MAX) this.windows.shift();
    const w: Window = { offset, size, data: this.fetch(offset, size) };
    // A failed fetch is forgotten so the next read tries again; the rejection itself
    // reaches whichever read awaits it (a prefetch nobody awaits is simply dropped).
    w.data.catch(() => {
      this.windows = this.windows.filter((x) => x !== w);
    });
    this.windows.push(w);
    return w;
  }
}
