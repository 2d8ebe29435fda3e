/*
 * The `dfs` command table (cli/command-table.ts) against what users read: the README's
 * usage blocks (its Commands section) list exactly the table's commands with the same
 * synopses; each synopsis names exactly the options the command parses; and the real
 * `dfs <command> --help` prints the table's help for every command.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { REPO_ROOT } from '../../cli/cluster-processes';
import { COMMANDS, commandHelp, findCommand, overallUsage, usageLine } from '../../cli/command-table';

const squeeze = (line: string) => line.trim().replace(/\s+/g, ' ');

/** The `dfs …` lines of the code blocks in the README's Commands section. */
function readmeUsageLines(): string[] {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('\n## Commands');
  assert.ok(start !== -1, 'README has a Commands section');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end === -1 ? undefined : end);
  const lines: string[] = [];
  let inBlock = false;
  for (const line of section.split('\n')) {
    if (line.startsWith('```')) inBlock = !inBlock;
    else if (inBlock && line.startsWith('dfs ')) lines.push(squeeze(line));
  }
  return lines;
}

test('the README usage blocks list every command of the table, with the same synopsis, and no other', () => {
  const readme = readmeUsageLines();
  const table = COMMANDS.map((command) => squeeze(usageLine(command)));
  assert.equal([...readme].sort(), [...table].sort());
});

test('each synopsis names exactly the options its command parses', () => {
  for (const command of COMMANDS) {
    const named = new Set([...command.synopsis.matchAll(/--([a-z][a-z-]*)/g)].map((match) => match[1]!));
    assert.equal([...named].sort(), Object.keys(command.options).sort(), `dfs ${command.words.join(' ')}`);
    for (const [name, option] of Object.entries(command.options)) {
      if (option.type === 'string') assert.ok(command.synopsis.includes(`--${name} ${option.value}`), `--${name} ${option.value} in dfs ${command.words.join(' ')}`);
      else assert.ok(option.value === undefined, `--${name} is a flag and takes no value`);
    }
  }
});

test('findCommand takes the longest table entry the words start with, and nothing else', () => {
  assert.equal(findCommand(['local', 'up', '--data', 'x'])?.words, ['local', 'up']);
  assert.equal(findCommand(['status', '--json'])?.words, ['status']);
  assert.is(findCommand(['local']), null);
  assert.is(findCommand(['local', 'sideways']), null);
  assert.is(findCommand(['mount']), null);
});

const DFS = join(REPO_ROOT, 'bin', 'dfs');

test('dfs <command> --help prints the table\'s help for every command and exits 0', () => {
  for (const command of COMMANDS) {
    const run = spawnSync(process.execPath, [DFS, ...command.words, '--help'], { encoding: 'utf8', timeout: 20_000 });
    assert.is(run.status, 0, `dfs ${command.words.join(' ')} --help: ${run.stderr}`);
    assert.is(run.stdout, commandHelp(command));
  }
  const overall = spawnSync(process.execPath, [DFS, '--help'], { encoding: 'utf8', timeout: 20_000 });
  assert.is(overall.status, 0);
  assert.is(overall.stdout, overallUsage());
});

test('a mistake prints the command\'s own usage and exits 2', () => {
  const run = spawnSync(process.execPath, [DFS, 'local', 'up', '--nodez', '3'], { encoding: 'utf8', timeout: 20_000 });
  assert.is(run.status, 2);
  assert.match(run.stderr, "Unknown option '--nodez'");
  assert.match(run.stderr, 'usage: dfs local up [--data DIR]');
  const group = spawnSync(process.execPath, [DFS, 'node', 'sideways'], { encoding: 'utf8', timeout: 20_000 });
  assert.is(group.status, 2);
  assert.match(group.stderr, 'unknown action "sideways" for dfs node');
  assert.match(group.stderr, 'dfs node remove');
});

test.run();
