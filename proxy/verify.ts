/*
 * dfs verify: are the in-sync replicas identical? Every in-sync node is asked for its
 * brick's manifest at one sequence ID (the newest taken when verify began): each applies
 * up to exactly that ID, holds still while it reads its brick, and answers. The manifests
 * are then compared entry by entry. Writes wait while the nodes are held.
 */
import type { Manifest, ManifestEntry, Membership, VerifyReport } from '../common/api';
import { DfsError, errorFromBody } from '../common/errors';
import { VERIFY_DIFFERENCES_MAX } from '../common/limits';
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

export async function verifyCluster(sequencer: Sequencer, membership: Membership, nodes: NodePool): Promise<VerifyReport> {
  const at = await sequencer.current();
  const manifests = await Promise.all(
    membership.inSync.map(async (id) => {
      try {
        const res = await nodes.request(id, membership.nodes[id]!, {
          method: 'POST',
          path: `/node/v1/manifest?at=${at}`,
          signal: AbortSignal.timeout(MANIFEST_TIMEOUT_MS),
          headersTimeout: MANIFEST_TIMEOUT_MS,
          bodyTimeout: MANIFEST_TIMEOUT_MS,
        });
        const body = await res.body.json().catch(() => null);
        if (res.statusCode !== 200) throw errorFromBody(res.statusCode, body);
        return { id, manifest: body as Manifest };
      } catch (e) {
        return { id, error: e instanceof DfsError ? `${e.code}: ${e.message}` : String(e) };
      }
    }),
  );
  return compareManifests(at, manifests);
}
