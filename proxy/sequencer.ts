/*
 * The sequencer hands out the cluster's total order (DESIGN.md, Writes). Two
 * implementations behind one small interface (STYLE.md, after SeaweedFS's Sequencer): Redis
 * `INCR dfs:seq` for real clusters, and an in-memory counter for the deterministic
 * simulation. Both pass the same contract suite (test/unit/sequencer.test.ts).
 */
import type { Redis } from 'ioredis';
import { DfsError } from '../common/errors';
import { KEY_SEQ } from '../common/redis-keys';

export interface Sequencer {
  /** Takes the next sequence ID; each caller gets a distinct one, increasing. */
  next(): Promise<number>;
  /** The highest sequence ID taken so far (0 when none). */
  current(): Promise<number>;
}

export class MemorySequencer implements Sequencer {
  private seq = 0;
  async next(): Promise<number> {
    return ++this.seq;
  }
  async current(): Promise<number> {
    return this.seq;
  }
}

export class RedisSequencer implements Sequencer {
  constructor(private readonly redis: Redis) {}

  async next(): Promise<number> {
    try {
      return await this.redis.incr(KEY_SEQ);
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `cannot take a sequence ID from Redis: ${(e as Error).message}`);
    }
  }

  async current(): Promise<number> {
    try {
      return Number((await this.redis.get(KEY_SEQ)) ?? 0);
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `cannot read the sequence ID from Redis: ${(e as Error).message}`);
    }
  }
}
