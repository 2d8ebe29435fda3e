/*
 * The benchmark behind `npm run bench`: a local cluster (3 storage nodes, 2 proxies) in a
 * temp directory, mounted with dfs-mount, measured through the mount as an application
 * sees it, then torn down.
 *
 *   sequential write  SIZE MiB in 1 MiB writes, then fsync and close (close-to-open: the
 *                     data is committed on every in-sync node when close returns)
 *   sequential read   the same file from a fresh open, 1 MiB reads, checked against a
 *                     SHA-256 of what was written; the mount keeps no page cache across
 *                     opens, so the bytes come from the cluster
 *   create            FILES empty files in one directory, one after the other
 *   ls -l             of that directory, by `ls -l DIR > /dev/null` (one call in all)
 *   stat, unlink      of those files, one phase each
 *                     (ls -l and stat start with the kernel's dentries and inodes dropped,
 *                     as fsbench does: the kernel may keep what a lease vouches for, for up
 *                     to a second, and they would measure that instead of the mount)
 *   small files       FILES files in another directory, one after the other, each created
 *                     exclusive (O_CREAT|O_EXCL), written 4 KiB and closed: close returns
 *                     once the 4 KiB are committed on every in-sync node
 *   create, 8 loops   FILES empty files again, by 8 concurrent loops, each in its own
 *                     directory; its rate is also given as a multiple of the single loop's
 *   lock + unlock     LOCKS uncontended fcntl lock and unlock pairs on one open file
 *                     (python3's fcntl.lockf, one process), each a round trip to the
 *                     cluster's lock table (docs/locks.md)
 *
 * Besides its rate, every phase reports what it cost per unit (a MiB, a file): the CPU time
 * of every process of the cluster (the mount, proxies, storage nodes and Redis, from
 * /proc/<pid>/stat), and the FUSE requests the mount served and the requests it sent to
 * the proxies (from the mount's /metrics, --metrics-addr). Unlike the rate, these hardly
 * move when other work shares the machine, so they are what to compare across changes
 * (test/bench/cost.ts). The cluster's own idle CPU (leader lease, heartbeats, membership
 * polls) is measured first and reported apart; it is included in every phase's figure.
 *
 * After the table, each figure is printed again on a line of its own for scripts:
 * `metric <phase>.<figure> <value> <unit>`.
 *
 *   npm run bench [-- --size-mib 256 --files 1000 --locks 1000 --nodes 3 --proxies 2 --mount-args='--attr-timeout-ms 1000' --node-args='--log-io buffered']
 *
 * Every phase has a time budget; one that runs over stops early and reports what it did,
 * so the benchmark ends in bounded time even on a slow machine.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { open, stat, unlink, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { intOption } from '../../common/config';
import { freePorts, httpGet, startCluster, type Cluster, type ProcessKind } from '../../cli/local-cluster';
import { clockTicksPerSecond, costBetween, COSTED_KINDS, cpuTicksByKind, requestCounts, type CostSample, type PhaseCost, type RequestCounts } from './cost';

const CHUNK_BYTES = 1024 * 1024;
/** What each file of the small-file phase holds. */
const SMALL_FILE_BYTES = 4096;
const MIB = 1024 * 1024;
/** Each phase stops when it has run this long, and reports the rate of what it did. */
const PHASE_BUDGET_MS = 4 * 60 * 1000;
/** How long the idle cluster is watched to measure its background CPU. */
const IDLE_MS = 2_000;
/** The concurrent loops of the parallel create phase. */
const PARALLEL_LOOPS = 8;
/** How long one scrape of the mount's /metrics may take. */
const SCRAPE_TIMEOUT_MS = 5_000;

/** What a phase did: `count` units (MiB or files) in `seconds`. */
interface Done {
  count: number;
  seconds: number;
}

interface Phase {
  /** The machine-readable name in `metric` lines. */
  slug: string;
  what: string;
  unit: 'MiB' | 'file' | 'pair';
  done: Done;
  cost: PhaseCost;
  /** The rate as a multiple of another phase's, with what it is relative to. */
  speedup?: { ratio: number; of: string };
}

