export { Broker, encodePayload } from './broker.js';
export { keySlot, crc16, eventStreamsFromSlots, EVENTS_STREAM, RPC_STREAM } from './slot.js';
export { toEvent } from './events.js';
