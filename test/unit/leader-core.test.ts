/*
 * The leader's pure step (proxy/leader-core.ts) and the registry records it reads
 * (common/registry.ts), table-driven: a registry as the leader would read it, and the
 * membership change, registry writes and memory that one round makes. The rules that
 * proxy/leader.ts performed before it was split are covered, with real Redis, by
 * test/integration/leader-rules.test.ts; these are the partition rules, incarnations and
 * the registry that the split added.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Membership } from '../../common/api';
import { parseCounter, parseHeartbeat, parseMembership, RegistryError, encodeMembership } from '../../common/registry';
import { decide, newLeaderMemory, nodeView, PEER_UNREACHABLE_MS, REACH_HANDOVER_HOLDOFF_MS, type LeaderInput, type NodeView } from '../../proxy/leader-core';

const NODES = { n1: 'http://n1', n2: 'http://n2', n3: 'http://n3' };
const M: Membership = { epoch: 5, primary: 'n1', inSync: ['n1', 'n2', 'n3'], nodes: NODES, incarnations: { n1: 'i1', n2: 'i2', n3: 'i3' } };

function node(id: string, over: Partial<NodeView> = {}): NodeView {
  const v = nodeView(id, { id, url: NODES[id as keyof typeof NODES] }, {
    url: NODES[id as keyof typeof NODES],
    appliedSeq: 10,
    durableSeq: 10,
    commitSeq: 10,
    epoch: 5,
    logEpoch: 5,
    role: id === 'n1' ? 'primary' : 'backup',
    incarnation: `i${id.slice(1)}`,
  });
  return { ...v, ...over };
}

function input(over: Partial<LeaderInput> = {}): LeaderInput {
  return { membership: M, nodes: [node('n1'), node('n2'), node('n3')], removing: {}, joining: {}, seq: 10, refused: [], minInSync: 0, nowMs: 100_000, memory: newLeaderMemory(), ...over };
}

test('a healthy cluster: no change', () => {
  const d = decide(input());
  assert.is(d.next, null);
  assert.equal(d.writes, []);
});

test('a primary cut from both backups, which still heartbeat, hands its role to the best of them (the floor cannot be kept)', () => {
  const failing = { n2: PEER_UNREACHABLE_MS, n3: PEER_UNREACHABLE_MS + 500 };
  const d = decide(input({ nodes: [node('n1', { failingPeers: failing }), node('n2', { durableSeq: 9 }), node('n3')] }));
  assert.ok(d.next);
  assert.is(d.next.primary, 'n3');
  assert.equal(d.next.inSync, ['n2', 'n3']);
  assert.is(d.memory.reachHandoverAtMs, 100_000);
  // Within the hold-off, the new primary cut off the same way does not hand over again.
  const again = decide(input({ membership: { ...d.next, epoch: 6 }, nodes: [node('n1'), node('n2'), node('n3', { failingPeers: { n2: PEER_UNREACHABLE_MS } })], nowMs: 100_000 + REACH_HANDOVER_HOLDOFF_MS - 1, memory: d.memory }));
  assert.is(again.next?.primary ?? 'n3', 'n3');
});

test('a backup cut from the primary only leaves the in-sync set: the floor holds without it', () => {
  const d = decide(input({ nodes: [node('n1', { failingPeers: { n3: PEER_UNREACHABLE_MS } }), node('n2'), node('n3')] }));
  assert.ok(d.next);
  assert.is(d.next.primary, 'n1');
  assert.equal(d.next.inSync, ['n1', 'n2']);
});

test('a primary whose peers failed for less than PEER_UNREACHABLE_MS keeps its role', () => {
  const d = decide(input({ nodes: [node('n1', { failingPeers: { n2: PEER_UNREACHABLE_MS - 1, n3: PEER_UNREACHABLE_MS - 1 } }), node('n2'), node('n3')] }));
  assert.is(d.next, null);
});

test('with --min-in-sync 1 a primary cut from its backups drops them instead of handing over', () => {
  const failing = { n2: PEER_UNREACHABLE_MS, n3: PEER_UNREACHABLE_MS };
  const d = decide(input({ nodes: [node('n1', { failingPeers: failing, minInSync: 1 }), node('n2'), node('n3')] }));
  assert.ok(d.next);
  assert.is(d.next.primary, 'n1');
  assert.equal(d.next.inSync, ['n1', 'n3']);
});

test('a backup back with a new disk (another incarnation) leaves the in-sync set, and its incarnation is recorded', () => {
  const d = decide(input({ nodes: [node('n1'), node('n2', { incarnation: 'new2', durableSeq: 0, commitSeq: 0 }), node('n3')] }));
  assert.ok(d.next);
  assert.equal(d.next.inSync, ['n1', 'n3']);
  assert.equal(d.next.incarnations, { n1: 'i1', n2: 'new2', n3: 'i3' });
});

test('a primary back with a new disk under its ID is replaced, never kept: its log holds nothing', () => {
  const d = decide(input({ nodes: [node('n1', { incarnation: 'new1', durableSeq: 0, commitSeq: 0, logEpoch: null }), node('n2'), node('n3')] }));
  assert.ok(d.next);
  assert.is(d.next.primary, 'n2');
  assert.equal(d.next.inSync, ['n2', 'n3']);
  assert.is(d.next.incarnations?.n1, 'new1');
});

test('a node that heartbeats and is not registered is registered by the leader, and joins as a learner', () => {
  const n4 = { ...nodeView('n4', null, { url: 'http://n4', appliedSeq: 0, durableSeq: 0, epoch: 0, role: 'none', incarnation: 'i4' }) };
  const d = decide(input({ nodes: [node('n1'), node('n2'), node('n3'), n4] }));
  assert.equal(d.writes[0], { type: 'register', value: { id: 'n4', url: 'http://n4' } });
  assert.ok(d.next);
  assert.is(d.next.nodes.n4, 'http://n4');
  assert.not.ok(d.next.inSync.includes('n4'));
  assert.is(d.next.incarnations?.n4, 'i4');
});

test('a node being removed is not registered again by its heartbeats', () => {
  const n4 = nodeView('n4', null, { url: 'http://n4', appliedSeq: 0, durableSeq: 0 });
  const d = decide(input({ nodes: [node('n1'), node('n2'), node('n3'), n4], removing: { n4: { requestedAtMs: 1 } } }));
  assert.equal(d.writes, []);
  assert.is(d.next, null);
});

test('a stopping primary hands its role to the best in-sync node while it still runs; a stopping node is no successor', () => {
  const d = decide(input({ nodes: [node('n1', { stopping: true }), node('n2', { durableSeq: 9 }), node('n3')] }));
  assert.ok(d.next);
  assert.is(d.next.primary, 'n3');
  assert.equal(d.next.inSync, ['n2', 'n3']);
  const both = decide(input({ nodes: [node('n1', { stopping: true }), node('n2', { durableSeq: 9 }), node('n3', { stopping: true })] }));
  assert.is(both.next?.primary, 'n2');
  // Alone in sync: nobody to hand over to; it stays primary, with one warning.
  const alone = decide(input({ membership: { ...M, inSync: ['n1'] }, nodes: [node('n1', { stopping: true }), node('n2'), node('n3')] }));
  assert.is(alone.next?.primary ?? 'n1', 'n1');
  assert.is(alone.notes.filter((n) => n.level === 'warn').length, 1);
  const again = decide(input({ membership: { ...M, inSync: ['n1'] }, nodes: [node('n1', { stopping: true }), node('n2'), node('n3')], memory: alone.memory }));
  assert.is(again.notes.length, 0);
});

test('a stopping backup leaves the in-sync set; a stopping learner is not promoted', () => {
  const d = decide(input({ nodes: [node('n1'), node('n2', { stopping: true }), node('n3')] }));
  assert.equal(d.next?.inSync, ['n1', 'n3']);
  assert.is(d.next?.primary, 'n1');
  const learner = decide(input({ membership: { ...M, inSync: ['n1', 'n2'] }, nodes: [node('n1'), node('n2'), node('n3', { role: 'learner', stopping: true })] }));
  assert.is(learner.next, null);
  const promoted = decide(input({ membership: { ...M, inSync: ['n1', 'n2'] }, nodes: [node('n1'), node('n2'), node('n3', { role: 'learner' })] }));
  assert.equal(promoted.next?.inSync, ['n1', 'n2', 'n3']);
});

test('a removal that completes records the boot that left; the same boot stays out, another boot rejoins', () => {
  const n3 = (boot: string | null) => node('n3', { boot, registered: false });
  const drained = { requestedAtMs: 1, drainedAtMs: 100_000 - 5_000 };
  const left = decide(input({ membership: { ...M, inSync: ['n1', 'n2'] }, nodes: [node('n1'), node('n2'), n3('b1')], removing: { n3: drained } }));
  assert.ok(left.next);
  assert.equal(Object.keys(left.next.nodes), ['n1', 'n2']);
  assert.equal(left.writes, [
    { type: 'setRemoving', id: 'n3', value: { ...drained, removedBoot: 'b1' } },
    { type: 'deleteNode', id: 'n3' },
  ]);
  const after = { ...M, inSync: ['n1', 'n2'], nodes: { n1: NODES.n1, n2: NODES.n2 } };
  const done = { ...drained, removedBoot: 'b1' };
  // The process that left still runs: nothing happens (as before rejoins existed).
  const same = decide(input({ membership: after, nodes: [node('n1'), node('n2'), n3('b1')], removing: { n3: done } }));
  assert.is(same.next, null);
  assert.equal(same.writes, []);
  // It stopped and started again (a StatefulSet scaled back up): the request goes, then it joins.
  const back = decide(input({ membership: after, nodes: [node('n1'), node('n2'), n3('b2')], removing: { n3: done } }));
  assert.equal(back.writes, [{ type: 'deleteRemoving', id: 'n3' }]);
  const joins = decide(input({ membership: after, nodes: [node('n1'), node('n2'), n3('b2')], removing: {} }));
  assert.equal(joins.writes, [{ type: 'register', value: { id: 'n3', url: NODES.n3 } }]);
  assert.ok(joins.next?.nodes.n3 !== undefined && !joins.next.inSync.includes('n3'), 'a learner');
  // A node removed while down ('' recorded) rejoins at its next start; one from before boots were reported never does.
  assert.equal(decide(input({ membership: after, nodes: [node('n1'), node('n2'), n3('b3')], removing: { n3: { ...drained, removedBoot: '' } } })).writes, [{ type: 'deleteRemoving', id: 'n3' }]);
  assert.equal(decide(input({ membership: after, nodes: [node('n1'), node('n2'), n3('b3')], removing: { n3: drained } })).writes, []);
});

test('the first membership records every live node\'s incarnation', () => {
  const fresh = ['n1', 'n2', 'n3'].map((id) => node(id, { durableSeq: 0, commitSeq: 0, epoch: 0, role: 'none' }));
  const d = decide(input({ membership: null, nodes: fresh, seq: 0 }));
  assert.ok(d.next);
  assert.equal(d.next.incarnations, { n1: 'i1', n2: 'i2', n3: 'i3' });
});

test('registry values are checked: epochs and sequence IDs as safe integers, members as named', () => {
  assert.equal(parseMembership(encodeMembership(M)), M);
  assert.throws(() => parseMembership('{'), (e: unknown) => e instanceof RegistryError && /not JSON/.test((e as Error).message));
  assert.throws(() => parseMembership(JSON.stringify({ ...M, epoch: 2 ** 53 })), /dfs:membership is malformed: epoch/);
  assert.throws(() => parseMembership(JSON.stringify({ ...M, epoch: 1.5 })), /epoch/);
  assert.throws(() => parseMembership(JSON.stringify({ ...M, primary: 'n9' })), /the primary is not a member/);
  assert.throws(() => parseMembership(JSON.stringify({ ...M, inSync: ['n1', 'n9'] })), /in-sync node is not a member/);
  assert.throws(() => parseHeartbeat('n1', JSON.stringify({ appliedSeq: -1, durableSeq: 0 })), /dfs:node:n1:alive is malformed: appliedSeq/);
  assert.is(parseCounter('dfs:seq', null), 0);
  assert.is(parseCounter('dfs:seq', '42'), 42);
  assert.throws(() => parseCounter('dfs:seq', '9007199254740993'), /not a safe integer/);
  assert.throws(() => parseCounter('dfs:seq', '-3'), /not a safe integer/);
});

test.run();
