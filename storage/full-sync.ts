/*
 * Full sync (DESIGN.md, Gaps, holes and catch-up): a node whose history no peer's log
 * still holds (the primary said so with `/node/v1/sync-required`, or the node was new, or
 * it restarted in the middle of a sync) throws its brick away and copies an in-sync
 * peer's, with the request-ID table that goes with it.
 *
 * Both sides, in order:
 *
 *   receiver                                     source (an in-sync node, a backup if any)
 *   beginSync: refuse, stop log and apply
 *   write sync.json (fsync)   ── GET /node/v1/snapshot ──>  hold apply where it stands (S)
 *                                                            count the brick (entries, bytes)
 *   into brick.sync/          <── frames: counting…          (only while a count runs long)
 *     progress vs the totals      begin {S, total}            (writes go on: the log grows,
 *     SnapshotWriter.put          dedup {entries}…            the brick waits)
 *     (files fsynced)             brick entries…  (storage/snapshot.ts, streamed, bounded)
 *                                 end {S, count} ──────────  release
 *   finish: dir times, fsync
 *   swap: brick -> brick.old, brick.sync -> brick, fsync the data dir, chdir into it
 *   empty the log at S; state.json {appliedSeq: S} (fsync); remove sync.json (fsync)
 *   finishSync(S, dedup): the primary feeds it from S + 1, from memory or its log
 *
 * A crash anywhere before sync.json is removed leaves the marker: at start-up
 * (`discardInterruptedSync`) the node wipes brick, brick.sync, brick.old and its log and
 * starts from nothing, and syncs again before it serves anything; never half a tree. The
 * brick is copied as a stream of frames: memory stays bounded by a few frames however big
 * it is (the request-ID table, up to `dedupEntriesMax` entries, is held whole).
 *
 * Progress (`progress`, in the heartbeat, so in `dfs status`): names written and content
 * bytes (a chunk's data, a hole's length) against the totals the source counted in its
 * held brick and put in the begin frame, with the rate over the last few seconds; a copy
 * that does not add up to its totals is refused like one cut short. The last finished copy
 * stays in `lastFinished`, for `dfs node sync-progress` to show it reach its end.
 *
 * A failed attempt (the source died, the stream was cut, the source is not in sync) is
 * tried again after SYNC_RETRY_MS with the next candidate, for as long as it takes.
 */
