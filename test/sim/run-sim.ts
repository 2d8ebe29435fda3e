/*
 * Runs the replication simulation (test/sim/sim-world.ts) over many seeds, or replays one.
 *
 *   npm run sim -- --seeds 10000            seeds 1..10000
 *   npm run sim -- --seeds 500 --seed 9000  seeds 9000..9499
 *   npm run sim -- --seed 1234              that seed alone
 *   npm run sim -- --seed 1234 --trace      ...printing every event and effect
 *   npm run sim -- --seeds 1000 --no-primary-faults      only backups crash or pause
 *   npm run sim -- --seeds 1000 --unconfirmed-promotion  the real leader's promotion rule
 *
 * Prints every failing seed with its error and the command that replays it, and exits
 * non-zero if any failed.
 */
import { parseArgs } from 'node:util';
import { simulate } from './sim-world';

function main(): void {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string' },
      seed: { type: 'string' },
      trace: { type: 'boolean', default: false },
      'no-primary-faults': { type: 'boolean', default: false },
      'unconfirmed-promotion': { type: 'boolean', default: false },
      'stop-at-first': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const int = (text: string | undefined, name: string, fallback: number): number => {
    if (text === undefined) return fallback;
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} must be a non-negative integer`);
    return n;
  };
  const first = int(values.seed, 'seed', 1);
  const count = int(values.seeds, 'seeds', values.seed !== undefined ? 1 : 1000);
  const options = { primaryFaults: !values['no-primary-faults'], unconfirmedPromotion: values['unconfirmed-promotion'] };
  const flags = `${options.primaryFaults ? '' : ' --no-primary-faults'}${options.unconfirmedPromotion ? ' --unconfirmed-promotion' : ''}`;
  const trace = values.trace ? (line: string) => process.stdout.write(line + '\n') : undefined;

  const started = Date.now();
  const failed: number[] = [];
  const totals: Record<string, number> = {};
  for (let seed = first; seed < first + count; seed++) {
    const r = simulate(seed, { ...options, trace });
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) {
      failed.push(seed);
      process.stdout.write(`FAIL seed ${seed}: ${r.error}\n  replay: npm run sim -- --seed ${seed}${flags} --trace\n`);
      if (values['stop-at-first']) break;
    }
  }
  const seconds = (Date.now() - started) / 1000;
  const ran = failed.length > 0 && values['stop-at-first'] ? failed[failed.length - 1]! - first + 1 : count;
  process.stdout.write(`${ran} seeds (${first}..${first + ran - 1}) in ${seconds.toFixed(1)} s, ${(ran / seconds).toFixed(0)} seeds/s\n`);
  process.stdout.write(`totals: ${Object.entries(totals).map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
  process.stdout.write(failed.length === 0 ? 'all seeds passed\n' : `${failed.length} failed: ${failed.slice(0, 50).join(' ')}${failed.length > 50 ? ' ...' : ''}\n`);
  process.exitCode = failed.length === 0 ? 0 : 1;
}

main();
