/*
 * A mount given two proxies keeps copying when the one it uses is killed (issue 5,
 * acceptance 5): `cp` of a 32 MiB file into the mount runs while proxy p1 (the mount's
 * first choice) gets SIGKILL; the copy finishes without an error and the file reads back
 * with the source's sha256. The chunks in flight to p1 are retried on p2 under the same
 * request IDs, so none lands twice.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
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

test('cp into the mount finishes with the right bytes when the proxy it uses is killed', async () => {
  const { root, cluster, mountpoints } = env!;
  const src = join(root, 'src.bin');
  const data = randomBytes(FILE_BYTES);
  writeFileSync(src, data);
  const dst = join(mountpoints[0]!, 'dst.bin');

  const cp = spawn('cp', [src, dst], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  cp.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => cp.on('exit', (code) => resolve(code)));

  await pollUntil('the copy to be under way', 60_000, async () => existsSync(dst) && statSync(dst).size >= KILL_AFTER_BYTES);
  cluster.killProcess('proxy', 'p1');
  const code = await exited;
  assert.is(code, 0, `cp failed: ${stderr}`);
  assert.is(stderr, '', 'the user saw no error');

  assert.is(statSync(dst).size, FILE_BYTES);
  assert.is(sha256(readFileSync(dst)), sha256(data), 'the copy has the source bytes');
});

test.run();
