/*
 * Issue 15, acceptances 3 and 4: locks held by one mount against the others through a
 * mount's death and through failovers, on a real cluster with three FUSE mounts.
 *
 * - A mount holding an fcntl lock and a flock is killed with SIGKILL. Until then another
 *   mount is refused both, again and again; after the kill its blocking requests are
 *   granted once the dead mount's lock session lapses (printed), and not before the lease
 *   could have lapsed.
 * - A process on one mount holds both kinds of lock while the primary storage node and
 *   then the leader proxy are killed; a process on another mount tries for them all along:
 *   no try is ever granted, `dfs status` still lists the locks afterwards, and once the
 *   holder lets go the other process gets them.
 * - With every proxy down, a lock request, blocking or not, fails with EIO within the
 *   mount's deadline rather than hang.
 *
 *   node dist/test/e2e/locks-failover.test.js      (root, /dev/fuse, python3, after npm run build)
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fetchClusterStatus } from '../../cli/probes';
import { LOCK_SESSION_MS, LOCK_SESSION_RENEW_MS } from '../../common/locks';
import { pollUntil } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { LockWorker } from '../helpers/lock-workers';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';

/** How long the other mount keeps being refused before the holder is killed. */
const REFUSED_FOR_MS = 2 * LOCK_SESSION_RENEW_MS + 500;
/** Pause between the checker's tries (a loop of tries, not a wait for a condition). */
const TRY_EVERY_MS = 100;
/** Slack on the lease's bounds: the renewal's own round trip, the checker's round. */
const SLACK_MS = 1_500;
/** dfs-mount's default --deadline-ms. */
const MOUNT_DEADLINE_MS = 10_000;

let mc: MountedCluster | null = null;
const workers: LockWorker[] = [];

test.before(async () => {
  mc = await startMountedCluster({ prefix: 'e2e-locks-failover', mounts: ['a', 'b', 'c'], nodes: 3, proxies: 2 });
});

test.after(async () => {
  for (const w of workers) w.kill();
  await mc?.stop();
});

function worker(): LockWorker {
  const w = new LockWorker();
  workers.push(w);
  return w;
}

async function openRw(w: LockWorker, path: string): Promise<number> {
  const a = await w.call({ cmd: 'open', path, mode: 'rw' });
  assert.ok(a.ok, `open ${path}: ${String(a.errno)}`);
  return a.fd as number;
}

test('a killed mount loses its locks within the lease, never before', async () => {
  const [, b, c] = mc!.mountpoints as [string, string, string];
  writeFileSync(join(b, 'killed'), 'x');
  const holder = worker();
  const hfd = await openRw(holder, join(c, 'killed'));
  assert.ok((await holder.call({ cmd: 'setlk', fd: hfd, type: 'w', start: 0, len: 0 })).ok, 'the holder takes the fcntl lock');
  assert.ok((await holder.call({ cmd: 'flock', fd: hfd, op: 'ex', nb: true })).ok, 'the holder takes the flock');

  const other = worker();
  const ofd = await openRw(other, join(b, 'killed'));
  const refusedUntil = Date.now() + REFUSED_FOR_MS;
  let tries = 0;
  while (Date.now() < refusedUntil) {
    const posix = await other.call({ cmd: 'setlk', fd: ofd, type: 'r', start: 0, len: 1 });
    const bsd = await other.call({ cmd: 'flock', fd: ofd, op: 'sh', nb: true });
    assert.is(posix.errno, 'EAGAIN', 'refused while the holder lives');
    assert.is(bsd.errno, 'EAGAIN', 'refused while the holder lives');
    tries++;
    await new Promise((resolve) => setTimeout(resolve, TRY_EVERY_MS));
  }

  const record = mc!.cluster.records().find((r) => r.kind === 'mount' && r.mountpoint === c);
  assert.ok(record, 'the mount of c is recorded');
  process.kill(record.pid, 'SIGKILL');
  const killedMs = Date.now();
  const [posixAt, bsdAt] = await Promise.all([
    other.call({ cmd: 'setlkw', fd: ofd, type: 'w', start: 0, len: 0 }).then((a) => ({ a, ms: Date.now() - killedMs })),
    (async () => {
      // A second descriptor for the flock, so the two waits do not queue behind each other.
      const second = worker();
      const fd2 = await openRw(second, join(b, 'killed'));
      const a = await second.call({ cmd: 'flock', fd: fd2, op: 'ex' });
      return { a, ms: Date.now() - killedMs };
    })(),
  ]);
  holder.kill();
  spawnSync('fusermount', ['-uz', c]);
  process.stdout.write(`\n  refused ${tries} times over ${REFUSED_FOR_MS} ms while the holder lived; after SIGKILL of its mount: fcntl lock granted in ${posixAt.ms} ms, flock in ${bsdAt.ms} ms (lease ${LOCK_SESSION_MS} ms, renewed every ${LOCK_SESSION_RENEW_MS} ms)\n`);
  assert.ok(posixAt.a.ok && bsdAt.a.ok, 'both granted after the holder died');
  for (const at of [posixAt.ms, bsdAt.ms]) {
    assert.ok(at <= LOCK_SESSION_MS + SLACK_MS, `granted within the lease (${at} ms)`);
    assert.ok(at >= LOCK_SESSION_MS - LOCK_SESSION_RENEW_MS - SLACK_MS, `not before the lease could lapse (${at} ms)`);
  }
});

