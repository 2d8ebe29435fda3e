/*
 * The storage node's HTTP API (docs/api.md, Node API), served over HTTP/2 cleartext.
 * A factory with its dependencies passed in (STYLE.md): storage/main.ts wires it.
 * Mutations arrive only from proxies (`/node/v1/ops`) and the primary (`/node/v1/replicate`);
 * reads carry a barrier and are answered once this node applied up to it.
 */
import { Hono, type Context } from 'hono';
import { installErrorHandler, octets, queryInt, queryPath, readBody } from '../common/http';
import { decodeFrames, decodeOneFrame } from '../common/frame';
import { parseSequencedOpHeader, validateOp } from '../common/ops';
import { OP_BODY_BYTES_MAX, READ_BYTES_MAX, REPLICATE_BODY_BYTES_MAX } from '../common/limits';
import type { Logger } from '../common/log';
import type { Brick } from './brick';
import type { Replica } from './replica';

/** How long a node may take to reach the sequence ID a verify holds it at. */
const MANIFEST_HOLD_TIMEOUT_MS = 10_000;

export interface StorageAppDeps {
  replica: Replica;
  brick: Brick;
  logger: Logger;
  /** Asks Redis for the newest membership (a request from a newer epoch prompts it). */
  refreshMembership: () => Promise<void>;
}

export function createStorageApp({ replica, brick, logger, refreshMembership }: StorageAppDeps): Hono {
  const app = new Hono();
  installErrorHandler(app, logger);

  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/node/v1/state', (c) => c.json(replica.state()));

  app.post('/node/v1/ops', async (c) => {
    const frame = decodeOneFrame(await readBody(c, OP_BODY_BYTES_MAX));
    const header = parseSequencedOpHeader(frame.header);
    validateOp(header.op, frame.data.length);
    if (header.epoch > replica.epoch) await refreshMembership();
    return c.json(await replica.submit(header, frame.data));
  });

  app.post('/node/v1/replicate', async (c) => {
    const epoch = queryInt(c, 'epoch', 0, Number.MAX_SAFE_INTEGER);
    const commit = queryInt(c, 'commit', 0, Number.MAX_SAFE_INTEGER);
    const frames = decodeFrames(await readBody(c, REPLICATE_BODY_BYTES_MAX));
    const batch = frames.map((f) => {
      const header = parseSequencedOpHeader(f.header);
      validateOp(header.op, f.data.length);
      return { header, data: f.data };
    });
    if (epoch > replica.epoch) await refreshMembership();
    return c.json(await replica.replicate(epoch, commit, batch));
  });

  const barrier = async (c: Context) => {
    await replica.waitApplied(queryInt(c, 'barrier', 0, Number.MAX_SAFE_INTEGER, 0));
  };

  app.get('/node/v1/attr', async (c) => {
    const path = queryPath(c);
    await barrier(c);
    return c.json(await brick.attr(path));
  });
  app.get('/node/v1/dir', async (c) => {
    const path = queryPath(c);
    await barrier(c);
    return c.json({ entries: await brick.dir(path) });
  });
  app.get('/node/v1/data', async (c) => {
    const path = queryPath(c);
    const offset = queryInt(c, 'offset', 0, Number.MAX_SAFE_INTEGER);
    const size = queryInt(c, 'size', 0, READ_BYTES_MAX);
    await barrier(c);
    const data = await brick.read(path, offset, size);
    return octets(c, data);
  });
  app.get('/node/v1/link', async (c) => {
    const path = queryPath(c);
    await barrier(c);
    return c.json({ target: await brick.readlink(path) });
  });
  app.get('/node/v1/xattr', async (c) => {
    const path = queryPath(c);
    const name = c.req.query('name') ?? '';
    await barrier(c);
    const value = await brick.xattr(path, name);
    return octets(c, value);
  });
  app.get('/node/v1/xattrs', async (c) => {
    const path = queryPath(c);
    await barrier(c);
    return c.json({ names: await brick.xattrNames(path) });
  });
  app.get('/node/v1/statfs', async (c) => c.json(await brick.statfs()));

  // dfs verify: the brick as it stands at sequence ID `at`. Apply holds there meanwhile, so
  // writes wait for the walk to finish.
  app.post('/node/v1/manifest', async (c) => {
    const at = queryInt(c, 'at', 0, Number.MAX_SAFE_INTEGER);
    await replica.holdAt(at, MANIFEST_HOLD_TIMEOUT_MS);
    try {
      return c.json({ nodeId: replica.id, appliedSeq: replica.appliedSeq, entries: await brick.manifest() });
    } finally {
      replica.release();
    }
  });

  return app;
}
