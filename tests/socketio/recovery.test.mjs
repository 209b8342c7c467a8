// Reconnection and connection state recovery (docs/SOCKETIO.md, "Recovery")
// with the real socket.io-client: a gateway node SIGKILLed and restarted
// under the same node id and port, and transports dropped by the client
// without a Socket.IO DISCONNECT. socket.io-client keeps the CONNECT
// answer's `pid` and the last string argument of each event (the offset)
// and sends {pid, offset} in its next CONNECT; `socket.recovered` is true
// when the answer repeats the pid. Run by scripts/socketio-test.sh.

import { after, afterEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backend, call, client, closeAll, collect, connect, env, eventually, join, killNode, once, parsers, startNode, token, unique,
} from './helpers.mjs';

const broker = backend();
after(async () => {
  closeAll();
  await broker.close();
});
afterEach(() => closeAll());

/** How long a client may take to reconnect by itself (backoff 0.5-1.5 s, then 1-3 s...). */
const RECONNECT = 15000;

const room = (ns = 'chat') => `${ns}:${unique('r')}`;
const TRANSPORTS = [
  { name: 'WebSocket', options: { transports: ['websocket'] } },
  { name: 'polling + upgrade', options: {} },
];

/** The data and seqs of collected room messages. */
const seen = (got) => got.items.map(([data, meta]) => [data, meta.seq]);

/**
 * Drops the client's transport without a Socket.IO DISCONNECT (the Engine.IO
 * transport closed from the client side, reconnection held off), runs
 * `meanwhile`, then connects again with the same Socket (so with its pid
 * and offset). Resolves once `connect` fired again.
 */
async function dropAndReconnect(socket, meanwhile, { to } = {}) {
  socket.io.reconnection(false);
  const disconnected = once(socket, 'disconnect');
  socket.io.engine.close();
  const [reason] = await disconnected;
  assert.equal(socket.connected, false);
  assert.notEqual(reason, 'io server disconnect');
  await meanwhile();
  socket.io.reconnection(true);
  // A load balancer may send the reconnection to another node: the
  // Manager's next Engine.IO connection goes to `to`.
  if (to) socket.io.uri = to;
  const connected = once(socket, 'connect');
  socket.connect();
  await connected;
}

