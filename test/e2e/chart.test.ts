/*
 * The Helm chart (issue 17, acceptance 1), without a Kubernetes cluster:
 *
 * - `helm lint --strict` and `helm template` pass for every charts/dfs/ci/*-values.yaml,
 *   and the values schema refuses a key it does not know;
 * - every rendered object passes the Kubernetes API types (an unknown field is a problem:
 *   test/helpers/k8s-manifests.ts) and the chart's rules (no version label in a claim
 *   template, budgets by maxUnavailable, every probe, Service and NetworkPolicy port one
 *   the container declares, selectors of name/instance/component only, …);
 * - a deliberate mistake is caught: an unknown field, a probe on a port not declared, a
 *   version label in the claim template, a budget by minAvailable;
 * - what the pods are given works with the real programs: the certificate issue-cert.sh
 *   makes from the rendered CA for a storage pod is accepted by dfs's TLS (a handshake
 *   that checks role and ID), and the chart's Redis, started with its rendered arguments
 *   and ACL file, takes the rendered passwords of each role over TLS and refuses the rest;
 * - every metric the dashboard the chart ships queries is in a real scrape of a local
 *   cluster and mount (the same rule as e2e/metrics, on the chart's copy).
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, promises as fsp, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Redis } from 'ioredis';
import { freePorts } from '../../cli/local-cluster';
import { REDIS_ACL_RULES, REDIS_ROLES } from '../../common/redis-auth';
import { clientConnectOptions, redisTlsOptions, serverTlsOptions, type TlsMaterial } from '../../common/tls';
import { parseMetricsText } from '../bench/cost';
import { pollUntil } from '../helpers/client';
import { CHART_DIR, helm, parseManifests, policyProblems, podTemplates, REPO_ROOT, renderChart, typeProblems, type K8sObject } from '../helpers/k8s-manifests';
import { pollFor, removeTree, startMountedCluster } from '../helpers/mounted-cluster';
import { dashboardMetricNames, type Dashboard } from '../helpers/dashboard';

const s = suite('chart');
const CI_DIR = join(CHART_DIR, 'ci');
const CI_FILES = readdirSync(CI_DIR).filter((f) => f.endsWith('-values.yaml')).sort();
const NAMESPACE = 'dfs-test';
const ctx: { tmp?: string } = {};

s.before(() => {
  ctx.tmp = mkdtempSync(join(tmpdir(), 'dfs-chart-'));
});

s.after(() => {
  if (ctx.tmp) removeTree(ctx.tmp);
});

type Container = { name: string; command?: string[]; args?: string[]; env?: Array<{ name: string; value?: string }>; ports?: Array<{ name: string; containerPort: number }>; readinessProbe?: { httpGet?: { port: string | number } } };

function find(objs: K8sObject[], kind: string, component: string): K8sObject {
  const found = objs.find((o) => o.kind === kind && o.metadata.labels?.['app.kubernetes.io/component'] === component);
  assert.ok(found, `a ${kind} of component ${component}`);
  return found!;
}

function podSpecOf(obj: K8sObject): { containers: Container[]; initContainers?: Container[]; affinity?: Record<string, unknown>; securityContext?: Record<string, unknown> } {
  return (obj.kind === 'Pod' ? obj.spec : (obj.spec as { template: { spec: unknown } }).template.spec) as ReturnType<typeof podSpecOf>;
}

function secretData(objs: K8sObject[], name: string): Record<string, string> {
  const secret = objs.find((o) => o.kind === 'Secret' && o.metadata.name === name) as { data: Record<string, string> } | undefined;
  assert.ok(secret, `the Secret ${name}`);
  return Object.fromEntries(Object.entries(secret!.data).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

/** A container's environment as the kubelet makes it: `value`s with $(VAR) references to
 * earlier variables expanded; `fieldRef`s come from `fields` (the pod's name and IP). */
