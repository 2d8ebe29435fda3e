/*
 * The frame: one JSON header and an optional binary payload, checksummed.
 *
 *   u32be headerBytes | u32be dataBytes | u32be crc32(header ‖ data) | header (UTF-8 JSON) | data
 *
 * The same encoding carries a client's op to the proxy, a sequenced op to the primary, a
 * batch of ops to a backup (frames back to back) and a record in the write-ahead log, so a
 * record is checked once with the same code wherever it is read (STYLE.md: assert on both
 * sides of the disk). A write's bytes are never base64-encoded into JSON.
 */
import { crc32 } from 'node:zlib';
import { DfsError } from './errors';
import { FRAME_HEADER_BYTES_MAX, WRITE_BYTES_MAX } from './limits';

export const FRAME_PREFIX_BYTES = 12;

/** crc32 of header ‖ data. Node 20's zlib.crc32 returns 0, not the running value, for an
 * empty buffer without a backing store (crypto.randomBytes(0) is one), so an empty
 * payload is left out of the computation rather than passed in. */
function frameChecksum(header: Buffer, data: Buffer): number {
  const h = crc32(header);
  return data.length === 0 ? h : crc32(data, h);
}

export interface Frame<H = unknown> {
  header: H;
  data: Buffer;
}

export function encodeFrame(header: unknown, data: Buffer = Buffer.alloc(0)): Buffer {
  const headerBuf = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.allocUnsafe(FRAME_PREFIX_BYTES);
  prefix.writeUInt32BE(headerBuf.length, 0);
  prefix.writeUInt32BE(data.length, 4);
  prefix.writeUInt32BE(frameChecksum(headerBuf, data), 8);
  return Buffer.concat([prefix, headerBuf, data]);
}

export type DecodeResult = { frame: Frame; bytes: number } | { incomplete: true } | { corrupt: string };

/** Decodes one frame at `offset`. A torn tail (fewer bytes than the frame claims) is
 * `incomplete`, a checksum or length mismatch is `corrupt`: a log reader treats the first
 * as the end of the log and the second as damage. */
export function decodeFrameAt(buf: Buffer, offset = 0): DecodeResult {
  if (buf.length - offset < FRAME_PREFIX_BYTES) return { incomplete: true };
  const headerBytes = buf.readUInt32BE(offset);
  const dataBytes = buf.readUInt32BE(offset + 4);
  const crc = buf.readUInt32BE(offset + 8);
  if (headerBytes > FRAME_HEADER_BYTES_MAX || dataBytes > WRITE_BYTES_MAX) return { corrupt: 'frame lengths over limits' };
  const total = FRAME_PREFIX_BYTES + headerBytes + dataBytes;
  if (buf.length - offset < total) return { incomplete: true };
  const headerBuf = buf.subarray(offset + FRAME_PREFIX_BYTES, offset + FRAME_PREFIX_BYTES + headerBytes);
  const data = buf.subarray(offset + FRAME_PREFIX_BYTES + headerBytes, offset + total);
  if (frameChecksum(headerBuf, data) !== crc) return { corrupt: 'checksum mismatch' };
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch {
    return { corrupt: 'header is not JSON' };
  }
  return { frame: { header, data }, bytes: total };
}

/** Decodes a request body that must hold exactly one frame. */
export function decodeOneFrame(buf: Buffer): Frame {
  const r = decodeFrameAt(buf, 0);
  if ('incomplete' in r) throw new DfsError('BAD_REQUEST', 'truncated frame');
  if ('corrupt' in r) throw new DfsError('BAD_REQUEST', `bad frame: ${r.corrupt}`);
  if (r.bytes !== buf.length) throw new DfsError('BAD_REQUEST', 'trailing bytes after frame');
  return r.frame;
}

/** Decodes a request body of frames back to back. */
export function decodeFrames(buf: Buffer): Frame[] {
  const frames: Frame[] = [];
  let offset = 0;
  while (offset < buf.length) {
    const r = decodeFrameAt(buf, offset);
    if ('incomplete' in r) throw new DfsError('BAD_REQUEST', 'truncated frame in batch');
    if ('corrupt' in r) throw new DfsError('BAD_REQUEST', `bad frame in batch: ${r.corrupt}`);
    frames.push(r.frame);
    offset += r.bytes;
  }
  return frames;
}
