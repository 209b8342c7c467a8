// broker.rpc: handlers fed from broker:rpc, entries XADDed by the test as the
// gateway writes them. The tests that need BROKER.RPC.REPLY / RPC.ERROR in
// the module are in new-commands.test.js.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Broker } from '../src/index.js';
import { startRedis, unique, eventually, sleep, addRequest } from './helpers.js';

let server;
let raw;

before(async () => {
  server = await startRedis();
  raw = server.client();
});

after(async () => {
  await server?.stop();
});

const pending = async (group) => (await raw.xpending('broker:rpc', group))[0];

test('a request past its deadline is acknowledged without calling the handler', async () => {
  const broker = new Broker(server.url);
  const group = unique('rpc');
  let called = 0;
  const errors = [];
  broker.rpc.handle('order:status', () => { called++; return 1; });
  await broker.rpc.start({ group, consumer: 'w1', blockMs: 100, onError: (e) => errors.push(e) });
  const entry = await addRequest(raw, { method: 'order:status', deadline: Date.now() - 1 });
  await eventually(async () => {
    const info = await raw.xinfo('GROUPS', 'broker:rpc');
    const g = info.find((x) => x[1] === group);
    return g && g[7] === entry && (await pending(group)) === 0;
  }, 5000, 'the late entry acknowledged');
  assert.equal(called, 0);
  assert.deepEqual(errors, []);
  await broker.close();
});

test('the handler gets the MessagePack data and the context; concurrency is bounded', async () => {
  const broker = new Broker(server.url);
  const group = unique('rpc');
  let running = 0;
  let most = 0;
  const calls = [];
  broker.rpc.handle('slow', async (data, ctx) => {
    running++;
    most = Math.max(most, running);
    calls.push({ data, ctx });
    await sleep(50);
    running--;
    return { ok: true };
  });
  await broker.rpc.start({ group, consumer: 'w1', concurrency: 2, blockMs: 100, onError: () => {} });
  const deadline = Date.now() + 5000;
  for (let i = 0; i < 5; i++) {
    await addRequest(raw, { method: 'slow', data: { n: i, bin: new Uint8Array([i]) }, id: i, user: 'bob', conn: 'gw2.x.9', node: 'gw2', deadline });
  }
  await eventually(() => calls.length === 5 && running === 0, 5000, 'five calls');
  assert.equal(most, 2);
  assert.deepEqual(calls.map((c) => c.data.n), [0, 1, 2, 3, 4]);
  assert.deepEqual(Buffer.from(calls[3].data.bin), Buffer.from([3]));
  const { ctx } = calls[3];
  assert.deepEqual({ ...ctx, signal: undefined, entryId: undefined },
    { user: 'bob', conn: 'gw2.x.9', node: 'gw2', id: '3', deadline, method: 'slow', signal: undefined, entryId: undefined });
  assert.ok(ctx.signal instanceof AbortSignal);
  await broker.close();
});

test('the json field is used when data is absent', async () => {
  const broker = new Broker(server.url);
  const group = unique('rpc');
  const seen = [];
  broker.rpc.handle('j', (data) => { seen.push(data); });
  await broker.rpc.start({ group, consumer: 'w1', blockMs: 100, onError: () => {} });
  await raw.xadd('broker:rpc', '*', 'method', 'j', 'json', '{"a":[1,2]}', 'user', 'u', 'conn', 'n.i.1', 'node', 'n', 'id', '1',
    'deadline', String(Date.now() + 5000));
  await eventually(() => seen.length === 1, 5000, 'the call');
  assert.deepEqual(seen[0], { a: [1, 2] });
  await broker.close();
});

test('stop() waits for the calls in flight; start twice is an error', async () => {
  const broker = new Broker(server.url);
  const group = unique('rpc');
  let finished = false;
  let started = false;
  broker.rpc.handle('long', async () => { started = true; await sleep(200); finished = true; });
  await broker.rpc.start({ group, consumer: 'w1', blockMs: 100, onError: () => {} });
  await assert.rejects(broker.rpc.start({ group, consumer: 'w1' }), /already/);
  await addRequest(raw, { method: 'long' });
  await eventually(() => started, 5000, 'the call');
  await broker.rpc.stop();
  assert.equal(finished, true);
  assert.equal(broker.rpc.running, false);
  await broker.close();
});
