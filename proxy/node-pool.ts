/*
 * The proxy's connections to storage nodes (HTTP/2 cleartext, one undici client per node)
 * and read routing: a read goes to the in-sync node with the fewest requests outstanding
 * from this proxy (DESIGN.md, Reads); ties are broken at random so that an idle cluster
 * still spreads load.
 */
import { Client } from 'undici';
import type { Dispatcher } from 'undici';
import { h2cClientOptions } from '../common/h2c';

interface NodeConn {
  url: string;
  client: Client;
  outstanding: number;
}

export class NodePool {
  private readonly conns = new Map<string, NodeConn>();

  constructor(private readonly timeoutMs: number) {}

  private conn(id: string, url: string): NodeConn {
    let c = this.conns.get(id);
    if (c && c.url !== url) {
      void c.client.close().catch(() => undefined);
      c = undefined;
    }
    if (!c) {
      c = {
        url,
        client: new Client(url, h2cClientOptions({ headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, connectTimeout: this.timeoutMs })),
        outstanding: 0,
      };
      this.conns.set(id, c);
    }
    return c;
  }

  /** Node IDs ordered for a read: fewest outstanding first. */
  rank(ids: string[]): string[] {
    return ids
      .map((id) => ({ id, load: this.conns.get(id)?.outstanding ?? 0, tie: Math.random() }))
      .sort((a, b) => a.load - b.load || a.tie - b.tie)
      .map((x) => x.id);
  }

  async request(id: string, url: string, opts: Dispatcher.RequestOptions): Promise<Dispatcher.ResponseData> {
    const c = this.conn(id, url);
    c.outstanding++;
    try {
      return await c.client.request({ ...opts, signal: opts.signal ?? AbortSignal.timeout(this.timeoutMs) });
    } finally {
      c.outstanding--;
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.conns.values()].map((c) => c.client.close().catch(() => undefined)));
  }
}
