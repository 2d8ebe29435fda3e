/*
 * What a test started, undone after it whatever happened: a stack of cleanup steps that
 * uvu's after.each hook runs in reverse order (it runs after a failed test too), and that
 * SIGTERM or SIGINT also runs before exiting, so that when the test runner kills a file at
 * its time limit, detached clusters and mounts the file started do not outlive it.
 */
import type { Test } from 'uvu';

type Step = () => unknown;

export interface Cleanups {
  /** Registers a step; steps run last-in, first-out. */
  push(step: Step): void;
  /** Runs and forgets every registered step; a failing step is reported, not thrown. */
  run(): Promise<void>;
}

export function cleanupsFor(suite: Test<any>): Cleanups {
  let steps: Step[] = [];
  const run = async (): Promise<void> => {
    const current = steps.reverse();
    steps = [];
    for (const step of current) {
      try {
        await step();
      } catch (error) {
        process.stderr.write(`cleanup failed: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
  };
  suite.after.each(run);
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      process.stderr.write(`${signal}: cleaning up before exiting\n`);
      void run().finally(() => process.exit(1));
    });
  }
  return { push: (step) => steps.push(step), run };
}
