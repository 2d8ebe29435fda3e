/* A brick's tree as comparable data: every entry's type, mode, owner, size, content hash,
 * link target and mtime as clients see them (the brick keeps owners, modes and file types
 * in its identity attribute, storage/brick.ts), so tests can check that replicas are
 * byte-identical. */
import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { attrOf, readMeta } from '../../storage/brick';

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

const S_IFMT = 0o170000;

export function brickTree(root: string): Record<string, TreeEntry> {
  const out: Record<string, TreeEntry> = {};
  const walk = (rel: string) => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const p = `${rel}/${name}`;
      const abs = join(root, p);
      const st = lstatSync(abs);
      const a = attrOf(st, readMeta(abs));
      const e: TreeEntry = { mode: a.mode, uid: a.uid, gid: a.gid, size: st.isDirectory() ? 0 : st.size, nlink: st.isDirectory() ? 0 : st.nlink, mtimeMs: Math.round(st.mtimeMs) };
      if ((a.mode & S_IFMT) === 0o100000) e.sha256 = createHash('sha256').update(readFileSync(abs)).digest('hex');
      if ((a.mode & S_IFMT) === 0o120000) e.target = readFileSync(abs, 'utf8');
      out[p] = e;
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out;
}
