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

/*
 * CRC-32 arithmetic (the polynomial zlib uses), so that a relay can put a new header on a
 * frame's data without another pass over the data: crc(A ‖ B) = A's CRC multiplied by x to
 * the 8·|B| modulo the polynomial, xor crc(B) (zlib's crc32_combine, done here because
 * Node does not expose it). A proxy checks a client's frame once, with the data's own CRC
 * computed separately, and reuses that CRC for the frame it sends on (decodeRelayFrame).
 */
const CRC_POLY = 0xedb88320;

/** a(x)·b(x) modulo the CRC polynomial, both reflected as zlib keeps them. */
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ CRC_POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^(2^k) modulo the polynomial, for k < 32. */
const X2N: number[] = (() => {
  const table = [0x40000000]; // x^1
  for (let k = 1; k < 32; k++) table.push(multModP(table[k - 1]!, table[k - 1]!));
  return table;
})();

/** x^(n·2^k) modulo the polynomial. */
function x2nModP(n: number, k: number): number {
  let p = 0x80000000; // x^0
  while (n > 0) {
    if (n & 1) p = multModP(X2N[k & 31]!, p);
    n = Math.floor(n / 2);
    k++;
  }
  return p;
}

/** The CRC-32 of A ‖ B from A's and B's own, and B's length in bytes. */
export function crc32Combine(crcA: number, crcB: number, bytesB: number): number {
  return (multModP(x2nModP(bytesB, 3), crcA) ^ crcB) >>> 0;
}

export interface Frame<H = unknown> {
  header: H;
  data: Buffer;
  /** Decoded frames: the frame's bytes as received (a view, its checksum verified), so a
   * node can log and forward what it was sent without encoding it again. */
  encoded?: Buffer;
}

export function encodeFrame(header: unknown, data: Buffer = Buffer.alloc(0)): Buffer {
  const [head, body] = encodeFrameParts(header, data);
  return body.length === 0 ? head : Buffer.concat([head, body], head.length + body.length);
}

/** Data below this size is sent in one buffer with its frame's header: copying it costs
 * less than a second write (pieces of a body may leave as separate packets). */
export const FRAME_PIECES_BYTES_MIN = 64 * 1024;

/**
 * A frame as two pieces, its prefix and header, then its data as given: for a body sent
 * as a list of pieces, so that a write's MiB is not copied once more only to be written
 * to a socket (a copy that also costs a MiB outside V8's heap: common/node-runtime.ts).
 */
export function encodeFrameParts(header: unknown, data: Buffer = Buffer.alloc(0), dataCrc?: number): [Buffer, Buffer] {
  const head = encodeHead(header, data.length, (headerBuf) => (dataCrc === undefined ? frameChecksum(headerBuf, data) : crc32Combine(crc32(headerBuf), dataCrc, data.length)));
  return [head, data];
}

/** A frame's prefix and header, for `dataBytes` of data; `checksum` is given the header. */
function encodeHead(header: unknown, dataBytes: number, checksum: (headerBuf: Buffer) => number): Buffer {
  const json = JSON.stringify(header);
  const headerBytes = Buffer.byteLength(json);
  const head = Buffer.allocUnsafe(FRAME_PREFIX_BYTES + headerBytes);
  head.write(json, FRAME_PREFIX_BYTES, 'utf8');
  head.writeUInt32BE(headerBytes, 0);
  head.writeUInt32BE(dataBytes, 4);
  head.writeUInt32BE(checksum(head.subarray(FRAME_PREFIX_BYTES)), 8);
  return head;
}

/** A frame a relay received, its data left in the pieces it arrived in (decodeRelayFrame). */
export interface RelayFrame {
  header: unknown;
  /** The data, as views into the pieces received, in order. */
  data: Buffer[];
  dataBytes: number;
  /** The CRC-32 of the data alone. */
  dataCrc: number;
}

/**
 * Decodes a request body that must hold exactly one frame, given in the pieces it arrived
 * in, refusing what decodeOneFrame refuses, and gives the CRC-32 of its data alone, for a
 * relay that sends the data on under another header (encodeRelayedFrame): the data is
 * read once, not twice, and the frame is checked all the same, against crc(header)
 * combined with crc(data). Only the prefix and header are gathered into one buffer when
 * they span pieces; the data stays where it is, so a relay copies none of it (the proxy:
 * a MiB per MiB written).
 */
export function decodeRelayFrame(pieces: readonly Buffer[]): RelayFrame {
  let size = 0;
  for (const p of pieces) size += p.length;
  if (size < FRAME_PREFIX_BYTES) throw new DfsError('BAD_REQUEST', 'truncated frame');
  const prefix = gather(pieces, 0, FRAME_PREFIX_BYTES);
  const headerBytes = prefix.readUInt32BE(0);
  const dataBytes = prefix.readUInt32BE(4);
  const crc = prefix.readUInt32BE(8);
  if (headerBytes > FRAME_HEADER_BYTES_MAX || dataBytes > WRITE_BYTES_MAX) throw new DfsError('BAD_REQUEST', 'bad frame: frame lengths over limits');
  const total = FRAME_PREFIX_BYTES + headerBytes + dataBytes;
  if (size < total) throw new DfsError('BAD_REQUEST', 'truncated frame');
  if (size > total) throw new DfsError('BAD_REQUEST', 'trailing bytes after frame');
  const headerBuf = gather(pieces, FRAME_PREFIX_BYTES, headerBytes);
  const data = views(pieces, FRAME_PREFIX_BYTES + headerBytes, dataBytes);
  // crc32 of an empty buffer is left out (see frameChecksum); the running value carries on.
  let dataCrc = 0;
  for (const d of data) if (d.length > 0) dataCrc = crc32(d, dataCrc);
  if (crc32Combine(crc32(headerBuf), dataCrc, dataBytes) !== crc) throw new DfsError('BAD_REQUEST', 'bad frame: checksum mismatch');
  let header: unknown;
  try {
    header = JSON.parse(headerBuf.toString('utf8'));
  } catch {
    throw new DfsError('BAD_REQUEST', 'bad frame: header is not JSON');
  }
  return { header, data, dataBytes, dataCrc };
}

