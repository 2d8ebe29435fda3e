/*
 * Why the supervisor cannot restart a process, for `dfs local status` to show (issue 16:
 * a disk that filled left a lock that blocked every restart, and nothing said so outside
 * the supervisor's log). <dataDir>/supervisor-notes.json maps `kind:id` to the last
 * failure; only the supervisor writes it (whole, record-files.ts), when a restart fails
 * or a failing one succeeds, never per poll. Writing it is best effort: on a full disk
 * the supervisor's log still says why.
 */
import { join } from 'node:path';
import { readRecordFile, writeRecordFile } from './record-files';

export const SUPERVISOR_NOTES_FILE = 'supervisor-notes.json';

export interface RestartProblem {
  /** The error of the last attempt. */
  error: string;
  /** When restarts began to fail (ISO time), and how many attempts failed since. */
  since: string;
  failures: number;
}

export type RestartProblems = Record<string, RestartProblem>;

export function restartProblemKey(kind: string, id: string): string {
  return `${kind}:${id}`;
}

/** What the supervisor last wrote; {} when nothing is, or it cannot be read. */
export function readRestartProblems(dataDir: string): RestartProblems {
  try {
    const read = readRecordFile(join(dataDir, SUPERVISOR_NOTES_FILE), (text) => {
      const value = JSON.parse(text) as unknown;
      if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new Error('not an object');
      return value as RestartProblems;
    });
    return read?.value ?? {};
  } catch {
    return {};
  }
}

/** The supervisor's side: remembers failures in memory and writes them when they change. */
export class RestartNotes {
  private readonly problems: RestartProblems = {};

  constructor(
    private readonly dataDir: string,
    private readonly onWriteError: (error: Error) => void,
  ) {}

  failed(kind: string, id: string, error: string, now = new Date()): void {
    const key = restartProblemKey(kind, id);
    const old = this.problems[key];
    this.problems[key] = { error, since: old?.since ?? now.toISOString(), failures: (old?.failures ?? 0) + 1 };
    this.write();
  }

  started(kind: string, id: string): void {
    const key = restartProblemKey(kind, id);
    if (this.problems[key] === undefined) return;
    delete this.problems[key];
    this.write();
  }

  private write(): void {
    try {
      writeRecordFile(join(this.dataDir, SUPERVISOR_NOTES_FILE), JSON.stringify(this.problems, null, 2) + '\n');
    } catch (error) {
      this.onWriteError(error as Error);
    }
  }
}
