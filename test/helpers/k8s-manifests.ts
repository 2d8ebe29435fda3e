/*
 * Checks of a rendered Helm chart without a Kubernetes cluster (issue 17, acceptance 1).
 *
 *   renderChart(values)   `helm template` of charts/dfs, parsed into objects
 *   typeProblems(obj)     the object against the Kubernetes API types: every field must be
 *                         one the type declares (an unknown one is what the API server's
 *                         strict field validation refuses), and every scalar of its type
 *   policyProblems(objs)  the chart's rules (the list, the Helm best practices)
 *
 * The types are @kubernetes/client-node's generated models: each model lists its fields
 * (`attributeTypeMap`: JSON name and type, `V1PodSpec`, `Array<V1Container>`,
 * `{ [key: string]: string; }`, `IntOrString`…), generated from the Kubernetes OpenAPI
 * document, so the walk below is the API's own schema, field by field. kubernetes-models
 * was tried first: its validators accept unknown fields.
 *
 * Both checks return problems as lines (empty: none), so that a test can show a
 * deliberate mistake being found as well as a clean render passing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export const REPO_ROOT = resolve(__dirname, '..', '..', '..');
export const CHART_DIR = join(REPO_ROOT, 'charts', 'dfs');
export const HELM_VERSION = 'v4.3.2';

/** What a rendered object looks like to these checks. */
export type K8sObject = { apiVersion: string; kind: string; metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> }; [field: string]: unknown };
type Json = unknown;
type JsonObject = Record<string, Json>;

// ---------------------------------------------------------------------------------------
// helm

/** The helm binary: on PATH, else where `go install` puts it ($(go env GOPATH)/bin). */
export function findHelm(): string {
  const onPath = spawnSync('sh', ['-c', 'command -v helm'], { encoding: 'utf8' });
  if (onPath.status === 0 && onPath.stdout.trim() !== '') return onPath.stdout.trim();
  const gopath = spawnSync('go', ['env', 'GOPATH'], { encoding: 'utf8' });
  const candidate = gopath.status === 0 ? join(gopath.stdout.trim(), 'bin', 'helm') : '';
  if (candidate !== '' && existsSync(candidate)) return candidate;
  throw new Error(`helm is not installed: go install helm.sh/helm/v4/cmd/helm@${HELM_VERSION} (scripts/setup.sh does it)`);
}

export interface HelmRun {
  status: number;
  stdout: string;
  stderr: string;
}

