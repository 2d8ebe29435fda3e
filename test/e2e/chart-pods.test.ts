/*
 * The chart's pods, run as processes (issue 17, acceptance 2). test/helpers/chart-pods.ts
 * says how a rendered pod becomes processes: its own network namespace and address, the
 * cluster's DNS names in its hosts file, its volumes as directories, its init containers
 * and then its container with the command, args and environment as rendered, its probes
 * run as the kubelet would.
 *
 * The chart is rendered (3 storage nodes, 2 proxies, Redis, the admin pod); every pod
 * starts and every readiness probe reaches ready; a mount (its own namespace) mounts the
 * proxies' Service name; the helm test hook's command passes. Then, under a write workload
 * through the mount: the primary's pod is deleted (SIGTERM, its grace period) and started
 * again on the same volume; storage is scaled 3 → 4 and back by NOTES.txt's commands; and
 * every storage pod is restarted one at a time, highest ordinal first, as a StatefulSet
 * rolls. After each step `dfs verify` (from the admin pod) passes; at the end the workload
 * saw no error and every acknowledged byte is there. Pods the NetworkPolicies keep apart
 * both ways are cut apart, so the run needs no flow the policies refuse.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, promises as fsp, writeFileSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { issueCert } from '../../cli/certs';
import { ADMIN_CREDENTIAL } from '../../common/credential';
import { parseMetricsText } from '../bench/cost';
import { pollUntil } from '../helpers/client';
import { CHART_DIR, helm, REPO_ROOT, renderChart, type K8sObject } from '../helpers/k8s-manifests';
import { fuseMounted, Pod, PodHost, podSpecOfWorkload, type ContainerSpec } from '../helpers/chart-pods';
import { NetLab } from '../helpers/netns';
import { removeTree } from '../helpers/mounted-cluster';

const s = suite('chart pods');
const NS = 'dfs-test';
const REL = 'rel';
const STORAGE = `${REL}-dfs-storage`;
const PROXY_SERVICE = `${REL}-dfs-proxy.${NS}.svc.cluster.local`;
const PROXIES = [`${REL}-dfs-proxy-6f7c9-a1`, `${REL}-dfs-proxy-6f7c9-b2`];
const STORAGE_PODS = [0, 1, 2, 3].map((i) => `${STORAGE}-${i}`);
const PARTIES = [`${REL}-dfs-redis-0`, ...STORAGE_PODS, ...PROXIES, `${REL}-dfs-admin-x1`, `${REL}-dfs-selftest`, 'client'];
const READY_TIMEOUT_MS = 60_000;
const WRITERS = 4;
const CHUNK_BYTES = 1024;

interface Ctx {
  root?: string;
  lab?: NetLab;
  host?: PodHost;
  objs3?: K8sObject[];
  objs4?: K8sObject[];
  current?: K8sObject[];
  pods: Map<string, Pod>;
  mount?: ChildProcess;
  mountpoint?: string;
  skip?: string;
}
const ctx: Ctx = { pods: new Map() };

function workload(objs: K8sObject[], kind: string, component: string): K8sObject {
  const o = objs.find((x) => x.kind === kind && x.metadata.labels?.['app.kubernetes.io/component'] === component);
  assert.ok(o, `${kind} ${component}`);
  return o!;
}

function storagePod(i: number): Pod {
  const name = STORAGE_PODS[i]!;
  let pod = ctx.pods.get(name);
  if (!pod) {
    const sts = workload(i < 3 ? ctx.objs3! : ctx.objs4!, 'StatefulSet', 'storage');
    const claims = ((sts.spec as { volumeClaimTemplates: Array<{ metadata: { name: string } }> }).volumeClaimTemplates).map((c) => c.metadata.name);
    pod = new Pod(ctx.host!, name, podSpecOfWorkload(sts), claims);
    ctx.pods.set(name, pod);
  }
  return pod;
}

async function waitReady(pods: Pod[], what: string, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  await pollUntil(what, timeoutMs, async () => {
    for (const pod of pods) if (pod.exit !== null) throw new Error(`${pod.name} exited (${JSON.stringify(pod.exit)}); see ${pod.log}`);
    return pods.every((pod) => pod.ready);
  }, 200);
}

function adminPod(): Pod {
  return ctx.pods.get(`${REL}-dfs-admin-x1`)!;
}

/** `kubectl exec deploy/…-admin -- CMD`: the admin container's environment, its namespace. */
async function adminExec(command: string, timeoutMs = 90_000): Promise<string> {
  const pod = adminPod();
  const container = pod.spec.containers[0] as ContainerSpec;
  const r = await pod.exec(container, ['sh', '-c', command], timeoutMs);
  assert.is(r.code, 0, `${command}:\n${r.output}`);
  return r.output;
}

