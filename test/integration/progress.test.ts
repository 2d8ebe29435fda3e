/*
 * Progress on long work (issue 18), against a real cluster of three nodes holding 1 GiB:
 *
 * - `dfs verify` on a terminal (tmux: capture-pane reads the screen) draws a bar that ends
 *   at 100% of every node's bytes; through a pipe it prints plain progress lines on stderr,
 *   and its `--json` stdout is byte for byte what the report alone (`POST /v1/verify`,
 *   what `dfs verify --json` printed before it had progress) says of the same cluster state.
 * - a fourth node full-syncs the 1 GiB brick: `dfs node sync-progress` follows it on a
 *   terminal and through a pipe to 100%, `dfs status` shows its progress line meanwhile, and
 *   the bytes the bar ends at are the bytes copied: the brick's file bytes on the new node,
 *   what the test wrote, and (with the frames' headers on top) dfs_storage_sync_bytes_total.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { parseMetricsText } from '../../common/metrics-text';
import { commitOp, pollUntil, TestClient } from '../helpers/client';
import { DFS_BIN, runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('progress');
const TMUX_SOCKET = `dfs-progress-test-${process.pid}`;
const own = { uid: 0, gid: 0 };
/** 64 files of 16 MiB: 1 GiB, written 4 MiB (WRITE_BYTES_MAX) at a time. */
const FILE_COUNT = 64;
const FILE_BYTES = 16 * 1024 * 1024;
const WRITE_BYTES = 4 * 1024 * 1024;
const TOTAL_BYTES = FILE_COUNT * FILE_BYTES;
/** Entries of the brick: the root, /big and its files. */
const TOTAL_ENTRIES = 2 + FILE_COUNT;
/** Wall time for a verify or a full sync of the 1 GiB on a busy machine. */
const LONG_WORK_MS = 120_000;

const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};

function tmux(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync('tmux', ['-L', TMUX_SOCKET, ...args], { encoding: 'utf8', timeout: 10_000 });
  if (run.error) throw new Error(`tmux ${args.join(' ')}: ${run.error.message}`);
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** Runs `dfs ARGS` in a tmux session of its own (a terminal 160 wide); the pane stays after
 * the command ends, with `EXIT=<code>` under its output. */
function dfsInTmux(session: string, args: string[]): void {
  const command = `${process.execPath} ${DFS_BIN} ${args.join(' ')}; echo EXIT=$?; sleep 600`;
  const started = tmux('new-session', '-d', '-s', session, '-x', '160', '-y', '20', command);
  assert.is(started.status, 0, `tmux new-session: ${started.stderr}`);
}

/** Watches a tmux pane until the command in it ends; answers every distinct screen seen. */
async function screensUntilExit(session: string, timeoutMs: number): Promise<string[]> {
  const screens: string[] = [];
  await pollUntil(`dfs in tmux session ${session} to end`, timeoutMs, async () => {
    const pane = tmux('capture-pane', '-p', '-t', session).stdout;
    if (screens[screens.length - 1] !== pane) screens.push(pane);
    return /^EXIT=\d+/m.test(pane);
  }, 100);
  return screens;
}

function show(title: string, screen: string): void {
  process.stdout.write(`  ${title}:\n${screen.trimEnd().split('\n').map((l) => `    | ${l}`).join('\n')}\n`);
}

/** The bytes of the regular files under `dir` (a brick: every file once, no hard links here). */
function fileBytes(dir: string): number {
  let sum = 0;
  for (const name of readdirSync(dir)) {
    const st = lstatSync(join(dir, name));
    if (st.isDirectory()) sum += fileBytes(join(dir, name));
    else if (st.isFile()) sum += st.size;
  }
  return sum;
}

/** The percentages of plain progress lines (`LABEL: 45% …`). */
function percents(text: string, label: string): number[] {
  return [...text.matchAll(new RegExp(`^${label}: (\\d+)% `, 'gm'))].map((m) => Number(m[1]));
}

s.before(async () => {
  ctx.dir = tempDir('progress');
  // A short log: the 1 GiB is not kept twice on every node. A source sends a counting frame
  // for every name it counts, as it would now and then for a brick that takes long to
  // count: the receiver takes them in its stride.
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 1, nodeArgs: ['--log-keep-ops', '64', '--snapshot-counting-ms', '0'] });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
  const p = ctx.p;
  await commitOp(p, { type: 'mkdir', path: '/big', mode: 0o755, ...own });
  // Random bytes (zeros would travel as holes), a few buffers reused across files.
  const pieces = Array.from({ length: 4 }, () => randomBytes(WRITE_BYTES));
  const writeFile = async (i: number) => {
    await commitOp(p, { type: 'create', path: `/big/f${i}`, mode: 0o644, ...own, exclusive: true });
    for (let offset = 0; offset < FILE_BYTES; offset += WRITE_BYTES) {
      await commitOp(p, { type: 'write', path: `/big/f${i}`, offset }, pieces[(i + offset / WRITE_BYTES) % pieces.length]);
    }
  };
  // A few files at a time: the primary commits several writes with one fsync.
  for (let i = 0; i < FILE_COUNT; i += 4) await Promise.all([0, 1, 2, 3].map((k) => writeFile(i + k)));
});

