/*
 * Requests as messages on one long-lived HTTP/2 stream (docs/api.md, Message streams):
 * the hops that carry one small request per op, proxy -> primary (ops) and primary ->
 * backup (replication batches and commit points), open a stream once and then send each
 * request as one DATA frame and get its answer as one DATA frame back.
 *
 * Why: a create cost the primary five HTTP/2 requests (the op, and a batch and a commit
 * notice to each backup) and each backup two, and the request machinery (undici's client
 * on one side; the Hono adapter's request, response and Web objects on the other) was most
 * of every storage node's profile. A message costs a length prefix and a JSON answer.
 *
 * The stream is a POST to the endpoint's path; the server answers 200 at once, and both
 * sides then write messages, each a 4-byte big-endian length (of what follows) and:
 *
 *   request (client -> server): u32 id | payload (the endpoint's own layout)
 *   answer  (server -> client): u32 id | u16 HTTP status | JSON body (what the endpoint
 *                               would have answered as a request: a result or an error body)
 *
 * Ids are the client's, echoed in the answer; answers come in any order. A request whose
 * answer misses its deadline is given up alone (its late answer is dropped), unless nothing
 * at all arrived on the stream since it was sent: then the connection is taken for dead and
 * every request in flight on it fails. A message over the size limit or a broken stream
 * also fails every request in flight. The caller decides what a failure means (both
 * endpoints are safe to send again: an op holds its sequence slot and request ID, a batch
 * is skipped where the log already holds it); nothing is resent here.
 */
import { clientConnectOptions, type TlsMaterial } from './tls';
import http2 from 'node:http2';
import type { Http2ServerRequest } from 'node:http2';
import { DfsError, errorFromBody, httpStatusOf } from './errors';
import { H2_CLIENT_CONNECTION_WINDOW_BYTES, H2_CLIENT_STREAM_WINDOW_BYTES } from './h2c';
import type { Logger } from './log';
import type { BodyBudget } from './http';
import { OP_BODY_BYTES_MAX } from './limits';

const LENGTH_BYTES = 4;
const ID_BYTES = 4;
const ANSWER_HEAD_BYTES = ID_BYTES + 2;
/** An answer is a small JSON object; anything larger is not one. */
const ANSWER_BYTES_MAX = 1024 * 1024;
/** A message longer than this is gathered into one buffer of its size as it arrives. */
const GATHER_IN_PLACE_BYTES_MIN = 256 * 1024;
/** Ids wrap here; far more than can be in flight on one stream. */
const ID_MAX = 0xffffffff;

/**
 * Cuts a byte stream into messages. Pieces are kept as they arrive and joined once a whole
 * message is there (one copy, as gathering a request body was); a piece holding several
 * small messages is sliced, not copied.
 */
export class MessageReader {
  private pieces: Buffer[] = [];
  private buffered = 0;
  /** Whether the message being gathered had its length announced (onLength). */
  private announced = false;
  /** A large message being gathered: its whole buffer, allocated once its length is known,
   * and how much of it is filled. Keeping the pieces instead would keep each piece's
   * backing store (often several times the piece) until the message is whole. */
  private target: Buffer | null = null;
  private filled = 0;

  /** `onLength`, when given, hears each message's length as soon as its prefix is in (it
   * may throw: push then throws it), before the rest of the message is gathered. */
  constructor(
    private readonly bytesMax: number,
    private readonly onLength?: (length: number) => void,
  ) {}

  /** Adds a piece; returns the messages it completed (without their length prefix).
   * Throws TOO_LARGE for a message whose length is over the limit. */
  push(piece: Buffer): Buffer[] {
    const out: Buffer[] = [];
    while (this.target) {
      const need = this.target.length - this.filled;
      if (piece.length < need) {
        piece.copy(this.target, this.filled);
        this.filled += piece.length;
        return out;
      }
      piece.copy(this.target, this.filled, 0, need);
      out.push(this.target.subarray(LENGTH_BYTES));
      this.target = null;
      this.filled = 0;
      this.announced = false;
      piece = piece.subarray(need);
      if (piece.length === 0) return out;
    }
    this.pieces.push(piece);
    this.buffered += piece.length;
    for (;;) {
      if (this.buffered < LENGTH_BYTES) return out;
      const first = this.pieces[0]!.length >= LENGTH_BYTES ? this.pieces[0]! : this.join();
      const length = first.readUInt32BE(0);
      if (length > this.bytesMax) throw new DfsError('TOO_LARGE', `a message of ${length} bytes is over the limit of ${this.bytesMax}`);
      if (!this.announced) {
        this.announced = true;
        this.onLength?.(length);
      }
      if (this.buffered < LENGTH_BYTES + length) {
        if (LENGTH_BYTES + length > GATHER_IN_PLACE_BYTES_MIN) {
          this.target = Buffer.allocUnsafe(LENGTH_BYTES + length);
          for (const p of this.pieces) {
            p.copy(this.target, this.filled);
            this.filled += p.length;
          }
          this.pieces = [];
          this.buffered = 0;
        }
        return out;
      }
      this.announced = false;
      const all = this.pieces.length === 1 ? this.pieces[0]! : this.join();
      out.push(all.subarray(LENGTH_BYTES, LENGTH_BYTES + length));
      const rest = all.subarray(LENGTH_BYTES + length);
      this.pieces = rest.length > 0 ? [rest] : [];
      this.buffered = rest.length;
    }
  }

