/*
 * Node-to-node transport over HTTP/2 with TLS, this node's certificate presented and the
 * peer's checked to be a node's (common/tls.ts; cleartext h2c under --insecure) (DESIGN.md,
 * Transport): replication batches as messages on one long-lived stream per peer
 * (common/message-stream.ts, which says why), full-sync notices and brick snapshots as
 * requests from one undici client per peer URL, so every request to a peer shares one
 * connection and one handshake. Every request has a deadline; a snapshot, which may run
 * for minutes, has one between chunks instead.
 */
import { Client } from 'undici';
import { H2_PARALLEL, h2ClientOptions } from '../common/h2c';
import type { TlsMaterial } from '../common/tls';
import { DfsError, errorFromBody } from '../common/errors';
import { frameOf } from './op-log';
import { encodeBatch, REPLICATE_STREAM_PATH } from './replication-stream';
import { MessageStreams } from '../common/message-stream';
import type { EpochRun } from './op-log';
import type { PeerTransport, ReplicateRequest } from './replica';
import type { ReplicateAck } from './replica-core';

const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** The peer's answer, checked: a peer killed while it answered leaves a 200 without one. */
function parseAck(json: unknown): ReplicateAck | null {
  if (json === null || typeof json !== 'object') return null;
  const { durableSeq, commitSeq, tail } = json as Record<string, unknown>;
  if (!isSeq(durableSeq) || !isSeq(commitSeq) || !Array.isArray(tail)) return null;
  const runs: EpochRun[] = [];
  for (const r of tail as unknown[]) {
    const { from, epoch } = (r ?? {}) as Record<string, unknown>;
    if (!isSeq(from) || !isSeq(epoch)) return null;
    runs.push({ from, epoch });
  }
  return { durableSeq, commitSeq, tail: runs };
}

export class HTTP2PeerTransport implements PeerTransport {
  private readonly clients = new Map<string, Client>();
  private readonly streams: MessageStreams;

  constructor(
    private readonly timeoutMs: number,
    private readonly tls: TlsMaterial | null = null,
  ) {
    this.streams = new MessageStreams(tls);
  }

  private client(url: string): Client {
    let c = this.clients.get(url);
    if (!c) {
      c = new Client(url, h2ClientOptions({ headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, connectTimeout: this.timeoutMs }, this.tls));
      this.clients.set(url, c);
    }
    return c;
  }

  async replicate(url: string, req: ReplicateRequest): Promise<ReplicateAck> {
    const { status, body } = await this.streams.send(url, REPLICATE_STREAM_PATH, encodeBatch(req, req.entries.map(frameOf)), this.timeoutMs);
    if (status !== 200) throw errorFromBody(status, body);
    const ack = parseAck(body);
    if (ack === null) throw new DfsError('UNAVAILABLE', `peer ${url}: the answer to a replication batch was not an ack`);
    return ack;
  }

  async requireSync(url: string, epoch: number, seq: number): Promise<void> {
    let res;
    try {
      res = await this.client(url).request({ method: 'POST', path: `/node/v1/sync-required?epoch=${epoch}&seq=${seq}`, signal: AbortSignal.timeout(this.timeoutMs), ...H2_PARALLEL });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: ${(e as Error).message}`);
    }
    const json = await res.body.json().catch(() => null);
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, json);
  }

  /** A peer's brick as a stream of frames (storage/full-sync.ts reads it). Nothing arriving
   * for `idleMs` ends it with an error; so does `signal`. */
  /** `nodeId`: the node asking, which must be a member not in sync (storage/app.ts). */
  async snapshot(url: string, epoch: number, nodeId: string, idleMs: number, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    let res;
    try {
      res = await this.client(url).request({ method: 'GET', path: `/node/v1/snapshot?epoch=${epoch}&node=${encodeURIComponent(nodeId)}`, headersTimeout: idleMs, bodyTimeout: idleMs, signal });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: ${(e as Error).message}`);
    }
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, await res.body.json().catch(() => null));
    return res.body as AsyncIterable<Buffer>;
  }

  async close(): Promise<void> {
    this.streams.close();
    await Promise.all([...this.clients.values()].map((c) => c.close().catch(() => undefined)));
  }
}
