// MessagePack codec for protocol v1 frames (docs/PROTOCOL.md §1).
//
// Every WebSocket message is exactly one MessagePack map with string keys.
// Optional fields are left out rather than sent as nil (both mean "not
// given" to the server, but leaving them out keeps frames small and makes
// the bytes match the examples in PROTOCOL.md §12).

import { Encoder, Decoder, ExtData } from '@msgpack/msgpack';

const encoder = new Encoder({ ignoreUndefined: true });
const decoder = new Decoder();

/**
 * Encodes one frame (a plain object whose `t` names its type) into the
 * bytes of one binary WebSocket message.
 * @param {Record<string, unknown>} frame
 * @returns {Uint8Array}
 */
export function encodeFrame(frame) {
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    throw new TypeError('a frame is a plain object');
  }
  return encoder.encode(frame);
}

/**
 * Decodes the bytes of one binary WebSocket message into a frame. Throws
 * when the bytes are not exactly one MessagePack map with a string `t`.
 * @param {ArrayBuffer | ArrayBufferView} bytes
 * @returns {Record<string, any>}
 */
export function decodeFrame(bytes) {
  const frame = decoder.decode(bytes);
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)
      || frame instanceof Uint8Array || frame instanceof ExtData) {
    throw new TypeError('a frame must be a MessagePack map');
  }
  if (typeof frame.t !== 'string') {
    throw new TypeError('a frame must have a string "t"');
  }
  return frame;
}

/** Encodes any value (e.g. a `data` payload) as MessagePack. */
export function encodeValue(value) {
  return encoder.encode(value);
}

/** Decodes one MessagePack value. */
export function decodeValue(bytes) {
  return decoder.decode(bytes);
}

export { ExtData };
