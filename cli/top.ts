/*
 * `dfs top`: a terminal view of the cluster, refreshed every second, from what the
 * proxies' admin ports serve without a certificate (common/admin-server.ts): every proxy's
 * /metrics and one proxy's /ui/status.json.
 *
 *   dfs top [--data DIR | --admin URL[,URL...]] [--interval-ms N] [--count N]
 *
 * Each refresh compares two scrapes of every proxy: ops and reads per second from
 * dfs_proxy_requests_total, latency percentiles (p50, p90, p99) of the client API from
 * the bucket deltas of dfs_proxy_request_duration_seconds (linear within a bucket, as
 * PromQL's histogram_quantile), and a table of the nodes (role, state, applied sequence ID,
 * lag, reads, sync progress). On a terminal the screen is redrawn in place and `q` quits;
 * otherwise each refresh is printed as plain lines (and `--count` bounds how many).
 *
 * The arithmetic is pure (topFigures, renderTop) and tested apart; the loop only fetches.
 */
import { request } from 'undici';
import type { ClusterStatus } from '../common/api';
import { parseMetricsText, type MetricSample } from '../common/metrics-text';
import { progressText } from './progress-view';

/** How long one fetch from an admin port may take. */
const TOP_FETCH_TIMEOUT_MS = 3_000;
/** The client API routes whose requests count as load (not probes or scrapes). */
const CLIENT_APIS = new Set(['ops', 'attr', 'dir', 'data', 'link', 'xattr', 'xattrs', 'statfs', 'leases']);
const READ_APIS = new Set(['attr', 'dir', 'data', 'link', 'xattr', 'xattrs', 'statfs']);

/** One refresh's raw input: the samples of every proxy that answered, and the status. */
export interface TopScrape {
  atMs: number;
  proxies: MetricSample[][];
  status: ClusterStatus | null;
}

export interface TopFigures {
  opsPerSecond: number;
  readsPerSecond: number;
  /** Seconds; null when no request was answered between the two scrapes. */
  p50: number | null;
  p90: number | null;
  p99: number | null;
}

function sumWhere(samples: MetricSample[][], name: string, keep: (labels: Record<string, string>) => boolean): number {
  let total = 0;
  for (const proxy of samples) for (const s of proxy) if (s.name === name && keep(s.labels)) total += s.value;
  return total;
}

/** Cumulative bucket counts by upper bound, summed over proxies and client API routes. */
function buckets(samples: MetricSample[][]): Map<number, number> {
  const out = new Map<number, number>();
  for (const proxy of samples) {
    for (const s of proxy) {
      if (s.name !== 'dfs_proxy_request_duration_seconds_bucket' || !CLIENT_APIS.has(s.labels.api ?? '')) continue;
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
      out.set(le, (out.get(le) ?? 0) + s.value);
    }
  }
  return out;
}

/** The q-quantile of a cumulative histogram (upper bound → count), interpolated linearly
 * within the bucket it falls in; the top finite bound when it falls in +Inf. */
export function histogramQuantile(q: number, cumulative: Map<number, number>): number | null {
  const bounds = [...cumulative.keys()].sort((a, b) => a - b);
  const total = cumulative.get(Infinity) ?? (bounds.length ? cumulative.get(bounds[bounds.length - 1]!)! : 0);
  if (!(total > 0)) return null;
  const rank = q * total;
  let lowerBound = 0;
  let lowerCount = 0;
  for (const bound of bounds) {
    const count = cumulative.get(bound)!;
    if (count >= rank) {
      if (bound === Infinity) return lowerBound;
      const inBucket = count - lowerCount;
      return inBucket > 0 ? lowerBound + ((bound - lowerBound) * (rank - lowerCount)) / inBucket : bound;
    }
    lowerBound = bound;
    lowerCount = count;
  }
  return lowerBound;
}

/** The figures between two scrapes. Proxies are matched by position: a proxy that did
 * not answer one of the two makes the counters move backwards, and a rate is never shown
 * below 0. */
export function topFigures(before: TopScrape, after: TopScrape): TopFigures {
  const seconds = Math.max(0.001, (after.atMs - before.atMs) / 1000);
  const count = (s: TopScrape, apis: Set<string>) => sumWhere(s.proxies, 'dfs_proxy_requests_total', (l) => apis.has(l.api ?? ''));
  const ops = Math.max(0, count(after, new Set(['ops'])) - count(before, new Set(['ops'])));
  const reads = Math.max(0, count(after, READ_APIS) - count(before, READ_APIS));
  const a = buckets(after.proxies);
  const b = buckets(before.proxies);
  const delta = new Map<number, number>();
  for (const [le, n] of a) delta.set(le, Math.max(0, n - (b.get(le) ?? 0)));
  return {
    opsPerSecond: ops / seconds,
    readsPerSecond: reads / seconds,
    p50: histogramQuantile(0.5, delta),
    p90: histogramQuantile(0.9, delta),
    p99: histogramQuantile(0.99, delta),
  };
}

