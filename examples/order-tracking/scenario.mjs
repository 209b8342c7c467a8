// order-tracking scenario: the owner follows an order's status live and
// asks for it by RPC; another user can neither join the room nor ask.
//
//   node examples/order-tracking/scenario.mjs   (while `make example NAME=order-tracking` runs)

import { run, client, message, check, same, rejects, postJson, sleep, until } from '../lib/scenario.mjs';

run('order-tracking', async (env) => {
  const [ws] = env.gateways;
  const shop = (path, body = {}) => postJson(`${env.BACKEND_URL}${path}`, body);
  const login = async (user) => (await shop('/login', { user })).body;

  // 1. Alice places an order; her login token lists it in `rooms`.
  const placed = (await shop('/orders', { owner: 'alice' })).body;
  check(placed.status === 'placed' && /^o-\d+$/.test(placed.id), 'the shop places an order', placed);
  const room = `order:${placed.id}`;
  const aliceLogin = await login('alice');
  check(same(aliceLogin.rooms, [room]), `alice's token has rooms: ["${room}"]`, aliceLogin.rooms);
  const alice = await client(ws, aliceLogin.token);
  const sub = await alice.join(room);
  check(sub.joined && sub.seq === 1, `alice joins ${room} (the claim allows it; seq 1 = placed)`, { seq: sub.seq });

  // 2. Mallory's token has no such claim: the join is refused, and so is the RPC.
  const mallory = await client(ws, (await login('mallory')).token);
  const refused = await rejects(mallory.join(room), 'forbidden');
  check(refused.code === 'forbidden', `mallory's join of ${room} is refused: forbidden`);
  const notYours = await rejects(mallory.rpc('order:status', { id: placed.id }), 'rpc_error');
  check(notYours.rpcCode === 'forbidden', 'mallory\'s order:status for it is refused by the backend (rpc_error forbidden)', notYours.rpcCode);
  check((await rejects(mallory.history(room), 'forbidden')).code === 'forbidden', 'nor may mallory read its history');

  // 3. RPC answers the current state.
  const now = await alice.rpc('order:status', { id: placed.id });
  check(now.status === 'placed' && now.owner === 'alice', 'rpc order:status answers placed', now);

  // 4. The shop moves the order on; alice sees each change, in order.
  check((await shop(`/orders/${placed.id}/advance`)).body.status === 'paid', 'the shop marks it paid');
  check((await shop(`/orders/${placed.id}/advance`)).body.status === 'shipped', 'the shop marks it shipped');
  await message(alice, 'status', { room, where: (m) => m.data.status === 'shipped' });
  const live = alice.inbox.filter((m) => m.room === room);
  check(same(live.map((m) => m.data.status), ['paid', 'shipped']), 'alice receives paid then shipped', live.map((m) => m.data.status));
  check(same(live.map((m) => m.seq), [2, 3]), 'with increasing seq 2, 3', live.map((m) => m.seq));
  check(live.every((m) => !m.from), 'published by the server (no from)');
  const after = await alice.rpc('order:status', { id: placed.id });
  check(after.status === 'shipped' && same(after.history.map((h) => h.status), ['placed', 'paid', 'shipped']),
    'rpc order:status now answers shipped, with the history', after);

  // 5. Clients cannot write to order rooms (publish = "server").
  check((await rejects(alice.publish(room, 'status', { status: 'delivered' }), 'forbidden')).code === 'forbidden',
    'alice may not publish to the order room (publish = server)');

  // 6. A second device joining late catches up from history.
  const tablet = await client(ws, aliceLogin.token);
  const { messages } = await tablet.history(room);
  check(same(messages.map((m) => m.data.status), ['placed', 'paid', 'shipped']), 'a late device reads placed, paid, shipped from history');

  // 7. A new order: the old token does not list it; after a refresh with
  //    a new login token the same connection may join.
  const second = (await shop('/orders', { owner: 'alice' })).body;
  const room2 = `order:${second.id}`;
  await rejects(alice.join(room2), 'forbidden');
  check(true, `alice's old token does not allow ${room2}`);
  await alice.refresh((await login('alice')).token);
  const sub2 = await alice.join(room2);
  check(sub2.joined, `after refresh with a new token (rooms ${room}, ${room2}) alice joins ${room2}`);

  // 8. Unknown orders are the backend's error.
  const missing = await rejects(alice.rpc('order:status', { id: 'o-999' }), 'rpc_error');
  check(missing.rpcCode === 'not_found', 'rpc order:status for an unknown order: rpc_error not_found', missing.rpcCode);
});
