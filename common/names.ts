/*
 * Names are bytes. A Linux file name is any bytes but '/' and NUL, not necessarily UTF-8,
 * while the wire (JSON, query strings) and JavaScript carry text. dfs carries a path as a
 * JavaScript string in which valid UTF-8 reads as itself and each byte that is not part of
 * valid UTF-8 stands as one lone low surrogate, U+DC80 to U+DCFF (Python's
 * "surrogateescape", PEP 383). So an ordinary name is the same string everywhere, and any
 * byte string survives a round trip: bytes -> wire string -> bytes.
 *
 * Where a path meets the outside it is converted:
 *   - the mount gets paths from fuse-native as latin1 strings (one char per byte: the dfs
 *     patch) and hands names and link targets back the same way (kernelToWire/wireToKernel);
 *   - JSON carries lone surrogates as \udcXX escapes (JSON.stringify, ES2019), unchanged;
 *   - a query string carries the bytes percent-encoded (encodeQueryValue/decodeQueryValue),
 *     since encodeURIComponent refuses lone surrogates and URLSearchParams replaces them;
 *   - a storage node gives the file system a Buffer of the bytes where the name is not
 *     plain UTF-8 (wireToBytes), and decodes what readdir and readlink return (bytesToWire).
 * A string with any other lone surrogate stands for no byte string and is refused
 * (validatePath, BAD_PATH).
 */

const ESCAPE_BASE = 0xdc00;
const ESCAPE_MIN = 0xdc80;
const ESCAPE_MAX = 0xdcff;

/** Whether `s` has no lone surrogate at all: then it is plain text, its UTF-8 is its bytes. */
export function isPlainText(s: string): boolean {
  // Fast path: most names are ASCII.
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
    }
    return false;
  }
  return true;
}

/** Whether every lone surrogate in `s` is an escaped byte: `s` stands for a byte string. */
export function isWireString(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdfff) continue;
    if (c <= 0xdbff) {
      const d = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
      return false;
    }
    if (c < ESCAPE_MIN || c > ESCAPE_MAX) return false;
  }
  return true;
}

/** The bytes a wire string stands for. */
export function wireToBytes(s: string): Buffer {
  if (isPlainText(s)) return Buffer.from(s, 'utf8');
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++;
        continue;
      }
    }
    if (c >= ESCAPE_MIN && c <= ESCAPE_MAX) {
      parts.push(Buffer.from(s.slice(start, i), 'utf8'), Buffer.of(c - ESCAPE_BASE));
      start = i + 1;
    }
  }
  parts.push(Buffer.from(s.slice(start), 'utf8'));
  return Buffer.concat(parts);
}

/** How many bytes a wire string stands for. */
export function wireByteLength(s: string): number {
  return isPlainText(s) ? Buffer.byteLength(s, 'utf8') : wireToBytes(s).length;
}

/** The length of the valid UTF-8 sequence starting at `i`, or 0 when the byte there does
 * not start one (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF). */
function utf8SequenceLength(b: Buffer, i: number): number {
  const x = b[i]!;
  if (x < 0x80) return 1;
  const cont = (j: number, lo = 0x80, hi = 0xbf) => j < b.length && b[j]! >= lo && b[j]! <= hi;
  if (x >= 0xc2 && x <= 0xdf) return cont(i + 1) ? 2 : 0;
  if (x === 0xe0) return cont(i + 1, 0xa0) && cont(i + 2) ? 3 : 0;
  if ((x >= 0xe1 && x <= 0xec) || x === 0xee || x === 0xef) return cont(i + 1) && cont(i + 2) ? 3 : 0;
  if (x === 0xed) return cont(i + 1, 0x80, 0x9f) && cont(i + 2) ? 3 : 0;
  if (x === 0xf0) return cont(i + 1, 0x90) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (x >= 0xf1 && x <= 0xf3) return cont(i + 1) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  if (x === 0xf4) return cont(i + 1, 0x80, 0x8f) && cont(i + 2) && cont(i + 3) ? 4 : 0;
  return 0;
}

/** The wire string of a byte string. */
export function bytesToWire(b: Buffer): string {
  let out = '';
  let start = 0;
  let i = 0;
  while (i < b.length) {
    const n = utf8SequenceLength(b, i);
    if (n > 0) {
      i += n;
      continue;
    }
    out += b.toString('utf8', start, i) + String.fromCharCode(ESCAPE_BASE + b[i]!);
    i++;
    start = i;
  }
  return start === 0 ? b.toString('utf8') : out + b.toString('utf8', start);
}

/** A path as fuse-native hands it over with the dfs patch (one latin1 char per byte). */
export function kernelToWire(s: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s) ? s : bytesToWire(Buffer.from(s, 'latin1'));
}

/** A name or link target for fuse-native (one latin1 char per byte). */
export function wireToKernel(s: string): string {
  // eslint-disable-next-line no-control-regex
  return /^[\x00-\x7f]*$/.test(s) ? s : wireToBytes(s).toString('latin1');
}

/** Bytes that stay as they are in a query value (RFC 3986 unreserved, and '/'). */
const QUERY_PLAIN = /^[A-Za-z0-9\-._~/]$/;

/** A query value carrying exactly the bytes of a wire string. */
export function encodeQueryValue(s: string): string {
  let out = '';
  for (const byte of wireToBytes(s)) {
    const ch = String.fromCharCode(byte);
    out += QUERY_PLAIN.test(ch) ? ch : '%' + byte.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

/** The wire string a query value carries (percent-decoded as bytes; '+' is a space). */
export function decodeQueryValue(raw: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c === '%' && /^[0-9A-Fa-f]{2}$/.test(raw.slice(i + 1, i + 3))) {
      bytes.push(Number.parseInt(raw.slice(i + 1, i + 3), 16));
      i += 2;
    } else if (c === '+') {
      bytes.push(0x20);
    } else {
      for (const b of Buffer.from(c, 'utf8')) bytes.push(b);
    }
  }
  return bytesToWire(Buffer.from(bytes));
}

/** The value of query parameter `name` in a URL, decoded as bytes; undefined if absent. */
export function queryValue(url: string, name: string): string | undefined {
  const q = url.indexOf('?');
  if (q < 0) return undefined;
  const end = url.indexOf('#', q);
  for (const pair of url.slice(q + 1, end < 0 ? undefined : end).split('&')) {
    const eq = pair.indexOf('=');
    const key = decodeQueryValue(eq < 0 ? pair : pair.slice(0, eq));
    if (key === name) return decodeQueryValue(eq < 0 ? '' : pair.slice(eq + 1));
  }
  return undefined;
}

/** A query string of wire-string values (each carried as its bytes). */
export function buildQuery(params: Record<string, string>): string {
  return Object.entries(params)
    .map(([k, v]) => `${encodeQueryValue(k)}=${encodeQueryValue(v)}`)
    .join('&');
}
