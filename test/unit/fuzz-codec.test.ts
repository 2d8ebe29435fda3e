/*
 * Property-based fuzzing (fast-check) of what the network hands the cluster before any
 * route sees it: the frame codec and op validation. Random bytes, random JSON and mutated
 * valid frames and ops must decode or be refused with a DfsError of a 4xx status, never
 * throw anything else; valid frames must round-trip exactly, whatever pieces they arrive in.
 *
 * The runs are seeded: DFS_FUZZ_SEED=N replays a run, and a failing case prints its seed
 * and its shrunk counterexample (fast-check's report). DFS_FUZZ_RUNS scales every property.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { decodeFrames, decodeOneFrame, encodeFrame, FrameStreamDecoder, FRAME_PREFIX_BYTES } from '../../common/frame';
import { DfsError, httpStatusOf } from '../../common/errors';
import { parseClientOpHeader, parseSequencedOpHeader, validateOp } from '../../common/ops';
import { fuzzAssertSync, opLike } from '../helpers/fuzz-arbitraries';

const SEED = Number(process.env.DFS_FUZZ_SEED ?? Date.now() % 2 ** 31);
const SCALE = Number(process.env.DFS_FUZZ_RUNS_SCALE ?? 1);
const runs = (n: number) => Math.max(1, Math.round(n * SCALE));
process.stdout.write(`fuzz-codec seed ${SEED} (replay with DFS_FUZZ_SEED=${SEED})\n`);

let cases = 0;

/** Runs `fn`; anything it throws must be a DfsError that maps to a 4xx. */
function refusedOr4xx(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof DfsError)) throw new Error(`not a DfsError: ${(e as Error)?.stack ?? String(e)}`);
    const status = httpStatusOf(e);
    if (status < 400 || status > 499) throw new Error(`status ${status} for ${e.code}: ${e.message}`);
  }
}

function check<T>(arb: fc.Arbitrary<T>, numRuns: number, predicate: (v: T) => void): void {
  fuzzAssertSync(
    fc.property(arb, (v) => {
      cases++;
      predicate(v);
    }),
    { seed: SEED, numRuns: runs(numRuns) },
  );
}

const json = fc.jsonValue({ maxDepth: 4 });
const bytes = fc.uint8Array({ maxLength: 512 }).map((a) => Buffer.from(a));

/** A valid frame, then one mutation of it: a byte flipped, cut short, bytes added, a
 * length field rewritten. */
const mutatedFrame = fc
  .tuple(json, bytes, fc.nat(), fc.nat(), fc.integer({ min: 0, max: 4 }), fc.nat(0xffffffff))
  .map(([header, data, at, value, how, big]) => {
    const f = encodeFrame(header, data);
    const i = at % f.length;
    switch (how) {
      case 0:
        f[i] = (f[i]! ^ (1 + (value % 255))) & 0xff;
        return f;
      case 1:
        return f.subarray(0, i);
      case 2:
        return Buffer.concat([f, Buffer.alloc(1 + (value % 64), value & 0xff)]);
      case 3:
        f.writeUInt32BE(big, (value % 3) * 4);
        return f;
      default:
        return Buffer.concat([f, f.subarray(0, i)]);
    }
  });

test('the frame codec: random and mutated bytes decode or are refused with a 4xx, in one piece or many', () => {
  check(fc.oneof(bytes, mutatedFrame), 40_000, (buf) => {
    refusedOr4xx(() => decodeOneFrame(buf));
    refusedOr4xx(() => decodeFrames(buf));
    refusedOr4xx(() => {
      const d = new FrameStreamDecoder();
      for (let at = 0; at < buf.length; at += 7) d.push(buf.subarray(at, at + 7));
      d.end();
    });
  });
  // A prefix alone that claims too much is refused before its bytes are awaited.
  const claim = Buffer.alloc(FRAME_PREFIX_BYTES);
  claim.writeUInt32BE(0xffffffff, 0);
  assert.throws(() => new FrameStreamDecoder().push(claim), /over the limits/);
});

test('the frame codec: any JSON header and data round-trip exactly, however the stream is cut', () => {
  check(fc.tuple(json, bytes, fc.integer({ min: 1, max: 64 })), 20_000, ([header, data, piece]) => {
    const f = encodeFrame(header, data);
    const one = decodeOneFrame(f);
    assert.equal(one.header, JSON.parse(JSON.stringify(header)));
    assert.ok(one.data.equals(data));
    const d = new FrameStreamDecoder();
    const got = [];
    const twice = Buffer.concat([f, f]);
    for (let at = 0; at < twice.length; at += piece) got.push(...d.push(twice.subarray(at, at + piece)));
    d.end();
    assert.is(got.length, 2);
    assert.ok(got[1]!.data.equals(data));
  });
});

test('op validation: random JSON and op-shaped objects are accepted or refused with a 4xx, never more', () => {
  check(fc.tuple(fc.oneof(json, opLike), fc.nat(5_000_000), fc.string({ maxLength: 20 })), 50_000, ([op, dataBytes, reqId]) => {
    refusedOr4xx(() => {
      const h = parseClientOpHeader({ reqId, op });
      validateOp(h.op, dataBytes);
    });
    refusedOr4xx(() => {
      const h = parseSequencedOpHeader({ epoch: 1, seq: 1, reqId, timeMs: 0, op });
      validateOp(h.op, dataBytes);
    });
  });
});

test.after(() => {
  process.stdout.write(`fuzz-codec: ${cases} cases, seed ${SEED}\n`);
});

test.run();
