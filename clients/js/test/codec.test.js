// Codec round trip and the byte examples of docs/PROTOCOL.md §12, run
// against the bundled file the gateway serves (dist/broker-client.js).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeFrame, decodeFrame } from '../dist/broker-client.js';

const hex = (s) => Uint8Array.from(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));
const toHex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');

test('join frame encodes to the 28 bytes of PROTOCOL.md §12', () => {
  const bytes = encodeFrame({ t: 'join', id: 1, room: 'chat:lobby' });
  assert.equal(bytes.length, 28);
  assert.equal(toHex(bytes), '83 a1 74 a4 6a 6f 69 6e a2 69 64 01 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79');
});

test('join with since and pub encode as in PROTOCOL.md §12', () => {
  const join = encodeFrame({ t: 'join', id: 2, room: 'chat:lobby', since: { seq: 42, epoch: '5f0c3a9e12d47b86' } });
  assert.deepEqual(join, hex(`84 a1 74 a4 6a 6f 69 6e a2 69 64 02 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79
    a5 73 69 6e 63 65 82 a3 73 65 71 2a a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36`));
  const pub = encodeFrame({ t: 'pub', id: 3, room: 'chat:lobby', ev: 'message', data: { text: 'hi' } });
  assert.deepEqual(pub, hex(`85 a1 74 a3 70 75 62 a2 69 64 03 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79
    a2 65 76 a7 6d 65 73 73 61 67 65 a4 64 61 74 61 81 a4 74 65 78 74 a2 68 69`));
});

test('the 72-byte join ack of PROTOCOL.md §12 decodes', () => {
  const bytes = hex(`83 a1 74 a3 61 63 6b a2 69 64 01 a4 64 61 74 61
    84 a4 72 6f 6f 6d aa 63 68 61 74 3a 6c 6f 62 62 79
    a3 73 65 71 2a
    a5 65 70 6f 63 68 b0 35 66 30 63 33 61 39 65 31 32 64 34 37 62 38 36
    a9 72 65 63 6f 76 65 72 65 64 c2`);
  assert.equal(bytes.length, 72);
  assert.deepEqual(decodeFrame(bytes), {
    t: 'ack', id: 1, data: { room: 'chat:lobby', seq: 42, epoch: '5f0c3a9e12d47b86', recovered: false },
  });
  // An ArrayBuffer (what browsers hand over) decodes the same.
  assert.deepEqual(decodeFrame(bytes.slice().buffer).data.seq, 42);
});

test('undefined fields are left out, not sent as nil', () => {
  const bytes = encodeFrame({ t: 'history', id: 7, room: 'chat:a', since: undefined, limit: undefined });
  assert.deepEqual(decodeFrame(bytes), { t: 'history', id: 7, room: 'chat:a' });
  assert.equal(bytes[0], 0x83);
});

test('round trip keeps every MessagePack type a payload may use', () => {
  const frame = {
    t: 'msg',
    room: 'chat:lobby',
    ev: 'message',
    data: {
      text: 'héllo <img src=x onerror=alert(1)> 😀',
      n: -5, big: 2 ** 40, f: 1.5, yes: true, no: false, none: null,
      bin: new Uint8Array([0, 1, 254, 255]),
      list: [1, 'two', [3, [4]], { deep: { deeper: 'x' } }],
    },
    seq: 4294967296,
    epoch: '5f0c3a9e12d47b86',
    ts: 1767222000123,
    from: { user: 'alice', conn: 'gw-1a2b3c4d.h' },
  };
  const back = decodeFrame(encodeFrame(frame));
  assert.deepEqual(back, frame);
  assert.ok(back.data.bin instanceof Uint8Array, 'bin stays bytes');
});

test('decodeFrame refuses what is not a map with a string t', () => {
  assert.throws(() => decodeFrame(hex('93 01 02 03')), /map/); // an array
  assert.throws(() => decodeFrame(hex('a3 61 62 63')), /map/); // a string
  assert.throws(() => decodeFrame(hex('81 a1 74 01')), /"t"/); // t is a number
  assert.throws(() => decodeFrame(hex('83 a1 74')), /./); // truncated
  assert.throws(() => decodeFrame(hex('80 c0')), /./); // trailing bytes
});

test('encodeFrame refuses what is not a plain object', () => {
  assert.throws(() => encodeFrame([1, 2]), TypeError);
  assert.throws(() => encodeFrame(null), TypeError);
});
