// Sending any command (module commands included) through ioredis, routed on
// a cluster by the key we name. ioredis routes only commands it knows the key
// positions of; for the BROKER.* commands it would pick a random master and
// follow the MOVED reply. Giving the Command its slot sends it to the right
// master at once; MOVED/ASK are still followed after a topology change.

import { Command } from 'ioredis';
import { keySlot } from './slot.js';

/**
 * Send `name args` on `client` (an ioredis Redis or Cluster). Options:
 * `key` routes a cluster command to the master of that key's slot;
 * `buffers: true` keeps bulk strings as Buffers.
 */
export function send(client, name, args, { key, buffers = false } = {}) {
  const command = new Command(name, args, { replyEncoding: buffers ? null : 'utf8' });
  if (key != null && client.isCluster) {
    // Read by Command#getSlot(), which Cluster#sendCommand asks for the target.
    command.slot = keySlot(key);
  }
  client.sendCommand(command);
  return command.promise;
}

/** Resolves when `client` is ready (connects a lazyConnect client). */
export async function ready(client) {
  if (client.status === 'ready') return;
  if (client.status === 'wait') {
    await client.connect();
    return;
  }
  if (client.status === 'end' || client.status === 'close') throw new Error('the Redis connection is closed');
  await new Promise((resolve, reject) => {
    const done = (err) => {
      client.off('ready', onReady);
      client.off('end', onEnd);
      err ? reject(err) : resolve();
    };
    const onReady = () => done();
    const onEnd = () => done(new Error('the Redis connection ended before it was ready'));
    client.on('ready', onReady);
    client.on('end', onEnd);
  });
}

/** Every master of a cluster (ioredis instances), or [client] for one Redis. */
export async function masters(client) {
  if (!client.isCluster) return [client];
  await ready(client);
  return client.nodes('master');
}

/** `err` is a Redis error reply starting with `code` (e.g. BUSYGROUP). */
export const replyIs = (err, code) => typeof err?.message === 'string' && err.message.startsWith(code);
