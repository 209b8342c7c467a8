// The library against the module's backend commands: BROKER.RPC.REPLY /
// RPC.ERROR, BROKER.USER.JOIN / USER.LEAVE, BROKER.PUBLISH ... VOLATILE and
// the module's own lifecycle entries.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Broker } from '../src/index.js';
import { startRedis, unique, eventually, fakeGateway, addRequest } from './helpers.js';

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

/** An argument as MONITOR quotes it (sdscatrepr: \\n \\r \\t \\a \\b \\xNN \\\\ \\"). */
const unescapeMonitor = (q) => q.replace(/\\(x[0-9a-fA-F]{2}|.)/g, (_, e) =>
  e[0] === 'x' && e.length === 3 ? String.fromCharCode(parseInt(e.slice(1), 16))
    : ({ n: '\n', r: '\r', t: '\t', a: '\x07', b: '\b' })[e] ?? e);

/** MONITOR through redis-cli: the BROKER.RPC.* commands the server ran, as argument lists. */
async function monitorRpc() {
  const child = spawn('redis-cli', ['-p', String(server.port), 'MONITOR'], { stdio: ['ignore', 'pipe', 'ignore'] });
  const seen = [];
  let buf = '';
  child.stdout.on('data', (chunk) => {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      // 1796438187.715999 [0 127.0.0.1:38242] "CMD" "arg" ...
      if (!/"BROKER\.RPC\./i.test(line)) continue;
      const args = [...line.matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => unescapeMonitor(m[1]));
      if (args.length && args[0].toUpperCase().startsWith('BROKER.RPC.')) seen.push(args);
    }
  });
  await new Promise((r) => child.stdout.once('data', r)); // "OK"
  return { seen, stop: () => child.kill() };
}

/** Starts a handler on a fresh group, sends one request, and waits until it
 * is acknowledged or its answer failed. Returns the answer command as
 * MONITOR saw it. */
async function callOnce(setup, request) {
  const b = new Broker(server.url);
  const mon = await monitorRpc();
  try {
    setup(b.rpc);
    const errors = [];
    const group = unique('rpc');
    await b.rpc.start({ group, consumer: 'w1', blockMs: 100, onError: (e) => errors.push(e) });
    const gw = fakeGateway(b);
    await gw.lease();
    const conn = `${gw.node}.inc.1`;
    await gw.open('alice', conn);
    await addRequest(raw, { node: gw.node, conn, ...request });
    await eventually(async () => errors.length > 0 || (mon.seen.length > 0 && (await raw.xpending('broker:rpc', group))[0] === 0),
      5000, 'the answer');
    if (errors.length) throw errors[0];
    return { answer: mon.seen[0], conn };
  } finally {
    mon.stop();
    await b.close();
  }
}

test('a result is sent with RPC.REPLY conn id json FORMAT json, then acked', async () => {
  const { answer, conn } = await callOnce(
    (rpc) => rpc.handle('order:status', async (data) => ({ id: data.order, status: 'shipped' })),
    { method: 'order:status', data: { order: 42 }, id: '7' },
  );
  assert.deepEqual(answer, ['BROKER.RPC.REPLY', conn, '7', '{"id":42,"status":"shipped"}', 'FORMAT', 'json']);
});

test('a thrown error is sent with RPC.ERROR conn id code message', async () => {
  const { answer, conn } = await callOnce(
    (rpc) => rpc.handle('order:status', async () => {
      throw Object.assign(new Error('no such order'), { code: 'not_found' });
    }),
    { method: 'order:status', id: '8' },
  );
  assert.deepEqual(answer, ['BROKER.RPC.ERROR', conn, '8', 'not_found', 'no such order']);
});

test('an unknown method is answered unknown_method', async () => {
  const { answer, conn } = await callOnce(() => {}, { method: 'nobody:home', id: '9' });
  assert.deepEqual(answer.slice(0, 4), ['BROKER.RPC.ERROR', conn, '9', 'unknown_method']);
});

test('userJoin and userLeave tell every connection of the user', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const user = unique('dana');
  await gw.open(user, `${gw.node}.u.1`);
  await gw.open(user, `${gw.node}.u.2`);
  const room = unique('chat:decided');
  assert.equal(await broker.userJoin(user, room), 2);
  assert.equal(await broker.userLeave(user, room), 2);
  assert.equal(await broker.userJoin(unique('nobody'), room), 0);
  await gw.release();
});

test('a volatile publish has seq 0 and stays out of history', async () => {
  const room = unique('chat:typing');
  assert.equal(await broker.publish(room, 'm', 1), 1);
  assert.equal(await broker.publish(room, 'typing', { user: 'a' }, { volatile: true }), 0);
  const h = await broker.history(room);
  assert.equal(h.seq, 1);
  assert.equal(h.messages.length, 1);
});

test('CONN.OPEN and JOIN write connect, online and join entries', async () => {
  const gw = fakeGateway(broker);
  await gw.lease();
  const user = unique('erin');
  const room = unique('chat:life');
  const it = broker.events({ group: unique('g'), consumer: 'c1', start: '0', blockMs: 100 });
  const got = [];
  const reading = (async () => {
    for await (const ev of it) {
      if (ev.user === user) got.push(ev);
      if (got.length === 3) break;
    }
  })();
  await gw.open(user, `${gw.node}.l.1`);
  await gw.join(room, user, `${gw.node}.l.1`);
  try {
    await eventually(() => got.length === 3, 3000, 'connect, online and join entries in broker:events');
  } finally {
    await it.return();
    await reading;
  }
  assert.deepEqual(got.map((e) => e.type).sort(), ['connect', 'join', 'online']);
  assert.equal(got.find((e) => e.type === 'join').room, room);
  assert.ok(got.every((e) => e.node === gw.node && e.ts > 0));
  await gw.release();
});
