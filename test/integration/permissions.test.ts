/*
 * Permissions checked by the cluster (issue 13, acceptance 2, the API half): a client that
 * skips the kernel and acts as an ordinary user (uid 1000, its caller in the op header or
 * its x-dfs-* read headers) gets exactly the errno the kernel gives the same user on a
 * local disk: each case runs both ways, the local one under setpriv, and the answers must
 * be equal. No case succeeds.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { callerHeaders, type Caller } from '../../common/identity';
import type { Op } from '../../common/ops';
import { encodeFrame } from '../../common/frame';
import { TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';

const s = suite('permissions');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p?: TestClient } = {};
const USER: Caller = { uid: 1000, gid: 1000, groups: [1000] };

s.before(async () => {
  ctx.dir = tempDir('permissions');
  ctx.cluster = await startCluster({ dataDir: ctx.dir.path + '/data', nodes: 1, proxies: 1 });
  ctx.p = new TestClient(ctx.cluster.proxyUrls[0]!);
});

s.after(async () => {
  await ctx.p?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

/** One case: what the user does on the local disk (Python, in the tree's root) and the
 * same through the API. */
interface Case {
  what: string;
  local: string;
  api: (p: TestClient) => Promise<string>;
}

const asUser = (p: TestClient, op: Op, data?: Buffer) =>
  // An op's errno is in its result, or in the refusal when the proxy refuses it before it is
  // sequenced (what a credential may not do, e.g. trusted.* for anyone but root).
  p.post('/v1/ops', encodeFrame({ reqId: `perm-${Math.random()}`, op, caller: USER }, data)).then((a) => (a.status === 200 ? (a.json.errno ?? 'ok') : (a.json.errno ?? `HTTP ${a.status} ${a.json.code}`)));
const readAsUser = (p: TestClient, path: string, query: Record<string, string | number>) =>
  p.get(path, query, callerHeaders(USER)).then((a) => (a.status === 200 ? 'ok' : (a.json.errno ?? `HTTP ${a.status} ${a.json.code}`)));

const CASES: Case[] = [
  { what: "read root's 0600 file", local: "open('secret').read()", api: (p) => readAsUser(p, '/v1/data', { path: '/secret', offset: 0, size: 10 }) },
  { what: "chmod root's file", local: "os.chmod('rootfile', 0o666)", api: (p) => asUser(p, { type: 'chmod', path: '/rootfile', mode: 0o666 }) },
  { what: "chown root's file to oneself", local: "os.chown('rootfile', 1000, 1000)", api: (p) => asUser(p, { type: 'chown', path: '/rootfile', uid: 1000, gid: 1000 }) },
  { what: 'make a file of uid 0 (one\'s own, then given to root)', local: "open('tmp/mine', 'w').close(); os.chown('tmp/mine', 0, 0)", api: (p) => asUser(p, { type: 'create', path: '/tmp/as-root', mode: 0o644, uid: 0, gid: 0, exclusive: true }) },
  { what: "create in root's 0755 directory", local: "open('rootdir/x', 'w')", api: (p) => asUser(p, { type: 'create', path: '/rootdir/x', mode: 0o644, uid: 1000, gid: 1000, exclusive: true }) },
  { what: 'set trusted.* on one\'s own file', local: "open('tmp/own', 'w').close(); os.setxattr('tmp/own', 'trusted.x', b'1')", api: async (p) => (await asUser(p, { type: 'create', path: '/tmp/own', mode: 0o644, uid: 1000, gid: 1000, exclusive: true })) === 'ok' ? asUser(p, { type: 'setxattr', path: '/tmp/own', name: 'trusted.x', flags: 0 }, Buffer.from('1')) : 'setup failed' },
  { what: "read root's trusted.* attribute", local: "os.getxattr('rootfile', 'trusted.t')", api: (p) => readAsUser(p, '/v1/xattr', { path: '/rootfile', name: 'trusted.t' }) },
  { what: "set times on root's file", local: "os.utime('rootfile', (1, 1))", api: (p) => asUser(p, { type: 'utimens', path: '/rootfile', atimeMs: 1000, mtimeMs: 1000 }) },
  { what: "touch root's 0644 file", local: "os.utime('rootfile', None)", api: (p) => asUser(p, { type: 'utimens', path: '/rootfile', atimeMs: 'now', mtimeMs: 'now' }) },
  { what: "unlink root's file in a sticky directory", local: "os.unlink('tmp/roots')", api: (p) => asUser(p, { type: 'unlink', path: '/tmp/roots' }) },
  { what: "write root's 0644 file", local: "open('rootfile', 'r+b').write(b'x')", api: (p) => asUser(p, { type: 'write', path: '/rootfile', offset: 0 }, Buffer.from('x')) },
  { what: 'list a 0700 directory of root', local: "os.listdir('private')", api: (p) => readAsUser(p, '/v1/dir', { path: '/private' }) },
  { what: 'stat inside a 0700 directory of root', local: "os.lstat('private/f')", api: (p) => readAsUser(p, '/v1/attr', { path: '/private/f' }) },
];

