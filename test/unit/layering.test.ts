/*
 * The folders' layering (DESIGN.md, Folders): common ← storage, mount, proxy ← cli. Each
 * source file's relative imports are read from the TypeScript sources; a folder may import
 * only from itself and the folders below it, and no chain of imports comes back to where
 * it started (an import loop makes module load order, and so undefined exports, depend on
 * who is imported first).
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../../cli/cluster-processes';

/** What each folder may import from, besides itself. */
const ALLOWED: Record<string, string[]> = {
  common: [],
  storage: ['common'],
  mount: ['common'],
  proxy: ['common'],
  cli: ['common', 'storage', 'mount', 'proxy'],
};

function sources(): string[] {
  const files: string[] = [];
  for (const folder of Object.keys(ALLOWED)) {
    for (const entry of readdirSync(join(REPO_ROOT, folder), { withFileTypes: true, recursive: true })) {
      if (entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) files.push(join(entry.parentPath ?? entry.path, entry.name));
    }
  }
  return files;
}

/** The repository-relative files a source imports at run time (type-only imports vanish). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found: string[] = [];
  for (const match of text.matchAll(/^(?:import|export)\s+(type\s+)?[^'";]*?from\s+'(\.{1,2}\/[^']+)'/gm)) {
    if (match[1] !== undefined) continue;
    found.push(relative(REPO_ROOT, resolve(dirname(file), match[2]!)) + '.ts');
  }
  return found;
}

test('each folder imports only from itself and the folders below it', () => {
  const wrong: string[] = [];
  for (const file of sources()) {
    const from = relative(REPO_ROOT, file);
    const folder = from.split('/')[0]!;
    for (const target of importsOf(file)) {
      const to = target.split('/')[0]!;
      if (to !== folder && !ALLOWED[folder]!.includes(to)) wrong.push(`${from} imports ${target}`);
    }
  }
  assert.equal(wrong, []);
});

test('no import loop', () => {
  const graph = new Map(sources().map((file) => [relative(REPO_ROOT, file), importsOf(file)]));
  const state = new Map<string, 'visiting' | 'done'>();
  const loops: string[] = [];
  const visit = (node: string, path: string[]) => {
    if (state.get(node) === 'done') return;
    if (state.get(node) === 'visiting') {
      loops.push([...path.slice(path.indexOf(node)), node].join(' -> '));
      return;
    }
    state.set(node, 'visiting');
    for (const next of graph.get(node) ?? []) if (graph.has(next)) visit(next, [...path, node]);
    state.set(node, 'done');
  };
  for (const node of graph.keys()) visit(node, []);
  assert.equal(loops, []);
});

test('the scan sees the imports it checks', () => {
  // Guards the regular expression: a file known to import across folders is found doing so.
  assert.ok(importsOf(join(REPO_ROOT, 'cli', 'node-commands.ts')).includes('proxy/leader.ts'));
  assert.ok(importsOf(join(REPO_ROOT, 'cli', 'local-cluster.ts')).includes('cli/cluster-file.ts'));
});

test.run();
