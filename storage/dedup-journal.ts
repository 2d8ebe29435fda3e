/*
 * The request-ID table on disk, so that a node that restarts still answers a retry of an
 * op it applied before with the first answer instead of applying it again (DESIGN.md,
 * Writes: exactly-once retries; storage/replica-core.ts keeps the table in memory).
 *
 * `dedup.journal` beside the brick: one JSON line `[reqId, result]` per applied op that
 * carries a request ID, in apply order, written after the brick applied the op and before
 * its applied mark moves (Brick.apply `beforeMark`): a process killed in between replays
 * the op, and lines past the mark are dropped on loading, so the two always agree. No
 * fsync: like the brick's mark it survives a process crash; a crash of the machine may
 * lose the last lines, as it may lose the brick's page cache. When the
 * journal holds twice the table's size, it is rewritten with the newest `entriesMax`
 * (to a temporary file, renamed over the old one). A full sync replaces it with the
 * table copied from the source.
 *
 * One write per op, not one per group of ops, on purpose: the line must be in the file
 * before the brick's applied mark passes its op, and the mark moves op by op because
 * replaying a run of ops is not safe (Brick.appliedSeqMark). Writing a group's lines at
 * once would either let marks pass ops whose lines are not written yet (a process killed
 * then forgets those request IDs, and a retry is applied twice) or hold the mark back over
 * the group (a restart replays the run). Measured, the line costs about 1 µs of a write
 * to the page cache per op, against milliseconds for the op's requests and fdatasync.
 */
import { closeSync, existsSync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import nodePath from 'node:path';
import type { OpResult } from '../common/api';

export const DEDUP_JOURNAL_FILE = 'dedup.journal';

export type DedupEntry = [string, OpResult];

export class DedupJournal {
  private fd: number;
  private lines: number;
  /** The journal's size: where a line that could not be written whole is cut back to. */
  private bytes: number;

  private constructor(
    private readonly file: string,
    private readonly entriesMax: number,
    /** The table as loaded, oldest first (the newest `entriesMax`). */
    readonly loaded: DedupEntry[],
  ) {
    this.lines = loaded.length;
    this.fd = openSync(file, 'a');
    this.bytes = fstatSync(this.fd).size;
  }

  /** Loads the journal in `dir` (none: an empty table), keeping entries applied at or
   * before `appliedSeq` (nothing later can be there; a torn last line is dropped). */
  static open(dir: string, entriesMax: number, appliedSeq: number): DedupJournal {
    const file = nodePath.join(dir, DEDUP_JOURNAL_FILE);
    const table = new Map<string, OpResult>();
    let lines = 0;
    if (existsSync(file)) {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        if (line === '') continue;
        lines++;
        let entry: unknown;
        try {
          entry = JSON.parse(line);
        } catch {
          continue; // a line cut short by a crash
        }
        if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1]?.seq !== 'number') continue;
        const [reqId, result] = entry as DedupEntry;
        if (result.seq > appliedSeq) continue; // the op's mark never moved: it is replayed
        table.delete(reqId); // re-inserted: apply order
        table.set(reqId, result);
      }
    }
    const entries = [...table].slice(-entriesMax);
    const journal = new DedupJournal(file, entriesMax, entries);
    // Anything dropped (a torn line, a replayed op, an old entry) goes before appending.
    if (lines !== entries.length) journal.rewrite(entries);
    return journal;
  }

  /** Records one applied op's first answer. */
  record(reqId: string, result: OpResult): void {
    const line = Buffer.from(JSON.stringify([reqId, result]) + '\n');
    try {
      // A full disk may take part of the line and then refuse the rest (ENOSPC): the part
      // is cut away, so the next line does not run on from it, and the error goes to the
      // caller, which applies the op again once there is room (storage/replica.ts).
      for (let done = 0; done < line.length; ) done += writeSync(this.fd, line, done, line.length - done);
    } catch (e) {
      ftruncateSync(this.fd, this.bytes);
      throw e;
    }
    this.bytes += line.length;
    this.lines++;
  }

  /** Rewrites the journal when it has grown to twice the table (`table`: the core's, in
   * apply order). */
  compact(table: () => DedupEntry[]): void {
    if (this.lines < 2 * this.entriesMax) return;
    try {
      this.rewrite(table().slice(-this.entriesMax));
    } catch (e) {
      // No room for the new copy: the old journal stays whole, and is compacted later.
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOSPC' && code !== 'EDQUOT') throw e;
    }
  }

  /** Replaces the journal with `entries` (durably: a full sync's table, or a compaction). */
  rewrite(entries: DedupEntry[]): void {
    const tmp = `${this.file}.tmp`;
    const fd = openSync(tmp, 'w');
    try {
      const text = Buffer.from(entries.map((e) => JSON.stringify(e)).join('\n') + (entries.length > 0 ? '\n' : ''));
      for (let done = 0; done < text.length; ) done += writeSync(fd, text, done, text.length - done);
      fsyncSync(fd);
    } catch (e) {
      closeSync(fd);
      rmSync(tmp, { force: true });
      throw e;
    }
    closeSync(fd);
    closeSync(this.fd);
    renameSync(tmp, this.file);
    this.fd = openSync(this.file, 'a');
    this.bytes = fstatSync(this.fd).size;
    this.lines = entries.length;
  }

  close(): void {
    closeSync(this.fd);
  }
}
