/*
 * Issue 15, acceptance 1: a conformance table of lock cases, each run between two
 * processes on the local disk, between two processes on two dfs mounts of one cluster, and
 * between two processes on one dfs mount; every outcome on dfs must be the local disk's.
 *
 * The cases cover fcntl byte-range locks (shared and exclusive, conflicts, upgrade and
 * downgrade, split and merge of ranges, ranges to the end of the file, F_GETLK reporting
 * the lock in the way, release of a process's locks at any close of the file, locks on
 * descriptors of the wrong mode), flock (shared and exclusive, per open file description,
 * the non-atomic conversion Linux does), the two kinds apart, and blocking waits that wake
 * when the lock goes and end with EINTR when a signal comes.
 *
 *   node dist/test/e2e/locks.test.js      (root, /dev/fuse, python3, after npm run build)
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { LockWorker, type WorkerAnswer } from '../helpers/lock-workers';

/** How long a blocking call is watched to see that it does not return while the lock is
 * held elsewhere (a non-event: nothing to poll for). */
const PENDING_WATCH_MS = 600;
/** The signal that interrupts a blocking call comes this long after it began. */
const ALARM_MS = 700;
const EOF = 0;

type Step =
  | { p: 0 | 1; cmd: 'setlk' | 'setlkw' | 'getlk'; type: 'r' | 'w' | 'u'; start: number; len: number; fd?: string; as?: string; alarmMs?: number }
  | { p: 0 | 1; cmd: 'flock'; op: 'sh' | 'ex' | 'un'; nb?: boolean; fd?: string; as?: string; alarmMs?: number }
  | { p: 0 | 1; cmd: 'open'; fd: string; mode: 'r' | 'w' | 'rw' }
  | { p: 0 | 1; cmd: 'close'; fd?: string; as?: string }
  | { p: 0 | 1; cmd: 'pwrite'; offset: number; data: string }
  | { p: 0 | 1; cmd: 'pread'; offset: number; len: number }
  | { pending: string }
  | { await: string };

interface Case {
  name: string;
  steps: Step[];
}

const lk = (p: 0 | 1, type: 'r' | 'w' | 'u', start: number, len: number, more: Partial<Step> = {}): Step => ({ p, cmd: 'setlk', type, start, len, ...more }) as Step;
const lkw = (p: 0 | 1, type: 'r' | 'w', start: number, len: number, more: Partial<Step> = {}): Step => ({ p, cmd: 'setlkw', type, start, len, ...more }) as Step;
const get = (p: 0 | 1, type: 'r' | 'w', start: number, len: number): Step => ({ p, cmd: 'getlk', type, start, len });
const fl = (p: 0 | 1, op: 'sh' | 'ex' | 'un', nb = true, more: Partial<Step> = {}): Step => ({ p, cmd: 'flock', op, nb, ...more }) as Step;

