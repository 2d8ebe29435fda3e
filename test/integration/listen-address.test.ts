/*
 * Where a storage node listens and what it advertises (issue 17: a pod listens on every
 * address and is reached by its DNS name): `--url` is what the node's heartbeat gives the
 * leader, apart from `--host`; `--admin-host` puts the admin port on an address of its own;
 * `--host 0.0.0.0` without `--url` is refused at start with a message that says what to
 * give (it would advertise an address nobody can connect to). The tests listen on loopback
 * addresses only (127.0.0.1 and 127.0.0.2).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { freePorts } from '../../cli/local-cluster';
import { STORAGE_MAIN } from '../../cli/cluster-processes';
import { httpGet } from '../../cli/probes';
import { NODE_RUNTIME_FLAGS } from '../../common/node-runtime';
import { nodeAliveKey } from '../../common/redis-keys';
import { parseHeartbeat } from '../../common/registry';
import { pollUntil } from '../helpers/client';
import { startRedis } from '../helpers/redis-server';
import { tempDir } from '../helpers/temp';

const s = suite('listen-address');
const ctx: { dir?: ReturnType<typeof tempDir>; redis?: Awaited<ReturnType<typeof startRedis>>; children: ChildProcess[] } = { children: [] };

s.before(async () => {
  ctx.dir = tempDir('listen');
  ctx.redis = await startRedis(ctx.dir.path);
});

s.after(async () => {
  for (const child of ctx.children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await ctx.redis?.stop();
  ctx.dir?.remove();
});

function startNode(args: string[]): { child: ChildProcess; exited: Promise<{ code: number | null; stderr: string }> } {
  const child = spawn(process.execPath, [...NODE_RUNTIME_FLAGS, STORAGE_MAIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  ctx.children.push(child);
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('exit', (code) => resolve({ code, stderr })));
  return { child, exited };
}

s('--host 0.0.0.0 without --url is refused at start, saying to give --url', async () => {
  const [port] = await freePorts(1);
  const { exited } = startNode(['--id', 'n1', '--data', join(ctx.dir!.path, 'refused'), '--port', String(port), '--host', '0.0.0.0', '--redis', ctx.redis!.url, '--insecure']);
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([exited, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 20_000)))]);
  clearTimeout(timer);
  assert.ok(outcome, 'it exits');
  assert.is.not(outcome.code, 0);
  assert.match(outcome.stderr, /--host 0\.0\.0\.0 listens on every address: give --url/);
});

s('the advertised --url differs from --host, and --admin-host puts the admin port apart', async () => {
  const [port, adminPort] = await freePorts(2);
  const advertised = `http://localhost:${port}`;
  const { child, exited } = startNode([
    '--id', 'n1', '--data', join(ctx.dir!.path, 'n1'), '--port', String(port), '--host', '127.0.0.1', '--url', advertised,
    '--admin-port', String(adminPort), '--admin-host', '127.0.0.2', '--redis', ctx.redis!.url, '--insecure',
  ]);
  const heartbeat = await pollUntil('a heartbeat', 20_000, async () => {
    const text = await ctx.redis!.client.get(nodeAliveKey('n1'));
    return text ? parseHeartbeat('n1', text) : null;
  });
  assert.is(heartbeat.url, advertised);
  assert.is(heartbeat.stopping, false);
  assert.ok(typeof heartbeat.boot === 'string' && heartbeat.boot.length > 0, 'a boot ID');
  // The admin port answers on its own address and not on the API's.
  assert.is((await httpGet(`http://127.0.0.2:${adminPort}/healthz`)).status, 200);
  let refused = '';
  await httpGet(`http://127.0.0.1:${adminPort}/healthz`).catch((e: Error & { code?: string }) => (refused = e.code ?? e.message));
  assert.is(refused, 'ECONNREFUSED');
  // A node in no membership has nothing to hand over: SIGTERM ends it at once.
  const sentAt = Date.now();
  child.kill('SIGTERM');
  const outcome = await exited;
  assert.is(outcome.code, 0);
  assert.ok(Date.now() - sentAt < 5_000, `exited ${Date.now() - sentAt} ms after SIGTERM`);
});

s.run();
