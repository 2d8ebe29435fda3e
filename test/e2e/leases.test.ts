/*
 * End to end through two real FUSE mounts of one cluster: what mount A caches under its
 * leases (mount/leases.ts) is never older than a change mount B was told is done.
 *
 * A stats a file and lists its directory (so both are cached, and the test checks they
 * are: repeating them sends no request to the cluster), then B changes the file's mode and
 * adds a name to the directory, and as soon as B's calls return, A's very next stat and
 * listing must show both changes. 1,000 times in a row.
 *
 * The kernel keeps what a lease vouches for too (mount/fuse-ops.ts, kernelTimes): a file's
 * attributes while it has one name. So a repeated stat through A reaches A not at all, and
 * still a link made through A and a write through the new name show through the old name
 * at once, and so does B's chmod.
 *
 *   node dist/test/e2e/leases.test.js      (root, /dev/fuse, after npm run build)
 */
import { TestClient } from '../helpers/client';
import { chmodSync, closeSync, mkdirSync, openSync, readdirSync, renameSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { startMountedCluster, type MountedCluster } from '../helpers/mounted-cluster';
import { parseMetricsText } from '../bench/cost';
import { freePorts, httpGet } from '../../cli/local-cluster';
import { appendFileSync, linkSync } from 'node:fs';

const ROUNDS = 1_000;

let mc: MountedCluster | null = null;
let a = '';
let b = '';
let metricsOfA = '';

test.before(async () => {
  const [port] = await freePorts(1);
  metricsOfA = `http://127.0.0.1:${port!}/metrics`;
  mc = await startMountedCluster({ prefix: 'e2e-leases', mounts: ['a', 'b'], mountArgsOf: { a: ['--metrics-addr', `127.0.0.1:${port!}`] } });
  [a, b] = mc.mountpoints as [string, string];
});

test.after(async () => {
  await mc?.stop();
});

/** Attribute and listing reads the proxies have answered so far (every proxy). */
async function readsAnswered(): Promise<number> {
  let total = 0;
  for (const url of mc!.cluster.proxyUrls) {
    const client = new TestClient(url);
    const res = await client.get('/metrics');
    await client.close();
    const samples = parseMetricsText(res.bytes.toString('utf8'));
    for (const s of samples) {
      if (s.name === 'dfs_proxy_requests_total' && (s.labels.api === 'attr' || s.labels.api === 'dir')) total += s.value;
    }
  }
  return total;
}

test('what a mount caches is never older than a change another mount was told is done', async () => {
  writeFileSync(join(b, 'f'), 'x');
  const dirA = a;
  const fileA = join(a, 'f');
  // Cached: stat and listing, repeated, ask the cluster nothing.
  statSync(fileA);
  readdirSync(dirA);
  const before = await readsAnswered();
  for (let i = 0; i < 50; i++) {
    statSync(fileA);
    readdirSync(dirA);
  }
  const after = await readsAnswered();
  assert.is(after - before, 0, 'repeated stat and ls are answered from the mount');

  let misses = 0;
  for (let round = 0; round < ROUNDS; round++) {
    // A holds both cached.
    statSync(fileA);
    readdirSync(dirA);
    const mode = 0o600 | (round % 2 === 0 ? 0o044 : 0o004);
    chmodSync(join(b, 'f'), mode);
    const name = `n${round}`;
    closeSync(openSync(join(b, name), 'w'));
    const seen = statSync(fileA).mode & 0o7777;
    const names = readdirSync(dirA);
    if (seen !== mode || !names.includes(name)) misses++;
    // And a removal through B is gone for A at once.
    unlinkSync(join(b, name));
    if (readdirSync(dirA).includes(name)) misses++;
  }
  assert.is(misses, 0, `${misses} reads of ${ROUNDS * 2} showed the state before a change that had returned`);
});

test('a rename of a directory through one mount is seen at once below it through the other', () => {
  mkdirSync(join(b, 'top'));
  mkdirSync(join(b, 'top', 'sub'));
  writeFileSync(join(b, 'top', 'sub', 'g'), 'y');
  for (let round = 0; round < 50; round++) {
    const from = round % 2 === 0 ? 'top' : 'top2';
    const to = round % 2 === 0 ? 'top2' : 'top';
    assert.ok(statSync(join(a, from, 'sub', 'g')).isFile());
    renameSync(join(b, from), join(b, to));
    assert.throws(() => statSync(join(a, from, 'sub', 'g')), /ENOENT/);
    assert.ok(statSync(join(a, to, 'sub', 'g')).isFile());
  }
});

/** getattr calls mount A has had from its kernel so far. */
async function getattrsOfA(): Promise<number> {
  const res = await httpGet(metricsOfA, 5_000);
  assert.is(res.status, 200);
  return parseMetricsText(res.text)
    .filter((s) => s.name === 'dfs_mount_fuse_requests_total' && s.labels.op === 'getattr')
    .reduce((n, s) => n + s.value, 0);
}

test('the kernel keeps a one-name file\'s attributes, and still sees links, writes and chmods at once', async () => {
  mkdirSync(join(b, 'k'));
  for (let round = 0; round < 20; round++) {
    const name = `one${round}`;
    writeFileSync(join(b, 'k', name), 'abc');
    const fileA = join(a, 'k', name);
    assert.is(statSync(fileA).size, 3);
    const before = await getattrsOfA();
    for (let i = 0; i < 10; i++) statSync(fileA);
    // Kept for at most a second: a slow machine may see one more call, not ten.
    assert.ok((await getattrsOfA()) - before <= 1, `ten stats reached the mount ${(await getattrsOfA()) - before} times`);

    chmodSync(join(b, 'k', name), 0o640);
    assert.is(statSync(fileA).mode & 0o777, 0o640, 'a chmod through B shows through A at once');

    linkSync(fileA, join(a, 'k', `${name}.2`));
    assert.is(statSync(fileA).nlink, 2, 'a link made through A shows in the old name at once');
    appendFileSync(join(a, 'k', `${name}.2`), 'defg');
    assert.is(statSync(fileA).size, 7, 'a write through the new name shows in the old name at once');
  }
});

test.run();
