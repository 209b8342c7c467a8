// The client against the in-process fake gateway (test/fake-gateway.js).
// Every wait is bounded; nothing depends on wall-clock sleeps.
import { test, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { connect, BrokerClient, BrokerError } from '../dist/broker-client.js';
import { FakeGateway, nextEvent } from './fake-gateway.js';

let gw;
let clients;

beforeEach(async () => {
  gw = await new FakeGateway().start();
  clients = [];
});

afterEach(async () => {
  for (const c of clients) c.close();
  await gw.stop();
});

function open(opts = {}) {
  const client = connect(gw.url, {
    WebSocket,
    token: 'alice.t1',
    reconnectDelayMs: 5,
    reconnectDelayMaxMs: 40,
    random: () => 0,
    requestTimeoutMs: 1000,
    ...opts,
  });
  clients.push(client);
  return client;
}

test('connects with an auth frame, then welcome', async () => {
  const client = open();
  assert.equal(client.state, 'connecting');
  const info = await nextEvent(client, 'connect');
  assert.equal(info.user, 'alice');
  assert.equal(info.node, 'fake');
  assert.equal(info.reconnected, false);
  assert.equal(client.state, 'connected');
  assert.equal(client.conn, 'fake.1');
  const [auth] = gw.frames('auth');
  assert.equal(auth.token, 'alice.t1');
  assert.equal(auth.id, 1);
  // t comes first on the wire, then id (PROTOCOL.md §12 order).
  assert.deepEqual(Object.keys(gw.received[0].frame).slice(0, 2), ['t', 'id']);
});

test('needs a WebSocket implementation and an absolute URL outside browsers', () => {
  assert.throws(() => new BrokerClient('ws://127.0.0.1:1/ws', { WebSocket: 42, autoConnect: false }), /WebSocket/);
  assert.throws(() => new BrokerClient('/ws', { WebSocket, autoConnect: false }), /absolute/);
});

test('join, publish, receive, presence, history, ping', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  assert.equal(sub.room, 'chat:lobby');
  assert.deepEqual(sub.position, { seq: 0, epoch: 'e0000000000000001' });
  assert.deepEqual(client.rooms, ['chat:lobby']);

  const got = nextEvent(sub, 'msg');
  const ack = await client.publish('chat:lobby', 'message', { text: 'hi' });
  assert.deepEqual(ack, { seq: 1 });
  const msg = await got;
  assert.equal(msg.ev, 'message');
  assert.deepEqual(msg.data, { text: 'hi' });
  assert.equal(msg.seq, 1);
  assert.equal(msg.from.user, 'alice');

  assert.deepEqual(await sub.presence(), { users: [{ user: 'alice', conns: 1 }], count: 1 });
  const hist = await sub.history({ since: 0, limit: 10 });
  assert.equal(hist.messages.length, 1);
  assert.equal(hist.seq, 1);
  const sentHistory = gw.frames('history')[0];
  assert.equal(sentHistory.since, 0);
  assert.equal(sentHistory.limit, 10);
  assert.equal(typeof (await client.ping()).ts, 'number');
});

test('publish with others: true sends the flag; without it the flag is absent', async () => {
  const client = open();
  await client.join('chat:lobby');
  await client.publish('chat:lobby', 'typing', {}, { others: true });
  await client.publish('chat:lobby', 'message', { text: 'x' });
  const pubs = gw.frames('pub');
  assert.equal(pubs[0].others, true);
  assert.equal('others' in pubs[1], false);
});

test('an err frame rejects the request with its code', async () => {
  const client = open();
  await nextEvent(client, 'connect');
  await assert.rejects(client.publish('chat:nowhere', 'm', 1), (err) => {
    assert.ok(err instanceof BrokerError);
    assert.equal(err.code, 'not_member');
    return true;
  });
  gw.handle('join', (conn, frame, { err }) => err('forbidden', 'no'));
  await assert.rejects(client.join('admin:x'), { code: 'forbidden' });
  assert.deepEqual(client.rooms, []);
  await assert.rejects(client.join('not a room'), { code: 'invalid_room' });
});

test('rate_limited carries retry_ms as retryMs', async () => {
  const client = open();
  await client.join('chat:lobby');
  gw.handle('pub', (conn, frame) => {
    gw.send(conn, { t: 'err', id: frame.id, code: 'rate_limited', msg: 'slow down', retry_ms: 1500 });
  });
  await assert.rejects(client.publish('chat:lobby', 'm', 1), { code: 'rate_limited', retryMs: 1500 });
});