function envOf(container: Container, fields: Record<string, string>): Record<string, string> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (const { name, value } of container.env ?? []) {
    if (value === undefined) {
      if (fields[name] !== undefined) env[name] = fields[name]!;
      continue;
    }
    env[name] = value.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? '');
  }
  return env;
}

// ---------------------------------------------------------------------------------------

s('helm lint --strict and helm template pass for every ci values file', () => {
  assert.ok(CI_FILES.length >= 3, `ci values files: ${CI_FILES.join(', ')}`);
  assert.ok(CI_FILES.includes('single-node-values.yaml'), 'a single-node values file');
  for (const file of CI_FILES) {
    const lint = helm(['lint', '--strict', CHART_DIR, '-f', join(CI_DIR, file)]);
    assert.is(lint.status, 0, `helm lint --strict -f ${file}:\n${lint.stdout}\n${lint.stderr}`);
    assert.match(lint.stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
    const objs = renderChart({ valuesFile: join(CI_DIR, file), namespace: NAMESPACE });
    assert.ok(objs.length >= 10, `${file}: ${objs.length} objects rendered`);
    console.log(`  ${file}: lint clean, ${objs.length} objects (${[...new Set(objs.map((o) => o.kind))].join(', ')})`);
  }
});

s('the values schema refuses what it does not know', () => {
  for (const [set, expect] of [
    ['storage.replica=3', /additional properties 'replica' not allowed/],
    ['bogus=1', /additional properties 'bogus' not allowed/],
    ['storage.antiAffinity=sometimes', /antiAffinity/],
    ['redis.externalUrl=redis://plain:6379', /externalUrl/],
    ['storage.replicas=0', /replicas/],
    ['storage.terminationGracePeriodSeconds=5', /terminationGracePeriodSeconds/],
    ['proxy.terminationGracePeriodSeconds=10', /must be at least proxy.preStopSleepSeconds \+ 15/],
  ] as const) {
    const r = helm(['template', 'rel', CHART_DIR, '--set', set]);
    assert.is.not(r.status, 0, `--set ${set} was accepted`);
    assert.match(r.stderr, expect, `--set ${set}: ${r.stderr}`);
  }
});

s('every rendered object passes the Kubernetes types and the chart rules', () => {
  for (const file of CI_FILES) {
    const objs = renderChart({ valuesFile: join(CI_DIR, file), namespace: NAMESPACE });
    const external = file === 'monitoring-values.yaml' ? ['dfs-ca-from-vault'] : [];
    const types = objs.flatMap(typeProblems);
    assert.equal(types, [], `${file}: type problems`);
    const rules = policyProblems(objs, external);
    assert.equal(rules, [], `${file}: rule problems`);
  }
});

s('a deliberate mistake is caught: an unknown field, a probe on a port not declared, a version label in a claim template, a budget by minAvailable', () => {
  const clean = renderChart({ namespace: NAMESPACE });
  const copy = () => JSON.parse(JSON.stringify(clean)) as K8sObject[];

  const unknownField = copy();
  const proxy = podSpecOf(find(unknownField, 'Deployment', 'proxy'));
  (proxy.containers[0] as unknown as Record<string, unknown>).imagePullPolicyy = 'Always';
  const typeFound = unknownField.flatMap(typeProblems);
  assert.equal(typeFound, [`Deployment/rel-dfs-proxy.spec.template.spec.containers[0].imagePullPolicyy: unknown field (not in V1Container)`]);

  const wrongType = copy();
  (find(wrongType, 'StatefulSet', 'storage').spec as Record<string, unknown>).replicas = 'three';
  assert.equal(wrongType.flatMap(typeProblems), ['StatefulSet/rel-dfs-storage.spec.replicas: wants a number, found string "three"']);

  const badProbe = copy();
  const storage = podSpecOf(find(badProbe, 'StatefulSet', 'storage'));
  storage.containers[0]!.readinessProbe!.httpGet!.port = 9999;
  const probeFound = policyProblems(badProbe);
  assert.equal(probeFound, ['StatefulSet/rel-dfs-storage container storage: the readinessProbe uses port 9999, which the container does not declare']);
  assert.equal(badProbe.flatMap(typeProblems), [], 'a well-typed mistake: only the rules see it');

  const badPolicyPort = copy();
  const policy = badPolicyPort.find((o) => o.kind === 'NetworkPolicy' && o.metadata.name === 'rel-dfs-storage') as unknown as { spec: { ingress: Array<{ ports: Array<{ port: string }> }> } };
  policy.spec.ingress[0]!.ports[0]!.port = 'metrics';
  assert.equal(policyProblems(badPolicyPort), ['NetworkPolicy/rel-dfs-storage: allows port "metrics", which no container of StatefulSet/rel-dfs-storage declares']);

  const versionedClaim = copy();
  const claims = (find(versionedClaim, 'StatefulSet', 'storage').spec as { volumeClaimTemplates: Array<{ metadata: { labels: Record<string, string> } }> }).volumeClaimTemplates;
  claims[0]!.metadata.labels['app.kubernetes.io/version'] = '0.1.0';
  assert.equal(policyProblems(versionedClaim), ['StatefulSet/rel-dfs-storage: the claim template data carries app.kubernetes.io/version, which changes with every upgrade (a claim template cannot change)']);

  const minAvailable = copy();
  const pdb = find(minAvailable, 'PodDisruptionBudget', 'storage').spec as Record<string, unknown>;
  delete pdb.maxUnavailable;
  pdb.minAvailable = 2;
  assert.equal(policyProblems(minAvailable), ['PodDisruptionBudget/rel-dfs-storage: minAvailable; budgets here are by maxUnavailable', 'PodDisruptionBudget/rel-dfs-storage: no maxUnavailable']);

  const versionSelector = copy();
  ((find(versionSelector, 'Service', 'proxy').spec as { selector: Record<string, string> }).selector)['helm.sh/chart'] = 'dfs-0.1.0';
  const selectorFound = policyProblems(versionSelector);
  assert.ok(selectorFound.some((p) => p.includes('the selector names helm.sh/chart')), selectorFound.join('\n'));
  console.log(`  caught: ${[...typeFound, ...probeFound].join('; ')}`);
});

s('storage: node ID = pod name, --url the pod DNS name, anti-affinity hard by default and soft on one node, no privilege', () => {
  const objs = renderChart({ namespace: NAMESPACE });
  const sts = find(objs, 'StatefulSet', 'storage');
  const pod = podSpecOf(sts);
  const main = pod.containers[0]!;
  const args = main.args!;
  const arg = (flag: string) => args[args.indexOf(flag) + 1];
  assert.is(arg('--id'), '$(POD_NAME)');
  assert.is(arg('--url'), `https://$(POD_NAME).rel-dfs-storage.${NAMESPACE}.svc.cluster.local:7501`);
  assert.is(arg('--host'), '0.0.0.0');
  assert.is(arg('--redis'), `rediss://rel-dfs-redis.${NAMESPACE}.svc.cluster.local:6379`);
  assert.equal(main.command, ['node', '--initial-old-space-size=128', '/app/dist/storage/main.js']);
  // The certificate names that host.
  const issue = pod.initContainers!.find((c) => c.name === 'issue-cert')!;
  const hosts = issue.env!.find((e) => e.name === 'HOSTS')!.value!;
  assert.ok(hosts.split(',').includes(`$(POD_NAME).rel-dfs-storage.${NAMESPACE}.svc.cluster.local`), hosts);
  const security = (main as unknown as { securityContext: { runAsNonRoot: boolean; capabilities: { drop: string[]; add?: string[] }; allowPrivilegeEscalation: boolean } }).securityContext;
  assert.ok(security.runAsNonRoot && !security.allowPrivilegeEscalation);
  assert.equal(security.capabilities, { drop: ['ALL'] }, 'a node needs no capability (docs/cluster.md, Brick format)');

  const affinityOf = (o: K8sObject[]) => JSON.stringify(podSpecOf(find(o, 'StatefulSet', 'storage')).affinity ?? {});
  assert.match(affinityOf(objs), /requiredDuringSchedulingIgnoredDuringExecution/);
  assert.match(affinityOf(renderChart({ valuesFile: join(CI_DIR, 'single-node-values.yaml') })), /preferredDuringSchedulingIgnoredDuringExecution/);
  assert.not.match(affinityOf(renderChart({ valuesFile: join(CI_DIR, 'single-node-values.yaml') })), /required/);
  assert.is(affinityOf(renderChart({ set: ['storage.antiAffinity=none'] })), '{}');
  // The proxies: readiness and liveness on the admin port, a preStop delay.
  const proxy = podSpecOf(find(objs, 'Deployment', 'proxy')).containers[0] as unknown as { readinessProbe: { httpGet: { path: string; port: string } }; livenessProbe: { httpGet: { path: string; port: string } }; lifecycle: { preStop: { exec: { command: string[] } } } };
  assert.equal([proxy.readinessProbe.httpGet.path, proxy.readinessProbe.httpGet.port], ['/readyz', 'admin']);
  assert.equal([proxy.livenessProbe.httpGet.path, proxy.livenessProbe.httpGet.port], ['/healthz', 'admin']);
  assert.equal(proxy.lifecycle.preStop.exec.command, ['sleep', '5']);
  assert.is((find(objs, 'Deployment', 'proxy').spec as { replicas: number }).replicas, 2);
  // The helm test hook runs dfs selftest against the proxies' Service.
  const hook = find(objs, 'Pod', 'test');
  assert.is(hook.metadata.annotations?.['helm.sh/hook'], 'test');
  assert.equal(podSpecOf(hook).containers[0]!.command, ['node', '/app/dist/cli/dfs.js', 'selftest', '--proxy', `https://rel-dfs-proxy.${NAMESPACE}.svc.cluster.local:7400`]);
});

s('the dashboard ConfigMap carries dashboards/dfs.json, labelled for the Grafana sidecar', () => {
  const objs = renderChart({ namespace: NAMESPACE });
  const cm = find(objs, 'ConfigMap', 'dashboard') as unknown as { metadata: { labels: Record<string, string> }; data: Record<string, string> };
  assert.is(cm.metadata.labels.grafana_dashboard, '1');
  assert.equal(JSON.parse(cm.data['dfs.json']!), JSON.parse(readFileSync(join(REPO_ROOT, 'dashboards', 'dfs.json'), 'utf8')));
});

s('a storage pod\'s certificate, issued by issue-cert.sh from the rendered CA, passes dfs\'s own TLS checks', async () => {
  const objs = renderChart({ namespace: NAMESPACE });
  const ca = secretData(objs, 'rel-dfs-ca');
  const caDir = join(ctx.tmp!, 'ca');
  mkdirSync(caDir, { recursive: true });
  writeFileSync(join(caDir, 'ca.crt'), ca['ca.crt']!);
  writeFileSync(join(caDir, 'ca.key'), ca['ca.key']!, { mode: 0o600 });
  const script = (find(objs, 'ConfigMap', 'tls') as unknown as { data: Record<string, string> }).data['issue-cert.sh']!;
  const scriptFile = join(ctx.tmp!, 'issue-cert.sh');
  writeFileSync(scriptFile, script);
  const issue = (pod: K8sObject, podName: string, dir: string): TlsMaterial => {
    mkdirSync(dir, { recursive: true });
    const init = podSpecOf(pod).initContainers!.find((c) => c.name === 'issue-cert')!;
    const env = envOf(init, { POD_NAME: podName, POD_IP: '10.0.0.7' });
    const r = spawnSync('sh', [scriptFile], { env: { ...env, CA_DIR: caDir, OUT_DIR: dir }, encoding: 'utf8', timeout: 30_000 });
    assert.is(r.status, 0, `issue-cert.sh: ${r.stderr}`);
    return { ca: readFileSync(join(dir, 'ca.crt')), cert: readFileSync(join(dir, 'tls.crt')), key: readFileSync(join(dir, 'tls.key')) };
  };
  const node = issue(find(objs, 'StatefulSet', 'storage'), 'rel-dfs-storage-1', join(ctx.tmp!, 'node-tls'));
  const admin = issue(find(objs, 'Deployment', 'admin'), 'rel-dfs-admin-abc', join(ctx.tmp!, 'admin-tls'));
  // The admin pod's DFS_CREDENTIAL names DIR/admin: admin.crt and admin.key are there.
  assert.ok(readFileSync(join(ctx.tmp!, 'admin-tls', 'admin.crt')).equals(admin.cert));

  // A node's server, as storage/main.ts makes it, and a client that expects role node and
  // this ID at the pod's DNS name, as a peer or the leader's join check does.
  const server = https.createServer(serverTlsOptions(node), (_req, res) => res.end('ok'));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const port = (server.address() as AddressInfo).port;
    const host = `rel-dfs-storage-1.rel-dfs-storage.${NAMESPACE}.svc.cluster.local`;
    const get = (expectId: string) =>
      new Promise<string>((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port, servername: host, path: '/', agent: false, ...clientConnectOptions(admin, ['node'], expectId), timeout: 5000 }, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString()));
          res.on('end', () => resolve(body));
        });
        req.on('error', reject);
        req.end();
      });
    assert.is(await get('rel-dfs-storage-1'), 'ok');
    let refused = '';
    await get('rel-dfs-storage-2').catch((e: Error) => (refused = e.message));
    assert.match(refused, /is node rel-dfs-storage-1, not rel-dfs-storage-2/, 'a certificate naming another node ID is refused');
  } finally {
    server.close();
  }
});

