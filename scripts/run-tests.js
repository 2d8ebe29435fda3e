#!/usr/bin/env node
/*
 * The test runner behind `npm test` (after `npm run build`).
 *
 * Runs every dist/test/**\/*.test.js, unit suites first, then simulation, integration and
 * end-to-end, each file as its own `node` process (each calls uvu's test.run()), so a
 * crash, a leaked handle or a hung cluster in one file cannot hide the others' results.
 * Each child leads its own process group; a file that overruns its time limit has its
 * whole group killed and counts as failed, and any process a finished file left in its
 * group is killed too. Files run one at a time, except the few CONCURRENT_GROUPS names.
 *
 * uvu prints `Total: N`, `Passed: N`, `Skipped: N` at the end of a file; failures are
 * Total - Passed. A file that exits non-zero without failing tests (an unhandled error
 * after the run), or prints no totals at all, counts one failure. The last line is
 * `N passed, N failed`, and the exit code is non-zero when anything failed or when no
 * test ran at all. The checkout's own bin/ comes first on every child's PATH, so a test
 * that runs `dfs` runs this checkout's, not whatever the machine has installed.
 *
 *   npm test                     everything
 *   npm test -- unit             only files whose path contains "unit" (any of the words)
 *   DFS_TEST_FILE_TIMEOUT_MS=60000 npm test     a shorter limit per file
 */
'use strict';

const { spawn } = require('node:child_process');
const { existsSync, readdirSync } = require('node:fs');
const { join, relative, resolve } = require('node:path');

const ROOT = join(__dirname, '..');
/** Where the built suites are; overridable so that the runner's own test can point it elsewhere. */
const TEST_DIR = process.env.DFS_TEST_DIR ? resolve(process.env.DFS_TEST_DIR) : join(ROOT, 'dist', 'test');
/** The order in which folders run: fast and pure first, real processes and FUSE last. */
const FOLDER_ORDER = ['unit', 'sim', 'integration', 'e2e'];
/** Folders under test/ that hold no test suites run by `npm test`. */
const FOLDERS_SKIPPED = ['bench'];
const FILE_TIMEOUT_MS = Number(process.env.DFS_TEST_FILE_TIMEOUT_MS || 5 * 60 * 1000);
/**
 * Files that may run side by side: each holds its own lab (separate network namespaces,
 * addresses and ports) and spends most of its time waiting out the timed phases of its
 * scenarios (issue 14 asks for 60 s each), so running them together cuts about six minutes
 * from the suite without crowding what they measure. A run of adjacent matching files
 * starts up to `max` at once; their output is printed whole, one file after another, as
 * each ends.
 */
const CONCURRENT_GROUPS = [{ match: /\/e2e\/partitions-[^/]*\.test\.js$/, max: 3 }];
/** How long a timed-out file's group gets between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 5_000;
/** The children's environment: this checkout's `dfs` and `dfs-mount` before any other. */
const CHILD_ENV = { ...process.env, PATH: [join(ROOT, 'bin'), process.env.PATH].filter(Boolean).join(':') };

function findTests(dir) {
  const found = [];
  if (!existsSync(dir)) return found;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findTests(full));
    else if (entry.isFile() && entry.name.endsWith('.test.js')) found.push(full);
  }
  return found;
}

function folderRank(file) {
  const folder = relative(TEST_DIR, file).split('/')[0];
  const index = FOLDER_ORDER.indexOf(folder);
  return index === -1 ? FOLDER_ORDER.length : index;
}

/** A built suite whose source is gone (removed or renamed since an earlier build left it in
 * dist/) is stale: it is not run, and a line says so. Only for the default TEST_DIR. */
function hasSource(file) {
  if (process.env.DFS_TEST_DIR) return true;
  const fresh = existsSync(join(ROOT, 'test', relative(TEST_DIR, file).replace(/\.js$/, '.ts')));
  if (!fresh) process.stdout.write(`not run: ${relative(ROOT, file)} (its source is gone; a stale build)\n`);
  return fresh;
}

function orderedTests(filters) {
  return findTests(TEST_DIR)
    .filter((file) => !FOLDERS_SKIPPED.includes(relative(TEST_DIR, file).split('/')[0]))
    .filter(hasSource)
    .filter((file) => filters.length === 0 || filters.some((filter) => relative(TEST_DIR, file).includes(filter)))
    .sort((a, b) => folderRank(a) - folderRank(b) || a.localeCompare(b));
}

// eslint-disable-next-line no-control-regex
const ANSI = /\u001b\[[0-9;]*m/g;

/** uvu's closing totals; the last ones printed win. Null when there are none. */
function parseTotals(output) {
  const text = output.replace(ANSI, '');
  const last = (name) => {
    const matches = [...text.matchAll(new RegExp(`^\\s*${name}:\\s+(\\d+)\\s*$`, 'gm'))];
    return matches.length === 0 ? null : Number(matches[matches.length - 1][1]);
  };
  const total = last('Total');
  const passed = last('Passed');
  if (total === null || passed === null) return null;
  return { total, passed, skipped: last('Skipped') ?? 0 };
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // The group is empty already.
  }
}

