/*
 * The write-ahead log of sequenced ops: what a node has durably accepted, in sequence order.
 *
 * On disk: a directory of segment files named by the first sequence ID they hold
 * (`00000000000000000042.wal`), each a run of frames (common/frame.ts) whose headers are
 * SequencedOpHeader. An append writes a batch of frames and fdatasyncs once (group commit);
 * the caller keeps one append in flight at a time. A segment rolls over past
 * `segmentBytesMax`. Segments are deleted once every op in them is applied and older than
 * the newest `keepOps`, the window a lagging peer can catch up from (DESIGN.md, Gaps).
 *
 * Catch-up (`read`) serves a lagging peer from the log: a sparse index, one entry every
 * INDEX_EVERY_OPS frames (built on append and on recovery), says where in which segment to
 * start reading, so a read costs what it returns, not the segment's size. A full sync
 * (`reset`) empties the log: the brick it came with starts where the log begins again.
 *
 * Recovery reads the segments in order. A torn tail (a frame cut short by a crash) is the
 * end of the log and is truncated away; a checksum mismatch anywhere else is damage, and
 * the node refuses to start rather than serve a wrong history.
 *
 * A full file system is an answer, not a crash (docs/space.md): an append that finds no
 * room is cut back to where it began and fails with NO_SPACE, leaving the log valid; while
 * space is tight (`setTight`) the log keeps no more than it must.
 *
 * Direct I/O. Where the file system takes O_DIRECT (ext4, XFS; not tmpfs), segments are
 * written with it, from one staging buffer the log keeps and reuses, so an append costs a
 * copy into memory that is already there instead of new page-cache pages: the log is
 * written once and read back only by recovery and catch-up, so caching it is waste, and
 * measured here a MiB into new page-cache pages cost 1.6 to 2.3 ms of CPU against 0.2 into
 * memory in use (writes of 1 MiB were 40% page-cache copies over the cluster, the log a
 * third of them). O_DIRECT wants the buffer, the file offset and the length aligned
 * (DIRECT_ALIGN): each append rewrites the segment's last partial block from the staging
 * buffer (`carry`) and pads its own last block with zeros. Zeros past the last frame are
 * padding, never a frame (a frame's header is never empty), so recovery ends a segment
 * there; a segment closed or rolled over is cut back to its frames. Node cannot align a
 * buffer, so the log finds an aligned offset in one by trying O_DIRECT writes to a probe
 * file (storage/direct-io.ts). O_DIRECT alone promises nothing about the device's cache:
 * direct segments are opened with O_DSYNC as well, so each write returns only once it is
 * durable as an fdatasync would make it (the kernel flushes, or writes with FUA), in one
 * trip through the thread pool instead of two (a write, then an fdatasync); a buffered log
 * fdatasyncs after each append.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import assert from 'node:assert/strict';
import { DfsError } from '../common/errors';
import { decodeFrameAt, encodeFrame } from '../common/frame';
import { parseSequencedOpHeader, type SequencedOpHeader } from '../common/ops';
import { alignedBuffer, DIRECT_ALIGN, roundUp } from './direct-io';

export interface LogEntry {
  header: SequencedOpHeader;
  data: Buffer;
  /** The entry's frame, encoded once and shared by the log and every peer: the bytes the
   * proxy (on the primary) or the primary (on a backup) sent, checksum verified, or else
   * encoded here on first use. */
  frame?: Buffer;
}

export function frameOf(e: LogEntry): Buffer {
  e.frame ??= encodeFrame(e.header, e.data);
  return e.frame;
}

export interface OpLogConfig {
  segmentBytesMax: number;
  keepOps: number;
  /** false: buffered writes even where O_DIRECT works (tests of both paths). */
  direct?: boolean;
}

/** The staging buffer grows in steps of this (it holds one append, up to a batch). */
const STAGE_STEP_BYTES = 1024 * 1024;
const PROBE_NAME = '.direct-probe';

