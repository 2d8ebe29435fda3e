/*
 * Redis locked and distrusted (issue 13 item 5, acceptance line 4), on a real `dfs local
 * up`-style cluster (TLS, Redis with a user per role):
 *
 *   - redis-cli without a password gets NOAUTH on every command it tries;
 *   - with the proxy's Redis login (what a stolen proxy password gives), five attacks, each
 *     for ATTACK_MS while a writer writes and a reader reads: the epoch set to 2^53 − 1, a
 *     rogue node (forged heartbeats, a registry entry pointing at a server without the
 *     node's key), a loop deleting the primary's alive key, a rewritten membership (a rogue
 *     primary), `dfs:seq` reset to 0; and a forged request to remove the primary. An
 *     attack the ACL refuses counts its refusals.
 *
 * For each: acknowledged writes lost (every acknowledged file read back afterwards through
 * both proxies), forged reads of 100 (content other than what was acknowledged), and the
 * primaries the proxies acted on (a change is a failover of a healthy primary); then
 * `dfs verify` once the attack stopped. The figures are printed.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { ensureCa, issueCert } from '../../cli/certs';
import { redisAuthFile } from '../../cli/redis-acl';
import type { Membership } from '../../common/api';
import { readRedisAuthFile, redisAuthOptions } from '../../common/redis-auth';
import { KEY_EPOCH, KEY_MEMBERSHIP, KEY_NODES, KEY_REMOVING, KEY_SEQ, nodeAliveKey } from '../../common/redis-keys';
import { pollUntil } from '../../cli/processes';
import { runDfs } from '../helpers/dfs-cli';
import { TestClient } from '../helpers/client';
import { tempDir } from '../helpers/temp';

const s = suite('redis attacks');
/** How long each attack goes on. */
const ATTACK_MS = 6_000;
/** Reads checked per attack. */
const READS = 100;
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; p1?: TestClient; p2?: TestClient; attacker?: Redis; rogue?: TlsServer } = {};

s.before(async () => {
  ctx.dir = tempDir('redis-attacks');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2, readyTimeoutMs: 120_000 });
  ctx.p1 = new TestClient(ctx.cluster.proxyUrls[0]!);
  ctx.p2 = new TestClient(ctx.cluster.proxyUrls[1]!);
  const proxyLogin = readRedisAuthFile(redisAuthFile(join(ctx.cluster.dataDir, 'tls'), 'proxy'));
  ctx.attacker = new Redis(ctx.cluster.redisUrl, { maxRetriesPerRequest: 1, commandTimeout: 2_000, ...redisAuthOptions(proxyLogin) });
  ctx.attacker.on('error', () => undefined);
});

