/*
 * A reader of the Prometheus text exposition format (version 0.0.4), for the clients of
 * the metrics dfs serves: the benchmark (test/bench/cost.ts), `dfs top` (cli/top.ts) and
 * the tests. Only what prom-client writes needs to be read; anything else is an error,
 * never a silently skipped line.
 */

/** One sample of the Prometheus text exposition format (version 0.0.4). */
export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/**
 * Parses Prometheus text exposition: `name{label="value",…} value [timestamp]` per line,
 * `#` lines are comments (HELP, TYPE). Label values may hold `\\`, `\"` and `\n` escapes,
 * and commas, braces and spaces inside their quotes. Throws on a line it cannot read: a
 * benchmark must not quietly count nothing.
 */
export function parseMetricsText(text: string): MetricSample[] {
  const samples: MetricSample[] = [];
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fail = (why: string) => new Error(`metrics line ${index + 1}: ${why}: ${JSON.stringify(raw)}`);
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (nameMatch === null) throw fail('no metric name');
    const name = nameMatch[0];
    let at = name.length;
    const labels: Record<string, string> = {};
    if (line[at] === '{') {
      at++;
      for (;;) {
        while (line[at] === ' ') at++;
        if (line[at] === '}') {
          at++;
          break;
        }
        const labelMatch = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(at));
        if (labelMatch === null) throw fail('bad label');
        at += labelMatch[0].length;
        let value = '';
        for (;;) {
          const ch = line[at];
          if (ch === undefined) throw fail('unterminated label value');
          at++;
          if (ch === '"') break;
          if (ch === '\\') {
            const escaped = line[at++];
            if (escaped === 'n') value += '\n';
            else if (escaped === '\\' || escaped === '"') value += escaped;
            else throw fail('bad escape in label value');
          } else {
            value += ch;
          }
        }
        labels[labelMatch[1]!] = value;
        while (line[at] === ' ') at++;
        if (line[at] === ',') at++;
        else if (line[at] !== '}') throw fail('expected , or } after a label');
      }
    }
    const rest = line.slice(at).trim().split(/\s+/);
    if (rest.length < 1 || rest.length > 2 || rest[0] === '') throw fail('expected a value and at most a timestamp');
    samples.push({ name, labels, value: parseSampleValue(rest[0]!, fail) });
  }
  return samples;
}

function parseSampleValue(text: string, fail: (why: string) => Error): number {
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (text === 'NaN') return NaN;
  const value = Number(text);
  if (text === '' || Number.isNaN(value)) throw fail('value is not a number');
  return value;
}
