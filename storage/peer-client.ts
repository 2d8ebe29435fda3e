/*
 * Node-to-node transport: replication batches, full-sync notices and brick snapshots over
 * HTTP/2 cleartext (DESIGN.md, Transport). One undici client per peer URL, with h2c prior
 * knowledge, so every request to a peer shares one connection. Every request has a
 * deadline; a snapshot, which may run for minutes, has one between chunks instead.
 */
import { Client } from 'undici';
import { h2cClientOptions } from '../common/h2c';
import { DfsError, errorFromBody } from '../common/errors';
import { frameOf, type LogEntry } from './op-log';
import type { PeerTransport } from './replica';

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

  async replicate(url: string, epoch: number, commitSeq: number, entries: LogEntry[]): Promise<{ durableSeq: number }> {
    const body = entries.length === 1 ? frameOf(entries[0]!) : Buffer.concat(entries.map(frameOf));
    let res;
    try {
      res = await this.client(url).request({
        method: 'POST',
        path: `/node/v1/replicate?epoch=${epoch}&commit=${commitSeq}`,
        headers: { 'content-type': 'application/octet-stream' },
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: ${(e as Error).message}`);
    }
    const json = (await res.body.json().catch(() => null)) as { durableSeq?: unknown } | null;
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode, json);
    // A peer killed while it answered leaves a 200 with no body: not an acknowledgement.
    if (json === null || typeof json.durableSeq !== 'number' || !Number.isSafeInteger(json.durableSeq)) {
      throw new DfsError('UNAVAILABLE', `peer ${url}: the answer to a replication batch was cut short`);
    }
    return { durableSeq: json.durableSeq };
  }

  async requireSync(url: string, epoch: number, seq: number): Promise<void> {
    let res;
    try {
      res = await this.client(url).request({ method: 'POST', path: `/node/v1/sync-required?epoch=${epoch}&seq=${seq}`, signal: AbortSignal.timeout(this.timeoutMs) });
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
