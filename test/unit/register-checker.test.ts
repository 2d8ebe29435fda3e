/*
 * The register checker (test/helpers/register-checker.ts) on known-good and known-bad
 * histories: each bad kind is caught, and good histories with overlapping and failed
 * operations pass.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkRegisters, type RegisterOp } from '../helpers/register-checker';

const w = (value: string, invokeMs: number, completeMs: number | null, ok = true): RegisterOp => ({ kind: 'write', register: 'r', value, invokeMs, completeMs, ok });
const r = (value: string, invokeMs: number, completeMs: number): RegisterOp => ({ kind: 'read', register: 'r', value, invokeMs, completeMs, ok: true });
const finals = (v: string) => new Map([['r', v]]);

test('a sequential history passes', () => {
  const c = checkRegisters([w('a', 0, 10), r('a', 11, 12), w('b', 13, 20), r('b', 21, 22)], finals('b'));
  assert.equal(c.problems, []);
  assert.is(c.writesAcked, 2);
});

test('a read overlapping a write may return either value', () => {
  const c = checkRegisters([w('a', 0, 10), w('b', 20, 30), r('a', 25, 26), r('b', 27, 28)], finals('b'));
  assert.equal(c.problems, []);
});

test('a failed write may take effect late, or never', () => {
  assert.equal(checkRegisters([w('a', 0, 10), w('b', 20, 30, false), r('b', 100, 101)], finals('b')).problems, []);
  assert.equal(checkRegisters([w('a', 0, 10), w('b', 20, 30, false), r('a', 100, 101)], finals('a')).problems, []);
});

test('a stale read is caught: a write acknowledged before the read began, and missed', () => {
  const c = checkRegisters([w('a', 0, 10), w('b', 20, 30), r('a', 31, 32)], finals('b'));
  assert.is(c.staleReads, 1);
  assert.equal(c.nonLinearizable, ['r']);
});

test('a read from the future is caught', () => {
  const c = checkRegisters([w('a', 0, 10), r('b', 11, 12), w('b', 20, 30)], finals('b'));
  assert.is(c.futureReads, 1);
});

test('a value never written is caught', () => {
  assert.is(checkRegisters([w('a', 0, 10), r('zz', 11, 12)], finals('a')).unknownValues, 1);
});

test('a new/old inversion between two reads is caught, though each alone could be right', () => {
  // The write of b overlaps both reads; the first returns b, the later one a.
  const c = checkRegisters([w('a', 0, 10), w('b', 20, 100), r('b', 30, 40), r('a', 50, 60)], finals('b'));
  assert.is(c.inversions, 1);
  assert.is(c.staleReads, 0);
  assert.equal(c.nonLinearizable, ['r']);
});

test('an acknowledged write lost after healing is caught', () => {
  const c = checkRegisters([w('a', 0, 10), w('b', 20, 30), w('c', 40, 50)], finals('a'));
  assert.is(c.lostWrites, 2);
});

test('a register may start with a value of its own (an earlier history\'s last)', () => {
  const c = checkRegisters([r('old', 0, 1), w('a', 2, 10), r('a', 11, 12)], finals('a'), new Map([['r', 'old']]));
  assert.equal(c.problems, []);
  assert.is(checkRegisters([w('a', 2, 10), r('old', 11, 12)], finals('a'), new Map([['r', 'old']])).staleReads, 1);
});

test.run();