/** The frame a relay sends on: `header` with a received frame's data (its checksum from
 * the data's CRC, without another pass over it), as pieces to write one after another. Data
 * below FRAME_PIECES_BYTES_MIN is copied in with the header, so that the frame leaves in
 * one write. */
export function encodeRelayedFrame(header: unknown, frame: RelayFrame): Buffer[] {
  const head = encodeHead(header, frame.dataBytes, (headerBuf) => crc32Combine(crc32(headerBuf), frame.dataCrc, frame.dataBytes));
  return frame.dataBytes >= FRAME_PIECES_BYTES_MIN ? [head, ...frame.data] : [Buffer.concat([head, ...frame.data])];
}

/** Bytes [offset, offset + n) of the pieces as one buffer: a view when one piece holds
 * them, else a copy. */
function gather(pieces: readonly Buffer[], offset: number, n: number): Buffer {
  const parts = views(pieces, offset, n);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
}

/** Bytes [offset, offset + n) of the pieces, as views into them (none for n = 0). */
function views(pieces: readonly Buffer[], offset: number, n: number): Buffer[] {
  const out: Buffer[] = [];
  let at = 0; // where the current piece starts
  for (const p of pieces) {
    if (n === 0) break;
    const end = at + p.length;
    if (end > offset) {
      const from = offset - at;
      const take = Math.min(p.length - from, n);
      out.push(p.subarray(from, from + take));
      offset += take;
      n -= take;
    }
    at = end;
  }
  return out;
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
  return { frame: { header, data, encoded: buf.subarray(offset, offset + total) }, bytes: total };
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

/**
 * Frames back to back from a stream that arrives in pieces of any size (a response body
 * read chunk by chunk). A frame is decoded once all of its bytes are in, so what is held
 * is at most one frame (FRAME_HEADER_BYTES_MAX + WRITE_BYTES_MAX and its prefix) beside the
 * last piece pushed: a frame that claims more is refused from its prefix alone, before its
 * bytes are waited for.
 */
export class FrameStreamDecoder {
  private parts: Buffer[] = [];
  private bytes = 0;

  /** The frames that the bytes pushed so far complete, in order. */
  push(chunk: Buffer): Frame[] {
    if (chunk.length > 0) {
      this.parts.push(chunk);
      this.bytes += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.bytes >= FRAME_PREFIX_BYTES) {
      const prefix = this.peek(FRAME_PREFIX_BYTES);
      const headerBytes = prefix.readUInt32BE(0);
      const dataBytes = prefix.readUInt32BE(4);
      if (headerBytes > FRAME_HEADER_BYTES_MAX || dataBytes > WRITE_BYTES_MAX) {
        throw new DfsError('BAD_REQUEST', `bad frame in stream: a ${headerBytes}-byte header and ${dataBytes} bytes of data are over the limits`);
      }
      const total = FRAME_PREFIX_BYTES + headerBytes + dataBytes;
      if (this.bytes < total) break;
      const r = decodeFrameAt(this.take(total), 0);
      // All `total` bytes are there, so the frame cannot be incomplete.
      if (!('frame' in r)) throw new DfsError('BAD_REQUEST', `bad frame in stream: ${'corrupt' in r ? r.corrupt : 'incomplete'}`);
      frames.push(r.frame);
    }
    return frames;
  }

  /** The stream ended: anything left over is a frame cut short. */
  end(): void {
    if (this.bytes > 0) throw new DfsError('BAD_REQUEST', `truncated frame at the end of the stream (${this.bytes} bytes left over)`);
  }

  /** The first `n` buffered bytes, without consuming them (n <= this.bytes). */
  private peek(n: number): Buffer {
    const first = this.parts[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const out = Buffer.allocUnsafe(n);
    let at = 0;
    for (let i = 0; at < n; i++) at += this.parts[i]!.copy(out, at, 0, n - at);
    return out;
  }

  /** Consumes the first `n` buffered bytes (n <= this.bytes), copying only when they span
   * pieces, and then only those pieces. */
  private take(n: number): Buffer {
    let whole = 0; // pieces consumed entirely
    let at = 0;
    while (at + this.parts[whole]!.length <= n) {
      at += this.parts[whole]!.length;
      whole++;
      if (at === n) break;
    }
    const taken = this.parts.splice(0, whole);
    if (at < n) {
      const first = this.parts[0]!;
      taken.push(first.subarray(0, n - at));
      this.parts[0] = first.subarray(n - at);
    }
    this.bytes -= n;
    return taken.length === 1 ? taken[0]! : Buffer.concat(taken, n);
  }
}
