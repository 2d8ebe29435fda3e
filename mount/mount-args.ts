/*
 * The command line of dfs-mount, parsed and validated at start-up (common/config.ts), and
 * the check whether a directory is still a FUSE mount point (from /proc/mounts).
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { intOption } from '../common/config';
import { MOUNT_CONFIG_DEFAULTS } from './fuse-ops';
import type { MetricsAddress } from './metrics';

export const DEFAULT_PROXY_URL = 'https://127.0.0.1:7400';
export const USAGE = `usage: dfs-mount MOUNTPOINT [--proxy URL[,URL...]] [-f] [--attr-timeout-ms N] [--deadline-ms N] [--allow-other | --private]
                 [--metrics-addr HOST:PORT] (--ca FILE --cert FILE --key FILE | --insecure)

  --proxy URLS          proxies to use, comma-separated (default: $DFS_PROXY or ${DEFAULT_PROXY_URL})
  -f, --foreground      stay in the foreground (default: go to the background once mounted)
  --attr-timeout-ms N   how long attributes are cached without a lease, 0 for none (default ${MOUNT_CONFIG_DEFAULTS.attrTimeoutMs})
  --no-leases           ask the cluster on every lookup and stat instead of caching under
                        leases the cluster revokes before any conflicting change
  --deadline-ms N       bound on every file system call (default ${MOUNT_CONFIG_DEFAULTS.deadlineMs})
  --allow-other         let other users use the mount, the kernel checking their permissions
                        (default for root, and for others when /etc/fuse.conf has user_allow_other)
  --private             only the mounting user may use the mount (libfuse's default)
  --read-node ID        serve every read from this storage node (it must be in sync)
  --atime MODE          noatime (default): reads never move atime; relatime: as a local
                        disk mounted relatime, at the cost of one small op on the first
                        read of a file after each change (or a day)
  --debug-fuse          log every FUSE request (libfuse's debug option)
  --metrics-addr HOST:PORT
                        serve Prometheus metrics at http://HOST:PORT/metrics (default: off)
  --ca FILE             the cluster's CA certificate (PEM)
  --cert FILE, --key FILE
                        this mount's credential: a certificate \`dfs credential issue\` made,
                        and its key (docs/security.md)
  --insecure            plaintext to --proxy http:// URLs, no credential (README, Security)
`;

export interface Cli {
  mountpoint: string;
  proxies: string[];
  foreground: boolean;
  attrTimeoutMs: number;
  deadlineMs: number;
  allowOther: boolean;
  /** Cache under leases (mount/leases.ts); --no-leases turns it off. */
  leases: boolean;
  /** Pin reads to one storage node (the dfs-read-node header); undefined: any. */
  readNode: string | undefined;
  debugFuse: boolean;
  atime: 'relatime' | 'noatime';
  /** Where to serve /metrics; undefined: nowhere. */
  metricsAddr: MetricsAddress | undefined;
  /** The transport's files (common/tls.ts, loadProcessTls checks them at start-up). */
  tls: { ca?: string; cert?: string; key?: string; insecure?: boolean };
}

