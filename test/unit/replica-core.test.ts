/*
 * The pure replication core (storage/replica-core.ts), driven by event scripts: each case
 * is a table of events, and after each event the exact effects it produced, written as one
 * short line per effect (see `show`), in the manner of raft's testdata scripts. Invalid
 * input comes in two kinds: what a proxy or a peer may send (refused with a code), and
 * what only a broken driver would report (an assertion).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { Membership } from '../../common/api';
import type { EpochRun, LogEntry } from '../../storage/op-log';
import {
  createReplicaState,
  step,
  type ReplicaConfig,
  type ReplicaCoreState,
  type ReplicaEffect,
  type ReplicaEvent,
  type ReplicaInit,
} from '../../storage/replica-core';

const CONFIG: ReplicaConfig = {
  holeTimeoutMs: 1000,
  barrierTimeoutMs: 3000,
  pendingOpsMax: 8,
  replicateBatchBytesMax: 1000,
  dedupEntriesMax: 100,
  peerRetryMs: 200,
  syncRetryMs: 1000,
  seqAheadMax: 100,
  holeClaimsPerRoundMax: 3,
};

const NODES = { n1: 'http://n1', n2: 'http://n2', n3: 'http://n3' };
const ALONE: Membership = { epoch: 1, primary: 'n1', inSync: ['n1'], nodes: { n1: NODES.n1 } };
const THREE: Membership = { epoch: 1, primary: 'n1', inSync: ['n1', 'n2', 'n3'], nodes: NODES };
const AS_BACKUP: Membership = { epoch: 1, primary: 'n2', inSync: ['n1', 'n2', 'n3'], nodes: NODES };

function entry(seq: number, reqId = `r${seq}`, bytes = 10, epoch = 1): LogEntry {
  return { header: { epoch, seq, reqId, timeMs: 1000 + seq, op: { type: 'write', path: '/f', offset: 0 } }, data: Buffer.alloc(bytes, seq) };
}

// Event shorthands, so that a script reads as a line per event.
const membership = (m: Membership, epoch = m.epoch): ReplicaEvent => ({ type: 'membership', membership: { ...m, epoch } });
const submit = (token: number, seq: number, o: { reqId?: string; epoch?: number; bytes?: number } = {}): ReplicaEvent => {
  const e = entry(seq, o.reqId ?? `r${seq}`, o.bytes ?? 10, o.epoch ?? 1);
  return { type: 'submit', token, header: e.header, data: e.data };
};
const replicate = (
  token: number,
  seqs: number[],
  commitSeq = 0,
  epoch = 1,
  reqIds: Record<number, string> = {},
  o: { prefixSeq?: number; truncateAfter?: number; entryEpoch?: number } = {},
): ReplicaEvent => ({
  type: 'replicate',
  token,
  epoch,
  commitSeq,
  prefixSeq: o.prefixSeq ?? -1,
  truncateAfter: o.truncateAfter ?? null,
  entries: seqs.map((s) => entry(s, reqIds[s] ?? `r${s}`, 10, o.entryEpoch ?? 1)),
});
const durable = (seq: number): ReplicaEvent => ({ type: 'logDurable', seq });
const logFailed = (seq: number): ReplicaEvent => ({ type: 'logFailed', seq, code: 'NO_SPACE' });
const space = (state: 'ok' | 'low' | 'full'): ReplicaEvent => ({ type: 'space', state });
const submitOp = (token: number, seq: number, op: LogEntry['header']['op']): ReplicaEvent => ({
  type: 'submit',
  token,
  header: { epoch: 1, seq, reqId: `r${seq}`, timeMs: 1000 + seq, op },
  data: Buffer.alloc(0),
});
const applied = (seq: number, result: { errno?: string } = {}): ReplicaEvent => ({ type: 'applied', seq, result });
/** A peer's answer; by default its log is all epoch 1 and it knows nothing committed. */
const acked = (peerId: string, requestId: number, durableSeq: number, commitSeq = 0, tail: EpochRun[] = durableSeq > commitSeq ? [{ from: commitSeq + 1, epoch: 1 }] : []): ReplicaEvent => ({
  type: 'peerAcked',
  peerId,
  requestId,
  ack: { durableSeq, commitSeq, tail },
});
const failed = (peerId: string, requestId: number, code: 'GAP' | 'UNAVAILABLE' | 'STALE_EPOCH' | 'NOT_PRIMARY' | 'NO_SPACE'): ReplicaEvent => ({ type: 'peerFailed', peerId, requestId, code });
const timer = (key: 'hole' | 'hold' | `peer:${string}` | `notice:${string}` | `barrier:${number}`): ReplicaEvent => ({ type: 'timer', key });
const read = (token: number, seq: number): ReplicaEvent => ({ type: 'barrierRead', token, seq });
const hold = (token: number, seq: number, timeoutMs = 5000): ReplicaEvent => ({ type: 'hold', token, seq, timeoutMs });

function range(entries: LogEntry[]): string {
  return entries.length === 0 ? '-' : `${entries[0]!.header.seq}..${entries[entries.length - 1]!.header.seq}`;
}

/** One effect as one line. */
function show(fx: ReplicaEffect): string {
  switch (fx.type) {
    case 'append':
      return `append ${range(fx.entries)}`;
    case 'send': {
      // prefixSeq is always the peer's acknowledged end, which the script shows already.
      const cut = fx.truncateAfter === null ? '' : ` cut${fx.truncateAfter}`;
      return `send ${fx.peerId} #${fx.requestId} e${fx.epoch} c${fx.commitSeq}${cut} ${range(fx.entries)}`;
    }
    case 'truncate':
      return `truncate ${fx.afterSeq}`;
    case 'peerAhead':
      return `ahead ${fx.peerId} c${fx.peerCommitSeq}`;
    case 'apply':
      return `apply ${fx.entry.header.seq}`;
    case 'answer':
      if (fx.value !== null && 'tail' in fx.value) {
        // A backup's ack: durable end, commit point, and the epochs of its tail.
        return `answer ${fx.token} d${fx.value.durableSeq} c${fx.value.commitSeq}${fx.value.tail.map((r) => ` ${r.from}:e${r.epoch}`).join('')}`;
      }
      return `answer ${fx.token} ${JSON.stringify(fx.value)}`;
    case 'refuse':
      return `refuse ${fx.token} ${fx.code}`;
    case 'setTimer':
      return `set ${fx.key} ${fx.delayMs}`;
    case 'clearTimer':
      return `clear ${fx.key}`;
    case 'refreshMembership':
      return `refresh ${fx.peerId}`;
    case 'roleChanged':
      return `role ${fx.role} e${fx.epoch}`;
    case 'holeClaimed':
      return `hole ${fx.seq}`;
    case 'peerStranded':
      return `stranded ${fx.peerId} ${fx.seq}`;
    case 'requireSync':
      return `requireSync ${fx.peerId} ${fx.seq}`;
  }
}