test('a request without an answer times out', async () => {
  const client = open({ requestTimeoutMs: 50 });
  await nextEvent(client, 'connect');
  gw.handle('presence', () => undefined); // never answers
  const started = Date.now();
  await assert.rejects(client.presence('chat:lobby'), { code: 'timeout' });
  assert.ok(Date.now() - started < 1000);
  // A late answer to the timed-out id is ignored.
  const [frame] = gw.frames('presence');
  gw.send(gw.last, { t: 'ack', id: frame.id, data: { users: [], count: 0 } });
  assert.equal(typeof (await client.ping()).ts, 'number');
});

test('messages with a seq already seen are dropped', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  const seen = [];
  sub.on('msg', (m) => seen.push(m.seq));
  const conn = gw.last;
  const base = { t: 'msg', room: 'chat:lobby', ev: 'm', data: null, epoch: 'e0000000000000001', ts: 1 };
  for (const seq of [1, 1, 2, 1, 3]) gw.send(conn, { ...base, seq });
  // A new epoch restarts the count.
  gw.send(conn, { ...base, seq: 1, epoch: 'e0000000000000002' });
  await client.ping(); // answered after the frames above
  assert.deepEqual(seen, [1, 2, 3, 1]);
  assert.deepEqual(sub.position, { seq: 1, epoch: 'e0000000000000002' });
});

test('presence events reach the subscription and the client', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  const onSub = nextEvent(sub, 'presence');
  const onClient = nextEvent(client, 'presence');
  gw.send(gw.last, { t: 'presence', room: 'chat:lobby', user: 'bob', action: 'join' });
  assert.deepEqual(await onSub, { room: 'chat:lobby', user: 'bob', action: 'join' });
  assert.equal((await onClient).user, 'bob');
});

test('unknown frame types and undecodable bytes do not break the client', async () => {
  const client = open();
  await nextEvent(client, 'connect');
  const errors = [];
  client.on('error', (e) => errors.push(e.code));
  gw.send(gw.last, { t: 'future-frame', x: 1 });
  gw.last.socket.send(Buffer.from([0x93, 1, 2, 3]));
  gw.last.socket.send('text is not protocol');
  await client.ping();
  assert.deepEqual(errors, ['decode']);
});

test('reconnects after 1012 and resumes with since; replayed messages arrive once', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  const seqs = [];
  sub.on('msg', (m) => seqs.push(m.seq));
  gw.publish('chat:lobby', 'm', 'a');
  gw.publish('chat:lobby', 'm', 'b');
  await client.ping();
  assert.deepEqual(seqs, [1, 2]);

  const reconnecting = nextEvent(client, 'reconnecting');
  const recovered = nextEvent(client, 'recovered');
  const disconnect = nextEvent(client, 'disconnect');
  gw.last.socket.close(1012, 'restarting');
  assert.equal((await disconnect).code, 1012);
  const r = await reconnecting;
  assert.equal(r.attempt, 1);
  assert.equal(r.delayMs, 5);
  // Published while the client was away.
  gw.publish('chat:lobby', 'm', 'c');
  const info = await recovered;
  assert.equal(info.room, 'chat:lobby');
  assert.deepEqual(info.since, { seq: 2, epoch: 'e0000000000000001' });
  assert.equal(info.seq, 3);
  assert.deepEqual(seqs, [1, 2, 3]);
  const joins = gw.frames('join');
  assert.equal(joins.length, 2);
  assert.equal(joins[0].since, undefined);
  assert.deepEqual(joins[1].since, { seq: 2, epoch: 'e0000000000000001' });
  assert.equal(client.state, 'connected');
});

test('recovery_failed when the ack says recovered: false', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  gw.publish('chat:lobby', 'm', 'a');
  await client.ping();
  // The room lost its history: new epoch.
  gw.room('chat:lobby').epoch = 'e00000000000000ff';
  gw.room('chat:lobby').seq = 7;
  gw.room('chat:lobby').log = [];
  const failed = nextEvent(sub, 'recovery_failed');
  gw.last.socket.close(1011, 'oops');
  const info = await failed;
  assert.equal(info.recovered, false);
  assert.deepEqual(info.since, { seq: 1, epoch: 'e0000000000000001' });
  assert.deepEqual(sub.position, { seq: 7, epoch: 'e00000000000000ff' });
});