s('the chart\'s Redis, started with its rendered arguments and ACL file, takes each role\'s rendered password over TLS and nothing else', async () => {
  // The rules are the ones a local cluster gives its Redis (common/redis-auth.ts).
  const rules = JSON.parse(readFileSync(join(CHART_DIR, 'files', 'redis-acl-rules.json'), 'utf8')) as Record<string, string>;
  assert.equal(rules, Object.fromEntries(REDIS_ROLES.map((role) => [role, REDIS_ACL_RULES[role]])));

  const objs = renderChart({ namespace: NAMESPACE });
  const auth = secretData(objs, 'rel-dfs-redis-auth');
  for (const role of REDIS_ROLES) {
    const login = JSON.parse(auth[`${role}.json`]!) as { username: string; password: string };
    assert.is(login.username, role);
    assert.match(login.password, /^[A-Za-z0-9]{48}$/);
    const line = auth['users.acl']!.split('\n').find((l) => l.startsWith(`user ${role} `))!;
    assert.is(line, `user ${role} on resetpass #${createHash('sha256').update(login.password).digest('hex')} ${REDIS_ACL_RULES[role]}`);
    assert.not.ok(auth['users.acl']!.includes(login.password), 'the ACL file holds no password');
  }

  // Its certificate as its init container issues it; its command with the pod's paths
  // moved into a temp directory and the port moved to a free one.
  const sts = find(objs, 'StatefulSet', 'redis');
  const pod = podSpecOf(sts);
  const root = join(ctx.tmp!, 'redis-pod');
  const dirs = { '/etc/dfs/tls': join(root, 'tls'), '/etc/dfs/redis': join(root, 'acl'), '/data': join(root, 'data') };
  for (const dir of Object.values(dirs)) mkdirSync(dir, { recursive: true });
  writeFileSync(join(dirs['/etc/dfs/redis'], 'users.acl'), auth['users.acl']!);
  const caDir = join(ctx.tmp!, 'ca');
  const init = pod.initContainers!.find((c) => c.name === 'issue-cert')!;
  const issued = spawnSync('sh', [join(ctx.tmp!, 'issue-cert.sh')], { env: { ...envOf(init, { POD_NAME: 'rel-dfs-redis-0' }), CA_DIR: caDir, OUT_DIR: dirs['/etc/dfs/tls'] }, encoding: 'utf8' });
  assert.is(issued.status, 0, issued.stderr);
  const main = pod.containers[0]!;
  const [port] = await freePorts(1);
  const args = main.args!.map((a) => Object.entries(dirs).reduce((x, [from, to]) => (x.startsWith(from) ? to + x.slice(from.length) : x), a));
  args[args.indexOf('--tls-port') + 1] = String(port);
  const child = spawn(main.command![0]!, [...main.command!.slice(1), ...args, '--bind', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  try {
    // A node's side: its certificate from its own init container, its password file.
    const nodeTls = { ca: readFileSync(join(ctx.tmp!, 'node-tls', 'ca.crt')), cert: readFileSync(join(ctx.tmp!, 'node-tls', 'tls.crt')), key: readFileSync(join(ctx.tmp!, 'node-tls', 'tls.key')) };
    const url = `rediss://localhost:${port}`;
    const connect = (login: { username?: string; password?: string }) => new Redis(url, { ...redisTlsOptions(url, nodeTls), ...login, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 3000 });
    const nodeLogin = JSON.parse(auth['node.json']!) as { username: string; password: string };
    const asNode = connect(nodeLogin);
    asNode.on('error', () => undefined);
    await pollUntil('Redis to take a TLS login', 10_000, async () => {
      if (child.exitCode !== null) throw new Error(`redis-server exited: ${log}`);
      try {
        if (asNode.status !== 'ready') await asNode.connect();
        return (await asNode.ping()) === 'PONG';
      } catch {
        asNode.disconnect();
        return false;
      }
    });
    assert.is(await asNode.get('dfs:membership'), null);
    assert.is(await asNode.set('dfs:node:rel-dfs-storage-0:alive', '{}'), 'OK');
    await asNode.incr('dfs:seq').then(() => assert.unreachable('a node may not take sequence IDs'), (e: Error) => assert.match(e.message, /NOPERM/));
    asNode.disconnect();
    const asProxy = connect(JSON.parse(auth['proxy.json']!) as { username: string; password: string });
    asProxy.on('error', () => undefined);
    await asProxy.connect();
    assert.is(await asProxy.incr('dfs:seq'), 1);
    asProxy.disconnect();
    // Without a login: refused at the connection's HELLO or at the first command.
    const anonymous = connect({});
    let anonymousError = '';
    anonymous.on('error', (e: Error) => (anonymousError ||= e.message));
    await anonymous
      .connect()
      .then(() => anonymous.get('dfs:seq'))
      .then(() => assert.unreachable('no login, no access'), (e: Error) => (anonymousError ||= e.message));
    assert.match(anonymousError, /NOAUTH/, anonymousError);
    anonymous.disconnect();
    const wrong = connect({ username: 'node', password: 'not-the-password-at-all' });
    let refused = '';
    wrong.on('error', (e: Error) => (refused ||= e.message));
    await wrong
      .connect()
      .then(() => wrong.get('dfs:membership'))
      .then(() => assert.unreachable('a wrong password, no access'), (e: Error) => (refused ||= e.message));
    console.log(`  refused: no login (${anonymousError}); a wrong password (${refused})`);
    assert.match(refused, /WRONGPASS|invalid username-password/);
    wrong.disconnect();
    // Appendonly on the volume, as the chart asks.
    assert.ok(args.includes('--appendonly') && args[args.indexOf('--appendonly') + 1] === 'yes');
    await pollUntil('the append-only file on the data volume', 5000, async () => readdirSync(dirs['/data']).some((f) => f.startsWith('appendonly')));
  } finally {
    child.kill('SIGTERM');
    await pollUntil('redis-server to exit', 10_000, async () => child.exitCode !== null || child.signalCode !== null);
  }
});

s('every metric the shipped dashboard queries is in a real scrape', async () => {
  const objs = renderChart({ namespace: NAMESPACE });
  const cm = find(objs, 'ConfigMap', 'dashboard') as unknown as { data: Record<string, string> };
  const queried = dashboardMetricNames(JSON.parse(cm.data['dfs.json']!) as Dashboard);
  assert.ok(queried.size >= 15, `the dashboard queries ${queried.size} metrics`);

  const [metricsPort] = await freePorts(1);
  const mc = await startMountedCluster({ prefix: 'chart', mounts: ['m'], nodes: 3, proxies: 2, mountArgs: ['--metrics-addr', `127.0.0.1:${metricsPort!}`] });
  try {
    // Some traffic, so that every labelled series exists.
    const dir = mc.mountpoints[0]!;
    for (let i = 0; i < 8; i++) await fsp.writeFile(join(dir, `f${i}`), Buffer.alloc(1000 + i, 0x61));
    for (let i = 0; i < 8; i++) await fsp.readFile(join(dir, `f${i}`));
    const urls = [`http://127.0.0.1:${metricsPort!}/metrics`, ...mc.cluster.records().filter((r) => r.adminUrl).map((r) => `${r.adminUrl}/metrics`)];
    const scraped = await pollFor('every dashboard metric in a scrape', 30_000, async () => {
      const names = new Set<string>();
      for (const url of urls) for (const sample of parseMetricsText(await plainGet(url))) names.add(sample.name);
      return [...queried].every((name) => names.has(name)) ? names : undefined;
    }).catch(() => null);
    const names = scraped ?? new Set<string>();
    for (const name of queried) assert.ok(names.has(name), `the dashboard queries ${name}, which no process reports`);
    console.log(`  the dashboard's ${queried.size} metrics are all in a scrape of ${urls.length} processes`);
  } finally {
    await mc.stop();
  }
});

function plainGet(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${url}: ${res.statusCode}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`${url}: no answer`)));
    req.on('error', reject);
  });
}

