/*
 * The launcher's small record files (cluster.json, the supervisor's notes), written so that
 * a crash or a full disk part way leaves a record a reader can use (docs/space.md; the lock
 * beside cluster.json is file-lock.ts):
 *
 * - a record is written whole to a temporary name, fsynced, and renamed over the old one;
 *   the old one stays as `<file>.prev` (a hard link, so no copy), and a reader that finds
 *   the record unreadable (cut short by something other than this writer: an older one,
 *   a machine crash on a file system that lost the data) falls back to it;
 * - a write that fails part way (ENOSPC) removes its temporary file and leaves the record
 *   as it was.
 */
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';

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
 * does not parse is read from `<file>.prev` instead, if that parses; `recovered` says so. Null
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
    // Not written back here: a reader may hold no lock, and the next writer (which does)
    // replaces the damaged record anyway.
    return { value, recovered: true };
  }
}
