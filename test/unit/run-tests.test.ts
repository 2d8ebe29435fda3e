/*
 * The test runner (scripts/run-tests.js) itself: CI trusts its closing `N passed, N failed`
 * line and its exit code, so both are checked here against suites that pass, fail, fail in
 * a hook, crash, hang, and run nothing. The fake suites live in a temp directory that the
 * runner is pointed at with DFS_TEST_DIR, and load uvu from this repository.
 *
 *   node dist/test/unit/run-tests.test.js
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

const REPO_ROOT = resolve(__dirname, '..', '..', '..');
const RUNNER = join(REPO_ROOT, 'scripts', 'run-tests.js');
const RUN_TIMEOUT_MS = 60_000;
const UVU = JSON.stringify(require.resolve('uvu'));

const dirs: string[] = [];
test.after(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

/** Writes `suites` (relative path -> body after the uvu import) into a fresh test dir. */
function suiteDir(suites: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'dfs-run-tests-'));
  dirs.push(dir);
  for (const [path, body] of Object.entries(suites)) {
    const file = join(dir, path);
    mkdirSync(resolve(file, '..'), { recursive: true });
    writeFileSync(file, `const { test } = require(${UVU});\n${body}\n`);
  }
  return dir;
}

interface RunResult {
  code: number | null;
  stdout: string;
  lastLine: string;
}

function runRunner(dir: string, args: string[] = [], fileTimeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [RUNNER, ...args], {
      env: { ...process.env, DFS_TEST_DIR: dir, DFS_TEST_FILE_TIMEOUT_MS: String(fileTimeoutMs) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.resume();
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the runner ran over ${RUN_TIMEOUT_MS} ms:\n${stdout}`));
    }, RUN_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      const lines = stdout.trimEnd().split('\n');
      resolvePromise({ code, stdout, lastLine: lines[lines.length - 1] ?? '' });
    });
  });
}

const PASS_TWO = `test('a', () => {}); test('b', () => {}); test.run();`;

test('passing suites in every folder: totals add up, exit 0', async () => {
  const dir = suiteDir({ 'unit/a.test.js': PASS_TWO, 'integration/b.test.js': PASS_TWO, 'e2e/c.test.js': `test('c', () => {}); test.run();` });
  const result = await runRunner(dir);
  assert.is(result.lastLine, '5 passed, 0 failed');
  assert.is(result.code, 0);
  // unit runs before integration, which runs before e2e.
  assert.ok(result.stdout.indexOf('a.test.js') < result.stdout.indexOf('b.test.js'));
  assert.ok(result.stdout.indexOf('b.test.js') < result.stdout.indexOf('c.test.js'));
});

test('a failing test, a failing before hook, a crash and a late error all count as failures', async () => {
  const dir = suiteDir({
    'unit/fails.test.js': `test('ok', () => {}); test('bad', () => { throw new Error('no'); }); test.run();`,
    'unit/hook.test.js': `test.before(() => { throw new Error('hook'); }); test('x', () => {}); test('y', () => {}); test.run();`,
    'unit/crash.test.js': `throw new Error('crash before any test');`,
    'unit/late.test.js': `test('ok', () => {}); test.run(); setTimeout(() => { throw new Error('late'); }, 50);`,
  });
  const result = await runRunner(dir);
  // passed: fails(1) + late(1); failed: fails(1) + hook(2) + crash(1) + late(1)
  assert.is(result.lastLine, '2 passed, 5 failed');
  assert.is(result.code, 1);
});

test('a hanging file is killed at its time limit and counts as failed', async () => {
  const dir = suiteDir({
    'unit/hang.test.js': `test('hangs', () => new Promise(() => { setInterval(() => {}, 1000); })); test.run();`,
    'unit/ok.test.js': PASS_TWO,
  });
  const started = Date.now();
  const result = await runRunner(dir, [], 1_000);
  assert.is(result.lastLine, '2 passed, 1 failed');
  assert.is(result.code, 1);
  assert.ok(Date.now() - started < 30_000);
});

test('zero tests is a failure, and a filter picks files by path', async () => {
  const empty = await runRunner(suiteDir({}));
  assert.is(empty.lastLine, '0 passed, 1 failed');
  assert.is(empty.code, 1);

  const noTests = await runRunner(suiteDir({ 'unit/none.test.js': `test.run();` }));
  assert.is(noTests.lastLine, '0 passed, 1 failed');
  assert.is(noTests.code, 1);

  const dir = suiteDir({ 'unit/a.test.js': PASS_TWO, 'integration/b.test.js': `test('bad', () => { throw new Error('no'); }); test.run();` });
  const filtered = await runRunner(dir, ['unit']);
  assert.is(filtered.lastLine, '2 passed, 0 failed');
  assert.is(filtered.code, 0);
  const nothing = await runRunner(dir, ['no-such-suite']);
  assert.is(nothing.lastLine, '0 passed, 1 failed');
  assert.is(nothing.code, 1);
});

test.run();
