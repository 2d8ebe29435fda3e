/*
 * Authenticated transport and client identity on a real local cluster (issue 13, items 1
 * and 2; docs/security.md):
 *
 *   - every proxy and storage endpoint, called with no certificate, a certificate of the
 *     wrong role, one of another cluster's CA, and an expired one: no 2xx at all, while the
 *     same calls with the right role do get 2xx (so the calls themselves are sound);
 *   - a mount credential for uid/gid 1000, root squashed: creating as uid 0, chmod, chown
 *     and reads as root, chown to root, and trusted.* attributes are refused by the proxy
 *     with EPERM, and what it may do it can; a credential that also lists 65534 creates as
 *     nobody when root asks; a subtree credential sees that directory as its root;
 *   - the certificates are private (keys 0600, directory 0700);
 *   - an --insecure cluster works in plaintext, and every process says so in its log.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID, X509Certificate } from 'node:crypto';
import { copyFileSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Pool } from 'undici';
import { certFiles, ensureCa, issueCert, readMaterial } from '../../cli/certs';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { encodeFrame } from '../../common/frame';
import { NOBODY_ID, type Credential } from '../../common/credential';
import { h2ClientOptions } from '../../common/h2c';
import { clientConnectOptions, type Role, type TlsMaterial } from '../../common/tls';
import { pollUntil, processTls, TestClient } from '../helpers/client';
import { runDfs } from '../helpers/dfs-cli';
import { tempDir } from '../helpers/temp';

const s = suite('security');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; admin?: TestClient; issuer?: string; other?: string } = {};
const REQUEST_TIMEOUT_MS = 15_000;

s.before(async () => {
  ctx.dir = tempDir('security');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 1 });
  ctx.admin = new TestClient(ctx.cluster.proxyUrls[0]!);
  // Certificates the tests issue with the cluster's own CA (a copy of it, so the cluster's
  // directory holds only what `dfs` made), and a second cluster's CA.
  ctx.issuer = join(ctx.dir.path, 'issuer');
  ensureCa(ctx.issuer);
  for (const f of ['ca.crt', 'ca.key']) copyFileSync(join(ctx.cluster.dataDir, 'tls', f), join(ctx.issuer, f));
  ctx.other = join(ctx.dir.path, 'other-ca');
  ensureCa(ctx.other);
});

s.after(async () => {
  await ctx.admin?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

const ADMIN_HOST: Credential = { uids: 'any', gids: 'any', squashRoot: false, subtree: null };

/** A certificate of `role` from the given issuer directory (`days` < 0: expired). */
function issue(dir: string, name: string, role: Role, days = 30, credential: Credential = ADMIN_HOST): TlsMaterial {
  return readMaterial(issueCert(dir, name, { role, credential, days }));
}

interface Call {
  method: 'GET' | 'POST';
  path: string;
  body?: Buffer | string;
  /** Sending it with the right role changes the cluster (an op, a resync): not done as the
   * control. */
  harmful?: boolean;
}

/** What the calls read: a file with a byte and a user.x attribute, and a symlink. */
async function makeFixtures(): Promise<void> {
  const { admin } = ctx as Required<typeof ctx>;
  const ok = async (a: Promise<{ status: number; json: any }>) => assert.is((await a).status, 200);
  await ok(admin.op({ type: 'create', path: '/sec', mode: 0o644, uid: 0, gid: 0, exclusive: true }));
  await ok(admin.op({ type: 'write', path: '/sec', offset: 0 }, Buffer.from('s')));
  await ok(admin.op({ type: 'setxattr', path: '/sec', name: 'user.x', flags: 0 }, Buffer.from('v')));
  await ok(admin.op({ type: 'symlink', path: '/sec-link', target: 'sec', uid: 0, gid: 0 }));
}