s('the examples pass the Kubernetes types', () => {
  const dir = join(CHART_DIR, 'examples');
  const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));
  assert.ok(files.length >= 1);
  for (const file of files) {
    const objs = parseManifests(readFileSync(join(dir, file), 'utf8'));
    assert.ok(objs.length >= 1, file);
    assert.equal(objs.flatMap(typeProblems), [], file);
  }
  const sidecar = podSpecOf(parseManifests(readFileSync(join(dir, 'mount-sidecar.yaml'), 'utf8'))[0]!);
  const mount = sidecar.containers.find((c) => c.name === 'dfs-mount') as unknown as { securityContext: { privileged: boolean }; volumeMounts: Array<{ name: string; mountPropagation?: string }> };
  assert.is(mount.securityContext.privileged, true);
  assert.ok(mount.volumeMounts.some((m) => m.name === 'dfs' && m.mountPropagation === 'Bidirectional'));
});

// podTemplates is what the rules walk; a render has one per workload and the test pod.
s('the render has the workloads the issue lists', () => {
  const objs = renderChart({ namespace: NAMESPACE });
  assert.equal(podTemplates(objs).map((p) => p.owner).sort(), ['Deployment/rel-dfs-admin', 'Deployment/rel-dfs-proxy', 'Pod/rel-dfs-selftest', 'StatefulSet/rel-dfs-redis', 'StatefulSet/rel-dfs-storage']);
  const external = renderChart({ valuesFile: join(CI_DIR, 'external-redis-values.yaml') });
  assert.not.ok(external.some((o) => o.metadata.labels?.['app.kubernetes.io/component'] === 'redis' && o.kind !== 'Secret'), 'no Redis of the chart with redis.externalUrl');
  assert.is(podSpecOf(find(external, 'StatefulSet', 'storage')).containers[0]!.args![podSpecOf(find(external, 'StatefulSet', 'storage')).containers[0]!.args!.indexOf('--redis') + 1], 'rediss://redis.platform.svc.cluster.local:6379');
});

s.run();
