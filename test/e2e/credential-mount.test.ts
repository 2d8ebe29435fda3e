/*
 * A mount that holds a uid-1000 credential (root squashed; docs/security.md), end to end
 * through FUSE: what root on that host does is refused by the proxy (the host's root is
 * not the cluster's), and what uid 1000 does works and is owned by uid 1000. The same
 * refusals straight through the API are in test/integration/security.test.ts.
 *
 *   node dist/test/e2e/credential-mount.test.js      (root, /dev/fuse, after npm run build)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { issueCert } from '../../cli/certs';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';

const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; mnt?: string; admin?: TestClient } = {};
const USER = { uid: 1000, gid: 1000 };

test.before(async () => {
  ctx.dir = tempDir('e2e-credential');
  // uid 1000 must reach the mount point.
  chmodSync(ctx.dir.path, 0o755);
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 1 });
  ctx.admin = new TestClient(ctx.cluster.proxyUrls[0]!);
  const ok = async (a: Promise<{ status: number; json: any }>) => assert.is((await a).status, 200);
  await ok(ctx.admin.op({ type: 'chmod', path: '/', mode: 0o777 }));
  await ok(ctx.admin.op({ type: 'create', path: '/root-secret', mode: 0o600, uid: 0, gid: 0, exclusive: true }));
  await ok(ctx.admin.op({ type: 'write', path: '/root-secret', offset: 0 }, Buffer.from('secret')));
  await ok(ctx.admin.op({ type: 'create', path: '/root-public', mode: 0o644, uid: 0, gid: 0, exclusive: true }));
  const tls = join(ctx.cluster.dataDir, 'tls');
  const files = issueCert(tls, 'user1000', { role: 'mount', credential: { uids: [[1000, 1000]], gids: [[1000, 1000]], squashRoot: true, subtree: null }, days: 1 });
  ctx.mnt = join(ctx.dir.path, 'mnt');
  mkdirSync(ctx.mnt);
  // Its own certificate in place of the admin-host one the harness would give it: a later
  // --ca/--cert/--key wins (parseArgs keeps the last).
  await ctx.cluster.mount(ctx.mnt, { args: ['--ca', files.ca, '--cert', files.cert, '--key', files.key, '--allow-other'] });
});

test.after(async () => {
  await ctx.admin?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

function asRoot(cmd: string, ...args: string[]) {
  return spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
}
function asUser(cmd: string, ...args: string[]) {
  return spawnSync('setpriv', [`--reuid=${USER.uid}`, `--regid=${USER.gid}`, '--clear-groups', cmd, ...args], { encoding: 'utf8', timeout: 30_000 });
}

test('root on the credential\'s host: reading, chmod, chown, creating, trusted.*: 0 succeed', async () => {
  const mnt = ctx.mnt!;
  const attempts: Array<[string, ReturnType<typeof spawnSync>]> = [
    ['read a 0600 root file', asRoot('cat', join(mnt, 'root-secret'))],
    ['chmod a root file', asRoot('chmod', '0666', join(mnt, 'root-public'))],
    ['chown a root file', asRoot('chown', '1000:1000', join(mnt, 'root-public'))],
    ['create as root', asRoot('touch', join(mnt, 'made-by-root'))],
    ['mkdir as root', asRoot('mkdir', join(mnt, 'dir-by-root'))],
    ['set trusted.*', asRoot('setfattr', '-n', 'trusted.x', '-v', '1', join(mnt, 'root-public'))],
    ['set trusted.* as uid 1000', asUser('setfattr', '-n', 'trusted.x', '-v', '1', join(mnt, 'root-public'))],
    ['chown a root file to uid 1000 as uid 1000', asUser('chown', '1000:1000', join(mnt, 'root-public'))],
  ];
  const succeeded = attempts.filter(([, r]) => r.status === 0).map(([what]) => what);
  process.stdout.write(`through the mount: ${attempts.length} attempts outside the credential, ${succeeded.length} succeeded\n`);
  assert.equal(succeeded, []);
  // Refused as the kernel would refuse an unprivileged caller.
  for (const [what, r] of attempts) assert.match(String(r.stderr), /Operation not permitted|Permission denied/, `${what}: ${String(r.stderr)}`);
  const attr = (await ctx.admin!.get('/v1/attr', { path: '/root-public' })).json;
  assert.is(attr.uid, 0);
  assert.is(attr.mode & 0o777, 0o644);
  assert.is((await ctx.admin!.get('/v1/attr', { path: '/made-by-root' })).status, 404);
});

test('uid 1000 through the same mount: creates, writes and reads its own files', async () => {
  const mnt = ctx.mnt!;
  const file = join(mnt, 'mine.txt');
  const w = asUser('sh', '-c', `echo hello > '${file}'`);
  assert.is(w.status, 0, String(w.stderr));
  const r = asUser('cat', file);
  assert.is(r.stdout, 'hello\n');
  const attr = (await ctx.admin!.get('/v1/attr', { path: '/mine.txt' })).json;
  assert.is(attr.uid, USER.uid);
  assert.is(attr.gid, USER.gid);
  assert.is(asUser('cat', join(mnt, 'root-public')).status, 0);
});

test.run();