async function proxyCalls(): Promise<Call[]> {
  const op = encodeFrame({ reqId: randomUUID(), op: { type: 'mkdir', path: `/unauthorized-${randomUUID()}`, mode: 0o755, uid: 0, gid: 0 } });
  return [
    { method: 'GET', path: '/healthz' },
    { method: 'GET', path: '/readyz' },
    { method: 'GET', path: '/metrics' },
    { method: 'GET', path: '/v1/cluster' },
    { method: 'GET', path: '/v1/attr?path=%2F' },
    { method: 'GET', path: '/v1/dir?path=%2F' },
    { method: 'GET', path: '/v1/data?path=%2Fsec&offset=0&size=1' },
    { method: 'GET', path: '/v1/link?path=%2Fsec-link' },
    { method: 'GET', path: '/v1/statfs' },
    { method: 'GET', path: '/v1/xattrs?path=%2F' },
    { method: 'GET', path: '/v1/xattr?path=%2Fsec&name=user.x' },
    { method: 'GET', path: '/v1/leases/poll?mount=sec-test' },
    { method: 'POST', path: '/v1/ops', body: op, harmful: true },
    { method: 'POST', path: '/v1/verify', harmful: true },
  ];
}

async function nodeCalls(): Promise<Call[]> {
  const { admin, cluster } = ctx as Required<typeof ctx>;
  const state = (await admin.get('/v1/cluster')).json as { epoch: number; seq: number };
  const header = { epoch: state.epoch, seq: state.seq + 1_000_000, reqId: randomUUID(), timeMs: Date.now(), op: { type: 'mkdir', path: '/forged', mode: 0o755, uid: 0, gid: 0 } };
  const frame = encodeFrame(header);
  void cluster;
  return [
    { method: 'GET', path: '/healthz' },
    { method: 'GET', path: '/node/v1/state' },
    { method: 'GET', path: '/node/v1/attr?path=%2F' },
    { method: 'GET', path: '/node/v1/dir?path=%2F' },
    { method: 'GET', path: '/node/v1/data?path=%2Fsec&offset=0&size=1' },
    { method: 'GET', path: '/node/v1/link?path=%2Fsec-link' },
    { method: 'GET', path: '/node/v1/xattr?path=%2Fsec&name=user.x' },
    { method: 'GET', path: '/node/v1/xattrs?path=%2F' },
    { method: 'GET', path: '/node/v1/statfs' },
    { method: 'GET', path: '/node/v1/leases/poll?mount=sec-test' },
    { method: 'POST', path: '/node/v1/ops', body: frame, harmful: true },
    { method: 'POST', path: '/node/v1/ops-stream', body: frame, harmful: true },
    { method: 'POST', path: '/node/v1/replicate-stream', body: frame, harmful: true },
    { method: 'POST', path: `/node/v1/sync-required?epoch=${state.epoch}&seq=1`, harmful: true },
    { method: 'GET', path: `/node/v1/snapshot?epoch=${state.epoch}`, harmful: true },
    { method: 'POST', path: `/node/v1/manifest?at=${state.seq}` },
  ];
}

/** Which roles each route is for (storage/app.ts NODE_ROUTE_ROLES, proxy/app.ts), as
 * this test states it independently. */
function allowedOnProxy(path: string): Role[] {
  return path.startsWith('/v1/verify') ? ['admin'] : ['mount', 'admin'];
}
function allowedOnNode(path: string): Role[] {
  const p = path.split('?')[0]!;
  if (p === '/healthz' || p === '/node/v1/state') return ['node', 'proxy', 'admin'];
  if (p === '/node/v1/manifest') return ['node', 'proxy', 'admin'];
  if (['/node/v1/replicate-stream', '/node/v1/sync-required', '/node/v1/snapshot'].includes(p)) return ['node'];
  return ['proxy'];
}

