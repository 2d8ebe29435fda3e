/*
 * The chart's pods run as processes (issue 17, acceptance 2): what a kubelet would do with
 * a rendered pod, without Kubernetes.
 *
 * Each pod gets a network namespace of its own with its own address (test/helpers/netns.ts)
 * and a hosts file there (/etc/netns/NS/hosts, which `ip netns exec` puts over /etc/hosts
 * in that namespace only) that resolves the Services' and the storage pods' DNS names as
 * cluster DNS would: a storage pod's name to its address, the headless Service's and
 * Redis's Service to their pods, the proxies' Service to both proxies' addresses (a
 * stand-in for its ClusterIP). Its volumes are directories: a Secret or ConfigMap volume
 * holds the rendered items, an emptyDir is empty at each start, a claim is kept per pod
 * name across restarts. Its init containers run in order, then its main container, each
 * with the command, args and environment as rendered (`$(VAR)` expanded, the pod's name and
 * address for fieldRefs) and every path below a mount point moved to that volume's
 * directory (and the image's /app to this checkout), as the user its securityContext
 * names with only the capabilities it adds (setpriv), the pod's fsGroup applied to its
 * volumes as the kubelet does. Probes run as the kubelet runs them:
 * the declared port and path, from the node's side (the root namespace), every periodSeconds.
 * A pod is deleted with SIGTERM and, after its terminationGracePeriodSeconds, SIGKILL.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, closeSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { join } from 'node:path';
import type { NetLab } from './netns';
import { REPO_ROOT, type K8sObject } from './k8s-manifests';

type Json = Record<string, unknown>;
interface VolumeMount {
  name: string;
  mountPath: string;
}
export interface ContainerSpec {
  name: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  volumeMounts?: VolumeMount[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  securityContext?: SecurityContext;
}
interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  capabilities?: { drop?: string[]; add?: string[] };
}
interface Probe {
  httpGet?: { path: string; port: number | string };
  tcpSocket?: { port: number | string };
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
}
export interface PodSpec {
  containers: ContainerSpec[];
  initContainers?: ContainerSpec[];
  volumes?: Array<{ name: string; secret?: { secretName: string; items?: Array<{ key: string; path: string }> }; configMap?: { name: string; items?: Array<{ key: string; path: string }> }; emptyDir?: Json }>;
  terminationGracePeriodSeconds?: number;
  securityContext?: SecurityContext & { fsGroup?: number };
}

/** Where a pod's files live: one directory per pod, claims kept apart by pod name. */
export class PodHost {
  readonly volumesDir: string;
  readonly hostsDirs: string[] = [];

  constructor(
    readonly lab: NetLab,
    readonly root: string,
    readonly objs: () => K8sObject[],
    /** DNS name → pod names (party names) it resolves to. */
    readonly dns: () => Map<string, string[]>,
  ) {
    this.volumesDir = join(root, 'claims');
    mkdirSync(this.volumesDir, { recursive: true });
  }

  /** Writes every namespace's hosts file (again: after a pod comes or goes). */
  writeHosts(): void {
    const lines = ['127.0.0.1 localhost'];
    for (const [name, pods] of this.dns()) {
      for (const pod of pods) if (this.lab.parties.has(pod)) lines.push(`${this.lab.party(pod).addr} ${name}`);
    }
    for (const party of this.lab.parties.values()) {
      const dir = join('/etc/netns', party.ns);
      mkdirSync(dir, { recursive: true });
      if (!this.hostsDirs.includes(dir)) this.hostsDirs.push(dir);
      writeFileSync(join(dir, 'hosts'), `${lines.join('\n')}\n`);
    }
  }

  cleanup(): void {
    for (const dir of this.hostsDirs) rmSync(dir, { recursive: true, force: true });
  }

  secret(name: string): Record<string, Buffer> {
    const s = this.objs().find((o) => o.kind === 'Secret' && o.metadata.name === name) as { data: Record<string, string> } | undefined;
    if (!s) throw new Error(`no Secret ${name} in the render`);
    return Object.fromEntries(Object.entries(s.data).map(([k, v]) => [k, Buffer.from(v, 'base64')]));
  }

