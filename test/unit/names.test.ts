/*
 * Names are bytes (common/names.ts): every byte string survives bytes -> wire string ->
 * bytes, plain text stays itself, query strings carry the bytes, and strings that stand for
 * no byte string are told apart.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  buildQuery,
  bytesToWire,
  decodeQueryValue,
  encodeQueryValue,
  isPlainText,
  isWireString,
  kernelToWire,
  queryValue,
  wireByteLength,
  wireToBytes,
  wireToKernel,
} from '../../common/names';
import { validatePath } from '../../common/paths';
import { prng } from '../helpers/prng';

const cases: Array<[string, Buffer]> = [
  ['ascii', Buffer.from('hello.txt')],
  ['utf-8', Buffer.from('café €𝄞', 'utf8')],
  ['lone 0xff', Buffer.from([0x61, 0xff, 0x62])],
  ['truncated sequence', Buffer.from([0xe2, 0x82])],
  ['overlong slash', Buffer.from([0xc0, 0xaf])],
  ['encoded surrogate', Buffer.from([0xed, 0xb2, 0x80])],
  ['above U+10FFFF', Buffer.from([0xf4, 0x90, 0x80, 0x80])],
  ['control bytes', Buffer.from([0x01, 0x1b, 0x5b, 0x7f])],
];

test('byte strings round-trip through wire strings; plain text is unchanged', () => {
  for (const [what, bytes] of cases) {
    const wire = bytesToWire(bytes);
    assert.ok(isWireString(wire), what);
    assert.ok(wireToBytes(wire).equals(bytes), what);
    assert.is(wireByteLength(wire), bytes.length, what);
    const utf8 = bytes.toString('utf8');
    if (Buffer.from(utf8, 'utf8').equals(bytes)) {
      assert.is(wire, utf8, `${what}: valid UTF-8 reads as itself`);
      assert.ok(isPlainText(wire), what);
    } else {
      assert.not.ok(isPlainText(wire), `${what}: carries escapes`);
    }
  }
  assert.is(bytesToWire(Buffer.from([0x61, 0xff])), 'a\udcff');
});

test('random byte strings round-trip (seeded)', () => {
  const rand = prng(20261124);
  for (let n = 0; n < 2000; n++) {
    const bytes = rand.bytes(1 + rand.int(12));
    const wire = bytesToWire(bytes);
    assert.ok(wireToBytes(wire).equals(bytes), bytes.toString('hex'));
    assert.ok(wireToBytes(kernelToWire(bytes.toString('latin1'))).equals(bytes), 'from the kernel');
    assert.is(wireToKernel(wire), bytes.toString('latin1'), 'to the kernel');
    assert.is(decodeQueryValue(encodeQueryValue(wire)), wire, 'through a query value');
  }
});

test('query strings carry the bytes; unknown and repeated keys behave', () => {
  const path = '/d/a b&c=%\udcff/é';
  const url = `http://h/v1/attr?${buildQuery({ path, barrier: '7' })}`;
  assert.is(queryValue(url, 'path'), path);
  assert.is(queryValue(url, 'barrier'), '7');
  assert.is(queryValue(url, 'none'), undefined);
  assert.is(queryValue('http://h/x', 'path'), undefined);
  assert.is(queryValue('http://h/x?path=%2Fa+b#frag', 'path'), '/a b');
  assert.is(queryValue('http://h/x?path=%zz', 'path'), '%zz', 'a bad escape stays as text');
});

test('strings that stand for no bytes are refused as paths', () => {
  assert.not.ok(isWireString('/a\ud800'), 'a lone high surrogate');
  assert.not.ok(isWireString('/a\udc00'), 'a low surrogate below the escapes');
  assert.ok(isWireString('/a\ud834\udd1e'), 'a pair is text');
  assert.throws(() => validatePath('/a\ud800'), /stands for no byte/);
  assert.is(validatePath('/a\udcff'), '/a\udcff');
  // Lengths count bytes: 255 escaped bytes are a 255-byte name, 256 are too long.
  assert.is(validatePath('/' + '\udcff'.repeat(255)).length, 256);
  assert.throws(() => validatePath('/' + '\udcff'.repeat(256)), /longer than 255/);
});

test.run();
