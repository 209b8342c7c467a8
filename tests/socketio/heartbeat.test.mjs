// Engine.IO heartbeats with the real socket.io-client (docs/SOCKETIO.md,
// "Engine.IO handshake"): the server pings every limits.ping_interval_s on
// both transports and both parsers, the client's answers keep the
// connection open past its pingTimeout; a client that stops answering is
// closed after limits.idle_timeout_s. The run's config has short values
// (2 s and 5 s, scripts/socketio-test.sh). Run by scripts/socketio-test.sh.

import { after, afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { call, closeAll, collect, connect, heartbeat, join, once, parsers, unique } from './helpers.mjs';

after(() => closeAll());
afterEach(() => closeAll());

const room = () => `chat:${unique('r')}`;
const TRANSPORTS = [['websocket'], ['polling']];

test('server pings keep every kind of connection open past pingInterval + pingTimeout', async (t) => {
  const sockets = [];
  const since = [];
  const pings = [];
  const drops = [];
  for (const { options: parser } of parsers) {
    for (const transports of TRANSPORTS) {
      const s = await connect(unique('u'), { parser, transports, reconnection: false });
      since.push(Date.now());
      const stamps = [];
      s.io.engine.on('ping', () => stamps.push(Date.now()));
      pings.push(Object.assign(collect(s.io.engine, 'ping'), { stamps }));
      drops.push(collect(s, 'disconnect'));
      sockets.push(s);
    }
  }
  // Without a ping for pingInterval + pingTimeout the client gives up: wait,
  // for each connection, for a ping that comes after that long.
  const enough = heartbeat.pingInterval + heartbeat.pingTimeout;
  await Promise.all(pings.map((p, i) => p.find(() => Date.now() - since[i] >= enough, enough * 3)));
  for (const p of pings) assert.ok(p.items.length >= 2, 'pinged more than once');
  const gaps = pings.flatMap((p) => p.stamps.slice(1).map((ts, k) => ts - p.stamps[k]));
  t.diagnostic(`gaps between pings: ${Math.min(...gaps)} to ${Math.max(...gaps)} ms (pingInterval ${heartbeat.pingInterval})`);
  // TODO(server bug, /work/sio-bugs.md "sio-tests #5"): the node's keep-alive
  // ticks every 500 ms and pings when >= ping_interval has passed, so pings
  // come every pingInterval to pingInterval + 500 ms. Once fixed:
  // for (const gap of gaps) assert.ok(gap <= heartbeat.pingInterval + 100, `a ping gap of ${gap} ms`);
  for (const [i, s] of sockets.entries()) {
    assert.deepEqual(drops[i].items, [], `socket ${i} (${s.io.engine.transport.name}) stayed connected`);
    assert.equal(s.connected, true);
  }
  // And they still work.
  const r = room();
  for (const s of sockets) await join(s, r);
  const got = collect(sockets[0], 'chat');
  for (const s of sockets) await call(s, 'broker:publish', { room: r, ev: 'chat', data: s.id });
  await got.until(sockets.length);
});

test('a client that stops answering pings is closed after idle_timeout_s', async () => {
  const sockets = [];
  for (const { options: parser } of parsers) {
    sockets.push(await connect(unique('u'), { parser, transports: ['websocket'], reconnection: false }));
  }
  const started = Date.now();
  const closed = [];
  for (const s of sockets) {
    const engine = s.io.engine;
    // Mute the client: no pong (engine.io-client answers a ping with
    // _sendPacket("pong")), and no ping timeout of its own, so that the
    // close comes from the server.
    const send = engine._sendPacket.bind(engine);
    engine._sendPacket = (type, ...rest) => (type === 'pong' ? undefined : send(type, ...rest));
    engine._resetPingTimeout = () => {};
    clearTimeout(engine._pingTimeoutTimer);
    closed.push(once(s, 'disconnect', heartbeat.idleTimeoutS * 1000 + 5000));
  }
  for (const [reason] of await Promise.all(closed)) {
    assert.equal(reason, 'transport close', 'the server closed the transport');
  }
  const took = Date.now() - started;
  assert.ok(took >= (heartbeat.idleTimeoutS - heartbeat.pingIntervalS) * 1000,
    `closed after ${took} ms, not before the idle timeout (${heartbeat.idleTimeoutS} s since the last frame)`);
});
