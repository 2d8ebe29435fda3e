/*
 * Calls on an open file that libfuse 2 passes without its handle: fstat(2) reaches the
 * mount as a getattr of the name libfuse knows for the file's node (the kernel sends its
 * GETATTR without the file, fuse_getattr), and fchmod(2) as a chmod of it followed by such
 * a getattr. That name is stale once another mount renamed the file, or a directory above
 * it. The mount tells these calls from their path-based twins by the calling thread's
 * current system call (mount/proc-syscall.ts), and then addresses the
 * file by the inode of a handle open on that name, as every other call on an open file
 * does (docs/api.md, Open files).
 */
import { arch } from 'node:os';
import { blockedSyscall } from './proc-syscall';

/** The kernel's syscall numbers by architecture: calls on a descriptor alone, and the
 * *at calls that act on their descriptor when given AT_EMPTY_PATH (with the index of their
 * flags argument). */
const FD_SYSCALLS: Record<string, { fd: number[]; emptyPathAt: Array<[number, number]> }> = {
  // fstat, fchmod; newfstatat (flags: 4th), statx (flags: 3rd)
  x64: { fd: [5, 91], emptyPathAt: [[262, 3], [332, 2]] },
  arm64: { fd: [80, 52], emptyPathAt: [[79, 3], [291, 2]] },
};
const AT_EMPTY_PATH = 0x1000;

/** Whether the thread `tid` is blocked in fstat, fchmod, or an fstatat or statx on its
 * descriptor (AT_EMPTY_PATH) right now; false when /proc cannot say (the call then goes by
 * its path, as before). */
export function inFdSyscall(tid: number): boolean {
  const table = FD_SYSCALLS[arch()];
  const call = table ? blockedSyscall(tid) : null;
  if (!table || !call) return false;
  if (table.fd.includes(call.number)) return true;
  const at = table.emptyPathAt.find(([number]) => number === call.number);
  if (!at) return false;
  const flags = Number.parseInt(call.args[at[1]] ?? '', 16);
  return Number.isInteger(flags) && (flags & AT_EMPTY_PATH) !== 0;
}
