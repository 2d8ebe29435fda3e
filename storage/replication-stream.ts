/*
 * Replication batches as messages on one stream per backup (common/message-stream.ts says
 * how messages travel and why; docs/api.md, Node API). A batch message's payload:
 *
 *   f64 epoch | f64 commit | f64 prefix | f64 truncate | op frames back to back
 *
 * (big-endian; prefix and truncate are -1 when absent; the fields mean what the query of
 * the per-request form meant). The answer is the ack `{ durableSeq, commitSeq, tail }` or
 * an error body.
 */
import { DfsError } from '../common/errors';
import { REPLICATE_BODY_BYTES_MAX } from '../common/limits';
import type { ReplicateRequest } from './replica-core';

export const REPLICATE_STREAM_PATH = '/node/v1/replicate-stream';

const BATCH_HEAD_BYTES = 8 * 4;
/** A batch's payload: its frames within the per-request limit, and its head. */
export const BATCH_PAYLOAD_BYTES_MAX = REPLICATE_BODY_BYTES_MAX + BATCH_HEAD_BYTES;

/** A batch as it arrives: the fields and the frames, undecoded. */
export interface BatchMessage {
  epoch: number;
  commitSeq: number;
  prefixSeq: number;
  truncateAfter: number | null;
  frames: Buffer;
}

/** A batch's payload pieces (the frames are written as they are, not copied). */
export function encodeBatch(req: ReplicateRequest, frames: readonly Buffer[]): Buffer[] {
  const head = Buffer.allocUnsafe(BATCH_HEAD_BYTES);
  head.writeDoubleBE(req.epoch, 0);
  head.writeDoubleBE(req.commitSeq, 8);
  head.writeDoubleBE(req.prefixSeq < 0 ? -1 : req.prefixSeq, 16);
  head.writeDoubleBE(req.truncateAfter === null ? -1 : req.truncateAfter, 24);
  return [head, ...frames];
}

const isSeq = (v: number): boolean => Number.isSafeInteger(v) && v >= 0;

/** A batch payload's fields, checked; BAD_REQUEST for anything a primary never sends. */
export function decodeBatch(payload: Buffer): BatchMessage {
  if (payload.length < BATCH_HEAD_BYTES) throw new DfsError('BAD_REQUEST', `a batch of ${payload.length} bytes is shorter than its head`);
  const epoch = payload.readDoubleBE(0);
  const commitSeq = payload.readDoubleBE(8);
  const prefixSeq = payload.readDoubleBE(16);
  const truncate = payload.readDoubleBE(24);
  if (!isSeq(epoch) || !isSeq(commitSeq) || !(prefixSeq === -1 || isSeq(prefixSeq)) || !(truncate === -1 || isSeq(truncate))) {
    throw new DfsError('BAD_REQUEST', 'a batch names an epoch or sequence ID that is not a non-negative integer');
  }
  return { epoch, commitSeq, prefixSeq, truncateAfter: truncate < 0 ? null : truncate, frames: payload.subarray(BATCH_HEAD_BYTES) };
}
