/*
 * The status page (issue 18, acceptance 3; proxy/status-page.ts) in a real browser:
 * Debian's chromium, headless, driven by playwright-core, against a real cluster of three
 * storage nodes and two proxies while a client sends ops.
 *
 * The page shows the leader, epoch and sequence ID and every node in sync; a backup is
 * killed and the page shows it down within 5 s (heartbeats lapse after 3 s, the page
 * refreshes every second); it is started again and the page shows it back in sync. The
 * screenshots go to DFS_TEST_OUTPUT_DIR (default: test-output/ in the checkout), under
 * status-page/, for a person to look at.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startCluster, type Cluster } from '../../cli/local-cluster';
import { TestClient } from '../helpers/client';
import { pollFor } from '../helpers/mounted-cluster';
import { tempDir } from '../helpers/temp';
import { clusterStatus } from '../helpers/workload';

const s = suite('status-page');
/** The bound: a killed backup shows as down on the page within this. */
const DOWN_SHOWN_MS = 5_000;
const CHROMIUM = '/usr/bin/chromium';
const outputDir = resolve(process.env.DFS_TEST_OUTPUT_DIR ?? join(__dirname, '..', '..', '..', 'test-output'), 'status-page');
const ctx: { cluster?: Cluster; dir?: ReturnType<typeof tempDir>; client?: TestClient; browser?: Browser; stopLoad?: () => Promise<void> } = {};

s.before(async () => {
  mkdirSync(outputDir, { recursive: true });
  ctx.dir = tempDir('status-page');
  ctx.cluster = await startCluster({ dataDir: join(ctx.dir.path, 'data'), nodes: 3, proxies: 2 });
  ctx.client = new TestClient(ctx.cluster.proxyUrls[0]!);
  ctx.browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox'], timeout: 60_000 });
});

s.after(async () => {
  await ctx.stopLoad?.();
  await ctx.browser?.close();
  await ctx.client?.close();
  await ctx.cluster?.stop();
  ctx.dir?.remove();
});

/** Ops in a loop until stopped, so the page has a rate and a latency to show. */
function startLoad(client: TestClient): () => Promise<void> {
  let running = true;
  const loop = (async () => {
    for (let i = 0; running; i++) {
      // Each mkdir is one op; failures while a node is away are retried by the next one.
      await client.op({ type: 'mkdir', path: `/d${i}`, mode: 0o755, uid: 0, gid: 0 }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  return async () => {
    running = false;
    await loop;
  };
}

async function nodeState(page: Page, id: string): Promise<string | null> {
  const cell = page.locator(`tr[data-node="${id}"] td[data-state]`);
  return (await cell.count()) === 1 ? await cell.getAttribute('data-state') : null;
}

s('the page shows the cluster; a killed backup shows down within 5 s, then back in sync', async () => {
  const { cluster, client, browser } = ctx as Required<typeof ctx>;
  ctx.stopLoad = startLoad(client);
  const proxy = cluster.records().find((r) => r.kind === 'proxy')!;
  assert.ok(proxy.adminUrl, 'the proxy records its admin URL');
  const page = await browser.newPage({ viewport: { width: 1280, height: 480 } });
  await page.goto(`${proxy.adminUrl}/ui`, { timeout: 30_000 });
  assert.is(await page.title(), 'dfs status');

  const status = await clusterStatus(client);
  const m = status.membership!;
  const backup = m.inSync.find((id) => id !== m.primary)!;
  await pollFor('every node in sync on the page', 30_000, async () => {
    for (const id of ['n1', 'n2', 'n3']) if ((await nodeState(page, id)) !== 'in-sync') return undefined;
    return true;
  });
  assert.is(await page.locator('#leader').textContent(), status.leader);
  assert.is(await page.locator('#primary').textContent(), m.primary);
  assert.ok(Number(await page.locator('#epoch').textContent()) >= 1, 'an epoch');
  // The sequence ID on the page moves with the ops the load sends.
  const seqShown = Number(await page.locator('#seq').textContent());
  await pollFor('the sequence ID to move on the page', 15_000, async () => Number(await page.locator('#seq').textContent()) > seqShown || undefined);
  await pollFor('a live op rate on the page', 15_000, async () => Number(await page.locator('#rate').textContent()) > 0 || undefined);
  assert.match((await page.locator('#latency').textContent()) ?? '', /^\d+\.\d\d ms$/);
  await page.screenshot({ path: join(outputDir, '1-in-sync.png'), fullPage: true });

  const killedAtMs = Date.now();
  cluster.killProcess('storage', backup, 'SIGKILL');
  await pollFor(`${backup} down on the page`, 30_000, async () => (await nodeState(page, backup)) === 'down' || undefined);
  const shownMs = Date.now() - killedAtMs;
  await page.screenshot({ path: join(outputDir, '2-backup-down.png'), fullPage: true });
  assert.ok(shownMs <= DOWN_SHOWN_MS, `${backup} shown down after ${shownMs} ms (bound ${DOWN_SHOWN_MS} ms)`);
  process.stdout.write(`  ${backup} killed: shown down on the page after ${shownMs} ms\n`);

  await cluster.restartProcess('storage', backup);
  await pollFor(`${backup} back in sync on the page`, 120_000, async () => (await nodeState(page, backup)) === 'in-sync' || undefined);
  const applied = Number(await page.locator(`tr[data-node="${backup}"] td`).nth(3).textContent());
  assert.ok(applied > 0, `${backup} shows an applied sequence ID`);
  await page.screenshot({ path: join(outputDir, '3-back-in-sync.png'), fullPage: true });
  process.stdout.write(`  screenshots in ${outputDir}\n`);
});

s.run();
