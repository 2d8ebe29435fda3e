/**
 * A handler that writes its answer on Node's own response (the proxy streaming file data,
 * a node's message streams) returns answeredByHandler(): the adapter must then leave the
 * response alone, so that the answer arrives whole and the keep-alive connection stays
 * open for the next request.
 */
import type { AddressInfo } from 'node:net';
import type { ServerResponse } from 'node:http';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Client } from 'undici';
import { answeredByHandler } from '../../common/http';

const s = suite('answeredByHandler');

s('an answer written by the handler keeps its connection, with and without headers set through Hono first', async () => {
  const app = new Hono();
  app.get('/raw/:n', async (c) => {
    // The proxy sets its served-by header on the context before it streams the bytes.
    if (c.req.query('header') === '1') c.header('x-served-by', 'n1');
    const outgoing = (c.env as { outgoing: ServerResponse }).outgoing;
    const body = Buffer.from(`answer ${c.req.param('n')}`);
    outgoing.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(body.length) });
    outgoing.end(body);
    return answeredByHandler();
  });
  const logged: unknown[] = [];
  const consoleError = console.error;
  console.error = (...args: unknown[]) => void logged.push(args);
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' });
  await new Promise<void>((resolve) => (server.listening ? resolve() : server.once('listening', () => resolve())));
  const { port } = server.address() as AddressInfo;
  const client = new Client(`http://127.0.0.1:${port}`);
  let connections = 0;
  client.on('connect', () => connections++);
  try {
    for (let n = 0; n < 6; n++) {
      const res = await client.request({ method: 'GET', path: `/raw/${n}?header=${n % 2}` });
      assert.is(res.statusCode, 200);
      assert.is(await res.body.text(), `answer ${n}`);
    }
    assert.is(connections, 1, 'every request used the one keep-alive connection');
    assert.equal(logged, [], 'the adapter logged no error');
  } finally {
    console.error = consoleError;
    await client.close();
    await new Promise((resolve) => server.close(resolve));
  }
});

s.run();
