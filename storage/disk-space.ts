/*
 * How much room a storage node has, and the reserve that keeps a full node recoverable
 * (docs/space.md). The driver consults it; the replication core only hears its verdict
 * (the `space` event of storage/replica-core.ts).
 *
 * Two margins, both counted as used in what `statfs` tells clients:
 * - the reserve: a file of `reserveBytes` written (zeros, fsynced) beside the log, so its
 *   blocks are this node's whatever else fills the file system (the other nodes of a
 *   `dfs local` sharing it, Redis, anyone). When an append or an apply meets ENOSPC, the
 *   driver releases it (truncates it to nothing) and tries again once; the node then holds
 *   that room for the ops that free space. It is made again once there is room for it
 *   above the floor.
 * - the floor: below `floorBytes` free, or while the reserve is not whole, the node is
 *   `low`: as primary it admits only ops that free space or need none (unlink, rmdir,
 *   truncate…: replica-core.ts, opAdmittedWhenLow), so a full cluster still takes `rm`.
 * Within a second floor of the first (`tight`), the op log already keeps only what it must,
 * so that its catch-up window is given up before any write is refused.
 * `full` is worse: a log append failed even with the reserve released. A backup then
 * refuses batches (NO_SPACE) and leaves the in-sync set; a primary stops appending. The
 * node leaves `full` when a poll finds room again (at least the floor free).
 *
 * Free space is read with statfs every `pollMs`, never per op. The primary counts the ops
 * it admitted and has not yet answered (`noteAdmitted`, `noteSettled`: an answered op is
 * in every in-sync log and in its brick) as if every byte were written ESTIMATE_FACTOR
 * times (log and brick, on up to three nodes sharing one file system) and not yet counted
 * by statfs, and reads free space again early once a quarter of the floor was admitted
 * since the last read. What that misses (backups applying late, other writers) falls in
 * the floor; a miss past it, in the reserve.
 */
import { promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import type { StatFs } from '../common/api';
import type { Logger } from '../common/log';
import type { SpaceState } from './replica-core';

export type { SpaceState } from './replica-core';

export interface SpaceConfig {
  /** Bytes of the preallocated reserve file. */
  reserveBytes: number;
  /** Free bytes below which only ops that free space are admitted. */
  floorBytes: number;
  /** How often free space is read. */
  pollMs: number;
}

export const RESERVE_FILE = 'space.reserve';
/** Each admitted byte counts this many times until the next statfs: the log and the brick,
 * on three nodes that may share one file system. */
export const ESTIMATE_FACTOR = 6;
/** The reserve is written in chunks of this size. */
const RESERVE_CHUNK_BYTES = 1024 * 1024;

/** The defaults scale with the file system: a reserve of 1/64 of it (1 MiB to 64 MiB) and
 * a floor of 1/16 (4 MiB to 1 GiB), so a small test file system is not all margin. */
export function defaultSpaceConfig(totalBytes: number): SpaceConfig {
  const clamp = (v: number, lo: number, hi: number) => Math.max(lo, Math.min(hi, Math.floor(v)));
  return {
    reserveBytes: clamp(totalBytes / 64, 1 << 20, 64 << 20),
    floorBytes: clamp(totalBytes / 16, 4 << 20, 1 << 30),
    pollMs: 1000,
  };
}

export function validateSpaceConfig(c: SpaceConfig): void {
  for (const [name, value] of Object.entries(c)) {
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`space config ${name} must be a non-negative integer, not ${value}`);
  }
  if (c.pollMs < 10) throw new Error('space config pollMs must be at least 10');
}

/** The free bytes a statfs answer gives an unprivileged writer. */
function availOf(s: { bavail: number; bsize: number }): number {
  return s.bavail * s.bsize;
}

export class SpaceGuard {
  private availBytes = Number.MAX_SAFE_INTEGER;
  /** Admitted by the primary and not yet answered. */
  private inFlightBytes = 0;
  /** Admitted since the last statfs (to read it again early). */
  private sincePollBytes = 0;
  private reserveHeld = 0;
  private noRoom = false;
  /** Counts markFull calls: a statfs begun before the latest one cannot clear it. */
  private fullMarks = 0;
  private polling: Promise<void> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private last: SpaceState = 'ok';
  private lastTight = false;
  private readonly reserveFile: string;

  constructor(
    private readonly dir: string,
    readonly config: SpaceConfig,
    private readonly logger: Logger,
    /** Called when the state changes, with the new one. */
    private readonly onChange: (state: SpaceState) => void = () => undefined,
    /** Called when `tight` changes, with the new value. */
    private readonly onTight: (tight: boolean) => void = () => undefined,
  ) {
    validateSpaceConfig(config);
    this.reserveFile = nodePath.join(dir, RESERVE_FILE);
  }