/** Takes the cluster's CPU and the mount's request counters around a phase. */
class Meter {
  constructor(
    private readonly cluster: Cluster,
    private readonly metricsUrl: string,
    private readonly ticksPerSecond: number,
  ) {}

  async measure<T extends Done>(run: () => Promise<T>): Promise<{ done: T; cost: PhaseCost }> {
    // Scrape before reading the CPU, and after it at the end: the scrapes cost the mount
    // CPU too, and must fall outside the window.
    const requestsBefore = await this.scrape();
    const before: CostSample = { ticks: this.ticks(), requests: requestsBefore };
    const done = await run();
    const ticksAfter = this.ticks();
    const after: CostSample = { ticks: ticksAfter, requests: await this.scrape() };
    return { done, cost: costBetween(before, after, this.ticksPerSecond) };
  }

  /** The cluster's CPU milliseconds per second while nothing uses it. */
  async idleCpuMsPerSecond(): Promise<number> {
    const before = this.ticks();
    const started = performance.now();
    await new Promise((resolve) => setTimeout(resolve, IDLE_MS));
    const after = this.ticks();
    const cost = costBetween({ ticks: before, requests: { fuse: 0, cluster: 0 } }, { ticks: after, requests: { fuse: 0, cluster: 0 } }, this.ticksPerSecond);
    return cost.cpuMs / seconds(started);
  }

  private ticks(): Map<ProcessKind, number> {
    return cpuTicksByKind(this.cluster.records());
  }

  private async scrape(): Promise<RequestCounts> {
    const answer = await httpGet(this.metricsUrl, SCRAPE_TIMEOUT_MS);
    if (answer.status !== 200) throw new Error(`${this.metricsUrl} answered ${answer.status}`);
    return requestCounts(answer.text);
  }
}

function seconds(startedMs: number): number {
  return (performance.now() - startedMs) / 1000;
}

async function sequentialWrite(file: string, sizeMib: number, pattern: Buffer): Promise<Done & { bytes: number; digest: string }> {
  const hash = createHash('sha256');
  const started = performance.now();
  const handle = await open(file, 'w');
  let written = 0;
  try {
    for (let index = 0; index < sizeMib; index++) {
      // Vary each chunk so that nothing downstream can deduplicate or compress it away.
      pattern.writeUInt32BE(index, 0);
      await handle.write(pattern, 0, CHUNK_BYTES, written);
      hash.update(pattern);
      written += CHUNK_BYTES;
      if (performance.now() - started > PHASE_BUDGET_MS) break;
    }
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { count: written / MIB, seconds: seconds(started), bytes: written, digest: hash.digest('hex') };
}

async function sequentialRead(file: string, expectBytes: number, expectDigest: string): Promise<Done> {
  const hash = createHash('sha256');
  const buffer = Buffer.alloc(CHUNK_BYTES);
  const started = performance.now();
  const handle = await open(file, 'r');
  let total = 0;
  try {
    for (;;) {
      const { bytesRead } = await handle.read(buffer, 0, CHUNK_BYTES, total);
      if (bytesRead === 0) break;
      hash.update(buffer.subarray(0, bytesRead));
      total += bytesRead;
    }
  } finally {
    await handle.close();
  }
  const took = seconds(started);
  if (total !== expectBytes) throw new Error(`read ${total} bytes back, wrote ${expectBytes}`);
  if (hash.digest('hex') !== expectDigest) throw new Error('the bytes read back differ from the bytes written');
  return { count: total / MIB, seconds: took };
}

/** Runs `step(0)`, `step(1)`… up to `count` one after the other, within the phase budget
 * counted from `startedMs`; returns how many steps ran. */
async function loop(count: number, startedMs: number, step: (index: number) => Promise<void>): Promise<number> {
  let done = 0;
  while (done < count) {
    await step(done);
    done++;
    if (performance.now() - startedMs > PHASE_BUDGET_MS) break;
  }
  return done;
}

async function timedPhase(count: number, step: (index: number) => Promise<void>): Promise<Done> {
  const started = performance.now();
  const done = await loop(count, started, step);
  return { count: done, seconds: seconds(started) };
}

/** `PARALLEL_LOOPS` loops at once, loop `index` doing `counts[index]` steps. */
async function parallelPhase(counts: number[], step: (loopIndex: number, index: number) => Promise<void>): Promise<Done> {
  const started = performance.now();
  const done = await Promise.all(counts.map((count, loopIndex) => loop(count, started, (index) => step(loopIndex, index))));
  return { count: done.reduce((sum, n) => sum + n, 0), seconds: seconds(started) };
}

/** Drops the kernel's dentries and inodes (root only; the bench says when it cannot). */
let dropWarned = false;
function dropKernelCaches(): void {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '2\n');
  } catch (err) {
    if (!dropWarned) process.stderr.write(`cannot drop the kernel's caches (${(err as Error).message}): ls -l and stat may be answered by the kernel\n`);
    dropWarned = true;
  }
}