test('missed is emitted in order and moves the position; a rejoin resumes after it', async () => {
  const client = open();
  const sub = await client.join('chat:lobby');
  const seen = [];
  sub.on('msg', (m) => seen.push(['msg', m.seq]));
  sub.on('missed', (m) => seen.push(['missed', m]));
  const onClient = nextEvent(client, 'missed');
  gw.publish('chat:lobby', 'm', 'a'); // seq 1
  const conn = gw.last;
  const base = { t: 'msg', room: 'chat:lobby', ev: 'm', data: null, epoch: 'e0000000000000001', ts: 1 };
  gw.send(conn, { ...base, seq: 4 });
  // 2, 3, 5 and 6 were lost; live messages continue after 6.
  gw.send(conn, { t: 'missed', room: 'chat:lobby', epoch: 'e0000000000000001', seq: 6, count: 4 });
  gw.send(conn, { ...base, seq: 5 }); // a late copy from before the gap: dropped
  gw.send(conn, { ...base, seq: 7 });
  await client.ping();
  const missed = { room: 'chat:lobby', epoch: 'e0000000000000001', seq: 6, count: 4 };
  assert.deepEqual(seen, [['msg', 1], ['msg', 4], ['missed', missed], ['msg', 7]]);
  assert.deepEqual(await onClient, missed);
  assert.deepEqual(sub.position, { seq: 7, epoch: 'e0000000000000001' });

  // Without a count (not known), and of a new epoch: the position moves there.
  const second = nextEvent(sub, 'missed');
  gw.send(conn, { t: 'missed', room: 'chat:lobby', epoch: 'e0000000000000002', seq: 3 });
  assert.deepEqual(await second, { room: 'chat:lobby', epoch: 'e0000000000000002', seq: 3, count: null });
  assert.deepEqual(sub.position, { seq: 3, epoch: 'e0000000000000002' });
  // After a reconnect the join resumes from there.
  gw.room('chat:lobby').epoch = 'e0000000000000002';
  gw.room('chat:lobby').seq = 3;
  gw.room('chat:lobby').log = [];
  const recovered = nextEvent(client, 'recovered');
  conn.socket.close(1012, 'restarting');
  assert.deepEqual((await recovered).since, { seq: 3, epoch: 'e0000000000000002' });
  // A missed for a room without a subscription reaches the client only.
  const other = nextEvent(client, 'missed');
  gw.send(gw.last, { t: 'missed', room: 'chat:other', epoch: 'x', seq: 9, count: 1 });
  assert.equal((await other).room, 'chat:other');
});

test('requests made while disconnected are sent after the re-join', async () => {
  const client = open({ reconnectDelayMs: 30 });
  await client.join('chat:lobby');
  const disconnect = nextEvent(client, 'disconnect');
  gw.last.socket.close(4008, 'idle');
  await disconnect;
  assert.equal(client.connected, false);
  const ack = await client.publish('chat:lobby', 'message', { text: 'queued' });
  assert.equal(ack.seq, 1);
  const second = gw.received.filter((r) => r.conn === gw.last).map((r) => r.frame.t);
  assert.deepEqual(second, ['auth', 'join', 'pub']);
});

test('requests in flight when the connection drops reject with disconnected', async () => {
  const client = open();
  await nextEvent(client, 'connect');
  gw.handle('presence', (conn) => {
    conn.socket.close(1011, 'boom');
  });
  await assert.rejects(client.presence('chat:lobby'), { code: 'disconnected' });
});

test('close 4001 gets a new token from getToken before reconnecting', async () => {
  let n = 0;
  gw.validTokens = new Set(['alice.t2', 'alice.t3']);
  const client = open({ token: undefined, getToken: async () => `alice.t${++n}` });
  // t1 is refused (err + 4001), t2 works.
  const info = await nextEvent(client, 'connect', 3000);
  assert.equal(info.user, 'alice');
  assert.deepEqual(gw.frames('auth').map((f) => f.token), ['alice.t1', 'alice.t2']);
  // A later 4001 (token expired) fetches another one.
  const again = nextEvent(client, 'connect', 3000);
  gw.last.socket.close(4001, 'token expired');
  await again;
  assert.deepEqual(gw.frames('auth').map((f) => f.token), ['alice.t1', 'alice.t2', 'alice.t3']);
});

test('a first 4001 retries at the base delay; a second one backs off', async () => {
  let n = 0;
  const script = ['close-1011', 'close-4001', 'close-4001', 'ok'];
  gw.handle('auth', (conn, frame, { ack, err }) => {
    const step = script[n++];
    if (step === 'close-1011') conn.socket.close(1011, 'internal');
    else if (step === 'close-4001') {
      err('unauthorized', 'bad token');
      conn.socket.close(4001, 'bad token');
    } else {
      ack({ user: 'alice', exp: gw.exp });
      gw.send(conn, { t: 'welcome', conn: conn.id, user: 'alice', node: 'fake', ping_ms: 25000, exp: gw.exp });
    }
    return undefined;
  });
  let tokens = 0;
  const client = open({ token: undefined, getToken: () => `alice.k${++tokens}` });
  const delays = [];
  client.on('reconnecting', (r) => delays.push([r.attempt, r.code, r.delayMs]));
  await nextEvent(client, 'connect', 3000);
  // base 5 ms, doubling: attempt 2 would be 10 ms, attempt 3 20 ms.
  assert.deepEqual(delays, [[1, 1011, 5], [2, 4001, 5], [3, 4001, 20]]);
  assert.equal(tokens, 3, 'a new token after each 4001');
});

