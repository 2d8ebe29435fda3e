/* A private redis-server on a free loopback port, for tests that need only Redis. */
import { spawn, type ChildProcess } from 'node:child_process';
import { Redis } from 'ioredis';
import { freePorts } from '../../cli/local-cluster';
import { pollUntil } from './client';

export async function startRedis(dir: string): Promise<{ url: string; client: Redis; stop: () => Promise<void> }> {
  const [port] = await freePorts(1);
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  const client = new Redis(url, { maxRetriesPerRequest: 1, lazyConnect: true });
  await pollUntil('redis to answer', 10_000, async () => {
    if (client.status !== 'ready') await client.connect().catch(() => undefined);
    return (await client.ping()) === 'PONG';
  });
  return {
    url,
    client,
    stop: async () => {
      client.disconnect();
      child.kill('SIGTERM');
      await pollUntil('redis to exit', 5000, async () => child.exitCode !== null || child.signalCode !== null);
    },
  };
}