s.after(async () => {
  ctx.attacker?.disconnect();
  ctx.rogue?.close();
  await ctx.p1?.close();
  await ctx.p2?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

s('redis-cli without the password: NOAUTH on every command', () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const port = String(cluster.redis.port);
  const commands = [['PING'], ['GET', KEY_SEQ], ['SET', KEY_EPOCH, '9007199254740991'], ['DEL', nodeAliveKey('n1')], ['HSET', KEY_NODES, 'n9', '{}'], ['KEYS', '*'], ['INFO'], ['CONFIG', 'GET', '*'], ['FLUSHALL'], ['ACL', 'LIST'], ['EVAL', 'return 1', '0'], ['INCR', KEY_SEQ]];
  let noauth = 0;
  for (const command of commands) {
    const r = spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', port, ...command], { encoding: 'utf8', timeout: 10_000 });
    const said = `${r.stdout}${r.stderr}`.trim();
    if (/NOAUTH/.test(said)) noauth++;
    else console.log(`  without a password, ${command.join(' ')} answered: ${said}`);
  }
  console.log(`  redis-cli without the password: NOAUTH on ${noauth} of ${commands.length} commands`);
  assert.is(noauth, commands.length);
  // No password on any command line (what `ps` shows), each process's in a 0600 file.
  const passwords = (['admin', 'proxy', 'node'] as const).map((role) => readRedisAuthFile(redisAuthFile(join(cluster.dataDir, 'tls'), role)).password);
  let shown = 0;
  for (const record of cluster.records()) {
    const cmdline = readFileSync(`/proc/${record.pid}/cmdline`, 'utf8');
    if (passwords.some((password) => cmdline.includes(password))) shown++;
  }
  console.log(`  passwords on the command lines of the cluster's ${cluster.records().length} processes: ${shown}`);
  assert.is(shown, 0);
  assert.ok(cluster.records().length >= 6);
  for (const role of ['admin', 'proxy', 'node'] as const) assert.is(statSync(redisAuthFile(join(cluster.dataDir, 'tls'), role)).mode & 0o777, 0o600);
});

interface Figures {
  refusals: number;
  attempts: number;
  acked: number;
  failedWrites: number;
  failure: string | null;
  lost: number;
  forgedReads: number;
  reads: number;
  primaries: Set<string>;
}

/** The membership a proxy acts on (what it shows at /v1/cluster). */
async function primaryOf(p: TestClient): Promise<string | null> {
  const a = await p.get('/v1/cluster');
  return a.status === 200 ? ((a.json.membership as Membership | null)?.primary ?? null) : null;
}

/** Writes, reads and watches the primary while `attack` runs every `everyMs`, then checks. */
async function underAttack(name: string, attack: (redis: Redis) => Promise<void>, everyMs: number, afterAttack: () => Promise<void> = async () => undefined): Promise<Figures> {
  const { cluster, p1, p2, attacker } = ctx as Required<typeof ctx>;
  await cluster.waitReady(60_000);
  const f: Figures = { refusals: 0, attempts: 0, acked: 0, failedWrites: 0, failure: null, lost: 0, forgedReads: 0, reads: 0, primaries: new Set() };
  const contents = new Map<string, string>();
  const before = await primaryOf(p1);
  assert.ok(before, 'a primary before the attack');
  f.primaries.add(before);
  const dir = `/${name}`;
  assert.is((await p1.op({ type: 'mkdir', path: dir, mode: 0o755, uid: 0, gid: 0 })).status, 200);
  // Something to read from the start.
  for (let i = 0; i < 5; i++) {
    const path = `${dir}/seed${i}`;
    const content = `${name} seed ${i}`;
    assert.is((await p1.op({ type: 'create', path, mode: 0o644, uid: 0, gid: 0, exclusive: false })).status, 200);
    assert.is((await p1.op({ type: 'write', path, offset: 0 }, Buffer.from(content))).status, 200);
    contents.set(path, content);
  }
  const untilMs = Date.now() + ATTACK_MS;
  const attacking = (async () => {
    while (Date.now() < untilMs) {
      f.attempts++;
      try {
        await attack(attacker);
      } catch (e) {
        if (/NOPERM/.test((e as Error).message)) f.refusals++;
        else throw e;
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  const writing = (async () => {
    for (let i = 0; Date.now() < untilMs; i++) {
      const path = `${dir}/f${i}`;
      const content = `${name} ${i} ${'x'.repeat(i % 50)}`;
      const p = i % 2 === 0 ? p1 : p2;
      const c = await p.op({ type: 'create', path, mode: 0o644, uid: 0, gid: 0, exclusive: false });
      const w = c.status === 200 ? await p.op({ type: 'write', path, offset: 0 }, Buffer.from(content)) : c;
      if (w.status === 200) {
        f.acked++;
        contents.set(path, content);
      } else {
        f.failedWrites++;
        f.failure ??= `${w.status} ${JSON.stringify(w.json)}`;
      }
    }
  })();
  const reading = (async () => {
    const gap = ATTACK_MS / READS;
    for (let i = 0; i < READS; i++) {
      const known = [...contents.entries()];
      const [path, content] = known[i % known.length]!;
      const p = i % 2 === 0 ? p1 : p2;
      const a = await p.get('/v1/data', { path, offset: 0, size: 4096 });
      f.reads++;
      // A read may fail (the cluster may refuse while it cannot tell); it must never lie.
      if (a.status === 200 && a.bytes.toString() !== content) f.forgedReads++;
      await new Promise((r) => setTimeout(r, gap));
    }
  })();
  const watching = (async () => {
    while (Date.now() < untilMs + 2_000) {
      for (const p of [p1, p2]) {
        const primary = await primaryOf(p).catch(() => null);
        if (primary) f.primaries.add(primary);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  await Promise.all([attacking, writing, reading, watching]);
  await afterAttack();
  // Once it stopped: every acknowledged write is there, through either proxy.
  await cluster.waitReady(60_000);
  for (const [path, content] of contents) {
    for (const p of [p1, p2]) {
      const a = await p.get('/v1/data', { path, offset: 0, size: 4096 });
      if (a.status !== 200 || a.bytes.toString() !== content) {
        f.lost++;
        break;
      }
    }
  }
  const refused = f.refusals > 0 ? `, refused by the ACL ${f.refusals} of ${f.attempts} times` : `, ${f.attempts} times`;
  console.log(`  ${name}${refused}: acknowledged writes lost ${f.lost} of ${f.acked}, writes failed ${f.failedWrites}${f.failure ? ` (first: ${f.failure})` : ''}, forged reads ${f.forgedReads} of ${f.reads}, primaries seen ${[...f.primaries].join(' ')} (failovers ${f.primaries.size - 1})`);
  return f;
}

function assertHeld(f: Figures): void {
  assert.is(f.lost, 0, 'no acknowledged write lost');
  assert.is(f.forgedReads, 0, 'no forged read');
  assert.is(f.reads, READS);
  assert.is(f.primaries.size, 1, `no failover of the healthy primary (saw ${[...f.primaries].join(', ')})`);
  // Writes go on, or fail with a clear error (a code, not a hang or a crash).
  assert.ok(f.acked > 0 || f.failure !== null, 'writes went on or failed with an error');
}

async function verifyPasses(): Promise<void> {
  const { cluster } = ctx as Required<typeof ctx>;
  // A verify right after an attack may meet a node still catching up: poll with a deadline.
  let last = '';
  const ok = await pollUntil(async () => {
    const r = await runDfs(['verify', '--data', cluster.dataDir]);
    last = `${r.code} ${r.stdout.trim().split('\n').slice(-3).join(' | ')} ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`;
    return r.code === 0 ? true : undefined;
  }, 60_000, 2_000);
  console.log(`    dfs verify afterwards: ${ok ? 'passes' : `fails (${last})`}`);
  assert.ok(ok, `dfs verify passes once the attack stopped: ${last}`);
}

s('the epoch set to 2^53 − 1: ignored, and a membership change meanwhile publishes an integer epoch', async () => {
  const { cluster, p1 } = ctx as Required<typeof ctx>;
  const before = JSON.parse((await ctx.attacker!.get(KEY_MEMBERSHIP))!) as Membership;
  // A backup dies during the attack, so that the leader must publish a membership while
  // dfs:epoch holds 2^53 − 1 (the old script wrote 9.007199254741e+15 then).
  const backup = before.inSync.find((id) => id !== before.primary)!;
  let killed = false;
  let text = '';
  const f = await underAttack('epoch', async (redis) => {
    await redis.set(KEY_EPOCH, '9007199254740991');
    if (!killed) {
      killed = true;
      cluster.killProcess('storage', backup, 'SIGKILL');
    }
  }, 100, async () => {
    // What the leader published while the epoch was forged, then the backup comes back.
    text = (await ctx.attacker!.get(KEY_MEMBERSHIP))!;
    await cluster.restartProcess('storage', backup);
  });
  const after = JSON.parse(text) as Membership;
  console.log(`    membership epoch ${before.epoch} -> ${after.epoch} while dfs:epoch was 2^53 − 1, ${backup} in sync: ${after.inSync.includes(backup)}`);
  assertHeld(f);
  assert.match(text, /"epoch":\d+[,}]/, 'an integer epoch in the membership');
  assert.ok(after.epoch > before.epoch && after.epoch < before.epoch + 100, `the membership's epoch moved on by a little: ${before.epoch} -> ${after.epoch}`);
  assert.not.ok(after.inSync.includes(backup), `${backup} left the in-sync set while the epoch was forged`);
  // Back in sync under an epoch that is still small.
  const m = await pollUntil(async () => {
    const now = (await p1.get('/v1/cluster')).json.membership as Membership;
    return now.inSync.includes(backup) ? now : undefined;
  }, 90_000, 500);
  assert.ok(m, `${backup} back in sync`);
  assert.ok(m.epoch < before.epoch + 100, `epoch ${m.epoch}`);
  await verifyPasses();
});

s('dfs:seq set to 2^53 − 1: writes fail with a clear error until the leader sets it back', async () => {
  const f = await underAttack('seq-high', async (redis) => {
    await redis.set(KEY_SEQ, '9007199254740991');
  }, 1_000);
  assertHeld(f);
  const seq = Number(await ctx.attacker!.get(KEY_SEQ));
  console.log(`    dfs:seq afterwards ${seq}`);
  assert.ok(seq < 1_000_000, `the counter is back near the nodes' logs: ${seq}`);
  await verifyPasses();
});

s('a forged request to remove the primary: not sealed by admin, refused', async () => {
  const { p1 } = ctx as Required<typeof ctx>;
  const primary = (await primaryOf(p1))!;
  const f = await underAttack('removal', async (redis) => {
    await redis.hset(KEY_REMOVING, primary, JSON.stringify({ requestedAtMs: Date.now() }));
  }, 200);
  await ctx.attacker!.hdel(KEY_REMOVING, primary);
  assertHeld(f);
  const m = (await p1.get('/v1/cluster')).json.membership as Membership;
  assert.ok(m.nodes[primary] !== undefined && m.inSync.includes(primary), `${primary} is still an in-sync member`);
  await verifyPasses();
});

s('a rogue node with forged heartbeats and a registry entry: never a member, never read', async () => {
  const { p1 } = ctx as Required<typeof ctx>;
  // A TLS server that answers as a node would, but with a certificate of another CA (it
  // has no key of this cluster's).
  const otherCa = join(ctx.dir!.path, 'other-ca');
  ensureCa(otherCa);
  const rogueFiles = issueCert(otherCa, 'n9', { role: 'node', hosts: ['127.0.0.1'] });
  ctx.rogue = createTlsServer({ cert: readFileSync(rogueFiles.cert), key: readFileSync(rogueFiles.key), ALPNProtocols: ['h2'] }, (socket) => socket.end());
  await new Promise<void>((resolve) => ctx.rogue!.listen(0, '127.0.0.1', resolve));
  const rogueUrl = `https://127.0.0.1:${(ctx.rogue.address() as { port: number }).port}`;
  const heartbeat = JSON.stringify({ url: rogueUrl, appliedSeq: 1e9, durableSeq: 1e9, commitSeq: 1e9, epoch: 1, logEpoch: 1, role: 'backup', incarnation: 'rogue' });
  let members = 0;
  const f = await underAttack('rogue', async (redis) => {
    const m = (await p1.get('/v1/cluster')).json.membership as Membership | null;
    if (m?.nodes.n9 !== undefined) members++;
    await redis.hset(KEY_NODES, 'n9', JSON.stringify({ id: 'n9', url: rogueUrl }));
    await redis.set(nodeAliveKey('n9'), heartbeat, 'PX', 3000);
  }, 200);
  console.log(`    the rogue node was a member in ${members} of ${f.attempts} looks`);
  assertHeld(f);
  assert.is(members, 0);
  assert.ok(f.refusals > 0, 'the proxy login may not write a heartbeat');
  await ctx.attacker!.hdel(KEY_NODES, 'n9');
  await verifyPasses();
});

s('a loop deleting the primary\'s alive key: refused by the ACL, no failover', async () => {
  const { p1 } = ctx as Required<typeof ctx>;
  const primary = (await primaryOf(p1))!;
  const f = await underAttack('alive', async (redis) => {
    await redis.del(nodeAliveKey(primary));
  }, 50);
  assertHeld(f);
  assert.is(f.refusals, f.attempts, 'every deletion refused');
  await verifyPasses();
});

s('a rewritten membership naming a rogue primary: refused by nodes and proxies', async () => {
  const { p1 } = ctx as Required<typeof ctx>;
  const f = await underAttack('membership', async (redis) => {
    const m = JSON.parse((await redis.get(KEY_MEMBERSHIP))!) as Membership;
    const forged = { ...m, epoch: m.epoch + 1, primary: 'n9', inSync: ['n9'], nodes: { ...m.nodes, n9: 'https://127.0.0.1:9' } };
    await redis.set(KEY_MEMBERSHIP, JSON.stringify(forged));
    await redis.set(KEY_EPOCH, String(m.epoch + 1));
  }, 300);
  assertHeld(f);
  const m = (await p1.get('/v1/cluster')).json.membership as Membership;
  assert.ok(m.nodes.n9 === undefined, 'the rogue is no member');
  await verifyPasses();
});

s('dfs:seq reset to 0: no acknowledged write lost, the counter raised again', async () => {
  const { cluster } = ctx as Required<typeof ctx>;
  const f = await underAttack('seq', async (redis) => {
    await redis.set(KEY_SEQ, '0');
  }, 1_000);
  assertHeld(f);
  const seq = Number(await ctx.attacker!.get(KEY_SEQ));
  const states = await Promise.all(cluster.nodes.map(async (n) => {
    const c = new TestClient(n.url, true);
    try {
      return (await c.get('/node/v1/state')).json as { durableSeq?: number; appliedSeq: number };
    } finally {
      await c.close();
    }
  }));
  const held = Math.max(...states.map((x) => x.appliedSeq));
  console.log(`    dfs:seq afterwards ${seq}, the highest applied on a node ${held}`);
  assert.ok(seq >= held, 'the counter is at or past what the nodes hold');
  await verifyPasses();
});

s.run();