for (const { name, options: parser } of parsers) {
  describe(name, () => {
    test('node killed (SIGKILL) and restarted: the client reconnects by itself and works again', async () => {
      const ua = unique('a');
      const ub = unique('b');
      const a = await connect(ua, { parser, node: 1 }); // default options: polling, upgrade, reconnection
      const b = await connect(ub, { parser, node: 0, transports: ['websocket'] });
      const firstId = a.id;
      await join(a, room());

      const disconnected = once(a, 'disconnect');
      const reconnected = once(a, 'connect', RECONNECT);
      await killNode(1);
      const [reason] = await disconnected;
      assert.ok(['transport close', 'transport error', 'ping timeout'].includes(reason), `reason ${reason}`);
      assert.equal(a.active, true, 'the client is reconnecting');
      await startNode(1);
      await reconnected;
      assert.equal(a.connected, true);
      assert.notEqual(a.id, firstId, 'a new connection id');
      // The restart under the same node id ended the old connection.
      await eventually('only the new connection is present', async () => {
        const p = await broker.presence(ua);
        return p.conns.length === 1 && p.conns[0].conn === a.id;
      });

      const r = room();
      await join(b, r);
      await join(a, r);
      const atB = collect(b, 'chat');
      const atA = collect(a, 'chat');
      const s1 = (await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'from a' })).seq;
      const s2 = (await call(b, 'broker:publish', { room: r, ev: 'chat', data: 'from b' })).seq;
      await atB.until(2);
      await atA.until(2);
      assert.deepEqual(seen(atB), [['from a', s1], ['from b', s2]]);
      assert.deepEqual(seen(atA), [['from a', s1], ['from b', s2]]);
      assert.deepEqual(atB.items[0][1].from, { user: ua, conn: a.id });
      // The personal room is joined on every connect.
      const notice = once(a, 'notice');
      await broker.emitToUser(ua, 'notice', 'after the restart');
      assert.equal((await notice)[0], 'after the restart');
    });

    for (const { name: tname, options: transport } of [TRANSPORTS[0], { name: 'long-polling', options: { transports: ['polling'] } }]) test(`drain (SIGTERM, ${tname}): "transport close", not a kick; the client reconnects and recovers`, async () => {
      const a = await connect(unique('a'), { parser, node: 1, ...transport });
      const b = await connect(unique('b'), { parser, node: 0, transports: ['websocket'] });
      const r = room();
      await join(a, r);
      await join(b, r);
      const atA = collect(a, 'chat');
      const pub = async (data) => (await call(b, 'broker:publish', { room: r, ev: 'chat', data })).seq;
      const s1 = await pub('before');
      await atA.until(1);

      const disconnected = once(a, 'disconnect');
      const reconnected = once(a, 'connect', RECONNECT + 15000);
      const stopped = killNode(1, 'SIGTERM');
      const [reason] = await disconnected;
      assert.equal(reason, 'transport close', 'a drain closes the transport (1012), it sends no DISCONNECT');
      assert.equal(a.active, true, 'the client reconnects');
      await stopped;
      const s2 = await pub('while away');
      await startNode(1);
      await reconnected;
      assert.equal(a.recovered, true);
      await atA.until(2);
      assert.deepEqual(seen(atA), [['before', s1], ['while away', s2]]);
    });

    test('recovery across a node restart: socket.recovered, missed messages once, in order', async () => {
      const a = await connect(unique('a'), { parser, node: 1, transports: ['websocket'] });
      const b = await connect(unique('b'), { parser, node: 0, transports: ['websocket'] });
      assert.equal(a.recovered, false, 'a first connection is not recovered');
      const r = room();
      await join(a, r);
      await join(b, r);
      const atA = collect(a, 'chat');
      const pub = async (data) => (await call(b, 'broker:publish', { room: r, ev: 'chat', data })).seq;
      const s1 = await pub('m1');
      await atA.until(1);
      assert.equal(typeof atA.items[0][2], 'string', 'm1 carries an offset');

      const disconnected = once(a, 'disconnect');
      const reconnected = once(a, 'connect', RECONNECT);
      await killNode(1);
      await disconnected;
      const missed = [await pub('m2'), await pub('m3'), await pub('m4')];
      await startNode(1);
      await reconnected;
      assert.equal(a.recovered, true, 'socket.recovered after the reconnection');
      await atA.until(4);
      const s5 = await pub('m5'); // after the recovery: live again in the room
      await atA.until(5);
      assert.deepEqual(seen(atA), [['m1', s1], ['m2', missed[0]], ['m3', missed[1]], ['m4', missed[2]], ['m5', s5]]);
      assert.deepEqual(seen(atA).map(([, s]) => s), [s1, s1 + 1, s1 + 2, s1 + 3, s1 + 4]);
    });

    for (const { name: tname, options: transport } of TRANSPORTS) {
      test(`recovery after a dropped transport (${tname}): missed messages of every room, once, in order`, async () => {
        const a = await connect(unique('a'), { parser, node: 0, ...transport });
        const b = await connect(unique('b'), { parser, node: 1, transports: ['websocket'] });
        const r1 = room();
        const r2 = room();
        for (const r of [r1, r2]) {
          await join(a, r);
          await join(b, r);
        }
        const atA = collect(a, 'chat');
        const pub = async (r, data) => (await call(b, 'broker:publish', { room: r, ev: 'chat', data })).seq;
        await pub(r1, 'r1 m1');
        await pub(r2, 'r2 m1');
        await atA.until(2);

        await dropAndReconnect(a, async () => {
          await pub(r1, 'r1 m2');
          await pub(r2, 'r2 m2');
          await pub(r1, 'r1 m3');
        });
        assert.equal(a.recovered, true, 'socket.recovered after the reconnection');
        await atA.until(5);
        await pub(r1, 'r1 m4');
        await pub(r2, 'r2 m3');
        await atA.until(7);
        const byRoom = (r) => atA.items.filter(([, m]) => m.room === r).map(([d, m]) => [d, m.seq]);
        assert.deepEqual(byRoom(r1), [['r1 m1', 1], ['r1 m2', 2], ['r1 m3', 3], ['r1 m4', 4]]);
        assert.deepEqual(byRoom(r2), [['r2 m1', 1], ['r2 m2', 2], ['r2 m3', 3]]);
        assert.equal(atA.items.length, 7, 'nothing twice');
      });
    }

    test('recovery on the other node (a reconnection through a load balancer)', async () => {
      const ua = unique('a');
      const a = await connect(ua, { parser, node: 0, transports: ['websocket'] });
      const b = await connect(unique('b'), { parser, node: 1, transports: ['websocket'] });
      const r = room();
      await join(a, r);
      await join(b, r);
      const atA = collect(a, 'chat');
      const pub = async (data) => (await call(b, 'broker:publish', { room: r, ev: 'chat', data })).seq;
      await pub('m1');
      await atA.until(1);
      await dropAndReconnect(a, async () => {
        await pub('m2');
        await pub('m3');
      }, { to: env.gateways[1] });
      assert.equal(a.recovered, true, 'socket.recovered on the other node');
      await atA.until(3);
      await pub('m4');
      await atA.until(4);
      assert.deepEqual(seen(atA), [['m1', 1], ['m2', 2], ['m3', 3], ['m4', 4]]);
      await eventually('a is only on node 2 now', async () => {
        const p = await broker.presence(ua);
        return JSON.stringify(p.conns.map((c) => [c.conn, c.node])) === JSON.stringify([[a.id, env.nodeIds[1]]]);
      });
    });

    test('a forged offset: no room the join policy refuses, no recovery; a garbage offset still connects', async () => {
      const ua = unique('a');
      const victim = unique('v');
      const a = await connect(ua, { parser, node: 0, transports: ['websocket'] });
      const r = room();
      await join(a, r);
      const mine = collect(a, 'chat');
      await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'm1' });
      await mine.until(1);
      const offset = JSON.parse(mine.items[0][2]);
      assert.ok(a._pid, 'the CONNECT answer carried a pid');

      // The offset is the client's to write: another user's personal room
      // is in it now (no one else may join it).
      const epochOf = async (room2) => (await broker.history(room2, { limit: 0 })).epoch;
      a._lastOffset = JSON.stringify([...offset, [`user:${victim}`, await epochOf(`user:${victim}`), 0]]);
      await dropAndReconnect(a, async () => {});
      assert.equal(a.recovered, false, 'a refused join means no recovery');
      const secrets = collect(a, 'secret');
      const notes = collect(a, 'note');
      await broker.emitToUser(victim, 'secret', 'not for a');
      await broker.emitToUser(ua, 'note', 'for a'); // after the secret, on the same node channel
      await notes.until(1);
      assert.equal(secrets.items.length, 0, 'not in the victim\'s personal room');

      a._lastOffset = 'this is not JSON {';
      await dropAndReconnect(a, async () => {});
      assert.equal(a.connected, true);
      assert.equal(a.recovered, false);
      await join(a, room());
    });

    test('missed more than the history holds: socket.recovered is false, the app joins again', async () => {
      const a = await connect(unique('a'), { parser, node: 0, transports: ['websocket'] });
      const b = await connect(unique('b'), { parser, node: 1, transports: ['websocket'] });
      const r = room('short'); // history = 3 in the test config
      await join(a, r);
      await join(b, r);
      const atA = collect(a, 'chat');
      const pub = async (data) => (await call(b, 'broker:publish', { room: r, ev: 'chat', data })).seq;
      await pub(0);
      await atA.until(1);

      await dropAndReconnect(a, async () => {
        for (const i of [1, 2, 3, 4, 5]) await pub(i);
      });
      assert.equal(a.recovered, false, 'not recovered: messages 1 and 2 are gone from the history');
      // As after any fresh connect: join with history.
      const ack = await join(a, r);
      assert.equal(ack.seq, 6);
      const hist = await call(a, 'broker:history', { room: r });
      assert.deepEqual(hist.messages.map((m) => m.data), [3, 4, 5]);
      const s = await pub(6);
      await eventually('the live message after the new join', () => atA.items.some(([, m]) => m.seq === s));
    });
  });
}

// Parser-independent (the close path), so once: with the default parser.
test('token expiry closes the transport; the client reconnects with the token its auth callback gives', async () => {
  const parser = parsers[0].options;
  const user = unique('a');
  const tokens = [token(user, { ttlS: 2 }), token(user, { ttlS: 600 })];
  const a = client(user, { parser, node: 0, transports: ['websocket'], auth: (cb) => cb({ token: tokens.shift() ?? token(user) }) });
  const expiring = once(a, 'broker:expiring');
  await once(a, 'connect');
  const firstId = a.id;
  await expiring;
  const [reason] = await once(a, 'disconnect', 10000); // exp + auth.leeway_s (1 s)
  assert.equal(reason, 'transport close');
  await once(a, 'connect', RECONNECT);
  assert.notEqual(a.id, firstId);
  await join(a, room());
});

