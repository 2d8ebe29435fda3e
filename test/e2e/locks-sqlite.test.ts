/*
 * Issue 15, acceptance 2: two SQLite writers (python3's sqlite3), one on each of two dfs
 * mounts of one cluster, each committing 300 single-row transactions into one database
 * with a busy timeout: 600 rows, 0 errors, each writer's rows in its own order, and
 * `PRAGMA integrity_check` ok, read through either mount. The database uses SQLite's
 * default rollback journal; WAL needs memory shared between the processes (the -shm file
 * mapped by each), which processes on different hosts cannot share, so SQLite does not
 * support it on a network file system (docs/locks.md).
 *
 *   node dist/test/e2e/locks-sqlite.test.js      (root, /dev/fuse, python3, after npm run build)
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';

const SQLITE_WRITER_PY = join(__dirname, '..', '..', '..', 'test', 'helpers', 'sqlite-writer.py');
const TRANSACTIONS_PER_WRITER = 300;
/** SQLite's busy timeout: the other writer holds the database for one commit at a time. */
const BUSY_MS = 60_000;

let mc: MountedCluster | null = null;

test.before(async () => {
  mc = await startMountedCluster({ prefix: 'e2e-locks-sqlite', mounts: ['a', 'b'] });
});

test.after(async () => {
  await mc?.stop();
});

function runPython(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const p = spawn('python3', [SQLITE_WRITER_PY, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.on('error', reject);
    p.on('exit', (code) => {
      if (code !== 0) reject(new Error(`sqlite-writer ${args.join(' ')} exited ${code}: ${err}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>);
    });
  });
}

test('two SQLite writers on two mounts: 600 rows, no error, integrity ok', async () => {
  const [a, b] = mc!.mountpoints as [string, string];
  const created = await runPython([join(a, 'app.db'), '--create', 'delete']);
  assert.is(created.journal_mode, 'delete');
  const startMs = Date.now();
  const results = await Promise.all([
    runPython([join(a, 'app.db'), 'A', String(TRANSACTIONS_PER_WRITER), String(BUSY_MS)]),
    runPython([join(b, 'app.db'), 'B', String(TRANSACTIONS_PER_WRITER), String(BUSY_MS)]),
  ]);
  const seconds = (Date.now() - startMs) / 1000;
  const checks = [await runPython([join(a, 'app.db'), '--check']), await runPython([join(b, 'app.db'), '--check'])];
  const errors = results.reduce((n, r) => n + (r.errors as number), 0);
  process.stdout.write(
    `\n  writers: ${results.map((r) => `${String(r.writer)} ${String(r.inserted)} inserted, ${String(r.errors)} errors ${JSON.stringify(r.firstErrors)}`).join('; ')}; ${seconds.toFixed(1)} s (${((2 * TRANSACTIONS_PER_WRITER) / seconds).toFixed(1)} transactions/s)\n` +
      `  read through a: ${JSON.stringify(checks[0])}\n  read through b: ${JSON.stringify(checks[1])}\n`,
  );
  assert.is(errors, 0, 'no transaction failed');
  for (const check of checks) {
    assert.is(check.rows, 2 * TRANSACTIONS_PER_WRITER, '600 rows');
    assert.is(check.integrity, 'ok', 'integrity_check');
    assert.equal(check.writers, { A: TRANSACTIONS_PER_WRITER, B: TRANSACTIONS_PER_WRITER });
    assert.ok(check.inOrder, "each writer's rows in its own order");
  }
});

test.run();