/** `ls -l DIR > /dev/null`: one call that reads the directory and stats every entry. */
async function listLong(dir: string, entries: number): Promise<Done> {
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn('ls', ['-l', dir], { stdio: ['ignore', 'ignore', 'pipe'], timeout: PHASE_BUDGET_MS });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.once('error', reject);
    child.once('close', (code, signal) => (code === 0 ? resolve() : reject(new Error(`ls -l ${dir}: ${signal ?? `exit ${code}`}: ${stderr.trim()}`))));
  });
  return { count: entries, seconds: seconds(started) };
}

/** `count` uncontended lock + unlock pairs (fcntl F_SETLK F_WRLCK, then F_UNLCK) on one
 * descriptor, by python3 (Node has no fcntl locks), timed by that process around the loop. */
async function lockPairs(file: string, count: number): Promise<Done> {
  const script = [
    'import fcntl, os, sys, time',
    'fd = os.open(sys.argv[1], os.O_RDWR)',
    'n = int(sys.argv[2]); budget = float(sys.argv[3])',
    'start = time.monotonic(); done = 0',
    'while done < n and time.monotonic() - start < budget:',
    '    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)',
    '    fcntl.lockf(fd, fcntl.LOCK_UN)',
    '    done += 1',
    'print(done, time.monotonic() - start)',
  ].join('\n');
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('python3', ['-c', script, file, String(count), String(PHASE_BUDGET_MS / 1000)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.once('error', reject);
    child.once('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`lock pairs: exit ${code}: ${stderr.trim()}`))));
  });
  const [done, took] = out.trim().split(/\s+/).map(Number);
  return { count: done!, seconds: took! };
}

/** `count` split over `parts` as evenly as whole numbers go. */
function split(count: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, index) => Math.floor(count / parts) + (index < count % parts ? 1 : 0));
}

function rateOf(phase: Phase): number {
  return phase.done.count / phase.done.seconds;
}

const perUnit = (phase: Phase, total: number) => (phase.done.count > 0 ? total / phase.done.count : NaN);

function printTable(phases: Phase[]): void {
  const header = ['', 'amount', 'seconds', 'rate', 'per', 'CPU ms', 'FUSE req', 'cluster req'];
  const cells = phases.map((phase) => [
    phase.what,
    `${phase.done.count} ${phase.unit === 'MiB' ? 'MiB' : phase.unit === 'pair' ? 'pairs' : 'files'}`,
    phase.done.seconds.toFixed(2),
    (phase.unit === 'MiB' ? `${rateOf(phase).toFixed(1)} MiB/s` : `${rateOf(phase).toFixed(0)} /s`) +
      (phase.speedup ? ` (${phase.speedup.ratio.toFixed(2)}x)` : ''),
    phase.unit,
    perUnit(phase, phase.cost.cpuMs).toFixed(2),
    perUnit(phase, phase.cost.requests.fuse).toFixed(2),
    perUnit(phase, phase.cost.requests.cluster).toFixed(2),
  ]);
  const widths = header.map((title, index) => Math.max(title.length, ...cells.map((cell) => cell[index]!.length)));
  const line = (cell: string[]) => cell.map((text, index) => (index === 0 ? text.padEnd(widths[index]!) : text.padStart(widths[index]!))).join('   ');
  process.stdout.write('\n' + line(header) + '\n' + widths.map((width) => '-'.repeat(width)).join('   ') + '\n');
  for (const cell of cells) process.stdout.write(line(cell) + '\n');
  process.stdout.write(
    '\nper: the unit the last three columns are per. CPU ms: of every process of the cluster together;' +
      '\nFUSE req: requests the mount served; cluster req: HTTP requests it sent to proxies, retries included.\n\n',
  );
}

