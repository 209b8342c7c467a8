// socket.io-client 4.8 against the gateway's /socket.io/ (docs/SOCKETIO.md):
// transports, auth, the reserved broker:* events, room messages across two
// gateway nodes, binary data, RPCs answered by a Node backend, backend
// kicks and memberships, namespaces. Each group runs once per parser
// (default and socket.io-msgpack-parser). Run by scripts/socketio-test.sh.

import { request } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  backend, call, client, closeAll, collect, connect, env, eventually, heartbeat, join, manager, once, parsers, token, unique, WAIT,
} from './helpers.mjs';

const broker = backend();

before(async () => {
  broker.rpc.handle('order.create', (data, ctx) => ({
    method: ctx.method, data, user: ctx.user, conn: ctx.conn, node: ctx.node,
  }));
  broker.rpc.handle('order.fail', () => {
    throw Object.assign(new Error('no stock left'), { code: 'out_of_stock' });
  });
  // Answers 1 s after its deadline (ctx.signal aborts at it): well after
  // the gateway's own rpc.timeout_ms, so the answer cannot win the race.
  broker.rpc.handle('order.slow', (_data, ctx) => new Promise((resolve) => {
    ctx.signal.addEventListener('abort', () => setTimeout(() => resolve('too late'), 1000));
  }));
  broker.rpc.handle('blob.inspect', (data) => data.map((v) => (v instanceof Uint8Array
    ? { bytes: [...v] } : { value: v })));
  await broker.rpc.start({ group: unique('rpc'), consumer: 'tests', start: '$' });
});

after(async () => {
  closeAll();
  await broker.rpc.stop();
  await broker.close();
});

afterEach(() => closeAll());

/** A fresh room name in the test config's `chat` namespace. */
const room = (ns = 'chat') => `${ns}:${unique('r')}`;