const CASES: Case[] = [
  // First, so that it runs before the second process's mount ever took a lock.
  { name: 'F_GETLK before anything was locked here', steps: [get(1, 'w', 0, 1), lk(0, 'w', 0, 10), get(1, 'r', 5, 1), get(1, 'w', 10, 5)] },
  { name: 'exclusive range conflicts', steps: [lk(0, 'w', 0, 10), lk(1, 'w', 0, 10), lk(1, 'r', 5, 1), lk(1, 'w', 10, 10), get(1, 'w', 0, 100)] },
  { name: 'shared ranges', steps: [lk(0, 'r', 0, 100), lk(1, 'r', 50, 100), lk(1, 'w', 0, 10), get(1, 'w', 0, 10), get(0, 'w', 120, 10), lk(0, 'w', 100, 50)] },
  {
    name: 'upgrade and downgrade',
    steps: [lk(0, 'r', 0, 100), lk(1, 'r', 50, 100), lk(0, 'w', 0, 100), lk(1, 'u', 50, 100), lk(0, 'w', 0, 100), get(1, 'r', 0, 1), lk(0, 'r', 0, 100), lk(1, 'r', 0, 10), lk(1, 'w', 0, 10)],
  },
  { name: 'unlocking the middle splits a range', steps: [lk(0, 'w', 0, 100), lk(0, 'u', 40, 20), lk(1, 'w', 40, 20), lk(1, 'w', 30, 11), get(1, 'w', 60, 40), get(1, 'w', 0, 41), lk(1, 'w', 59, 2)] },
  { name: 'adjacent ranges merge', steps: [lk(0, 'w', 0, 10), lk(0, 'w', 10, 10), get(1, 'w', 5, 10), lk(0, 'r', 20, 10), get(1, 'w', 0, 100), get(1, 'r', 25, 1), lk(0, 'u', 0, 30), lk(1, 'w', 0, 30)] },
  { name: 'a range to the end of the file', steps: [lk(0, 'w', 100, EOF), lk(1, 'w', 1_000_000, 1), lk(1, 'w', 0, 100), get(1, 'w', 200, 1), get(1, 'r', 0, EOF)] },
  { name: "own locks never conflict; F_GETLK finds no one", steps: [lk(0, 'w', 0, 10), lk(0, 'r', 0, 10), lk(0, 'w', 5, 10), get(0, 'w', 0, 100), get(1, 'r', 20, 5)] },
  {
    name: 'any close of the file drops the process locks',
    steps: [lk(0, 'w', 0, 10), lk(0, 'r', 50, 10), { p: 0, cmd: 'open', fd: 'second', mode: 'r' }, { p: 0, cmd: 'close', fd: 'second' }, lk(1, 'w', 0, 60), get(0, 'w', 0, 100)],
  },
  { name: "another process's close drops nothing of ours", steps: [lk(0, 'w', 0, 10), { p: 1, cmd: 'open', fd: 'second', mode: 'rw' }, { p: 1, cmd: 'close', fd: 'second' }, lk(1, 'w', 0, 10)] },
  { name: 'unlocking what is not held', steps: [lk(1, 'u', 0, 10), lk(1, 'u', 0, EOF), lk(0, 'w', 0, EOF), lk(1, 'u', 0, EOF), lk(1, 'r', 0, 1)] },
  {
    name: 'a lock needs a descriptor of the right mode',
    steps: [{ p: 1, cmd: 'open', fd: 'ro', mode: 'r' }, { p: 1, cmd: 'open', fd: 'wo', mode: 'w' }, lk(1, 'w', 0, 10, { fd: 'ro' }), lk(1, 'r', 0, 10, { fd: 'ro' }), lk(1, 'r', 20, 10, { fd: 'wo' }), lk(1, 'w', 20, 10, { fd: 'wo' }), lk(0, 'w', 0, 30)],
  },
  { name: 'flock shared and exclusive; a failed conversion loses the old lock', steps: [fl(0, 'ex'), fl(1, 'ex'), fl(1, 'sh'), fl(0, 'un'), fl(1, 'sh'), fl(0, 'sh'), fl(0, 'ex'), fl(1, 'ex'), fl(0, 'sh')] },
  {
    name: 'flock belongs to the open file description',
    steps: [{ p: 0, cmd: 'open', fd: 'second', mode: 'r' }, fl(0, 'ex', true, { fd: 'second' }), fl(0, 'ex'), fl(0, 'sh'), { p: 0, cmd: 'close', fd: 'second' }, fl(0, 'ex'), fl(1, 'sh')],
  },
  { name: 'flock and fcntl locks are apart', steps: [fl(0, 'ex'), lk(1, 'w', 0, 10), fl(1, 'sh'), lk(0, 'w', 0, 10), lk(0, 'w', 10, 10), fl(0, 'un'), fl(1, 'ex')] },
  { name: 'a blocking fcntl wait wakes when the lock goes', steps: [lk(0, 'w', 0, 10), lkw(1, 'w', 5, 10, { as: 'W' }), { pending: 'W' }, lk(0, 'u', 0, 10), { await: 'W' }, lk(0, 'r', 0, 1), get(0, 'r', 0, 100)] },
  { name: 'a blocking fcntl wait wakes when the holder closes', steps: [lk(0, 'r', 0, EOF), lkw(1, 'w', 0, 1, { as: 'W' }), { pending: 'W' }, { p: 0, cmd: 'close', as: 'C' }, { await: 'W' }, { await: 'C' }] },
  { name: 'a blocking flock wakes when the lock goes', steps: [fl(0, 'sh'), fl(1, 'ex', false, { as: 'W' }), { pending: 'W' }, fl(0, 'un'), { await: 'W' }, fl(0, 'sh')] },
  {
    // The reader's kernel keeps the pages it read while the file stays open; a lock must
    // bring the writer's bytes (mount/locks.ts: data follows the lock).
    name: 'what the last holder wrote is read under the next lock',
    steps: [
      { p: 0, cmd: 'pread', offset: 0, len: 8 },
      lk(1, 'w', 0, EOF),
      { p: 1, cmd: 'pwrite', offset: 0, data: 'written!' },
      lk(1, 'u', 0, EOF),
      lk(0, 'r', 0, EOF),
      { p: 0, cmd: 'pread', offset: 0, len: 8 },
      lk(0, 'u', 0, EOF),
      fl(1, 'ex'),
      { p: 1, cmd: 'pwrite', offset: 4, data: 'FLOCK' },
      fl(1, 'un'),
      fl(0, 'sh'),
      { p: 0, cmd: 'pread', offset: 0, len: 10 },
    ],
  },
  { name: 'a blocking fcntl wait ends with EINTR on a signal', steps: [lk(0, 'w', 0, 10), lkw(1, 'r', 0, 1, { alarmMs: ALARM_MS }), lk(0, 'u', 0, 10), lk(1, 'r', 0, 1)] },
  { name: 'a blocking flock ends with EINTR on a signal', steps: [fl(0, 'ex'), fl(1, 'sh', false, { alarmMs: ALARM_MS }), fl(0, 'un'), fl(1, 'sh')] },
];