/** Prints every figure as `metric <phase>.<figure> <value> <unit>`. */
function printMetrics(phases: Phase[], idleCpuMsPerSecond: number): void {
  const metric = (name: string, value: number, unit: string) => process.stdout.write(`metric ${name} ${Number.isFinite(value) ? Number(value.toPrecision(4)) : value} ${unit}\n`);
  metric('idle.cpu', idleCpuMsPerSecond, 'ms/s');
  for (const phase of phases) {
    const per = phase.unit;
    metric(`${phase.slug}.rate`, rateOf(phase), phase.unit === 'MiB' ? 'MiB/s' : `${phase.unit}s/s`);
    if (phase.speedup) metric(`${phase.slug}.speedup_vs_${phase.speedup.of}`, phase.speedup.ratio, 'x');
    metric(`${phase.slug}.cpu`, perUnit(phase, phase.cost.cpuMs), `ms/${per}`);
    for (const kind of COSTED_KINDS) metric(`${phase.slug}.cpu.${kind}`, perUnit(phase, phase.cost.cpuMsByKind.get(kind) ?? 0), `ms/${per}`);
    metric(`${phase.slug}.fuse_requests`, perUnit(phase, phase.cost.requests.fuse), `req/${per}`);
    metric(`${phase.slug}.cluster_requests`, perUnit(phase, phase.cost.requests.cluster), `req/${per}`);
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'size-mib': { type: 'string' },
      files: { type: 'string' },
      locks: { type: 'string' },
      nodes: { type: 'string' },
      proxies: { type: 'string' },
      'mount-args': { type: 'string' },
      'node-args': { type: 'string' },
      // Plaintext and no authentication, to measure what TLS costs (README, Security).
      insecure: { type: 'boolean' },
    },
    strict: true,
  });
  const sizeMib = intOption(values['size-mib'], 'size-mib', 256, 1, 64 * 1024);
  const fileCount = intOption(values.files, 'files', 1000, 1, 1_000_000);
  const lockCount = intOption(values.locks, 'locks', 1000, 1, 1_000_000);
  const nodes = intOption(values.nodes, 'nodes', 3, 1, 16);
  const proxies = intOption(values.proxies, 'proxies', 2, 1, 16);
  // Extra dfs-mount arguments, to compare settings (e.g. --attr-timeout-ms 1000).
  const mountArgs = (values['mount-args'] ?? '').split(/\s+/).filter((a) => a !== '');
  // Extra storage-node arguments, likewise (e.g. --log-io buffered).
  const nodeArgs = (values['node-args'] ?? '').split(/\s+/).filter((a) => a !== '');
  const ticksPerSecond = clockTicksPerSecond();

  const root = mkdtempSync(join(tmpdir(), 'dfs-bench-'));
  let cluster: Cluster | null = null;
  const cleanup = async () => {
    try {
      if (cluster !== null) await cluster.stop();
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: tearing the cluster down\n`);
      void cleanup().finally(() => process.exit(130));
    });
  }

  try {
    process.stdout.write(`starting ${nodes} storage nodes and ${proxies} proxies in ${root}...\n`);
    cluster = await startCluster({ dataDir: join(root, 'cluster'), nodes, proxies, insecure: values.insecure === true, nodeArgs });
    process.stdout.write(`transport: ${values.insecure ? 'plaintext (--insecure)' : 'TLS with client certificates'}\n`);
    const mountpoint = join(root, 'mnt');
    mkdirSync(mountpoint);
    const [metricsPort] = await freePorts(1);
    const metricsAddr = `127.0.0.1:${metricsPort!}`;
    await cluster.mount(mountpoint, { args: ['--metrics-addr', metricsAddr, ...mountArgs] });
    const meter = new Meter(cluster, `http://${metricsAddr}/metrics`, ticksPerSecond);
    process.stdout.write(`mounted at ${mountpoint}${mountArgs.length > 0 ? ` (${mountArgs.join(' ')})` : ''}; writing ${sizeMib} MiB, then ${fileCount} small files\n`);

    const idleCpuMsPerSecond = await meter.idleCpuMsPerSecond();
    process.stdout.write(`the idle cluster uses ${idleCpuMsPerSecond.toFixed(1)} CPU ms/s (clock ticks of ${(1000 / ticksPerSecond).toFixed(0)} ms); every figure below includes it\n`);

    const phases: Phase[] = [];
    const add = (slug: string, what: string, unit: Phase['unit'], measured: { done: Done; cost: PhaseCost }) => {
      const phase: Phase = { slug, what, unit, done: { count: measured.done.count, seconds: measured.done.seconds }, cost: measured.cost };
      phases.push(phase);
      return phase;
    };

    const big = join(mountpoint, 'big.bin');
    const written = await meter.measure(() => sequentialWrite(big, sizeMib, randomBytes(CHUNK_BYTES)));
    add('seq_write', 'sequential write (1 MiB writes, fsync, close)', 'MiB', written);
    add('seq_read', 'sequential read (1 MiB reads, fresh open)', 'MiB', await meter.measure(() => sequentialRead(big, written.done.bytes, written.done.digest)));
    await unlink(big);

    const dir = join(mountpoint, 'small');
    await mkdir(dir);
    const name = (index: number) => join(dir, `f${index}`);
    const created = add(
      'create',
      'create (open O_CREAT|O_EXCL, close)',
      'file',
      await meter.measure(() =>
        timedPhase(fileCount, async (index) => {
          const handle = await open(name(index), 'wx');
          await handle.close();
        }),
      ),
    );
    const files = created.done.count;
    dropKernelCaches();
    add('ls_l', 'ls -l of the directory (one call)', 'file', await meter.measure(() => listLong(dir, files)));
    dropKernelCaches();
    add('stat', 'stat', 'file', await meter.measure(() => timedPhase(files, async (index) => void (await stat(name(index))))));
    add('unlink', 'unlink', 'file', await meter.measure(() => timedPhase(files, (index) => unlink(name(index)))));

    const smallDir = join(mountpoint, 'small-4k');
    await mkdir(smallDir);
    const smallData = randomBytes(SMALL_FILE_BYTES);
    add(
      'small_files',
      `small files (create exclusive, write ${SMALL_FILE_BYTES / 1024} KiB, close)`,
      'file',
      await meter.measure(() =>
        timedPhase(fileCount, async (index) => {
          const handle = await open(join(smallDir, `f${index}`), 'wx');
          try {
            await handle.write(smallData, 0, SMALL_FILE_BYTES, 0);
          } finally {
            await handle.close();
          }
        }),
      ),
    );

    const loopDir = (loopIndex: number) => join(mountpoint, 'parallel', `loop${loopIndex}`);
    for (let loopIndex = 0; loopIndex < PARALLEL_LOOPS; loopIndex++) await mkdir(loopDir(loopIndex), { recursive: true });
    const parallel = add(
      'create_8_loops',
      `create, ${PARALLEL_LOOPS} parallel loops (own directory each)`,
      'file',
      await meter.measure(() =>
        parallelPhase(split(fileCount, PARALLEL_LOOPS), async (loopIndex, index) => {
          const handle = await open(join(loopDir(loopIndex), `f${index}`), 'wx');
          await handle.close();
        }),
      ),
    );
    parallel.speedup = { ratio: rateOf(parallel) / rateOf(created), of: 'create' };

    const lockFile = join(mountpoint, 'lock');
    await (await open(lockFile, 'w')).close();
    add('lock_unlock', 'fcntl lock + unlock, uncontended', 'pair', await meter.measure(() => lockPairs(lockFile, lockCount)));

    printTable(phases);
    printMetrics(phases, idleCpuMsPerSecond);
  } finally {
    await cleanup();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