for (const { name, options: parser } of parsers) {
  describe(name, () => {
    describe('transports', () => {
      test('WebSocket only: no polling, the handshake carries the limits', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const engine = socket.io.engine;
        assert.equal(engine.transport.name, 'websocket');
        // limits.ping_interval_s and idle_timeout_s of the run, max_frame_bytes = 65536 (the default)
        assert.equal(engine._pingInterval, heartbeat.pingInterval);
        assert.equal(engine._pingTimeout, heartbeat.pingTimeout);
        assert.equal(engine._maxPayload, 65536);
        const r = room();
        const ack = await join(socket, r);
        assert.equal(ack.room, r);
      });

      test('default options: long-polling first, then the upgrade to WebSocket', async () => {
        const socket = client(unique('u'), { parser, autoConnect: false });
        const opened = once(socket.io, 'open');
        const connected = once(socket, 'connect');
        socket.connect();
        await opened;
        const engine = socket.io.engine;
        assert.equal(engine.transport.name, 'polling');
        const upgraded = once(engine, 'upgrade');
        await connected;
        const [transport] = await upgraded;
        assert.equal(transport.name, 'websocket');
        assert.equal(socket.io.engine.transport.name, 'websocket');
        // The session works over the upgraded transport (and messages sent
        // while polling were not lost: the join went out right after connect).
        const r = room();
        await join(socket, r);
        const got = collect(socket, 'chat');
        const { seq } = await call(socket, 'broker:publish', { room: r, ev: 'chat', data: 'after upgrade' });
        await got.until(1);
        assert.equal(got.items[0][0], 'after upgrade');
        assert.equal(got.items[0][1].seq, seq);
      });

      test('Engine.IO handshake over polling: sid, upgrades, ping and payload limits; EIO other than 4 refused', async () => {
        const base = `${env.gateways[0]}/socket.io/`;
        const res = await fetch(`${base}?EIO=4&transport=polling`, { signal: AbortSignal.timeout(WAIT) });
        assert.equal(res.status, 200);
        const body = await res.text();
        assert.equal(body[0], '0', `an open packet: ${body}`);
        const open = JSON.parse(body.slice(1));
        assert.deepEqual(Object.keys(open), ['sid', 'upgrades', 'pingInterval', 'pingTimeout', 'maxPayload']);
        assert.equal(typeof open.sid, 'string');
        assert.deepEqual(open.upgrades, ['websocket']);
        assert.equal(open.pingInterval, heartbeat.pingInterval);
        assert.equal(open.pingTimeout, heartbeat.pingTimeout);
        assert.equal(open.maxPayload, 65536);
        for (const q of ['EIO=3&transport=polling', 'transport=polling', 'EIO=4&transport=carrier-pigeon']) {
          const refused = await fetch(`${base}?${q}`, { signal: AbortSignal.timeout(WAIT) });
          assert.equal(refused.status, 400, q);
          await refused.body?.cancel();
        }
      });

      test('metrics: broker_socketio_connections and broker_socketio_handshakes_total by transport', async () => {
        await connect(unique('u'), { parser, transports: ['websocket'], node: 0 });
        await connect(unique('u'), { parser, transports: ['polling'], node: 0 });
        const text = await (await fetch(`http://${env.admins[0]}/metrics`, { signal: AbortSignal.timeout(WAIT) })).text();
        const value = (name, transport) => {
          const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`transport="${transport}"`));
          assert.ok(line, `${name}{transport="${transport}"} in /metrics`);
          return Number(line.split(' ').at(-1));
        };
        assert.ok(value('broker_socketio_connections', 'websocket') >= 1);
        assert.ok(value('broker_socketio_connections', 'polling') >= 1);
        assert.ok(value('broker_socketio_handshakes_total', 'websocket') >= 1);
        assert.ok(value('broker_socketio_handshakes_total', 'polling') >= 1);
      });

      for (const transport of ['websocket', 'polling']) {
        test(`a packet over maxPayload closes the transport (${transport}; no error event)`, async () => {
          const user = unique('u');
          const socket = await connect(user, { parser, transports: [transport], reconnection: false });
          const errors = collect(socket, 'broker:error');
          const disconnected = once(socket, 'disconnect');
          socket.emit('broker:publish', { room: room(), ev: 'chat', data: 'x'.repeat(70000) });
          const [reason] = await disconnected;
          assert.ok(['transport close', 'transport error'].includes(reason), `reason ${reason}`);
          assert.equal(errors.items.length, 0);
          await eventually('the connection is gone', async () => !(await broker.presence(user)).online);
        });
      }

      test('long-polling: a burst of messages, binary among them, arrives whole and in order', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['polling'], node: 0 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const got = collect(b, 'chat');
        const N = 60;
        const acks = await Promise.all(Array.from({ length: N }, (_, i) => call(a, 'broker:publish', {
          room: r, ev: 'chat', data: i % 3 === 0 ? { i, bin: Buffer.from([i, 255 - i, 0x1e, 0]) } : { i, text: `m${i}\u001e|` },
        })));
        await got.until(N);
        assert.equal(got.items.length, N);
        const seqs = got.items.map(([, m]) => m.seq);
        assert.deepEqual(seqs, Array.from({ length: N }, (_, k) => k + 1));
        const iOf = new Map(acks.map((ack, i) => [ack.seq, i]));
        for (const [data, meta] of got.items) {
          const i = iOf.get(meta.seq);
          if (i % 3 === 0) {
            assert.ok(Buffer.isBuffer(data.bin));
            assert.deepEqual([...data.bin], [i, 255 - i, 0x1e, 0]);
          } else {
            assert.deepEqual(data, { i, text: `m${i}\u001e|` });
          }
        }
      });

      test('messages during the upgrade from polling: none lost, none twice', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 1 });
        // No upgrade at open: it is started below, by hand (engine.io-client's
        // own _probe, what it calls at open), while messages flow both ways.
        const b = await connect(unique('b'), { parser, node: 1, upgrade: false });
        const r = room();
        await join(a, r);
        await join(b, r);
        assert.equal(b.io.engine.transport.name, 'polling');
        const atB = collect(b, 'chat');
        const atA = collect(a, 'from-b');
        let sending = true;
        const fromA = (async () => {
          let n = 0;
          while (sending && n < 500) await call(a, 'broker:publish', { room: r, ev: 'chat', data: n++ });
        })();
        const fromB = (async () => {
          let n = 0;
          while (sending && n < 500) await call(b, 'broker:publish', { room: r, ev: 'from-b', data: n++ });
        })();
        await atB.until(3);
        const upgraded = once(b.io.engine, 'upgrade');
        b.io.engine._probe('websocket');
        await upgraded;
        assert.equal(b.io.engine.transport.name, 'websocket');
        await atB.until(atB.items.length + 3); // still flowing after the upgrade
        sending = false;
        await Promise.all([fromA, fromB]);
        const lastA = (await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'last' })).seq;
        const lastB = (await call(b, 'broker:publish', { room: r, ev: 'from-b', data: 'last' })).seq;
        await atB.find((_d, m) => m.seq === lastA);
        await atA.find((_d, m) => m.seq === lastB);
        const seqsAtB = atB.items.map(([, m]) => m.seq);
        const seqsAtA = atA.items.map(([, m]) => m.seq);
        assert.deepEqual([...seqsAtB, ...seqsAtA].sort((x, y) => x - y),
          Array.from({ length: lastB }, (_, k) => k + 1), 'the room\'s seqs, each once');
        assert.deepEqual(seqsAtB, [...seqsAtB].sort((x, y) => x - y));
        assert.deepEqual(seqsAtA, [...seqsAtA].sort((x, y) => x - y));
        assert.deepEqual(atA.items.map(([d]) => d), [...Array.from({ length: atA.items.length - 1 }, (_, k) => k), 'last'],
          'what b sent during the upgrade arrived, once, in order');
      });

      test('long-polling only works (join, publish, receive)', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['polling'] });
        assert.equal(socket.io.engine.transport.name, 'polling');
        const r = room();
        await join(socket, r);
        const got = collect(socket, 'chat');
        const { seq } = await call(socket, 'broker:publish', { room: r, ev: 'chat', data: { over: 'polling' } });
        await got.until(1);
        assert.deepEqual(got.items[0][0], { over: 'polling' });
        assert.equal(got.items[0][1].seq, seq);
      });
    });

    describe('auth', () => {
      test('auth {token}: socket.id is the connection id', async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, transports: ['websocket'] });
        assert.equal(typeof socket.id, 'string');
        const presence = await broker.presence(user);
        assert.equal(presence.online, true);
        assert.deepEqual(presence.conns.map((c) => c.conn), [socket.id]);
      });

      test('token in the query parameter', async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, auth: {}, query: { token: token(user) } });
        const presence = await broker.presence(user);
        assert.deepEqual(presence.conns.map((c) => c.conn), [socket.id]);
      });

      test('broker:expiring before the token expires; broker:refresh {token} acks {exp}', async () => {
        const user = unique('u');
        const socket = client(user, { parser, transports: ['websocket'], auth: { token: token(user, { ttlS: 31 }) } });
        const expiring = once(socket, 'broker:expiring'); // 30 s before exp (docs/PROTOCOL.md §9)
        await once(socket, 'connect');
        const [info, ...rest] = await expiring;
        assert.deepEqual(rest, []);
        assert.equal(typeof info.in_ms, 'number');
        assert.ok(info.in_ms > 0 && info.in_ms <= 31000, `in_ms ${info.in_ms}`);

        const fresh = token(user, { ttlS: 3600 });
        const { exp } = JSON.parse(Buffer.from(fresh.split('.')[1], 'base64url'));
        assert.deepEqual(await call(socket, 'broker:refresh', { token: fresh }), { exp });

        const other = await call(socket, 'broker:refresh', { token: token(unique('other')) });
        assert.equal(other.error?.code, 'forbidden', 'another user\'s token');
        const bad = await call(socket, 'broker:refresh', { token: token(user, { secret: 'nope' }) });
        assert.equal(bad.error?.code, 'unauthorized');
        assert.equal(socket.connected, true);
      });

      test('over limits.max_conns_per_user: connect_error with data.code "conn_limit"', async () => {
        const user = unique('u');
        for (let i = 0; i < 5; i++) await connect(user, { parser, transports: ['websocket'], node: i % 2 });
        const sixth = client(user, { parser, transports: ['websocket'] });
        const [err] = await once(sixth, 'connect_error');
        assert.equal(err.data?.code, 'conn_limit', `${err.message} ${JSON.stringify(err.data)}`);
        assert.equal(sixth.active, false);
        assert.equal((await broker.presence(user)).connections, 5);
      });

      test('socket.disconnect(): the connection ends, the others see the leave', async () => {
        const ua = unique('a');
        const a = await connect(ua, { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const events = collect(b, 'broker:presence-event');
        a.disconnect();
        assert.deepEqual(await events.find((e) => e.user === ua && e.action === 'leave'), [{ room: r, user: ua, action: 'leave' }]);
        await eventually('a is offline', async () => !(await broker.presence(ua)).online);
      });

      for (const [what, auth, transport] of [
        ['a token signed with another secret', (u) => ({ token: token(u, { secret: 'not-the-secret' }) }), 'websocket'],
        ['an expired token', (u) => ({ token: token(u, { ttlS: -3600 }) }), 'websocket'],
        ['no token', () => ({}), 'websocket'],
        ['a token that is not a JWT', () => ({ token: 'garbage' }), 'websocket'],
        ['a bad token over long-polling', () => ({ token: 'garbage' }), 'polling'],
      ]) {
        test(`${what}: connect_error with data.code "unauthorized", no reconnection`, async () => {
          const user = unique('u');
          const socket = client(user, { parser, transports: [transport], auth: auth(user) });
          const [err] = await once(socket, 'connect_error');
          assert.ok(err instanceof Error);
          assert.equal(typeof err.message, 'string');
          assert.ok(err.message.length > 0, 'the error has a message');
          assert.equal(err.data?.code, 'unauthorized', `err.data: ${JSON.stringify(err.data)}`);
          assert.equal(socket.connected, false);
          assert.equal(socket.active, false, 'a refused CONNECT is not retried');
          assert.equal((await broker.presence(user)).online, false);
        });
      }
    });

    describe('rooms and messages', () => {
      test('join ack, publish ack, delivery on the other node with meta and offset, in seq order', async () => {
        const ua = unique('a');
        const ub = unique('b');
        const a = await connect(ua, { parser, transports: ['websocket'], node: 0 });
        const b = await connect(ub, { parser, transports: ['websocket'], node: 1 });
        const r = room();
        const ja = await join(a, r);
        assert.deepEqual(Object.keys(ja).sort(), ['epoch', 'recovered', 'room', 'seq']);
        assert.equal(ja.room, r);
        assert.equal(ja.seq, 0, 'a new room has seq 0');
        assert.equal(typeof ja.epoch, 'string');
        assert.equal(ja.recovered, false);
        const jb = await join(b, r);
        assert.equal(jb.epoch, ja.epoch);

        const got = collect(b, 'chat');
        const before = Date.now();
        const acks = await Promise.all([1, 2, 3, 4, 5].map((i) => call(a, 'broker:publish', {
          room: r, ev: 'chat', data: { i, text: `hello ${i}` },
        })));
        for (const ack of acks) {
          assert.deepEqual(Object.keys(ack), ['seq']);
          assert.equal(typeof ack.seq, 'number');
        }
        const seqOf = new Map(acks.map((ack, k) => [ack.seq, k + 1]));
        assert.equal(seqOf.size, 5, 'five different seqs');

        await got.until(5);
        const seqs = got.items.map(([, meta]) => meta.seq);
        assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y), 'delivered in seq order');
        assert.deepEqual([...seqs].sort(), [...seqOf.keys()].sort(), 'each acked seq delivered once');
        assert.deepEqual(seqs, [1, 2, 3, 4, 5], 'the first five seqs of the room');
        for (const [data, meta, offset, ...rest] of got.items) {
          assert.deepEqual(data, { i: seqOf.get(meta.seq), text: `hello ${seqOf.get(meta.seq)}` });
          assert.equal(meta.room, r);
          assert.equal(meta.epoch, ja.epoch);
          assert.equal(typeof meta.ts, 'number');
          assert.ok(meta.ts >= before - 60000 && meta.ts <= Date.now() + 60000, `ts ${meta.ts} is about now`);
          assert.deepEqual(meta.from, { user: ua, conn: a.id });
          assert.equal(meta.volatile, undefined);
          assert.equal(typeof offset, 'string', 'the recovery offset is the last argument, a string');
          // JSON text: the [room, epoch, seq] of each room delivered so far.
          const positions = JSON.parse(offset);
          assert.ok(Array.isArray(positions), `offset ${offset}`);
          assert.ok(positions.some((p) => JSON.stringify(p) === JSON.stringify([r, meta.epoch, meta.seq])),
            `offset ${offset} holds [${r}, ${meta.epoch}, ${meta.seq}]`);
          assert.deepEqual(rest, []);
        }
      });

      test('join with since: the missed messages arrive before the ack, recovered: true', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        const { epoch } = await join(b, r);
        const seqs = [];
        for (const i of [1, 2, 3]) seqs.push((await call(b, 'broker:publish', { room: r, ev: 'chat', data: i })).seq);
        const atA = collect(a, 'chat');
        const [ack, countAtAck] = await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no join ack')), WAIT);
          a.emit('broker:join', { room: r, since: { seq: seqs[0], epoch } }, (v) => {
            clearTimeout(timer);
            resolve([v, atA.items.length]);
          });
        });
        assert.deepEqual(ack, { room: r, seq: seqs[2], epoch, recovered: true });
        assert.equal(countAtAck, 2, 'both missed messages came before the ack');
        assert.deepEqual(atA.items.map(([d, m]) => [d, m.seq]), [[2, seqs[1]], [3, seqs[2]]]);
      });

      test('others: true skips the sender; the sender gets its own messages otherwise', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const atA = collect(a, 'chat');
        const atB = collect(b, 'chat');
        const first = await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'not to me', others: true });
        const second = await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'to all' });
        await atB.until(2);
        assert.deepEqual(atB.items.map(([d, m]) => [d, m.seq]), [['not to me', first.seq], ['to all', second.seq]]);
        // Messages of one room reach a connection in seq order: once the
        // second is there, the first would have come before it.
        await atA.until(1);
        assert.deepEqual(atA.items.map(([d, m]) => [d, m.seq]), [['to all', second.seq]]);
      });

      // A room message named as socket.io-client's own events or as the
      // server's broker:* events would disconnect the members (the default
      // parser refuses such an EVENT) or fool their handlers: broker:publish
      // refuses the name and other sources' messages are not delivered to
      // Socket.IO connections (SOCKETIO.md, "Reserved names are not delivered").
      const RESERVED = ['connect', 'connect_error', 'disconnect', 'disconnecting', 'newListener', 'removeListener'];
      async function membersUnharmed(b, send, spoofed) {
        const seenByB = [];
        for (const e of [...RESERVED, 'broker:presence-event', 'broker:joined', 'broker:left', 'broker:error', 'broker:missed', 'broker:expiring']) {
          b.on(e, (...args) => seenByB.push([e, ...args]));
        }
        const got = collect(b, 'chat');
        const dropped = once(b, 'disconnect', 60000).then(([reason]) => { throw new Error(`b disconnected: ${reason}`); });
        dropped.catch(() => {}); // raced below; a rejection before the race is not unhandled
        await send();
        await Promise.race([got.until(1), dropped]);
        assert.equal(b.connected, true);
        assert.deepEqual(seenByB.filter(spoofed), []);
      }

      test('broker:publish refuses a name socket.io-client reserves (bad_frame); the members stay connected', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        await membersUnharmed(b, async () => {
          for (const ev of RESERVED) {
            const ack = await call(a, 'broker:publish', { room: r, ev, data: 'spoofed' });
            assert.equal(ack.error?.code, 'bad_frame', `${ev}: ${JSON.stringify(ack)}`);
          }
          await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'barrier' });
        }, ([e]) => RESERVED.includes(e));
      });

      test('a backend message with a reserved name is not delivered to Socket.IO clients', async () => {
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(b, r);
        await membersUnharmed(b, async () => {
          for (const ev of [...RESERVED, 'broker:presence-event', 'broker:error']) await broker.publish(r, ev, { msg: 'fake' });
          await broker.publish(r, 'chat', 'barrier');
        }, ([e, data]) => RESERVED.includes(e) || data?.msg === 'fake');
      });

      test('a member cannot spoof broker:* events (presence, joined, error): bad_frame', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const fake = { room: r, user: 'mallory', action: 'join', code: 'forbidden', msg: 'fake', seq: 1, epoch: 'x', in_ms: 1 };
        await membersUnharmed(b, async () => {
          for (const ev of ['broker:presence-event', 'broker:joined', 'broker:left', 'broker:error', 'broker:missed', 'broker:expiring']) {
            const ack = await call(a, 'broker:publish', { room: r, ev, data: fake });
            assert.equal(ack.error?.code, 'bad_frame', `${ev}: ${JSON.stringify(ack)}`);
          }
          await call(a, 'broker:publish', { room: r, ev: 'chat', data: 'barrier' });
        }, ([, data]) => data?.msg === 'fake');
      });

      test('volatile: seq 0, meta.volatile, not kept in history', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const atB = collect(b, 'typing');
        const ack = await call(a, 'broker:publish', { room: r, ev: 'typing', data: { on: true }, volatile: true });
        assert.deepEqual(ack, { seq: 0 });
        await atB.until(1);
        const [data, meta] = atB.items[0];
        assert.deepEqual(data, { on: true });
        assert.equal(meta.seq, 0);
        assert.equal(meta.volatile, true);
        const hist = await call(b, 'broker:history', { room: r });
        assert.deepEqual(hist.messages, []);
        assert.equal(hist.seq, 0);
      });

      test('leave: ack {}, then no more messages and publishing is refused', async () => {
        const ub = unique('b');
        const a = await connect(unique('a'), { parser, transports: ['websocket'] });
        const b = await connect(ub, { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        assert.deepEqual(await call(b, 'broker:leave', { room: r }), {});
        const atA = collect(a, 'chat');
        const atB = collect(b, 'chat');
        await call(a, 'broker:publish', { room: r, ev: 'chat', data: 1 });
        await atA.until(1);
        // b's last message: its own, sent to its personal room after the
        // one above. When it is there, the room's message would be too.
        const mine = collect(b, 'note');
        await broker.emitToUser(ub, 'note', 'x');
        await mine.until(1);
        assert.equal(atB.items.length, 0);
        const refused = await call(b, 'broker:publish', { room: r, ev: 'chat', data: 2 });
        assert.equal(refused.error?.code, 'not_member');
      });
    });

    describe('refusals', () => {
      test('a refusal acks {error: {code, msg}}', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const notJoined = await call(socket, 'broker:publish', { room: room(), ev: 'chat', data: 1 });
        assert.deepEqual(Object.keys(notJoined), ['error']);
        assert.equal(notJoined.error.code, 'not_member');
        assert.equal(typeof notJoined.error.msg, 'string');

        const badRoom = await call(socket, 'broker:join', { room: 'no namespace here' });
        assert.equal(badRoom.error?.code, 'invalid_room');

        const personal = await call(socket, 'broker:join', { room: `user:${unique('other')}` });
        assert.equal(personal.error?.code, 'forbidden');

        const serverOnly = room('news');
        await join(socket, serverOnly);
        const noPublish = await call(socket, 'broker:publish', { room: serverOnly, ev: 'chat', data: 1 });
        assert.equal(noPublish.error?.code, 'forbidden');

        const slow = room('slow');
        await join(socket, slow);
        assert.equal(typeof (await call(socket, 'broker:publish', { room: slow, ev: 'chat', data: 1 })).seq, 'number');
        const limited = await call(socket, 'broker:publish', { room: slow, ev: 'chat', data: 2 });
        assert.equal(limited.error?.code, 'rate_limited');
        assert.equal(typeof limited.error?.retry_ms, 'number');
        assert.ok(limited.error.retry_ms > 0);

        const leave = await call(socket, 'broker:leave', { room: room() });
        assert.equal(leave.error?.code, 'not_member');

        const unknown = await call(socket, 'broker:nonsense', { room: room() });
        assert.equal(unknown.error?.code, 'bad_frame');

        const noRoom = await call(socket, 'broker:join', {});
        assert.equal(noRoom.error?.code, 'bad_frame');

        // The connection is still fine.
        await join(socket, room());
      });

      test('a failing event without an ack is answered by broker:error', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const errors = collect(socket, 'broker:error');
        const r = room();
        socket.emit('broker:publish', { room: r, ev: 'chat', data: 1 });
        await errors.until(1);
        const [err, ...rest] = errors.items[0];
        assert.equal(err.code, 'not_member');
        assert.equal(typeof err.msg, 'string');
        assert.deepEqual(rest, []);
        // A success without an ack is not answered: the join works silently,
        // then a publish acks.
        socket.emit('broker:join', { room: r });
        const ok = await call(socket, 'broker:publish', { room: r, ev: 'chat', data: 2 });
        assert.equal(typeof ok.seq, 'number');
        assert.equal(errors.items.length, 1);
      });
    });

    describe('presence and history', () => {
      test('broker:presence-event on join and leave, broker:presence lists the members', async () => {
        const ua = unique('a');
        const ub = unique('b');
        const a = await connect(ua, { parser, transports: ['websocket'], node: 0 });
        const b = await connect(ub, { parser, transports: ['websocket'], node: 1 });
        const r = room();
        const events = collect(a, 'broker:presence-event');
        await join(a, r);
        await join(b, r);
        // a may get the event of its own join too (before or after its ack).
        const ofB = (action) => events.find((e) => e.user === ub && e.action === action);
        assert.deepEqual(await ofB('join'), [{ room: r, user: ub, action: 'join' }]);

        const p = await call(a, 'broker:presence', { room: r });
        assert.equal(p.count, 2);
        assert.deepEqual(p.users.map((u) => [u.user, u.conns]).sort(), [[ua, 1], [ub, 1]].sort());
        assert.equal(p.next, undefined);

        await call(b, 'broker:leave', { room: r });
        assert.deepEqual(await ofB('leave'), [{ room: r, user: ub, action: 'leave' }]);
        assert.deepEqual(events.items.filter(([e]) => e.user === ub).map(([e]) => e.action), ['join', 'leave']);
        assert.ok(events.items.every(([e]) => e.room === r && (e.user === ua || e.user === ub)));
      });

      test('broker:history: messages, since, limit', async () => {
        const ua = unique('a');
        const a = await connect(ua, { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        const { epoch } = await join(a, r);
        const seqs = [];
        for (const i of [1, 2, 3]) seqs.push((await call(a, 'broker:publish', { room: r, ev: 'chat', data: { i } })).seq);

        const all = await call(b, 'broker:history', { room: r });
        assert.equal(all.seq, seqs[2]);
        assert.equal(all.epoch, epoch);
        assert.ok(!all.more);
        assert.deepEqual(all.messages.map((m) => [m.room, m.ev, m.data, m.seq, m.epoch]),
          seqs.map((s, k) => [r, 'chat', { i: k + 1 }, s, epoch]));
        for (const m of all.messages) {
          assert.equal(typeof m.ts, 'number');
          assert.deepEqual(m.from, { user: ua, conn: a.id });
        }

        const since = await call(b, 'broker:history', { room: r, since: seqs[0] });
        assert.deepEqual(since.messages.map((m) => m.seq), seqs.slice(1));

        const limited = await call(b, 'broker:history', { room: r, limit: 1 });
        assert.equal(limited.messages.length, 1);
        assert.equal(limited.more, true);
      });
    });

    describe('binary', () => {
      const bytes = Buffer.from([0, 1, 2, 127, 128, 253, 254, 255]);

      test('a published Buffer arrives as a Buffer with the same bytes (live and in history)', async () => {
        const a = await connect(unique('a'), { parser, transports: ['websocket'], node: 0 });
        const b = await connect(unique('b'), { parser, transports: ['websocket'], node: 1 });
        const r = room();
        await join(a, r);
        await join(b, r);
        const got = collect(b, 'file');
        await call(a, 'broker:publish', { room: r, ev: 'file', data: { name: 'x.bin', blob: bytes, list: [bytes, 'text'] } });
        await call(a, 'broker:publish', { room: r, ev: 'file', data: bytes });
        await call(a, 'broker:publish', { room: r, ev: 'file', data: { typed: new Uint8Array(bytes), ab: bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) } });
        await got.until(3);
        const [third] = got.items[2];
        for (const key of ['typed', 'ab']) {
          assert.ok(Buffer.isBuffer(third[key]), `${key} is a ${third[key]?.constructor?.name}`);
          assert.deepEqual([...third[key]], [...bytes]);
        }
        const [first] = got.items[0];
        assert.ok(Buffer.isBuffer(first.blob), `blob is a ${first.blob?.constructor?.name}`);
        assert.deepEqual([...first.blob], [...bytes]);
        assert.equal(first.name, 'x.bin');
        assert.ok(Buffer.isBuffer(first.list[0]));
        assert.deepEqual([...first.list[0]], [...bytes]);
        assert.equal(first.list[1], 'text');
        const [second] = got.items[1];
        assert.ok(Buffer.isBuffer(second), `data is a ${second?.constructor?.name}`);
        assert.deepEqual([...second], [...bytes]);

        const hist = await call(b, 'broker:history', { room: r });
        assert.ok(Buffer.isBuffer(hist.messages[0].data.blob));
        assert.deepEqual([...hist.messages[0].data.blob], [...bytes]);
        assert.deepEqual([...hist.messages[1].data], [...bytes]);
      });

      test('a Buffer argument of an RPC reaches the backend as bytes', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const reply = await call(socket, 'blob.inspect', bytes, 'plain');
        assert.deepEqual(reply, [{ bytes: [...bytes] }, { value: 'plain' }]);
      });
    });

    describe('RPC', () => {
      test('any other event is an RPC: method = event name, data = the arguments; the reply is the ack', async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, transports: ['websocket'], node: 1 });
        const reply = await call(socket, 'order.create', { x: 1 }, 2);
        assert.deepEqual(reply, {
          method: 'order.create', data: [{ x: 1 }, 2], user, conn: socket.id, node: env.nodeIds[1],
        });
        // One argument, no arguments.
        assert.deepEqual((await call(socket, 'order.create', 'one')).data, ['one']);
        assert.deepEqual((await call(socket, 'order.create')).data, []);
        // Also through the callback form, with exactly one ack argument.
        const args = await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('no ack')), WAIT);
          socket.emit('order.create', { x: 1 }, 2, (...a) => { clearTimeout(timer); resolve(a); });
        });
        assert.equal(args.length, 1);
        assert.deepEqual(args[0].data, [{ x: 1 }, 2]);
      });

      test('a backend error acks {error: {code: "rpc_error", rpc_code, msg}}; without an ack it is broker:error', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const reply = await call(socket, 'order.fail', { x: 1 });
        assert.deepEqual(reply, { error: { code: 'rpc_error', rpc_code: 'out_of_stock', msg: 'no stock left' } });

        const unknown = await call(socket, 'order.unknown', 1);
        assert.equal(unknown.error?.code, 'rpc_error');
        assert.equal(unknown.error?.rpc_code, 'unknown_method');

        const errors = collect(socket, 'broker:error');
        socket.emit('order.fail', { x: 2 });
        await errors.until(1);
        assert.deepEqual(errors.items[0], [{ code: 'rpc_error', rpc_code: 'out_of_stock', msg: 'no stock left' }]);
      });

      test('no answer in rpc.timeout_ms acks {error: {code: "timeout"}}', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const reply = await call(socket, 'order.slow', {});
        assert.equal(reply.error?.code, 'timeout');
        assert.equal(typeof reply.error?.msg, 'string');
      });

      test('an event name that is not a valid RPC method is refused bad_frame', async () => {
        const socket = await connect(unique('u'), { parser, transports: ['websocket'] });
        const reply = await call(socket, 'has a space', 1);
        assert.equal(reply.error?.code, 'bad_frame');
        const long = await call(socket, 'x'.repeat(101), 1);
        assert.equal(long.error?.code, 'bad_frame');
        const longest = await call(socket, 'x'.repeat(100), 1); // 100 bytes: a valid method, no handler
        assert.equal(longest.error?.rpc_code, 'unknown_method', JSON.stringify(longest));
      });
    });

    describe('the backend', () => {
      // Over polling the DISCONNECT must come alone, not with the Engine.IO
      // close in the same payload: the client handles a close at once and a
      // DISCONNECT a tick later, so it would see "transport close" first.
      for (const transport of ['websocket', 'polling']) test(`kick (${transport}): one disconnect, "io server disconnect", no reconnection`, async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, transports: [transport], node: 1 });
        const reasons = collect(socket, 'disconnect');
        assert.ok(await broker.kick(user, 'banned') >= 1);
        await reasons.until(1);
        assert.deepEqual(reasons.items.map(([reason]) => reason), ['io server disconnect']);
        assert.equal(socket.active, false, 'a kicked client does not reconnect');
        // Nothing more comes: the user is gone and no reconnection started.
        await eventually('the user is offline', async () => !(await broker.presence(user)).online);
        assert.equal(reasons.items.length, 1);
      });

      test('userJoin: broker:joined, then the room\'s messages arrive; userLeave: broker:left', async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, transports: ['websocket'], node: 0 });
        const r = room();
        const joined = once(socket, 'broker:joined');
        assert.ok(await broker.userJoin(user, r) >= 1);
        const [info] = await joined;
        assert.equal(info.room, r);
        assert.equal(info.seq, 0);
        assert.equal(typeof info.epoch, 'string');

        const news = once(socket, 'news');
        const seq = await broker.publish(r, 'news', { n: 1 });
        const [data, meta, offset] = await news;
        assert.deepEqual(data, { n: 1 });
        assert.equal(meta.room, r);
        assert.equal(meta.seq, seq);
        assert.equal(meta.epoch, info.epoch);
        assert.equal(meta.from, undefined, 'a backend publish has no from');
        assert.equal(typeof offset, 'string');

        const left = once(socket, 'broker:left');
        await broker.userLeave(user, r);
        assert.deepEqual((await left)[0], { room: r });
      });

      test('emitToUser reaches the personal room', async () => {
        const user = unique('u');
        const socket = await connect(user, { parser, transports: ['websocket'], node: 1 });
        const notice = once(socket, 'notice');
        await broker.emitToUser(user, 'notice', { unread: 3 });
        const [data, meta] = await notice;
        assert.deepEqual(data, { unread: 3 });
        assert.equal(meta.room, `user:${user}`);
      });
    });

    describe('namespaces', () => {
      test('a custom namespace gets connect_error "Invalid namespace"; / on the same connection works', async () => {
        const user = unique('u');
        const m = manager(0, { ...parser, transports: ['websocket'] });
        const chat = m.socket('/chat', { auth: { token: token(user) } });
        const main = m.socket('/', { auth: { token: token(user) } });
        const refused = once(chat, 'connect_error');
        const connected = once(main, 'connect');
        chat.connect();
        main.connect();
        const [err] = await refused;
        assert.equal(err.message, 'Invalid namespace');
        await connected;
        assert.equal(chat.connected, false);
        const r = room();
        await join(main, r);
        assert.equal(typeof (await call(main, 'broker:publish', { room: r, ev: 'chat', data: 1 })).seq, 'number');
      });

      for (const transport of ['websocket', 'polling']) {
        test(`io(url + "/chat") alone (${transport}): connect_error "Invalid namespace"`, async () => {
          const socket = client(unique('u'), { parser, nsp: '/chat', transports: [transport] });
          const [err] = await once(socket, 'connect_error');
          assert.equal(err.message, 'Invalid namespace');
          assert.equal(socket.connected, false);
        });
      }
    });
  });
}

