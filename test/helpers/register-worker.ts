/*
 * One client of the partition tests (test/e2e/partitions-*.test.ts), run as its own process
 * so that a call blocked in FUSE holds up nobody else: a writer overwrites its own
 * register (a file of REGISTER_BYTES, rewritten in place: open, pwrite at 0, close) with
 * unique values one after another; a reader reads random registers. Every operation is
 * printed as a JSON line (RegisterOp: invocation and completion times, value, success)
 * for the checker (test/helpers/register-checker.ts), until `--until` (ms since the epoch).
 *
 *   node register-worker.js write DIR REGISTER ID UNTIL
 *   node register-worker.js read DIR REG1,REG2,… ID UNTIL
 */
import { promises as fsp } from 'node:fs';
import { join } from 'node:path';
import { REGISTER_BYTES, type RegisterOp } from './register-checker';

const [role, dir, registers, id, untilText] = process.argv.slice(2) as [string, string, string, string, string];
const until = Number(untilText);
const emit = (op: RegisterOp) => process.stdout.write(JSON.stringify(op) + '\n');
/** A pause between operations, so that a busy loop does not starve the machine. */
const THINK_MS = 20;

async function writeOnce(path: string, value: string): Promise<void> {
  const fh = await fsp.open(path, 'r+');
  try {
    await fh.write(Buffer.from(value.padEnd(REGISTER_BYTES, ' ')), 0, REGISTER_BYTES, 0);
  } finally {
    await fh.close();
  }
}

async function readOnce(path: string): Promise<string> {
  const fh = await fsp.open(path, 'r');
  try {
    const buf = Buffer.alloc(REGISTER_BYTES);
    const { bytesRead } = await fh.read(buf, 0, REGISTER_BYTES, 0);
    return buf.subarray(0, bytesRead).toString().trim();
  } finally {
    await fh.close();
  }
}

async function main(): Promise<void> {
  const regs = registers.split(',');
  let n = 0;
  while (Date.now() < until) {
    const register = role === 'write' ? regs[0]! : regs[Math.floor(Math.random() * regs.length)]!;
    const path = join(dir, register);
    const invokeMs = Date.now();
    if (role === 'write') {
      const value = `${id}-${++n}`;
      try {
        await writeOnce(path, value);
        emit({ kind: 'write', register, value, invokeMs, completeMs: Date.now(), ok: true });
      } catch {
        emit({ kind: 'write', register, value, invokeMs, completeMs: Date.now(), ok: false });
      }
    } else {
      try {
        const value = await readOnce(path);
        emit({ kind: 'read', register, value, invokeMs, completeMs: Date.now(), ok: true });
      } catch {
        emit({ kind: 'read', register, value: '', invokeMs, completeMs: Date.now(), ok: false });
      }
    }
    await new Promise((r) => setTimeout(r, THINK_MS));
  }
}

void main();