/** One call with the given client TLS options: its status, or the error that ended it. */
async function send(url: string, h2: boolean, connect: Record<string, unknown>, call: Call): Promise<number | string> {
  const client = h2
    ? new Client(url, { ...h2ClientOptions({ headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS }, null), useH2c: false, connect } as Client.Options)
    : new Pool(url, { connect, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS });
  try {
    const res = await client.request({
      method: call.method,
      path: call.path,
      ...(call.body !== undefined ? { body: call.body, headers: { 'content-type': 'application/octet-stream' } } : {}),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    // A snapshot streams for as long as it is read: its status is what counts.
    res.body.on('error', () => undefined);
    res.body.destroy();
    return res.statusCode;
  } catch (e) {
    return (e as { code?: string }).code ?? (e as Error).message;
  } finally {
    await client.destroy().catch(() => undefined);
  }
}

s('every endpoint × {no certificate, wrong role, another CA, expired}: 0 unauthorized 2xx', async () => {
  const { cluster, issuer, other } = ctx as Required<typeof ctx>;
  const ca = readFileSync(join(cluster.dataDir, 'tls', 'ca.crt'));
  const byRole = Object.fromEntries((['node', 'proxy', 'mount', 'admin'] as Role[]).map((r) => [r, issue(issuer, `good-${r}`, r)])) as Record<Role, TlsMaterial>;
  const foreign = Object.fromEntries((['node', 'proxy', 'mount', 'admin'] as Role[]).map((r) => [r, issue(other, `foreign-${r}`, r)])) as Record<Role, TlsMaterial>;
  const expired = Object.fromEntries((['node', 'proxy', 'mount', 'admin'] as Role[]).map((r) => [r, issue(issuer, `expired-${r}`, r, -1)])) as Record<Role, TlsMaterial>;
  await makeFixtures();
  const serverRole = (h2: boolean): Role[] => (h2 ? ['node'] : ['proxy']);
  const as = (tls: TlsMaterial, h2: boolean) => ({ ...clientConnectOptions({ ...tls, ca }, serverRole(h2)) });
  const targets = [
    { url: cluster.proxyUrls[0]!, h2: false, calls: await proxyCalls(), allowed: allowedOnProxy },
    ...cluster.nodes.slice(0, 2).map((n) => ({ url: n.url, h2: true, calls: [] as Call[], allowed: allowedOnNode })),
  ];
  for (const t of targets.slice(1)) t.calls = await nodeCalls();
  const tally = { attempts: 0, unauthorized2xx: 0, refusedInHandshake: 0, forbidden: 0, other: 0, control: 0, control2xx: 0 };
  const wrong: string[] = [];
  for (const t of targets) {
    for (const call of t.calls) {
      const allowed = t.allowed(call.path);
      const attempts: Array<{ what: string; connect: Record<string, unknown> }> = [
        { what: 'no certificate', connect: { ca, checkServerIdentity: as(byRole.admin, t.h2).checkServerIdentity } },
        ...(['node', 'proxy', 'mount', 'admin'] as Role[]).filter((r) => !allowed.includes(r)).map((r) => ({ what: `wrong role ${r}`, connect: as(byRole[r], t.h2) })),
        ...allowed.map((r) => ({ what: `another CA's ${r}`, connect: as(foreign[r], t.h2) })),
        ...allowed.map((r) => ({ what: `expired ${r}`, connect: as(expired[r], t.h2) })),
      ];
      for (const a of attempts) {
        tally.attempts++;
        const result = await send(t.url, t.h2, a.connect, call);
        if (typeof result === 'number' && result >= 200 && result < 300) {
          tally.unauthorized2xx++;
          wrong.push(`${a.what} ${call.method} ${t.url}${call.path} → ${result}`);
        } else if (result === 403) tally.forbidden++;
        else if (typeof result === 'string') tally.refusedInHandshake++;
        else tally.other++;
      }
      // The control: the same call with a role it is for is answered 2xx.
      if (!call.harmful) {
        tally.control++;
        const result = await send(t.url, t.h2, as(byRole[allowed[0]!], t.h2), call);
        if (typeof result === 'number' && result >= 200 && result < 300) tally.control2xx++;
        else wrong.push(`control: ${allowed[0]} ${call.method} ${t.url}${call.path} → ${result}`);
      }
    }
  }
  process.stdout.write(
    `unauthorized calls: ${tally.attempts} (${tally.refusedInHandshake} cut off in the TLS handshake, ${tally.forbidden} answered 403, ${tally.other} other), ` +
      `${tally.unauthorized2xx} unauthorized 2xx; controls with the right role: ${tally.control2xx} of ${tally.control} 2xx\n`,
  );
  assert.equal(wrong, []);
  assert.is(tally.unauthorized2xx, 0);
  assert.is(tally.control2xx, tally.control);
  assert.ok(tally.attempts > 150, `${tally.attempts} attempts`);
});

s('a node URL answers only for its own ID: the proxy refuses another node\'s certificate there', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const asProxy = processTls(cluster, 'p1');
  const ask = async (expectId: string) => {
    const client = new Client(cluster.nodes[1]!.url, h2ClientOptions({ headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS }, asProxy, expectId));
    try {
      return (await client.request({ method: 'GET', path: '/node/v1/state', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) })).statusCode;
    } catch (e) {
      return (e as Error).message;
    } finally {
      await client.destroy();
    }
  };
  assert.is(await ask(cluster.nodes[1]!.id), 200);
  assert.match(String(await ask(cluster.nodes[0]!.id)), /not n1/);
});

