/*
 * The cluster's write and read paths with real processes: a private redis-server, three
 * storage nodes and two proxies started by the same launcher as `dfs local up`.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes, createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { Redis } from 'ioredis';
import { redisAuthFor } from '../../common/redis-auth';
import { sealMembership } from '../../common/membership-seal';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { encodeFrame } from '../../common/frame';
import { MessageStreams } from '../../common/message-stream';
import { encodeBatch, REPLICATE_STREAM_PATH } from '../../storage/replication-stream';
import { KEY_EPOCH, KEY_MEMBERSHIP, KEY_SEQ } from '../../common/redis-keys';
import { brickTree } from '../helpers/brick-tree';
import { pollUntil, processTls, TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';

const s = suite('cluster');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p1?: TestClient; p2?: TestClient } = {};

s.before(async () => {
  ctx.dir = tempDir('cluster');
  ctx.cluster = await startCluster({ dataDir: ctx.dir.path + '/data', nodes: 3, proxies: 2 });
  ctx.p1 = new TestClient(ctx.cluster.proxyUrls[0]!);
  ctx.p2 = new TestClient(ctx.cluster.proxyUrls[1]!);
});

s.after(async () => {
  await ctx.p1?.close();
  await ctx.p2?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

const mode = 0o644;
const own = { uid: 0, gid: 0 };

async function ok(p: Promise<{ status: number; json: any }>): Promise<any> {
  const a = await p;
  assert.is(a.status, 200, JSON.stringify(a.json));
  assert.is(a.json.errno, undefined, `unexpected errno ${a.json.errno}`);
  return a.json;
}

async function bricksConverged(cluster: Cluster): Promise<ReturnType<typeof brickTree>> {
  // Backups apply once they learn the commit; poll until every brick matches the primary's.
  return pollUntil('bricks to converge', 10_000, async () => {
    const trees = cluster.nodes.map((n) => JSON.stringify(brickTree(n.brickDir)));
    return trees.every((t) => t === trees[0]) ? brickTree(cluster.nodes[0]!.brickDir) : null;
  });
}

s('every op lands byte-identical in every brick, and reads through either proxy see it', async () => {
  const { p1, p2, cluster } = ctx as Required<typeof ctx>;
  const data = randomBytes(3 * 1024 * 1024 + 123);
  await ok(p1.op({ type: 'mkdir', path: '/d', mode: 0o755, ...own }));
  await ok(p1.op({ type: 'create', path: '/d/f', mode, ...own, exclusive: true }));
  for (let off = 0; off < data.length; off += 1 << 20) {
    await ok(p2.op({ type: 'write', path: '/d/f', offset: off }, data.subarray(off, off + (1 << 20))));
  }
  await ok(p1.op({ type: 'symlink', path: '/d/l', target: 'f', ...own }));
  await ok(p1.op({ type: 'link', from: '/d/f', to: '/d/h' }));
  await ok(p2.op({ type: 'chmod', path: '/d/h', mode: 0o600 }));
  await ok(p2.op({ type: 'rename', from: '/d', to: '/e' }));
  await ok(p1.op({ type: 'utimens', path: '/e/f', atimeMs: 1e12, mtimeMs: 1.5e12 }));

  const tree = await bricksConverged(cluster);
  assert.equal(Object.keys(tree).sort(), ['/e', '/e/f', '/e/h', '/e/l']);
  assert.is(tree['/e/f']!.sha256, createHash('sha256').update(data).digest('hex'));
  assert.is(tree['/e/f']!.nlink, 2);
  assert.is(tree['/e/l']!.target, 'f');
  assert.is(tree['/e/h']!.mode & 0o777, 0o600);
  assert.is(tree['/e/f']!.mtimeMs, 1.5e12);

  for (const p of [p1, p2]) {
    const attr = await p.get('/v1/attr', { path: '/e/f' });
    assert.is(attr.json.size, data.length);
    const chunk = await p.get('/v1/data', { path: '/e/f', offset: 1_000_000, size: 100_000 });
    assert.ok(chunk.bytes.equals(data.subarray(1_000_000, 1_100_000)));
    const tail = await p.get('/v1/data', { path: '/e/f', offset: data.length - 10, size: 4096 });
    assert.is(tail.bytes.length, 10, 'a read past the end is short');
    const dir = await p.get('/v1/dir', { path: '/e' });
    assert.equal(dir.json.entries.map((e: { name: string }) => e.name).sort(), ['f', 'h', 'l']);
    assert.is((await p.get('/v1/link', { path: '/e/l' })).json.target, 'f');
    assert.is((await p.get('/v1/attr', { path: '/d' })).json.errno, 'ENOENT');
    const fs = await p.get('/v1/statfs');
    assert.ok(fs.json.blocks > 0 && fs.json.bsize > 0 && fs.json.namemax === 255);
  }
});

s('file system errors are committed outcomes with the local errno', async () => {
  const { p1 } = ctx as Required<typeof ctx>;
  await ok(p1.op({ type: 'mkdir', path: '/x', mode: 0o755, ...own }));
  await ok(p1.op({ type: 'create', path: '/x/y', mode, ...own, exclusive: true }));
  const cases: Array<[Parameters<TestClient['op']>[0], string]> = [
    [{ type: 'mkdir', path: '/x', mode: 0o755, ...own }, 'EEXIST'],
    [{ type: 'rmdir', path: '/x' }, 'ENOTEMPTY'],
    [{ type: 'unlink', path: '/nope' }, 'ENOENT'],
    [{ type: 'create', path: '/nope/y', mode, ...own, exclusive: false }, 'ENOENT'],
    [{ type: 'rename', from: '/x', to: '/x/y/z' }, 'ENOTDIR'],
    [{ type: 'link', from: '/x', to: '/x2' }, 'EPERM'],
  ];
  for (const [op, errno] of cases) {
    const a = await p1.op(op);
    assert.is(a.status, 200);
    assert.is(a.json.errno, errno, `${op.type}`);
    assert.ok(a.json.seq > 0);
  }
});

s('a read through one proxy sees every write acknowledged through the other', async () => {
  const { p1, p2 } = ctx as Required<typeof ctx>;
  await ok(p1.op({ type: 'create', path: '/rw', mode, ...own, exclusive: true }));
  for (let i = 0; i < 40; i++) {
    const body = Buffer.from(`round ${i} `.repeat(i + 1));
    await ok(p1.op({ type: 'truncate', path: '/rw', size: 0 }));
    await ok(p1.op({ type: 'write', path: '/rw', offset: 0 }, body));
    const back = await p2.get('/v1/data', { path: '/rw', offset: 0, size: 4096 });
    assert.is(back.bytes.toString(), body.toString(), `round ${i}`);
  }
});

s('a retried request ID is applied once and gets the first answer', async () => {
  const { p1, p2 } = ctx as Required<typeof ctx>;
  await ok(p1.op({ type: 'create', path: '/once', mode, ...own, exclusive: true }));
  const first = await ok(p1.op({ type: 'rename', from: '/once', to: '/twice' }, undefined, 'retry-1'));
  const again = await ok(p2.op({ type: 'rename', from: '/once', to: '/twice' }, undefined, 'retry-1'));
  assert.is(again.seq > first.seq, true, 'the retry took its own sequence ID');
  assert.equal(again.attr, first.attr, 'and got the first answer, not ENOENT');
  const other = await p2.op({ type: 'rename', from: '/once', to: '/twice' }, undefined, 'retry-2');
  assert.is(other.json.errno, 'ENOENT', 'a new request ID is a new op');
});

s('a sequence ID taken and never sent is filled, and writes go on', async () => {
  const { p1, cluster } = ctx as Required<typeof ctx>;
  const redis = new Redis(cluster.redisUrl, redisAuthFor(cluster.redisUrl));
  try {
    const hole = await redis.incr(KEY_SEQ); // a proxy that died right after INCR
    const started = Date.now();
    const a = await ok(p1.op({ type: 'create', path: '/after-hole', mode, ...own, exclusive: true }));
    assert.ok(a.seq > hole);
    assert.ok(Date.now() - started < 8000, `write waited ${Date.now() - started} ms behind the hole`);
    const primary = new TestClient(cluster.nodes[0]!.url, true);
    try {
      const st = await primary.get('/node/v1/state');
      assert.ok(st.json.appliedSeq >= a.seq);
    } finally {
      await primary.close();
    }
  } finally {
    redis.disconnect();
  }
});

s('writes keep committing while the membership epoch changes under them', async () => {
  const { p1, p2, cluster } = ctx as Required<typeof ctx>;
  const redis = new Redis(cluster.redisUrl, redisAuthFor(cluster.redisUrl));
  const proxyTls = processTls(cluster, 'p1');
  let writing = true;
  try {
    // Republish the same membership under new epochs, as a leader does on every change.
    const bumper = (async () => {
      let bumps = 0;
      while (writing) {
        const m = JSON.parse((await redis.get(KEY_MEMBERSHIP))!);
        m.epoch = await redis.incr(KEY_EPOCH);
        // Sealed with a proxy's key, as the leader seals what it publishes (nodes and
        // proxies act on no other: common/membership-seal.ts).
        await redis.set(KEY_MEMBERSHIP, JSON.stringify(sealMembership(m, proxyTls)));
        bumps++;
        await new Promise((r) => setTimeout(r, 50));
      }
      return bumps;
    })();
    // Several writers, so that replication batches are in flight whenever the epoch moves.
    let next = 0;
    await Promise.all(
      [p1, p2, p1, p2].map(async (p) => {
        while (next < 300) {
          const i = next++;
          await ok(p.op({ type: 'create', path: `/epoch-${i}`, mode, ...own, exclusive: true }));
        }
      }),
    );
    writing = false;
    assert.ok((await bumper) >= 5, 'the epoch changed several times during the writes');
    const listing = await p1.get('/v1/dir', { path: '/' });
    assert.is(listing.json.entries.filter((e: { name: string }) => e.name.startsWith('epoch-')).length, 300);
    await bricksConverged(cluster);
  } finally {
    writing = false;
    redis.disconnect();
  }
});

s('every node reports the same attributes for the same files', async () => {
  const { p1, p2, cluster } = ctx as Required<typeof ctx>;
  await ok(p1.op({ type: 'mkdir', path: '/same', mode: 0o755, ...own }));
  const paths: string[] = [];
  for (let i = 0; i < 100; i++) {
    const p = `/same/f${i}`;
    paths.push(p);
    await ok((i % 2 ? p1 : p2).op({ type: 'create', path: p, mode, uid: i, gid: 100 + i, exclusive: true }));
    if (i % 3 === 0) await ok(p1.op({ type: 'write', path: p, offset: i * 1000 }, randomBytes(i * 37)));
    if (i % 5 === 0) await ok(p2.op({ type: 'chmod', path: p, mode: 0o600 }));
    if (i % 7 === 0) await ok(p1.op({ type: 'link', from: p, to: `${p}-link` }));
  }
  await ok(p1.op({ type: 'rename', from: '/same/f1', to: '/same/renamed' }));
  await ok(p2.op({ type: 'symlink', path: '/same/sym', target: 'f2', ...own }));
  paths.splice(1, 1, '/same/renamed');
  paths.push('/same/sym', '/same', '/');
  await bricksConverged(cluster);
  const pinned = (node: string, endpoint: string, path: string) => p1.get(`/v1/${endpoint}`, { path }, { 'dfs-read-node': node });
  for (const path of paths) {
    const answers = await Promise.all(cluster.nodes.map((n) => pinned(n.id, 'attr', path)));
    answers.forEach((a, i) => {
      assert.is(a.status, 200);
      assert.is(a.headers['dfs-served-by'], cluster.nodes[i]!.id, 'the pinned node served it');
    });
    for (const a of answers.slice(1)) assert.equal(a.json, answers[0]!.json, `attributes of ${path}`);
  }
  const listings = await Promise.all(cluster.nodes.map((n) => pinned(n.id, 'dir', '/same')));
  for (const l of listings.slice(1)) assert.equal(l.json, listings[0]!.json);
  const f7 = (await pinned(cluster.nodes[2]!.id, 'attr', '/same/f7')).json;
  const link = (await pinned(cluster.nodes[1]!.id, 'attr', '/same/f7-link')).json;
  assert.is(link.ino, f7.ino, 'both names of a hard link have one inode number on any node');
  assert.is((await pinned('no-such-node', 'attr', '/same')).status, 400, 'a node that is no member: bad input (a member out of sync would be 503)');
});

s('special files and user attributes replicate, and read the same from every node', async () => {
  const { p1, p2, cluster } = ctx as Required<typeof ctx>;
  await ok(p1.op({ type: 'mknod', path: '/fifo', mode: 0o010600, rdev: 0, ...own }));
  await ok(p1.op({ type: 'mknod', path: '/tty', mode: 0o020620, rdev: 0x0400, ...own }));
  await ok(p1.op({ type: 'create', path: '/xa', mode, ...own, exclusive: true }));
  const value = randomBytes(1000);
  await ok(p2.op({ type: 'setxattr', path: '/xa', name: 'user.blob', flags: 1 }, value));
  const again = await p1.op({ type: 'setxattr', path: '/xa', name: 'user.blob', flags: 1 }, value);
  assert.is(again.json.errno, 'EEXIST');
  const inoBefore = (await p1.get('/v1/attr', { path: '/xa' })).json.ino;
  // A client's trusted.dfs.meta (root's, through a mount) is its own attribute: the
  // cluster's identity of the same name stays out of reach.
  await ok(p1.op({ type: 'setxattr', path: '/xa', name: 'trusted.dfs.meta', flags: 0 }, Buffer.alloc(48)));
  const other = await p1.op({ type: 'setxattr', path: '/xa', name: 'security.selinux', flags: 0 }, Buffer.from('x'));
  assert.is(other.json.errno, 'EOPNOTSUPP', 'namespaces the cluster does not store');
  await bricksConverged(cluster);
  for (const n of cluster.nodes) {
    const pin = { 'dfs-read-node': n.id };
    assert.ok((await p1.get('/v1/xattr', { path: '/xa', name: 'user.blob' }, pin)).bytes.equals(value), `value on ${n.id}`);
    assert.equal((await p1.get('/v1/xattrs', { path: '/xa' }, pin)).json.names, ['trusted.dfs.meta', 'user.blob']);
    assert.is((await p1.get('/v1/attr', { path: '/xa' }, pin)).json.ino, inoBefore, 'identity untouched');
    const missing = await p1.get('/v1/xattr', { path: '/xa', name: 'user.none' }, pin);
    assert.is(missing.json.errno, 'ENODATA');
    assert.is((await p1.get('/v1/xattr', { path: '/xa', name: 'security.selinux' }, pin)).json.errno, 'ENODATA');
    const tty = await p1.get('/v1/attr', { path: '/tty' }, pin);
    assert.is(tty.json.mode, 0o020620);
    assert.is(tty.json.rdev, 0x0400);
    assert.is((await p1.get('/v1/attr', { path: '/fifo' }, pin)).json.mode, 0o010600);
  }
});

s('traversal and bad input are refused by proxies and nodes, and nothing escapes a brick', async () => {
  const { p1, cluster, dir } = ctx as Required<typeof ctx>;
  const bad = ['/../escape-a', '/x/../../escape-b', 'escape-c', '/x/\0escape', '/.', '/x//y', '/' + 'n'.repeat(256)];
  const ops = (p: string) =>
    [
      { type: 'mkdir', path: p, mode: 0o755, ...own },
      { type: 'create', path: p, mode, ...own, exclusive: true },
      { type: 'write', path: p, offset: 0 },
      { type: 'truncate', path: p, size: 0 },
      { type: 'unlink', path: p },
      { type: 'rmdir', path: p },
      { type: 'rename', from: '/x', to: p },
      { type: 'rename', from: p, to: '/escape-d' },
      { type: 'symlink', path: p, target: 't', ...own },
      { type: 'link', from: '/x/y', to: p },
      { type: 'link', from: p, to: '/escape-e' },
      { type: 'chmod', path: p, mode: 0o777 },
      { type: 'chown', path: p, uid: 1, gid: 1 },
      { type: 'utimens', path: p, atimeMs: 0, mtimeMs: 0 },
      { type: 'mknod', path: p, mode: 0o010644, rdev: 0, ...own },
      { type: 'setxattr', path: p, name: 'user.x', flags: 0 },
      { type: 'removexattr', path: p, name: 'user.x' },
    ] as const;
  // Each endpoint as the process it is for would call it: ops and reads as a proxy,
  // replication as the primary (storage/app.ts, NODE_ROUTE_ROLES).
  const primary = new TestClient(cluster.nodes[0]!.url, true, processTls(cluster, 'p1'));
  const streams = new MessageStreams(processTls(cluster, 'n1'));
  try {
    const epoch = (await primary.get('/node/v1/state')).json.epoch;
    for (const p of bad) {
      const expected = p.length > 255 ? 'NAME_TOO_LONG' : 'BAD_PATH';
      for (const op of ops(p)) {
        const data = op.type === 'write' || op.type === 'setxattr' ? Buffer.from('x') : undefined;
        const viaProxy = await p1.op(op as never, data);
        assert.is(viaProxy.status, 400, `proxy ${op.type} ${JSON.stringify(p)}`);
        assert.is(viaProxy.json.code, expected);
        const header = { epoch, seq: 1_000_000, reqId: 'evil', timeMs: 0, op };
        const viaNode = await primary.post('/node/v1/ops', encodeFrame(header, data));
        assert.is(viaNode.status, 400, `node ${op.type} ${JSON.stringify(p)}`);
        const viaReplicate = await streams.send(cluster.nodes[1]!.url, REPLICATE_STREAM_PATH, encodeBatch({ epoch, commitSeq: 0, prefixSeq: -1, truncateAfter: null, entries: [] }, [encodeFrame(header, data)]), 10_000);
        assert.is(viaReplicate.status, 400, `replicate ${op.type} ${JSON.stringify(p)}`);
      }
      for (const endpoint of ['attr', 'dir', 'data', 'link', 'xattr', 'xattrs']) {
        const q = { path: p, offset: 0, size: 10, name: 'user.x' };
        const a = await p1.get(`/v1/${endpoint}`, q);
        assert.is(a.status, 400, `proxy GET ${endpoint} ${JSON.stringify(p)}`);
        assert.is(a.json.code, expected);
        const b = await primary.get(`/node/v1/${endpoint}`, q);
        assert.is(b.status, 400, `node GET ${endpoint} ${JSON.stringify(p)}`);
      }
    }
    // Raw, unencoded dot-dots that a URL parser might fold away: still inside the brick.
    const raw = await p1.get('/v1/attr/../../etc/passwd');
    assert.ok(raw.status === 404 || raw.status === 400);
    const over = await p1.post('/v1/ops', Buffer.alloc(6 * 1024 * 1024));
    assert.is(over.status, 413);
    assert.is(over.json.code, 'TOO_LARGE');
    const junk = await p1.post('/v1/ops', 'not a frame');
    assert.is(junk.status, 400);
    const badQuery = await p1.get('/v1/data', { path: '/x/y', offset: -1, size: 10 });
    assert.is(badQuery.status, 400);
  } finally {
    await primary.close();
    streams.close();
  }
  // Nothing named escape-* anywhere under the test's directory, outside or inside a brick.
  const found: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (e.name.includes('escape')) found.push(`${d}/${e.name}`);
      if (e.isDirectory()) walk(`${d}/${e.name}`);
    }
  };
  walk(dir.path);
  assert.equal(found, []);
  // The cluster still works after all that.
  await ok(p1.op({ type: 'create', path: '/still-fine', mode, ...own, exclusive: true }));
});

s('a path of 64 KiB (PATH_BYTES_MAX) goes through both proxies and every node; one byte more is NAME_TOO_LONG', async () => {
  const { p1, p2 } = ctx as Required<typeof ctx>;
  // 255 directories of 255-byte names and a 255-byte file name: exactly 65536 bytes.
  const dirs: string[] = [];
  let path = '';
  for (let i = 0; i < 255; i++) dirs.push((path += '/' + String(i).padStart(3, '0') + 'd'.repeat(252)));
  for (const d of dirs) await ok(p1.op({ type: 'mkdir', path: d, mode: 0o755, ...own }));
  const file = path + '/' + 'f'.repeat(255);
  assert.is(Buffer.byteLength(file), 64 * 1024);
  await ok(p1.op({ type: 'create', path: file, mode, ...own, exclusive: true }));
  await ok(p1.op({ type: 'write', path: file, offset: 0 }, Buffer.from('at the bottom')));
  for (const p of [p1, p2]) {
    const read = await p.get('/v1/data', { path: file, offset: 0, size: 100 });
    assert.is(read.status, 200);
    assert.is((await ok(p.get('/v1/attr', { path: file }))).size, 13);
    assert.equal((await ok(p.get('/v1/dir', { path }))).entries.map((e: { name: string }) => e.name), ['f'.repeat(255)]);
  }
  const over = await p1.op({ type: 'create', path: file + 'x', mode, ...own, exclusive: true });
  assert.is(over.status, 400);
  assert.is(over.json.code, 'NAME_TOO_LONG');
  // Both maximal paths in one op, then the tree goes again (the other tests walk the bricks).
  await ok(p2.op({ type: 'rename', from: file, to: dirs[254]! + '/' + 'g'.repeat(255) }));
  await ok(p2.op({ type: 'unlink', path: dirs[254]! + '/' + 'g'.repeat(255) }));
  for (const d of [...dirs].reverse()) await ok(p2.op({ type: 'rmdir', path: d }));
});

s.run();