function ms(seconds: number | null): string {
  return seconds === null ? '–' : `${(seconds * 1000).toFixed(seconds < 0.01 ? 2 : 1)} ms`;
}

/** The screen, as lines. */
export function renderTop(figures: TopFigures | null, scrape: TopScrape, proxyCount: number): string[] {
  const st = scrape.status;
  const lines = [
    `dfs top — ${new Date(scrape.atMs).toISOString().slice(11, 19)} UTC   (q quits)`,
    st ? `leader ${st.leader ?? 'none'}   epoch ${st.epoch}   seq ${st.seq}   primary ${st.membership?.primary ?? 'none'}` : 'cluster status: no proxy answered',
    figures
      ? `ops ${figures.opsPerSecond.toFixed(1)}/s   reads ${figures.readsPerSecond.toFixed(1)}/s   latency p50 ${ms(figures.p50)}  p90 ${ms(figures.p90)}  p99 ${ms(figures.p99)}   (${scrape.proxies.length} of ${proxyCount} proxies)`
      : `ops –/s   reads –/s   latency –   (first scrape; ${scrape.proxies.length} of ${proxyCount} proxies)`,
    '',
    `${'NODE'.padEnd(8)}${'ROLE'.padEnd(9)}${'STATE'.padEnd(22)}${'APPLIED'.padStart(10)}${'LAG'.padStart(8)}${'READS'.padStart(9)}  SYNC`,
  ];
  for (const n of st?.nodes ?? []) {
    const sync = n.sync ? `from ${n.sync.source}: ${progressText({ entries: n.sync.entries, bytes: n.sync.bytes, totalEntries: n.sync.totalEntries ?? null, totalBytes: n.sync.totalBytes ?? null, bytesPerSecond: n.sync.bytesPerSecond ?? 0 })}` : '';
    lines.push(
      `${n.id.padEnd(8)}${n.role.padEnd(9)}${(n.state + (n.confirming ? ' (confirming)' : '')).padEnd(22)}${String(n.appliedSeq ?? '–').padStart(10)}${String(n.lag ?? '–').padStart(8)}${String(n.reads ?? 0).padStart(9)}  ${sync}`.trimEnd(),
    );
  }
  return lines;
}

async function fetchText(url: string): Promise<string | null> {
  try {
    const res = await request(url, { method: 'GET', headersTimeout: TOP_FETCH_TIMEOUT_MS, bodyTimeout: TOP_FETCH_TIMEOUT_MS, signal: AbortSignal.timeout(TOP_FETCH_TIMEOUT_MS) });
    const text = await res.body.text();
    return res.statusCode === 200 ? text : null;
  } catch {
    return null;
  }
}

/** One scrape of every admin URL (a proxy that does not answer is left out). */
export async function scrapeTop(adminUrls: string[]): Promise<TopScrape> {
  const texts = await Promise.all(adminUrls.map((url) => fetchText(`${url}/metrics`)));
  let status: ClusterStatus | null = null;
  for (const url of adminUrls) {
    const text = await fetchText(`${url}/ui/status.json`);
    if (text !== null) {
      status = JSON.parse(text) as ClusterStatus;
      break;
    }
  }
  return { atMs: Date.now(), proxies: texts.filter((t): t is string => t !== null).map(parseMetricsText), status };
}

/** Runs the view until `q` (on a terminal), `count` refreshes, or SIGINT. */
export async function runTop(adminUrls: string[], intervalMs: number, count: number | null, write: (text: string) => void): Promise<void> {
  const tty = process.stdout.isTTY === true && process.stdin.isTTY === true;
  let stop = false;
  let wake: (() => void) | null = null;
  const quit = () => {
    stop = true;
    wake?.();
  };
  const onKey = (key: Buffer) => {
    // q, Q, Ctrl-C (raw mode delivers it as a byte, not a signal).
    if (key.includes(0x71) || key.includes(0x51) || key.includes(0x03)) quit();
  };
  if (tty) {
    process.stdin.setRawMode(true);
    process.stdin.on('data', onKey);
    write('\x1b[?25l'); // hide the cursor while drawing
  }
  process.once('SIGINT', quit);
  let previous: TopScrape | null = null;
  try {
    for (let round = 0; !stop && (count === null || round < count); round++) {
      const scrape = await scrapeTop(adminUrls);
      const lines = renderTop(previous && scrape.proxies.length === previous.proxies.length ? topFigures(previous, scrape) : null, scrape, adminUrls.length);
      write(tty ? `\x1b[H\x1b[2J${lines.join('\n')}\n` : `${lines.join('\n')}\n\n`);
      previous = scrape;
      if (count !== null && round + 1 >= count) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, intervalMs);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  } finally {
    process.off('SIGINT', quit);
    if (tty) {
      process.stdin.off('data', onKey);
      process.stdin.setRawMode(false);
      process.stdin.pause();
      write('\x1b[?25h');
    }
  }
}
