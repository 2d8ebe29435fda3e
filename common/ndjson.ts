/*
 * Newline-delimited JSON (one JSON value a line, RFC 8259 text with no raw newlines, as
 * JSON.stringify writes it): the answers that report progress before their result, `POST
 * /v1/verify?progress=1` from a proxy and `POST /node/v1/manifest?progress=1` from a node.
 */
import { DfsError } from './errors';

/** The JSON values of a body of NDJSON, in order. A line over `lineBytesMax` is refused
 * (BAD_REQUEST) rather than held; a last line without its newline counts. */
export async function* ndjsonValues(body: AsyncIterable<Uint8Array>, lineBytesMax: number): AsyncGenerator<unknown> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  const parse = (line: Buffer): unknown => {
    try {
      return JSON.parse(line.toString('utf8'));
    } catch {
      throw new DfsError('BAD_REQUEST', `a line of the answer is not JSON: ${JSON.stringify(line.subarray(0, 80).toString('utf8'))}`);
    }
  };
  for await (const piece of body) {
    let chunk = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    for (let nl = chunk.indexOf(10); nl >= 0; nl = chunk.indexOf(10)) {
      const line = pending.length === 0 ? chunk.subarray(0, nl) : Buffer.concat([...pending, chunk.subarray(0, nl)]);
      pending = [];
      pendingBytes = 0;
      chunk = chunk.subarray(nl + 1);
      if (line.length > lineBytesMax) throw new DfsError('BAD_REQUEST', `a line of the answer is over ${lineBytesMax} bytes`);
      if (line.length > 0) yield parse(line);
    }
    if (chunk.length > 0) {
      pendingBytes += chunk.length;
      if (pendingBytes > lineBytesMax) throw new DfsError('BAD_REQUEST', `a line of the answer is over ${lineBytesMax} bytes`);
      // Copied: the body's buffer may be reused once this piece is consumed.
      pending.push(Buffer.from(chunk));
    }
  }
  if (pending.length > 0) yield parse(Buffer.concat(pending));
}