/** Whether `buf` from `offset` on holds only zeros: an O_DIRECT append's padding. */
function isPadding(buf: Buffer, offset: number): boolean {
  for (let i = offset; i < buf.length; i++) if (buf[i] !== 0) return false;
  return true;
}

const SEGMENT_SUFFIX = '.wal';
/** One index point every this many frames. */
const INDEX_EVERY_OPS = 64;
/** Where a segment rolls over while space is tight (OpLog.setTight). */
const TIGHT_SEGMENT_BYTES = 1024 * 1024;
/** Bytes read from a segment at a time by `read`. */
const READ_CHUNK_BYTES = 1024 * 1024;

/** Where the log's entries change epoch: entries from `from` on (up to the next run) were
 * sequenced in `epoch`. A handful per log; the replication core compares them to find
 * where two logs stop agreeing (storage/replica-core.ts, Failover). */
export interface EpochRun {
  from: number;
  epoch: number;
}

interface IndexPoint {
  seq: number;
  segment: number;
  offset: number;
}

/** Runs `fn`, turning a file system's ENOSPC or EDQUOT into NO_SPACE. */
async function noSpaceAsCode<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw new DfsError('NO_SPACE', `op log: no space for a new segment (${code})`);
    throw e;
  }
}

function segmentName(firstSeq: number): string {
  return String(firstSeq).padStart(20, '0') + SEGMENT_SUFFIX;
}

export class OpLog {
  private segments: number[] = []; // first sequence ID of each segment, ascending
  private fh: fsp.FileHandle | null = null;
  private segmentBytes = 0;
  private currentSegment = 0;
  private appending = false;
  private tight = false;
  /** Ascending by seq: where frame `seq` starts. */
  private index: IndexPoint[] = [];
  private runs: EpochRun[] = [];
  /** Direct I/O's staging buffer (aligned), or null for buffered writes. */
  private stage: Buffer | null = null;
  /** Whether stage[0, segmentBytes % DIRECT_ALIGN) holds the current segment's last
   * partial block (false after the segment was opened, cut or rolled: read it back). */
  private carryValid = false;
  lastSeq = 0;
  /** Whether the open segment was opened with O_DSYNC (the direct log): its writes are
   * durable when they return, and no fdatasync follows them. */
  private dsync = false;
  /** Told how long each append's fdatasync took, in seconds (storage metrics); none: not timed. */
  fsyncObserver: ((seconds: number) => void) | null = null;

  private constructor(
    private readonly dir: string,
    private readonly config: OpLogConfig,
  ) {}

