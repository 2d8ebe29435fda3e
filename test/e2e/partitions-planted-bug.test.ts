/*
 * The partition checker catches a planted bug (issue 14, acceptance 1): the same scenario
 * as test/e2e/partitions-*.test.ts ("primary cut from both backups"), with storage nodes
 * built to acknowledge an op once the primary alone holds it (DFS_FAULT_ACK_BEFORE_BACKUPS,
 * storage/replica-core.ts faultAckBeforeBackups). While the primary is cut off it goes on
 * acknowledging; the backup that takes over lacks those writes, so the run must fail:
 * acknowledged writes lost, or stale or non-linearizable reads.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { currentPrimary, runScenario, startLab, type Lab } from '../helpers/partition-lab';

const s = suite('partitions: a planted bug');
const ctx: { lab?: Lab } = {};

s.before(async () => {
  const lab = await startLab({ DFS_FAULT_ACK_BEFORE_BACKUPS: '1' });
  if (typeof lab === 'string') console.log(`  SKIPPED: ${lab}`);
  else ctx.lab = lab;
});

s.after(async () => {
  await ctx.lab?.stop();
});

s('a primary that acknowledges before its backups answer fails the same run', async () => {
  const lab = ctx.lab;
  if (!lab) return;
  const p = await currentPrimary(lab);
  const others = ['n1', 'n2', 'n3'].filter((n) => n !== p);
  const r = await runScenario(lab, 'planted bug: primary cut from both backups', () => lab.net.split([p], others), () => lab.net.split([p], others, false));
  const caught = r.lostWrites + r.staleReads + r.nonLinearizable.length + (r.verifyOk ? 0 : 1);
  assert.ok(caught > 0, 'the checker did not notice acknowledgements before replication');
});

s.run();
