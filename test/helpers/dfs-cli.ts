/* Runs the real `dfs` command (bin/dfs) as a child process, with a deadline. */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO_ROOT } from '../../cli/local-cluster';
import { clientCredentialSourceFor } from '../../common/tls';

export const DFS_BIN = join(REPO_ROOT, 'bin', 'dfs');
/** One CLI call; `local up` waits for a whole cluster (and a mount), so it gets plenty. */
export const CLI_TIMEOUT_MS = 90_000;

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The credential for the proxies a command line names with --proxy, as the harness
 * registered it (the cluster's admin credential), for $DFS_CREDENTIAL. */
function credentialFor(args: string[]): Record<string, string> {
  const at = args.indexOf('--proxy');
  const first = at >= 0 ? args[at + 1]?.split(',')[0] : undefined;
  let source: string | null = null;
  try {
    source = first ? clientCredentialSourceFor(first) : null;
  } catch {
    // Not a URL: the command itself says so.
  }
  return source ? { DFS_CREDENTIAL: source } : {};
}

export function runDfs(args: string[], timeoutMs = CLI_TIMEOUT_MS, env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, [DFS_BIN, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...credentialFor(args), ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`dfs ${args.join(' ')} ran over ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}
