/*
 * The mount's table of open files that lost their names (mount/orphans.ts): how libfuse's
 * hidden names map to orphans, and which orphans a new mount may remove.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inRenameSyscall, isReservedPath, ORPHANS_DIR, orphanOwner, orphanPrefix, OrphanTable } from '../../mount/orphans';

test('hidden names resolve to their orphan, following renames of their directory; other paths are unchanged', () => {
  const t = new OrphanTable(orphanPrefix(4242, 'host-a'));
  const orphan = t.nextPath();
  assert.is(orphan, `${ORPHANS_DIR}/host-a.4242.1`);
  assert.is(t.nextPath(), `${ORPHANS_DIR}/host-a.4242.2`, 'every orphan gets a name of its own');
  t.add('/d/.fuse_hidden0000000300000001', orphan, null);
  assert.is(t.resolve('/d/.fuse_hidden0000000300000001'), orphan);
  assert.is(t.resolve('/e/.fuse_hidden0000000300000001'), '/e/.fuse_hidden0000000300000001', 'the same name in another directory is not it');
  t.rename('/d', '/renamed/dir');
  assert.is(t.resolve('/renamed/dir/.fuse_hidden0000000300000001'), orphan, 'the directory was renamed');
  assert.is(t.resolve('/d/.fuse_hidden0000000300000001'), '/d/.fuse_hidden0000000300000001');
  assert.is(t.resolve('/d/.fuse_hidden0000000300000002'), '/d/.fuse_hidden0000000300000002', 'not one of ours');
  assert.is(t.resolve('/d/f'), '/d/f');
  assert.is(t.resolve('/d/.fuse_hidden00000003'), '/d/.fuse_hidden00000003', 'not libfuse pattern');
  assert.ok(OrphanTable.isHiddenName('/x/.fuse_hidden0123456789abcdef'));
  assert.not.ok(OrphanTable.isHiddenName('/x/.fuse_hidden0123456789abcdef.txt'));
  assert.ok(t.isOrphan(orphan));
  assert.not.ok(t.isOrphan('/d/f'));
});

test('a retired orphan answers libfuse\'s later unlink of the hidden name once', () => {
  const t = new OrphanTable('h.1.');
  const orphan = t.nextPath();
  t.add('/a/.fuse_hidden0000000a00000001', orphan, null);
  assert.is(t.size, 1);
  t.retire(orphan);
  assert.is(t.size, 0);
  assert.is(t.resolve('/a/.fuse_hidden0000000a00000001'), '/a/.fuse_hidden0000000a00000001', 'no longer mapped');
  assert.ok(t.takeRetired('/a/.fuse_hidden0000000a00000001'));
  assert.not.ok(t.takeRetired('/a/.fuse_hidden0000000a00000001'), 'only once');
  assert.not.ok(t.wasRenamedOver('/a/.fuse_hidden0000000a00000001'), 'it was unlinked');
});

test('a file a rename replaced while open: once its orphan is gone, its hidden name stands for the name it was replaced at', () => {
  const t = new OrphanTable('h.1.');
  const orphan = t.nextPath();
  t.add('/a/.fuse_hidden0000000b00000002', orphan, '/a/t');
  assert.is(t.resolve('/a/.fuse_hidden0000000b00000002'), orphan, 'while the orphan exists');
  assert.is(t.orphanOf('/a/.fuse_hidden0000000b00000002'), orphan);
  t.retire(orphan);
  assert.is(t.orphanOf('/a/.fuse_hidden0000000b00000002'), undefined);
  assert.is(t.resolve('/a/.fuse_hidden0000000b00000002'), '/a/t', 'what the name holds now');
  assert.ok(t.wasRenamedOver('/a/.fuse_hidden0000000b00000002'));
  assert.is(t.resolveSource('/a/.fuse_hidden0000000b00000002'), '/a/.fuse_hidden0000000b00000002', 'never the name as what a rename or link takes');
  t.rename('/a', '/b');
  assert.is(t.resolve('/b/.fuse_hidden0000000b00000002'), '/b/t', 'its directory was renamed');
  assert.ok(t.takeRetired('/b/.fuse_hidden0000000b00000002'));
  assert.is(t.resolve('/b/.fuse_hidden0000000b00000002'), '/b/t', 'still, after libfuse unlinked the hidden name');
  assert.is(t.resolve('/c/.fuse_hidden0000000b00000002'), '/c/.fuse_hidden0000000b00000002', 'not in another directory');
});

test('the orphan directory is reserved; orphans name the host and pid that made them', () => {
  assert.ok(isReservedPath(ORPHANS_DIR));
  assert.ok(isReservedPath(`${ORPHANS_DIR}/x`));
  assert.not.ok(isReservedPath('/.dfs-orphans-not'));
  assert.not.ok(isReservedPath('/d/.dfs-orphans'));
  assert.is(orphanOwner('host-a.4242.17', 'host-a'), 4242);
  assert.is(orphanOwner('host-b.4242.17', 'host-a'), null, 'another host');
  assert.is(orphanOwner('host-a.x.17', 'host-a'), null);
  assert.is(orphanPrefix(7, 'we.ird/host'), 'we_ird_host.7.', 'the host name is made safe for a file name');
  assert.is(orphanOwner('we_ird_host.7.1', 'we.ird/host'), 7);
});

test('a thread that is not in rename(2), or does not exist, is not reported as renaming', () => {
  assert.is.not(inRenameSyscall(process.pid), true, 'this thread is running JavaScript');
  assert.is(inRenameSyscall(0), null);
  assert.is(inRenameSyscall(2 ** 30), null, 'no such thread');
});

test.run();
