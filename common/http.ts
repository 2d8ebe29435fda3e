/*
 * The Hono edge shared by proxy and storage node: the one place where errors become HTTP
 * statuses, where request bodies are read under a limit, and where query parameters are
 * parsed. Authentication will hook in here too (DESIGN.md, Security).
 */
import type { Context, Hono } from 'hono';
import { DfsError, httpStatusOf } from './errors';
import { validatePath } from './paths';
import { queryValue } from './names';
import type { Logger } from './log';

export function installErrorHandler(app: Hono, logger: Logger): void {
  app.onError((err, c) => {
    if (err instanceof DfsError) {
      return c.json(err.toJSON(), httpStatusOf(err) as 400);
    }
    logger.error({ err, path: c.req.path }, 'unexpected error');
    return c.json({ code: 'INTERNAL', message: 'internal error' }, 500);
  });
  app.notFound((c) => c.json({ code: 'BAD_REQUEST', message: `no such endpoint: ${c.req.method} ${c.req.path}` }, 404));
}

/** Reads the whole body, refusing one over `bytesMax` with 413 before buffering it all.
 * It reads Node's request stream directly where the adapter exposes it (`c.env.incoming`):
 * the web-stream adapter costs a copy and several promise hops per chunk. */
export async function readBody(c: Context, bytesMax: number): Promise<Buffer> {
  const declared = Number(c.req.header('content-length') ?? NaN);
  if (declared > bytesMax) throw new DfsError('TOO_LARGE', `body of ${declared} bytes is over the limit of ${bytesMax}`);
  const incoming = (c.env as { incoming?: AsyncIterable<Buffer> } | undefined)?.incoming;
  const source = incoming ?? (c.req.raw.body as unknown as AsyncIterable<Uint8Array> | null);
  if (!source) return Buffer.alloc(0);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    size += chunk.length;
    if (size > bytesMax) throw new DfsError('TOO_LARGE', `body is over the limit of ${bytesMax} bytes`);
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}

/** A path from the query string, decoded as bytes (common/names.ts: a name need not be
 * UTF-8, so the usual decoding, which replaces what is not, would change it). */
export function queryPath(c: Context, name = 'path'): string {
  return validatePath(queryValue(c.req.url, name), name);
}

export function queryInt(c: Context, name: string, min: number, max: number, dflt?: number): number {
  const raw = c.req.query(name);
  if (raw === undefined || raw === '') {
    if (dflt !== undefined) return dflt;
    throw new DfsError('BAD_REQUEST', `${name} is missing`);
  }
  if (!/^\d+$/.test(raw)) throw new DfsError('BAD_REQUEST', `${name} must be a whole number`);
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new DfsError('BAD_REQUEST', `${name} must be between ${min} and ${max}`);
  return n;
}

/** A 200 answer carrying raw bytes (file data, an attribute's value). */
export function octets(c: Context, data: Buffer): Response {
  return c.body(new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.length), 200, { 'content-type': 'application/octet-stream' });
}
