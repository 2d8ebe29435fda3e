/*
 * Ports for a local cluster: every process gets a free loopback port, chosen by binding
 * port 0 and reading what the kernel gave. A cluster started again on the same data
 * directory asks for the ports it had (<dataDir>/ports.json), so that the node URLs its
 * membership records (kept by a persistent Redis) still hold.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { DfsError } from '../common/errors';

/**
 * Free TCP ports on `host`: bind, read the port, close. A preferred port (the one a
 * process had last time) is taken when it is free, else any free port (port 0). Another
 * process could take a port before we use it; on loopback that is rare enough.
 */
export async function freePorts(count: number, host = '127.0.0.1', preferred: Array<number | undefined> = []): Promise<number[]> {
  // All servers stay open until every port is read, so the ports are distinct.
  const servers: Server[] = [];
  const listen = (port: number) =>
    new Promise<Server | null>((resolvePromise) => {
      const server = createServer();
      server.once('error', () => resolvePromise(null));
      server.listen(port, host, () => resolvePromise(server));
    });
  try {
    const ports: number[] = [];
    for (let index = 0; index < count; index++) {
      const wanted = preferred[index];
      let server = wanted !== undefined && wanted > 0 ? await listen(wanted) : null;
      server ??= await listen(0);
      if (server === null) throw new DfsError('UNAVAILABLE', `cannot listen on ${host}`);
      servers.push(server);
      const address = server.address();
      if (address === null || typeof address === 'string') throw new Error('listen gave no port');
      ports.push(address.port);
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise<void>((done) => server.close(() => done()))));
  }
}

/** The ports of the last cluster started in a data directory, by process id. */
const PORTS_FILE_NAME = 'ports.json';

export function readPreviousPorts(dataDir: string): Record<string, number> {
  try {
    const parsed = JSON.parse(readFileSync(join(dataDir, PORTS_FILE_NAME), 'utf8')) as unknown;
    if (parsed === null || typeof parsed !== 'object') return {};
    const ports: Record<string, number> = {};
    for (const [id, port] of Object.entries(parsed)) if (Number.isInteger(port)) ports[id] = port as number;
    return ports;
  } catch {
    return {};
  }
}

/** Records the ports a cluster started with, for the next start on the same data. */
export function writePorts(dataDir: string, ports: Record<string, number>): void {
  writeFileSync(join(dataDir, PORTS_FILE_NAME), JSON.stringify(ports, null, 2) + '\n', { mode: 0o600 });
}
