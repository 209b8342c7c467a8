// The Broker against one real redis-server with the module.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { encode } from '@msgpack/msgpack';
import { Broker } from '../src/index.js';
import { startRedis, fakeGateway, unique } from './helpers.js';

let server;
let broker;
let raw;

before(async () => {
  server = await startRedis();
  broker = new Broker(server.url);
  raw = server.client();
});

after(async () => {
  await broker?.close();
  await server?.stop();
});

test('publish: the sequence increments and history holds the messages', async () => {
  const room = unique('chat:pub');
  assert.equal(await broker.publish(room, 'message', { text: 'hi' }), 1);
  assert.equal(await broker.publish(room, 'message', { text: 'again', n: [1, 2] }), 2);
  const h = await broker.history(room);
  assert.equal(h.seq, 2);
  assert.ok(h.epoch.length > 0);
  assert.equal(h.more, false);
  assert.deepEqual(h.messages.map((m) => [m.seq, m.ev, m.data, m.room]), [
    [1, 'message', { text: 'hi' }, room],
    [2, 'message', { text: 'again', n: [1, 2] }, room],
  ]);
  assert.equal(typeof h.messages[0].ts, 'number');
  assert.equal(h.messages[0].epoch, h.epoch);
});

test('publish history: kept with the option where the module keeps none', async () => {
  const kept = unique('orders:kept');
  await broker.publish(kept, 'status', { s: 'paid' }, { history: { size: 10, ttlS: 60 } });
  await broker.publish(kept, 'status', { s: 'shipped' }, { history: { size: 10, ttlS: 60 } });
  assert.deepEqual((await broker.history(kept)).messages.map((m) => m.data.s), ['paid', 'shipped']);
  const bare = unique('orders:bare');
  await broker.publish(bare, 'status', { s: 'paid' });
  assert.deepEqual((await broker.history(bare)).messages, [], 'no HISTORY argument for orders');
});

test('history: since and limit page through, more says there is more', async () => {
  const room = unique('chat:hist');
  for (let i = 1; i <= 5; i++) await broker.publish(room, 'n', i);
  const first = await broker.history(room, { limit: 2 });
  assert.deepEqual(first.messages.map((m) => m.data), [1, 2]);
  assert.equal(first.more, true);
  const rest = await broker.history(room, { since: 2 });
  assert.deepEqual(rest.messages.map((m) => m.data), [3, 4, 5]);
  assert.equal(rest.more, false);
  const none = await broker.history(unique('chat:nothing'));
  assert.deepEqual(none, { seq: 0, epoch: '', more: false, messages: [] });
});

test('publish formats: msgpack (values and bytes), string, json by default', async () => {
  const room = unique('chat:fmt');
  await broker.publish(room, 'a', { bin: new Uint8Array([1, 2, 3]) }, { format: 'msgpack' });
  await broker.publish(room, 'b', encode({ pre: 'encoded' }), { format: 'msgpack' });
  await broker.publish(room, 'c', 'plain <b>text</b>', { format: 'string' });
  await broker.publish(room, 'd', undefined);
  const { messages } = await broker.history(room);
  assert.deepEqual(Buffer.from(messages[0].data.bin), Buffer.from([1, 2, 3]));
  assert.deepEqual(messages[1].data, { pre: 'encoded' });
  assert.equal(messages[2].data, 'plain <b>text</b>');
  assert.equal(messages[3].data, null);
  await assert.rejects(broker.publish(room, 'x', Buffer.from([0xc1]), { format: 'msgpack' }), /invalid/i);
  await assert.rejects(broker.publish(room, 'x', 1, { format: 'xml' }), /format/);
});

test('publish EXCEPT reaches the module (and is not the room sequence)', async () => {
  const room = unique('chat:except');
  assert.equal(await broker.publish(room, 'm', 1, { except: 'c-somebody' }), 1);
});

test('emitToUser publishes to the personal room user:<id>', async () => {
  const user = unique('alice');
  assert.equal(await broker.emitToUser(user, 'notice', { n: 1 }), 1);
  assert.equal(await broker.emitToUser(user, 'notice', { n: 2 }), 2);
  const h = await broker.history(`user:${user}`);
  assert.equal(h.seq, 2);
});

test('broadcast tells every live node', async () => {
  const gw1 = fakeGateway(broker);
  const gw2 = fakeGateway(broker);
  const before = await broker.broadcast('maintenance', { in: 5 });
  await gw1.lease();
  await gw2.lease();
  assert.equal(await broker.broadcast('maintenance', { in: 5 }), before + 2);
  assert.equal(typeof (await broker.broadcast('news', 'x', { ns: 'chat', format: 'string' })), 'number');
  await gw1.release();
  await gw2.release();
});