/** A proxy client with a mount credential. */
function mountClient(credential: Credential, name: string): TestClient {
  const { cluster, issuer } = ctx as Required<typeof ctx>;
  const tls = issue(issuer, name, 'mount', 30, credential);
  return new TestClient(cluster.proxyUrls[0]!, false, { ...tls, ca: readFileSync(join(cluster.dataDir, 'tls', 'ca.crt')) });
}

const as = (uid: number, gid: number, groups: number[] = []) => ({ 'x-dfs-uid': String(uid), 'x-dfs-gid': String(gid), 'x-dfs-groups': groups.join(',') });

async function opAs(client: TestClient, op: object, headers: Record<string, string>, data?: Buffer) {
  return client.post('/v1/ops', encodeFrame({ reqId: randomUUID(), op }, data), headers);
}

s('a uid-1000 root-squashed credential: root, chown to root and trusted.* refused by the proxy; its own uid allowed', async () => {
  const { admin } = ctx as Required<typeof ctx>;
  // Root's file, made as admin.
  const rootFile = `/root-${randomUUID()}`;
  assert.is((await admin.op({ type: 'create', path: rootFile, mode: 0o600, uid: 0, gid: 0, exclusive: true })).status, 200);
  const user = mountClient({ uids: [[1000, 1000]], gids: [[1000, 1000]], squashRoot: true, subtree: null }, 'user1000');
  try {
    const root = as(0, 0);
    const u = as(1000, 1000);
    const refused: Array<[string, { status: number; json: any }]> = [
      ['create as uid 0', await opAs(user, { type: 'create', path: `/by-root-${randomUUID()}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }, root)],
      ['create owned by uid 0 from uid 1000', await opAs(user, { type: 'create', path: `/by-root-${randomUUID()}`, mode: 0o644, uid: 0, gid: 0, exclusive: true }, u)],
      ['mkdir as uid 0', await opAs(user, { type: 'mkdir', path: `/by-root-${randomUUID()}`, mode: 0o755, uid: 0, gid: 0 }, root)],
      ['chmod as root', await opAs(user, { type: 'chmod', path: rootFile, mode: 0o666 }, root)],
      ['chown as root', await opAs(user, { type: 'chown', path: rootFile, uid: 1000, gid: 1000 }, root)],
      ['chown to root', await opAs(user, { type: 'chown', path: rootFile, uid: 0, gid: 0 }, u)],
      ['chown to another uid', await opAs(user, { type: 'chown', path: rootFile, uid: 1001, gid: 1000 }, u)],
      ['setxattr trusted.* as uid 1000', await opAs(user, { type: 'setxattr', path: rootFile, name: 'trusted.x', flags: 0 }, u, Buffer.from('v'))],
      ['setxattr trusted.* as root', await opAs(user, { type: 'setxattr', path: rootFile, name: 'trusted.x', flags: 0 }, root, Buffer.from('v'))],
      ['removexattr trusted.* as uid 1000', await opAs(user, { type: 'removexattr', path: rootFile, name: 'trusted.x' }, u)],
      ['read as root', await user.get('/v1/data', { path: rootFile, offset: 0, size: 10 }, root)],
      ['stat as root', await user.get('/v1/attr', { path: rootFile }, root)],
      ['read with group 0', await user.get('/v1/attr', { path: rootFile }, as(1000, 1000, [0]))],
      ['read as another uid', await user.get('/v1/attr', { path: rootFile }, as(1001, 1000))],
      ['op without identity headers as a gid it lacks', await opAs(user, { type: 'mkdir', path: `/x-${randomUUID()}`, mode: 0o755, uid: 1000, gid: 0 }, {})],
    ];
    const succeeded = refused.filter(([, r]) => r.status >= 200 && r.status < 300).map(([what]) => what);
    const notEperm = refused.filter(([, r]) => r.status !== 403 || r.json?.errno !== 'EPERM').map(([what, r]) => `${what}: ${r.status} ${JSON.stringify(r.json)}`);
    process.stdout.write(`uid-1000 credential: ${refused.length} attempts outside it, ${succeeded.length} succeeded, ${refused.length - notEperm.length} refused by the proxy with EPERM\n`);
    assert.equal(succeeded, []);
    assert.equal(notEperm, []);
    // Root's file is as it was.
    const attr = (await admin.get('/v1/attr', { path: rootFile })).json;
    assert.is(attr.uid, 0);
    assert.is(attr.mode & 0o7777, 0o600);
    // What it may do, it can: create as itself in a directory of its own (the root is
    // root's, 0755, where uid 1000 may not create, as on a local disk), read its own.
    const home = `/home-${randomUUID()}`;
    assert.is((await admin.op({ type: 'mkdir', path: home, mode: 0o755, uid: 1000, gid: 1000 })).status, 200);
    const own = `${home}/own`;
    const created = await opAs(user, { type: 'create', path: own, mode: 0o644, uid: 1000, gid: 1000, exclusive: true }, u);
    assert.is(created.status, 200, JSON.stringify(created.json));
    assert.is(created.json.errno, undefined, JSON.stringify(created.json));
    assert.is((await user.get('/v1/attr', { path: own }, u)).json.uid, 1000);
    assert.is((await opAs(user, { type: 'setxattr', path: own, name: 'user.note', flags: 0 }, u, Buffer.from('v'))).status, 200);
    // Without identity headers it acts as its own lowest uid and gid.
    const listing = await user.get('/v1/dir', { path: '/' });
    assert.is(listing.status, 200, `${JSON.stringify(listing.json)} root: ${JSON.stringify((await admin.get('/v1/attr', { path: '/' })).json)}`);
  } finally {
    await user.close();
  }
});

s('a uid-1000 credential inside its own ids: the cluster answers what the kernel would for root\'s files', async () => {
  const { admin } = ctx as Required<typeof ctx>;
  const rootFile = `/root-${randomUUID()}`;
  const rootDir = `/rootdir-${randomUUID()}`;
  assert.is((await admin.op({ type: 'create', path: rootFile, mode: 0o600, uid: 0, gid: 0, exclusive: true })).status, 200);
  assert.is((await admin.op({ type: 'mkdir', path: rootDir, mode: 0o755, uid: 0, gid: 0 })).status, 200);
  const user = mountClient({ uids: [[1000, 1000]], gids: [[1000, 1000]], squashRoot: true, subtree: null }, 'user1000b');
  try {
    const u = as(1000, 1000);
    // Each as uid 1000 on a local disk: the errno Linux gives.
    const cases: Array<[string, string, { status: number; json: any }]> = [
      ['read root\'s 0600 file', 'EACCES', await user.get('/v1/data', { path: rootFile, offset: 0, size: 10 }, u)],
      ['chmod root\'s file', 'EPERM', await opAs(user, { type: 'chmod', path: rootFile, mode: 0o666 }, u)],
      ['chown root\'s file to itself', 'EPERM', await opAs(user, { type: 'chown', path: rootFile, uid: 1000, gid: 1000 }, u)],
      ['set explicit times on root\'s file', 'EPERM', await opAs(user, { type: 'utimens', path: rootFile, atimeMs: 0, mtimeMs: 0 }, u)],
      ['create in root\'s 0755 directory', 'EACCES', await opAs(user, { type: 'create', path: `${rootDir}/f`, mode: 0o644, uid: 1000, gid: 1000, exclusive: true }, u)],
      ['create in it, no identity headers', 'EACCES', await opAs(user, { type: 'create', path: `${rootDir}/g`, mode: 0o644, uid: 1000, gid: 1000, exclusive: true }, {})],
    ];
    // An op's outcome is its result's errno (200, as every op answers, docs/api.md); a read
    // refused is 403 with the errno.
    const wrong = cases.filter(([, errno, r]) => r.json?.errno !== errno || (r.status !== 200 && r.status !== 403)).map(([what, errno, r]) => `${what}: want ${errno}, got ${r.status} ${JSON.stringify(r.json)}`);
    process.stdout.write(`uid-1000 credential on root's files: ${cases.length} attempts, ${cases.length - wrong.length} answered with the kernel's errno\n`);
    assert.equal(wrong, []);
    const attr = (await admin.get('/v1/attr', { path: rootFile })).json;
    assert.is(attr.uid, 0);
    assert.is(attr.mode & 0o7777, 0o600);
    assert.is((await admin.get('/v1/attr', { path: `${rootDir}/f` })).status, 404);
  } finally {
    await user.close();
  }
});

s('root squash: a credential that lists 65534 lets the client root act as nobody', async () => {
  const { admin } = ctx as Required<typeof ctx>;
  const host = mountClient({ uids: [[1000, 1000], [NOBODY_ID, NOBODY_ID]], gids: [[1000, 1000], [NOBODY_ID, NOBODY_ID]], squashRoot: true, subtree: null }, 'squashhost');
  try {
    // Squashed, the client's root is nobody: it creates where nobody may (a 0777 directory).
    const open = `/open-${randomUUID()}`;
    assert.is((await admin.op({ type: 'mkdir', path: open, mode: 0o777, uid: 0, gid: 0 })).status, 200);
    const path = `${open}/squashed`;
    const r = await opAs(host, { type: 'create', path, mode: 0o644, uid: 0, gid: 0, exclusive: true }, as(0, 0));
    assert.is(r.status, 200, JSON.stringify(r.json));
    assert.is(r.json.errno, undefined, JSON.stringify(r.json));
    const attr = (await admin.get('/v1/attr', { path })).json;
    assert.is(attr.uid, NOBODY_ID);
    assert.is(attr.gid, NOBODY_ID);
    assert.is((await opAs(host, { type: 'setxattr', path, name: 'trusted.x', flags: 0 }, as(0, 0), Buffer.from('v'))).status, 403);
  } finally {
    await host.close();
  }
});

s('a subtree credential sees that directory as its root, and nothing outside it', async () => {
  const { admin } = ctx as Required<typeof ctx>;
  const sub = `/home-${randomUUID()}`;
  assert.is((await admin.op({ type: 'mkdir', path: sub, mode: 0o755, uid: 1000, gid: 1000 })).status, 200);
  assert.is((await admin.op({ type: 'create', path: '/outside', mode: 0o644, uid: 1000, gid: 1000, exclusive: false })).status, 200);
  const confined = mountClient({ uids: [[1000, 1000]], gids: [[1000, 1000]], squashRoot: true, subtree: sub }, 'confined');
  try {
    const u = as(1000, 1000);
    assert.is((await opAs(confined, { type: 'create', path: '/inside', mode: 0o644, uid: 1000, gid: 1000, exclusive: true }, u)).status, 200);
    assert.is((await admin.get('/v1/attr', { path: `${sub}/inside` })).status, 200);
    assert.is((await confined.get('/v1/attr', { path: '/' }, u)).json.ino, (await admin.get('/v1/attr', { path: sub })).json.ino);
    assert.is((await confined.get('/v1/attr', { path: '/outside' }, u)).status, 404);
    const names = ((await confined.get('/v1/dir', { path: '/' }, u)).json.entries as Array<{ name: string }>).map((e) => e.name);
    assert.equal(names, ['inside']);
    // Renames and links name both ends inside it.
    assert.is((await opAs(confined, { type: 'rename', from: '/inside', to: '/moved' }, u)).status, 200);
    assert.is((await admin.get('/v1/attr', { path: `${sub}/moved` })).status, 200);
    assert.is((await admin.get('/v1/attr', { path: '/outside' })).status, 200);
  } finally {
    await confined.close();
  }
});

s('a revoked credential is refused by every request after its revocation, on an open connection and a new one; others go on', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const issued = await runDfs(['credential', 'issue', '--name', 'eve', '--uids', '1000', '--gids', '1000', '--data', cluster.dataDir, '--json']);
  assert.is(issued.code, 0, issued.stderr);
  const eveTls = readMaterial(certFiles(join(cluster.dataDir, 'tls'), 'eve'));
  const eve = new TestClient(cluster.proxyUrls[0]!, false, eveTls);
  const other = mountClient({ uids: [[1000, 1000]], gids: [[1000, 1000]], squashRoot: true, subtree: null }, 'not-revoked');
  let fresh: TestClient | null = null;
  try {
    assert.is((await eve.get('/v1/attr', { path: '/' })).status, 200, 'before: the credential works');
    // Bad input: neither or both of --name and --serial, a serial that is none, a process's certificate.
    for (const args of [[], ['--name', 'eve', '--serial', '01'], ['--serial', 'zz'], ['--name', 'admin'], ['--name', 'p1'], ['--name', 'nobody-issued']]) {
      const r = await runDfs(['credential', 'revoke', ...args, '--data', cluster.dataDir]);
      assert.ok(r.code !== 0, `revoke ${args.join(' ')} fails`);
      assert.match(r.stderr, /--name|--serial|process|no credential/);
    }
    assert.is((await eve.get('/v1/attr', { path: '/' })).status, 200, 'bad input revoked nothing');
    const revoked = await runDfs(['credential', 'revoke', '--name', 'eve', '--data', cluster.dataDir, '--json']);
    assert.is(revoked.code, 0, revoked.stderr);
    const answer = JSON.parse(revoked.stdout) as { name: string; serial: string; alreadyRevoked: boolean };
    assert.is(answer.name, 'eve');
    assert.is(answer.serial, new X509Certificate(eveTls.cert).serialNumber.toUpperCase().replace(/^0+(?=.)/, ''));
    assert.is(answer.alreadyRevoked, false);
    // The connection it already has: refused from the proxy's next look at the list.
    const refused = await pollUntil('the open connection to be refused', 10_000, async () => {
      const r = await eve.get('/v1/attr', { path: '/' });
      return r.status === 403 ? r : null;
    }, 100);
    assert.is(refused.json.code, 'FORBIDDEN');
    assert.match(refused.json.message, /revoked/);
    fresh = new TestClient(cluster.proxyUrls[0]!, false, eveTls);
    assert.is((await fresh.get('/v1/attr', { path: '/' })).status, 403, 'a new connection is refused too');
    assert.is((await fresh.op({ type: 'mkdir', path: `/eve-${randomUUID()}`, mode: 0o755, uid: 1000, gid: 1000 })).status, 403, 'and so is an op');
    assert.is((await other.get('/v1/attr', { path: '/' })).status, 200, 'another credential goes on');
    const again = await runDfs(['credential', 'revoke', '--serial', answer.serial, '--data', cluster.dataDir]);
    assert.is(again.code, 0, again.stderr);
    assert.match(again.stdout, /already revoked/);
  } finally {
    await eve.close();
    await other.close();
    await fresh?.close();
  }
});

s('the certificates are private: the directory 0700, every key 0600', () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const dir = join(cluster.dataDir, 'tls');
  assert.is(statSync(dir).mode & 0o777, 0o700);
  const keys = readdirSync(dir).filter((f) => f.endsWith('.key'));
  assert.ok(keys.length >= 5, keys.join(' ')); // CA, 3 nodes, a proxy, admin
  for (const k of keys) assert.is(statSync(join(dir, k)).mode & 0o777, 0o600, k);
});

s('--insecure: plaintext, and every process warns at start', async () => {
  const dir = tempDir('security-insecure');
  let cluster: Cluster | undefined;
  try {
    cluster = await startCluster({ dataDir: join(dir.path, 'data'), nodes: 1, proxies: 1, insecure: true });
    assert.ok(cluster.proxyUrls[0]!.startsWith('http://'));
    const c = new TestClient(cluster.proxyUrls[0]!);
    try {
      assert.is((await c.op({ type: 'mkdir', path: '/plain', mode: 0o755, uid: 0, gid: 0 })).status, 200);
    } finally {
      await c.close();
    }
    for (const record of cluster.records().filter((r) => r.kind === 'storage' || r.kind === 'proxy')) {
      assert.ok(readFileSync(record.logFile, 'utf8').includes('--insecure: plaintext transport'), `${record.id} warns`);
    }
  } finally {
    await cluster?.stop();
    dir.remove();
  }
});

s.run();