type Where = { name: string; paths: [string, string] };

/** Runs one case between two fresh processes, each on its own path of the same file, and
 * returns one outcome per step. */
async function runCase(c: Case, paths: [string, string]): Promise<string[]> {
  writeFileSync(paths[0], 'x'.repeat(200));
  const workers = [new LockWorker(), new LockWorker()] as const;
  const pids = await Promise.all(workers.map(async (w) => (await w.call({ cmd: 'pid' })).pid as number));
  const fds = [new Map<string, number>(), new Map<string, number>()];
  const pending = new Map<string, { settled: WorkerAnswer | null; p: Promise<WorkerAnswer> }>();
  const outcomes: string[] = [];
  const show = (a: WorkerAnswer): string => {
    if (!a.ok) return String(a.errno);
    if (typeof a.data === 'string') return JSON.stringify(a.data);
    if (a.type === undefined) return 'ok';
    if (a.type === 'u') return 'none';
    const who = a.pid === pids[0] ? 'p0' : a.pid === pids[1] ? 'p1' : `pid ${String(a.pid)}`;
    return `${String(a.type)} ${String(a.start)}+${String(a.len)} by ${who}`;
  };
  try {
    for (let i = 0; i < 2; i++) {
      const a = await workers[i]!.call({ cmd: 'open', path: paths[i], mode: 'rw' });
      assert.ok(a.ok, `open ${paths[i]}: ${String(a.errno)}`);
      fds[i]!.set('main', a.fd as number);
    }
    for (const s of c.steps) {
      if ('pending' in s) {
        const w = pending.get(s.pending)!;
        await Promise.race([w.p, new Promise((resolve) => setTimeout(resolve, PENDING_WATCH_MS))]);
        outcomes.push(w.settled ? `returned early: ${show(w.settled)}` : 'waiting');
        continue;
      }
      if ('await' in s) {
        outcomes.push(show(await pending.get(s.await)!.p));
        continue;
      }
      const w = workers[s.p];
      let msg: Record<string, unknown>;
      if (s.cmd === 'open') msg = { cmd: 'open', path: paths[s.p], mode: s.mode };
      else msg = { ...s, fd: fds[s.p]!.get(('fd' in s && s.fd) || 'main') };
      delete msg.p;
      delete msg.as;
      const call = w.call(msg).then((a) => {
        if (s.cmd === 'open' && a.ok) fds[s.p]!.set(s.fd, a.fd as number);
        return a;
      });
      if ('as' in s && s.as) {
        const entry = { settled: null as WorkerAnswer | null, p: call };
        void call.then((a) => (entry.settled = a));
        pending.set(s.as, entry);
        outcomes.push('started');
        continue;
      }
      outcomes.push(show(await call));
    }
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
  }
  return outcomes;
}

