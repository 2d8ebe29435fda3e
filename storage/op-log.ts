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
 * Recovery reads the segments in order. A torn tail (a frame cut short by a crash) is the
 * end of the log and is truncated away; a checksum mismatch anywhere else is damage, and
 * the node refuses to start rather than serve a wrong history.
 */
import { promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import assert from 'node:assert/strict';
import { decodeFrameAt, encodeFrame } from '../common/frame';
import { parseSequencedOpHeader, type SequencedOpHeader } from '../common/ops';

export interface LogEntry {
  header: SequencedOpHeader;
  data: Buffer;
  /** The entry's frame, encoded once and shared by the log and every peer. */
  frame?: Buffer;
}

export function frameOf(e: LogEntry): Buffer {
  e.frame ??= encodeFrame(e.header, e.data);
  return e.frame;
}

export interface OpLogConfig {
  segmentBytesMax: number;
  keepOps: number;
}

const SEGMENT_SUFFIX = '.wal';

function segmentName(firstSeq: number): string {
  return String(firstSeq).padStart(20, '0') + SEGMENT_SUFFIX;
}

export class OpLog {
  private segments: number[] = []; // first sequence ID of each segment, ascending
  private fh: fsp.FileHandle | null = null;
  private segmentBytes = 0;
  private appending = false;
  lastSeq = 0;

  private constructor(
    private readonly dir: string,
    private readonly config: OpLogConfig,
  ) {}

  /** Opens the log, recovering it; returns the entries with sequence IDs above `fromSeq`. */
  static async open(dir: string, config: OpLogConfig, fromSeq: number): Promise<{ log: OpLog; entries: LogEntry[] }> {
    await fsp.mkdir(dir, { recursive: true });
    const log = new OpLog(dir, config);
    const names = (await fsp.readdir(dir)).filter((n) => n.endsWith(SEGMENT_SUFFIX)).sort();
    const entries: LogEntry[] = [];
    for (const [i, name] of names.entries()) {
      const file = nodePath.join(dir, name);
      const buf = await fsp.readFile(file);
      let offset = 0;
      while (offset < buf.length) {
        const r = decodeFrameAt(buf, offset);
        if ('incomplete' in r) break;
        if ('corrupt' in r) throw new Error(`op log ${file} is damaged at byte ${offset}: ${r.corrupt}`);
        const header = parseSequencedOpHeader(r.frame.header);
        assert.ok(log.lastSeq === 0 || header.seq === log.lastSeq + 1, `op log gap: ${log.lastSeq} then ${header.seq}`);
        log.lastSeq = header.seq;
        // Copy: the entry outlives the segment buffer we read it from.
        if (header.seq > fromSeq) entries.push({ header, data: Buffer.from(r.frame.data) });
        offset += r.bytes;
      }
      if (offset < buf.length) {
        assert.ok(i === names.length - 1, `op log ${file} has a torn record but is not the last segment`);
        await fsp.truncate(file, offset);
      }
      log.segments.push(Number(name.slice(0, -SEGMENT_SUFFIX.length)));
    }
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
      if (!this.fh || this.segmentBytes >= this.config.segmentBytesMax) await this.roll(entries[0]!.header.seq);
      const fh = this.fh!;
      let bytes = 0;
      for (const f of frames) bytes += f.length;
      await fh.writev(frames);
      await fh.datasync();
      this.segmentBytes += bytes;
      this.lastSeq = seq;
    } finally {
      this.appending = false;
    }
  }

  private async roll(firstSeq: number): Promise<void> {
    if (this.fh) await this.fh.close();
    const isNew = !this.segments.includes(firstSeq);
    const last = this.segments[this.segments.length - 1];
    // Reopen the newest segment after a restart instead of starting a tiny new one.
    const seg = !this.fh && last !== undefined ? last : firstSeq;
    this.fh = await fsp.open(nodePath.join(this.dir, segmentName(seg)), 'a');
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

  /** Deletes segments whose ops are all applied and outside the catch-up window. */
  async trim(appliedSeq: number): Promise<void> {
    const keepFrom = appliedSeq - this.config.keepOps;
    while (this.segments.length > 1 && this.segments[1]! - 1 <= keepFrom) {
      const first = this.segments.shift()!;
      await fsp.rm(nodePath.join(this.dir, segmentName(first)), { force: true });
    }
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
  }
}
