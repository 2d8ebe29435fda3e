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
 *   create/stat/unlink FILES empty files in one directory, one phase each
 *
 *   npm run bench [-- --size-mib 256 --files 1000 --nodes 3 --proxies 2 --mount-args='--attr-timeout-ms 1000']
 *
 * Every phase has a time budget; one that runs over stops early and reports what it did,
 * so the benchmark ends in bounded time even on a slow machine.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open, stat, unlink, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { intOption } from '../../common/config';
import { startCluster, type Cluster } from '../../cli/local-cluster';

const CHUNK_BYTES = 1024 * 1024;
const MIB = 1024 * 1024;
/** Each phase stops when it has run this long, and reports the rate of what it did. */
const PHASE_BUDGET_MS = 4 * 60 * 1000;

interface Row {
  what: string;
  count: string;
  seconds: number;
  rate: string;
}

function seconds(startedMs: number): number {
  return (performance.now() - startedMs) / 1000;
}

async function sequentialWrite(file: string, sizeMib: number, pattern: Buffer): Promise<{ row: Row; bytes: number; digest: string }> {
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
  const took = seconds(started);
  return {
    row: { what: 'sequential write (1 MiB writes, fsync, close)', count: `${written / MIB} MiB`, seconds: took, rate: `${(written / MIB / took).toFixed(1)} MiB/s` },
    bytes: written,
    digest: hash.digest('hex'),
  };
}

async function sequentialRead(file: string, expectBytes: number, expectDigest: string): Promise<Row> {
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
  return { what: 'sequential read (1 MiB reads, fresh open)', count: `${total / MIB} MiB`, seconds: took, rate: `${(total / MIB / took).toFixed(1)} MiB/s` };
}

async function timedPhase(what: string, count: number, step: (index: number) => Promise<void>): Promise<{ row: Row; done: number }> {
  const started = performance.now();
  let done = 0;
  for (; done < count; done++) {
    await step(done);
    if (performance.now() - started > PHASE_BUDGET_MS) {
      done++;
      break;
    }
  }
  const took = seconds(started);
  return { row: { what, count: `${done} files`, seconds: took, rate: `${(done / took).toFixed(0)} /s` }, done };
}

function printTable(rows: Row[]): void {
  const header = ['', 'amount', 'seconds', 'rate'];
  const cells = rows.map((row) => [row.what, row.count, row.seconds.toFixed(2), row.rate]);
  const widths = header.map((title, index) => Math.max(title.length, ...cells.map((cell) => cell[index]!.length)));
  const line = (cell: string[]) => cell.map((text, index) => (index === 0 ? text.padEnd(widths[index]!) : text.padStart(widths[index]!))).join('   ');
  process.stdout.write('\n' + line(header) + '\n' + widths.map((width) => '-'.repeat(width)).join('   ') + '\n');
  for (const cell of cells) process.stdout.write(line(cell) + '\n');
  process.stdout.write('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'size-mib': { type: 'string' },
      files: { type: 'string' },
      nodes: { type: 'string' },
      proxies: { type: 'string' },
      'mount-args': { type: 'string' },
    },
    strict: true,
  });
  const sizeMib = intOption(values['size-mib'], 'size-mib', 256, 1, 64 * 1024);
  const fileCount = intOption(values.files, 'files', 1000, 1, 1_000_000);
  const nodes = intOption(values.nodes, 'nodes', 3, 1, 16);
  const proxies = intOption(values.proxies, 'proxies', 2, 1, 16);
  // Extra dfs-mount arguments, to compare settings (e.g. --attr-timeout-ms 1000).
  const mountArgs = (values['mount-args'] ?? '').split(/\s+/).filter((a) => a !== '');

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
    cluster = await startCluster({ dataDir: join(root, 'cluster'), nodes, proxies });
    const mountpoint = join(root, 'mnt');
    mkdirSync(mountpoint);
    await cluster.mount(mountpoint, { args: mountArgs });
    process.stdout.write(`mounted at ${mountpoint}${mountArgs.length > 0 ? ` (${mountArgs.join(' ')})` : ''}; writing ${sizeMib} MiB, then ${fileCount} small files\n`);

    const rows: Row[] = [];
    const big = join(mountpoint, 'big.bin');
    const written = await sequentialWrite(big, sizeMib, randomBytes(CHUNK_BYTES));
    rows.push(written.row);
    rows.push(await sequentialRead(big, written.bytes, written.digest));
    await unlink(big);

    const dir = join(mountpoint, 'small');
    await mkdir(dir);
    const name = (index: number) => join(dir, `f${index}`);
    const created = await timedPhase('create (open O_CREAT|O_EXCL, close)', fileCount, async (index) => {
      const handle = await open(name(index), 'wx');
      await handle.close();
    });
    rows.push(created.row);
    rows.push((await timedPhase('stat', created.done, async (index) => void (await stat(name(index))))).row);
    rows.push((await timedPhase('unlink', created.done, (index) => unlink(name(index)))).row);

    printTable(rows);
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