/** The status of a WebSocket upgrade request to `url` with `headers` (101 when it upgraded). */
function upgradeStatus(url, headers) {
  return new Promise((resolve, reject) => {
    const req = request(url, {
      headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers,
      },
      timeout: WAIT,
    });
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode); });
    req.on('response', (res) => { res.resume(); resolve(res.statusCode); });
    req.on('timeout', () => req.destroy(new Error('no answer')));
    req.on('error', reject);
    req.end();
  });
}

describe('HTTP: origins, CORS, path', () => {
  const base = () => `${env.gateways[0]}/socket.io/?EIO=4`;
  const get = (url, origin) => fetch(url, { headers: origin ? { Origin: origin } : {}, signal: AbortSignal.timeout(WAIT) });

  test('an allowed Origin: polling answers carry Access-Control-Allow-Origin for it', async () => {
    const res = await get(`${base()}&transport=polling`, 'http://app.example');
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('access-control-allow-origin'), 'http://app.example');
    const { sid } = JSON.parse((await res.text()).slice(1));
    const post = await fetch(`${base()}&transport=polling&sid=${sid}`, {
      method: 'POST', body: `40${JSON.stringify({ token: token(unique('u')) })}`,
      headers: { Origin: 'http://app.example', 'Content-Type': 'text/plain;charset=UTF-8' },
      signal: AbortSignal.timeout(WAIT),
    });
    assert.equal(post.status, 200);
    assert.equal(post.headers.get('access-control-allow-origin'), 'http://app.example');
    const answer = await get(`${base()}&transport=polling&sid=${sid}`, 'http://app.example');
    assert.equal(answer.headers.get('access-control-allow-origin'), 'http://app.example');
    // The rooms joined at connect announce the offset first (broker:offset).
    assert.match(await answer.text(), /(^|\x1e)40\{"sid":/);
  });

  test('another Origin is refused (403) on the handshake and on the upgrade from polling', async () => {
    const polling = await get(`${base()}&transport=polling`, 'http://evil.example');
    assert.equal(polling.status, 403);
    await polling.body?.cancel();
    const ws = `${base()}&transport=websocket`;
    assert.equal(await upgradeStatus(ws, { Origin: 'http://evil.example' }), 403);
    assert.equal(await upgradeStatus(ws, { Origin: 'http://app.example' }), 101);
    assert.equal(await upgradeStatus(ws, {}), 101, 'no Origin (not a browser) passes');

    // A session made from the allowed origin cannot be upgraded from another.
    const res = await get(`${base()}&transport=polling`, 'http://app.example');
    const { sid } = JSON.parse((await res.text()).slice(1));
    assert.equal(await upgradeStatus(`${ws}&sid=${sid}`, { Origin: 'http://evil.example' }), 403);
  });

  for (const { name, options: parser } of parsers) {
    test(`socket.io-client from another origin does not connect (${name})`, async () => {
      const socket = client(unique('u'), {
        parser, transports: ['websocket'], reconnection: false, extraHeaders: { Origin: 'http://evil.example' },
      });
      const [err] = await once(socket, 'connect_error');
      assert.equal(socket.connected, false, err.message);
      const ok = await connect(unique('u'), {
        parser, transports: ['websocket'], extraHeaders: { Origin: 'http://app.example' },
      });
      assert.equal(ok.connected, true);
    });
  }

  test('the path without its trailing slash is served too', async () => {
    const socket = await connect(unique('u'), { path: '/socket.io', transports: ['polling'] });
    await join(socket, room());
  });
});

describe('both parsers in one room', () => {
  test('default-parser and msgpack-parser clients exchange messages, binary included', async () => {
    const a = await connect(unique('a'), { parser: parsers[0].options, transports: ['websocket'], node: 0 });
    const b = await connect(unique('b'), { parser: parsers[1].options, node: 1 });
    const r = room();
    await join(a, r);
    await join(b, r);
    const atA = collect(a, 'chat');
    const atB = collect(b, 'chat');
    const bytes = Buffer.from([9, 8, 7, 0, 255]);
    const s1 = (await call(a, 'broker:publish', { room: r, ev: 'chat', data: { from: 'a', bytes } })).seq;
    const s2 = (await call(b, 'broker:publish', { room: r, ev: 'chat', data: { from: 'b', bytes } })).seq;
    await atA.until(2);
    await atB.until(2);
    for (const got of [atA, atB]) {
      assert.deepEqual(got.items.map(([d, m]) => [d.from, m.seq]), [['a', s1], ['b', s2]]);
      for (const [d] of got.items) assert.deepEqual([...d.bytes], [...bytes]);
    }
  });
});