  configMap(name: string): Record<string, Buffer> {
    const c = this.objs().find((o) => o.kind === 'ConfigMap' && o.metadata.name === name) as { data: Record<string, string> } | undefined;
    if (!c) throw new Error(`no ConfigMap ${name} in the render`);
    return Object.fromEntries(Object.entries(c.data).map(([k, v]) => [k, Buffer.from(v)]));
  }
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** One pod: its network namespace (a party of the lab named after the pod), volumes, containers. */
export class Pod {
  main: ChildProcess | null = null;
  exit: ExitInfo | null = null;
  private readonly dir: string;
  private readonly volumeDirs = new Map<string, string>();
  private probeTimers: NodeJS.Timeout[] = [];
  ready = false;
  livenessFailuresMax = 0;
  private livenessFailures = 0;
  readonly log: string;

  constructor(
    readonly host: PodHost,
    readonly name: string,
    readonly spec: PodSpec,
    /** The claim templates' names (StatefulSet pods): kept across restarts. */
    readonly claims: string[] = [],
  ) {
    this.dir = join(host.root, 'pods', name);
    this.log = join(host.root, 'logs', `${name}.log`);
    mkdirSync(join(host.root, 'logs'), { recursive: true });
  }

  get addr(): string {
    return this.host.lab.party(this.name).addr;
  }

  /** The volumes as the kubelet makes them at a pod's start. */
  private makeVolumes(): void {
    rmSync(this.dir, { recursive: true, force: true });
    // Explicit modes: the users the pods run as must get to their volumes whatever this
    // process's umask is.
    const dirAt = (path: string, mode: number) => {
      mkdirSync(path, { recursive: true });
      chmodSync(path, mode);
    };
    dirAt(this.host.volumesDir, 0o755);
    for (const claim of this.claims) {
      const dir = join(this.host.volumesDir, `${claim}-${this.name}`);
      // A new volume's root is root's, 0755, until the pod's own-volume step gives it away.
      if (!existsSync(dir)) dirAt(dir, 0o755);
      this.volumeDirs.set(claim, dir);
    }
    dirAt(join(this.host.root, 'pods'), 0o755);
    dirAt(this.dir, 0o755);
    dirAt(join(this.dir, 'volumes'), 0o755);
    for (const volume of this.spec.volumes ?? []) {
      const dir = join(this.dir, 'volumes', volume.name);
      dirAt(dir, 0o755);
      const source = volume.secret ? this.host.secret(volume.secret.secretName) : volume.configMap ? this.host.configMap(volume.configMap.name) : null;
      if (source) {
        const items = volume.secret?.items ?? volume.configMap?.items ?? Object.keys(source).map((key) => ({ key, path: key }));
        const mode = (volume.secret as { defaultMode?: number } | undefined)?.defaultMode ?? (volume.configMap as { defaultMode?: number } | undefined)?.defaultMode ?? 0o644;
        for (const item of items) {
          writeFileSync(join(dir, item.path), source[item.key]!);
          chmodSync(join(dir, item.path), mode);
        }
      } else {
        chmodSync(dir, 0o777); // an emptyDir, as the kubelet makes it
      }
      this.volumeDirs.set(volume.name, dir);
    }
    // fsGroup: the kubelet gives every volume to that group, group-writable (setgid dirs).
    const fsGroup = this.spec.securityContext?.fsGroup;
    if (fsGroup !== undefined) {
      for (const dir of this.volumeDirs.values()) {
        spawnSync('chgrp', ['-R', String(fsGroup), dir]);
        spawnSync('chmod', ['-R', 'g+rwX', dir]);
        spawnSync('find', [dir, '-type', 'd', '-exec', 'chmod', 'g+s', '{}', '+']);
      }
    }
  }

  /**
   * The container's user and capabilities (its securityContext over the pod's), as the
   * runtime applies them: setpriv to that uid and gid (the fsGroup as a supplementary group),
   * with no capability but those added, none at all for a user other than root.
   */
  private asUser(container: ContainerSpec, argv: string[]): string[] {
    const pod = this.spec.securityContext ?? {};
    const sc = { ...pod, ...(container.securityContext ?? {}) };
    if (sc.runAsUser === undefined) return argv;
    const added = (sc.capabilities?.add ?? []).map((c) => `+${c.toLowerCase()}`);
    const caps = ['-all', ...added].join(',');
    const groups = pod.fsGroup !== undefined ? ['--groups', String(pod.fsGroup)] : ['--clear-groups'];
    return ['setpriv', '--reuid', String(sc.runAsUser), '--regid', String(sc.runAsGroup ?? sc.runAsUser), ...groups, '--bounding-set', caps, '--inh-caps', '-all', '--', ...argv];
  }

