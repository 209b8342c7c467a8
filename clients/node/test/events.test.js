// events(): the lifecycle stream in a consumer group, on one Redis. The
// entries are XADDed by the test, as the module writes them.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Broker } from '../src/index.js';
import { startRedis, unique, eventually } from './helpers.js';

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

const add = (fields, stream = 'broker:events') =>
  raw.xadd(stream, '*', ...Object.entries({ conn: 'c1', node: 'n1', ts: String(Date.now()), ...fields }).flat());
const pendingCount = async (group, stream = 'broker:events') => (await raw.xpending(stream, group))[0];

test('eventStreams on one Redis is broker:events', async () => {
  assert.deepEqual(await broker.eventStreams(), ['broker:events']);
});

test('events yields each entry with its fields, start 0 reads what is there', async () => {
  const user = unique('ev');
  const ids = [
    await add({ type: 'connect', user, ts: '1700000000000' }),
    await add({ type: 'join', user, room: 'chat:lobby' }),
    await add({ type: 'leave', user, room: 'chat:lobby', reason: 'client' }),
    await add({ type: 'disconnect', user, reason: 'kicked', duration_ms: '1234' }),
  ];
  const group = unique('g');
  const seen = [];
  for await (const ev of broker.events({ group, consumer: 'c1', start: '0', blockMs: 100 })) {
    if (ev.user !== user) continue;
    seen.push(ev);
    if (seen.length === 4) break;
  }
  assert.deepEqual(seen[0], { id: ids[0], stream: 'broker:events', type: 'connect', user, conn: 'c1', node: 'n1', ts: 1700000000000 });
  assert.equal(seen[1].room, 'chat:lobby');
  assert.equal(seen[1].reason, undefined);
  assert.deepEqual([seen[2].type, seen[2].room, seen[2].reason], ['leave', 'chat:lobby', 'client']);
  assert.deepEqual([seen[3].type, seen[3].reason, seen[3].durationMs], ['disconnect', 'kicked', 1234]);
  assert.deepEqual(seen.map((e) => e.id), ids);
  // break acknowledged the last one; every one before was acknowledged when the next was pulled.
  assert.equal(await pendingCount(group), 0);
});

test('an entry is acknowledged only after the loop body is done with it', async () => {
  const user = unique('ack');
  const group = unique('g');
  await add({ type: 'online', user });
  await add({ type: 'offline', user });
  const it = broker.events({ group, consumer: 'c1', start: '0', blockMs: 100 });
  let first = await it.next();
  while (first.value.user !== user) first = await it.next();
  assert.equal(first.value.type, 'online');
  const pending = await raw.xpending('broker:events', group, '-', '+', 100);
  assert.ok(pending.some(([id]) => id === first.value.id), 'the entry in hand is pending');
  const second = await it.next();
  assert.equal(second.value.type, 'offline');
  const after = await raw.xpending('broker:events', group, '-', '+', 100);
  assert.ok(!after.some(([id]) => id === first.value.id), 'pulling the next acknowledged it');
  assert.ok(after.some(([id]) => id === second.value.id));
  await it.return();
  assert.equal(await pendingCount(group), 0);
});

test('a new group starts at $ by default: only entries after it', async () => {
  const user = unique('dollar');
  const group = unique('g');
  await add({ type: 'connect', user, conn: 'old' });
  const ac = new AbortController();
  const it = broker.events({ group, consumer: 'c1', blockMs: 100, signal: ac.signal });
  const firstP = it.next();
  await eventually(async () => (await raw.xinfo('GROUPS', 'broker:events')).some((g) => g[1] === group), 5000, 'the group');
  await add({ type: 'connect', user, conn: 'new' });
  let r = await firstP;
  while (r.value.user !== user) r = await it.next();
  assert.equal(r.value.conn, 'new');
  ac.abort();
  assert.equal((await it.next()).done, true);
});

test('types: other entries are acknowledged and skipped', async () => {
  const user = unique('types');
  const group = unique('g');
  await add({ type: 'connect', user });
  await add({ type: 'join', user, room: 'chat:a' });
  await add({ type: 'disconnect', user, reason: 'idle', duration_ms: '5' });
  const seen = [];
  for await (const ev of broker.events({ group, consumer: 'c1', start: '0', types: ['disconnect'], blockMs: 100 })) {
    if (ev.user === user) {
      seen.push(ev.type);
      break;
    }
  }
  assert.deepEqual(seen, ['disconnect']);
  assert.equal(await pendingCount(group), 0);
  assert.throws(() => broker.events({ group, consumer: 'c1', types: ['typing'] }), /unknown event type/);
  assert.throws(() => broker.events({ group }), /consumer/);
});

test('after a crash the same consumer gets its unacknowledged entries first', async () => {
  const user = unique('crash');
  const group = unique('g');
  await raw.xgroup('CREATE', 'broker:events', group, '$', 'MKSTREAM');
  const lost = await add({ type: 'connect', user });
  // Delivered to c1 and never acknowledged (the process died).
  await raw.xreadgroup('GROUP', group, 'c1', 'COUNT', 10, 'STREAMS', 'broker:events', '>');
  const next = await add({ type: 'disconnect', user, reason: 'client', duration_ms: '1' });
  const seen = [];
  for await (const ev of broker.events({ group, consumer: 'c1', blockMs: 100 })) {
    seen.push(ev.id);
    if (seen.length === 2) break;
  }
  assert.deepEqual(seen, [lost, next]);
  assert.equal(await pendingCount(group), 0);
});

test('two consumers of one group share the entries; two groups each see all', async () => {
  const user = unique('share');
  const g1 = unique('g');
  const g2 = unique('g');
  const ids = [];
  for (let i = 0; i < 6; i++) ids.push(await add({ type: 'connect', user, conn: `c${i}` }));
  // One group: every entry goes to exactly one of its consumers.
  const ac = new AbortController();
  const got = { a: [], b: [] };
  const consume = async (consumer) => {
    for await (const ev of broker.events({ group: g1, consumer, start: '0', blockMs: 100, count: 1, signal: ac.signal })) {
      if (ev.user === user) got[consumer].push(ev.id);
      if (got.a.length + got.b.length === ids.length) ac.abort();
      await new Promise((r) => setTimeout(r, 5)); // let the other one take some
    }
  };
  await Promise.all([consume('a'), consume('b')]);
  assert.deepEqual([...got.a, ...got.b].sort(), [...ids].sort());
  assert.equal(await pendingCount(g1), 0);
  // Another group sees them all again.
  const all = [];
  for await (const ev of broker.events({ group: g2, consumer: 'a', start: '0', blockMs: 100 })) {
    if (ev.user === user) all.push(ev.id);
    if (all.length === ids.length) break;
  }
  assert.deepEqual(all, ids);
});

test('close() ends a waiting iterator', async () => {
  const b = new Broker(server.url);
  const it = b.events({ group: unique('g'), consumer: 'c1', blockMs: 10000 });
  const p = it.next();
  await new Promise((r) => setTimeout(r, 100));
  const t0 = Date.now();
  await b.close();
  assert.equal((await p).done, true);
  assert.ok(Date.now() - t0 < 2000, 'close() does not wait for the blocked read');
});
