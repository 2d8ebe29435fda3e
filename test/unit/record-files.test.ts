/*
 * The launcher's record files (cli/record-files.ts: cluster.json, the supervisor's notes):
 * a record cut short is read from its previous version; cluster.json's lock gets past an
 * empty lock file (the lock's own cases are test/unit/file-lock.test.ts: an empty lock, one
 * naming no holder, one whose holder is gone).
 */
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { clusterFilePath, readClusterFile, withClusterLock, writeClusterFile, type ClusterFile } from '../../cli/local-cluster';
import { LOCK_UNWRITTEN_MS } from '../../cli/file-lock';
import { redisPersistenceErrors } from '../../cli/probes';
import { readRecordFile, writeRecordFile } from '../../cli/record-files';
import { readRestartProblems, RestartNotes, SUPERVISOR_NOTES_FILE } from '../../cli/supervisor-notes';
import { withTempDir } from '../helpers/temp';

/** Makes a file look `ageMs` old. */
function age(file: string, ageMs: number): void {
  const t = (Date.now() - ageMs) / 1000;
  utimesSync(file, t, t);
}

test('withClusterLock gets past an empty lock file that is not new', () =>
  withTempDir('records', async (dir) => {
    const lock = `${clusterFilePath(dir)}.lock`;
    writeFileSync(lock, '');
    age(lock, LOCK_UNWRITTEN_MS + 1000);
    const started = Date.now();
    assert.is(await withClusterLock(dir, () => 'held'), 'held');
    assert.ok(Date.now() - started < 2000, 'without waiting out the lock timeout');
    assert.not.ok(existsSync(lock), 'released');
  }));

test('a record cut short is replaced by the one before it', () =>
  withTempDir('records', (dir) => {
    const file = join(dir, 'r.json');
    writeRecordFile(file, '{"v":1}');
    writeRecordFile(file, '{"v":2}');
    assert.equal(readRecordFile(file, JSON.parse), { value: { v: 2 }, recovered: false });
    writeFileSync(file, '{"v":');
    assert.equal(readRecordFile(file, JSON.parse), { value: { v: 1 }, recovered: true });
    writeRecordFile(file, '{"v":3}');
    assert.equal(readRecordFile(file, JSON.parse), { value: { v: 3 }, recovered: false }, 'the next write replaces the damaged one');
    assert.is(readRecordFile(join(dir, 'none.json'), JSON.parse), null);
  }));

test('cluster.json cut short is read from its previous version', () =>
  withTempDir('records', (dir) => {
    const description: ClusterFile = { version: 1, dataDir: dir, createdAt: 'now', redisUrl: 'redis://x', proxyUrls: [], processes: [], mounts: [] };
    writeClusterFile(description);
    writeClusterFile({ ...description, proxyUrls: ['http://p1'] });
    const file = clusterFilePath(dir);
    writeFileSync(file, readFileSync(file, 'utf8').slice(0, 20));
    assert.equal(readClusterFile(dir)?.proxyUrls, [], 'the version before the damaged one');
    // With no good version at all, the error says what to do.
    writeFileSync(file, '');
    writeFileSync(`${file}.prev`, '');
    assert.throws(() => readClusterFile(dir), /not valid JSON/);
  }));

test('the supervisor records why a restart fails, for dfs local status, and forgets it once it succeeds', () =>
  withTempDir('records', (dir) => {
    const writeErrors: Error[] = [];
    const notes = new RestartNotes(dir, (e) => writeErrors.push(e));
    assert.equal(readRestartProblems(dir), {});
    notes.failed('storage', 'n2', 'cluster.json.lock is held', new Date(0));
    notes.failed('storage', 'n2', 'ENOSPC', new Date(1000));
    assert.equal(readRestartProblems(dir), { 'storage:n2': { error: 'ENOSPC', since: new Date(0).toISOString(), failures: 2 } });
    notes.started('storage', 'n2');
    assert.equal(readRestartProblems(dir), {});
    // A notes file cut short reads as the version before; one that cannot be read, as none.
    notes.failed('proxy', 'p1', 'x');
    writeFileSync(join(dir, SUPERVISOR_NOTES_FILE), '{"pro');
    assert.equal(readRestartProblems(dir), {});
    writeFileSync(join(dir, `${SUPERVISOR_NOTES_FILE}.prev`), 'nonsense');
    writeFileSync(join(dir, SUPERVISOR_NOTES_FILE), '');
    assert.equal(readRestartProblems(dir), {});
    assert.equal(writeErrors, []);
  }));

test("Redis's persistence errors are read from INFO persistence (a full disk stops its append-only file)", () => {
  const ok = '# Persistence\r\nloading:0\r\nrdb_last_bgsave_status:ok\r\naof_enabled:1\r\naof_last_bgrewrite_status:ok\r\naof_last_write_status:ok\r\n';
  assert.equal(redisPersistenceErrors(ok), []);
  assert.equal(redisPersistenceErrors(ok.replace('aof_last_write_status:ok', 'aof_last_write_status:err')), ['aof_last_write_status']);
});

test.run();