test('presence, roomMembers, roomCount, online, nodes', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const room = unique('chat:presence');
  const alice = unique('alice');
  const bob = unique('bob');
  const base = await broker.online();
  assert.deepEqual(await broker.presence(alice), { user: alice, status: 'offline', online: false, connections: 0, conns: [] });

  await gw.open(alice, `${gw.node}.i.1`);
  await gw.open(alice, `${gw.node}.i.2`, '10.0.0.2');
  await gw.open(bob, `${gw.node}.i.3`);
  await gw.join(room, alice, `${gw.node}.i.1`);
  await gw.join(room, alice, `${gw.node}.i.2`);
  await gw.join(room, bob, `${gw.node}.i.3`);

  const p = await broker.presence(alice);
  assert.equal(p.status, 'online');
  assert.equal(p.online, true);
  assert.equal(p.connections, 2);
  assert.deepEqual(p.conns.map((c) => [c.conn, c.node, c.rooms]).sort(), [
    [`${gw.node}.i.1`, gw.node, [room]],
    [`${gw.node}.i.2`, gw.node, [room]],
  ]);
  assert.ok(p.conns.every((c) => c.connectedAt > Date.now() - 60000));
  assert.ok(p.conns.some((c) => c.ip === '10.0.0.2'));

  assert.deepEqual(await broker.roomMembers(room), [{ user: alice, conns: 2 }, { user: bob, conns: 1 }]);
  assert.deepEqual(await broker.roomCount(room), { users: 2, connections: 3 });
  assert.deepEqual(await broker.online(), { users: base.users + 2, connections: base.connections + 3 });
  const nodes = await broker.nodes();
  const mine = nodes.find((n) => n.node === gw.node);
  assert.equal(mine.connections, 3);
  assert.ok(mine.leaseDeadlineMs > Date.now());
  await gw.release();
  assert.deepEqual(await broker.online(), base);
});

test('roomMembers reads every page (AFTER/LIMIT)', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const room = unique('chat:big');
  const users = [];
  for (let i = 0; i < 25; i++) {
    const user = `u${String(i).padStart(3, '0')}${unique('p')}`;
    users.push(user);
    await gw.open(user, `${gw.node}.m.${i}`);
    await gw.join(room, user, `${gw.node}.m.${i}`);
  }
  const members = await broker.roomMembers(room, { pageSize: 7 });
  assert.deepEqual(members.map((m) => m.user), [...users].sort());
  assert.ok(members.every((m) => m.conns === 1));
  assert.equal((await broker.roomMembers(room, { pageSize: 5 })).length, 25);
  await gw.release();
});

test('kick tells the nodes of every connection of the user', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const carol = unique('carol');
  assert.equal(await broker.kick(carol), 0);
  await gw.open(carol, `${gw.node}.k.1`);
  await gw.open(carol, `${gw.node}.k.2`);
  // The kick envelope arrives on the node's channel.
  const sub = server.client();
  const got = new Promise((resolve) => sub.on('messageBuffer', (_ch, msg) => resolve(msg)));
  await sub.subscribe(`broker:node:${gw.node}`);
  assert.equal(await broker.kick(carol, 'banned'), 2);
  const { decode } = await import('@msgpack/msgpack');
  const [kind, user, conns, reason] = /** @type {any[]} */ (decode(await got));
  assert.deepEqual([kind, user, [...conns].sort(), reason], ['kick', carol, [`${gw.node}.k.1`, `${gw.node}.k.2`], 'banned']);
  await gw.release();
});

test('throttle answers like CL.THROTTLE', async () => {
  const key = unique('rl:');
  const first = await broker.throttle(key, 1, 10, 60);
  assert.deepEqual([first.limited, first.limit, first.remaining], [false, 2, 1]);
  await broker.throttle(key, 1, 10, 60);
  const third = await broker.throttle(key, 1, 10, 60);
  assert.equal(third.limited, true);
  assert.ok(third.retryAfterS >= 0);
});

test('module errors come back as rejections', async () => {
  await assert.rejects(broker.publish('no-namespace', 'm', 1), /invalid/i);
  await assert.rejects(broker.presence('bad user!'), /invalid/i);
});

test('a client passed in stays open after close(); options make an owned one', async () => {
  const mine = new Redis(server.port, '127.0.0.1');
  const b = new Broker(mine);
  assert.equal(await b.publish(unique('chat:own'), 'm', 1), 1);
  await b.close();
  assert.equal(await mine.ping(), 'PONG');
  mine.disconnect();
  const owned = new Broker({ host: '127.0.0.1', port: server.port });
  assert.equal((await owned.online()).users >= 0, true);
  await owned.close();
  assert.equal(owned.redis.status, 'end');
  await assert.rejects(owned.publish('chat:x', 'm', 1), /closed/);
});
