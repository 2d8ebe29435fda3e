/*
 * The sequencer hands out the cluster's total order (DESIGN.md, Writes). Two
 * implementations behind one small interface (STYLE.md, after SeaweedFS's Sequencer): Redis
 * `INCR dfs:seq` for real clusters, and an in-memory counter for the deterministic
 * simulation. Both pass the same contract suite (test/unit/sequencer.test.ts).
 */
import type { Redis } from 'ioredis';
import { DfsError } from '../common/errors';
import { KEY_MEMBERSHIP, KEY_SEQ } from '../common/redis-keys';

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

/** INCR the counter only while the membership exists: after Redis lost its data, the
 * counter restarts at 0 and would hand out IDs the nodes already hold, so nobody sequences
 * until the leader has put the counter above every node's log and published a membership
 * again (proxy/leader.ts). And never from below ARGV[1], the highest ID this proxy was
 * handed: a counter set back by hand (Redis is distrusted: docs/security.md, "Redis") is
 * raised to it at once, as any ID up to it was handed out already, rather than hand out
 * slots the primary refuses as taken until the leader notices. A counter that is not a
 * number is left for INCR to refuse (and the leader to set). */
const NEXT_SCRIPT = `if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur ~= nil and cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return redis.call('INCR', KEYS[1])`;

/** The script as an ioredis command: it goes by its SHA1 (EVALSHA), not its text, once a
 * connection has it, and is sent again whole when Redis answers NOSCRIPT (a restart). */
const NEXT_COMMAND = 'dfsNextSeq';

type WithNextCommand = Redis & { [NEXT_COMMAND]: (seqKey: string, membershipKey: string, floor: string) => Promise<unknown> };

export class RedisSequencer implements Sequencer {
  private readonly redis: WithNextCommand;

  constructor(redis: Redis) {
    redis.defineCommand(NEXT_COMMAND, { numberOfKeys: 2, lua: NEXT_SCRIPT });
    this.redis = redis as WithNextCommand;
  }

  /** The highest sequence ID this proxy was handed (NEXT_SCRIPT's floor). */
  private handedMax = 0;

  async next(): Promise<number> {
    let seq: number;
    try {
      seq = Number(await this.redis[NEXT_COMMAND](KEY_SEQ, KEY_MEMBERSHIP, String(this.handedMax)));
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `cannot take a sequence ID from Redis: ${(e as Error).message}`);
    }
    if (seq < 0) throw new DfsError('UNAVAILABLE', 'Redis holds no membership (it lost its data?): waiting for the leader to restore it');
    if (!Number.isSafeInteger(seq)) throw new DfsError('UNAVAILABLE', `Redis handed out ${seq}, not a safe integer sequence ID: waiting for the leader to set the counter`);
    this.handedMax = Math.max(this.handedMax, seq);
    return seq;
  }

  async current(): Promise<number> {
    try {
      return Number((await this.redis.get(KEY_SEQ)) ?? 0);
    } catch (e) {
      throw new DfsError('UNAVAILABLE', `cannot read the sequence ID from Redis: ${(e as Error).message}`);
    }
  }
}
