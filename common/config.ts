/*
 * Command-line and environment configuration helpers, validated at start-up (STYLE.md:
 * raft's Config.validate). A bad value stops the process with a clear message.
 */
export function intOption(value: string | undefined, name: string, dflt: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined || value === '') return dflt;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new Error(`--${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(value)}`);
  }
  return n;
}

export function requireOption(value: string | undefined, name: string): string {
  if (value === undefined || value === '') throw new Error(`--${name} is required`);
  return value;
}

/** Runs `main`, printing a start-up error as one line instead of a stack trace. */
export function runMain(main: () => Promise<void>): void {
  main().catch((err: unknown) => {
    process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
}
