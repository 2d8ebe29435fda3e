/*
 * The partition scenarios (issue 14, acceptance 1; docs/cluster.md, Partitions), as one
 * suite per group of scenarios: each group runs on a lab of its own, in its own test file
 * (test/e2e/partitions-*.test.ts), so that no file runs past the runner's limit per file.
 * Each scenario must end with 0 acknowledged writes lost, 0 stale reads, 0
 * non-linearizable registers, at most one primary per epoch, `dfs verify` passing, and a
 * write acknowledged within 10 s of the heal. DFS_PARTITION_SCENARIOS=name,name runs only
 * those.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { currentPrimary, RESUME_MS_MAX, runScenario, startLab, type Lab, type ScenarioReport } from './partition-lab';

const NODES = ['n1', 'n2', 'n3'];
const only = process.env.DFS_PARTITION_SCENARIOS?.split(',');

/** Runs the scenarios named `names`, in turn, on one lab. */
export function runPartitionSuite(title: string, names: readonly string[]): void {
  const s = suite(title);
  const ctx: { lab?: Lab; skip?: string } = {};

  s.before(async () => {
    const lab = await startLab();
    if (typeof lab === 'string') {
      ctx.skip = lab;
      console.log(`  SKIPPED: ${lab}`);
    } else ctx.lab = lab;
  });

  s.after(async () => {
    await ctx.lab?.stop();
  });

  function holds(r: ScenarioReport): void {
    assert.is(r.lostWrites, 0, `${r.name}: acknowledged writes lost`);
    assert.is(r.staleReads, 0, `${r.name}: stale reads`);
    assert.equal(r.nonLinearizable, [], `${r.name}: ${r.problems.slice(0, 3).join('; ')}`);
    assert.ok(r.primariesPerEpochMax <= 1, `${r.name}: two primaries in one epoch`);
    assert.ok(r.verifyOk, `${r.name}: dfs verify failed`);
    assert.ok(r.writesAcked > 0, `${r.name}: no write acknowledged at all`);
    assert.ok(r.resumeMs !== null && r.resumeMs <= RESUME_MS_MAX, `${r.name}: writes resumed ${r.resumeMs} ms after the heal`);
  }

  const scenario = (name: string, body: (lab: Lab) => Promise<ScenarioReport>) => {
    if (!names.includes(name) || (only && !only.includes(name))) return;
    s(name, async () => {
      if (!ctx.lab) return; // skipped above, with the reason printed
      holds(await body(ctx.lab));
    });
  };

  scenario('primary cut from both backups', async (lab) => {
    const p = await currentPrimary(lab);
    const others = NODES.filter((n) => n !== p);
    return runScenario(lab, 'primary cut from both backups', () => lab.net.split([p], others), () => lab.net.split([p], others, false));
  });

  scenario('primary cut from both backups, then its disk lost', async (lab) => {
    const p = await currentPrimary(lab);
    const others = NODES.filter((n) => n !== p);
    // Cut off, it is replaced; then its disk is lost and a fresh node starts under its ID
    // with an empty data directory: a new incarnation, which must never act as primary and
    // rejoins as a learner.
    return runScenario(
      lab,
      `primary ${p} cut from both backups, then its disk lost and a fresh ${p} started`,
      () => lab.net.split([p], others),
      () => lab.net.split([p], others, false),
      async () => {
        await lab.killNode(p, true);
        lab.startNode(p);
      },
    );
  });

  scenario('a backup cut from the primary only', async (lab) => {
    const p = await currentPrimary(lab);
    const b = NODES.find((n) => n !== p)!;
    return runScenario(lab, 'a backup cut from the primary only', () => lab.net.split([p], [b]), () => lab.net.split([p], [b], false));
  });

  scenario('primary cut from Redis only', async (lab) => {
    const p = await currentPrimary(lab);
    return runScenario(lab, 'primary cut from Redis only', () => lab.net.split([p], ['redis']), () => lab.net.split([p], ['redis'], false));
  });

  scenario('majority/minority split', async (lab) => {
    const p = await currentPrimary(lab);
    const minority = [p, 'p1', 'm1'];
    const majority = ['redis', 'p2', 'm2', ...NODES.filter((n) => n !== p)];
    return runScenario(lab, 'majority/minority split (the primary, a proxy and a mount on the small side)', () => lab.net.split(minority, majority), () => lab.net.split(minority, majority, false));
  });

  scenario('leader proxy cut from Redis', async (lab) => {
    // Either proxy may lead; cutting both in turn would stop all sequencing, so cut p1 (the
    // leader, or a follower: both must keep every rule).
    return runScenario(lab, 'a proxy cut from Redis', () => lab.net.split(['p1'], ['redis']), () => lab.net.split(['p1'], ['redis'], false));
  });

  scenario('mount cut from one proxy', async (lab) =>
    runScenario(lab, 'mount m1 cut from proxy p1', () => lab.net.split(['m1'], ['p1']), () => lab.net.split(['m1'], ['p1'], false)),
  );

  scenario('bridge', async (lab) => {
    const p = await currentPrimary(lab);
    const [b, far] = NODES.filter((n) => n !== p) as [string, string];
    // b sees both sides; the primary's side and the far side do not see each other.
    const sideA = [p, 'p1', 'm1'];
    const sideB = [far, 'redis', 'p2', 'm2'];
    return runScenario(lab, `a bridge (${b} sees both sides)`, () => lab.net.split(sideA, sideB), () => lab.net.split(sideA, sideB, false));
  });

  scenario('flapping links', async (lab) => {
    const p = await currentPrimary(lab);
    const others = NODES.filter((n) => n !== p);
    let flapping: NodeJS.Timeout | null = null;
    let cut = false;
    return runScenario(
      lab,
      'flapping links (the primary cut from both backups and healed every 2 s)',
      () => {
        flapping = setInterval(() => {
          cut = !cut;
          lab.net.split([p], others, cut);
        }, 2_000);
      },
      () => {
        if (flapping) clearInterval(flapping);
        lab.net.split([p], others, false);
      },
    );
  });

  s.run();
}
