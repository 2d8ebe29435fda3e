/*
 * The Hono edge shared by proxy and storage node: the one place where errors become HTTP
 * statuses, where request bodies are read under a limit, and where query parameters are
 * parsed. Authentication will hook in here too (DESIGN.md, Security).
 */
import { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { Http2ServerRequest } from 'node:http2';
import type { Context, Hono } from 'hono';
import { DfsError, httpStatusOf } from './errors';
import { validatePath } from './paths';
import { queryValue } from './names';
import { HTTP_HEADER_BYTES_MAX } from './limits';
import type { Logger } from './log';

/**
 * The bytes of request bodies a process holds at once, across every request (DESIGN.md,
 * Transport and limits). A body that declares its length takes all of it before its first
 * byte is read, so one that cannot fit is refused at once, having cost nothing; one that
 * does not declare it is counted chunk by chunk as it arrives. Past the cap a request is
 * refused with 503 UNAVAILABLE (load, not bad input: a retry later succeeds), and what the
 * caller sent of it is read and dropped rather than left buffered in the connection. What a
 * request took is given back when its answer is done.
 */
export class BodyBudget {
  private heldBytes = 0;

  constructor(readonly bytesMax: number) {
    if (!Number.isSafeInteger(bytesMax) || bytesMax < 1) throw new Error(`body budget must be a positive integer, not ${bytesMax}`);
  }

  get held(): number {
    return this.heldBytes;
  }

  take(bytes: number): void {
    if (this.heldBytes + bytes > this.bytesMax) throw new DfsError('UNAVAILABLE', `request bodies in flight are over ${this.bytesMax} bytes; try again`);
    this.heldBytes += bytes;
  }

  give(bytes: number): void {
    this.heldBytes -= bytes;
  }
}

/** What one request took from the process's BodyBudget (installBodyBudget). */
interface BodyCharge {
  budget: BodyBudget;
  bytes: number;
}
const bodyCharges = new WeakMap<Request, BodyCharge>();

/** Every body readBody reads in `app` counts against `budget` until its answer is made. */
export function installBodyBudget(app: Hono, budget: BodyBudget): void {
  app.use(async (c, next) => {
    const charge: BodyCharge = { budget, bytes: 0 };
    bodyCharges.set(c.req.raw, charge);
    try {
      await next();
    } finally {
      budget.give(charge.bytes);
      charge.bytes = 0;
    }
  });
}

/**
 * Connections a server keeps from one client address at once: past the cap a new one is
 * closed at once (a Node `net.Server`, HTTP/1.1 or HTTP/2, emits 'connection' for each).
 */
export function capConnectionsPerClient(server: { on(event: 'connection', fn: (socket: import('node:net').Socket) => void): unknown }, connectionsMax: number, logger: Logger): void {
  const open = new Map<string, number>();
  server.on('connection', (socket) => {
    const who = socket.remoteAddress ?? '?';
    const count = (open.get(who) ?? 0) + 1;
    if (count > connectionsMax) {
      logger.warn({ client: who, connectionsMax }, 'connection refused: too many from this client');
      socket.destroy();
      return;
    }
    open.set(who, count);
    socket.once('close', () => {
      const left = (open.get(who) ?? 1) - 1;
      if (left === 0) open.delete(who);
      else open.set(who, left);
    });
  });
}

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
  const pieces = await readBodyPieces(c, bytesMax);
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
}

/** readBody, the body left in the pieces it arrived in (a TLS connection gives 16 KiB at
 * a time): for a relay that sends it on as pieces, so that a write's MiB is not copied
 * once more only to be written to a socket (the proxy: common/frame.ts, decodeRelayFrame). */
