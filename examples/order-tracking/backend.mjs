// order-tracking backend: the shop's order service.
//
//   POST /orders {owner}            place an order -> {id, owner, status: "placed"}
//   POST /orders/{id}/advance       next status (placed -> paid -> shipped -> delivered)
//   POST /login {user}              a token whose `rooms` claim lists the user's orders
//   rpc  order:status {id}          the order's current state (the owner only)
//
// Every status change is appended to DATA_DIR/orders.jsonl (the state is
// rebuilt from it at start) and published to order:<id> as `status`.

import crypto from 'node:crypto';
import path from 'node:path';
import { Broker } from '@broker/node';
import { env, log, httpServer, jsonLines, onShutdown } from '../lib/backend.mjs';

const STATUSES = ['placed', 'paid', 'shipped', 'delivered'];
const broker = new Broker(env('REDIS_URL'));
const store = jsonLines(path.join(env('DATA_DIR'), 'orders.jsonl'));

/** id -> {id, owner, status, history: [{status, at}]} */
const orders = new Map();
for (const line of store.readAll()) apply(line);

function apply({ id, owner, status, at }) {
  const o = orders.get(id) ?? { id, owner, status, history: [] };
  o.status = status;
  o.history.push({ status, at });
  orders.set(id, o);
  return o;
}

async function setStatus(id, owner, status) {
  const change = { id, owner, status, at: Date.now() };
  store.append(change);
  const o = apply(change);
  const seq = await broker.publish(`order:${id}`, 'status', { id, status, at: change.at });
  log(`order ${id} (${owner}) ${status} -> order:${id} seq ${seq}`);
  return o;
}

const view = (o) => ({ id: o.id, owner: o.owner, status: o.status, history: o.history });

// The application's login, reduced to what matters here: the token names
// the orders its holder may follow. (Issue it from your auth server; a
// user with many orders can get a pattern such as "order:alice-*" instead.)
function login(user) {
  const rooms = [...orders.values()].filter((o) => o.owner === user).map((o) => `order:${o.id}`);
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: user, iat: now, exp: now + 3600, rooms })}`;
  const sig = crypto.createHmac('sha256', env('JWT_SECRET')).update(unsigned).digest('base64url');
  return { token: `${unsigned}.${sig}`, rooms };
}

let next = orders.size + 1;

const http = httpServer({
  'POST /orders': async (req, raw) => {
    const { owner } = JSON.parse(raw.toString() || '{}');
    if (!owner) return [400, { error: 'owner is required' }];
    const id = `o-${next++}`;
    return [200, view(await setStatus(id, owner, 'placed'))];
  },
  'POST /orders/:id/advance': async (req, raw, url, { id }) => {
    const o = orders.get(id);
    if (!o) return [404, { error: 'no such order' }];
    const i = STATUSES.indexOf(o.status);
    if (i + 1 >= STATUSES.length) return [409, { error: `order ${id} is ${o.status} already` }];
    return [200, view(await setStatus(o.id, o.owner, STATUSES[i + 1]))];
  },
  'POST /login': async (req, raw) => {
    const { user } = JSON.parse(raw.toString() || '{}');
    if (!user) return [400, { error: 'user is required' }];
    return [200, login(user)];
  },
});
// The client asks: client.rpc('order:status', {id}). ctx.user is the
// token's sub, checked by the gateway: only the owner gets an answer.
broker.rpc.handle('order:status', async (data, ctx) => {
  const o = orders.get(String(data?.id));
  if (!o) throw Object.assign(new Error(`no order ${data?.id}`), { code: 'not_found' });
  if (o.owner !== ctx.user) throw Object.assign(new Error('not your order'), { code: 'forbidden' });
  return view(o);
});
await broker.rpc.start({ group: 'order-tracking', consumer: 'backend-1' });

onShutdown(async () => {
  http.server.close();
  await broker.rpc.stop();
  await broker.close();
});
http.ready();
