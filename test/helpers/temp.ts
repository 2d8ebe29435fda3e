/* Temporary directories that tests remove again, even when they fail. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Removes a tree, also one deeper than PATH_MAX (a brick holding a 4095-byte cluster path
 * under its own root): rmSync names every entry by its absolute path and gives up there,
 * GNU rm walks the tree with openat. */
export function removeTree(path: string): void {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENAMETOOLONG') throw e;
    const r = spawnSync('rm', ['-rf', '--one-file-system', '--', path], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`rm -rf ${path} failed: ${r.stderr}`);
  }
}

export function tempDir(prefix: string): { path: string; remove: () => void } {
  const path = mkdtempSync(join(tmpdir(), `dfs-${prefix}-`));
  // DFS_KEEP_TEMP=1 keeps them, to read the logs of a failed run.
  return { path, remove: () => (process.env.DFS_KEEP_TEMP ? undefined : removeTree(path)) };
}

/** Runs `fn` with a fresh temporary directory's path, and removes the directory after it,
 * even when it fails. */
export async function withTempDir<T>(prefix: string, fn: (dir: string) => T | Promise<T>): Promise<T> {
  const dir = tempDir(prefix);
  try {
    return await fn(dir.path);
  } finally {
    dir.remove();
  }
}