  private join(): Buffer {
    const all = Buffer.concat(this.pieces, this.buffered);
    this.pieces = [all];
    return all;
  }
}

/** A request message's pieces: its head (length and id) and the payload's pieces as given. */
export function encodeRequest(id: number, payload: readonly Buffer[]): Buffer[] {
  let bytes = ID_BYTES;
  for (const p of payload) bytes += p.length;
  const head = Buffer.allocUnsafe(LENGTH_BYTES + ID_BYTES);
  head.writeUInt32BE(bytes, 0);
  head.writeUInt32BE(id, LENGTH_BYTES);
  return [head, ...payload];
}

function encodeAnswer(id: number, status: number, body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body));
  const out = Buffer.allocUnsafe(LENGTH_BYTES + ANSWER_HEAD_BYTES + json.length);
  out.writeUInt32BE(ANSWER_HEAD_BYTES + json.length, 0);
  out.writeUInt32BE(id, LENGTH_BYTES);
  out.writeUInt16BE(status, LENGTH_BYTES + ID_BYTES);
  json.copy(out, LENGTH_BYTES + ANSWER_HEAD_BYTES);
  return out;
}

/** What a server does with one request's payload: the answer's body, or a DfsError (its
 * status and body are answered as an endpoint's error would be). */
export type MessageHandler = (payload: Buffer) => Promise<unknown>;

/**
 * The server's side, inside a handler of the stream's POST: answers 200 on the raw HTTP/2
 * stream under `incoming`, hands each request's payload to `handle` as it arrives (without
 * waiting for earlier ones) and writes each answer when it settles. Resolves when the
 * stream is over. A message over `bytesMax` ends the stream (the client opens another).
 * What the stream holds (pieces of a message not yet whole, and each message until its
 * answer is written) counts against `budget`, the bodies this process holds at once; a
 * piece past it ends the stream, whose requests then fail with UNAVAILABLE at the client
 * and are sent again later, as a request refused 503 would be.
 */
