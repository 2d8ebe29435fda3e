/*
 * The sequencer contract (STYLE.md: one suite per interface, every implementation): the
 * in-memory sequencer of the simulation and the Redis one of real clusters, against a real
 * redis-server, pass the same cases.
 */
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { MemorySequencer, RedisSequencer, type Sequencer } from '../../proxy/sequencer';
import { startRedis } from '../helpers/redis-server';
import { tempDir } from '../helpers/temp';
import { KEY_MEMBERSHIP, KEY_SEQ } from '../../common/redis-keys';

/** The code a promise is rejected with, or '' when it fulfils. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return '';
  } catch (e) {
    return (e as { code: string }).code;
  }
}

function contract(name: string, make: () => Promise<{ seq: Sequencer; done: () => Promise<void> }>): void {
  const s = suite(`sequencer contract: ${name}`);

  s('starts at nothing taken, then hands out 1, 2, 3', async () => {
    const { seq, done } = await make();
    try {
      assert.is(await seq.current(), 0);
      assert.equal([await seq.next(), await seq.next(), await seq.next()], [1, 2, 3]);
      assert.is(await seq.current(), 3);
    } finally {
      await done();
    }
  });

  s('concurrent takers all get distinct IDs with no gaps', async () => {
    const { seq, done } = await make();
    try {
      const ids = await Promise.all(Array.from({ length: 500 }, () => seq.next()));
      assert.equal([...ids].sort((a, b) => a - b), Array.from({ length: 500 }, (_, i) => i + 1));
    } finally {
      await done();
    }
  });

  s.run();
}

contract('memory', async () => ({ seq: new MemorySequencer(), done: async () => undefined }));

contract('redis', async () => {
  const dir = tempDir('redis');
  const redis = await startRedis(dir.path);
  await redis.client.set(KEY_MEMBERSHIP, '{}'); // a cluster with a membership sequences
  return {
    seq: new RedisSequencer(redis.client),
    done: async () => {
      await redis.stop();
      dir.remove();
    },
  };
});

const lost = suite('sequencer: redis lost its data');
lost('without a membership nobody sequences: a wiped Redis cannot hand out IDs the nodes hold', async () => {
  const dir = tempDir('redis');
  const redis = await startRedis(dir.path);
  try {
    const seq = new RedisSequencer(redis.client);
    assert.is(await codeOf(seq.next()), 'UNAVAILABLE');
    assert.is(await redis.client.get(KEY_SEQ), null, 'the counter was not touched');
    await redis.client.set(KEY_MEMBERSHIP, '{}');
    assert.is(await seq.next(), 1);
  } finally {
    await redis.stop();
    dir.remove();
  }
});
lost.run();

const down = suite('sequencer: redis down');
down('a Redis that is gone gives UNAVAILABLE in bounded time, not a hang', async () => {
  const dir = tempDir('redis');
  const redis = await startRedis(dir.path);
  const { Redis } = await import('ioredis');
  const client = new Redis(redis.url, { maxRetriesPerRequest: 1, connectTimeout: 500, commandTimeout: 1000 });
  try {
    const seq = new RedisSequencer(client);
    await client.set(KEY_MEMBERSHIP, '{}');
    assert.is(await seq.next(), 1);
    await redis.stop();
    const started = Date.now();
    assert.is(await codeOf(seq.next()), 'UNAVAILABLE');
    assert.ok(Date.now() - started < 10_000, 'answered within the bound');
  } finally {
    client.disconnect();
    dir.remove();
  }
});
down.run();
