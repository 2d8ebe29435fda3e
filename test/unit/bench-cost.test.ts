/*
 * What the benchmark reads to cost a phase (test/bench/cost.ts): the CPU times in
 * /proc/<pid>/stat (proc(5)), whose command name may hold spaces and parentheses, and the
 * Prometheus text the mount serves at /metrics.
 *
 *   node dist/test/unit/bench-cost.test.js
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseProcStat, readProcStat } from '../../cli/processes';
import { costBetween, parseMetricsText, requestCounts, sumMetric } from '../bench/cost';

/** A /proc/<pid>/stat line as Linux 6 writes it (52 fields), for `comm`, with utime 1234,
 * stime 567 and start time 8901234. */
function statLine(comm: string): string {
  const after = [
    'S', '1', '4242', '4242', '0', '-1', '4194560', '1496', '0', '0', '0',
    '1234', '567', '0', '0', '20', '0', '11', '0', '8901234', '1234567890', '12345',
  ];
  while (after.length < 50) after.push('0');
  return `4243 (${comm}) ${after.join(' ')}\n`;
}

const PROC_STAT_CASES: Array<[string, string]> = [
  ['a plain name', 'node'],
  ['a name with spaces', 'Web Content'],
  ['a name with a closing parenthesis and a space after it', 'a) S 1 2 3 (b'],
  ['a name of parentheses only', ')()('],
  ['an empty name', ''],
];

for (const [what, comm] of PROC_STAT_CASES) {
  test(`/proc/<pid>/stat: fields 14, 15 and 22 of ${what}`, () => {
    assert.equal(parseProcStat(statLine(comm)), { state: 'S', utimeTicks: 1234, stimeTicks: 567, startTime: '8901234' });
  });
}

test('/proc/<pid>/stat: not a stat line', () => {
  assert.is(parseProcStat(''), null);
  assert.is(parseProcStat('4243 (node S 1'), null);
  assert.is(parseProcStat('4243 (node) S 1 2 3'), null); // cut short
  assert.is(parseProcStat(statLine('node').replace(' 1234 ', ' x ')), null);
});

test('/proc/<pid>/stat: this process has spent some CPU', () => {
  const stat = readProcStat(process.pid);
  assert.ok(stat !== null);
  assert.ok(stat.utimeTicks + stat.stimeTicks >= 0);
  assert.is(readProcStat(2 ** 22 + 1), null); // above pid_max: no such process
});

const SCRAPE = `# HELP dfs_mount_fuse_requests_total FUSE requests from the kernel, by operation.
# TYPE dfs_mount_fuse_requests_total counter
dfs_mount_fuse_requests_total{op="getattr"} 120
dfs_mount_fuse_requests_total{op="create"} 40

# HELP dfs_mount_cluster_requests_total HTTP requests sent to proxies.
# TYPE dfs_mount_cluster_requests_total counter
dfs_mount_cluster_requests_total{api="ops"} 80
dfs_mount_cluster_requests_total{api="attr"} 1.5e2 1700000000000
other_total 7
`;

test('metrics text: samples, labels, values and timestamps', () => {
  const samples = parseMetricsText(SCRAPE);
  assert.equal(samples, [
    { name: 'dfs_mount_fuse_requests_total', labels: { op: 'getattr' }, value: 120 },
    { name: 'dfs_mount_fuse_requests_total', labels: { op: 'create' }, value: 40 },
    { name: 'dfs_mount_cluster_requests_total', labels: { api: 'ops' }, value: 80 },
    { name: 'dfs_mount_cluster_requests_total', labels: { api: 'attr' }, value: 150 },
    { name: 'other_total', labels: {}, value: 7 },
  ]);
  assert.is(sumMetric(samples, 'dfs_mount_fuse_requests_total'), 160);
  assert.is(sumMetric(samples, 'absent_total'), 0);
  assert.equal(requestCounts(SCRAPE), { fuse: 160, cluster: 230 });
});

test('metrics text: label values with escapes, commas, braces and spaces', () => {
  const [sample] = parseMetricsText('m{a="x\\"y",b="c\\\\d",c="e\\nf", d = "1,2} 3" ,} -4\n');
  assert.equal(sample, { name: 'm', labels: { a: 'x"y', b: 'c\\d', c: 'e\nf', d: '1,2} 3' }, value: -4 });
});

test('metrics text: special values', () => {
  const values = parseMetricsText('a +Inf\nb -Inf\nc NaN\nd 0.25\n').map((sample) => sample.value);
  assert.equal(values.slice(0, 2), [Infinity, -Infinity]);
  assert.ok(Number.isNaN(values[2]));
  assert.is(values[3], 0.25);
});

const BROKEN: Array<[string, string]> = [
  ['no value', 'm{a="b"}'],
  ['a value that is no number', 'm one'],
  ['an unterminated label value', 'm{a="b} 1'],
  ['a label without quotes', 'm{a=b} 1'],
  ['a bad escape', 'm{a="\\t"} 1'],
  ['no name', '{a="b"} 1'],
  ['too many fields', 'm 1 2 3'],
];

for (const [what, line] of BROKEN) {
  test(`metrics text: ${what} is an error, not a silent zero`, () => {
    assert.throws(() => parseMetricsText(`ok 1\n${line}\n`), /metrics line 2/);
  });
}

test('cost: CPU ticks become milliseconds per kind and in all; requests are differences', () => {
  const cost = costBetween(
    { ticks: new Map([['mount', 100], ['proxy', 50]]), requests: { fuse: 10, cluster: 4 } },
    { ticks: new Map([['mount', 130], ['proxy', 52], ['redis', 1]]), requests: { fuse: 25, cluster: 9 } },
    100,
  );
  assert.equal([...cost.cpuMsByKind], [['mount', 300], ['proxy', 20], ['redis', 10]]);
  assert.is(cost.cpuMs, 330);
  assert.equal(cost.requests, { fuse: 15, cluster: 5 });
});

test.run();
