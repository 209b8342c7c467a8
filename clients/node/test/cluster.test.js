// The Broker against a 3-master Redis Cluster with the module on every master.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Broker, keySlot } from '../src/index.js';
import { startCluster, fakeGateway, unique, eventually, addRequest } from './helpers.js';

const run = promisify(execFile);
let cl;
let broker;
let raw;

before(async () => {
  cl = await startCluster(3);
  broker = new Broker({ cluster: cl.seeds });
  raw = cl.cluster();
});

after(async () => {
  await broker?.close();
  await cl?.stop();
});

/** The port of the master serving `key`, from CLUSTER SLOTS. */
async function masterPortOf(key) {
  const slot = keySlot(key);
  const slots = await raw.cluster('SLOTS');
  const range = slots.find(([lo, hi]) => slot >= lo && slot <= hi);
  return Number(range[2][1]);
}

/** MOVED replies the masters gave so far (INFO errorstats). */
async function movedCount() {
  let total = 0;
  for (const s of cl.servers) {
    const { stdout } = await run('redis-cli', ['-p', String(s.port), 'INFO', 'errorstats']);
    total += Number(/errorstat_MOVED:count=(\d+)/.exec(stdout)?.[1] ?? 0);
  }
  return total;
}

test('keySlot agrees with CLUSTER KEYSLOT', async () => {
  for (const key of ['chat:lobby', 'user:alice', 'broker:events:{0}', 'broker:rpc', '{a}b', 'x{}y', '0', '12345']) {
    const { stdout } = await run('redis-cli', ['-p', String(cl.servers[0].port), 'CLUSTER', 'KEYSLOT', key]);
    assert.equal(keySlot(key), Number(stdout.trim()), key);
  }
});

test('commands go to the master of their slot at once (no MOVED needed)', async () => {
  // A plain connection to one master answers MOVED for a room on another;
  // the broker's routing sends every command where it belongs.
  const rooms = [];
  for (let i = 0; rooms.length < 3 * 4; i++) rooms.push(unique('chat:r'));
  const ports = new Set(await Promise.all(rooms.map(masterPortOf)));
  assert.equal(ports.size, 3, 'the rooms are spread over the three masters');
  await broker.online(); // connected to every master
  const movedBefore = await movedCount();
  for (const room of rooms) {
    assert.equal(await broker.publish(room, 'm', { room }), 1);
    assert.equal(await broker.publish(room, 'm', { room }), 2);
    const h = await broker.history(room);
    assert.deepEqual(h.messages.map((m) => m.data.room), [room, room]);
  }
  assert.equal(await movedCount(), movedBefore, 'no MOVED replies');
});

test('presence, room members and counts, online and nodes over the shards', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const base = await broker.online();
  const users = [unique('alice'), unique('bob'), unique('carol'), unique('dave')];
  const rooms = [unique('chat:a'), unique('chat:b'), unique('chat:c')];
  let n = 0;
  for (const user of users) {
    const conn = `${gw.node}.i.${n++}`;
    await gw.open(user, conn);
    for (const room of rooms) await gw.join(room, user, conn);
  }
  assert.deepEqual(await broker.online(), { users: base.users + 4, connections: base.connections + 4 });
  const p = await broker.presence(users[0]);
  assert.equal(p.connections, 1);
  // rooms on every shard, not only the user's
  assert.deepEqual([...p.conns[0].rooms].sort(), [...rooms].sort());
  for (const room of rooms) {
    assert.deepEqual(await broker.roomMembers(room, { pageSize: 3 }), [...users].sort().map((user) => ({ user, conns: 1 })));
    assert.deepEqual(await broker.roomCount(room), { users: 4, connections: 4 });
  }
  const mine = (await broker.nodes()).find((x) => x.node === gw.node);
  assert.equal(mine.connections, 4);
  assert.equal(await broker.kick(users[1], 'bye'), 1);
  await gw.release();
  assert.deepEqual(await broker.online(), base);
});

test('broadcast and emitToUser', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  assert.ok((await broker.broadcast('notice', { x: 1 })) >= 1);
  assert.equal(await broker.emitToUser(unique('erin'), 'n', 1), 1);
  await gw.release();
});

test('one events stream per master, named by the smallest tag the master serves', async () => {
  const streams = await broker.eventStreams();
  assert.equal(streams.length, 3);
  const ports = new Set();
  for (const stream of streams) {
    const tag = Number(/^broker:events:\{(\d+)\}$/.exec(stream)[1]);
    const port = await masterPortOf(stream);
    ports.add(port);
    for (let smaller = 0; smaller < tag; smaller++) {
      assert.notEqual(await masterPortOf(String(smaller)), port, `${smaller} is on the same master as ${stream}`);
    }
  }
  assert.equal(ports.size, 3);
});

test('each master names the same stream the library derives', async () => {
  const named = (await broker.eachMaster('BROKER.EVENTS.STREAM')).map(String).sort();
  assert.deepEqual(named, (await broker.eventStreams()).sort());
});

test('events() reads every master stream and acks on each', async () => {
  const user = unique('cl-ev');
  const group = unique('g');
  const streams = await broker.eventStreams();
  const ids = [];
  for (const stream of streams) {
    ids.push(await raw.xadd(stream, '*', 'type', 'connect', 'user', user, 'conn', stream, 'node', 'n1', 'ts', String(Date.now())));
  }
  const seen = [];
  for await (const ev of broker.events({ group, consumer: 'c1', start: '0', blockMs: 100 })) {
    if (ev.user === user) seen.push([ev.stream, ev.conn, ev.id]);
    if (seen.length === streams.length) break;
  }
  assert.deepEqual(seen.map((s) => s[0]).sort(), [...streams].sort());
  assert.ok(seen.every(([stream, conn]) => stream === conn));
  for (const stream of streams) assert.equal((await raw.xpending(stream, group))[0], 0, stream);
});

test('events() on a cluster: a later entry on any master arrives while the others block', async () => {
  const user = unique('cl-live');
  const ac = new AbortController();
  const it = broker.events({ group: unique('g'), consumer: 'c1', blockMs: 2000, signal: ac.signal });
  const first = it.next();
  await new Promise((r) => setTimeout(r, 300));
  const streams = await broker.eventStreams();
  const t0 = Date.now();
  await raw.xadd(streams[2], '*', 'type', 'online', 'user', user, 'conn', 'c', 'node', 'n', 'ts', String(Date.now()));
  let r = await first;
  while (r.value.user !== user) r = await it.next();
  assert.equal(r.value.stream, streams[2]);
  assert.ok(Date.now() - t0 < 1500, 'not held back by the other masters\' blocked reads');
  ac.abort();
});

test('rpc on a cluster reads the one broker:rpc key', async () => {
  const b = new Broker({ cluster: cl.seeds });
  const calls = [];
  b.rpc.handle('ping', (data, ctx) => { calls.push([data, ctx.user]); return 'pong'; });
  await b.rpc.start({ group: unique('rpc'), consumer: 'w1', blockMs: 100, onError: () => {} });
  await addRequest(raw, { method: 'ping', data: [1, 'a'], user: 'frank' });
  await eventually(() => calls.length === 1, 5000, 'the call');
  assert.deepEqual(calls[0], [[1, 'a'], 'frank']);
  await b.close();
});
