/*
 * The registry records dfs keeps in Redis (common/redis-keys.ts names the keys), typed and
 * checked in one place. Every reader of a registry value goes through a `parse…` function
 * here, and every writer builds the value from the same types, so a record written by one
 * version and read by another, or damaged in Redis, fails with one clear error
 * (`RegistryError`, naming the key) instead of flowing on as a cast.
 *
 * Epochs and sequence IDs are checked as non-negative safe integers: Redis stores them as
 * text, and a value past 2^53 would silently compare wrong in JavaScript.
 *
 * Records:
 * - membership (`dfs:membership`, written by the leader only): epoch, primary, in-sync set,
 *   node ID -> URL;
 * - registration (`dfs:nodes` field): `{ id, url }`, written by the leader when a node's
 *   heartbeat first shows it (or shows it moved), deleted by the leader when it is removed;
 * - heartbeat (`dfs:node:<id>:alive`): a node's figures, refreshed every second with a TTL;
 * - removal (`dfs:removing` field): an operator's request to remove a node, and when the
 *   leader drained it;
 * - joining (`dfs:joining` field): a promoted backup not yet confirmed (proxy/leader-core.ts).
 */
import { z } from 'zod';
import { DfsError } from './errors';

/** A sequence ID, an epoch, a count of ms since the Unix epoch: whole, ≥ 0, exact in a double. */
export const SafeCount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
/** A node ID as `dfs node` accepts it. */
export const NodeId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/);
/** A node's URL: http(s) only, as the nodes serve (a `file:` or `javascript:` URL is no node). */
const Url = z.string().min(1).max(2048).regex(/^https?:\/\/[^\s/]+\/?$/, 'not an http(s) origin');
/** How far above the newest epoch a reader knows an epoch read from Redis may be: past the
 * jump the leader makes when it restores a Redis that lost its data (EPOCH_RESTORE_MARGIN,
 * proxy/leader-core.ts), with room for many of them; an epoch further ahead (2^53 − 1
 * written by hand) is refused, never adopted (docs/security.md, "Redis"). */
export const EPOCH_AHEAD_MAX = 100_000;

/** Why an epoch read from Redis is refused, given the newest one the reader knows (0: it
 * knows none, as a node with a fresh disk, and cannot bound it); null when it is fine. */
export function epochRefusal(epoch: number, knownEpoch: number): string | null {
  if (knownEpoch > 0 && epoch > knownEpoch + EPOCH_AHEAD_MAX) return `epoch ${epoch} is more than ${EPOCH_AHEAD_MAX} above ${knownEpoch}, the newest this process knows`;
  return null;
}

export const MembershipSchema = z
  .object({
    epoch: SafeCount,
    primary: NodeId,
    inSync: z.array(NodeId),
    nodes: z.record(NodeId, Url),
    incarnations: z.record(NodeId, z.string().max(64)).optional(),
    /** common/membership-seal.ts: who published it, and their signature. */
    seal: z.object({ cert: z.string().max(16_384), sig: z.string().max(1024) }).optional(),
  })
  .refine((m) => m.nodes[m.primary] !== undefined, { message: 'the primary is not a member' })
  .refine((m) => m.inSync.every((id) => m.nodes[id] !== undefined), { message: 'an in-sync node is not a member' });
export type MembershipRecord = z.infer<typeof MembershipSchema>;

export const RegistrationSchema = z.object({ id: NodeId, url: Url });
export type Registration = z.infer<typeof RegistrationSchema>;

export const SpaceSchema = z.enum(['ok', 'low', 'full']);

export const SyncProgressSchema = z.object({
  source: z.string(),
  seq: SafeCount.nullable(),
  entries: SafeCount,
  bytes: SafeCount,
  // Optional: a node of an older build reports none of these (common/api.ts SyncProgress).
  startedAtMs: SafeCount.optional(),
  totalEntries: SafeCount.nullable().optional(),
  totalBytes: SafeCount.nullable().optional(),
  bytesPerSecond: z.number().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
  finishedAtMs: SafeCount.optional(),
});

