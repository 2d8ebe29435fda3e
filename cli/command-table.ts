/*
 * The `dfs` command line as data: every subcommand, its synopsis, what it does, and its
 * options. dfs.ts dispatches on it and parses each subcommand's arguments with
 * node:util's parseArgs from the options here; `dfs --help` and `dfs <subcommand> --help`
 * are printed from it; and test/unit/command-table.test.ts checks that the README's usage
 * blocks say the same, and that each synopsis names exactly the options parsed. So a new
 * option is added here once, and the help and the parser follow.
 */
import type { ParseArgsConfig } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** The value's placeholder in help (`DIR`); string options only. */
  value?: string;
  help: string;
}

export interface CommandSpec {
  /** The words after `dfs`: ['local', 'up']. */
  words: string[];
  /** What follows the words in the usage line; the README's usage block says the same. */
  synopsis: string;
  /** What it does, in a sentence or two, for `--help`. */
  summary: string;
  /** The options parseArgs accepts, by name. */
  options: Record<string, OptionSpec>;
  /** How many positional arguments it takes (default none). */
  positionals?: { name: string; count: number };
  /** Options not listed here are passed on to the program it runs (`node start`), not refused. */
  passesOn?: string;
}

const DATA: OptionSpec = { type: 'string', value: 'DIR', help: 'where the local cluster keeps its data and cluster.json (default: $DFS_DATA, else ~/.dfs/local)' };
const JSON_OUT: OptionSpec = { type: 'boolean', help: 'print JSON instead of a table' };
const PROXY: OptionSpec = { type: 'string', value: 'URL[,URL...]', help: 'the proxies to ask (default: $DFS_PROXY, else the local cluster\'s in --data)' };
const REDIS: OptionSpec = { type: 'string', value: 'URL', help: 'the cluster\'s Redis (default: $DFS_REDIS, else the local cluster\'s in --data)' };

