/*
 * The leader's membership rules (proxy/leader.ts) against a real Redis, with the nodes'
 * heartbeats written by the test: each case sets a membership and what the nodes report,
 * runs one leader round, and reads what the leader published. The real-process tests
 * (failover.test.ts, membership.test.ts) show the same rules with real nodes; here each
 * rule is pinned down, including the ones that a real cluster reaches only by bad luck
 * (a primary chosen on stale figures, a promoted node not yet confirmed).
 */
import net from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { Redis } from 'ioredis';
import type { Membership } from '../../common/api';
import { createLogger } from '../../common/log';
import { KEY_EPOCH, KEY_JOINING, KEY_LEADER, KEY_MEMBERSHIP, KEY_NODES, KEY_REMOVING, KEY_SEQ, nodeAliveKey } from '../../common/redis-keys';
import { LeaderDuty, PEER_UNREACHABLE_MS, readMembership } from '../../proxy/leader';
import { startRedis } from '../helpers/redis-server';
import { tempDir } from '../helpers/temp';

const s = suite('leader rules');
const ctx: { dir?: ReturnType<typeof tempDir>; redis?: Awaited<ReturnType<typeof startRedis>> } = {};
const NODES = { n1: 'http://n1', n2: 'http://n2', n3: 'http://n3' };

s.before(async () => {
  ctx.dir = tempDir('leader-rules');
  ctx.redis = await startRedis(ctx.dir.path);
});

s.after(async () => {
  await ctx.redis?.stop();
  ctx.dir?.remove();
});

s.before.each(async () => {
  await ctx.redis!.client.flushall();
});

interface Beat {
  durableSeq: number;
  commitSeq?: number;
  epoch: number;
  logEpoch?: number | null;
  role?: string;
  primaryFenced?: boolean;
  failingPeers?: Record<string, number>;
  peersAhead?: string[];
  space?: 'ok' | 'low' | 'full';
}

/** Writes a membership (at `epoch`) and the heartbeats of the live nodes; nodes without a
 * heartbeat are down. */
async function world(redis: Redis, m: Membership, beats: Record<string, Beat>): Promise<void> {
  await redis.set(KEY_EPOCH, String(m.epoch));
  await redis.set(KEY_SEQ, '100');
  await redis.set(KEY_MEMBERSHIP, JSON.stringify(m));
  for (const [id, url] of Object.entries(m.nodes)) await redis.hset(KEY_NODES, id, JSON.stringify({ id, url }));
  for (const [id, b] of Object.entries(beats)) {
    const beat = { appliedSeq: b.commitSeq ?? b.durableSeq, commitSeq: b.durableSeq, logEpoch: b.epoch, role: 'backup', syncing: false, sync: null, membership: m, ...b };
    // (By default a node knows committed all it holds.)
    await redis.set(nodeAliveKey(id), JSON.stringify(beat), 'PX', 60_000);
  }
}

/** One leader round (a fresh leader each time, as after a leader change); the membership after it. */
async function round(redis: Redis): Promise<Membership> {
  await redis.del(KEY_LEADER);
  const leader = new LeaderDuty(redis, 'p-test', 60_000, createLogger('leader-test'));
  await leader.tick();
  assert.ok(leader.isLeader);
  return (await readMembership(redis))!;
}

const three = (epoch: number, primary = 'n1', inSync = ['n1', 'n2', 'n3']): Membership => ({ epoch, primary, inSync, nodes: NODES });

s('a dead primary is replaced by the live in-sync node whose log reaches furthest, by last epoch and then length', async () => {
  const redis = ctx.redis!.client;
  // n3 has the longer log, but its last entry is of an older epoch than n2's.
  await world(redis, three(7), { n2: { durableSeq: 40, commitSeq: 38, epoch: 7, logEpoch: 7 }, n3: { durableSeq: 45, commitSeq: 38, epoch: 7, logEpoch: 5 } });
  const m = await round(redis);
  assert.equal([m.primary, m.inSync, m.epoch], ['n2', ['n2', 'n3'], 8]);
  assert.ok(m.nodes.n1, 'the old primary stays a member, as a learner');
});