export function helm(args: string[], timeoutMs = 60_000): HelmRun {
  const r = spawnSync(findHelm(), args, { encoding: 'utf8', timeout: timeoutMs, cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  // helm says at info level that it followed the dashboard's symbolic link; that is expected.
  const stderr = r.stderr
    .split('\n')
    .filter((line) => !line.includes('found symbolic link in path'))
    .join('\n')
    .trim();
  return { status: r.status ?? -1, stdout: r.stdout, stderr };
}

/** `helm template` of the chart with a values file (and --set pairs), as objects. */
export function renderChart(o: { valuesFile?: string; set?: string[]; release?: string; namespace?: string } = {}): K8sObject[] {
  const args = ['template', o.release ?? 'rel', CHART_DIR, '--namespace', o.namespace ?? 'dfs-test'];
  if (o.valuesFile) args.push('-f', o.valuesFile);
  for (const pair of o.set ?? []) args.push('--set', pair);
  const r = helm(args);
  if (r.status !== 0) throw new Error(`helm ${args.join(' ')} failed: ${r.stderr}`);
  return parseManifests(r.stdout);
}

/** Parsed as YAML 1.1, as Kubernetes reads manifests (sigs.k8s.io/yaml): `0555` is octal
 * and `yes` a boolean there, unlike YAML 1.2. */
export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text, { version: '1.1' })) {
    if (doc.errors.length > 0) throw new Error(`the render is not YAML: ${doc.errors[0]!.message}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) out.push(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// the Kubernetes API types

interface Attribute {
  name: string;
  baseName: string;
  type: string;
}
type ModelClass = { getAttributeTypeMap(): Attribute[] };

/** The model of each kind the chart may render. */
const KIND_MODELS: Record<string, string> = {
  'v1/Service': 'V1Service',
  'v1/Secret': 'V1Secret',
  'v1/ConfigMap': 'V1ConfigMap',
  'v1/Pod': 'V1Pod',
  'apps/v1/StatefulSet': 'V1StatefulSet',
  'apps/v1/Deployment': 'V1Deployment',
  'policy/v1/PodDisruptionBudget': 'V1PodDisruptionBudget',
  'networking.k8s.io/v1/NetworkPolicy': 'V1NetworkPolicy',
};

/**
 * The Prometheus Operator's ServiceMonitor is a custom resource, not in the Kubernetes
 * types: the fields the chart uses, from its API reference (monitoring.coreos.com/v1), in
 * the same shape, so that an unknown field there is caught too.
 */
const SERVICE_MONITOR: Record<string, JsonObject> = {
  ServiceMonitor: { apiVersion: 'string', kind: 'string', metadata: 'V1ObjectMeta', spec: 'ServiceMonitorSpec' },
  ServiceMonitorSpec: { selector: 'V1LabelSelector', endpoints: 'Array<ServiceMonitorEndpoint>', namespaceSelector: 'object', jobLabel: 'string', targetLabels: 'Array<string>', podTargetLabels: 'Array<string>', sampleLimit: 'number' },
  ServiceMonitorEndpoint: { port: 'string', targetPort: 'IntOrString', path: 'string', scheme: 'string', interval: 'string', scrapeTimeout: 'string', honorLabels: 'boolean', relabelings: 'Array<object>', metricRelabelings: 'Array<object>' },
};

const modelCache = new Map<string, ModelClass>();

function model(name: string): ModelClass | null {
  const cached = modelCache.get(name);
  if (cached) return cached;
  const file = join(REPO_ROOT, 'node_modules', '@kubernetes', 'client-node', 'dist', 'gen', 'models', `${name}.js`);
  if (!existsSync(file)) return null;
  // The package is ESM; Node 20.19+ loads it with require().
  const loaded = (require(file) as Record<string, ModelClass>)[name];
  if (!loaded) return null;
  modelCache.set(name, loaded);
  return loaded;
}

function fieldsOf(type: string): Map<string, string> | null {
  if (SERVICE_MONITOR[type]) return new Map(Object.entries(SERVICE_MONITOR[type]!).map(([k, v]) => [k, String(v)]));
  const m = model(type);
  if (!m) return null;
  return new Map(m.getAttributeTypeMap().map((a) => [a.baseName, a.type]));
}

function describe(value: Json): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'an array';
  return typeof value === 'object' ? 'an object' : `${typeof value} ${JSON.stringify(value)}`;
}

function checkValue(value: Json, type: string, path: string, problems: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) return void problems.push(`${path}: wants an array, found ${describe(value)}`);
    value.forEach((item, i) => checkValue(item, array[1]!, `${path}[${i}]`, problems));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value !== 'object' || Array.isArray(value)) return void problems.push(`${path}: wants a map, found ${describe(value)}`);
    for (const [k, v] of Object.entries(value as JsonObject)) checkValue(v, map[1]!, `${path}.${k}`, problems);
    return;
  }
  switch (type) {
    case 'string':
    case 'Date':
      if (typeof value !== 'string') problems.push(`${path}: wants a string, found ${describe(value)}`);
      return;
    case 'number':
      if (typeof value !== 'number') problems.push(`${path}: wants a number, found ${describe(value)}`);
      return;
    case 'boolean':
      if (typeof value !== 'boolean') problems.push(`${path}: wants a boolean, found ${describe(value)}`);
      return;
    case 'IntOrString':
      if (typeof value !== 'string' && !(typeof value === 'number' && Number.isInteger(value))) problems.push(`${path}: wants an integer or a string, found ${describe(value)}`);
      return;
    case 'any':
    case 'object':
      return;
  }
  const fields = fieldsOf(type);
  if (fields === null) return void problems.push(`${path}: no type ${type} to check against`);
  if (typeof value !== 'object' || Array.isArray(value)) return void problems.push(`${path}: wants ${type}, found ${describe(value)}`);
  for (const [key, v] of Object.entries(value as JsonObject)) {
    const fieldType = fields.get(key);
    if (fieldType === undefined) {
      problems.push(`${path}.${key}: unknown field (not in ${type})`);
      continue;
    }
    checkValue(v, fieldType, `${path}.${key}`, problems);
  }
}

/** The object against its kind's type; unknown kinds are a problem too. */
export function typeProblems(obj: K8sObject): string[] {
  const where = `${obj.kind}/${obj.metadata?.name ?? '?'}`;
  const type = obj.apiVersion === 'monitoring.coreos.com/v1' && obj.kind === 'ServiceMonitor' ? 'ServiceMonitor' : KIND_MODELS[`${obj.apiVersion}/${obj.kind}`];
  if (type === undefined) return [`${where}: ${obj.apiVersion} ${obj.kind} is not a kind this chart should render`];
  const problems: string[] = [];
  checkValue(obj, type, where, problems);
  return problems;
}

// ---------------------------------------------------------------------------------------
// the chart's rules

type Container = { name: string; ports?: Array<{ name?: string; containerPort: number }>; readinessProbe?: JsonObject; livenessProbe?: JsonObject; startupProbe?: JsonObject; command?: string[]; args?: string[] };
type PodSpec = { containers: Container[]; initContainers?: Container[]; volumes?: Array<JsonObject>; securityContext?: JsonObject };
interface PodTemplate {
  owner: string;
  labels: Record<string, string>;
  spec: PodSpec;
}

export const SELECTOR_KEYS = ['app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/component'];
export const REQUIRED_LABELS = ['helm.sh/chart', 'app.kubernetes.io/name', 'app.kubernetes.io/instance', 'app.kubernetes.io/version', 'app.kubernetes.io/managed-by', 'app.kubernetes.io/component'];
/** Labels that change with a chart upgrade, so never in a selector or a claim template. */
export const VERSION_LABELS = ['helm.sh/chart', 'app.kubernetes.io/version'];

export function podTemplates(objs: K8sObject[]): PodTemplate[] {
  const out: PodTemplate[] = [];
  for (const obj of objs) {
    const spec = obj.spec as JsonObject | undefined;
    if (obj.kind === 'Pod') out.push({ owner: `Pod/${obj.metadata.name}`, labels: obj.metadata.labels ?? {}, spec: spec as unknown as PodSpec });
    if ((obj.kind === 'StatefulSet' || obj.kind === 'Deployment') && spec) {
      const template = spec.template as { metadata?: { labels?: Record<string, string> }; spec: PodSpec };
      out.push({ owner: `${obj.kind}/${obj.metadata.name}`, labels: template.metadata?.labels ?? {}, spec: template.spec });
    }
  }
  return out;
}

function matches(labels: Record<string, string>, selector: { matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> }): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = labels[e.key] !== undefined;
    if (e.operator === 'In' && !(has && (e.values ?? []).includes(labels[e.key]!))) return false;
    if (e.operator === 'NotIn' && has && (e.values ?? []).includes(labels[e.key]!)) return false;
    if (e.operator === 'Exists' && !has) return false;
    if (e.operator === 'DoesNotExist' && has) return false;
  }
  return true;
}

function selectorKeyProblems(where: string, selector: { matchLabels?: Record<string, string>; matchExpressions?: Array<{ key: string }> } | Record<string, string> | undefined): string[] {
  if (!selector) return [];
  const keys = 'matchLabels' in selector || 'matchExpressions' in selector
    ? [...Object.keys((selector as { matchLabels?: object }).matchLabels ?? {}), ...((selector as { matchExpressions?: Array<{ key: string }> }).matchExpressions ?? []).map((e) => e.key)]
    : Object.keys(selector);
  return keys.filter((k) => !SELECTOR_KEYS.includes(k)).map((k) => `${where}: the selector names ${k}; selectors name only ${SELECTOR_KEYS.join(', ')}`);
}

/** A probe's port (a number or a container port's name) that the container declares. */
function probePortProblems(owner: string, container: Container): string[] {
  const problems: string[] = [];
  for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe'] as const) {
    const probe = container[kind];
    if (!probe) continue;
    const action = (probe.httpGet ?? probe.tcpSocket ?? probe.grpc) as { port?: number | string } | undefined;
    if (!action) continue;
    const declared = (container.ports ?? []).some((p) => p.name === action.port || p.containerPort === action.port);
    if (!declared) problems.push(`${owner} container ${container.name}: the ${kind} uses port ${JSON.stringify(action.port)}, which the container does not declare`);
  }
  return problems;
}

/**
 * The chart's rules over a whole render. `externalSecrets` are Secrets the values say the
 * operator made (tls.existingCaSecret), which the chart refers to but does not render.
 */
export function policyProblems(objs: K8sObject[], externalSecrets: string[] = []): string[] {
  const problems: string[] = [];
  const pods = podTemplates(objs);
  for (const obj of objs) {
    const where = `${obj.kind}/${obj.metadata.name}`;
    const labels = obj.metadata.labels ?? {};
    for (const key of REQUIRED_LABELS) if (labels[key] === undefined) problems.push(`${where}: no ${key} label`);
    const spec = (obj.spec ?? {}) as JsonObject;
    if (obj.kind === 'StatefulSet' || obj.kind === 'Deployment') {
      problems.push(...selectorKeyProblems(where, spec.selector as JsonObject));
      const template = spec.template as { metadata?: { labels?: Record<string, string> } };
      for (const key of REQUIRED_LABELS) if (template.metadata?.labels?.[key] === undefined) problems.push(`${where}: its pod template has no ${key} label`);
    }
    if (obj.kind === 'StatefulSet') {
      for (const claim of (spec.volumeClaimTemplates ?? []) as Array<{ metadata: { name: string; labels?: Record<string, string> } }>) {
        for (const key of VERSION_LABELS) {
          if (claim.metadata.labels?.[key] !== undefined) problems.push(`${where}: the claim template ${claim.metadata.name} carries ${key}, which changes with every upgrade (a claim template cannot change)`);
        }
      }
    }
    if (obj.kind === 'PodDisruptionBudget') {
      if (spec.minAvailable !== undefined) problems.push(`${where}: minAvailable; budgets here are by maxUnavailable`);
      if (spec.maxUnavailable === undefined) problems.push(`${where}: no maxUnavailable`);
      problems.push(...selectorKeyProblems(where, spec.selector as JsonObject));
      if (!pods.some((p) => matches(p.labels, spec.selector as JsonObject))) problems.push(`${where}: selects no pod`);
    }
    if (obj.kind === 'Service') {
      const selector = spec.selector as Record<string, string> | undefined;
      problems.push(...selectorKeyProblems(where, selector));
      const selected = pods.filter((p) => selector && matches(p.labels, { matchLabels: selector }));
      if (selector && selected.length === 0) problems.push(`${where}: selects no pod`);
      for (const port of (spec.ports ?? []) as Array<{ name: string; targetPort?: number | string }>) {
        const target = port.targetPort;
        const ok = selected.every((p) => p.spec.containers.some((c) => (c.ports ?? []).some((cp) => cp.name === target || cp.containerPort === target)));
        if (!ok) problems.push(`${where}: port ${port.name} targets ${JSON.stringify(target)}, which a selected container does not declare`);
      }
    }
    if (obj.kind === 'NetworkPolicy') {
      const podSelector = spec.podSelector as JsonObject;
      problems.push(...selectorKeyProblems(where, podSelector));
      const selected = pods.filter((p) => matches(p.labels, podSelector));
      if (selected.length === 0) problems.push(`${where}: selects no pod`);
      for (const rule of (spec.ingress ?? []) as Array<{ ports?: Array<{ port: number | string }>; from?: Array<{ podSelector?: JsonObject; namespaceSelector?: JsonObject }> }>) {
        for (const { port } of rule.ports ?? []) {
          for (const p of selected) {
            if (!p.spec.containers.some((c) => (c.ports ?? []).some((cp) => cp.name === port || cp.containerPort === port))) {
              problems.push(`${where}: allows port ${JSON.stringify(port)}, which no container of ${p.owner} declares`);
            }
          }
        }
        for (const peer of rule.from ?? []) {
          // A peer of this release (a podSelector alone) must select pods the chart makes.
          if (peer.podSelector && !peer.namespaceSelector) {
            problems.push(...selectorKeyProblems(`${where} (a peer)`, peer.podSelector));
            if (!pods.some((p) => matches(p.labels, peer.podSelector!))) problems.push(`${where}: a peer selects no pod of the release`);
          }
        }
      }
    }
  }
  for (const pod of pods) {
    for (const container of [...pod.spec.containers, ...(pod.spec.initContainers ?? [])]) problems.push(...probePortProblems(pod.owner, container));
    for (const volume of pod.spec.volumes ?? []) {
      const secret = (volume.secret as { secretName?: string } | undefined)?.secretName;
      const configMap = (volume.configMap as { name?: string } | undefined)?.name;
      if (configMap && !objs.some((o) => o.kind === 'ConfigMap' && o.metadata.name === configMap)) problems.push(`${pod.owner}: volume ${String(volume.name)} names the ConfigMap ${configMap}, which the chart does not make`);
      if (secret && !objs.some((o) => o.kind === 'Secret' && o.metadata.name === secret) && !externalSecrets.includes(secret)) problems.push(`${pod.owner}: volume ${String(volume.name)} names the Secret ${secret}, which the chart does not make`);
    }
  }
  // Storage: a StatefulSet, Parallel, a volume claim template for the data (never an
  // emptyDir), no fsGroup, the headless Service publishing not-ready addresses.
  const storage = objs.find((o) => o.kind === 'StatefulSet' && o.metadata.labels?.['app.kubernetes.io/component'] === 'storage');
  if (!storage) problems.push('no storage StatefulSet');
  else {
    const spec = storage.spec as { podManagementPolicy?: string; serviceName: string; volumeClaimTemplates?: Array<{ metadata: { name: string } }>; template: { spec: PodSpec } };
    if (spec.podManagementPolicy !== 'Parallel') problems.push(`StatefulSet/${storage.metadata.name}: podManagementPolicy ${spec.podManagementPolicy}, not Parallel`);
    if ((spec.volumeClaimTemplates ?? []).length !== 1) problems.push(`StatefulSet/${storage.metadata.name}: ${(spec.volumeClaimTemplates ?? []).length} claim templates, not one`);
    const claim = spec.volumeClaimTemplates?.[0]?.metadata.name;
    if (spec.template.spec.volumes?.some((v) => v.name === claim)) problems.push(`StatefulSet/${storage.metadata.name}: the data volume ${claim} is also a pod volume (an emptyDir?)`);
    if (spec.template.spec.securityContext?.fsGroup !== undefined) problems.push(`StatefulSet/${storage.metadata.name}: fsGroup set; the kubelet would re-own every brick file`);
    const headless = objs.find((o) => o.kind === 'Service' && o.metadata.name === spec.serviceName) as { spec: { clusterIP?: string; publishNotReadyAddresses?: boolean } } | undefined;
    if (!headless) problems.push(`StatefulSet/${storage.metadata.name}: no Service ${spec.serviceName}`);
    else if (headless.spec.clusterIP !== 'None' || headless.spec.publishNotReadyAddresses !== true) problems.push(`Service/${spec.serviceName}: not headless with publishNotReadyAddresses`);
  }
  // Every dfs process starts with the runtime flags dfs local up gives it.
  for (const pod of pods) {
    for (const c of pod.spec.containers) {
      if (c.command?.[0] === 'node' && /dist\/(storage|proxy)\/main\.js$/.test(c.command.at(-1) ?? '') && !c.command.includes('--initial-old-space-size=128')) {
        problems.push(`${pod.owner} container ${c.name}: started without --initial-old-space-size=128`);
      }
    }
  }
  return problems;
}
