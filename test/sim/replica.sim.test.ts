/*
 * The replication protocol under a seeded storm (test/sim/sim-world.ts): a thousand seeds
 * must keep every invariant, a seed must replay exactly, and the storm must be real (the
 * faults happen, and a broken core is caught). More seeds: `npm run sim -- --seeds N`.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { step } from '../../storage/replica-core';
import { simulate, type SimResult } from './sim-world';

const SEEDS = 1000;

function runSeeds(first: number, count: number, options: Parameters<typeof simulate>[1] = {}): { failed: SimResult[]; totals: Record<string, number>; ms: number } {
  const started = Date.now();
  const failed: SimResult[] = [];
  const totals: Record<string, number> = {};
  for (let seed = first; seed < first + count; seed++) {
    const r = simulate(seed, options);
    for (const [k, v] of Object.entries(r.stats)) totals[k] = (totals[k] ?? 0) + v;
    if (!r.ok) failed.push(r);
  }
  return { failed, totals, ms: Date.now() - started };
}

test(`${SEEDS} seeds keep every invariant and converge`, () => {
  const { failed, totals, ms } = runSeeds(1, SEEDS);
  console.log(`  ${SEEDS} seeds in ${ms} ms (${Math.round((SEEDS * 1000) / ms)} seeds/s): ${JSON.stringify(totals)}`);
  const first = failed[0];
  assert.ok(first === undefined, first && `seed ${first.seed} failed (replay: npm run sim -- --seed ${first.seed} --trace): ${first.error}; ${failed.length} failed in all`);
  // The storm is real: every kind of fault and every protocol path happened somewhere.
  for (const k of ['crashes', 'epochBumps', 'removals', 'proxyDeaths', 'dropped', 'duplicated', 'holesClaimed', 'staleEpochs', 'slotTaken', 'holds', 'reads', 'opsAbandoned']) {
    assert.ok(totals[k]! > 0, `no ${k} in ${SEEDS} seeds`);
  }
  assert.ok(totals.opsAcked! > SEEDS * 20, `only ${totals.opsAcked} ops acknowledged`);
});

test('a seed replays exactly, alone or after others', () => {
  const trace = (seed: number) => {
    const lines: string[] = [];
    const r = simulate(seed, { trace: (l) => lines.push(l) });
    return { r, lines };
  };
  const a = trace(77);
  runSeeds(1, 20);
  const b = trace(77);
  assert.ok(a.lines.length > 100);
  assert.equal(b.lines, a.lines);
  assert.equal(b.r, a.r);
});

test('a core that commits past its backups is caught', () => {
  // The primary treats its own log as the commit point: an acknowledged op is then not
  // durable on every in-sync node, which the simulation must notice.
  const broken: typeof step = (state, event) => {
    const out = step(state, event);
    if (state.role === 'primary' && state.commitSeq < state.durableSeq) {
      state.commitSeq = state.durableSeq;
      out.effects.push(...step(state, { type: 'release' }).effects); // release pumps apply
    }
    return out;
  };
  const { failed } = runSeeds(1, 20, { step: broken });
  assert.ok(failed.length > 0, 'the broken core passed');
  assert.match(failed[0]!.error!, /below acknowledged seq/);
});

test('known gap, found by the simulation: a restarted primary may reassign a slot its backups hold', () => {
  // Without failover (issue 4), a primary that crashes before its own fsync forgets ops it
  // already sent to backups; a proxy's retry of that slot carries a new timestamp. When
  // failover and log reconciliation land, this test flips: primary crashes must pass too.
  const { failed } = runSeeds(1, 300, { primaryCrashes: true });
  assert.ok(failed.length > 0, 'primary crashes no longer break the protocol: make this test expect every seed to pass');
  assert.ok(failed.every((f) => /seq \d+ on n\d holds .*, elsewhere|differs from the primary/.test(f.error!)), failed.map((f) => `${f.seed}: ${f.error}`).join('\n'));
});

test.run();
