/*
 * A mount keeps copying through the failures of the cluster behind it:
 * - issue 5, acceptance 5: `cp` of a 32 MiB file into the mount runs while proxy p1 (the
 *   mount's first choice) gets SIGKILL; the chunks in flight to p1 are retried on p2 under
 *   the same request IDs, so none lands twice;
 * - issue 4, acceptance 5: `cp` of a 50 MiB file runs while the primary storage node gets
 *   SIGKILL; the leader chooses another primary and the proxies and the mount retry until
 *   it takes writes.
 * Each copy finishes without an error and reads back with the source's sha256.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fetchClusterStatus } from '../../cli/local-cluster';
import { pollUntil } from '../helpers/client';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';

const FILE_BYTES = 32 * 1024 * 1024;
/** How much of the copy must have landed before the kill (so that it is mid-copy). */
const KILL_AFTER_BYTES = 2 * 1024 * 1024;
let env: MountedCluster | null = null;

test.before(async () => {
  env = await startMountedCluster({ prefix: 'proxy-failover', mounts: ['m'], proxies: 2 });
});

test.after(async () => {
  await env?.stop();
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function copyWhile(name: string, bytes: number, fault: () => Promise<void>): Promise<void> {
  const { root, mountpoints } = env!;
  const src = join(root, `${name}.src`);
  const data = randomBytes(bytes);
  writeFileSync(src, data);
  const dst = join(mountpoints[0]!, name);

  const cp = spawn('cp', [src, dst], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => cp.on('exit', (code) => resolve(code)));

  await pollUntil('the copy to be under way', 60_000, async () => existsSync(dst) && statSync(dst).size >= KILL_AFTER_BYTES);
  await fault();
  const code = await exited;
  assert.is(code, 0, `cp failed: ${stderr}`);
  assert.is(stderr, '', 'the user saw no error');

  assert.is(statSync(dst).size, bytes);
  assert.is(sha256(readFileSync(dst)), sha256(data), 'the copy has the source bytes');
}

test('cp into the mount finishes with the right bytes when the proxy it uses is killed', () =>
  copyWhile('proxy-killed.bin', FILE_BYTES, async () => env!.cluster.killProcess('proxy', 'p1')));

test('cp into the mount finishes with the right bytes when the primary storage node is killed', async () => {
  const { cluster } = env!;
  let primary = '';
  let epoch = 0;
  await copyWhile('primary-killed.bin', 50 * 1024 * 1024, async () => {
    const st = await fetchClusterStatus(cluster.proxyUrls);
    assert.ok(st?.status.membership, 'the cluster has a membership');
    ({ primary, epoch } = st.status.membership);
    cluster.killProcess('storage', primary);
  });
  // The copy went through a new primary, chosen while it ran.
  const after = await fetchClusterStatus(cluster.proxyUrls);
  assert.ok(after?.status.membership);
  assert.is.not(after.status.membership.primary, primary, `another node than ${primary} is primary now`);
  assert.ok(after.status.membership.epoch > epoch);
});

test.run();
