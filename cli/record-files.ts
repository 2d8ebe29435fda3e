/*
 * The launcher's small record and lock files (cluster.json and its lock), written so that
 * a crash or a full disk part way leaves nothing that blocks the next writer (docs/space.md):
 *
 * - a record is written whole to a temporary name, fsynced, and renamed over the old one;
 *   the old one stays as `<file>.prev` (a hard link, so no copy), and a reader that finds
 *   the record unreadable (cut short by something other than us) falls back to it. A write
 *   that fails part way (ENOSPC) removes its temporary file and leaves the record as it was.
 * - a lock is published complete: the holder's identity is written to a temporary file and
 *   hard-linked to the lock's name, which fails if the lock exists (link(2) is atomic), so
 *   the lock is never seen empty or half-written. A lock whose holder no longer runs is
 *   broken. One that cannot be read as a holder (empty or cut short: an older launcher's,
 *   or a file system that lost the write) is broken once it is older than
 *   LOCK_UNREADABLE_STALE_MS: no live writer of ours ever leaves one like that.
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';

/** An unreadable lock older than this is stale. */
export const LOCK_UNREADABLE_STALE_MS = 2_000;

/** Writes `text` to a temporary file next to `file` and fsyncs it; returns its name. On
 * any failure the temporary file is removed and the error thrown. */
function writeTemp(file: string, text: string): string {
  const temp = `${file}.${process.pid}.tmp`;
  try {
    const fd = openSync(temp, 'w', 0o600);
    try {
      const bytes = Buffer.from(text);
      for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done, bytes.length - done);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
  return temp;
}

/** Replaces `file` with `text` atomically, keeping the version it replaces as `<file>.prev`. */
export function writeRecordFile(file: string, text: string): void {
  const temp = writeTemp(file, text);
  try {
    rmSync(`${file}.prev`, { force: true });
    try {
      linkSync(file, `${file}.prev`);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    renameSync(temp, file);
  } catch (error) {
    rmSync(temp, { force: true });
    throw error;
  }
}

/**
 * Reads a record with `parse` (which throws on a bad one). A record that is there but
 * does not parse is replaced by `<file>.prev` if that parses; `recovered` says so. Null
 * when there is no record at all; throws `parse`'s error when neither parses.
 */
export function readRecordFile<T>(file: string, parse: (text: string) => T): { value: T; recovered: boolean } | null {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  try {
    return { value: parse(text), recovered: false };
  } catch (error) {
    let prev: string;
    try {
      prev = readFileSync(`${file}.prev`, 'utf8');
    } catch {
      throw error;
    }
    let value: T;
    try {
      value = parse(prev);
    } catch {
      throw error;
    }
    // Put the good copy back, so that the next reader and writer start from it.
    writeRecordFile(file, prev);
    return { value, recovered: true };
  }
}

/** What a lock file says of its holder: `<pid> <start time>`, or null if unreadable. */
export function parseLockHolder(text: string): { pid: number; startTime: string } | null {
  const m = /^(\d+) (\S+)$/.exec(text);
  return m ? { pid: Number(m[1]), startTime: m[2]! } : null;
}

/**
 * One attempt to take `lockFile` for `holder` (`<pid> <start time>`). True when taken.
 * Otherwise breaks the lock if it is stale (`holderRuns` says its holder is gone, or it is
 * unreadable and older than LOCK_UNREADABLE_STALE_MS) and returns what it says now ('' if
 * gone or unreadable), for the caller to wait and try again.
 */
export function tryLock(lockFile: string, holder: string, holderRuns: (pid: number, startTime: string) => boolean, nowMs = Date.now()): true | string {
  const temp = writeTemp(lockFile, holder);
  try {
    linkSync(temp, lockFile);
    return true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    rmSync(temp, { force: true });
  }
  let text: string;
  let mtimeMs: number;
  try {
    text = readFileSync(lockFile, 'utf8');
    mtimeMs = statSync(lockFile).mtimeMs;
  } catch {
    return ''; // released meanwhile
  }
  const other = parseLockHolder(text);
  if (other === null ? nowMs - mtimeMs >= LOCK_UNREADABLE_STALE_MS : !holderRuns(other.pid, other.startTime)) {
    rmSync(lockFile, { force: true });
  }
  return text;
}
