/*
 * Helpers shared by the mount's unit suites (uvu 0.5 has no assert.rejects).
 */
import * as assert from 'uvu/assert';

/** Asserts that `f()` rejects with an error whose message matches `re`. */
export async function rejects(f: () => Promise<unknown>, re: RegExp, msg?: string): Promise<void> {
  let err: unknown = null;
  try {
    await f();
  } catch (e) {
    err = e;
  }
  if (err === null) assert.unreachable(msg ?? `expected a rejection matching ${re}`);
  assert.match(err instanceof Error ? err.message : String(err), re, msg);
}