  /** Paths inside the container, as paths of this machine: one pass over the text, the
   * longest mount point first, a mount point only where a path starts (after a space, =, a
   * quote or the start) and ends (/, a space, a quote or the end). */
  private mapPath(container: ContainerSpec, text: string): string {
    const dirs = new Map<string, string>([['/app', REPO_ROOT]]);
    for (const m of container.volumeMounts ?? []) {
      const dir = this.volumeDirs.get(m.name);
      if (dir !== undefined) dirs.set(m.mountPath, dir);
    }
    const escape = (x: string) => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const points = [...dirs.keys()].sort((a, b) => b.length - a.length);
    const pattern = new RegExp(`(?<=^|[\\s='"])(${points.map(escape).join('|')})(?=/|$|[\\s'")])`, 'g');
    return text.replace(pattern, (point) => dirs.get(point)!);
  }

  private envOf(container: ContainerSpec): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { PATH: [join(REPO_ROOT, 'bin'), process.env.PATH].join(':'), HOME: '/nonexistent' };
    const fields: Record<string, string> = { 'metadata.name': this.name, 'status.podIP': this.addr, 'metadata.namespace': 'dfs-test' };
    for (const e of container.env ?? []) {
      if (e.valueFrom?.fieldRef) env[e.name] = fields[e.valueFrom.fieldRef.fieldPath] ?? '';
      else if (e.value !== undefined) env[e.name] = this.mapPath(container, e.value.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`));
    }
    return env;
  }

  /** The container's argv as this machine runs it. */
  argvOf(container: ContainerSpec): { argv: string[]; env: NodeJS.ProcessEnv } {
    const env = this.envOf(container);
    const expand = (a: string) => this.mapPath(container, a.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`));
    const argv = [...(container.command ?? []), ...(container.args ?? [])].map(expand);
    if (argv[0] === 'node') argv[0] = process.execPath;
    return { argv, env };
  }