/** What a storage node's heartbeat says (storage/main.ts writes it; the leader reads it). */
export const HeartbeatSchema = z.object({
  /** Where its peers and proxies reach it: the leader registers it from this. */
  url: Url.optional(),
  appliedSeq: SafeCount,
  durableSeq: SafeCount,
  commitSeq: SafeCount.optional(),
  epoch: SafeCount.optional(),
  /** The epoch of the last entry of its durable log (null: an empty log). */
  logEpoch: SafeCount.nullable().optional(),
  role: z.string().optional(),
  primaryFenced: z.boolean().optional(),
  /** Primary: peer -> how long (ms) every request to it has failed. */
  failingPeers: z.record(z.string(), z.number().min(0)).optional(),
  /** Primary: peers that know of committed ops its log lacks. */
  peersAhead: z.array(z.string()).optional(),
  syncing: z.boolean().optional(),
  space: SpaceSchema.optional(),
  sync: SyncProgressSchema.nullable().optional(),
  /** The last full sync this process finished. */
  lastSync: SyncProgressSchema.nullable().optional(),
  membership: MembershipSchema.nullable().optional(),
  /** Distinguishes lives of one node ID that do not share a disk: made when the node's state
   * file is first written (a new disk gets a new one). */
  incarnation: z.string().max(64).optional(),
  /** The node has no state of its own: its state file did not exist when it started. */
  fresh: z.boolean().optional(),
  /** The floor on copies it enforces as primary (its --min-in-sync; 0: a majority). */
  minInSync: SafeCount.optional(),
  /** Primary: its in-sync copies are below that floor, so nothing commits. */
  belowFloor: z.object({ copies: SafeCount, floor: SafeCount }).nullable().optional(),
  /** The process is stopping (SIGTERM): a primary asks the leader to hand its role over, a
   * backup to leave the in-sync set, before it exits (docs/cluster.md, "Stopping a node"). */
  stopping: z.boolean().optional(),
  /** Random per process start: tells a node that started again from the one that was
   * running when it was removed (a removed ID that comes back rejoins). */
  boot: z.string().max(64).optional(),
});
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

export const RemovalSchema = z.object({
  requestedAtMs: SafeCount,
  drainedAtMs: SafeCount.optional(),
  /** Set by the leader when the node left the membership: the `boot` of the process then
   * running ('' when none heartbeated). A heartbeat under another boot is the ID starting
   * again: the request is done and the leader deletes it, so the node rejoins. */
  removedBoot: z.string().max(64).optional(),
  /** `dfs node remove`'s admin seal over the node ID and requestedAtMs (common/membership-seal.ts). */
  seal: z.object({ cert: z.string().max(16_384), sig: z.string().max(1024) }).optional(),
});
export type Removal = z.infer<typeof RemovalSchema>;

export const JoiningSchema = z.object({ afterEpoch: SafeCount, needs: SafeCount.nullable() });
export type Joining = z.infer<typeof JoiningSchema>;

/** A registry value that does not parse: Redis holds something no dfs version wrote. */
export class RegistryError extends DfsError {
  constructor(key: string, detail: string) {
    super('INTERNAL', `registry value ${key} is malformed: ${detail}`);
  }
}

function parseWith<T>(schema: z.ZodType<T>, key: string, text: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new RegistryError(key, `not JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new RegistryError(key, r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; '));
  return r.data;
}

export const parseMembership = (text: string): MembershipRecord => parseWith(MembershipSchema, 'dfs:membership', text);
export const parseRegistration = (id: string, text: string): Registration => parseWith(RegistrationSchema, `dfs:nodes[${id}]`, text);
export const parseHeartbeat = (id: string, text: string): Heartbeat => parseWith(HeartbeatSchema, `dfs:node:${id}:alive`, text);
export const parseRemoval = (id: string, text: string): Removal => parseWith(RemovalSchema, `dfs:removing[${id}]`, text);
export const parseJoining = (id: string, text: string): Joining => parseWith(JoiningSchema, `dfs:joining[${id}]`, text);

/** Parses a Redis counter (`dfs:seq`, `dfs:epoch`): absent is 0. */
export function parseCounter(key: string, text: string | null): number {
  if (text === null) return 0;
  const n = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(n)) throw new RegistryError(key, `${JSON.stringify(text.slice(0, 40))} is not a safe integer`);
  return n;
}

/** Each record's text as a writer stores it: the same types, checked before they leave. */
export const encodeMembership = (m: MembershipRecord): string => JSON.stringify(MembershipSchema.parse(m));
export const encodeRegistration = (r: Registration): string => JSON.stringify(RegistrationSchema.parse(r));
export const encodeHeartbeat = (h: Heartbeat): string => JSON.stringify(HeartbeatSchema.parse(h));
export const encodeRemoval = (r: Removal): string => JSON.stringify(RemovalSchema.parse(r));
export const encodeJoining = (j: Joining): string => JSON.stringify(JoiningSchema.parse(j));