export function parseCli(argv: string[], env: NodeJS.ProcessEnv = process.env): Cli | 'help' {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      proxy: { type: 'string' },
      foreground: { type: 'boolean', short: 'f' },
      'attr-timeout-ms': { type: 'string' },
      'deadline-ms': { type: 'string' },
      'allow-other': { type: 'boolean' },
      private: { type: 'boolean' },
      'no-leases': { type: 'boolean' },
      'read-node': { type: 'string' },
      'debug-fuse': { type: 'boolean' },
      atime: { type: 'string' },
      'metrics-addr': { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      insecure: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  if (positionals.length !== 1) throw new Error(`expected one MOUNTPOINT\n${USAGE}`);
  if (values['allow-other'] && values.private) throw new Error('--allow-other and --private contradict each other');
  const proxies = (values.proxy ?? env.DFS_PROXY ?? DEFAULT_PROXY_URL)
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  if (proxies.length === 0) throw new Error('--proxy needs at least one URL');
  for (const p of proxies) {
    let u: URL;
    try {
      u = new URL(p);
    } catch {
      throw new Error(`--proxy: ${JSON.stringify(p)} is not a URL`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`--proxy: ${p} must be an http: or https: URL`);
  }
  return {
    mountpoint: resolve(positionals[0]!),
    proxies,
    foreground: values.foreground ?? false,
    attrTimeoutMs: intOption(values['attr-timeout-ms'], 'attr-timeout-ms', MOUNT_CONFIG_DEFAULTS.attrTimeoutMs, 0, 3_600_000),
    deadlineMs: intOption(values['deadline-ms'], 'deadline-ms', MOUNT_CONFIG_DEFAULTS.deadlineMs, 100, 3_600_000),
    allowOther: values['allow-other'] ? true : values.private ? false : allowOtherByDefault(),
    leases: !(values['no-leases'] ?? false),
    readNode: values['read-node'],
    debugFuse: values['debug-fuse'] ?? false,
    atime: atimeMode(values.atime),
    metricsAddr: values['metrics-addr'] === undefined ? undefined : parseMetricsAddr(values['metrics-addr']),
    tls: {
      ...(values.ca !== undefined ? { ca: resolve(values.ca) } : {}),
      ...(values.cert !== undefined ? { cert: resolve(values.cert) } : {}),
      ...(values.key !== undefined ? { key: resolve(values.key) } : {}),
      ...(values.insecure ? { insecure: true } : {}),
    },
  };
}

/**
 * Whether a mount lets other users in when neither --allow-other nor --private is given. A
 * local disk, an NFS or a JuiceFS mount made by root is usable by every user, the kernel
 * checking permissions; dfs always mounts with default_permissions, so allow_other gives
 * exactly that. A user other than root may only ask for it when /etc/fuse.conf says
 * user_allow_other (fusermount refuses the mount otherwise), so there it is the default
 * only then, and without it the mount stays the user's own as before.
 */
export function allowOtherByDefault(uid: number = process.getuid?.() ?? -1, fuseConf: string | null = readFuseConf()): boolean {
  if (uid === 0) return true;
  return fuseConf !== null && userAllowOther(fuseConf);
}

/** Whether fuse.conf(5) text has the user_allow_other line (comments start with #). */
export function userAllowOther(fuseConf: string): boolean {
  return fuseConf.split('\n').some((line) => line.replace(/#.*/, '').trim() === 'user_allow_other');
}

function readFuseConf(): string | null {
  try {
    return readFileSync('/etc/fuse.conf', 'utf8');
  } catch {
    return null;
  }
}

/** HOST:PORT, where HOST is a name, an IPv4 address or a bracketed IPv6 one ([::1]:9464). */
export function parseMetricsAddr(v: string): MetricsAddress {
  const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]\s]+)):(\d+)$/.exec(v);
  if (match === null) throw new Error(`--metrics-addr must be HOST:PORT, not ${JSON.stringify(v)}`);
  const host = match[1] ?? match[2]!;
  const port = intOption(match[3], 'metrics-addr port', 0, 1, 65535);
  return { host, port };
}

function atimeMode(v: string | undefined): 'relatime' | 'noatime' {
  if (v === undefined) return MOUNT_CONFIG_DEFAULTS.atime;
  if (v === 'relatime' || v === 'noatime') return v;
  throw new Error(`--atime must be relatime or noatime, not ${JSON.stringify(v)}`);
}

/** True when /proc/mounts lists a FUSE mount at `mountpoint` (proc(5); fields are octal-escaped). */
export function isMounted(mountpoint: string): boolean {
  let text: string;
  try {
    text = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return true; // cannot tell: assume it is
  }
  for (const line of text.split('\n')) {
    const f = line.split(' ');
    if (f.length < 3) continue;
    const target = f[1]!.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (target === mountpoint && f[2]!.startsWith('fuse')) return true;
  }
  return false;
}

