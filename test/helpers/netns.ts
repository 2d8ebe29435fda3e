/*
 * A network lab for partition tests: every party (Redis, each proxy, each storage node,
 * each mount's client side) runs in a network namespace of its own, with its own address
 * on one bridge, so that a link between two parties can be cut and healed while the rest
 * carries on (DESIGN.md: "a harness … in network namespaces where a partition is needed").
 *
 *   root namespace: bridge dfsb<tag> 10.214.<k>.1/24 (the test itself, as an observer; k
 *   free of other labs, claimSubnet)
 *        │ veth pairs, one per party
 *   ns dfs<tag>-redis 10.214.<k>.10   ns dfs<tag>-p1 .11   ns dfs<tag>-n1 .21 …
 *
 * A cut is a blackhole route in the sender's namespace (`ip route add blackhole ADDR/32`):
 * packets from A to B are dropped silently, as a firewall DROP rule would (iptables and nft
 * are not on every machine; iproute2 is). Cutting A to B alone is a one-way cut; a TCP
 * connection then fails both ways (B's segments reach A, A's answers do not), as with a
 * one-way firewall rule. Processes start under `nsenter --net=…`, which changes only the
 * network namespace, so a FUSE mount made inside is visible to the whole machine.
 *
 * `NetLab.create` returns a reason instead of a lab where the kernel or the user may not
 * make namespaces (not root, no veth or bridge support): the suite skips with it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface Party {
  name: string;
  ns: string;
  addr: string;
}

function ip(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('ip', args, { encoding: 'utf8' });
  return { ok: r.status === 0, err: `${r.stderr ?? ''}${r.error ? String(r.error) : ''}`.trim() };
}

function mustIp(args: string[]): void {
  const r = ip(args);
  if (!r.ok) throw new Error(`ip ${args.join(' ')}: ${r.err}`);
}

export class NetLab {
  readonly parties = new Map<string, Party>();
  readonly observerAddr: string;
  private readonly cuts = new Set<string>();
  private readonly children: ChildProcess[] = [];

  private constructor(
    readonly tag: string,
    private readonly bridge: string,
    private readonly subnet: string,
  ) {
    this.observerAddr = `${subnet}.1`;
  }

  /** Makes the bridge and one namespace per name; a string says why it cannot. */
  static create(names: string[]): NetLab | string {
    if (process.getuid?.() !== 0) return 'network namespaces need root';
    const tag = (process.pid % 10_000).toString(36) + Math.floor(Math.random() * 36).toString(36);
    const subnet = claimSubnet();
    if (!subnet) return 'no free 10.214.k.0/24 subnet for the lab';
    const lab = new NetLab(tag, `dfsb${tag}`, subnet);
    const probe = ip(['link', 'add', lab.bridge, 'type', 'bridge']);
    if (!probe.ok) {
      releaseSubnet(subnet);
      return `the kernel refused a bridge: ${probe.err}`;
    }
    try {
      mustIp(['addr', 'add', `${lab.observerAddr}/24`, 'dev', lab.bridge]);
      mustIp(['link', 'set', lab.bridge, 'up']);
      names.forEach((name, i) => lab.addParty(name, i));
    } catch (e) {
      lab.destroy();
      return `could not build the lab: ${(e as Error).message}`;
    }
    return lab;
  }

  private addParty(name: string, index: number): void {
    const ns = `dfs${this.tag}-${name}`;
    const host = `v${this.tag}${index}h`;
    const peer = `v${this.tag}${index}p`;
    const addr = `${this.subnet}.${10 + index}`;
    mustIp(['netns', 'add', ns]);
    this.parties.set(name, { name, ns, addr });
    mustIp(['link', 'add', host, 'type', 'veth', 'peer', 'name', peer]);
    mustIp(['link', 'set', host, 'master', this.bridge]);
    mustIp(['link', 'set', host, 'up']);
    mustIp(['link', 'set', peer, 'netns', ns]);
    mustIp(['-n', ns, 'link', 'set', 'lo', 'up']);
    mustIp(['-n', ns, 'link', 'set', peer, 'name', 'eth0']);
    mustIp(['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    mustIp(['-n', ns, 'link', 'set', 'eth0', 'up']);
  }

  party(name: string): Party {
    const p = this.parties.get(name);
    if (!p) throw new Error(`no party ${name} in the lab`);
    return p;
  }

  /** Drops every packet from `from` to `to` (a one-way cut; cut both for a split). */
  cut(from: string, to: string): void {
    const key = `${from}>${to}`;
    if (this.cuts.has(key)) return;
    mustIp(['-n', this.party(from).ns, 'route', 'add', 'blackhole', `${this.party(to).addr}/32`]);
    this.cuts.add(key);
  }

  heal(from: string, to: string): void {
    const key = `${from}>${to}`;
    if (!this.cuts.has(key)) return;
    mustIp(['-n', this.party(from).ns, 'route', 'del', 'blackhole', `${this.party(to).addr}/32`]);
    this.cuts.delete(key);
  }

  /** Cuts (or heals) both ways between every member of `a` and every member of `b`. */
  split(a: string[], b: string[], on = true): void {
    for (const x of a) {
      for (const y of b) {
        if (x === y) continue;
        if (on) {
          this.cut(x, y);
          this.cut(y, x);
        } else {
          this.heal(x, y);
          this.heal(y, x);
        }
      }
    }
  }

  healAll(): void {
    for (const key of [...this.cuts]) {
      const [from, to] = key.split('>') as [string, string];
      this.heal(from, to);
    }
  }

  /** Starts `argv` inside the party's network namespace, its output to `logFile`. */
  spawn(name: string, argv: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): ChildProcess {
    const fd = openSync(logFile, 'a');
    const child = spawn('nsenter', [`--net=/run/netns/${this.party(name).ns}`, '--', ...argv], { stdio: ['ignore', fd, fd], env });
    this.children.push(child);
    return child;
  }

  /** Removes every namespace (their veth ends and routes go with them) and the bridge. */
  destroy(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const p of this.parties.values()) ip(['netns', 'del', p.ns]);
    ip(['link', 'del', this.bridge]);
    releaseSubnet(this.subnet);
  }
}