s.after(async () => {
  tmux('kill-server');
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

s('dfs verify on a terminal: a bar over every node\'s bytes that ends at 100%', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  dfsInTmux('verify', ['verify', '--data', cluster.dataDir]);
  const screens = await screensUntilExit('verify', LONG_WORK_MS);
  const last = screens[screens.length - 1]!;
  show('dfs verify under tmux, at the end', last);
  assert.match(last, /^EXIT=0$/m);
  assert.match(last, /in-sync replicas are identical/);
  // Three nodes of 1 GiB each, every entry of each.
  const bar = /^verify \[[^\]]+\] (\d+)% \| 3\.0 GiB of 3\.0 GiB \| (\d+) of (\d+) entries \| [\d.]+ [KMG]?i?B\/s \| ETA 0s/m.exec(last);
  assert.ok(bar, 'the final bar');
  assert.is(Number(bar![1]), 100);
  assert.is(Number(bar![2]), 3 * TOTAL_ENTRIES);
  assert.is(Number(bar![3]), 3 * TOTAL_ENTRIES);
  assert.ok(screens.every((screen) => !/\n.*\r/.test(screen)), 'the bar is redrawn in place');
});

s('dfs verify through a pipe: plain progress lines on stderr, --json stdout as the report alone says', async () => {
  const { cluster, p } = ctx as Required<typeof ctx>;
  const run = await runDfs(['verify', '--data', cluster.dataDir, '--json'], LONG_WORK_MS);
  assert.is(run.code, 0, run.stderr);
  assert.not.match(run.stderr, /\x1b\[/, 'no terminal escapes');
  const seen = percents(run.stderr, 'verify');
  process.stdout.write(`  dfs verify --json, stderr through a pipe:\n${run.stderr.trimEnd().split('\n').map((l) => `    | ${l}`).join('\n')}\n`);
  assert.ok(seen.length >= 1 && seen.length <= 30, `a few lines, not a stream: ${seen.length}`);
  assert.equal([...seen].sort((a, b) => a - b), seen, 'progress only goes forward');
  assert.match(run.stderr, /^verify: 100% 3\.0 GiB of 3\.0 GiB, 198 of 198 entries, .* \(done\)$/m);
  // Nothing was written since: the same cluster state, so the same report, byte for byte,
  // as `dfs verify --json` printed it before progress (JSON.stringify(report, null, 2)).
  const plain = await p.post('/v1/verify', '');
  assert.is(plain.status, 200);
  assert.is(run.stdout, JSON.stringify(plain.json, null, 2) + '\n');
  assert.ok(plain.json.ok);
});

s('a node full-syncing 1 GiB: sync-progress on a terminal and through a pipe reaches 100%, dfs status shows it, the bytes are the bytes copied', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const n4 = await cluster.addNode();
  // Both views follow the same sync from its start.
  dfsInTmux('sync', ['node', 'sync-progress', n4.id, '--data', cluster.dataDir]);
  const piped = runDfs(['node', 'sync-progress', n4.id, '--data', cluster.dataDir], LONG_WORK_MS);
  // `dfs status` while it copies: a line with percent, bytes, entries, rate and ETA.
  const statusLine = await pollUntil('dfs status to show n4 copying', LONG_WORK_MS, async () => {
    const status = await runDfs(['status', '--data', cluster.dataDir]);
    return /^ {2}n4 full sync from n\d at seq \d+: \d+% [\d.]+ [KMG]?i?B of 1\.0 GiB, \d+ of 66 entries, [\d.]+ [KMG]?i?B\/s, ETA (\d+s|\d+m\d\ds|\?)$/m.exec(status.stdout)?.[0];
  }, 200);
  process.stdout.write(`  dfs status during the sync:\n    | ${statusLine}\n`);
  const screens = await screensUntilExit('sync', LONG_WORK_MS);
  const last = screens[screens.length - 1]!;
  show('dfs node sync-progress under tmux, at the end', last);
  assert.match(last, /^EXIT=0$/m);
  assert.match(last, /^n4 from n\d \[[^\]]+\] 100% \| 1\.0 GiB of 1\.0 GiB \| 66 of 66 entries \| /m);
  // The bar moved: some screen showed it on its way.
  assert.ok(screens.some((screen) => /^n4 from n\d \[[^\]]+\] ([0-9]|[1-9][0-9])% /m.test(screen)), 'a screen with the bar under 100%');
  const done = /^n4: full sync from n\d done at seq \d+: (\d+) entries, (\d+) bytes \(1\.0 GiB\)/m.exec(last);
  assert.ok(done, 'the closing line');
  const pipedRun = await piped;
  assert.is(pipedRun.code, 0, pipedRun.stderr);
  assert.not.match(pipedRun.stderr, /\x1b\[/, 'no terminal escapes');
  const seen = percents(pipedRun.stderr.replace(/^n4 from n\d: /gm, 'n4: '), 'n4');
  process.stdout.write(`  dfs node sync-progress, stderr through a pipe:\n${pipedRun.stderr.trimEnd().split('\n').map((l) => `    | ${l}`).join('\n')}\n`);
  assert.ok(seen.length >= 2 && seen.length <= 40, `a few lines: ${seen.length}`);
  assert.is(seen[seen.length - 1], 100);
  assert.match(pipedRun.stderr, /^n4 from n\d: 100% 1\.0 GiB of 1\.0 GiB, 66 of 66 entries, .* \(done\)$/m);
  assert.match(pipedRun.stdout, new RegExp(`^n4: full sync from n\\d done at seq \\d+: ${TOTAL_ENTRIES} entries, ${TOTAL_BYTES} bytes`, 'm'));
  // The source counted its brick first, with the counting frames the test asked for.
  const source = /^n4: full sync from (n\d) /m.exec(last)![1]!;
  const counted = /"entries":(\d+),"bytes":(\d+),"countingFrames":(\d+).*snapshot: counted this brick/.exec(readFileSync(cluster.records().find((r) => r.kind === 'storage' && r.id === source)!.logFile, 'utf8'));
  assert.ok(counted, `${source} logged its count`);
  assert.equal(counted!.slice(1).map(Number).slice(0, 2), [TOTAL_ENTRIES, TOTAL_BYTES]);
  assert.ok(Number(counted![3]) >= TOTAL_ENTRIES, `counting frames: ${counted![3]}`);
  // The bytes the bar ended at are the bytes copied.
  assert.is(Number(done![1]), TOTAL_ENTRIES);
  assert.is(Number(done![2]), TOTAL_BYTES);
  assert.is(fileBytes(n4.brickDir), TOTAL_BYTES, 'the bytes of the files in the new brick');
  const adminUrl = cluster.records().find((r) => r.kind === 'storage' && r.id === n4.id)?.adminUrl;
  assert.ok(adminUrl, 'n4 has an admin port');
  const metrics = parseMetricsText(await (await fetch(`${adminUrl}/metrics`)).text());
  const copied = metrics.find((m) => m.name === 'dfs_storage_sync_bytes_total')?.value;
  assert.ok(copied !== undefined, 'dfs_storage_sync_bytes_total');
  // The metric counts the stream: the content and, on top, each frame's header (a few
  // hundred bytes per MiB chunk of content).
  assert.ok(copied! >= TOTAL_BYTES && copied! < TOTAL_BYTES * 1.01, `dfs_storage_sync_bytes_total ${copied} against ${TOTAL_BYTES} bytes of content`);
  // Asked again once it is over: the last full sync, whole.
  const again = await runDfs(['node', 'sync-progress', n4.id, '--data', cluster.dataDir]);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, new RegExp(`^n4: full sync from n\\d done at seq \\d+: ${TOTAL_ENTRIES} entries, ${TOTAL_BYTES} bytes`, 'm'));
});

s('dfs node sync-progress: a node that copies nothing says so; an unknown one is an error in bounded time', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const idle = await runDfs(['node', 'sync-progress', 'n1', '--data', cluster.dataDir]);
  assert.is(idle.code, 0, idle.stderr);
  assert.is(idle.stdout, 'n1 is in sync and is not copying a brick\n');
  assert.is(idle.stderr, '');
  const started = Date.now();
  const unknown = await runDfs(['node', 'sync-progress', 'n9', '--data', cluster.dataDir, '--wait-ms', '1000'], 30_000);
  assert.is(unknown.code, 1);
  assert.is(unknown.stderr, 'dfs: the cluster has no node n9\n');
  assert.ok(Date.now() - started < 30_000);
  const bad = await runDfs(['node', 'sync-progress', 'n1', '--data', cluster.dataDir, '--wait-ms', 'soon']);
  assert.is(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /^dfs: --wait-ms must be a whole number from 1000 to/);
  const none = await runDfs(['node', 'sync-progress', '--data', cluster.dataDir]);
  assert.is(none.code, 2);
  assert.match(none.stderr, /wants ID/);
});

s.run();
