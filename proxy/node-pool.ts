/*
 * The proxy's connections to storage nodes (HTTP/2 over TLS with the proxy's certificate, or
 * cleartext under --insecure: common/h2c.ts; one undici client per node, and one message
 * stream per node for ops, common/message-stream.ts)
 * and read routing (DESIGN.md, Reads): a read goes to the in-sync node with the fewest
 * requests outstanding from this proxy; ties are broken at random so that an idle cluster
 * still spreads load.
 *
 * A node that does not answer a read within READ_HEDGE_MS (stopped, overloaded, its disk
 * hung) is marked slow: the read moves on to the next node, and slow nodes get no reads
 * while any other in-sync node is not slow. A slow node is probed in the background
 * (GET /node/v1/state, no barrier) every PROBE_INTERVAL_MS; the first probe it answers
 * within PROBE_TIMEOUT_MS brings it back. So a node that stops answering stops getting
 * reads within about a second, and one that recovers gets them again within about half a
 * second, without any client read waiting on it.
 */
import { Client } from 'undici';
import type { Dispatcher } from 'undici';
import { MessageStreams, type StreamAnswer } from '../common/message-stream';
import { H2_PARALLEL, h2ClientOptions } from '../common/h2c';
import type { TlsMaterial } from '../common/tls';
import type { Logger } from '../common/log';

/** How long a read waits for one node before trying the next (and marking it slow). */
export const READ_HEDGE_MS = 1_000;
/** How often a slow node is probed, and how fast a probe must be answered. */
export const PROBE_INTERVAL_MS = 500;
export const PROBE_TIMEOUT_MS = 500;

interface NodeConn {
  url: string;
  client: Client;
  outstanding: number;
  /** Reads sent to it (not probes), for status and tests. */
  reads: number;
  slow: boolean;
  probe: NodeJS.Timeout | null;
}

export interface NodeLoad {
  id: string;
  outstanding: number;
  reads: number;
  slow: boolean;
}

export class NodePool {
  private readonly conns = new Map<string, NodeConn>();
  /** Ops go to the primary as messages on one stream (common/message-stream.ts). */
  private readonly streams: MessageStreams;

  constructor(
    private readonly timeoutMs: number,
    private readonly logger?: Logger,
    private readonly tls: TlsMaterial | null = null,
  ) {
    this.streams = new MessageStreams(tls);
  }

  private conn(id: string, url: string): NodeConn {
    let c = this.conns.get(id);
    if (c && c.url !== url) {
      void c.client.close().catch(() => undefined);
      this.streams.forget(c.url);
      if (c.probe) clearTimeout(c.probe);
      c = undefined;
    }
    if (!c) {
      c = {
        url,
        // The node must hold the certificate of the ID the membership names at this URL.
        client: new Client(url, h2ClientOptions({ headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, connectTimeout: this.timeoutMs }, this.tls, id)),
        outstanding: 0,
        reads: 0,
        slow: false,
        probe: null,
      };
      this.conns.set(id, c);
    }
    return c;
  }

  /** Node IDs to try for a read, in order: fewest outstanding first, and slow nodes not
   * at all unless every node is slow. */
  rank(ids: string[]): string[] {
    const ranked = ids
      .map((id) => {
        const c = this.conns.get(id);
        return { id, slow: c?.slow === true, load: c?.outstanding ?? 0, tie: Math.random() };
      })
      .sort((a, b) => a.load - b.load || a.tie - b.tie);
    const fast = ranked.filter((x) => !x.slow);
    return (fast.length > 0 ? fast : ranked).map((x) => x.id);
  }

  /** Every request the proxy sends a node may run beside others (common/h2c.ts): an op is
   * safe to send twice (its slot and request ID say so), reads and verify holds are too. */
  async request(id: string, url: string, opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData> {
    const c = this.conn(id, url);
    c.outstanding++;
    try {
      return await c.client.request({ ...H2_PARALLEL, ...opts, signal: opts.signal ?? AbortSignal.timeout(this.timeoutMs) });
    } finally {
      c.outstanding--;
    }
  }

  /** A request as a message on the node's stream for `path`; counted like request. */
  async message(id: string, url: string, path: string, payload: readonly Buffer[], timeoutMs: number): Promise<StreamAnswer> {
    const c = this.conn(id, url);
    c.outstanding++;
    try {
      return await this.streams.send(url, path, payload, Math.min(timeoutMs, this.timeoutMs));
    } finally {
      c.outstanding--;
    }
  }

  /** A read: like request, but counted, and bounded by `hedgeMs` when another node could
   * answer instead; a node that misses that bound is marked slow (see the header). */
  async read(id: string, url: string, opts: Dispatcher.RequestOptions, hedgeMs: number | null): Promise<Dispatcher.ResponseData> {
    const c = this.conn(id, url);
    c.reads++;
    if (hedgeMs === null) return this.request(id, url, opts);
    // Bounds the wait for the answer's headers only: the body of an answer that came in
    // time is read under the client's own timeouts.
    const hedge = new AbortController();
    const timer = setTimeout(() => hedge.abort(new Error(`no answer within ${hedgeMs} ms`)), hedgeMs);
    try {
      return await this.request(id, url, { ...opts, signal: hedge.signal });
    } catch (e) {
      if (hedge.signal.aborted) this.markSlow(id, c);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  private markSlow(id: string, c: NodeConn): void {
    if (c.slow) return;
    c.slow = true;
    this.logger?.warn({ nodeId: id }, 'node is slow to answer reads: no reads go to it until it answers a probe');
    const probe = async () => {
      c.probe = null;
      if (this.conns.get(id) !== c || !c.slow) return;
      try {
        const res = await c.client.request({ method: 'GET', path: '/node/v1/state', signal: AbortSignal.timeout(PROBE_TIMEOUT_MS) });
        await res.body.dump();
        if (res.statusCode === 200) {
          c.slow = false;
          this.logger?.info({ nodeId: id }, 'node answers again: back in the read rotation');
          return;
        }
      } catch {
        // still slow
      }
      if (this.conns.get(id) === c) c.probe = setTimeout(() => void probe(), PROBE_INTERVAL_MS);
    };
    c.probe = setTimeout(() => void probe(), PROBE_INTERVAL_MS);
  }

  /** What this proxy sees of each node it talked to. */
  loads(): NodeLoad[] {
    return [...this.conns.entries()].map(([id, c]) => ({ id, outstanding: c.outstanding, reads: c.reads, slow: c.slow }));
  }

  async close(): Promise<void> {
    for (const c of this.conns.values()) if (c.probe) clearTimeout(c.probe);
    this.streams.close();
    await Promise.all([...this.conns.values()].map((c) => c.client.close().catch(() => undefined)));
  }
}