type Line = [ReplicaEvent, string[]] | [ReplicaEvent, { throws: RegExp }];

interface Case {
  name: string;
  init?: Partial<ReplicaInit>;
  script: Line[];
  /** Checked after the script. */
  after?: (s: ReplicaCoreState) => void;
}

function init(over: Partial<ReplicaInit> = {}): ReplicaCoreState {
  // Unless a case says otherwise, the whole log was sequenced in epoch 1.
  const logLastSeq = over.logLastSeq ?? 0;
  const epochRuns = over.epochRuns ?? (Math.max(logLastSeq, over.appliedSeq ?? 0) > 0 ? [{ from: 1, epoch: 1 }] : []);
  return createReplicaState({ id: 'n1', config: CONFIG, epoch: 1, appliedSeq: 0, logLastSeq: 0, recovered: [], epochRuns, ...over });
}

function run(c: Case): void {
  const s = init(c.init);
  c.script.forEach(([event, want], i) => {
    const where = `${c.name}, line ${i + 1} (${event.type})`;
    if (!Array.isArray(want)) {
      assert.throws(() => step(s, event), want.throws, where);
      return;
    }
    const got = step(s, event).effects.map(show);
    assert.equal(got, want, where);
  });
  c.after?.(s);
}

/** A primary of three nodes whose backups have both said where their logs end (at 0). */
const PRIMARY_READY: Line[] = [
  [membership(THREE), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
  [acked('n2', 1, 0), []],
  [acked('n3', 2, 0), []],
];

const CASES: Case[] = [
  // ---- the floor on copies (minInSync) ----
  {
    name: 'a primary alone of three (the others left the in-sync set) commits nothing: below the majority floor',
    script: [
      [membership({ ...THREE, inSync: ['n1'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [submit(7, 1), ['append 1..1']],
      [durable(1), []],
    ],
    after: (s) => assert.equal([s.durableSeq, s.commitSeq, s.appliedSeq], [1, 0, 0]),
  },
  {
    name: 'below the floor the op waits; a backup back in the in-sync set that holds it lets it commit',
    script: [
      [membership({ ...THREE, inSync: ['n1'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 0), []],
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [membership({ ...THREE, inSync: ['n1', 'n2'] }, 2), ['apply 1', 'send n2 #4 e2 c1 -']],
      [applied(1), ['answer 7 {"seq":1}']],
    ],
  },
  {
    name: 'minInSync 1 lets a primary alone commit (the floor is configurable)',
    init: { config: { ...CONFIG, minInSync: 1 } },
    script: [
      [membership({ ...THREE, inSync: ['n1'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [submit(7, 1), ['append 1..1']],
      [durable(1), ['apply 1']],
    ],
  },
  {
    name: 'minInSync 3 of three: one backup out of the in-sync set stops commits',
    init: { config: { ...CONFIG, minInSync: 3 } },
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n2'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 0), []],
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
    ],
    after: (s) => assert.is(s.commitSeq, 0),
  },
  // ---- incarnations: a new disk under an old ID ----
  {
    name: 'a node whose incarnation is not the one the membership admitted never acts as primary or backup',
    init: { incarnation: 'bbbbbbbbbbbbbbbb' },
    script: [
      [membership({ ...THREE, incarnations: { n1: 'aaaaaaaaaaaaaaaa' } }), ['role learner e1']],
      [submit(7, 1), ['refuse 7 NOT_PRIMARY']],
      [membership({ ...THREE, incarnations: { n1: 'bbbbbbbbbbbbbbbb' } }, 2), ['role primary e2', 'send n2 #1 e2 c0 -', 'send n3 #2 e2 c0 -']],
    ],
    after: (s) => assert.is(s.stranger, false),
  },
  // ---- the primary's pipeline ----
  {
    name: 'a single-node primary commits on its own log, then answers the submitter',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(7, 1), ['append 1..1']],
      [durable(1), ['apply 1']],
      [applied(1, { errno: 'EEXIST' }), ['answer 7 {"seq":1,"errno":"EEXIST"}']],
    ],
    after: (s) => assert.equal([s.durableSeq, s.commitSeq, s.appliedSeq, s.entries.size], [1, 1, 1, 0]),
  },
  {
    name: 'with backups, commit waits for the slowest in-sync backup, and each learns it after',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), ['apply 1', 'send n2 #5 e1 c1 -', 'send n3 #6 e1 c1 -']],
      [applied(1), ['answer 7 {"seq":1}']],
      [acked('n2', 5, 1, 1), []],
    ],
    after: (s) => {
      assert.is(s.peers.get('n2')!.knownCommit, 1);
      assert.is(s.peers.get('n3')!.notice?.requestId, 6);
    },
  },
  {
    name: 'commitNoticeDelayMs: a notice is held back; the next op\'s batch carries the commit point instead, and the timer then sends nothing',
    init: { config: { ...CONFIG, commitNoticeDelayMs: 5 } },
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), ['apply 1', 'set notice:n2 5', 'set notice:n3 5']],
      [applied(1), ['answer 7 {"seq":1}']],
      // The next op comes before the timers: its batches tell both backups c1.
      [submit(8, 2), ['append 2..2', 'send n2 #5 e1 c1 2..2', 'send n3 #6 e1 c1 2..2']],
      [acked('n2', 5, 2, 1), []],
      [timer('notice:n2'), []], // n2 knows c1, and c2 is not committed yet: nothing to tell
      [durable(2), []],
      // n2's timer is armed again; n3's, set for c1, is still armed and will tell it c2.
      [acked('n3', 6, 2, 1), ['apply 2', 'set notice:n2 5']],
      [applied(2), ['answer 8 {"seq":2}']],
      // Nothing more comes: each timer sends the notice it held.
      [timer('notice:n2'), ['send n2 #7 e1 c2 -']],
      [timer('notice:n3'), ['send n3 #8 e1 c2 -']],
      [timer('notice:n3'), []], // a stale firing does nothing
      [acked('n2', 7, 2, 2), []],
    ],
    after: (s) => {
      assert.equal([s.peers.get('n2')!.knownCommit, s.peers.get('n2')!.noticeHeld], [2, false]);
      assert.is(s.peers.get('n3')!.notice?.requestId, 8);
    },
  },
  {
    name: 'commitNoticeDelayMs: a held notice is dropped with its peer, and by a node that stops being primary',
    init: { config: { ...CONFIG, commitNoticeDelayMs: 5 } },
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), ['apply 1', 'set notice:n2 5', 'set notice:n3 5']],
      [membership({ ...THREE, inSync: ['n1', 'n2'], nodes: { n1: NODES.n1, n2: NODES.n2 } }, 2), ['clear notice:n3']], // n2's notice stays held
      [timer('notice:n3'), []],
      // n2 is primary now, so no peer of this node's: its timer goes, with the submitter.
      [membership(AS_BACKUP, 3), ['refuse 7 NOT_PRIMARY', 'clear notice:n2', 'role backup e3']],
      [timer('notice:n2'), []],
    ],
    after: (s) => assert.is(s.peers.get('n2')?.noticeHeld ?? false, false),
  },
  {
    name: 'commit is the primary\'s own durable point when the backups are ahead of it',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), []],
      [durable(1), ['apply 1', 'send n2 #5 e1 c1 -', 'send n3 #6 e1 c1 -']],
    ],
  },
  {
    name: 'one batch in flight per backup; ops that arrive meanwhile go in the next one (group commit on disk too)',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [submit(8, 2), []],
      [submit(9, 3), []],
      [durable(1), ['append 2..3']],
      [acked('n2', 3, 1), ['send n2 #5 e1 c0 2..3']],
    ],
  },
  {
    name: 'a batch and an append stop at the byte limit',
    init: { config: { ...CONFIG, replicateBatchBytesMax: 15 } },
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 2), ['set hole 1000']],
      [submit(2, 3), []],
      [submit(3, 1), ['clear hole', 'append 1..2']],
      [durable(2), ['apply 1', 'append 3..3']],
    ],
  },
  {
    name: 'ops submitted out of order wait in pending until the run is contiguous',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 2), ['set hole 1000']],
      [submit(2, 1), ['clear hole', 'append 1..2']],
      [durable(2), ['apply 1']],
      [applied(1), ['answer 2 {"seq":1}', 'apply 2']],
      [applied(2), ['answer 1 {"seq":2}']],
    ],
  },

  // ---- refusals: what a proxy may send ----
  {
    name: 'a slot that holds an op, ordered or pending, is SLOT_TAKEN',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1), ['append 1..1']],
      [submit(2, 1, { reqId: 'other' }), ['refuse 2 SLOT_TAKEN']],
      [submit(3, 3), ['set hole 1000']],
      [submit(4, 3), ['refuse 4 SLOT_TAKEN']],
    ],
  },
  {
    name: 'an older or a newer epoch is STALE_EPOCH; a node that is not primary says NOT_PRIMARY',
    script: [
      [membership(ALONE, 2), ['role primary e2']],
      [submit(1, 1, { epoch: 1 }), ['refuse 1 STALE_EPOCH']],
      [submit(2, 1, { epoch: 3 }), ['refuse 2 STALE_EPOCH']],
      [membership(AS_BACKUP, 3), ['role backup e3']],
      [submit(3, 1, { epoch: 3 }), ['refuse 3 NOT_PRIMARY']],
      [membership(ALONE, 2), []], // an older leader's view changes nothing
    ],
    after: (s) => assert.equal([s.epoch, s.role], [3, 'backup']),
  },
  {
    name: 'a node with no membership yet refuses everything',
    script: [
      [submit(1, 1), ['refuse 1 NOT_PRIMARY']],
      [replicate(2, [1]), ['refuse 2 NOT_PRIMARY']],
    ],
  },
  {
    name: 'past pendingOpsMax ops in flight a submission is UNAVAILABLE',
    init: { config: { ...CONFIG, pendingOpsMax: 2 } },
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1), ['append 1..1']],
      [submit(2, 3), ['set hole 1000']],
      [submit(3, 2), ['refuse 3 UNAVAILABLE']],
    ],
  },

  {
    name: 'a sequence ID more than seqAheadMax above the newest known is BAD_REQUEST: submit, barrier and hold alike, claiming no hole',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1), ['append 1..1']],
      // The newest known is 1 (the log's end): 101 is within the bound, 102 is not.
      [submit(2, 102), ['refuse 2 BAD_REQUEST']],
      [read(3, 102), ['refuse 3 BAD_REQUEST']],
      [hold(4, 1_000_001), ['refuse 4 BAD_REQUEST']],
      [read(5, 101), ['set hole 1000', 'set barrier:5 3000']],
    ],
    after: (s) => assert.equal([s.highestSeenSeq, s.pending.size], [101, 0]),
  },
  {
    name: 'the hole timer claims at most holeClaimsPerRoundMax slots a round, then waits again for the rest',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 6), ['set hole 1000']],
      [timer('hole'), ['hole 1', 'hole 2', 'hole 3', 'set hole 1000', 'append 1..3']],
      [timer('hole'), ['hole 4', 'hole 5']],
    ],
    after: (s) => assert.is(s.orderedSeq, 6),
  },

  // ---- holes ----
  {
    name: 'a hole is claimed as a no-op after holeTimeoutMs; the late op is SLOT_TAKEN',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 2), ['set hole 1000']],
      [timer('hole'), ['hole 1', 'append 1..2']],
      [durable(2), ['apply 1']],
      [applied(1), ['apply 2']],
      [applied(2), ['answer 1 {"seq":2}']],
      [submit(2, 1), ['refuse 2 SLOT_TAKEN']],
    ],
    after: (s) => assert.is(s.holeTimerSeq, null),
  },
  {
    name: 'a hole that arrives before its timer leaves the timer for the next hole, which gets a fresh wait',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 2), ['set hole 1000']],
      [submit(2, 4), []],
      [submit(3, 1), ['append 1..2']],
      [timer('hole'), ['set hole 1000']],
      [timer('hole'), ['hole 3']],
    ],
    after: (s) => assert.is(s.orderedSeq, 4),
  },
  {
    name: 'every slot known missing when the hole timer started is claimed at once; one seen later waits afresh',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 4), ['set hole 1000']],
      [submit(2, 2), []],
      [submit(3, 7), []],
      [timer('hole'), ['hole 1', 'hole 3', 'set hole 1000', 'append 1..4']],
      [timer('hole'), ['hole 5', 'hole 6']],
    ],
    after: (s) => assert.is(s.orderedSeq, 7),
  },
  {
    name: 'when the first hole arrives before the timer, the others known then are claimed without a fresh wait',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 3), ['set hole 1000']],
      [submit(2, 1), ['append 1..1']],
      [timer('hole'), ['hole 2']],
      [durable(1), ['apply 1', 'append 2..3']],
    ],
    after: (s) => assert.equal([s.orderedSeq, s.holeTimerSeq], [3, null]),
  },
  {
    name: 'a barrier read names a sequence ID the primary never saw: the tail hole is filled',
    script: [
      [membership(ALONE), ['role primary e1']],
      [read(5, 1), ['set hole 1000', 'set barrier:5 3000']],
      [timer('hole'), ['hole 1', 'append 1..1']],
      [durable(1), ['apply 1']],
      [applied(1), ['clear barrier:5', 'answer 5 null']],
    ],
  },
  {
    name: 'a backup does not fill holes; its barrier read times out',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [read(5, 1), ['set barrier:5 3000']],
      [read(6, 0), ['answer 6 null']],
      [timer('barrier:5'), ['refuse 5 BARRIER_TIMEOUT']],
      [timer('barrier:5'), []],
    ],
  },
  {
    name: 'losing the primary role clears the hole timer and turns away what waited for it',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 2), ['set hole 1000']],
      [membership(AS_BACKUP, 2), ['refuse 1 NOT_PRIMARY', 'role backup e2', 'clear hole']],
      [timer('hole'), []],
    ],
  },

  // ---- the backup ----
  {
    name: 'a backup answers a batch once it is durable, and applies what the primary says committed',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1, 2]), ['append 1..2']],
      [durable(2), ['answer 1 d2 c0 1:e1']],
      [replicate(2, [], 2), ['apply 1', 'answer 2 d2 c2']],
      [applied(1), ['apply 2']],
      [applied(2), []],
    ],
  },
  {
    name: 'a backup never commits past its own durable log, whatever the primary says',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1]), ['append 1..1']],
      [replicate(2, [2], 2), []], // waits: the append of 1 is in flight
      [durable(1), ['answer 1 d1 c0 1:e1', 'append 2..2']],
    ],
    after: (s) => assert.equal([s.commitSeq, s.durableSeq, s.replicateWaiters.size], [0, 1, 1]),
  },
  {
    name: 'a batch that skips ahead is a GAP; one that is not a run is BAD_REQUEST',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [2, 3]), ['refuse 1 GAP']],
      [replicate(2, [1, 3]), ['refuse 2 BAD_REQUEST']],
      [replicate(3, [2, 1]), ['refuse 3 BAD_REQUEST']],
    ],
    after: (s) => assert.is(s.pending.size, 0),
  },
  {
    name: 'a repeated or overlapping batch keeps only what is new',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1, 2]), ['append 1..2']],
      [durable(2), ['answer 1 d2 c0 1:e1']],
      [replicate(2, [1, 2]), ['answer 2 d2 c0 1:e1']],
      [replicate(3, [2, 3]), ['append 3..3']],
      [durable(3), ['answer 3 d3 c0 1:e1']],
    ],
  },
  {
    name: 'a backup refuses a batch from another epoch',
    script: [
      [membership(AS_BACKUP, 2), ['role backup e2']],
      [replicate(1, [1], 0, 1), ['refuse 1 STALE_EPOCH']],
      [replicate(2, [1], 0, 3), ['refuse 2 STALE_EPOCH']],
    ],
  },
  {
    name: 'a slot that holds a different op than the primary sends is a broken invariant',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1]), ['append 1..1']],
      [replicate(2, [1], 0, 1, { 1: 'someone-else' }), { throws: /differs from the primary/ }],
    ],
  },

  // ---- peers failing ----
  {
    name: 'a GAP from a backup: ask where its log ends at once, then feed it from there',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n2', 3, 'GAP'), ['set peer:n2 0']],
      [timer('peer:n2'), ['send n2 #5 e1 c0 -']],
      [acked('n2', 5, 0), ['send n2 #6 e1 c0 1..1']],
    ],
  },
  {
    name: 'an unreachable backup is retried after peerRetryMs with the same ops',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n2', 3, 'UNAVAILABLE'), ['set peer:n2 200']],
      [submit(8, 2), [] /* the log, n3 have 1 in flight; n2 waits for its timer */],
      [timer('peer:n2'), ['send n2 #5 e1 c0 1..2']],
    ],
  },
  {
    name: 'a backup with a newer epoch: refresh the membership first, then ask where its log ends',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n2', 3, 'STALE_EPOCH'), ['refresh n2']],
      [membership(THREE, 2), []],
      [timer('peer:n2'), []], // not waiting on a timer
      [{ type: 'membershipRefreshed', peerId: 'n2' }, ['send n2 #5 e2 c0 -']],
      [{ type: 'membershipRefreshed', peerId: 'n2' }, []],
    ],
  },
  {
    name: 'an answer to a request sent in an older epoch only tells us to ask the backup again',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [membership(THREE, 2), []],
      [acked('n2', 3, 1), ['send n2 #5 e2 c0 -']],
    ],
    after: (s) => assert.is(s.peers.get('n2')!.ackedSeq, -1),
  },
  {
    // Found by the simulation (seeds 1104 and 4056): a commit notice's answer, delayed
    // past the batch lane's STALE_EPOCH, set the backup's log end back to before what the
    // primary had applied, and the backup could never be fed again.
    name: 'a delayed answer sent before the primary asked afresh does not set the backup back',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), ['apply 1', 'send n2 #5 e1 c1 -', 'send n3 #6 e1 c1 -']],
      [applied(1), ['answer 7 {"seq":1}']],
      [submit(8, 2), ['append 2..2', 'send n2 #7 e1 c1 2..2', 'send n3 #8 e1 c1 2..2']],
      [durable(2), []],
      [acked('n2', 7, 2), []], // n2's notice #5 is still on its way back
      [acked('n3', 8, 2), ['apply 2']],
      [applied(2), ['answer 8 {"seq":2}']],
      [submit(9, 3), ['append 3..3', 'send n2 #9 e1 c2 3..3', 'send n3 #10 e1 c2 3..3']],
      [failed('n2', 9, 'STALE_EPOCH'), ['refresh n2']],
      [acked('n2', 5, 1), []], // the notice's answer, late: n2's log ended at 1 back then
      [membership(THREE, 2), []],
      [{ type: 'membershipRefreshed', peerId: 'n2' }, ['send n2 #11 e2 c2 -']], // not "stranded n2 2"
      [acked('n2', 11, 2), ['send n2 #12 e2 c2 3..3']],
    ],
  },
  {
    name: 'unknown, repeated and stale answers from peers change nothing',
    script: [
      ...PRIMARY_READY,
      [acked('n2', 1, 0), []],
      [acked('n2', 99, 5), []],
      [failed('n3', 99, 'GAP'), []],
      [acked('n9', 1, 0), []],
    ],
    after: (s) => assert.equal([s.peers.get('n2')!.ackedSeq, s.peers.get('n3')!.ackedSeq], [0, 0]),
  },
  {
    name: 'a backup removed from the in-sync set no longer holds up commits; it is still fed, as a learner',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n3', 4, 'UNAVAILABLE'), ['set peer:n3 200']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [membership({ ...THREE, inSync: ['n1', 'n2'] }, 2), ['apply 1', 'send n2 #5 e2 c1 -']],
      [acked('n3', 4, 1), []], // its answer came after it failed: ignored
      [timer('peer:n3'), ['send n3 #6 e2 c1 1..1']],
      [acked('n3', 6, 1, 1), []], // that batch told it the commit point too
    ],
    after: (s) => assert.equal([s.peers.get('n3')!.inSync, s.peers.get('n3')!.ackedSeq, s.commitSeq], [false, 1, 1]),
  },
  {
    name: 'a learner does not hold up commits; promoted, it keeps what the primary knew of its log',
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n2'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 0), []],
      [acked('n3', 2, 0), []],
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      // The learner gets no notice before it holds 1: it could not commit past its log.
      [acked('n2', 3, 1), ['apply 1', 'send n2 #5 e1 c1 -']],
      [applied(1), ['answer 7 {"seq":1}']],
      [membership(THREE, 2), []],
      [submit(8, 2, { epoch: 2 }), ['append 2..2', 'send n2 #6 e2 c1 2..2']],
      [durable(2), []],
      [acked('n3', 4, 1), ['send n3 #7 e2 c1 -']], // sent in epoch 1: the primary asks where n3's log ends
    ],
    after: (s) => assert.equal([s.peers.get('n3')!.inSync, s.peers.get('n3')!.ackedSeq], [true, -1]),
  },
  {
    name: 'a learner is told the commit point again once its log holds it; it knows only what it took',
    // Found by the simulation (seed 2042): a notice named a commit point past the learner's
    // log; the learner took what it held (c1) but the primary counted the notice's (c2),
    // and once the learner held 2 it was never told 2 was committed.
    init: { logLastSeq: 2, recovered: [entry(1), entry(2)] },
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n2'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n3', 2, 1), ['send n3 #3 e1 c0 2..2']],
      [acked('n2', 1, 0), ['send n2 #4 e1 c0 1..2']],
      // n3's batch #3 is in flight: no notice beside it (the notice past its log that seed
      // 2042 found is no longer sent); the batch's answer brings it one.
      [acked('n2', 4, 2), ['apply 1', 'send n2 #5 e1 c2 -']],
      [acked('n3', 3, 2, 0), ['send n3 #6 e1 c2 -']],
      [acked('n3', 6, 2, 1), ['send n3 #7 e1 c2 -']], // it says it took c1 only: told again
      [acked('n3', 7, 2, 2), []],
    ],
    after: (s) => assert.is(s.peers.get('n3')!.knownCommit, 2),
  },
  {
    name: 'a peer that answers a batch with a lower commit point than it carried is told again',
    // Found by the simulation (seed 20864): the batch named commit 2 and the peer held 2,
    // but it took a new epoch before 2 was durable, which forgets what the old one vouched
    // for; it answered c1, and only what it says it took counts.
    init: { logLastSeq: 2, recovered: [entry(1), entry(2)] },
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n2'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 2), ['apply 1', 'send n2 #3 e1 c2 -']],
      [acked('n3', 2, 1), ['send n3 #4 e1 c2 2..2']],
      [acked('n3', 4, 2, 1), ['send n3 #5 e1 c2 -']],
      [acked('n3', 5, 2, 2), []],
    ],
    after: (s) => assert.is(s.peers.get('n3')!.knownCommit, 2),
  },
  {
    name: 'a tick tells every peer the commit point again, so one that restarted in a quiet cluster learns it',
    init: { logLastSeq: 2, recovered: [entry(1), entry(2)] },
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n2'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 2), ['apply 1', 'send n2 #3 e1 c2 -']],
      [acked('n2', 3, 2, 2), []],
      [acked('n3', 2, 2, 2), ['send n3 #4 e1 c2 -']],
      [acked('n3', 4, 2, 2), []],
      // n2 restarts unseen: it knows only what it had applied (1).
      [{ type: 'tick' }, ['send n2 #5 e1 c2 -', 'send n3 #6 e1 c2 -']],
      [acked('n2', 5, 2, 1), ['send n2 #7 e1 c2 -']], // it says it knows less: told again
      [acked('n2', 7, 2, 2), []],
      [acked('n3', 6, 2, 2), []],
    ],
    after: (s) => assert.is(s.peers.get('n2')!.knownCommit, 2),
  },
  {
    name: 'a learner takes batches like a backup and applies what the primary says is committed',
    script: [
      [membership({ ...AS_BACKUP, inSync: ['n2', 'n3'] }), ['role learner e1']],
      [replicate(1, [1, 2], 1), ['append 1..2']],
      [durable(2), ['apply 1', 'answer 1 d2 c1 2:e1']],
    ],
  },
  {
    name: 'a peer behind memory is fed from the log, batch by batch, then from memory again',
    init: { appliedSeq: 5, logLastSeq: 5 },
    script: [
      [membership(THREE), ['role primary e1', 'send n2 #1 e1 c5 -', 'send n3 #2 e1 c5 -']],
      [acked('n3', 2, 5, 5), []],
      [acked('n2', 1, 2, 2), ['stranded n2 3']],
      [submit(7, 6), ['append 6..6', 'send n3 #3 e1 c5 6..6']],
      [{ type: 'peerLogRead', peerId: 'n2', seq: 4, entries: [entry(4)], missing: false }, []], // not what it asked for
      [{ type: 'peerLogRead', peerId: 'n2', seq: 3, entries: [entry(3), entry(4)], missing: false }, ['send n2 #4 e1 c5 3..4']],
      [acked('n2', 4, 4), ['stranded n2 5']],
      [{ type: 'peerLogRead', peerId: 'n2', seq: 5, entries: [entry(5), entry(6), entry(8)], missing: false }, ['send n2 #5 e1 c5 5..6']],
      [acked('n2', 5, 6, 5), []],
    ],
    after: (s) => assert.is(s.peers.get('n2')!.ackedSeq, 6),
  },
  {
    name: 'a log read that comes back while the peer waits out a failure is dropped, and asked for again after',
    // Found by the simulation (seed 188): the read was dropped but the peer stayed marked
    // as waiting for it, so no read was ever asked for again and the learner starved.
    script: [
      [membership({ ...THREE, inSync: ['n1', 'n3'] }), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 0), []],
      [acked('n3', 2, 0), []],
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [durable(1), []],
      [acked('n2', 3, 1), []],
      [acked('n3', 4, 1), ['apply 1', 'send n2 #5 e1 c1 -', 'send n3 #6 e1 c1 -']],
      [applied(1), ['answer 7 {"seq":1}']], // 1 leaves memory
      [submit(8, 2), ['append 2..2', 'send n2 #7 e1 c1 2..2', 'send n3 #8 e1 c1 2..2']],
      [failed('n2', 7, 'GAP'), ['set peer:n2 0']],
      [timer('peer:n2'), ['send n2 #9 e1 c1 -']],
      [acked('n2', 9, 0), ['stranded n2 1']], // its log lost 1 (say): the driver reads it
      [failed('n2', 5, 'UNAVAILABLE'), ['set peer:n2 200']], // the notice fails meanwhile
      [{ type: 'peerLogRead', peerId: 'n2', seq: 1, entries: [entry(1)], missing: false }, []], // waiting: dropped
      [timer('peer:n2'), ['stranded n2 1']],
      [{ type: 'peerLogRead', peerId: 'n2', seq: 1, entries: [entry(1), entry(2)], missing: false }, ['send n2 #10 e1 c1 1..2']],
    ],
  },
  {
    name: 'a peer behind the log is told to full-sync, left alone a while, then asked afresh',
    init: { appliedSeq: 5, logLastSeq: 5 },
    script: [
      [membership(THREE), ['role primary e1', 'send n2 #1 e1 c5 -', 'send n3 #2 e1 c5 -']],
      [acked('n2', 1, 2), ['stranded n2 3']],
      [{ type: 'peerLogRead', peerId: 'n2', seq: 3, entries: [], missing: true }, ['requireSync n2 3', 'set peer:n2 1000']],
      [timer('peer:n2'), ['send n2 #3 e1 c5 -']],
      [failed('n2', 3, 'UNAVAILABLE'), ['set peer:n2 200']],
      [timer('peer:n2'), ['send n2 #4 e1 c5 -']],
      [acked('n2', 4, 5, 5), []], // it copied a brick at 5
    ],
  },
  {
    name: 'a full sync refuses what waits, stops log and apply, and starts again at the copied point',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1, 2], 0), ['append 1..2']],
      [read(2, 1), ['set barrier:2 3000']],
      [{ type: 'syncStarted' }, ['refuse 1 UNAVAILABLE', 'clear barrier:2', 'refuse 2 UNAVAILABLE']],
      [{ type: 'syncFinished', seq: 9, dedup: [] }, { throws: /busy/ }],
      [durable(2), []],
      [replicate(3, [3], 2), ['refuse 3 UNAVAILABLE']],
      [read(4, 1), ['refuse 4 UNAVAILABLE']],
      [hold(5, 1), ['refuse 5 UNAVAILABLE']],
      [{ type: 'syncFinished', seq: 9, dedup: [['x', { seq: 7 }]] }, []],
      [replicate(6, [10], 9), ['append 10..10']],
      [durable(10), ['answer 6 d10 c9 10:e1']],
    ],
    after: (s) => assert.equal([s.appliedSeq, s.commitSeq, s.durableSeq, s.syncing, [...s.dedup.keys()]], [9, 9, 10, false, ['x']]),
  },
  {
    name: 'a hold below the apply in flight is SLOT_TAKEN (that apply lands after it)',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1), ['append 1..1']],
      [durable(1), ['apply 1']],
      [hold(2, 0), ['refuse 2 SLOT_TAKEN']],
      [hold(3, 1), ['set hold 5000']],
      [applied(1), ['answer 1 {"seq":1}', 'clear hold', 'answer 3 {"heldSeq":1}']],
    ],
  },
  {
    name: 'a backup behind what memory holds is reported once, not fed',
    init: { appliedSeq: 5, logLastSeq: 5 },
    script: [
      [membership(THREE), ['role primary e1', 'send n2 #1 e1 c5 -', 'send n3 #2 e1 c5 -']],
      [acked('n3', 2, 5, 5), []],
      [acked('n2', 1, 2, 2), ['stranded n2 3']],
      [submit(7, 6), ['append 6..6', 'send n3 #3 e1 c5 6..6']],
    ],
  },

  // ---- apply, dedup, hold ----
  {
    name: 'a retried request ID gets the first answer in its new slot and is not applied again',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1, { reqId: 'x' }), ['append 1..1']],
      [submit(2, 2, { reqId: 'x' }), []],
      [durable(1), ['apply 1', 'append 2..2']],
      [applied(1, { errno: 'ENOENT' }), ['answer 1 {"seq":1,"errno":"ENOENT"}']],
      [durable(2), ['answer 2 {"seq":2,"errno":"ENOENT"}']],
    ],
    after: (s) => assert.is(s.appliedSeq, 2),
  },
  {
    name: 'the request-ID table forgets its oldest entry past dedupEntriesMax',
    init: { config: { ...CONFIG, dedupEntriesMax: 1 } },
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1, { reqId: 'a' }), ['append 1..1']],
      [durable(1), ['apply 1']],
      [applied(1), ['answer 1 {"seq":1}']],
      [submit(2, 2, { reqId: 'b' }), ['append 2..2']],
      [durable(2), ['apply 2']],
      [applied(2), ['answer 2 {"seq":2}']],
      [submit(3, 3, { reqId: 'a' }), ['append 3..3']],
      [durable(3), ['apply 3']],
    ],
    after: (s) => assert.equal([...s.dedup.keys()], ['b']),
  },
  {
    name: 'a hold applies up to its sequence ID and stops there until release',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(1, 1), ['append 1..1']],
      [submit(2, 2), []],
      [hold(9, 1), ['set hold 5000']],
      [hold(10, 1), ['refuse 10 UNAVAILABLE']],
      [durable(1), ['apply 1', 'append 2..2']],
      [applied(1), ['answer 1 {"seq":1}', 'clear hold', 'answer 9 {"heldSeq":1}']],
      [durable(2), []],
      [{ type: 'release' }, ['apply 2']],
      [hold(11, 0), ['refuse 11 SLOT_TAKEN']],
    ],
  },
  {
    name: 'a hold already reached answers at once; one that times out lets apply go on',
    script: [
      [membership(ALONE), ['role primary e1']],
      [hold(1, 0), ['answer 1 {"heldSeq":0}']],
      [{ type: 'release' }, []],
      [hold(2, 1), ['set hole 1000', 'set hold 5000']],
      [timer('hold'), ['refuse 2 BARRIER_TIMEOUT']],
      [timer('hold'), []],
    ],
    after: (s) => assert.is(s.hold, null),
  },

  // ---- recovery and shutdown ----
  {
    name: 'recovered entries wait for the commit point, then apply in order',
    init: { appliedSeq: 2, logLastSeq: 4, recovered: [entry(3), entry(4)] },
    script: [[membership(ALONE), ['role primary e1', 'apply 3']], [applied(3), ['apply 4']], [submit(1, 4), ['refuse 1 SLOT_TAKEN']]],
  },
  {
    name: 'a known commit point from recovery applies as soon as the node has a role',
    init: { appliedSeq: 0, commitSeq: 1, logLastSeq: 2, recovered: [entry(1), entry(2)] },
    script: [[membership(AS_BACKUP), ['role backup e1', 'apply 1']], [applied(1), []]],
  },
  {
    name: 'close refuses everything waiting and anything that comes after',
    script: [
      ...PRIMARY_READY,
      [submit(1, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n2', 3, 'UNAVAILABLE'), ['set peer:n2 200']],
      [read(2, 1), ['set barrier:2 3000']],
      [{ type: 'close' }, ['clear peer:n2', 'refuse 1 UNAVAILABLE', 'clear barrier:2', 'refuse 2 UNAVAILABLE']],
      [submit(3, 2), ['refuse 3 UNAVAILABLE']],
      [durable(1), []],
    ],
  },

  // ---- failover: a new primary, an old primary's tail ----
  {
    name: "a new primary finds where each peer's log agrees with its own, and cuts an old primary's tail",
    // n1's log: 1..2 sequenced in epoch 1, 3 in epoch 2 (its own, as the new primary).
    init: { epoch: 2, logLastSeq: 3, recovered: [entry(1), entry(2), entry(3, 'r3', 10, 2)], epochRuns: [{ from: 1, epoch: 1 }, { from: 3, epoch: 2 }] },
    script: [
      [membership(THREE, 2), ['role primary e2', 'send n2 #1 e2 c0 -', 'send n3 #2 e2 c0 -']],
      // n2 was the old primary: 2..4 from epoch 1, of which 3..4 this log never saw.
      [acked('n2', 1, 4, 1, [{ from: 2, epoch: 1 }]), ['send n2 #3 e2 c0 cut2 3..3']],
      // n2's batch #3 is in flight and will carry on from its answer: no notice beside it.
      [acked('n3', 2, 3, 0, [{ from: 1, epoch: 1 }, { from: 3, epoch: 2 }]), ['apply 1', 'send n3 #4 e2 c2 -']],
      [acked('n2', 3, 3, 2), ['send n2 #5 e2 c3 -']],
    ],
    after: (s) => assert.equal([s.peers.get('n2')!.ackedSeq, s.peers.get('n2')!.truncateAfter, s.commitSeq], [3, null, 3]),
  },
  {
    name: 'a peer that knows of ops committed past this log is left alone, not overwritten',
    script: [
      [membership(THREE), ['role primary e1', 'send n2 #1 e1 c0 -', 'send n3 #2 e1 c0 -']],
      [acked('n2', 1, 5, 4), ['ahead n2 c4', 'set peer:n2 1000']],
    ],
  },
  {
    name: "an old primary's uncommitted tail is never applied; it is cut when the new primary says, then fed",
    init: { appliedSeq: 1, logLastSeq: 3, recovered: [entry(2), entry(3)] },
    script: [
      [membership(AS_BACKUP, 2), ['role backup e2']],
      // The new primary says 3 is committed, but this log's 3 may not be its 3.
      [replicate(1, [], 3, 2), ['answer 1 d3 c1 2:e1']],
      [replicate(2, [3], 3, 2, { 3: 'x3' }, { truncateAfter: 2, prefixSeq: 2, entryEpoch: 2 }), ['truncate 2']],
      [replicate(3, [4], 3, 2, {}, { entryEpoch: 2 }), []], // appends wait for the cut
      [{ type: 'truncated', seq: 2 }, ['append 3..4']],
      [durable(4), ['apply 2', 'answer 2 d4 c3 4:e2', 'answer 3 d4 c3 4:e2']],
      // A cut below what the log agrees on with the primary (so below the commit point)
      // cuts nothing.
      [replicate(4, [], 3, 2, {}, { truncateAfter: 0 }), ['answer 4 d4 c3 4:e2']],
    ],
    after: (s) => assert.equal([s.entries.get(3)!.header.reqId, s.matchedSeq, s.durableSeq], ['x3', 4, 4]),
  },
  {
    name: 'a cut asked for again after its answer was lost cuts nothing the primary has since vouched for',
    // Found by the simulation (seed 5270): the backup made the cut, appended, and learned
    // the commit point past the cut; the answer was lost, and every retry of the cut was
    // refused (below the commit point), so the backup was never fed again.
    init: { appliedSeq: 1, logLastSeq: 3, recovered: [entry(2), entry(3)] },
    script: [
      [membership(AS_BACKUP, 2), ['role backup e2']],
      [replicate(1, [3], 3, 2, { 3: 'x3' }, { truncateAfter: 2, prefixSeq: 2, entryEpoch: 2 }), ['truncate 2']],
      [{ type: 'truncated', seq: 2 }, ['append 3..3']],
      [durable(3), ['apply 2', 'answer 1 d3 c3']],
      [applied(2), ['apply 3']],
      [applied(3), []],
      [replicate(2, [3, 4], 3, 2, { 3: 'x3' }, { truncateAfter: 2, prefixSeq: 2, entryEpoch: 2 }), ['append 4..4']],
      [durable(4), ['answer 2 d4 c3 4:e2']],
    ],
  },
  {
    name: 'a delayed copy of a cut cuts nothing the backup took from the primary since',
    // Same epoch, so it is not refused; cutting after 2 again would drop 4, which the
    // backup acknowledged and the primary may count for commit.
    init: { appliedSeq: 1, logLastSeq: 3, recovered: [entry(2), entry(3)] },
    script: [
      [membership(AS_BACKUP, 2), ['role backup e2']],
      [replicate(1, [3], 1, 2, { 3: 'x3' }, { truncateAfter: 2, prefixSeq: 2, entryEpoch: 2 }), ['truncate 2']],
      [{ type: 'truncated', seq: 2 }, ['append 3..3']],
      [durable(3), ['answer 1 d3 c1 2:e1 3:e2']],
      [replicate(2, [4], 1, 2, {}, { prefixSeq: 3, entryEpoch: 2 }), ['append 4..4']],
      [durable(4), ['answer 2 d4 c1 2:e1 3:e2']],
      [replicate(3, [3], 1, 2, { 3: 'x3' }, { truncateAfter: 2, prefixSeq: 2, entryEpoch: 2 }), ['answer 3 d4 c1 2:e1 3:e2']],
    ],
    after: (s) => assert.equal([s.durableSeq, s.orderedSeq], [4, 4]),
  },
  {
    name: 'a cut waits for the append in flight; an entry that differs where the logs agree is a broken invariant',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1, 2]), ['append 1..2']],
      [membership(AS_BACKUP, 2), []],
      [replicate(2, [2], 0, 2, {}, { truncateAfter: 1, entryEpoch: 2 }), ['refuse 2 UNAVAILABLE']],
      // Past what the logs are known to agree on, another op in a slot: ask afresh.
      [replicate(3, [2], 0, 2, { 2: 'other' }, { prefixSeq: 1, entryEpoch: 2 }), ['refuse 3 GAP']],
      [replicate(4, [1], 0, 2, { 1: 'other' }, { prefixSeq: 1, entryEpoch: 2 }), { throws: /differs from the primary's/ }],
    ],
  },
  {
    name: 'a node that restarted is primary only in a later epoch than the one it restarted in',
    init: { fencedEpoch: 1 },
    script: [
      [membership(ALONE), []],
      [submit(1, 1), ['refuse 1 NOT_PRIMARY']],
      [membership(ALONE, 2), ['role primary e2']],
      [submit(2, 1, { epoch: 2 }), ['append 1..1']],
    ],
    after: (s) => assert.equal([s.primaryFenced, s.role], [false, 'primary']),
  },

  // ---- a driver's mistakes ----
  {
    name: 'a driver that reports what the core never asked for trips an assertion',
    script: [
      [membership(ALONE), ['role primary e1']],
      [durable(1), { throws: /does not end the append in flight/ }],
      [applied(1), { throws: /is not the apply in flight/ }],
      [timer('bogus' as 'hole'), { throws: /unknown timer/ }],
    ],
  },

  // ---- want of space (docs/space.md) ----
  {
    name: 'a primary low on space refuses a write with NO_SPACE and fills its slot with a no-op; an unlink goes on',
    script: [
      [membership(ALONE), ['role primary e1']],
      [space('low'), []],
      [submit(7, 1), ['refuse 7 NO_SPACE', 'append 1..1']],
      [submitOp(8, 2, { type: 'unlink', path: '/f' }), []],
      [durable(1), ['apply 1', 'append 2..2']],
      [applied(1), []],
      [durable(2), ['apply 2']],
      [applied(2), ['answer 8 {"seq":2}']],
      [space('ok'), []],
      [submit(9, 3), ['append 3..3']],
    ],
    after: (s) => assert.equal(s.entries.size, 1),
  },
  {
    name: 'low on space, fallocate punching a hole goes on; one allocating is refused',
    script: [
      [membership(ALONE), ['role primary e1']],
      [space('low'), []],
      [submitOp(7, 1, { type: 'fallocate', path: '/f', mode: 0x03, offset: 0, size: 4096 }), ['append 1..1']],
      [submitOp(8, 2, { type: 'fallocate', path: '/f', mode: 0, offset: 0, size: 4096 }), ['refuse 8 NO_SPACE']],
    ],
  },
  {
    name: 'the no-op that fills a refused slot is a no-op on every node: it is what is replicated',
    script: [
      ...PRIMARY_READY,
      [space('low'), []],
      [submit(7, 1), ['refuse 7 NO_SPACE', 'append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
    ],
    after: (s) => assert.equal(s.entries.get(1)!.header.op, { type: 'noop' }),
  },
  {
    name: 'a backup whose append finds no room forgets what it had not logged, refuses the batch, and takes none until space is back',
    script: [
      [membership(AS_BACKUP), ['role backup e1']],
      [replicate(1, [1, 2]), ['append 1..2']],
      [logFailed(2), ['refuse 1 NO_SPACE']],
      [replicate(2, [1, 2]), ['refuse 2 NO_SPACE']],
      // A notice (no entries) is still answered: the node is reachable and says where it is.
      [replicate(3, [], 0, 1, {}, { prefixSeq: 0 }), ['answer 3 d0 c0']],
      [space('low'), []],
      [replicate(4, [1, 2]), ['append 1..2']],
      [durable(2), ['answer 4 d2 c0 1:e1']],
    ],
    after: (s) => assert.equal([s.orderedSeq, s.durableSeq, s.space], [2, 2, 'low']),
  },
  {
    name: 'a primary whose append finds no room keeps what it ordered and appends it again once there is room',
    script: [
      [membership(ALONE), ['role primary e1']],
      [submit(7, 1), ['append 1..1']],
      [logFailed(1), []],
      [submit(8, 2), ['refuse 8 NO_SPACE']],
      [submitOp(9, 3, { type: 'rmdir', path: '/d' }), []],
      [space('low'), ['append 1..3']],
      [durable(3), ['apply 1']],
      [applied(1), ['answer 7 {"seq":1}', 'apply 2']],
      [applied(2), ['apply 3']],
      [applied(3), ['answer 9 {"seq":3}']],
    ],
    after: (s) => assert.equal(s.entries.get(2), undefined),
  },
  {
    name: 'a backup out of room is asked again later, not at once',
    script: [
      ...PRIMARY_READY,
      [submit(7, 1), ['append 1..1', 'send n2 #3 e1 c0 1..1', 'send n3 #4 e1 c0 1..1']],
      [failed('n3', 4, 'NO_SPACE'), ['set peer:n3 1000']],
      [timer('peer:n3'), ['send n3 #5 e1 c0 1..1']],
    ],
  },
  {
    name: 'logFailed must name the append in flight',
    script: [
      [membership(ALONE), ['role primary e1']],
      [logFailed(1), { throws: /does not end the append in flight/ }],
    ],
  },
];

for (const c of CASES) test(c.name, () => run(c));

test('a recovered log must continue the applied state and reach the log end', () => {
  assert.throws(() => init({ appliedSeq: 1, logLastSeq: 3, recovered: [entry(3)] }), /does not continue/);
  assert.throws(() => init({ appliedSeq: 0, logLastSeq: 3, recovered: [entry(1), entry(2)] }), /do not reach the end/);
  assert.throws(() => init({ appliedSeq: 0, commitSeq: 4, logLastSeq: 3, recovered: [entry(1), entry(2), entry(3)] }), /outside applied/);
  assert.is(init({ appliedSeq: 7, logLastSeq: 3 }).durableSeq, 7);
});

test('an impossible configuration is refused at start-up', () => {
  assert.throws(() => init({ config: { ...CONFIG, pendingOpsMax: 0 } }), /pendingOpsMax/);
  assert.throws(() => init({ config: { ...CONFIG, holeTimeoutMs: -1 } }), /holeTimeoutMs/);
  assert.throws(() => init({ config: { ...CONFIG, peerRetryMs: 1.5 } }), /peerRetryMs/);
});

test('the same script gives the same effects every time (no hidden clock or randomness)', () => {
  const once = () => {
    const s = init();
    return [membership(THREE), acked('n2', 1, 0), acked('n3', 2, 0), submit(1, 2), submit(2, 1), timer('hole'), durable(2)].flatMap((e) => step(s, e).effects.map(show));
  };
  assert.equal(once(), once());
});

test.run();
