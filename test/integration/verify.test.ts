/*
 * dfs verify against a real cluster: identical replicas pass, a replica changed behind
 * the cluster's back is named, and a verify taken under a write workload still compares
 * every node at one sequence ID.
 */
import { suite } from 'uvu';
import { META_XATTR, readMeta } from '../../storage/brick';
import { xattrGet, xattrSet } from '../../storage/xattr';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { compareManifests } from '../../proxy/verify';
import { TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('dfs verify');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};
const own = { uid: 0, gid: 0 };

s.before(async () => {
  ctx.dir = tempDir('verify');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

async function ok(a: Promise<{ status: number; json: any }>): Promise<void> {
  const r = await a;
  assert.is(r.status, 200, JSON.stringify(r.json));
  assert.is(r.json.errno, undefined);
}

s('identical replicas pass, with every node counted', async () => {
  const { p, cluster } = ctx as Required<typeof ctx>;
  await ok(p.op({ type: 'mkdir', path: '/v', mode: 0o755, ...own }));
  for (let i = 0; i < 20; i++) {
    await ok(p.op({ type: 'create', path: `/v/f${i}`, mode: 0o644, ...own, exclusive: true }));
    await ok(p.op({ type: 'write', path: `/v/f${i}`, offset: 0 }, randomBytes(1000 * i)));
  }
  await ok(p.op({ type: 'symlink', path: '/v/l', target: 'f1', ...own }));
  await ok(p.op({ type: 'link', from: '/v/f2', to: '/v/h' }));
  await ok(p.op({ type: 'setxattr', path: '/v/f3', name: 'user.k', flags: 0 }, Buffer.from('v')));
  const r = await runDfs(['verify', '--proxy', cluster.proxyUrls.join(',')]);
  assert.is(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /identical/);
  const json = JSON.parse((await runDfs(['verify', '--proxy', cluster.proxyUrls[1]!, '--json'])).stdout);
  assert.ok(json.ok);
  assert.equal(json.nodes.map((n: { id: string }) => n.id).sort(), cluster.nodes.map((n) => n.id).sort());
  assert.ok(json.nodes.every((n: { entries: number }) => n.entries === 24), JSON.stringify(json.nodes)); // /, /v, 20 files, l, h
});

s('a verify under a write workload compares every node at one point and blocks no writer for long', async () => {
  const { p, cluster } = ctx as Required<typeof ctx>;
  let writing = true;
  let written = 0;
  // Several writers, so that ops are sequenced between verify taking its sequence ID and
  // the nodes holding there (verify then asks again at a newer one: proxy/verify.ts).
  const writers = Array.from({ length: 6 }, (_, w) =>
    (async () => {
      for (let i = 0; writing; i++) {
        await ok(p.op({ type: 'create', path: `/v/busy-${w}-${i}`, mode: 0o644, ...own, exclusive: true }));
        written++;
      }
    })(),
  );
  const writer = Promise.all(writers);
  try {
    for (let i = 0; i < 8; i++) {
      const r = await runDfs(['verify', '--proxy', cluster.proxyUrls[0]!, '--json']);
      const report = JSON.parse(r.stdout);
      assert.ok(report.ok, r.stdout);
      assert.is(r.code, 0);
    }
  } finally {
    writing = false;
    await writer;
  }
  assert.ok(written > 0, 'the workload wrote while verifies ran');
});

s('a replica changed behind the cluster\'s back is named, and verify exits non-zero', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const [, n2, n3] = cluster.nodes;
  const file = join(n2!.brickDir, 'v', 'f5');
  const bytes = readFileSync(file);
  bytes[10] ^= 0xff; // same size, different content
  writeFileSync(file, bytes);
  // The cluster's mode lives in the brick's identity attribute (storage/brick.ts): change
  // the permission bits there (a uint32 at byte 60).
  const f6 = join(n3!.brickDir, 'v', 'f6');
  const raw = xattrGet(f6, META_XATTR)!;
  raw.writeUInt32LE(readMeta(f6)!.mode ^ 0o044, 60);
  xattrSet(f6, META_XATTR, raw);
  const r = await runDfs(['verify', '--data', cluster.dataDir]);
  assert.is(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stdout, /DIFFERENCES FOUND/);
  assert.match(r.stdout, /\/v\/f5:/);
  assert.match(r.stdout, /\/v\/f6:/);
  assert.not.match(r.stdout, /\/v\/f7:/);
});

s('comparing manifests: a missing entry and a node that did not answer both fail', () => {
  const e = (path: string, size: number) => ({ path, attr: { ino: 1, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, size, atimeMs: 0, mtimeMs: 0, ctimeMs: 0 } });
  const same = compareManifests(7, [
    { id: 'a', manifest: { nodeId: 'a', appliedSeq: 7, entries: [e('/x', 1)] } },
    { id: 'b', manifest: { nodeId: 'b', appliedSeq: 7, entries: [e('/x', 1)] } },
  ]);
  assert.ok(same.ok);
  const missing = compareManifests(7, [
    { id: 'a', manifest: { nodeId: 'a', appliedSeq: 7, entries: [e('/x', 1), e('/y', 2)] } },
    { id: 'b', manifest: { nodeId: 'b', appliedSeq: 7, entries: [e('/x', 1)] } },
  ]);
  assert.not.ok(missing.ok);
  assert.equal(missing.differences.map((d) => d.path), ['/y']);
  assert.is(missing.differences[0]!.nodes.b, null);
  const silent = compareManifests(7, [{ id: 'a', manifest: { nodeId: 'a', appliedSeq: 7, entries: [e('/x', 1)] } }, { id: 'b', error: 'UNAVAILABLE: down' }]);
  assert.not.ok(silent.ok);
});

s.run();
