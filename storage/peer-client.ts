/*
 * Node-to-node transport: replication batches, full-sync notices and brick snapshots over
 * HTTP/2 cleartext (DESIGN.md, Transport). One undici client per peer URL, with h2c prior
 * knowledge, so every request to a peer shares one connection. Every request has a
 * deadline; a snapshot, which may run for minutes, has one between chunks instead.
 */
import { Client } from 'undici';
import { H2_PARALLEL, h2cClientOptions } from '../common/h2c';
import { DfsError, errorFromBody } from '../common/errors';
import { frameOf } from './op-log';
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

  constructor(private readonly timeoutMs: number) {}

  private client(url: string): Client {
    let c = this.clients.get(url);
    if (!c) {
      c = new Client(url, h2cClientOptions({ headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, connectTimeout: this.timeoutMs }));
      this.clients.set(url, c);
    }
    return c;
  }

  async replicate(url: string, req: ReplicateRequest): Promise<ReplicateAck> {
    const { entries } = req;
    const body = entries.length === 1 ? frameOf(entries[0]!) : Buffer.concat(entries.map(frameOf));
    const truncate = req.truncateAfter === null ? '' : `&truncate=${req.truncateAfter}`;
    const prefix = req.prefixSeq < 0 ? '' : `&prefix=${req.prefixSeq}`;
    let res;
    try {
      res = await this.client(url).request({
        method: 'POST',
        path: `/node/v1/replicate?epoch=${req.epoch}&commit=${req.commitSeq}${prefix}${truncate}`,
        headers: { 'content-type': 'application/octet-stream' },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
        ...H2_PARALLEL,
      });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: ${(e as Error).message}`);
    }
    const json: unknown = await res.body.json().catch(() => null);
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, json);
    const ack = parseAck(json);
    if (ack === null) throw new DfsError('UNAVAILABLE', `peer ${url}: the answer to a replication batch was cut short`);
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
  async snapshot(url: string, epoch: number, idleMs: number, signal: AbortSignal): Promise<AsyncIterable<Buffer>> {
    let res;
    try {
      res = await this.client(url).request({ method: 'GET', path: `/node/v1/snapshot?epoch=${epoch}`, headersTimeout: idleMs, bodyTimeout: idleMs, signal });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: ${(e as Error).message}`);
    }
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, await res.body.json().catch(() => null));
    return res.body as AsyncIterable<Buffer>;
  }

  async close(): Promise<void> {
    await Promise.all([...this.clients.values()].map((c) => c.close().catch(() => undefined)));
  }
}
