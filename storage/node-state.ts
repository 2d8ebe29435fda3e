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
 */
import { promises as fsp } from 'node:fs';
import nodePath from 'node:path';
import { z } from 'zod';

const NodeStateSchema = z.object({ nodeId: z.string(), epoch: z.number().int().min(0), appliedSeq: z.number().int().min(0) });
export type NodeState = z.infer<typeof NodeStateSchema>;

export class NodeStateFile {
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly file: string) {}

  async load(nodeId: string): Promise<NodeState> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { nodeId, epoch: 0, appliedSeq: 0 };
      throw e;
    }
    const state = NodeStateSchema.parse(JSON.parse(text));
    if (state.nodeId !== nodeId) throw new Error(`${this.file} belongs to node ${state.nodeId}, not ${nodeId}`);
    return state;
  }

  /** Saves the state; saves are serialized so an older one never lands after a newer. */
  save(state: NodeState, durable: boolean): Promise<void> {
    const run = async () => {
      const tmp = `${this.file}.tmp`;
      const fh = await fsp.open(tmp, 'w');
      try {
        await fh.writeFile(JSON.stringify(state));
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
