/*
 * The Hono edge shared by proxy and storage node: the one place where errors become HTTP
 * statuses, where request bodies are read under a limit, and where query parameters are
 * parsed. Authentication will hook in here too (DESIGN.md, Security).
 */
import type { Context, Hono } from 'hono';
import { DfsError, httpStatusOf } from './errors';
import { validatePath } from './paths';
import { queryValue } from './names';
import { HTTP_HEADER_BYTES_MAX } from './limits';
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
  return validatePath(queryValue(queryUrl(c), name), name);
}

/**
 * A read whose query is too long for the URL of an HTTP/2 request (nghttp2 refuses a header
 * field over 64 KiB, and a deep path percent-encoded can pass that) carries the same query
 * string as its body instead: a POST of this content type to the read's own endpoint.
 */
export const QUERY_IN_BODY_TYPE = 'application/x-www-form-urlencoded';
/** The longest URL a proxy sends a node; a longer read carries its query as the body. */
export const QUERY_URL_BYTES_MAX = 16 * 1024;
/** The query strings read from bodies, by request. */
const bodyQueries = new WeakMap<Request, string>();

/** Middleware: a POST of QUERY_IN_BODY_TYPE has its query string in the body. */
export async function queryInBody(c: Context, next: () => Promise<void>): Promise<void> {
  if (c.req.method === 'POST' && c.req.header('content-type') === QUERY_IN_BODY_TYPE) {
    bodyQueries.set(c.req.raw, (await readBody(c, HTTP_HEADER_BYTES_MAX)).toString('latin1'));
  }
  await next();
}

/** The URL whose query the helpers read (see QUERY_IN_BODY_TYPE). */
function queryUrl(c: Context): string {
  const body = bodyQueries.get(c.req.raw);
  return body === undefined ? c.req.url : `?${body}`;
}

/** A query parameter as text, from the URL or the body (queryInBody); undefined if absent. */
export function queryParam(c: Context, name: string): string | undefined {
  return bodyQueries.has(c.req.raw) ? queryValue(queryUrl(c), name) : c.req.query(name);
}

export function queryInt(c: Context, name: string, min: number, max: number, dflt?: number): number {
  const raw = queryParam(c, name);
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