  private spawnIn(container: ContainerSpec, command: string[], env: NodeJS.ProcessEnv, stdio: 'log' | 'pipe' = 'log'): ChildProcess {
    const ns = this.host.lab.party(this.name).ns;
    const argv = this.asUser(container, command);
    if (stdio === 'pipe') return spawn('ip', ['netns', 'exec', ns, ...argv], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const fd = openSync(this.log, 'a');
    try {
      writeFileSync(fd, `--- ${new Date().toISOString()} ${this.name}/${container.name}: ${argv.join(' ')}\n`);
      return spawn('ip', ['netns', 'exec', ns, ...argv], { env, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
  }

  /** Runs a command to its end inside the pod's namespace with a container's environment
   * (`kubectl exec`, or an init container). */
  async exec(container: ContainerSpec, argv: string[], timeoutMs: number): Promise<{ code: number | null; output: string }> {
    const child = this.spawnIn(container, argv, this.envOf(container), 'pipe');
    let output = '';
    child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    clearTimeout(timer);
    writeFileSync(this.log, `--- exec ${argv.join(' ')} (exit ${code})\n${output}`, { flag: 'a' });
    return { code, output };
  }

  /** Starts the pod: volumes, each init container to success, the main container, probes. */
  async start(): Promise<void> {
    this.makeVolumes();
    for (const init of this.spec.initContainers ?? []) {
      const { argv } = this.argvOf(init);
      const r = await this.exec(init, argv, 60_000);
      if (r.code !== 0) throw new Error(`${this.name}: init container ${init.name} exited ${r.code}: ${r.output}`);
    }
    const container = this.spec.containers[0]!;
    const { argv, env } = this.argvOf(container);
    this.exit = null;
    this.ready = false;
    this.livenessFailures = 0;
    const child = this.spawnIn(container, argv, env);
    this.main = child;
    child.on('exit', (code, signal) => {
      if (this.main === child) this.exit = { code, signal };
    });
    this.startProbes(container);
  }

  private startProbes(container: ContainerSpec): void {
    this.stopProbes();
    const run = (probe: Probe, onResult: (ok: boolean) => void) => {
      const period = (probe.periodSeconds ?? 10) * 1000;
      const tick = async () => {
        onResult(await this.probe(container, probe));
      };
      void tick();
      this.probeTimers.push(setInterval(() => void tick(), period));
    };
    const readiness = container.readinessProbe;
    if (readiness) {
      let failures = 0;
      run(readiness, (ok) => {
        if (ok) {
          failures = 0;
          this.ready = true;
        } else if (++failures >= (readiness.failureThreshold ?? 3)) this.ready = false;
      });
    }
    const liveness = container.livenessProbe;
    if (liveness) {
      run(liveness, (ok) => {
        this.livenessFailures = ok ? 0 : this.livenessFailures + 1;
        this.livenessFailuresMax = Math.max(this.livenessFailuresMax, this.livenessFailures);
      });
    }
  }

  private stopProbes(): void {
    for (const t of this.probeTimers) clearInterval(t);
    this.probeTimers = [];
  }

  private portOf(container: ContainerSpec, port: number | string): number {
    if (typeof port === 'number') return port;
    const p = (container.ports ?? []).find((x) => x.name === port);
    if (!p) throw new Error(`${this.name}: probe port ${port} is not declared`);
    return p.containerPort;
  }

  /** One probe, as the kubelet makes it: from the node, to the pod's address. */
  probe(container: ContainerSpec, probe: Probe): Promise<boolean> {
    if (this.exit !== null || this.main === null) return Promise.resolve(false);
    const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
    if (probe.httpGet) {
      const port = this.portOf(container, probe.httpGet.port);
      return new Promise((resolve) => {
        const req = http.get({ host: this.addr, port, path: probe.httpGet!.path, timeout: timeoutMs, agent: false }, (res) => {
          res.resume();
          resolve((res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 400);
        });
        req.on('timeout', () => req.destroy());
        req.on('error', () => resolve(false));
      });
    }
    if (probe.tcpSocket) {
      const port = this.portOf(container, probe.tcpSocket.port);
      return new Promise((resolve) => {
        const socket = net.connect({ host: this.addr, port, timeout: timeoutMs }, () => {
          socket.destroy();
          resolve(true);
        });
        socket.on('timeout', () => socket.destroy());
        socket.on('error', () => resolve(false));
        socket.on('close', () => resolve(false));
      });
    }
    return Promise.resolve(false);
  }

  /** `kubectl delete pod`: SIGTERM, then SIGKILL after the grace period. Resolves with how
   * the main container ended and how long it took. */
  async delete(): Promise<{ exit: ExitInfo; ms: number; killed: boolean }> {
    this.stopProbes();
    this.ready = false;
    const child = this.main;
    const t0 = Date.now();
    if (child === null) throw new Error(`${this.name} is not running`);
    const graceMs = (this.spec.terminationGracePeriodSeconds ?? 30) * 1000;
    const exited = new Promise<void>((resolve) => (this.exit !== null ? resolve() : child.once('exit', () => resolve())));
    child.kill('SIGTERM');
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      child.kill('SIGKILL');
    }, graceMs);
    await exited;
    clearTimeout(timer);
    this.main = null;
    return { exit: this.exit!, ms: Date.now() - t0, killed };
  }

  /** The claim's directory (deleting the PVC). */
  deleteClaims(): void {
    for (const claim of this.claims) rmSync(join(this.host.volumesDir, `${claim}-${this.name}`), { recursive: true, force: true });
  }

  stopNow(): void {
    this.stopProbes();
    if (this.main && this.exit === null) this.main.kill('SIGKILL');
  }
}

/** Pod specs of a render, by workload. */
export function podSpecOfWorkload(obj: K8sObject): PodSpec {
  return obj.kind === 'Pod' ? (obj.spec as unknown as PodSpec) : ((obj.spec as { template: { spec: PodSpec } }).template.spec);
}

export function fuseMounted(pid: number, mountpoint: string): boolean {
  const r = spawnSync('cat', [`/proc/${pid}/mounts`], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.split('\n').some((line) => line.split(' ')[1] === mountpoint && line.split(' ')[2]?.startsWith('fuse'));
}