export function serveMessageStream(incoming: Http2ServerRequest, bytesMax: number, handle: MessageHandler, logger: Logger, budget?: BodyBudget): Promise<void> {
  const stream = incoming.stream;
  stream.respond({ ':status': 200, 'content-type': 'application/octet-stream' });
  /** What each message read but not yet handed on took from `budget`, oldest first: its
   * whole declared length, taken as soon as its prefix is in, so a sender that stalls part
   * way holds no more than the budget allowed it, and one past the budget is cut off before
   * it sends the rest. */
  const taken: number[] = [];
  const reader = new MessageReader(ID_BYTES + bytesMax, (length) => {
    budget?.take(LENGTH_BYTES + length);
    taken.push(LENGTH_BYTES + length);
  });
  const answer = (id: number, status: number, body: unknown): void => {
    if (!stream.destroyed && stream.writable) stream.write(encodeAnswer(id, status, body));
  };
  const run = (id: number, payload: Buffer): void => {
    const size = taken.shift() ?? 0;
    let pending: Promise<unknown>;
    try {
      pending = handle(payload);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending
      .then(
        (body) => answer(id, 200, body),
        (err: unknown) => {
          if (err instanceof DfsError) return answer(id, httpStatusOf(err), err.toJSON());
          logger.error({ err, path: incoming.url }, 'unexpected error');
          answer(id, 500, { code: 'INTERNAL', message: 'internal error' });
        },
      )
      .finally(() => budget?.give(size));
  };
  return new Promise<void>((resolve) => {
    incoming.on('data', (piece: Buffer) => {
      if (stream.destroyed || stream.closed) return;
      let messages: Buffer[];
      try {
        messages = reader.push(piece);
      } catch (err) {
        // Unreadable, or over the budget of bodies in flight (UNAVAILABLE): the client's
        // requests on it fail, and are sent again later on a new stream.
        const overBudget = err instanceof DfsError && err.code === 'UNAVAILABLE';
        logger.warn({ err: (err as Error).message, path: incoming.url }, 'message stream: closing the stream');
        stream.close(overBudget ? http2.constants.NGHTTP2_REFUSED_STREAM : http2.constants.NGHTTP2_PROTOCOL_ERROR);
        return;
      }
      for (const msg of messages) {
        if (msg.length < ID_BYTES) {
          logger.warn({ path: incoming.url }, 'message stream: a message shorter than its id; closing the stream');
          stream.close(http2.constants.NGHTTP2_PROTOCOL_ERROR);
          return;
        }
        run(msg.readUInt32BE(0), msg.subarray(ID_BYTES));
      }
    });
    incoming.on('end', () => {
      if (!stream.destroyed) stream.end();
    });
    stream.on('close', () => {
      // The message being gathered gives back what it took; those being handled give theirs
      // when answered.
      if (budget) for (const n of taken.splice(0)) budget.give(n);
      resolve();
    });
    stream.on('error', () => undefined);
  });
}

export interface StreamAnswer {
  status: number;
  body: unknown;
}

interface InFlight {
  resolve: (answer: StreamAnswer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  /** The stream's count of answers received when this request was sent. */
  answersAtSend: number;
}

/** One server's connection and stream for one path, opened when first needed and again
 * after a failure. */
class ClientStream {
  private session: http2.ClientHttp2Session | null = null;
  private stream: http2.ClientHttp2Stream | null = null;
  private readonly inFlight = new Map<number, InFlight>();
  private nextId = 1;
  private answers = 0;

  constructor(
    private readonly url: string,
    private readonly path: string,
    private readonly tls: TlsMaterial | null,
  ) {}

  get outstanding(): number {
    return this.inFlight.size;
  }

  send(payload: readonly Buffer[], timeoutMs: number): Promise<StreamAnswer> {
    const stream = this.open();
    const id = this.nextId;
    this.nextId = this.nextId === ID_MAX ? 1 : this.nextId + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.expire(id), Math.max(1, timeoutMs));
      this.inFlight.set(id, { resolve, reject, timer, answersAtSend: this.answers });
      stream.cork();
      for (const piece of encodeRequest(id, payload)) stream.write(piece);
      stream.uncork();
    });
  }

  private expire(id: number): void {
    const waiter = this.inFlight.get(id);
    if (!waiter) return;
    const err = new DfsError('UNAVAILABLE', `${this.url}${this.path}: no answer in time`);
    // Nothing came back since it was sent: the connection is taken for dead.
    if (this.answers === waiter.answersAtSend) return this.fail(err);
    this.inFlight.delete(id);
    waiter.reject(err);
  }

  private open(): http2.ClientHttp2Stream {
    if (this.stream) return this.stream;
    if (!this.session || this.session.closed || this.session.destroyed) {
      // Over TLS, this process's certificate is presented and the server's must say node
      // (common/tls.ts); the connection lives as long as the stream, so one handshake.
      const session = http2.connect(this.url, { settings: { initialWindowSize: H2_CLIENT_STREAM_WINDOW_BYTES }, ...(this.tls ? clientConnectOptions(this.tls, ['node']) : {}) });
      session.on('connect', () => session.setLocalWindowSize(H2_CLIENT_CONNECTION_WINDOW_BYTES));
      session.on('error', (err) => {
        if (this.session === session) this.fail(new DfsError('UNAVAILABLE', `${this.url}: ${err.message}`));
      });
      session.on('close', () => {
        if (this.session !== session) return;
        this.session = null;
        this.fail(new DfsError('UNAVAILABLE', `${this.url}: connection closed`));
      });
      this.session = session;
    }
    const stream = this.session.request({ ':method': 'POST', ':path': this.path, 'content-type': 'application/octet-stream' });
    const reader = new MessageReader(ANSWER_BYTES_MAX);
    let status = 0;
    const refused: Buffer[] = [];
    stream.on('response', (headers) => {
      status = Number(headers[':status']);
    });
    stream.on('data', (piece: Buffer) => {
      if (status !== 200) {
        refused.push(piece);
        return;
      }
      let messages: Buffer[];
      try {
        messages = reader.push(piece);
      } catch (err) {
        return this.fail(new DfsError('UNAVAILABLE', `${this.url}${this.path}: ${(err as Error).message}`), stream);
      }
      for (const msg of messages) this.settle(msg, stream);
    });
    stream.on('end', () => {
      // A server that refused the stream as a whole answers as an endpoint would.
      const err = status !== 200 ? errorFromBody(status, parseJson(Buffer.concat(refused))) : new DfsError('UNAVAILABLE', `${this.url}${this.path}: the stream ended`);
      this.fail(err, stream);
    });
    stream.on('close', () => this.fail(new DfsError('UNAVAILABLE', `${this.url}${this.path}: the stream closed`), stream));
    stream.on('error', (err) => this.fail(new DfsError('UNAVAILABLE', `${this.url}${this.path}: ${err.message}`), stream));
    this.stream = stream;
    return stream;
  }

  private settle(msg: Buffer, stream: http2.ClientHttp2Stream): void {
    if (msg.length < ANSWER_HEAD_BYTES) return this.fail(new DfsError('UNAVAILABLE', `${this.url}${this.path}: a short answer`), stream);
    this.answers++;
    const id = msg.readUInt32BE(0);
    const waiter = this.inFlight.get(id);
    if (!waiter) return; // given up at its deadline
    this.inFlight.delete(id);
    clearTimeout(waiter.timer);
    waiter.resolve({ status: msg.readUInt16BE(ID_BYTES), body: parseJson(msg.subarray(ANSWER_HEAD_BYTES)) });
  }

  /** Fails every request in flight and drops the stream; also the connection, unless the
   * failure is only of `which` stream (or of one already replaced). */
  fail(err: Error, which?: http2.ClientHttp2Stream): void {
    if (which && which !== this.stream) return;
    const stream = this.stream;
    this.stream = null;
    if (stream && !stream.destroyed) stream.destroy();
    if (!which && this.session && !this.session.destroyed) this.session.destroy();
    const waiting = [...this.inFlight.values()];
    this.inFlight.clear();
    for (const w of waiting) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }
}

