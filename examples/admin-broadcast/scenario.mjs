// admin-broadcast scenario: a maintenance notice to everyone, then notices
// to one namespace only; who receives what, on two gateway nodes.
//
//   node examples/admin-broadcast/scenario.mjs   (while `make example NAME=admin-broadcast` runs)

import { run, token, client, message, check, same, postJson, sleep } from '../lib/scenario.mjs';

run('admin-broadcast', async (env) => {
  const [nodeA, nodeB] = env.gateways;
  const tok = (u, extra) => token(env.JWT_SECRET, u, extra);
  const announce = (body) => postJson(`${env.BACKEND_URL}/announce`, body);
  const adminBroadcast = (body) => postJson(`${env.admins[0]}/api/broadcast`, body);

  // Who is where:
  //   alice  node a, shop:lobby          bob    node b, shop:lobby
  //   erin   node b, shop:lobby + shop:deals (two rooms of one namespace)
  //   carol  node b, ops:status (staff)  dave   node a, no room at all
  const alice = await client(nodeA, tok('alice'));
  await alice.join('shop:lobby');
  const bob = await client(nodeB, tok('bob'));
  await bob.join('shop:lobby');
  const erin = await client(nodeB, tok('erin'));
  await erin.join('shop:lobby');
  await erin.join('shop:deals');
  const carol = await client(nodeB, tok('carol', { roles: ['staff'] }));
  await carol.join('ops:status');
  const dave = await client(nodeA, tok('dave'));
  const everyone = { alice, bob, erin, carol, dave };
  check(alice.node !== bob.node, `clients on both nodes (${alice.node}, ${bob.node})`);

  // Each client's broadcasts, in order, by event name.
  const got = (c) => c.inbox.filter((m) => m.seq === 0 && !m.volatile).map((m) => m.ev);
  // A full broadcast after each step: once everyone has it, whatever a
  // namespace broadcast before it was going to deliver has arrived
  // (broadcasts reach a connection in the order they were sent).
  let marks = 0;
  async function settle() {
    const ev = `mark-${++marks}`;
    await announce({ ev, data: null });
    await Promise.all(Object.values(everyone).map((c) => message(c, ev)));
  }

  // 1. Maintenance notice to everyone, from the backend (broker.broadcast).
  const res = await announce({ ev: 'maintenance', data: { in_s: 300, text: 'Back in 5 minutes' } });
  check(res.status === 200 && res.body.nodes === 2, 'broker.broadcast tells both nodes', res.body);
  for (const [name, c] of Object.entries(everyone)) {
    const m = await message(c, 'maintenance');
    check(same(m.data, { in_s: 300, text: 'Back in 5 minutes' }) && m.seq === 0 && m.room === '*', `${name} gets maintenance (room "*", seq 0)`);
  }
  const sample = await message(dave, 'maintenance');
  console.log(`# a broadcast msg as received: ${JSON.stringify({ ...sample, ts: '…' })}`);

  // 2. A notice to the ops namespace only, through the admin API.
  const ops = await adminBroadcast({ ev: 'deploy', data: { version: '1.4.2' }, ns: 'ops' });
  check(ops.status === 200 && ops.body.nodes >= 1, 'POST /api/broadcast {ns: "ops"} is accepted', ops.body);
  await settle();
  check(same(got(carol).filter((e) => e === 'deploy'), ['deploy']), 'carol (in ops:status) gets deploy');
  check((await message(carol, 'deploy')).room === 'ops:*', 'its room is "ops:*"');
  for (const name of ['alice', 'bob', 'erin', 'dave']) {
    check(!got(everyone[name]).includes('deploy'), `${name} (no ops room) does not`);
  }

  // 3. A sale to the shop namespace, from the backend: once per connection,
  //    also for erin, who is in two shop rooms.
  await announce({ ev: 'sale', data: { percent: 20 }, ns: 'shop' });
  await settle();
  for (const name of ['alice', 'bob', 'erin']) {
    check(same(got(everyone[name]).filter((e) => e === 'sale'), ['sale']), `${name} (in a shop room) gets sale exactly once`);
  }
  check(!got(carol).includes('sale') && !got(dave).includes('sale'), 'carol (ops only) and dave (no room) do not');

  // 4. Only namespaces with members hear; a namespace nobody is in: no one.
  await adminBroadcast({ ev: 'nobody', data: 1, ns: 'chat' });
  await settle();
  check(Object.values(everyone).every((c) => !got(c).includes('nobody')), 'a broadcast to namespace chat (no members) reaches no one');

  // 5. Broadcasts are not stored: a client that connects now gets none.
  const late = await client(nodeA, tok('frank'));
  await late.join('shop:lobby');
  await sleep(200);
  check(got(late).length === 0, 'frank, connecting afterwards, gets none of them');
  const { messages } = await late.history('shop:lobby');
  check(messages.length === 0, 'and shop:lobby has no history of them');

  check(same(got(erin), ['maintenance', 'mark-1', 'sale', 'mark-2', 'mark-3']), 'erin\'s broadcasts, in order', got(erin));
});
