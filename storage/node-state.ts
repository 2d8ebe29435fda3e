/*
 * The node's small state file beside its brick and log: node ID, the highest epoch it has
 * seen, and the last sequence ID it applied. Written whole to a temporary file and renamed
 * over the old one, so a crash leaves either the old or the new state, never half of one.
 * An epoch change is fsynced (a node must never forget an epoch it promised to honour).
 * The applied sequence ID here is only a floor: storage/main.ts saves it at most once a
 * second, without fsync, and a full sync saves the point it copied durably. What recovery
 * starts from is the brick's own mark (Brick.appliedSeqMark), which moves with every op in
 * the same synchronous step, raised to this floor: so the file may lag behind the brick by
 * any number of ops without a replay of more than the one op the mark may miss (one op
 * replayed is harmless; a run of them is not, see Brick.appliedSeqMark).
 *
 * The incarnation names this life of the disk: made when the file is first written, so a
 * node that starts on an empty data directory (a lost disk replaced) has a new one, under
 * whatever ID it is given. The membership records the incarnation each member was admitted
 * under, and a node whose own differs acts as a learner only (storage/replica-core.ts,
 * `stranger`): it holds none of what its namesake held.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import { z } from 'zod';

const NodeStateSchema = z.object({
  nodeId: z.string(),
  epoch: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  appliedSeq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  incarnation: z.string().regex(/^[0-9a-f]{16}$/).optional(),
});
/** What callers save; the file adds its incarnation. */
export type NodeState = Omit<z.infer<typeof NodeStateSchema>, 'incarnation'>;

const newIncarnation = (): string => randomBytes(8).toString('hex');

export class NodeStateFile {
  private writing: Promise<void> = Promise.resolve();
  /** This life of the disk (see the header); set by `load`. */
  incarnation = '';
  /** `load` found no state file: this node has no state of its own. */
  fresh = false;

  constructor(private readonly file: string) {}

  async load(nodeId: string): Promise<NodeState> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      this.fresh = true;
      this.incarnation = newIncarnation();
      const state = { nodeId, epoch: 0, appliedSeq: 0 };
      // Written at once, so that a restart keeps this incarnation.
      await this.save(state, true);
      return state;
    }
    const state = NodeStateSchema.parse(JSON.parse(text));
    if (state.nodeId !== nodeId) throw new Error(`${this.file} belongs to node ${state.nodeId}, not ${nodeId}`);
    if (state.incarnation === undefined) {
      // Written by a version without incarnations: this disk's life gets one now.
      this.incarnation = newIncarnation();
      await this.save(state, true);
    } else this.incarnation = state.incarnation;
    return { nodeId: state.nodeId, epoch: state.epoch, appliedSeq: state.appliedSeq };
  }

  /** Saves the state; saves are serialized so an older one never lands after a newer. */
  save(state: NodeState, durable: boolean): Promise<void> {
    const run = async () => {
      const tmp = `${this.file}.tmp`;
      const fh = await fsp.open(tmp, 'w');
      try {
        await fh.writeFile(JSON.stringify({ ...state, incarnation: this.incarnation }));
        if (durable) await fh.sync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, this.file);
      if (durable) {
        const dir = await fsp.open(nodePath.dirname(this.file), 'r');
        try {
          await dir.sync();
        } finally {
          await dir.close();
        }
      }
    };
    this.writing = this.writing.then(run, run);
    return this.writing;
  }
}