  /** Opens the log, recovering it; returns the entries with sequence IDs above `fromSeq`. */
  static async open(dir: string, config: OpLogConfig, fromSeq: number): Promise<{ log: OpLog; entries: LogEntry[] }> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const log = new OpLog(dir, config);
    if (config.direct !== false) log.stage = await alignedBuffer(nodePath.join(dir, PROBE_NAME), STAGE_STEP_BYTES);
    const names = (await fsp.readdir(dir)).filter((n) => n.endsWith(SEGMENT_SUFFIX)).sort();
    const entries: LogEntry[] = [];
    for (const [i, name] of names.entries()) {
      const file = nodePath.join(dir, name);
      const buf = await fsp.readFile(file);
      let offset = 0;
      while (offset < buf.length) {
        if (buf.length - offset >= 4 && buf.readUInt32BE(offset) === 0) break; // padding, or a torn tail
        const r = decodeFrameAt(buf, offset);
        if ('incomplete' in r) break;
        if ('corrupt' in r) throw new Error(`op log ${file} is damaged at byte ${offset}: ${r.corrupt}`);
        const header = parseSequencedOpHeader(r.frame.header);
        assert.ok(log.lastSeq === 0 || header.seq === log.lastSeq + 1, `op log gap: ${log.lastSeq} then ${header.seq}`);
        log.lastSeq = header.seq;
        log.noteFrame(header.seq, Number(name.slice(0, -SEGMENT_SUFFIX.length)), offset);
        log.noteEpoch(header.seq, header.epoch);
        // Copy: the entry outlives the segment buffer we read it from.
        if (header.seq > fromSeq) entries.push({ header, data: Buffer.from(r.frame.data) });
        offset += r.bytes;
      }
      if (offset < buf.length) {
        // Padding ends any segment (one rolled over just before a crash may keep its
        // own); a torn record only the last.
        assert.ok(i === names.length - 1 || isPadding(buf, offset), `op log ${file} has a torn record but is not the last segment`);
        await fsp.truncate(file, offset);
      }
      log.segments.push(Number(name.slice(0, -SEGMENT_SUFFIX.length)));
    }
    // An empty log (new, or emptied by a full sync) ends where the applied state does.
    if (log.segments.length === 0) log.lastSeq = fromSeq;
    return { log, entries };
  }

  /** Appends entries that continue the log without a gap, durably. */
  async append(entries: LogEntry[]): Promise<void> {
    assert.ok(!this.appending, 'one append at a time');
    assert.ok(entries.length > 0);
    this.appending = true;
    try {
      const frames: Buffer[] = [];
      let seq = this.lastSeq;
      for (const e of entries) {
        assert.ok(seq === 0 || e.header.seq === seq + 1, `append gap: ${seq} then ${e.header.seq}`);
        seq = e.header.seq;
        frames.push(frameOf(e));
      }
      if (!this.fh || this.segmentBytes >= this.segmentBytesLimit()) await noSpaceAsCode(() => this.roll(entries[0]!.header.seq));
      const fh = this.fh!;
      const segment = this.currentSegment;
      let bytes = 0;
      for (const f of frames) bytes += f.length;
      if (this.stage) await this.writeDirect(fh, frames, bytes);
      else await this.writeDurably(fh, frames, bytes);
      let offset = this.segmentBytes;
      for (const [i, e] of entries.entries()) {
        this.noteFrame(e.header.seq, segment, offset);
        this.noteEpoch(e.header.seq, e.header.epoch);
        offset += frames[i]!.length;
      }
      this.segmentBytes += bytes;
      this.lastSeq = seq;
    } finally {
      this.appending = false;
    }
  }

  /**
   * Writes the frames at the segment's end and fdatasyncs. A write may be cut short (the
   * file system filled part way): the rest is written after it, and an error then, or from
   * the sync, cuts the segment back to where the batch began, durably, so no slot is left
   * half-written and the next append continues the log where it ends (docs/space.md).
   * ENOSPC and EDQUOT become NO_SPACE; anything else stays fatal for the caller.
   */
  private async writeDurably(fh: fsp.FileHandle, frames: Buffer[], bytes: number): Promise<void> {
    await this.durably(fh, bytes, async () => {
      let written = (await fh.writev(frames)).bytesWritten;
      while (written < bytes) {
        // A short write: what is left goes after it (the file is open for append).
        const rest = Buffer.concat(frames).subarray(written);
        const { bytesWritten } = await fh.write(rest, 0, rest.length);
        assert.ok(bytesWritten > 0, 'op log write made no progress');
        written += bytesWritten;
      }
    });
  }

  /** Runs an append's writes and fdatasyncs; on ENOSPC or EDQUOT cuts the segment back to
   * where the batch began, durably, and throws NO_SPACE (see writeDurably). */
  private async durably(fh: fsp.FileHandle, bytes: number, write: () => Promise<void>): Promise<void> {
    try {
      if (this.dsync) {
        // O_DSYNC: the write is the sync, and is timed as one.
        const startNs = process.hrtime.bigint();
        await write();
        this.fsyncObserver?.(Number(process.hrtime.bigint() - startNs) / 1e9);
      } else {
        await write();
        await this.syncTimed(fh);
      }
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOSPC' && code !== 'EDQUOT') throw e;
      // Cutting a file back needs no new blocks; if even that fails, the log is not
      // what this process believes, and the error is fatal.
      await fh.truncate(this.segmentBytes);
      await fh.datasync();
      throw new DfsError('NO_SPACE', `op log: no space for ${bytes} bytes (${code})`);
    }
  }

  /** An append's fdatasync, its time told to `fsyncObserver`. */
  private async syncTimed(fh: fsp.FileHandle): Promise<void> {
    const startNs = process.hrtime.bigint();
    await fh.datasync();
    this.fsyncObserver?.(Number(process.hrtime.bigint() - startNs) / 1e9);
  }

  /**
   * writeDurably under O_DIRECT: the segment's last partial block (the carry) and the
   * frames are copied into the staging buffer and written from the block where the carry
   * starts, the last block padded with zeros, durable as it returns (O_DSYNC). On ENOSPC or EDQUOT the
   * segment is cut back to where the batch began, as there.
   */
  private async writeDirect(fh: fsp.FileHandle, frames: Buffer[], bytes: number): Promise<void> {
    const carry = this.segmentBytes % DIRECT_ALIGN;
    const start = this.segmentBytes - carry;
    const need = roundUp(carry + bytes, DIRECT_ALIGN);
    if (this.stage!.length < need) {
      const grown = await alignedBuffer(nodePath.join(this.dir, PROBE_NAME), roundUp(need, STAGE_STEP_BYTES));
      assert.ok(grown, 'op log: O_DIRECT stopped working');
      if (this.carryValid) this.stage!.copy(grown, 0, 0, carry);
      this.stage = grown;
    }
    const stage = this.stage!;
    if (carry > 0 && !this.carryValid) {
      const { bytesRead } = await fh.read(stage, 0, DIRECT_ALIGN, start);
      assert.ok(bytesRead >= carry, `op log: the segment's last block is short (${bytesRead} of ${carry} bytes)`);
    }
    // stage[0, carry) holds the carry from here on, whatever happens to what follows it.
    this.carryValid = true;
    let at = carry;
    for (const f of frames) at += f.copy(stage, at);
    stage.fill(0, at, need);
    await this.durably(fh, bytes, async () => {
      for (let done = 0; done < need; ) {
        const { bytesWritten } = await fh.write(stage, done, need - done, start + done);
        assert.ok(bytesWritten > 0 && bytesWritten % DIRECT_ALIGN === 0, `op log: O_DIRECT wrote ${bytesWritten} bytes`);
        done += bytesWritten;
      }
    });
    // The new last partial block moves to the front for the next append.
    const tail = at % DIRECT_ALIGN;
    stage.copyWithin(0, at - tail, at);
  }

  /** Where the current segment rolls over: the configured size, or TIGHT_SEGMENT_BYTES
   * while space is tight, so that what is applied can be trimmed (see `setTight`). */
  private segmentBytesLimit(): number {
    return this.tight ? Math.min(TIGHT_SEGMENT_BYTES, this.config.segmentBytesMax) : this.config.segmentBytesMax;
  }

  /**
   * While space is tight (docs/space.md) the log keeps no catch-up window: `trim` deletes
   * every segment whose ops are all applied, and segments roll at TIGHT_SEGMENT_BYTES, so
   * a file deleted through the mount frees its bytes in the log as well as in the brick. A
   * peer that lags meanwhile is brought up by a full sync instead of from the log.
   */
  setTight(tight: boolean): void {
    this.tight = tight;
  }

  private async roll(firstSeq: number): Promise<void> {
    const old = this.fh;
    await this.close();
    const isNew = !this.segments.includes(firstSeq);
    const last = this.segments[this.segments.length - 1];
    // Reopen the newest segment after a restart instead of starting a tiny new one.
    const seg = !old && last !== undefined ? last : firstSeq;
    const file = nodePath.join(this.dir, segmentName(seg));
    this.fh = this.stage ? await fsp.open(file, fsc.O_RDWR | fsc.O_CREAT | fsc.O_DIRECT | fsc.O_DSYNC, 0o600) : await fsp.open(file, 'a');
    this.dsync = this.stage !== null;
    this.currentSegment = seg;
    this.segmentBytes = (await this.fh.stat()).size;
    if (seg === firstSeq && isNew) {
      this.segments.push(firstSeq);
      const dirFh = await fsp.open(this.dir, 'r');
      try {
        await dirFh.sync(); // the new segment's name must survive a crash too
      } finally {
        await dirFh.close();
      }
    }
  }

  private noteFrame(seq: number, segment: number, offset: number): void {
    const last = this.index[this.index.length - 1];
    if (last === undefined || last.segment !== segment || seq - last.seq >= INDEX_EVERY_OPS) this.index.push({ seq, segment, offset });
  }

  private noteEpoch(seq: number, epoch: number): void {
    if (this.runs[this.runs.length - 1]?.epoch !== epoch) this.runs.push({ from: seq, epoch });
  }

  /** The epochs of the entries the log holds, oldest first (entries trimmed away may leave
   * their run's `from` below `firstSeq`). */
  epochRuns(): EpochRun[] {
    return this.runs.map((r) => ({ ...r }));
  }

  /** The first sequence ID the log still holds (lastSeq + 1 when it holds none). */
  get firstSeq(): number {
    return this.index[0]?.seq ?? this.lastSeq + 1;
  }

  /**
   * Entries from `fromSeq` on, durable ones only, up to about `bytesMax` of op data (at
   * least one entry), or null when the log no longer reaches back to `fromSeq` (the peer
   * needs a full sync). Reads run beside appends: a frame being written is past `lastSeq`.
   */
  async read(fromSeq: number, bytesMax: number): Promise<LogEntry[] | null> {
    const upTo = this.lastSeq;
    if (fromSeq < this.firstSeq || fromSeq > upTo) return fromSeq > upTo ? [] : null;
    // The last index point at or before fromSeq.
    let lo = 0;
    let hi = this.index.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.index[mid]!.seq <= fromSeq) lo = mid;
      else hi = mid - 1;
    }
    const start = this.index[lo]!;
    const out: LogEntry[] = [];
    let bytes = 0;
    // Segments by name, not by position: a trim may shift the list while this reads.
    let segment: number | undefined = start.segment;
    let offset = start.offset;
    let expect = start.seq;
    while (segment !== undefined && expect <= upTo && bytes < bytesMax) {
      let fh: fsp.FileHandle;
      try {
        fh = await fsp.open(nodePath.join(this.dir, segmentName(segment)), 'r');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return out.length > 0 ? out : null; // trimmed meanwhile
        throw e;
      }
      try {
        let buf = Buffer.alloc(0);
        for (;;) {
          const chunk = Buffer.allocUnsafe(READ_CHUNK_BYTES);
          const { bytesRead } = await fh.read(chunk, 0, chunk.length, offset);
          if (bytesRead === 0) break;
          offset += bytesRead;
          buf = buf.length === 0 ? chunk.subarray(0, bytesRead) : Buffer.concat([buf, chunk.subarray(0, bytesRead)]);
          let at = 0;
          for (;;) {
            const r = decodeFrameAt(buf, at);
            if ('incomplete' in r) break;
            if ('corrupt' in r) throw new Error(`op log segment ${segment} is damaged: ${r.corrupt}`);
            const header = parseSequencedOpHeader(r.frame.header);
            assert.equal(header.seq, expect, `op log read: expected ${expect}, found ${header.seq}`);
            at += r.bytes;
            expect++;
            if (header.seq >= fromSeq) {
              out.push({ header, data: Buffer.from(r.frame.data) });
              bytes += r.frame.data.length;
            }
            if (header.seq >= upTo || bytes >= bytesMax) return out;
          }
          buf = buf.subarray(at);
        }
      } finally {
        await fh.close();
      }
      const current: number = segment;
      segment = this.segments.find((first) => first > current);
      if (segment !== undefined && segment !== expect) return out; // not contiguous: trimmed or reset meanwhile
      offset = 0;
    }
    return out;
  }

  /** Deletes segments whose ops are all applied and outside the catch-up window. */
  async trim(appliedSeq: number): Promise<void> {
    const keepFrom = appliedSeq - (this.tight ? 0 : this.config.keepOps);
    while (this.segments.length > 1 && this.segments[1]! - 1 <= keepFrom) {
      const first = this.segments.shift()!;
      this.index = this.index.filter((p) => p.segment !== first);
      await fsp.rm(nodePath.join(this.dir, segmentName(first)), { force: true });
    }
    // Runs that end before the log's start describe nothing it holds.
    while (this.runs.length > 1 && this.runs[1]!.from <= this.firstSeq) this.runs.shift();
  }

  /**
   * Drops every entry after `seq` (they were never committed: a new primary's log does not
   * hold them, storage/replica-core.ts, Failover). Later segments are deleted, the one
   * holding `seq + 1` is cut where that frame starts, and both are made durable before
   * this resolves. The caller has no append in flight.
   */
  async truncateAfter(seq: number): Promise<void> {
    assert.ok(!this.appending, 'truncate during an append');
    if (seq >= this.lastSeq) return;
    assert.ok(seq + 1 >= this.firstSeq, `truncating at ${seq} would cut below the log's start ${this.firstSeq}`);
    await this.close();
    // The segment that holds seq + 1, and where in it that frame starts.
    let lo = 0;
    for (let i = 0; i < this.index.length; i++) if (this.index[i]!.seq <= seq + 1) lo = i;
    const start = this.index[lo]!;
    const file = nodePath.join(this.dir, segmentName(start.segment));
    const buf = await fsp.readFile(file);
    let offset = start.offset;
    for (let expect = start.seq; expect <= seq; expect++) {
      const r = decodeFrameAt(buf, offset);
      assert.ok('frame' in r, `op log ${file} ends before ${seq}`);
      offset += r.bytes;
    }
    // Newest first: a crash part way leaves a log without a gap (its tail is cut again).
    for (const first of this.segments.filter((f) => f > start.segment).reverse()) await fsp.rm(nodePath.join(this.dir, segmentName(first)), { force: true });
    this.segments = this.segments.filter((f) => f <= start.segment);
    if (offset === 0) {
      await fsp.rm(file, { force: true });
      this.segments = this.segments.filter((f) => f !== start.segment);
    } else {
      const fh = await fsp.open(file, 'r+');
      try {
        await fh.truncate(offset);
        await fh.datasync();
      } finally {
        await fh.close();
      }
    }
    const dirFh = await fsp.open(this.dir, 'r');
    try {
      await dirFh.sync();
    } finally {
      await dirFh.close();
    }
    this.index = this.index.filter((p) => p.seq <= seq && this.segments.includes(p.segment));
    this.runs = this.runs.filter((r) => r.from <= seq);
    this.lastSeq = seq;
  }

  /** Full sync: every segment goes; the next append, of `seq + 1`, starts a new one. */
  async reset(seq: number): Promise<void> {
    assert.ok(!this.appending, 'reset during an append');
    await this.close();
    for (const first of this.segments) await fsp.rm(nodePath.join(this.dir, segmentName(first)), { force: true });
    this.segments = [];
    this.index = [];
    this.runs = [];
    this.segmentBytes = 0;
    this.lastSeq = seq;
    const dirFh = await fsp.open(this.dir, 'r');
    try {
      await dirFh.sync();
    } finally {
      await dirFh.close();
    }
  }

  /** Closes the current segment, cut back to its frames (direct I/O pads past them). */
  async close(): Promise<void> {
    const fh = this.fh;
    this.fh = null;
    this.carryValid = false;
    if (!fh) return;
    try {
      if (this.stage) await fh.truncate(this.segmentBytes);
    } finally {
      await fh.close();
    }
  }
}
