/* The cluster's capacity is its fullest node's: each figure at its smallest. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { smallestStatFs } from '../../proxy/app';

test('each figure is the smallest across nodes, in one block size', () => {
  const a = { bsize: 4096, blocks: 1000, bfree: 600, bavail: 500, files: 100, ffree: 90, namemax: 255 };
  const b = { bsize: 1024, blocks: 8000, bfree: 1200, bavail: 2400, files: 50, ffree: 40, namemax: 255 };
  assert.equal(smallestStatFs([a, b]), { bsize: 4096, blocks: 1000, bfree: 300, bavail: 500, files: 50, ffree: 40, namemax: 255 });
  assert.equal(smallestStatFs([b]), b);
});

test.run();