let mc: MountedCluster | null = null;
let local = '';

test.before(async () => {
  local = mkdtempSync(join(tmpdir(), 'dfs-locks-local-'));
  mc = await startMountedCluster({ prefix: 'e2e-locks', mounts: ['a', 'b'] });
});

test.after(async () => {
  await mc?.stop();
  if (local) rmSync(local, { recursive: true, force: true });
});

test('every lock case gives the local disk outcome, between two mounts and within one', async () => {
  const [a, b] = mc!.mountpoints as [string, string];
  const rows: string[] = [];
  let differing = 0;
  for (const [i, c] of CASES.entries()) {
    const file = `lock-case-${i}`;
    const places: Where[] = [
      { name: 'local disk', paths: [join(local, file), join(local, file)] },
      { name: 'dfs, two mounts', paths: [join(a, file), join(b, file)] },
      { name: 'dfs, one mount', paths: [join(a, `${file}-one`), join(a, `${file}-one`)] },
    ];
    const results: string[][] = [];
    for (const w of places) results.push(await runCase(c, w.paths));
    const expected = results[0]!;
    rows.push(`${c.name}`);
    c.steps.forEach((s, k) => {
      const what = describeStep(s);
      const cells = results.map((r) => r[k] ?? '-');
      const same = cells.every((x) => x === expected[k]);
      if (!same) differing++;
      rows.push(`  ${same ? ' ' : '!'} ${what.padEnd(34)} ${cells.map((x) => x.padEnd(22)).join(' ')}`);
    });
  }
  process.stdout.write(`\n  ${'step'.padEnd(36)} ${['local disk', 'dfs, two mounts', 'dfs, one mount'].map((x) => x.padEnd(22)).join(' ')}\n${rows.join('\n')}\n`);
  process.stdout.write(`${CASES.length} cases, ${CASES.reduce((n, c) => n + c.steps.length, 0)} steps, ${differing} outcomes differ from the local disk\n`);
  assert.is(differing, 0, 'every outcome on dfs is the local disk one');
});

function describeStep(s: Step): string {
  if ('pending' in s) return `  ${s.pending} still waiting?`;
  if ('await' in s) return `  ${s.await} returns`;
  const fd = 'fd' in s && s.fd ? ` [${s.fd}]` : '';
  const as = 'as' in s && s.as ? ` as ${s.as}` : '';
  switch (s.cmd) {
    case 'open':
      return `p${s.p} open ${s.mode}${fd}`;
    case 'close':
      return `p${s.p} close${fd}${as}`;
    case 'pwrite':
      return `p${s.p} pwrite ${JSON.stringify(s.data)} at ${s.offset}`;
    case 'pread':
      return `p${s.p} pread ${s.offset}+${s.len}`;
    case 'flock':
      return `p${s.p} flock ${s.op}${s.nb ? '|nb' : ''}${fd}${as}${s.alarmMs ? ' +signal' : ''}`;
    default:
      return `p${s.p} ${s.cmd} ${s.type} ${s.start}+${s.len}${fd}${as}${s.alarmMs ? ' +signal' : ''}`;
  }
}

test.run();
