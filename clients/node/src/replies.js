// Reply shapes of the BROKER.* commands: RESP2 gives maps as flat
// [field, value, ...] arrays, RESP3 (ioredis `protocol: 3`) as objects or Maps.

const text = (v) => (Buffer.isBuffer(v) || v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : String(v));

/** A map reply as a plain object with string keys (values untouched). */
export function toObject(reply) {
  if (reply == null) return {};
  if (reply instanceof Map) {
    const out = {};
    for (const [k, v] of reply) out[text(k)] = v;
    return out;
  }
  if (Array.isArray(reply)) {
    const out = {};
    for (let i = 0; i + 1 < reply.length; i += 2) out[text(reply[i])] = reply[i + 1];
    return out;
  }
  if (typeof reply === 'object') return { ...reply };
  throw new TypeError(`expected a map reply, got ${typeof reply}`);
}

/** A map reply as [key, value] pairs, in reply order. */
export function toPairs(reply) {
  if (reply == null) return [];
  if (reply instanceof Map) return [...reply].map(([k, v]) => [text(k), v]);
  if (Array.isArray(reply)) {
    const out = [];
    for (let i = 0; i + 1 < reply.length; i += 2) out.push([text(reply[i]), reply[i + 1]]);
    return out;
  }
  return Object.entries(reply);
}

export const num = (v) => (typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : Number(text(v)));
export const str = (v) => (v == null ? '' : text(v));
export const list = (v) => (v == null ? [] : Array.isArray(v) ? v : [v]);
