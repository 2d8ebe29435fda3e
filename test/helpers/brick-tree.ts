/* A brick's tree as comparable data: every entry's type, mode, owner, size, content hash,
 * link target and mtime, so tests can check that replicas are byte-identical. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export interface TreeEntry {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  mtimeMs: number;
  sha256?: string;
  target?: string;
}

export function brickTree(root: string): Record<string, TreeEntry> {
  const out: Record<string, TreeEntry> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = `${rel}/${name}`;
      const abs = join(root, p);
      const st = lstatSync(abs);
      const e: TreeEntry = { mode: st.mode, uid: st.uid, gid: st.gid, size: st.isDirectory() ? 0 : st.size, nlink: st.isDirectory() ? 0 : st.nlink, mtimeMs: Math.round(st.mtimeMs) };
      if (st.isFile()) e.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
      if (st.isSymbolicLink()) e.target = readlinkSync(abs);
      out[p] = e;
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out;
}