/** Each case's errno name (or ok) on the local disk, as USER. */
function localAnswers(root: string): string[] {
  const script = `import os, errno, sys
os.chdir(sys.argv[1])
for line in sys.stdin.read().split('\\n'):
    if not line: continue
    try:
        exec(line)
        print('ok')
    except OSError as e:
        print(errno.errorcode[e.errno])
`;
  const r = spawnSync('setpriv', [`--reuid=${USER.uid}`, `--regid=${USER.gid}`, `--groups=${USER.groups.join(',')}`, '--inh-caps=-all', '/usr/bin/python3', '-S', '-c', script, root], { input: CASES.map((c) => c.local).join('\n') + '\n', encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  return r.stdout.trim().split('\n');
}

s('an ordinary user through the API gets the errno the kernel gives it on a local disk, and nothing succeeds', async () => {
  const { p, dir } = ctx as Required<typeof ctx>;
  // The same tree on the local disk and in the cluster, made by root.
  const local = join(dir.path, 'local');
  chmodSync(dir.path, 0o755); // mkdtemp's 0700 would keep the user out of everything
  mkdirSync(local);
  chmodSync(local, 0o755);
  writeFileSync(join(local, 'secret'), 'secret');
  chmodSync(join(local, 'secret'), 0o600);
  writeFileSync(join(local, 'rootfile'), 'root');
  chmodSync(join(local, 'rootfile'), 0o644);
  assert.is(spawnSync('setfattr', ['-n', 'trusted.t', '-v', '1', join(local, 'rootfile')]).status, 0);
  mkdirSync(join(local, 'rootdir'), 0o755);
  mkdirSync(join(local, 'tmp'));
  chmodSync(join(local, 'tmp'), 0o1777);
  writeFileSync(join(local, 'tmp', 'roots'), '');
  mkdirSync(join(local, 'private'), 0o700);
  writeFileSync(join(local, 'private', 'f'), '');
  chownSync(local, 0, 0);
  const ok = async (op: Op, data?: Buffer) => {
    const a = await p.op(op, data);
    assert.is(a.status, 200, JSON.stringify(a.json));
    assert.is(a.json.errno, undefined, JSON.stringify(op));
  };
  const own = { uid: 0, gid: 0 };
  await ok({ type: 'chmod', path: '/', mode: 0o755 });
  await ok({ type: 'create', path: '/secret', mode: 0o600, ...own, exclusive: true });
  await ok({ type: 'write', path: '/secret', offset: 0 }, Buffer.from('secret'));
  await ok({ type: 'create', path: '/rootfile', mode: 0o644, ...own, exclusive: true });
  await ok({ type: 'write', path: '/rootfile', offset: 0 }, Buffer.from('root'));
  await ok({ type: 'setxattr', path: '/rootfile', name: 'trusted.t', flags: 0 }, Buffer.from('1'));
  await ok({ type: 'mkdir', path: '/rootdir', mode: 0o755, ...own });
  await ok({ type: 'mkdir', path: '/tmp', mode: 0o1777, ...own });
  await ok({ type: 'create', path: '/tmp/roots', mode: 0o644, ...own, exclusive: true });
  await ok({ type: 'mkdir', path: '/private', mode: 0o700, ...own });
  await ok({ type: 'create', path: '/private/f', mode: 0o644, ...own, exclusive: true });

  const want = localAnswers(local);
  const rows: string[] = [];
  let succeeded = 0;
  for (const [i, c] of CASES.entries()) {
    const got = await c.api(p);
    rows.push(`${c.what}: local ${want[i]}, API ${got}`);
    if (got === 'ok') succeeded++;
  }
  process.stdout.write(`as uid ${USER.uid}, local disk beside the API:\n  ${rows.join('\n  ')}\n${succeeded} of ${CASES.length} succeeded through the API\n`);
  for (const [i, c] of CASES.entries()) assert.ok(rows[i]!.endsWith(`local ${want[i]}, API ${want[i]}`), `${c.what}: ${rows[i]}`);
  assert.is(succeeded, 0);
  assert.ok(!want.includes('ok'), 'no case succeeds on the local disk either');
  // Root may do each of them (the same API, as the mount's kernel-checked root acts).
  assert.is((await p.get('/v1/data', { path: '/secret', offset: 0, size: 10 })).bytes.toString(), 'secret');
});

s.run();
