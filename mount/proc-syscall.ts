/*
 * The system call a thread is blocked in, from /proc/<tid>/syscall (proc(5)): while the
 * kernel waits on a FUSE request, the calling thread sits in the call that made it, so the
 * mount can tell calls apart that reach it alike (mount/orphans.ts: a rename; mount/
 * fd-calls.ts: fstat and fchmod on a descriptor).
 */
import { readFileSync } from 'node:fs';

/** The call's number and its arguments (hex text, six of them, then sp and pc); null when
 * /proc cannot say or the thread is in no system call ("-1 …" or "running"). */
export function blockedSyscall(tid: number): { number: number; args: string[] } | null {
  if (!(tid > 0)) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${tid}/syscall`, 'latin1');
  } catch {
    return null;
  }
  const fields = text.trim().split(' ');
  const n = Number.parseInt(fields[0] ?? '', 10);
  return Number.isInteger(n) && n >= 0 ? { number: n, args: fields.slice(1) } : null;
}