export async function readBodyPieces(c: Context, bytesMax: number): Promise<Buffer[]> {
  const declared = Number(c.req.header('content-length') ?? NaN);
  const incoming = (c.env as { incoming?: AsyncIterable<Buffer> & { resume?: () => void } } | undefined)?.incoming;
  // A refused body must not stay buffered for as long as the caller keeps the connection
  // (an HTTP/2 stream's whole window). Over HTTP/1.1 the answer closes the connection, so
  // the rest is never read (reading it meant decrypting every byte a flood of refused
  // bodies sent, which kept a proxy's event loop busy for seconds); an HTTP/2 stream is
  // read and dropped, as its connection carries other requests.
  const refuse = (err: DfsError): never => {
    if (incoming instanceof IncomingMessage) {
      c.header('connection', 'close');
      // A body over the limit is one client's mistake, and the 413 says what it was; a body
      // refused for the budget is load, where the proxy sheds connections at once (a flood
      // lingering here kept its senders encrypting into the open sockets).
      if (err.code === 'TOO_LARGE') lingerAtClose(incoming.socket);
    } else incoming?.resume?.();
    throw err;
  };
  if (declared > bytesMax) refuse(new DfsError('TOO_LARGE', `body of ${declared} bytes is over the limit of ${bytesMax}`));
  const source = incoming ?? (c.req.raw.body as unknown as AsyncIterable<Uint8Array> | null);
  if (!source) return [];
  const charge = bodyCharges.get(c.req.raw);
  // The declared length is taken before the first byte (see BodyBudget).
  let reserved = 0;
  if (charge && Number.isSafeInteger(declared) && declared > 0) {
    try {
      charge.budget.take(declared);
    } catch (e) {
      refuse(e as DfsError);
    }
    charge.bytes += declared;
    reserved = declared;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of source) {
    size += chunk.length;
    if (size > bytesMax) throw new DfsError('TOO_LARGE', `body is over the limit of ${bytesMax} bytes`);
    if (charge && size > reserved) {
      const more = size - Math.max(reserved, size - chunk.length);
      charge.budget.take(more);
      charge.bytes += more;
    }
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
  }
  return chunks;
}

/** How long a connection closed after a refused body stays open for the client to read
 * the answer (lingerAtClose). */
export const LINGER_MS = 1_000;

/**
 * Closes an HTTP/1.1 connection the way a server that answered before reading the whole
 * body must (a "lingering close"): Node ends a `connection: close` answer with destroySoon,
 * which shuts both directions once the answer is written; bytes the client was still
 * sending then reach a closed socket, the kernel answers them with a reset, and a reset
 * may discard the answer the client has not read yet (it saw EPIPE or ECONNRESET instead
 * of the 413). Here the write side is shut (FIN, after the answer) and the socket stays
 * open, unread, for LINGER_MS before it goes: the client has that long to read the answer
 * before any reset. Nothing more is read (nginx reads and drops instead; over TLS that
 * means decrypting every byte a flood of refused bodies sends, which kept a proxy's event
 * loop busy), so what the client still sends waits in the kernel's buffers and is dropped
 * with the socket.
 */
function lingerAtClose(socket: Socket): void {
  (socket as Socket & { destroySoon: () => void }).destroySoon = function lingerThenDestroy(this: Socket) {
    this.pause();
    if (this.writable) this.end();
    const timer = setTimeout(() => this.destroy(), LINGER_MS);
    timer.unref();
    this.once('close', () => clearTimeout(timer));
  };
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

/** What @hono/node-server takes as "the handler wrote the answer itself" (its
 * RESPONSE_ALREADY_SENT, which this project's module resolution cannot import by name). */
const ALREADY_SENT_HEADER = 'x-hono-already-sent';

/**
 * The Response a handler returns after writing its answer on Node's own objects.
 *
 * @hono/node-server honours the marker header only on its slow path. Once a server is
 * made, its own light Response class replaces the global one, and a light Response that
 * still holds its constructor's arguments (as one made here, or the copy Hono makes when
 * the handler had set a header with `c.header`, would) takes the fast path, which writes
 * the head again: Node throws ERR_HTTP_HEADERS_SENT and the adapter prints its stack to
 * stderr, so a proxy's log got a stack trace for every file read it relayed and a node's
 * for every message stream that ended. Reading `.body` turns a light Response
 * into a real one, and a copy of a real one is real too, so the marker is seen. With the
 * global Response untouched it is a no-op. test/unit/answered-by-handler.test.ts holds
 * the adapter to this.
 */
export function answeredByHandler(): Response {
  const res = new Response(null, { headers: { [ALREADY_SENT_HEADER]: 'true' } });
  void res.body;
  return res;
}

/** Node's HTTP/2 request under a handler, for one that reads and writes the raw stream. */
export function http2Incoming(c: Context): Http2ServerRequest {
  const incoming = (c.env as { incoming?: unknown } | undefined)?.incoming;
  if (!(incoming instanceof Http2ServerRequest)) throw new DfsError('BAD_REQUEST', `${c.req.path} is served over HTTP/2 only`);
  return incoming;
}
