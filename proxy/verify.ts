/*
 * dfs verify: are the in-sync replicas identical? Every in-sync node is asked for its
 * brick's manifest at one sequence ID (the newest taken when verify began): each applies
 * up to exactly that ID, holds still while it reads its brick, and answers. The manifests
 * are then compared entry by entry. Writes wait while the nodes are held.
 *
 * Progress: each node answers NDJSON, how far its walk got (entries listed, bytes hashed,
 * against its brick's totals, which it counts first) a few times a second and then its
 * manifest; `POST /v1/verify?progress=1` passes the progress of every node on to the `dfs
 * verify` command the same way, before the report (proxy/app.ts).
 */
import type { Manifest, ManifestEntry, ManifestProgress, Membership, VerifyReport } from '../common/api';
import { DfsError, errorFromBody, type ErrorCode } from '../common/errors';
import { MANIFEST_BYTES_MAX, VERIFY_DIFFERENCES_MAX } from '../common/limits';
import { ndjsonValues } from '../common/ndjson';
import type { NodePool } from './node-pool';
import type { Sequencer } from './sequencer';

/** How long one node may take to reach the sequence ID and read its brick. */
const MANIFEST_TIMEOUT_MS = 120_000;

export function compareManifests(at: number, manifests: Array<{ id: string; manifest?: Manifest; error?: string }>): VerifyReport {
  const answered = manifests.filter((m): m is { id: string; manifest: Manifest } => m.manifest !== undefined);
  const byNode = answered.map((m) => ({ id: m.id, entries: new Map(m.manifest.entries.map((e) => [e.path, e])) }));
  const paths = [...new Set(answered.flatMap((m) => m.manifest.entries.map((e) => e.path)))].sort();
  const differences: VerifyReport['differences'] = [];
  let more = 0;
  for (const path of paths) {
    const seen = byNode.map((n) => n.entries.get(path) ?? null);
    const first = JSON.stringify(seen[0]);
    if (seen.every((e) => JSON.stringify(e) === first)) continue;
    if (differences.length >= VERIFY_DIFFERENCES_MAX) {
      more++;
      continue;
    }
    differences.push({ path, nodes: Object.fromEntries(byNode.map((n, i) => [n.id, seen[i] as ManifestEntry | null])) });
  }
  const errors = manifests.filter((m) => m.error !== undefined);
  return {
    ok: differences.length === 0 && errors.length === 0 && answered.length > 0,
    at,
    nodes: manifests.map((m) => (m.manifest ? { id: m.id, entries: m.manifest.entries.length } : { id: m.id, error: m.error ?? 'no answer' })),
    differences,
    more,
  };
}

/** Called as the nodes' walks get on: the sequence ID verified at, and each node's
 * progress so far, by ID. */
export type VerifyProgressListener = (at: number, nodes: Record<string, ManifestProgress>) => void;

/** How many times verify takes a newer sequence ID when a node had already applied past
 * the one it took (below). */
const VERIFY_ATTEMPTS_MAX = 5;

export async function verifyCluster(sequencer: Sequencer, membership: Membership, nodes: NodePool, onProgress?: VerifyProgressListener): Promise<VerifyReport> {
  // The newest sequence ID taken is read before the nodes are asked to hold there, so while
  // clients write, an op sequenced in between may already be applied on a node when its
  // hold arrives: that node refuses (SLOT_TAKEN: it cannot go back), and the whole verify is
  // asked again at a newer ID, once every node of this attempt has answered (a node holds
  // until its walk ends).
  for (let attempt = 1; ; attempt++) {
    const at = await sequencer.current();
    const manifests = await manifestsAt(at, membership, nodes, onProgress);
    const passed = manifests.some((m) => m.error?.startsWith('SLOT_TAKEN:'));
    if (!passed || attempt >= VERIFY_ATTEMPTS_MAX) return compareManifests(at, manifests);
  }
}

async function manifestsAt(at: number, membership: Membership, nodes: NodePool, onProgress?: VerifyProgressListener): Promise<Array<{ id: string; manifest?: Manifest; error?: string }>> {
  const progress: Record<string, ManifestProgress> = {};
  return Promise.all(
    membership.inSync.map(async (id): Promise<{ id: string; manifest?: Manifest; error?: string }> => {
      try {
        const res = await nodes.request(id, membership.nodes[id]!, {
          method: 'POST',
          path: `/node/v1/manifest?at=${at}&progress=1`,
          signal: AbortSignal.timeout(MANIFEST_TIMEOUT_MS),
          headersTimeout: MANIFEST_TIMEOUT_MS,
          bodyTimeout: MANIFEST_TIMEOUT_MS,
        });
        if (res.statusCode !== 200) throw errorFromBody(res.statusCode, await res.body.json().catch(() => null));
        // A node of an older build answers the manifest alone, as JSON.
        if (!String(res.headers['content-type'] ?? '').includes('ndjson')) return { id, manifest: (await res.body.json()) as Manifest };
        let manifest: Manifest | null = null;
        for await (const value of ndjsonValues(res.body, MANIFEST_BYTES_MAX)) {
          const line = value as { progress?: ManifestProgress; manifest?: Manifest; error?: { code: string; message: string } };
          if (line.progress) {
            progress[id] = line.progress;
            onProgress?.(at, { ...progress });
          } else if (line.manifest) manifest = line.manifest;
          else if (line.error) throw new DfsError(line.error.code as ErrorCode, line.error.message);
        }
        if (manifest === null) throw new DfsError('UNAVAILABLE', `${id} ended its answer before its manifest`);
        return { id, manifest };
      } catch (e) {
        return { id, error: e instanceof DfsError ? `${e.code}: ${e.message}` : String(e) };
      }
    }),
  );
}