/** The lock file that says which lab process holds a subnet. */
const subnetLock = (subnet: string) => join(tmpdir(), `dfs-netlab-${subnet}.lock`);

/**
 * A /24 of 10.214.0.0/16 that no other lab holds: the test runner runs several partition
 * files at once, each with its own lab, and two labs on one subnet would put the same
 * addresses on two bridges of the root namespace, where the test's own requests (status,
 * verify, the register set-up) could reach the other lab's proxies. A lab holds its subnet by
 * a lock file made with O_EXCL and naming its pid (one of a process that is gone is taken
 * over), and skips a subnet any interface of this namespace already has.
 */
function claimSubnet(): string | null {
  const inUse = spawnSync('ip', ['-4', '-o', 'addr', 'show'], { encoding: 'utf8' }).stdout ?? '';
  for (let i = 0; i < 250; i++) {
    const subnet = `10.214.${1 + ((process.pid + i) % 250)}`;
    if (inUse.includes(` ${subnet}.`)) continue;
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(subnetLock(subnet), 'wx');
        writeSync(fd, String(process.pid));
        closeSync(fd);
        return subnet;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        let holder = NaN;
        try {
          holder = Number(readFileSync(subnetLock(subnet), 'utf8'));
        } catch {
          // removed meanwhile: try again
        }
        if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) break;
        try {
          unlinkSync(subnetLock(subnet));
        } catch {
          // another lab took it over first
        }
      }
    }
  }
  return null;
}

function releaseSubnet(subnet: string): void {
  try {
    if (Number(readFileSync(subnetLock(subnet), 'utf8')) === process.pid) unlinkSync(subnetLock(subnet));
  } catch {
    // not held
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