test('locks hold through a failover of the primary storage node and of the leader proxy', async () => {
  const [a, b] = mc!.mountpoints as [string, string, string];
  const { cluster } = mc!;
  writeFileSync(join(a, 'held'), 'x');
  const holder = worker();
  const hfd = await openRw(holder, join(a, 'held'));
  assert.ok((await holder.call({ cmd: 'setlk', fd: hfd, type: 'w', start: 0, len: 0 })).ok);
  assert.ok((await holder.call({ cmd: 'flock', fd: hfd, op: 'ex', nb: true })).ok);

  // The other mount tries for both locks, all along.
  const other = worker();
  const ofd = await openRw(other, join(b, 'held'));
  let stop = false;
  const outcomes = new Map<string, number>();
  const checker = (async () => {
    while (!stop) {
      for (const cmd of [
        { cmd: 'setlk', fd: ofd, type: 'r', start: 0, len: 1 },
        { cmd: 'flock', fd: ofd, op: 'sh', nb: true },
      ]) {
        const r = await other.call(cmd);
        const key = `${cmd.cmd}: ${r.ok ? 'GRANTED' : String(r.errno)}`;
        outcomes.set(key, (outcomes.get(key) ?? 0) + 1);
      }
      await new Promise((resolve) => setTimeout(resolve, TRY_EVERY_MS));
    }
  })();

  const before = await fetchClusterStatus(cluster.proxyUrls);
  assert.ok(before?.status.membership && before.status.leader, 'a primary and a leader');
  const { primary, epoch } = before.status.membership;
  cluster.killProcess('storage', primary);
  await pollUntil('a new primary', 60_000, async () => {
    const st = await fetchClusterStatus(cluster.proxyUrls);
    return st?.status.membership && st.status.membership.primary !== primary && st.status.membership.epoch > epoch;
  });
  const leader = (await fetchClusterStatus(cluster.proxyUrls))!.status.leader!;
  cluster.killProcess('proxy', leader);
  const rest = cluster.proxies.filter((p) => p.id !== leader).map((p) => p.url);
  await pollUntil('a new leader proxy', 60_000, async () => {
    const st = await fetchClusterStatus(rest);
    return st?.status.leader && st.status.leader !== leader;
  });
  // And past a whole lease: the holder's mount kept its session through both.
  await new Promise((resolve) => setTimeout(resolve, LOCK_SESSION_MS + SLACK_MS));
  const listed = (await fetchClusterStatus(rest))!.status.locks ?? [];
  stop = true;
  await checker;
  const tried = [...outcomes.entries()].map(([k, n]) => `${k} ×${n}`).join(', ');
  process.stdout.write(`\n  primary ${primary} and leader proxy ${leader} killed; the other mount's tries: ${tried}; dfs status lists ${listed.filter((l) => l.path === '/held').length} locks on /held\n`);
  assert.not.ok([...outcomes.keys()].some((k) => k.includes('GRANTED')), 'no second holder was ever granted');
  assert.ok((outcomes.get('setlk: EAGAIN') ?? 0) > 10, 'the other mount kept trying');
  assert.equal(listed.filter((l) => l.path === '/held').map((l) => l.kind).sort(), ['flock', 'posix'], 'the cluster status lists both locks');
  const shown = await runDfs(['status', '--proxy', rest.join(',')]);
  process.stdout.write(shown.stdout.slice(shown.stdout.indexOf('locks:')));
  assert.is(shown.code, 0, shown.stderr);
  const heldLines = shown.stdout.split('\n').filter((line) => line.includes('/held'));
  assert.ok(heldLines.some((line) => /flock\s+exclusive\s+whole file/.test(line)), 'dfs status shows the flock');
  assert.ok(heldLines.some((line) => /posix\s+exclusive\s+0-EOF/.test(line)), 'dfs status shows the fcntl lock');

  // The holder lets go; the other mount gets both.
  assert.ok((await holder.call({ cmd: 'setlk', fd: hfd, type: 'u', start: 0, len: 0 })).ok);
  assert.ok((await holder.call({ cmd: 'flock', fd: hfd, op: 'un' })).ok);
  assert.ok((await other.call({ cmd: 'setlk', fd: ofd, type: 'w', start: 0, len: 0 })).ok, 'granted once let go');
  assert.ok((await other.call({ cmd: 'flock', fd: ofd, op: 'ex', nb: true })).ok, 'granted once let go');
});

test('with every proxy down a lock request, blocking or not, fails within the mount deadline', async () => {
  const [a] = mc!.mountpoints as [string, string, string];
  const { cluster } = mc!;
  writeFileSync(join(a, 'down'), 'x');
  const w = worker();
  const fd = await openRw(w, join(a, 'down'));
  for (const p of cluster.proxies) if (cluster.isRunning('proxy', p.id)) cluster.killProcess('proxy', p.id);
  const timings: string[] = [];
  for (const cmd of [
    { cmd: 'setlk', fd, type: 'w', start: 0, len: 0 },
    { cmd: 'setlkw', fd, type: 'w', start: 0, len: 0 },
    { cmd: 'flock', fd, op: 'ex', nb: false },
  ]) {
    const startMs = Date.now();
    const r = await w.call(cmd);
    const ms = Date.now() - startMs;
    timings.push(`${cmd.cmd}: ${r.ok ? 'ok' : String(r.errno)} in ${ms} ms`);
    assert.is(r.errno, 'EIO', `${cmd.cmd} fails with EIO`);
    assert.ok(ms <= MOUNT_DEADLINE_MS + SLACK_MS, `${cmd.cmd} answered within the deadline (${ms} ms)`);
  }
  process.stdout.write(`\n  every proxy killed: ${timings.join('; ')} (mount deadline ${MOUNT_DEADLINE_MS} ms)\n`);
});

test.run();