  /** Makes the reserve (as much of it as fits), reads free space, and starts polling. */
  async start(): Promise<void> {
    try {
      this.reserveHeld = (await fsp.stat(this.reserveFile)).size;
    } catch {
      this.reserveHeld = 0;
    }
    await this.poll();
    this.timer = setInterval(() => void this.poll(), this.config.pollMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  get state(): SpaceState {
    if (this.noRoom) return 'full';
    if (this.reserveHeld < this.config.reserveBytes) return 'low';
    return this.availBytes - this.inFlightBytes * ESTIMATE_FACTOR < this.config.floorBytes ? 'low' : 'ok';
  }

  /** Bytes of the reserve held now. */
  get reserveBytesHeld(): number {
    return this.reserveHeld;
  }

  /** The primary admitted an op carrying `bytes`: counted until `noteSettled`. */
  noteAdmitted(bytes: number): void {
    this.inFlightBytes += bytes;
    this.sincePollBytes += bytes;
    this.report();
    if (this.sincePollBytes * ESTIMATE_FACTOR >= this.config.floorBytes / 4) void this.poll();
  }

  /** An op counted by `noteAdmitted` was answered (applied, or refused). */
  noteSettled(bytes: number): void {
    this.inFlightBytes -= bytes;
    this.report();
  }

  /** An append or apply met ENOSPC: frees the reserve for it. False when there was none
   * left to free (the caller is out of room). */
  async release(): Promise<boolean> {
    if (this.reserveHeld === 0) return false;
    const fh = await fsp.open(this.reserveFile, 'r+');
    try {
      await fh.truncate(0);
      // ext4 reuses freed blocks only once the journal commits the truncate.
      await fh.sync();
    } finally {
      await fh.close();
    }
    this.logger.warn({ reserveBytes: this.reserveHeld }, 'out of space: released the reserve; only ops that free space are admitted');
    this.reserveHeld = 0;
    this.report();
    return true;
  }

  /** A log append failed with the reserve released: `full` until a poll finds room. */
  markFull(): void {
    if (!this.noRoom) this.logger.error({ availBytes: this.availBytes }, 'out of space with no reserve left: the log cannot grow');
    this.noRoom = true;
    this.fullMarks++;
    this.report();
  }

  /** What clients see: the floor counted as used (the reserve file is, being a file). */
  statfs(raw: StatFs): StatFs {
    const floorBlocks = Math.ceil(this.config.floorBytes / raw.bsize);
    return { ...raw, bfree: Math.max(0, raw.bfree - floorBlocks), bavail: Math.max(0, raw.bavail - floorBlocks) };
  }

  /** Reads free space now (one statfs, or the one under way). */
  poll(): Promise<void> {
    this.polling ??= this.pollOnce()
      .catch((err: unknown) => this.logger.warn({ err: String(err) }, 'reading free space failed'))
      .finally(() => {
        this.polling = null;
      });
    return this.polling;
  }

  private async pollOnce(): Promise<void> {
    this.sincePollBytes = 0;
    const marks = this.fullMarks;
    const s = await fsp.statfs(this.dir);
    this.availBytes = availOf(s);
    if (this.noRoom && marks === this.fullMarks && this.availBytes >= this.config.floorBytes) {
      this.noRoom = false;
      this.logger.info({ availBytes: this.availBytes }, 'space is back: the log may grow again');
    }
    const missing = this.config.reserveBytes - this.reserveHeld;
    if (missing > 0 && this.availBytes >= this.config.floorBytes + missing) await this.makeReserve();
    this.report();
  }

  /** Writes the reserve up to its size; stops short (keeping what it wrote) when full. */
  private async makeReserve(): Promise<void> {
    const fh = await fsp.open(this.reserveFile, 'a');
    try {
      let size = (await fh.stat()).size;
      const zeros = Buffer.alloc(RESERVE_CHUNK_BYTES);
      try {
        while (size < this.config.reserveBytes) {
          const n = Math.min(zeros.length, this.config.reserveBytes - size);
          size += (await fh.write(zeros, 0, n)).bytesWritten;
        }
        await fh.sync();
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOSPC' && code !== 'EDQUOT') throw e;
        size = (await fh.stat()).size;
      }
      if (this.reserveHeld < this.config.reserveBytes && size >= this.config.reserveBytes) this.logger.info({ reserveBytes: size }, 'space reserve in place');
      this.reserveHeld = size;
    } finally {
      await fh.close();
    }
    this.availBytes = availOf(await fsp.statfs(this.dir));
  }

  /**
   * Whether the op log should keep no more than it must (OpLog.setTight): short of space,
   * or within a second floor of it. Trimming before the floor is reached, not after,
   * means a write is refused for want of room in the bricks, not for the log's catch-up
   * window, which would be given back a moment later.
   */
  get tight(): boolean {
    return this.state !== 'ok' || this.availBytes - this.inFlightBytes * ESTIMATE_FACTOR < 2 * this.config.floorBytes;
  }

  private report(): void {
    const tight = this.tight;
    if (tight !== this.lastTight) {
      this.lastTight = tight;
      this.onTight(tight);
    }
    const now = this.state;
    if (now === this.last) return;
    this.last = now;
    this.onChange(now);
  }
}
