// Compiled by `npm run typecheck` (tsc --noEmit), never run: the README's
// examples against index.d.ts.
import { Broker, keySlot, type BrokerEvent, type RpcContext } from '@broker/node';
import { Redis, Cluster } from 'ioredis';

async function main(): Promise<void> {
  const broker = new Broker('redis://127.0.0.1:6379');
  const onCluster = new Broker({ cluster: [{ host: '127.0.0.1', port: 7000 }] });
  const fromClient = new Broker(new Redis());
  const fromCluster = new Broker(new Cluster([{ host: '127.0.0.1', port: 7000 }]));

  const seq: number = await broker.publish('chat:lobby', 'message', { text: 'hi' });
  await broker.publish('chat:lobby', 'typing', { user: 'alice' }, { volatile: true, except: 'gw1.a.1' });
  await broker.publish('chat:lobby', 'raw', new Uint8Array([0x90]), { format: 'msgpack' });
  await broker.emitToUser('alice', 'notice', { n: seq });
  const told: number = await broker.broadcast('maintenance', { in: 5 }, { ns: 'chat' });

  const p = await broker.presence('alice');
  if (p.online) p.conns.forEach((c) => c.rooms.join(','));
  const members = await broker.roomMembers('chat:lobby');
  members.map((m) => `${m.user}:${m.conns}`);
  const { users, connections } = await broker.roomCount('chat:lobby');
  const online = await broker.online();
  const h = await broker.history<{ text: string }>('chat:lobby', { since: 0, limit: 50 });
  h.messages.forEach((m) => m.data.text.toUpperCase());
  const kicked: number = await broker.kick('mallory', 'banned');
  await broker.userJoin('alice', 'orders:42');
  await broker.userLeave('alice', 'orders:42');

  for await (const ev of broker.events({ group: 'audit', consumer: 'worker-1', types: ['disconnect'] })) {
    const e: BrokerEvent = ev;
    if (e.durationMs !== undefined && e.reason === 'kicked') break;
  }

  broker.rpc
    .handle('order:status', async (data: { id: number }, ctx: RpcContext) => ({ id: data.id, user: ctx.user }))
    .handle('fail', () => {
      throw Object.assign(new Error('nope'), { code: 'not_found' });
    });
  await broker.rpc.start({ group: 'rpc', consumer: 'worker-1', concurrency: 8 });
  await broker.rpc.stop();

  keySlot('chat:lobby').toFixed();
  void [told, users, connections, online, kicked, onCluster, fromClient, fromCluster];
  await broker.close();
}

void main;