export const COMMANDS: readonly CommandSpec[] = [
  {
    words: ['local', 'up'],
    synopsis: '[--data DIR] [--nodes N] [--proxies N] [--min-in-sync N] [--mount DIR [--private]] [--no-supervise] [--insecure]',
    summary: 'Starts Redis, the storage nodes and the proxies on loopback as processes that outlive the command, waits until every node is in sync, records them in DIR/cluster.json, and starts a supervisor that restarts what dies.',
    options: {
      data: DATA,
      nodes: { type: 'string', value: 'N', help: 'storage nodes, 1 to 16 (default 3)' },
      proxies: { type: 'string', value: 'N', help: 'proxies, 1 to 16 (default 2)' },
      'min-in-sync': { type: 'string', value: 'N', help: 'the floor on copies: a write is acknowledged only once N in-sync nodes hold it (default: a majority of the nodes)' },
      mount: { type: 'string', value: 'DIR', help: 'also mount the cluster at DIR (created if missing) with dfs-mount' },
      private: { type: 'boolean', help: "with --mount: only the user who ran this may use the mount (a mount made by root lets every user in, the kernel checking permissions)" },
      // Node 20's parseArgs has no negated booleans (allowNegative is Node 22).
      'no-supervise': { type: 'boolean', help: 'start no supervisor: a process that dies stays down' },
      insecure: { type: 'boolean', help: 'plaintext and no authentication on every hop (default: TLS with a CA and a certificate per process in DIR/tls; README, Security)' },
    },
  },
  {
    words: ['local', 'status'],
    synopsis: '[--data DIR] [--json]',
    summary: 'Shows each recorded process (pid, state, restarts, URL, brick or mount point) and the cluster as a proxy sees it. Exit code 0: all running; 1: degraded; 3: not running.',
    options: { data: DATA, json: JSON_OUT },
  },
  {
    words: ['local', 'down'],
    synopsis: '[--data DIR]',
    summary: 'Stops exactly what cluster.json records, the supervisor first, then the mounts, proxies, storage nodes and Redis. The data stays.',
    options: { data: DATA },
  },
  {
    words: ['local', 'supervise'],
    synopsis: '[--data DIR]',
    summary: 'Runs the supervisor that restarts any recorded process that dies. `local up` starts it; by hand it replaces one that died.',
    options: { data: DATA },
  },
  {
    words: ['local', 'add-node'],
    synopsis: '[--data DIR]',
    summary: 'Starts the next storage node of a running local cluster; it joins as a learner and enters the in-sync set once caught up.',
    options: { data: DATA },
  },
  {
    words: ['node', 'start'],
    synopsis: '--id ID --data DIR --port N [--host H] [--redis URL] [storage options]',
    summary: 'Runs a storage node in the foreground; it registers in Redis and joins the cluster. Withdraws an earlier `node remove` of the same ID.',
    options: {
      id: { type: 'string', value: 'ID', help: 'the node\'s ID' },
      data: { type: 'string', value: 'DIR', help: 'the node\'s data directory' },
      port: { type: 'string', value: 'N', help: 'the port it serves on' },
      host: { type: 'string', value: 'H', help: 'the address it serves on (default 127.0.0.1)' },
      redis: { type: 'string', value: 'URL', help: 'the cluster\'s Redis (default: $DFS_REDIS, else redis://127.0.0.1:6379)' },
    },
    passesOn: 'storage options (README, Configuration) are passed on to the storage node',
  },
  {
    words: ['node', 'remove'],
    synopsis: 'ID [--redis URL | --data DIR]',
    summary: 'Drains a storage node out of the in-sync set, then out of the membership; with a local cluster it then stops the node\'s process.',
    options: { redis: REDIS, data: DATA },
    positionals: { name: 'ID', count: 1 },
  },
  {
    words: ['node', 'sync-progress'],
    synopsis: 'ID [--proxy URL[,URL...] | --data DIR] [--wait-ms N]',
    summary: 'Follows a storage node\'s full sync to its end: a progress bar on stderr (entries and bytes copied against the totals its source announced, rate, ETA) when stderr is a terminal, else a plain line every tenth of the way; then one line on stdout. A node in sync shows its last full sync, if any.',
    options: {
      proxy: PROXY,
      data: DATA,
      'wait-ms': { type: 'string', value: 'N', help: 'give up (exit 1) when the node is unknown, down or unreachable this long (default 60000)' },
    },
    positionals: { name: 'ID', count: 1 },
  },
  {
    words: ['credential', 'issue'],
    synopsis: '--name NAME --uids IDS --gids IDS [--no-squash] [--subtree PATH] [--days N] [--data DIR] [--json]',
    summary: 'Issues a mount credential signed by the local cluster\'s CA: DIR/tls/NAME.crt and NAME.key, a certificate saying which uids and gids a mount may act as, whether root is squashed, and the subtree it sees as its root (docs/security.md).',
    options: {
      name: { type: 'string', value: 'NAME', help: 'the credential\'s name: its file names and the id in the certificate' },
      uids: { type: 'string', value: 'IDS', help: 'the uids it may act as: 1000,2000-2999, or * for all' },
      gids: { type: 'string', value: 'IDS', help: 'the gids (primary and supplementary) it may act as, likewise' },
      'no-squash': { type: 'boolean', help: 'act as root when the caller is root (default: uid and gid 0 become 65534, which must then be in --uids/--gids to be allowed)' },
      subtree: { type: 'string', value: 'PATH', help: 'confine it to this directory of the cluster, which it sees as /' },
      days: { type: 'string', value: 'N', help: 'how long it is valid (default 90)' },
      data: DATA,
      json: JSON_OUT,
    },
  },
  {
    words: ['credential', 'revoke'],
    synopsis: '(--name NAME | --serial HEX) [--data DIR | --redis URL] [--json]',
    summary: 'Revokes a mount credential: every proxy refuses its certificate within a second, on new and open connections (docs/security.md). --name for one this cluster issued (its certificate in DIR/tls), --serial for any.',
    options: {
      name: { type: 'string', value: 'NAME', help: 'a credential `dfs credential issue` made in --data\'s cluster' },
      serial: { type: 'string', value: 'HEX', help: 'the certificate\'s serial number, as `openssl x509 -noout -serial` prints it' },
      redis: REDIS,
      data: DATA,
      json: JSON_OUT,
    },
  },
  {
    words: ['status'],
    synopsis: '[--proxy URL[,URL...] | --data DIR] [--json]',
    summary: 'Prints the cluster as the leader proxy sees it: leader, epoch, sequence ID, and each node\'s role, state, applied sequence ID and lag; for a node copying a brick, a line with how far it got (percent, bytes and entries of the totals, rate, ETA).',
    options: { proxy: PROXY, data: DATA, json: JSON_OUT },
  },
  {
    words: ['verify'],
    synopsis: '[--proxy URL[,URL...] | --data DIR] [--json]',
    summary: 'Compares every in-sync node\'s brick at one sequence ID; exit code 1 on any difference. Shows its progress on stderr: a bar on a terminal, else a plain line every tenth of the way.',
    options: { proxy: PROXY, data: DATA, json: JSON_OUT },
  },
  {
    words: ['selftest'],
    synopsis: '[--proxy URL[,URL...] | --data DIR] [--timeout-ms N]',
    summary: 'Checks a running cluster end to end: every node in sync, a file written, read back from each node and compared, unlinked, and the bricks verified; exit code 0 when all of it holds, 1 at the first step that fails, with why.',
    options: { proxy: PROXY, data: DATA, 'timeout-ms': { type: 'string', value: 'N', help: 'the whole test\'s deadline in ms, a proxy or node that is down included (default 120000)' } },
  },
  {
    words: ['top'],
    synopsis: '[--admin URL[,URL...] | --data DIR] [--interval-ms N] [--count N]',
    summary: 'A live view, refreshed every second, of op and read rates, latency percentiles and each node\'s state and lag, from the proxies\' admin ports (no certificate needed); q quits.',
    options: {
      admin: { type: 'string', value: 'URL[,URL...]', help: 'the proxies\' admin URLs, http://HOST:PORT (default: those of the local cluster in --data)' },
      data: DATA,
      'interval-ms': { type: 'string', value: 'N', help: 'milliseconds between refreshes (default 1000)' },
      count: { type: 'string', value: 'N', help: 'stop after N refreshes (default: until q or Ctrl-C)' },
    },
  },
];

