/*
 * A checker for histories of single-writer registers (files overwritten in place), apart
 * from the workload that made them (issue 14: "a checker that is not the workload").
 *
 * Each register has one writer, which writes unique values one after another; readers
 * read at any time. Every operation has its invocation and completion time; a write that
 * failed (EIO) or never completed is indeterminate: it may have taken effect at any point
 * after its invocation, or never. For such registers linearizability is decided without a
 * search (Lamport's atomic register; what Knossos and Porcupine would find by one):
 * a history is linearizable if and only if, mapping each read to the write of its value,
 * - no read returns a value that was never written, or whose write began after the read
 *   ended (a value from the future);
 * - no read returns a value overwritten by a write that ended before the read began
 *   (a stale read: the write acknowledged, the read missing it);
 * - no two reads, one ended before the other began, return values in the other order
 *   (a new/old inversion).
 * And, after healing: the final value is no older than the last acknowledged write (an
 * acknowledged write lost otherwise).
 */

/** A register's size: every value is padded with spaces to this many bytes. */
export const REGISTER_BYTES = 64;

export interface RegisterOp {
  kind: 'write' | 'read';
  register: string;
  /** The value written, or read ('' for the initial content). */
  value: string;
  invokeMs: number;
  /** When it returned; null if it never did. */
  completeMs: number | null;
  /** It returned success; a failed write is indeterminate, a failed read says nothing. */
  ok: boolean;
}

export interface CheckResult {
  writesAcked: number;
  reads: number;
  staleReads: number;
  futureReads: number;
  unknownValues: number;
  inversions: number;
  /** Acknowledged writes older than nothing the final read shows: lost. */
  lostWrites: number;
  /** Registers whose history is not linearizable (any of the above). */
  nonLinearizable: string[];
  problems: string[];
}

/** Checks every register's history; `finals` is each register's value read after healing,
 * `initials` what each held before the history began ('' when absent). */
export function checkRegisters(history: RegisterOp[], finals: Map<string, string>, initials: Map<string, string> = new Map()): CheckResult {
  const out: CheckResult = { writesAcked: 0, reads: 0, staleReads: 0, futureReads: 0, unknownValues: 0, inversions: 0, lostWrites: 0, nonLinearizable: [], problems: [] };
  const registers = new Set(history.map((o) => o.register));
  for (const f of finals.keys()) registers.add(f);
  for (const reg of [...registers].sort()) {
    const before = out.problems.length;
    // Writes in the order the one writer made them (by invocation).
    const writes = history.filter((o) => o.register === reg && o.kind === 'write').sort((a, b) => a.invokeMs - b.invokeMs);
    const indexOf = new Map<string, number>([[initials.get(reg) ?? '', 0]]);
    writes.forEach((w, i) => {
      if (indexOf.has(w.value)) out.problems.push(`${reg}: value ${JSON.stringify(w.value)} written twice (the workload must make them unique)`);
      indexOf.set(w.value, i + 1);
    });
    const acked = writes.map((w, i) => ({ w, i: i + 1 })).filter((x) => x.w.ok && x.w.completeMs !== null);
    out.writesAcked += acked.length;
    const reads = history.filter((o) => o.register === reg && o.kind === 'read' && o.ok && o.completeMs !== null);
    out.reads += reads.length;
    const mapped: Array<{ r: RegisterOp; k: number }> = [];
    for (const r of reads) {
      const k = indexOf.get(r.value);
      if (k === undefined) {
        out.unknownValues++;
        out.problems.push(`${reg}: read ${JSON.stringify(r.value)} at ${r.invokeMs}..${r.completeMs}, never written`);
        continue;
      }
      if (k > 0 && writes[k - 1]!.invokeMs > r.completeMs!) {
        out.futureReads++;
        out.problems.push(`${reg}: read ${JSON.stringify(r.value)} ended at ${r.completeMs}, before its write began (${writes[k - 1]!.invokeMs})`);
      }
      const newer = acked.find((x) => x.i > k && x.w.completeMs! < r.invokeMs);
      if (newer) {
        out.staleReads++;
        out.problems.push(`${reg}: read at ${r.invokeMs} returned ${JSON.stringify(r.value)}, but ${JSON.stringify(newer.w.value)} was acknowledged at ${newer.w.completeMs}`);
      }
      mapped.push({ r, k });
    }
    // New/old inversions: sort by completion, keep the highest value seen by reads that
    // completed before each read began.
    const byInvoke = [...mapped].sort((a, b) => a.r.invokeMs - b.r.invokeMs);
    const byComplete = [...mapped].sort((a, b) => a.r.completeMs! - b.r.completeMs!);
    let j = 0;
    let highest = -1;
    let highestRead: RegisterOp | null = null;
    for (const x of byInvoke) {
      while (j < byComplete.length && byComplete[j]!.r.completeMs! < x.r.invokeMs) {
        if (byComplete[j]!.k > highest) {
          highest = byComplete[j]!.k;
          highestRead = byComplete[j]!.r;
        }
        j++;
      }
      if (x.k < highest) {
        out.inversions++;
        out.problems.push(`${reg}: read at ${x.r.invokeMs} returned write #${x.k}, after a read ended at ${highestRead!.completeMs} returned #${highest}`);
      }
    }
    const final = finals.get(reg);
    if (final !== undefined) {
      const k = indexOf.get(final);
      if (k === undefined) {
        out.unknownValues++;
        out.problems.push(`${reg}: final value ${JSON.stringify(final)} was never written`);
      } else {
        const lost = acked.filter((x) => x.i > k).length;
        if (lost > 0) {
          out.lostWrites += lost;
          out.problems.push(`${reg}: final value is write #${k}, but ${lost} later writes were acknowledged`);
        }
      }
    }
    if (out.problems.length > before) out.nonLinearizable.push(reg);
  }
  return out;
}
