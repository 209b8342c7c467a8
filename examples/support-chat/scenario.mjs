// support-chat scenario: a customer is put in a ticket room with a free
// agent; messages go through the backend (stored, then published); the
// agent's typing is volatile; when the agent's gateway node dies, the
// ticket moves to the other agent.
//
//   node examples/support-chat/scenario.mjs   (while `make example NAME=support-chat` runs;
//   it kills node b, so run it once per start)

import { run, token, client, message, membership, check, same, rejects } from '../lib/scenario.mjs';

run('support-chat', async (env) => {
  const [nodeA, nodeB] = env.gateways;
  check(env.gateways.length === 2, 'two gateway nodes run', env.nodeIds);
  const agentToken = (u) => token(env.JWT_SECRET, u, { roles: ['agent'], rooms: ['support:*'] });

  // 1. Agent ann is on node b; customer alice arrives on node a.
  const ann = await client(nodeB, agentToken('ann'));
  check(ann.node === env.nodeIds[1], `ann is connected to node ${ann.node}`);
  const alice = await client(nodeA, token(env.JWT_SECRET, 'alice'));
  const annJoined = membership(ann, 'server_joined', (j) => j.room.startsWith('support:alice-'));
  const aliceJoined = await membership(alice, 'server_joined', (j) => j.room.startsWith('support:'));
  const room = aliceJoined.room;
  const ticket = room.slice('support:'.length);
  check(/^support:alice-\d+$/.test(room), `the backend opens ticket ${ticket} and puts alice in ${room}`);
  check((await annJoined).room === room, 'ann gets server_joined for the same room');
  const assigned = await message(alice, 'assigned', { room });
  check(assigned.data.agent === 'ann', 'alice hears: assigned to ann', assigned.data);

  // 2. Messages go through rpc support:send: stored, published, {id, seq}.
  const sent = await alice.rpc('support:send', { ticket, text: 'my parcel is late' });
  check(/^m-\d+$/.test(sent.id) && sent.seq > 0, 'alice sends by rpc: answered {id, seq}', sent);
  const atAnn = await message(ann, 'message', { room, where: (m) => m.data.id === sent.id });
  check(atAnn.seq === sent.seq && atAnn.data.text === 'my parcel is late' && atAnn.data.from === 'alice',
    'ann receives it with that seq', atAnn);

  // A second tab of alice's is put in the ticket too (the backend acts on
  // every `connect`, not only on `online`).
  const tab = await client(nodeA, token(env.JWT_SECRET, 'alice'));
  check((await membership(tab, 'server_joined', (j) => j.room === room)).room === room,
    'alice\'s second tab gets server_joined for the same ticket');

  // 3. "ann is typing": a volatile publish, seq 0.
  const typing = await ann.publish(room, 'typing', {}, { volatile: true });
  check(typing.seq === 0, 'ann\'s typing publish is volatile (ack seq 0)');
  const seenTyping = await message(alice, 'typing', { room });
  check(seenTyping.volatile === true && seenTyping.seq === 0 && seenTyping.from?.user === 'ann',
    'alice sees typing with volatile: true, seq 0, from ann', seenTyping);
  const reply = await ann.rpc('support:send', { ticket, text: 'let me check' });
  check((await message(alice, 'message', { room, where: (m) => m.data.id === reply.id })).data.role === 'agent',
    'ann\'s answer reaches alice');

  // 4. What is not allowed.
  const mallory = await client(nodeA, token(env.JWT_SECRET, 'mallory'));
  await membership(mallory, 'server_joined', () => true);
  const intrude = await rejects(mallory.rpc('support:send', { ticket, text: 'hi' }), 'rpc_error');
  check(intrude.rpcCode === 'forbidden', 'another customer cannot write into alice\'s ticket (rpc_error forbidden)');
  check((await rejects(alice.publish(room, 'message', { text: 'direct' }), 'forbidden')).code === 'forbidden',
    'customers cannot publish into the room directly (publish = roles [agent])');
  check((await rejects(mallory.join(room), 'forbidden')).code === 'forbidden', 'nor join it');

  // 5. Carl comes online on node a: free (mallory's ticket went to ann too).
  // (Its `online` is in the lifecycle stream before anything of node b's
  // end, and the backend reads the stream in order.)
  const carl = await client(nodeA, agentToken('carl'));

  // 6. Node b dies (kill -9): its lease runs out after 1 s, the module
  //    ends ann's connection (node_lost), the backend hears ann offline
  //    and moves her tickets to carl.
  const bPid = env.gatewayPids[1];
  const killedAt = Date.now();
  process.kill(bPid, 'SIGKILL');
  check(true, `node ${env.nodeIds[1]} (pid ${bPid}) killed with SIGKILL`);
  const carlJoined = await membership(carl, 'server_joined', (j) => j.room === room, 10000);
  const tookMs = Date.now() - killedAt;
  check(carlJoined.room === room, `carl gets server_joined for ${room} ${tookMs} ms after the kill`);
  check(tookMs >= 600, 'not before the lease ran out (1 s after the node\'s last renewal)', tookMs);
  const moved = await message(alice, 'assigned', { room, where: (m) => m.data.agent === 'carl' });
  check(moved.data.previous === 'ann' && moved.data.reason === 'node_lost',
    'alice hears: assigned to carl, previous ann, reason node_lost', moved.data);
  const agents = await (await fetch(`${env.BACKEND_URL}/agents`)).json();
  check(same(agents.find((a) => a.agent === 'ann'), { agent: 'ann', online: false, tickets: 0 }), 'the backend has ann offline with no tickets', agents);

  // 7. Carl catches up from the room's history and answers.
  const { messages } = await carl.history(room);
  check(same(messages.filter((m) => m.ev === 'message').map((m) => m.data.text), ['my parcel is late', 'let me check']),
    'carl reads the conversation from history (typing was never stored)', messages.map((m) => m.ev));
  const fromCarl = await carl.rpc('support:send', { ticket, text: 'it ships today' });
  check((await message(alice, 'message', { room, where: (m) => m.data.id === fromCarl.id })).data.from === 'carl',
    'carl\'s answer reaches alice');
  check(!ann.connected, `ann's client has lost its node (state ${ann.state}); her next connection starts without the ticket`);

  // 8. The record: every message once, in order, with its seq.
  const stored = await (await fetch(`${env.BACKEND_URL}/tickets/${ticket}`)).json();
  check(stored.agent === 'carl' && same(stored.messages.map((m) => [m.from, m.text]),
    [['alice', 'my parcel is late'], ['ann', 'let me check'], ['carl', 'it ships today']]),
  'messages.jsonl holds the three messages, the ticket is carl\'s', stored);
  check(stored.messages.every((m, i, a) => i === 0 || m.seq > a[i - 1].seq), 'stored seqs increase');

  // 9. Carl closes the ticket: both are taken out of the room.
  const aliceLeft = membership(alice, 'server_left', (l) => l.room === room);
  check((await carl.rpc('support:close', { ticket })).closed === true, 'carl closes the ticket');
  check((await aliceLeft).room === room, 'alice gets server_left');
});