/** The command that `words` (the arguments after `dfs`) start with, and how many words it took. */
export function findCommand(words: string[]): CommandSpec | null {
  return COMMANDS.find((command) => command.words.every((word, index) => words[index] === word)) ?? null;
}

/** The commands under a group word (`local`, `node`). */
export function commandsUnder(group: string): CommandSpec[] {
  return COMMANDS.filter((command) => command.words.length > 1 && command.words[0] === group);
}

/** `dfs local up [--data DIR] …`, with the words padded to `width` so that a list aligns. */
export function usageLine(command: CommandSpec, width = 0): string {
  return `dfs ${command.words.join(' ').padEnd(width)} ${command.synopsis}`.replace(/ +$/, '');
}

function usageLines(commands: readonly CommandSpec[]): string[] {
  const width = Math.max(...commands.map((command) => command.words.join(' ').length));
  return commands.map((command) => '  ' + usageLine(command, width));
}

/** `dfs --help`: every command, then how to get one command's help. */
export function overallUsage(): string {
  return ['usage:', ...usageLines(COMMANDS), '', '`dfs COMMAND --help` tells more about one command and its options.', ''].join('\n');
}

/** `dfs local --help`: the commands of a group. */
export function groupUsage(group: string): string {
  return ['usage:', ...usageLines(commandsUnder(group)), ''].join('\n');
}

/** Text broken into lines of at most `width` characters, at spaces. */
function wrap(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line.length > 0 && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else {
      line = line.length > 0 ? `${line} ${word}` : word;
    }
  }
  if (line.length > 0) lines.push(line);
  return lines;
}

/** How wide help text runs. */
const HELP_WIDTH = 88;

/** `dfs local up --help`. */
export function commandHelp(command: CommandSpec): string {
  const rows = Object.entries(command.options).map(([name, option]) => [`--${name}${option.value ? ' ' + option.value : ''}`, option.help]);
  const width = Math.max(0, ...rows.map(([flag]) => flag!.length));
  const lines = [`usage: ${usageLine(command)}`, '', ...wrap(command.summary, HELP_WIDTH), ''];
  for (const [flag, help] of rows) lines.push(`  ${flag!.padEnd(width)}  ${help}`);
  if (command.passesOn) lines.push('', ...wrap(command.passesOn, HELP_WIDTH));
  return lines.join('\n') + '\n';
}

/** The parseArgs options of a command (and --help, which every command takes). */
export function parseArgsOptions(command: CommandSpec): NonNullable<ParseArgsConfig['options']> {
  const options: NonNullable<ParseArgsConfig['options']> = { help: { type: 'boolean', short: 'h' } };
  for (const [name, option] of Object.entries(command.options)) options[name] = { type: option.type };
  return options;
}
