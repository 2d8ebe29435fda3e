/*
 * A write workload for fault tests (issue 4 and 5): writers appending to DIR/fK through
 * alternating proxies, each on its own file, so what every acknowledged write must have
 * left is known exactly; and the checks that follow a fault: every acknowledged byte read
 * back through each node, and `dfs verify` comparing the bricks.
 */
import * as assert from 'uvu/assert';
import type { Cluster } from '../../cli/local-cluster';
import type { ClusterStatus } from '../../common/api';
import { commitOp, pollUntil, TestClient } from './client';
import { runDfs } from './dfs-cli';

const own = { uid: 0, gid: 0 };
export const WRITERS = 4;
const CHUNK_BYTES = 1500;

/** Writers appending to DIR/fK through alternating proxies; what each acknowledged is kept. */
export class Workload {
  readonly expected: Buffer[] = Array.from({ length: WRITERS }, () => Buffer.alloc(0));
  acknowledged = 0;
  private running = true;
  private readonly done: Promise<void>;

  private constructor(
    private readonly clients: TestClient[],
    readonly dir: string,
  ) {
    this.done = Promise.all(Array.from({ length: WRITERS }, (_, k) => this.writer(k))).then(() => undefined);
  }

  static async start(clients: TestClient[], dir: string): Promise<Workload> {
    await commitOp(clients[0]!, { type: 'mkdir', path: dir, mode: 0o755, ...own });
    for (let k = 0; k < WRITERS; k++) await commitOp(clients[0]!, { type: 'create', path: `${dir}/f${k}`, mode: 0o644, ...own, exclusive: true });
    return new Workload(clients, dir);
  }

  private async writer(k: number): Promise<void> {
    const path = `${this.dir}/f${k}`;
    let round = 0;
    while (this.running) {
      const client = this.clients[(k + round) % this.clients.length]!;
      const chunk = Buffer.alloc(CHUNK_BYTES, `${k}:${round};`);
      await commitOp(client, { type: 'write', path, offset: this.expected[k]!.length }, chunk, 60_000);
      this.expected[k] = Buffer.concat([this.expected[k]!, chunk]);
      this.acknowledged++;
      round++;
    }
  }

  /** Resolves once `n` more writes were acknowledged. */
  async progress(n: number, what: string): Promise<void> {
    const target = this.acknowledged + n;
    await pollUntil(`${n} more acknowledged writes (${what})`, 60_000, async () => this.acknowledged >= target);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

export async function clusterStatus(client: TestClient): Promise<ClusterStatus> {
  const a = await client.get('/v1/cluster');
  assert.is(a.status, 200);
  return a.json as ClusterStatus;
}

export async function waitState(client: TestClient, id: string, state: string, timeoutMs = 60_000): Promise<void> {
  await pollUntil(`${id} to be ${state}`, timeoutMs, async () => (await clusterStatus(client)).nodes.find((n) => n.id === id)?.state === state, 100);
}

/** Every file as every in-sync node serves it equals what the writers were acknowledged. */
export async function checkContents(client: TestClient, w: Workload, nodeIds: string[]): Promise<void> {
  let lost = 0;
  for (const id of nodeIds) {
    // The leader may still list a node in sync that was killed and restarted a moment
    // ago (it has not missed a heartbeat yet): wait until the node answers at all.
    await pollUntil(`${id} to answer reads`, 60_000, async () => (await client.get('/v1/attr', { path: '/' }, { 'dfs-read-node': id })).status === 200, 100);
    for (let k = 0; k < WRITERS; k++) {
      const want = w.expected[k]!;
      const got: Buffer[] = [];
      for (let offset = 0; offset < want.length + 1; offset += 4 << 20) {
        const a = await client.get('/v1/data', { path: `${w.dir}/f${k}`, offset, size: 4 << 20 }, { 'dfs-read-node': id });
        assert.is(a.status, 200, `read ${w.dir}/f${k} from ${id}: ${a.status} ${JSON.stringify(a.json)}`);
        got.push(a.bytes);
        if (a.bytes.length < 4 << 20) break;
      }
      const data = Buffer.concat(got);
      if (!data.subarray(0, want.length).equals(want)) lost++;
      assert.is(data.length, want.length, `${w.dir}/f${k} on ${id}: ${data.length} bytes, acknowledged ${want.length}`);
    }
  }
  process.stdout.write(`acknowledged writes lost: ${lost} of ${w.acknowledged}\n`);
  assert.is(lost, 0);
}

export async function verifyBricks(cluster: Cluster, nodes: number): Promise<void> {
  const v = await runDfs(['verify', '--proxy', cluster.proxyUrls.join(','), '--json']);
  assert.is(v.code, 0, v.stdout + v.stderr);
  const report = JSON.parse(v.stdout) as { ok: boolean; nodes: unknown[] };
  assert.ok(report.ok);
  assert.is(report.nodes.length, nodes, `verify compared ${report.nodes.length} nodes`);
}

export function dumpLogs(cluster: Cluster): void {
  for (const n of cluster.nodes) process.stderr.write(`--- ${n.id}\n${cluster.logTail('storage', n.id)}\n`);
  for (const p of cluster.proxies) process.stderr.write(`--- ${p.id}\n${cluster.logTail('proxy', p.id)}\n`);
}