function parseJson(buf: Buffer): unknown {
  try {
    return JSON.parse(buf.toString('utf8'));
  } catch {
    return null;
  }
}

/** The client's side: one stream per server URL and path. */
export class MessageStreams {
  private readonly streams = new Map<string, ClientStream>();

  /** `tls`: the cluster's CA and this process's certificate; null: cleartext (--insecure). */
  constructor(private readonly tls: TlsMaterial | null = null) {}

  /** Sends one request; resolves with the server's answer (status and JSON body), rejects
   * with UNAVAILABLE when none came in `timeoutMs` or the stream failed first. */
  send(url: string, path: string, payload: readonly Buffer[], timeoutMs: number): Promise<StreamAnswer> {
    const key = `${url} ${path}`;
    let s = this.streams.get(key);
    if (!s) {
      s = new ClientStream(url, path, this.tls);
      this.streams.set(key, s);
    }
    return s.send(payload, timeoutMs);
  }

  /** Ends the streams to `url` (a server that left), failing what is in flight on them. */
  forget(url: string): void {
    for (const [key, s] of this.streams) {
      if (!key.startsWith(`${url} `)) continue;
      s.fail(new DfsError('UNAVAILABLE', `${url}: closing`));
      this.streams.delete(key);
    }
  }

  close(): void {
    for (const s of this.streams.values()) s.fail(new DfsError('UNAVAILABLE', 'closing'));
    this.streams.clear();
  }
}

/** Ops from a proxy to the primary (docs/api.md): the payload is
 * `u8 length | the mount's ID (ASCII, may be empty) | the op's frame`, as `/node/v1/ops`
 * takes the frame and the `dfs-mount` header. */
export const OPS_STREAM_PATH = '/node/v1/ops-stream';
const MOUNT_ID_BYTES_MAX = 255;
export const OP_MESSAGE_BYTES_MAX = 1 + MOUNT_ID_BYTES_MAX + OP_BODY_BYTES_MAX;

/** An op message's payload pieces; the frame's pieces are written as they are. */
export function encodeOpMessage(mount: string | null, frame: readonly Buffer[]): Buffer[] {
  const id = Buffer.from(mount ?? '', 'latin1');
  if (id.length > MOUNT_ID_BYTES_MAX) throw new DfsError('BAD_REQUEST', 'a mount ID is at most 255 bytes');
  const head = Buffer.allocUnsafe(1 + id.length);
  head.writeUInt8(id.length, 0);
  id.copy(head, 1);
  return [head, ...frame];
}

export function decodeOpMessage(payload: Buffer): { mount: string | null; frame: Buffer } {
  if (payload.length < 1 || payload.length < 1 + payload.readUInt8(0)) throw new DfsError('BAD_REQUEST', 'an op message shorter than its mount ID');
  const n = payload.readUInt8(0);
  return { mount: n === 0 ? null : payload.toString('latin1', 1, 1 + n), frame: payload.subarray(1 + n) };
}