test('close 4001 with a fixed token ends the client', async () => {
  gw.validTokens = new Set();
  const client = open({ token: 'alice.bad' });
  const closed = nextEvent(client, 'state');
  const err = await nextEvent(client, 'error');
  assert.equal(err.code, 'unauthorized');
  assert.equal(err.closeCode, 4001);
  assert.equal(await closed, 'closed');
  assert.equal(client.state, 'closed');
  await assert.rejects(client.ping(), { code: 'closed' });
});

test('close 4003 (kicked) does not reconnect', async () => {
  const client = open();
  const sub = client.join('chat:lobby');
  await sub;
  const states = [];
  client.on('state', (s) => states.push(s));
  const err = new Promise((resolve) => client.on('error', (e) => e.code === 'forbidden' && resolve(e)));
  gw.last.socket.close(4003, 'kicked by admin');
  const e = await err;
  assert.equal(e.closeCode, 4003);
  assert.match(e.message, /kicked by admin/);
  assert.deepEqual(states, ['closed']);
  assert.equal(gw.conns.length, 1);
});

test('expiring triggers getToken and a refresh request', async () => {
  let n = 0;
  const client = open({ token: undefined, getToken: async () => `alice.r${++n}` });
  await nextEvent(client, 'connect');
  const refreshed = nextEvent(client, 'token_refreshed');
  gw.send(gw.last, { t: 'expiring', in_ms: 30000 });
  const { exp } = await refreshed;
  assert.equal(exp, 2000003600);
  assert.equal(client.exp, 2000003600);
  assert.deepEqual(gw.frames('refresh').map((f) => f.token), ['alice.r2']);
});

test('leave stops the room being joined again after a reconnect', async () => {
  const client = open();
  await client.join('chat:a');
  const b = await client.join('chat:b');
  assert.equal(await client.join('chat:b'), b, 'joining again returns the same subscription');
  await client.subscription('chat:a').leave();
  assert.deepEqual(client.rooms, ['chat:b']);
  assert.equal(gw.frames('leave')[0].room, 'chat:a');
  const connected = nextEvent(client, 'connect');
  gw.last.socket.close(1001, 'going away');
  await connected;
  await client.ping();
  const rejoined = gw.received.filter((r) => r.conn === gw.last && r.frame.t === 'join').map((r) => r.frame.room);
  assert.deepEqual(rejoined, ['chat:b']);
});

test('join with a saved position resumes from it on the first join', async () => {
  gw.publish('chat:lobby', 'm', 'a');
  gw.publish('chat:lobby', 'm', 'b');
  gw.publish('chat:lobby', 'm', 'c');
  const client = open();
  const seqs = [];
  client.on('msg', (m) => seqs.push(m.seq));
  const recovered = nextEvent(client, 'recovered');
  const sub = await client.join('chat:lobby', { since: { seq: 1, epoch: 'e0000000000000001' } });
  assert.equal((await recovered).room, 'chat:lobby');
  assert.deepEqual(seqs, [2, 3]);
  assert.deepEqual(sub.position, { seq: 3, epoch: 'e0000000000000001' });
});

test('backoff grows exponentially, is capped, and is jittered', () => {
  const values = [0, 0.5, 0.999];
  let i = 0;
  const client = new BrokerClient('ws://127.0.0.1:1/ws', {
    WebSocket, autoConnect: false, reconnectDelayMs: 100, reconnectDelayMaxMs: 1000,
    randomizationFactor: 0.5, random: () => values[i++ % values.length],
  });
  assert.equal(client._backoff(1), 100); // random 0: the full cap
  assert.equal(client._backoff(2), 150); // 200 * (1 - 0.25)
  assert.equal(client._backoff(3), 200); // 400 * (1 - 0.4995)
  assert.equal(client._backoff(10), 1000); // capped
});

test('a welcome that never comes is retried after connectTimeoutMs', async () => {
  let first = true;
  gw.handle('auth', (conn, frame, { ack }) => {
    if (first) {
      first = false; // swallow: no ack, no welcome
      return undefined;
    }
    ack({ user: 'alice', exp: gw.exp });
    gw.send(conn, { t: 'welcome', conn: conn.id, user: 'alice', node: 'fake', ping_ms: 25000, exp: gw.exp });
    return undefined;
  });
  const client = open({ connectTimeoutMs: 100 });
  const failed = await nextEvent(client, 'connect_error');
  assert.equal(failed.reason, 'connect timeout');
  await nextEvent(client, 'connect');
  assert.equal(gw.conns.length, 2);
});

test('close() rejects queued requests and stops everything', async () => {
  const client = open({ autoConnect: false });
  assert.equal(client.state, 'closed');
  client.open();
  const p = client.presence('chat:lobby');
  client.close();
  await assert.rejects(p, { code: 'closed' });
  assert.equal(client.state, 'closed');
});
