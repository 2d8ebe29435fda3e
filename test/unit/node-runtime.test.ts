import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../../cli/cluster-processes';
import { NODE_RUNTIME_FLAGS } from '../../common/node-runtime';

const ROOT = REPO_ROOT;

test('bin/dfs-mount starts node with the runtime flags every dfs process gets', () => {
  const first = readFileSync(join(ROOT, 'bin', 'dfs-mount'), 'utf8').split('\n')[0]!;
  assert.is(first, `#!/usr/bin/env -S node ${NODE_RUNTIME_FLAGS.join(' ')}`);
});

test('the flags are ones node takes on its command line', async () => {
  const { execFileSync } = await import('node:child_process');
  const out = execFileSync(process.execPath, [...NODE_RUNTIME_FLAGS, '-e', 'process.stdout.write("ok")'], { encoding: 'utf8' });
  assert.is(out, 'ok');
});

test.run();
