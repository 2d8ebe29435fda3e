/* fast-check generators shared by the fuzz suites (test/unit/fuzz-codec.test.ts,
 * test/integration/fuzz-endpoints.test.ts): paths and op-shaped objects, valid and not. */
import fc from 'fast-check';

export const fuzzPath = fc.oneof(
  fc.constantFrom('/', '/d', '/d/f', '/d/l', '/a/b', '', 'a', '/a/../b', '/./a', '//a', '/a/', '/a\0b', '/\udc80', '/\ud800', '/' + 'x'.repeat(256)),
  fc.string({ maxLength: 40 }).map((s) => '/' + s),
  fc.string({ maxLength: 40 }),
);

/** A number where an op wants one: in range, out of it, not an integer, not a number. */
export const fuzzNumber = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-1, 0, 0o644, 0o7777, 0o10000, 0o20644, 2 ** 32, Number.MAX_SAFE_INTEGER, 2 ** 53), fc.constant('1'), fc.constant(null));

export const OP_TYPES = ['mkdir', 'create', 'write', 'truncate', 'fallocate', 'unlink', 'rmdir', 'rename', 'symlink', 'link', 'chmod', 'chown', 'utimens', 'atime', 'ctime', 'mknod', 'setxattr', 'removexattr', 'noop', 'nope'];

/** An op-shaped object: a known type (or not) with fields of the right names and random values. */
export const opLike = fc.record(
  {
    type: fc.constantFrom(...OP_TYPES),
    path: fuzzPath,
    from: fuzzPath,
    to: fuzzPath,
    target: fc.oneof(fuzzPath, fc.string()),
    mode: fuzzNumber,
    uid: fuzzNumber,
    gid: fuzzNumber,
    size: fuzzNumber,
    offset: fuzzNumber,
    rdev: fuzzNumber,
    flags: fuzzNumber,
    exclusive: fc.oneof(fc.boolean(), fuzzNumber),
    name: fc.oneof(fc.constantFrom('user.a', 'trusted.b', 'security.c', 'user.', 'user.dfs.meta', 'system.posix_acl_access', ''), fc.string({ maxLength: 300 })),
    atimeMs: fc.oneof(fuzzNumber, fc.constant('now')),
    mtimeMs: fc.oneof(fuzzNumber, fc.constant('now')),
    extents: fc.oneof(fc.array(fc.tuple(fuzzNumber, fuzzNumber), { maxLength: 4 }), fc.jsonValue({ maxDepth: 2 })),
  },
  { requiredKeys: ['type'] },
);

/** fc.assert, with the property's own error (fast-check keeps it as the cause) in the
 * message beside the seed and the counterexample, so a failing case says what went wrong. */
export async function fuzzAssert<T>(property: fc.IAsyncProperty<T>, params: fc.Parameters<T>): Promise<void> {
  try {
    await fc.assert(property, params);
  } catch (e) {
    throw withCause(e);
  }
}

export function fuzzAssertSync<T>(property: fc.IProperty<T>, params: fc.Parameters<T>): void {
  try {
    fc.assert(property, params);
  } catch (e) {
    throw withCause(e);
  }
}

function withCause(e: unknown): Error {
  const err = e as Error & { cause?: unknown };
  const cause = err.cause instanceof Error ? err.cause.message : err.cause === undefined ? '' : String(err.cause);
  return new Error(`${err.message}${cause ? `\nThe failure: ${cause}` : ''}`);
}