/** The files' processes running now (their group leaders). */
const running = new Set();

function runFile(file, buffered = false) {
  return new Promise((resolvePromise) => {
    const started = Date.now();
    const child = spawn(process.execPath, [file], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // its own process group, so that a timeout can kill all it started
      env: CHILD_ENV,
    });
    running.add(child);
    let output = '';
    let errors = '';
    let timedOut = false;
    child.stdout.on('data', (chunk) => {
      output += chunk.toString('utf8');
      if (!buffered) process.stdout.write(chunk);
    });
    child.stderr.on('data', (chunk) => {
      if (buffered) errors += chunk.toString('utf8');
      else process.stderr.write(chunk);
    });
    const timer = setTimeout(() => {
      timedOut = true;
      process.stderr.write(`\n[run-tests] ${relative(ROOT, file)} ran over ${FILE_TIMEOUT_MS} ms; killing its process group\n`);
      killGroup(child.pid, 'SIGTERM');
      setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS).unref();
    }, FILE_TIMEOUT_MS);
    child.on('error', (error) => {
      output += `\n${error.message}`;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      running.delete(child);
      if (buffered) {
        process.stdout.write(`\n=== ${relative(ROOT, file)} (run beside others; its output whole)\n${output}`);
        process.stderr.write(errors);
      }
      // Whatever the file left running in its group (a test that forgot a process) goes too.
      killGroup(child.pid, 'SIGKILL');
      const totals = parseTotals(output);
      let passed = 0;
      let failed = 0;
      let skipped = 0;
      let note = '';
      if (totals !== null) {
        passed = totals.passed;
        failed = Math.max(0, totals.total - totals.passed);
        skipped = totals.skipped;
      }
      if (timedOut) {
        failed = Math.max(failed, 1);
        note = `timed out after ${FILE_TIMEOUT_MS} ms`;
      } else if (totals === null) {
        failed = 1;
        note = `printed no totals (exit ${signal ?? code})`;
      } else if ((code !== 0 || signal !== null) && failed === 0) {
        failed = 1;
        note = `exited with ${signal ?? code} after its tests`;
      }
      resolvePromise({ file, passed, failed, skipped, note, ms: Date.now() - started });
    });
  });
}

async function main() {
  const filters = process.argv.slice(2).filter((arg) => arg.length > 0);
  const files = orderedTests(filters);
  if (files.length === 0) {
    const why = filters.length > 0 ? ` matching ${filters.map((f) => JSON.stringify(f)).join(' or ')}` : '';
    process.stdout.write(`no test files${why} under ${relative(ROOT, TEST_DIR)}; did the build run?\n0 passed, 1 failed\n`);
    process.exitCode = 1;
    return;
  }

  const results = [];
  for (let i = 0; i < files.length; ) {
    const group = CONCURRENT_GROUPS.find((g) => g.match.test(files[i]));
    let together = 1;
    if (group) while (i + together < files.length && group.match.test(files[i + together])) together++;
    if (together === 1) {
      process.stdout.write(`\n=== ${relative(ROOT, files[i])}\n`);
      results.push(await runFile(files[i]));
      i++;
      continue;
    }
    // Up to group.max of them at once, each next one started as one ends.
    const batch = files.slice(i, i + together);
    i += together;
    process.stdout.write(`\n=== ${batch.length} files, up to ${group.max} at once: ${batch.map((f) => relative(ROOT, f)).join(', ')}\n`);
    const done = new Array(batch.length);
    let next = 0;
    const lane = async () => {
      while (next < batch.length) {
        const k = next++;
        done[k] = await runFile(batch[k], true);
      }
    };
    await Promise.all(Array.from({ length: Math.min(group.max, batch.length) }, lane));
    results.push(...done);
  }

  const sum = (key) => results.reduce((total, result) => total + result[key], 0);
  let passed = sum('passed');
  let failed = sum('failed');
  const skipped = sum('skipped');

  process.stdout.write('\n=== summary\n');
  for (const result of results) {
    const mark = result.failed > 0 ? 'FAIL' : 'ok  ';
    const detail = `${result.passed} passed, ${result.failed} failed${result.skipped ? `, ${result.skipped} skipped` : ''}`;
    process.stdout.write(`${mark} ${relative(ROOT, result.file)}  ${detail}  (${(result.ms / 1000).toFixed(1)} s)${result.note ? '  ' + result.note : ''}\n`);
  }
  if (passed + failed === 0) {
    process.stdout.write('no test ran: that is a failure, not a pass\n');
    failed = 1;
  }
  if (skipped > 0) process.stdout.write(`${skipped} skipped\n`);
  process.stdout.write(`${passed} passed, ${failed} failed\n`);
  process.exitCode = failed > 0 ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const child of running) killGroup(child.pid, 'SIGKILL');
    process.exit(130);
  });
}

main().catch((error) => {
  process.stderr.write(`run-tests: ${error.stack || error}\n0 passed, 1 failed\n`);
  process.exit(1);
});