import { removeTree } from './deep-path';
import { DEDUP_JOURNAL_FILE } from './dedup-journal';
import { promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import type { Membership, OpResult, SyncProgress } from '../common/api';
import { DfsError } from '../common/errors';
import type { Logger } from '../common/log';
import type { Brick } from './brick';
import type { NodeStateFile } from './node-state';
import type { OpLog } from './op-log';
import type { HTTP2PeerTransport } from './peer-client';
import type { Replica } from './replica';
import { FrameStreamDecoder } from '../common/frame';
import { SnapshotWriter } from './snapshot';
import { RateWindow } from '../common/rate-window';

export type { SyncProgress };

const MARKER = 'sync.json';
/** Between attempts that failed. */
const SYNC_RETRY_MS = 1000;
/** Nothing from the source for this long ends the attempt. */
const SNAPSHOT_IDLE_MS = 30_000;
/** The request-ID table travels in frames of about this many bytes of header each. */
export const SNAPSHOT_DEDUP_FRAME_BYTES = 32 * 1024;

/** The frames around the brick's entries (storage/snapshot.ts) in a snapshot stream. */
export type SnapshotControl =
  | { sync: 'counting'; entries: number }
  | { sync: 'begin'; seq: number; nodeId: string; total?: { entries: number; bytes: number } }
  | { sync: 'dedup'; entries: Array<[string, OpResult]> }
  | { sync: 'end'; seq: number; entries: number };

/** Samples of the copied bytes over this window give the rate reported. */
const RATE_WINDOW_MS = 5000;
/** How often the progress (and its rate) is brought up to date while bytes arrive. */
const PROGRESS_UPDATE_MS = 250;
/** How often a copy in progress is logged. */
const PROGRESS_LOG_MS = 5000;

export interface FullSyncDeps {
  nodeId: string;
  dataDir: string;
  brick: Brick;
  log: OpLog;
  stateFile: NodeStateFile;
  replica: Replica;
  transport: HTTP2PeerTransport;
  logger: Logger;
  /** The membership this node holds now. */
  membership: () => Membership | null;
}

/** At start-up, before the brick and log are opened: true when a sync was under way and
 * everything it may have half-replaced has been wiped (the node must sync before serving). */
export async function discardInterruptedSync(dataDir: string): Promise<boolean> {
  try {
    await fsp.access(nodePath.join(dataDir, MARKER));
  } catch {
    return false;
  }
  // removeTree: a brick may be deeper than PATH_MAX, which fs.rm cannot remove.
  for (const name of ['brick', 'brick.sync', 'brick.old', 'wal', DEDUP_JOURNAL_FILE]) await removeTree(nodePath.join(dataDir, name));
  await fsp.rm(nodePath.join(dataDir, 'state.json'), { force: true });
  await syncDir(dataDir);
  return true;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

export class FullSync {
  /** The attempt under way, for heartbeats and `dfs status`; null when not syncing. */
  progress: SyncProgress | null = null;
  /** The last sync this process finished, kept so that a watcher sees it reach its end. */
  lastFinished: SyncProgress | null = null;
  /** Snapshot bytes received by every attempt since the process started (metrics). */
  copiedBytesTotal = 0;
  private running = false;
  private stopped = false;
  private readonly abort = new AbortController();

  constructor(private readonly d: FullSyncDeps) {}

  get active(): boolean {
    return this.running;
  }

  /** Starts a full sync unless one is running; it retries until it succeeds or `stop`. */
  start(reason: string): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.d.logger.warn({ reason }, 'full sync: discarding this brick and copying an in-sync peer');
    void this.loop().finally(() => {
      this.running = false;
      this.progress = null;
    });
  }

  stop(): void {
    this.stopped = true;
    this.abort.abort();
  }

  private async loop(): Promise<void> {
    await this.d.replica.beginSync();
    let attempt = 0;
    while (!this.stopped) {
      const source = this.pickSource(attempt++);
      if (source) {
        try {
          await this.syncFrom(source.id, source.url);
          return;
        } catch (err) {
          if (this.stopped) return;
          this.d.logger.warn({ source: source.id, err: String(err) }, 'full sync attempt failed; trying again');
        }
      } else {
        this.d.logger.warn({}, 'full sync: no in-sync peer to copy from yet');
      }
      await new Promise((r) => setTimeout(r, SYNC_RETRY_MS));
    }
  }

  /** An in-sync backup, turn by turn; the primary only when there is none, since a held
   * primary stops applying and so every write waits until the copy is done. */
  private pickSource(attempt: number): { id: string; url: string } | null {
    const m = this.d.membership();
    if (!m) return null;
    const backups = m.inSync.filter((id) => id !== this.d.nodeId && id !== m.primary).sort();
    const ids = backups.length > 0 ? backups : m.inSync.filter((id) => id !== this.d.nodeId);
    if (ids.length === 0) return null;
    const id = ids[attempt % ids.length]!;
    return { id, url: m.nodes[id]! };
  }

  private async syncFrom(sourceId: string, url: string): Promise<void> {
    const { dataDir, brick, log, stateFile, replica, logger } = this.d;
    const progress: SyncProgress = { source: sourceId, startedAtMs: Date.now(), seq: null, entries: 0, bytes: 0, totalEntries: null, totalBytes: null, bytesPerSecond: 0 };
    this.progress = progress;
    await fsp.writeFile(nodePath.join(dataDir, MARKER), JSON.stringify({ source: sourceId, startedAtMs: progress.startedAtMs }));
    await syncDir(dataDir);
    const target = nodePath.join(dataDir, 'brick.sync');
    await removeTree(target);
    const writer = await SnapshotWriter.create(target);
    const decoder = new FrameStreamDecoder();
    const dedup: Array<[string, OpResult]> = [];
    let begin: number | null = null;
    let end: { seq: number; entries: number } | null = null;
    let frames = 0;
    const rate = new RateWindow(RATE_WINDOW_MS);
    let lastUpdateMs = 0;
    let lastLogMs = Date.now();
    const body = await this.d.transport.snapshot(url, replica.epoch, this.d.nodeId, SNAPSHOT_IDLE_MS, this.abort.signal);
    for await (const chunk of body) {
      this.copiedBytesTotal += chunk.length;
      for (const frame of decoder.push(chunk)) {
        const h = frame.header as Partial<SnapshotControl> & Record<string, unknown>;
        if (end !== null) throw new DfsError('BAD_REQUEST', 'snapshot continues after its end');
        if (h.sync === 'counting') {
          // The source is still counting its brick for the totals: a sign of life.
          if (begin !== null) throw new DfsError('BAD_REQUEST', 'snapshot has a counting frame after its begin');
        } else if (h.sync === 'begin') {
          if (begin !== null || typeof h.seq !== 'number') throw new DfsError('BAD_REQUEST', 'snapshot has a bad begin frame');
          begin = h.seq;
          progress.seq = begin;
          const total = h.total;
          if (total !== undefined) {
            if (!isCount(total?.entries) || !isCount(total.bytes)) throw new DfsError('BAD_REQUEST', 'snapshot has bad totals in its begin frame');
            progress.totalEntries = total.entries;
            progress.totalBytes = total.bytes;
          }
        } else if (begin === null) {
          throw new DfsError('BAD_REQUEST', 'snapshot does not start with a begin frame');
        } else if (h.sync === 'dedup') {
          if (!Array.isArray(h.entries) || frames > 0) throw new DfsError('BAD_REQUEST', 'snapshot has a bad request-ID frame');
          dedup.push(...(h.entries as Array<[string, OpResult]>));
        } else if (h.sync === 'end') {
          end = { seq: Number(h.seq), entries: Number(h.entries) };
        } else {
          const entry = await writer.put(frame.header, frame.data);
          frames++;
          // Names count as entries; content (a chunk's bytes, a hole's length) as bytes.
          if (entry.type === 'chunk') progress.bytes += frame.data.length;
          else if (entry.type === 'hole') progress.bytes += entry.size;
          else progress.entries++;
        }
      }
      const now = Date.now();
      if (now - lastUpdateMs >= PROGRESS_UPDATE_MS) {
        lastUpdateMs = now;
        progress.bytesPerSecond = rate.note(now, progress.bytes);
      }
      if (now - lastLogMs >= PROGRESS_LOG_MS) {
        lastLogMs = now;
        logger.info({ source: sourceId, seq: begin, entries: progress.entries, totalEntries: progress.totalEntries, bytes: progress.bytes, totalBytes: progress.totalBytes, bytesPerSecond: Math.round(progress.bytesPerSecond) }, 'full sync: copying');
      }
    }
    decoder.end();
    if (begin === null || end === null || end.seq !== begin || end.entries !== frames) {
      throw new DfsError('UNAVAILABLE', `snapshot from ${sourceId} was cut short (${frames} frames)`);
    }
    if (progress.totalEntries !== null && (progress.entries !== progress.totalEntries || progress.bytes !== progress.totalBytes)) {
      throw new DfsError('UNAVAILABLE', `snapshot from ${sourceId} announced ${progress.totalEntries} entries and ${progress.totalBytes} bytes but sent ${progress.entries} and ${progress.bytes}`);
    }
    await writer.finish();
    await syncDir(target);
    // Swap the copy in. Until the marker goes, a crash restarts the sync from nothing.
    const live = nodePath.join(dataDir, 'brick');
    const old = nodePath.join(dataDir, 'brick.old');
    await removeTree(old);
    await fsp.rename(live, old);
    await fsp.rename(target, live);
    await syncDir(dataDir);
    await brick.reattach();
    await log.reset(begin);
    replica.journalDedup(dedup);
    await stateFile.save({ nodeId: this.d.nodeId, epoch: replica.epoch, appliedSeq: begin }, true);
    await fsp.rm(nodePath.join(dataDir, MARKER));
    await syncDir(dataDir);
    replica.finishSync(begin, dedup);
    const ms = Date.now() - progress.startedAtMs;
    this.lastFinished = { ...progress, bytesPerSecond: ms > 0 ? (progress.bytes * 1000) / ms : 0, finishedAtMs: Date.now() };
    logger.info({ source: sourceId, seq: begin, entries: progress.entries, bytes: progress.bytes, ms }, 'full sync finished');
    await removeTree(old).catch((err: unknown) => logger.warn({ err: String(err) }, 'could not remove the old brick'));
  }
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