s('a primary whose port refuses connections is replaced before its heartbeat lapses', async () => {
  const redis = ctx.redis!.client;
  // A port nothing listens on any more.
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  const m0: Membership = { ...three(7), nodes: { ...NODES, n1: `http://127.0.0.1:${port}` } };
  await world(redis, m0, { n1: { durableSeq: 40, epoch: 7, role: 'primary' }, n2: { durableSeq: 40, epoch: 7 }, n3: { durableSeq: 40, epoch: 7 } });
  const m = await round(redis);
  assert.equal([m.primary, m.inSync], ['n2', ['n2', 'n3']]);
  // One that listens (alive and heartbeating) stays.
  const listening = net.createServer();
  await new Promise<void>((r) => listening.listen(0, '127.0.0.1', r));
  try {
    const m1: Membership = { ...three(9), nodes: { ...NODES, n1: `http://127.0.0.1:${(listening.address() as net.AddressInfo).port}` } };
    await world(redis, m1, { n1: { durableSeq: 40, epoch: 9, role: 'primary' }, n2: { durableSeq: 40, epoch: 9 }, n3: { durableSeq: 40, epoch: 9 } });
    assert.is((await round(redis)).primary, 'n1');
  } finally {
    await new Promise<void>((r) => listening.close(() => r()));
  }
});

s('a promoted node not yet confirmed is no candidate; once it knows committed what the primary held, it is', async () => {
  const redis = ctx.redis!.client;
  await world(redis, three(7), { n2: { durableSeq: 50, epoch: 7, logEpoch: 7 } });
  // n2 was promoted after epoch 6, and no round has seen the primary take that in.
  await redis.hset(KEY_JOINING, 'n2', JSON.stringify({ afterEpoch: 6, needs: null }));
  let m = await round(redis);
  assert.is(m.primary, 'n1', 'no failover to an unconfirmed node: wait for the primary');
  // Confirmed: the primary was seen holding epoch 7 at durable 48, and n2 knows 48 committed.
  await redis.hset(KEY_JOINING, 'n2', JSON.stringify({ afterEpoch: 6, needs: 48 }));
  await world(redis, three(7), { n2: { durableSeq: 50, commitSeq: 48, epoch: 7, logEpoch: 7 } });
  m = await round(redis);
  assert.is(m.primary, 'n2');
  assert.is(await redis.hget(KEY_JOINING, 'n2'), null);
});

s('a promotion is recorded before it is published, and confirmed once the primary holds it', async () => {
  const redis = ctx.redis!.client;
  await world(redis, three(7, 'n1', ['n1', 'n2']), {
    n1: { durableSeq: 60, epoch: 7, role: 'primary' },
    n2: { durableSeq: 60, epoch: 7 },
    n3: { durableSeq: 58, epoch: 7, role: 'learner' },
  });
  let m = await round(redis);
  assert.equal(m.inSync, ['n1', 'n2', 'n3']);
  assert.equal(JSON.parse((await redis.hget(KEY_JOINING, 'n3'))!), { afterEpoch: 7, needs: null });
  // The primary holds epoch 8 at durable 61; n3 knows 61 committed.
  await world(redis, m, { n1: { durableSeq: 61, epoch: 8, role: 'primary' }, n2: { durableSeq: 61, epoch: 8 }, n3: { durableSeq: 61, commitSeq: 55, epoch: 8 } });
  m = await round(redis);
  assert.equal(JSON.parse((await redis.hget(KEY_JOINING, 'n3'))!), { afterEpoch: 7, needs: 61 });
  await world(redis, m, { n1: { durableSeq: 61, epoch: 8, role: 'primary' }, n2: { durableSeq: 61, epoch: 8 }, n3: { durableSeq: 61, commitSeq: 61, epoch: 8 } });
  await round(redis);
  assert.is(await redis.hget(KEY_JOINING, 'n3'), null);
});

s('no candidate reaches a commit point a heartbeat reported: the cluster waits for the primary', async () => {
  const redis = ctx.redis!.client;
  // The leader heard n1 (primary) report commit 30 while it lived.
  await world(redis, three(7), { n1: { durableSeq: 30, commitSeq: 30, epoch: 7, role: 'primary' }, n2: { durableSeq: 30, epoch: 7 }, n3: { durableSeq: 30, epoch: 7 } });
  const leader = new LeaderDuty(redis, 'p-test', 60_000, createLogger('leader-test'));
  await leader.tick();
  // Then n1 died, and the only live in-sync node's log stops at 25.
  await redis.del(nodeAliveKey('n1'), nodeAliveKey('n3'));
  await world(redis, three(7), { n2: { durableSeq: 25, commitSeq: 20, epoch: 7 } });
  await leader.tick();
  assert.is((await readMembership(redis))!.primary, 'n1');
});

s('a restarted primary fenced from its epoch gets the same membership under a new one', async () => {
  const redis = ctx.redis!.client;
  await world(redis, three(7), { n1: { durableSeq: 10, epoch: 7, role: 'none', primaryFenced: true }, n2: { durableSeq: 10, epoch: 7 }, n3: { durableSeq: 10, epoch: 7 } });
  const m = await round(redis);
  assert.equal({ ...m, epoch: 0 }, { ...three(7), epoch: 0 });
  assert.is(m.epoch, 8);
});

