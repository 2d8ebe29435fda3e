/*
 * Lock test processes (test/helpers/lock-worker.py) driven from a test: each worker is a
 * python3 process taking JSON commands on stdin and answering one JSON line each, in
 * order. A blocking call (setlkw, flock without nb) holds the worker's later answers back
 * until it returns, as it would a real program.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

/** The helper's source: tests run from dist/test/<folder>/, the helper stays in test/. */
export const LOCK_WORKER_PY = join(__dirname, '..', '..', '..', 'test', 'helpers', 'lock-worker.py');

export type WorkerAnswer = { ok: boolean; errno?: string; [key: string]: unknown };

export class LockWorker {
  private readonly proc: ChildProcessWithoutNullStreams;
  private readonly waiting: Array<(a: WorkerAnswer) => void> = [];
  private exited = false;
  pid = 0;

  constructor() {
    this.proc = spawn('python3', [LOCK_WORKER_PY], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.pid = this.proc.pid ?? 0;
    let stderr = '';
    this.proc.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    createInterface({ input: this.proc.stdout }).on('line', (line) => {
      const resolve = this.waiting.shift();
      if (resolve) resolve(JSON.parse(line) as WorkerAnswer);
    });
    this.proc.on('exit', () => {
      this.exited = true;
      for (const resolve of this.waiting.splice(0)) resolve({ ok: false, errno: `worker exited: ${stderr.trim().split('\n').pop() ?? ''}` });
    });
  }

  /** Sends a command; the promise settles with its answer (after the ones before it). */
  call(cmd: Record<string, unknown>): Promise<WorkerAnswer> {
    if (this.exited) return Promise.resolve({ ok: false, errno: 'worker exited' });
    const p = new Promise<WorkerAnswer>((resolve) => this.waiting.push(resolve));
    this.proc.stdin.write(`${JSON.stringify(cmd)}\n`);
    return p;
  }

  kill(): void {
    if (!this.exited) this.proc.kill('SIGKILL');
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    this.proc.stdin.end();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}
