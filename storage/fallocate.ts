/*
 * fallocate(2) on a brick file. Node has no fallocate, and no well-kept npm package
 * exposes it, so the brick runs util-linux's fallocate(1) on the file it has open, passed
 * to the child as its descriptor 3 and named `/dev/fd/3` (which reopens that very file, so
 * a path of any depth or bytes does not matter). The program is on every Linux host that
 * has util-linux; a call costs a process start (a few milliseconds), which a call that
 * databases and download tools make once per file can bear, and which apply, synchronous
 * like every other brick call, spends waiting.
 *
 * The outcome is the system call's: fallocate(1) reports a failure as "fallocate failed:
 * <strerror>", which is mapped back to the errno's name (only the ones fallocate(2) gives).
 */
import { spawnSync } from 'node:child_process';
import { FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE } from '../common/ops';

/** Where util-linux installs it on Debian (and everywhere else: /usr/bin). */
const FALLOCATE_BIN = '/usr/bin/fallocate';
/** A call that takes longer is a stuck disk: the node crashes rather than wait forever. */
const FALLOCATE_TIMEOUT_MS = 60_000;

/** strerror(3) texts of the errors fallocate(2) gives, by errno name. */
const ERRNO_TEXTS: ReadonlyArray<[string, string]> = [
  ['EOPNOTSUPP', 'Operation not supported'],
  ['ENOSPC', 'No space left on device'],
  ['EFBIG', 'File too large'],
  ['EINVAL', 'Invalid argument'],
  ['EDQUOT', 'Disk quota exceeded'],
  ['EPERM', 'Operation not permitted'],
  ['ETXTBSY', 'Text file busy'],
  ['EIO', 'Input/output error'],
];

function errnoError(code: string, message: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: ${message}`) as NodeJS.ErrnoException;
  e.code = code;
  return e;
}

/** The fallocate(1) options for a mode of FALLOCATE_MODES (common/ops.ts). */
export function fallocateArgs(mode: number, offset: number, size: number): string[] {
  const args: string[] = [];
  if (mode & FALLOC_FL_PUNCH_HOLE) args.push('--punch-hole'); // implies --keep-size
  else {
    if (mode & FALLOC_FL_ZERO_RANGE) args.push('--zero-range');
    if (mode & FALLOC_FL_KEEP_SIZE) args.push('--keep-size');
  }
  return [...args, '--offset', String(offset), '--length', String(size), '/dev/fd/3'];
}

/** fallocate(fd, mode, offset, size); throws an errno error as the system call fails. */
export function fallocateSync(fd: number, mode: number, offset: number, size: number): void {
  const r = spawnSync(FALLOCATE_BIN, fallocateArgs(mode, offset, size), {
    stdio: ['ignore', 'ignore', 'pipe', fd],
    encoding: 'utf8',
    timeout: FALLOCATE_TIMEOUT_MS,
  });
  if (r.error) throw r.error;
  if (r.status === 0) return;
  const text = r.stderr ?? '';
  const known = ERRNO_TEXTS.find(([, t]) => text.includes(t));
  if (known) throw errnoError(known[0], text.trim());
  throw new Error(`fallocate(1) failed (${r.signal ?? r.status}): ${text.trim()}`);
}