s('a primary behind a peer that knows more committed hands the role to it', async () => {
  const redis = ctx.redis!.client;
  await world(redis, three(7), { n1: { durableSeq: 10, epoch: 7, role: 'primary', peersAhead: ['n3'] }, n2: { durableSeq: 10, epoch: 7 }, n3: { durableSeq: 14, commitSeq: 14, epoch: 7 } });
  const m = await round(redis);
  assert.equal([m.primary, m.inSync], ['n3', ['n2', 'n3']]);
});

s('a backup the primary has not reached for a while leaves the in-sync set, and is not promoted while it fails', async () => {
  const redis = ctx.redis!.client;
  const beats = (failing: Record<string, number>, m: Membership) =>
    world(redis, m, { n1: { durableSeq: 10, epoch: m.epoch, role: 'primary', failingPeers: failing }, n2: { durableSeq: 10, epoch: m.epoch }, n3: { durableSeq: 10, epoch: m.epoch, role: m.inSync.includes('n3') ? 'backup' : 'learner' } });
  await beats({ n3: PEER_UNREACHABLE_MS - 500 }, three(7));
  assert.equal((await round(redis)).inSync, ['n1', 'n2', 'n3'], 'not yet');
  await beats({ n3: PEER_UNREACHABLE_MS }, three(7));
  const dropped = await round(redis);
  assert.equal(dropped.inSync, ['n1', 'n2']);
  await beats({ n3: 100 }, dropped);
  assert.equal((await round(redis)).inSync, ['n1', 'n2'], 'still failing: not promoted');
  await beats({}, dropped);
  assert.equal((await round(redis)).inSync, ['n1', 'n2', 'n3'], 'reached again: promoted');
});

s('a backup out of space leaves the in-sync set at once, and is promoted again only once it has room', async () => {
  const redis = ctx.redis!.client;
  const beats = (space: 'ok' | 'low' | 'full', m: Membership) =>
    world(redis, m, { n1: { durableSeq: 10, epoch: m.epoch, role: 'primary' }, n2: { durableSeq: 10, epoch: m.epoch }, n3: { durableSeq: 10, epoch: m.epoch, role: m.inSync.includes('n3') ? 'backup' : 'learner', space } });
  await beats('low', three(7));
  assert.equal((await round(redis)).inSync, ['n1', 'n2', 'n3'], 'low on space is not out of it');
  await beats('full', three(7));
  const dropped = await round(redis);
  assert.equal(dropped.inSync, ['n1', 'n2']);
  await beats('full', dropped);
  assert.equal((await round(redis)).inSync, ['n1', 'n2'], 'still full: not promoted');
  await beats('low', dropped);
  assert.equal((await round(redis)).inSync, ['n1', 'n2', 'n3'], 'room again: promoted');
});

s('a primary short of space hands its role to an in-sync node with room, and to none merely low', async () => {
  const redis = ctx.redis!.client;
  type Space = 'ok' | 'low' | 'full';
  const beats = (n1: Space, n2: Space, n3: Space) =>
    world(redis, three(7), { n1: { durableSeq: 10, epoch: 7, role: 'primary', space: n1 }, n2: { durableSeq: 10, epoch: 7, space: n2 }, n3: { durableSeq: 10, epoch: 7, space: n3 } });
  await beats('full', 'low', 'low');
  assert.is((await round(redis)).primary, 'n1', 'a shared file system: the others are short of room too');
  await beats('ok', 'ok', 'ok');
  assert.is((await round(redis)).primary, 'n1');
  for (const short of ['full', 'low'] as const) {
    await beats(short, 'low', 'ok');
    const m = await round(redis);
    assert.equal([m.primary, m.inSync, m.epoch], ['n3', ['n2', 'n3'], 8], `a primary ${short} on space`);
    assert.ok(m.nodes.n1, 'the old primary stays a member');
  }
});

s('a primary being removed hands its role to the best confirmed in-sync node, then drains', async () => {
  const redis = ctx.redis!.client;
  // The primary runs and reports commit 50, past n2's last heartbeat: no floor for a handover.
  await world(redis, three(7), { n1: { durableSeq: 52, commitSeq: 50, epoch: 7, role: 'primary' }, n2: { durableSeq: 48, commitSeq: 46, epoch: 7 }, n3: { durableSeq: 47, commitSeq: 46, epoch: 7 } });
  await redis.hset(KEY_REMOVING, 'n1', JSON.stringify({ requestedAtMs: Date.now() }));
  const m = await round(redis);
  assert.equal([m.primary, m.inSync, Object.keys(m.nodes).sort()], ['n2', ['n2', 'n3'], ['n1', 'n2', 'n3']]);
  assert.ok(JSON.parse((await redis.hget(KEY_REMOVING, 'n1'))!).drainedAtMs, 'its drain has started');
});

s.run();