async function verify(step: string): Promise<void> {
  const out = await adminExec('dfs verify');
  console.log(`  ${step}: dfs verify passed (${out.trim().split('\n').at(-1)})`);
}

function scrape(pod: Pod, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: pod.addr, port, path: '/metrics', timeout: 5000, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', reject);
  });
}

async function primaryIndex(): Promise<number> {
  const adminPort = (storagePod(0).spec.containers[0]!.ports ?? []).find((p) => p.name === 'admin')!.containerPort;
  for (let i = 0; i < 3; i++) {
    const samples = parseMetricsText(await scrape(storagePod(i), adminPort));
    if (samples.some((x) => x.name === 'dfs_storage_role' && x.labels.role === 'primary' && x.value === 1)) return i;
  }
  throw new Error('no storage pod reports the primary role');
}

/** Writers appending through the mount, each to its own file; what each acknowledged. */
class Writers {
  readonly expected: Buffer[] = Array.from({ length: WRITERS }, () => Buffer.alloc(0));
  acknowledged = 0;
  readonly errors: string[] = [];
  private running = true;
  private readonly done: Promise<void[]>;

  constructor(private readonly dir: string) {
    this.done = Promise.all(Array.from({ length: WRITERS }, (_, k) => this.writer(k)));
  }

  private async writer(k: number): Promise<void> {
    let round = 0;
    while (this.running) {
      const chunk = Buffer.alloc(CHUNK_BYTES, `${k}:${round++};`);
      try {
        await fsp.appendFile(join(this.dir, `w${k}`), chunk);
        this.expected[k] = Buffer.concat([this.expected[k]!, chunk]);
        this.acknowledged++;
      } catch (e) {
        this.errors.push(`${new Date().toISOString()} w${k}: ${(e as Error).message}`);
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.done;
  }
}

s.before(async () => {
  const lab = NetLab.create(PARTIES);
  if (typeof lab === 'string') {
    ctx.skip = lab;
    return;
  }
  ctx.lab = lab;
  ctx.root = mkdtempSync(join(tmpdir(), 'dfs-chart-pods-'));
  // The pods run as the users their securityContext names: they must reach their volumes.
  chmodSync(ctx.root, 0o755);
  ctx.objs3 = renderChart({ release: REL, namespace: NS });
  ctx.objs4 = renderChart({ release: REL, namespace: NS, set: ['storage.replicas=4'] });
  // One render of the Secrets for the whole test, as one install: the second render's
  // random passwords and CA must not be mixed in.
  const secrets = ctx.objs3.filter((o) => o.kind === 'Secret');
  ctx.objs4 = [...ctx.objs4.filter((o) => o.kind !== 'Secret'), ...secrets];
  ctx.current = ctx.objs3;
  ctx.host = new PodHost(lab, ctx.root, () => ctx.current!, () => {
    const dns = new Map<string, string[]>();
    dns.set(`${REL}-dfs-redis.${NS}.svc.cluster.local`, [`${REL}-dfs-redis-0`]);
    for (const pod of STORAGE_PODS) dns.set(`${pod}.${STORAGE}.${NS}.svc.cluster.local`, [pod]);
    dns.set(PROXY_SERVICE, PROXIES);
    return dns;
  });
  ctx.host.writeHosts();
  // The NetworkPolicies, as far as routes can say them: a pair of pods between which the
  // policies allow no connection either way is cut both ways. (A one-way cut would also
  // drop the answers of a connection the other way, which a policy lets through, so
  // pairs with a flow one way stay whole; ports are not told apart.) So everything below
  // runs on the flows docs/cluster.md lists and nothing else.
  const cuts = unreachablePairs(ctx.objs4);
  for (const [a, b] of cuts) ctx.lab.split([a], [b]);
  console.log(`  cut both ways, as the NetworkPolicies allow nothing between them: ${cuts.map(([a, b]) => `${short(a)}–${short(b)}`).join(', ')}`);
});

function short(pod: string): string {
  return pod.replace(`${REL}-dfs-`, '');
}

/** Each party's labels: the pod template's, or none (the mount is outside the release). */
function labelsOf(objs: K8sObject[], party: string): Record<string, string> {
  const component = party.startsWith(STORAGE) ? 'storage' : party.startsWith(`${REL}-dfs-proxy`) ? 'proxy' : party.startsWith(`${REL}-dfs-redis`) ? 'redis' : party.startsWith(`${REL}-dfs-admin`) ? 'admin' : party === `${REL}-dfs-selftest` ? 'test' : null;
  if (component === null) return {};
  const o = objs.find((x) => x.metadata.labels?.['app.kubernetes.io/component'] === component && (x.kind === 'Pod' || x.kind === 'StatefulSet' || x.kind === 'Deployment'))!;
  return o.kind === 'Pod' ? o.metadata.labels! : (o.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
}

type Selector = { matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> };
function selects(selector: Selector, labels: Record<string, string>): boolean {
  if (Object.keys(labels).length === 0) return false;
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) if (e.operator === 'In' && !(e.values ?? []).includes(labels[e.key] ?? '')) return false;
  return true;
}

/** May `from` open a connection to `to` under the rendered NetworkPolicies (any port)? */
function allowed(objs: K8sObject[], from: string, to: string): boolean {
  const policies = objs.filter((o) => o.kind === 'NetworkPolicy').map((o) => o.spec as { podSelector: Selector; ingress?: Array<{ from?: Array<{ podSelector?: Selector; namespaceSelector?: Selector }> }> });
  const applying = policies.filter((p) => selects(p.podSelector, labelsOf(objs, to)));
  if (applying.length === 0) return true;
  return applying.some((p) => (p.ingress ?? []).some((rule) => rule.from === undefined || rule.from.some((peer) => peer.podSelector !== undefined && peer.namespaceSelector === undefined && selects(peer.podSelector, labelsOf(objs, from)))));
}

function unreachablePairs(objs: K8sObject[]): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  PARTIES.forEach((a, i) => {
    for (const b of PARTIES.slice(i + 1)) {
      if (!allowed(objs, a, b) && !allowed(objs, b, a)) pairs.push([a, b]);
    }
  });
  return pairs;
}

s.after(async () => {
  if (ctx.mount && ctx.mount.exitCode === null) {
    ctx.mount.kill('SIGTERM');
    await pollUntil('the mount to exit', 20_000, async () => ctx.mount!.exitCode !== null || ctx.mount!.signalCode !== null).catch(() => ctx.mount!.kill('SIGKILL'));
  }
  for (const pod of ctx.pods.values()) pod.stopNow();
  ctx.lab?.destroy();
  ctx.host?.cleanup();
  if (ctx.root && !process.env.DFS_TEST_KEEP_LOGS) removeTree(ctx.root);
});

s('the rendered pods start, reach ready, serve a mount through the Service name, and pass the helm test command', async () => {
  if (ctx.skip) {
    console.log(`  skipped: ${ctx.skip}`);
    return;
  }
  const objs = ctx.objs3!;
  const redis = new Pod(ctx.host!, `${REL}-dfs-redis-0`, podSpecOfWorkload(workload(objs, 'StatefulSet', 'redis')), ['data']);
  ctx.pods.set(redis.name, redis);
  await redis.start();
  await waitReady([redis], 'Redis ready');
  // Parallel: the storage pods at once, and the proxies (a Deployment) beside them.
  const proxySpec = podSpecOfWorkload(workload(objs, 'Deployment', 'proxy'));
  const proxies = PROXIES.map((name) => new Pod(ctx.host!, name, proxySpec));
  for (const p of proxies) ctx.pods.set(p.name, p);
  const admin = new Pod(ctx.host!, `${REL}-dfs-admin-x1`, podSpecOfWorkload(workload(objs, 'Deployment', 'admin')));
  ctx.pods.set(admin.name, admin);
  const storage = [0, 1, 2].map(storagePod);
  await Promise.all([...storage, ...proxies, admin].map((p) => p.start()));
  await waitReady([...storage, ...proxies], 'every storage pod in sync and every proxy ready');
  console.log('  every readiness probe ready: 3 storage pods (in-sync members), 2 proxies, Redis');

  // The mount, in a namespace of its own, names the proxies' Service.
  const credDir = join(ctx.root!, 'credential');
  mkdirSync(credDir, { recursive: true, mode: 0o700 });
  const ca = ctx.host!.secret(`${REL}-dfs-ca`);
  writeFileSync(join(credDir, 'ca.crt'), ca['ca.crt']!);
  writeFileSync(join(credDir, 'ca.key'), ca['ca.key']!, { mode: 0o600 });
  const files = issueCert(credDir, 'app', { role: 'mount', credential: ADMIN_CREDENTIAL });
  const mountpoint = join(ctx.root!, 'mnt');
  mkdirSync(mountpoint);
  ctx.mountpoint = mountpoint;
  const mountLog = join(ctx.root!, 'logs', 'mount.log');
  const ns = ctx.lab!.party('client').ns;
  const logFd = openSync(mountLog, 'a');
  ctx.mount = spawn('ip', ['netns', 'exec', ns, join(REPO_ROOT, 'bin', 'dfs-mount'), mountpoint, '-f', '--proxy', `https://${PROXY_SERVICE}:7400`, '--ca', files.ca, '--cert', files.cert, '--key', files.key], { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const mountPid = ctx.mount.pid!;
  await pollUntil('the mount through the Service name', 20_000, async () => {
    if (ctx.mount!.exitCode !== null) throw new Error(`dfs-mount exited ${ctx.mount!.exitCode}; see ${mountLog}`);
    return fuseMounted(mountPid, mountpoint);
  }, 100);
  const seen = `/proc/${mountPid}/root${mountpoint}`;
  await fsp.writeFile(join(seen, 'hello'), 'through the Service\n');
  assert.is(await fsp.readFile(join(seen, 'hello'), 'utf8'), 'through the Service\n');

  // helm test: the hook pod's command, to its end.
  const hook = new Pod(ctx.host!, `${REL}-dfs-selftest`, podSpecOfWorkload(workload(objs, 'Pod', 'test')));
  ctx.pods.set(hook.name, hook);
  await hook.start();
  await pollUntil('the helm test pod to finish', 120_000, async () => hook.exit !== null, 200);
  assert.equal(hook.exit, { code: 0, signal: null }, `dfs selftest failed; see ${hook.log}`);
  console.log('  helm test (dfs selftest through the Service) passed');
  await verify('after the start');
});

s('a deleted storage pod, the scale 3 → 4 → 3 of NOTES.txt and a rolling restart cost the workload no error and no acknowledged write', async () => {
  if (ctx.skip) {
    console.log(`  skipped: ${ctx.skip}`);
    return;
  }
  const dir = join(`/proc/${ctx.mount!.pid!}/root${ctx.mountpoint!}`, 'work');
  await fsp.mkdir(dir);
  const writers = new Writers(dir);
  const settle = () => pollUntil('more acknowledged writes', 20_000, async () => {
    const before = writers.acknowledged;
    await new Promise((r) => setTimeout(r, 300));
    return writers.acknowledged > before + 10;
  });
  try {
    await settle();
    // 1. The primary's pod deleted, then started again on the same volume.
    const p = await primaryIndex();
    const victim = storagePod(p);
    const stopped = await victim.delete();
    console.log(`  deleted ${victim.name} (the primary): exited ${JSON.stringify(stopped.exit)} after ${stopped.ms} ms${stopped.killed ? ' (SIGKILL after the grace period)' : ''}`);
    assert.not.ok(stopped.killed, 'the primary exited within its grace period');
    assert.is(stopped.exit.code, 0);
    await settle();
    await victim.start();
    await waitReady([0, 1, 2].map(storagePod), `${victim.name} in sync again`);
    await settle();
    await verify(`after deleting ${victim.name}`);

    // 2. Scale up: storage.replicas=4 starts rel-dfs-storage-3.
    ctx.current = ctx.objs4;
    const fourth = storagePod(3);
    await fourth.start();
    await waitReady([0, 1, 2, 3].map(storagePod), `${fourth.name} in sync`);
    await settle();
    await verify('after scaling to 4');

    // 3. Scale down by NOTES.txt: drain, remove the pod, delete its claim.
    const rendered = helm(['install', REL, CHART_DIR, '--namespace', NS, '--dry-run=client', '--set', 'storage.replicas=4']).stdout;
    const notes = rendered.slice(rendered.indexOf('\nNOTES:\n'));
    const drain = notes.split('\n').find((line) => line.includes('dfs node remove'));
    assert.ok(drain, `NOTES.txt names dfs node remove:\n${notes}`);
    assert.match(drain!, new RegExp(`exec deploy/${REL}-dfs-admin -- `));
    const command = drain!.slice(drain!.indexOf(' -- ') + 4).trim();
    assert.ok(command.includes(`${STORAGE}-3`), command);
    const out = await adminExec(command);
    console.log(`  ${command}: ${out.trim().split('\n').at(-1)}`);
    const gone = await fourth.delete();
    assert.not.ok(gone.killed);
    fourth.deleteClaims();
    ctx.current = ctx.objs3;
    await settle();
    await verify('after scaling back to 3');

    // 4. A rolling restart: one pod at a time, highest ordinal first, each ready before the next.
    for (const i of [2, 1, 0]) {
      const pod = storagePod(i);
      const r = await pod.delete();
      assert.not.ok(r.killed, `${pod.name} exited within its grace period`);
      await pod.start();
      await waitReady([0, 1, 2].map(storagePod), `${pod.name} in sync after its restart`);
      console.log(`  restarted ${pod.name}: stopped in ${r.ms} ms, in sync again`);
    }
    await settle();
    await verify('after the rolling restart');
  } finally {
    await writers.stop();
  }
  assert.equal(writers.errors, [], 'the workload saw errors');
  let bytes = 0;
  for (let k = 0; k < WRITERS; k++) {
    const got = await fsp.readFile(join(dir, `w${k}`));
    assert.ok(got.equals(writers.expected[k]!), `w${k}: ${got.length} bytes read back, ${writers.expected[k]!.length} acknowledged`);
    bytes += got.length;
  }
  for (const pod of ctx.pods.values()) {
    const liveness = pod.spec.containers[0]!.livenessProbe as { failureThreshold?: number } | undefined;
    if (liveness) assert.ok(pod.livenessFailuresMax < (liveness.failureThreshold ?? 3), `${pod.name} failed its liveness probe ${pod.livenessFailuresMax} times in a row`);
  }
  console.log(`  ${writers.acknowledged} writes acknowledged (${bytes} bytes), 0 errors, 0 lost`);
  await verify('at the end');
});

s.run();
