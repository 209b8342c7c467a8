// Redis Cluster key slots: CRC16/XMODEM of the key (or of its hash tag) mod 16384.

const TABLE = new Uint16Array(256);
for (let i = 0; i < 256; i++) {
  let crc = i << 8;
  for (let b = 0; b < 8; b++) {
    crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  TABLE[i] = crc;
}

/** CRC16/XMODEM (poly 0x1021, init 0) of `bytes`. */
export function crc16(bytes) {
  let crc = 0;
  for (const byte of bytes) {
    crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ byte) & 0xff];
  }
  return crc;
}

/**
 * The cluster slot of `key` (a string or bytes), as `CLUSTER KEYSLOT` gives it:
 * when the key holds a non-empty `{...}` hash tag, only the tag is hashed.
 */
export function keySlot(key) {
  let bytes = typeof key === 'string' ? Buffer.from(key, 'utf8') : Buffer.from(key);
  const open = bytes.indexOf(0x7b); // {
  if (open !== -1) {
    const close = bytes.indexOf(0x7d, open + 1); // }
    if (close > open + 1) bytes = bytes.subarray(open + 1, close);
  }
  return crc16(bytes) % 16384;
}

export const EVENTS_STREAM = 'broker:events';
export const RPC_STREAM = 'broker:rpc';

/**
 * The lifecycle stream of every master of a cluster, from a slot map:
 * `slots[slot]` is the address ("host:port") of the master serving `slot`
 * (ioredis' `cluster.slots[slot][0]`). Each master's stream is
 * `broker:events:{<tag>}` with `tag` the smallest non-negative integer, as
 * decimal text, whose slot that master serves. Returns a Map address → stream.
 */
export function eventStreamsFromSlots(slots) {
  const masters = new Set();
  for (let s = 0; s < 16384; s++) if (slots[s]) masters.add(slots[s]);
  const out = new Map();
  for (let n = 0; out.size < masters.size && n < 16384 * 64; n++) {
    const master = slots[keySlot(String(n))];
    if (master && !out.has(master)) out.set(master, `${EVENTS_STREAM}:{${n}}`);
  }
  return out;
}
