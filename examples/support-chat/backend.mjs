// support-chat backend: tickets, agents and the conversation's record.
//
// - Lifecycle events (broker.events, group "support"): each `connect` of
//   a customer opens a ticket (or finds their open one) and puts the
//   customer and a free agent into support:<ticket> (userJoin); an agent's
//   `connect` puts that connection into the agent's tickets, their
//   `online` takes waiting tickets; an agent's `offline` — the last
//   connection gone, including by node loss — moves their tickets to
//   another free agent (or back to the queue).
// - rpc support:send {ticket, text}: from the ticket's customer or agent;
//   appended to DATA_DIR/messages.jsonl, published to the room as
//   `message`, answered {id, seq}.
// - rpc support:close {ticket}: the agent closes it; both are taken out.
// - GET /tickets/:id: the ticket and its stored messages.
//
// Agents are the users listed in AGENTS (default "ann,carl"); every other
// user is a customer. An agent takes at most MAX_TICKETS tickets at once.

import path from 'node:path';
import { Broker, EVENTS_STREAM } from '@broker/node';
import { env, log, httpServer, jsonLines, ensureGroup, userJoinAll, onShutdown } from '../lib/backend.mjs';

const AGENTS = new Set(env('AGENTS', 'ann,carl').split(','));
const MAX_TICKETS = Number(env('MAX_TICKETS', '3'));
const GROUP = 'support';

const broker = new Broker(env('REDIS_URL'));
const messages = jsonLines(path.join(env('DATA_DIR'), 'messages.jsonl'));
const ticketLog = jsonLines(path.join(env('DATA_DIR'), 'tickets.jsonl'));

/** ticket id -> {id, customer, agent|null, open} (rebuilt from tickets.jsonl) */
const tickets = new Map();
for (const t of ticketLog.readAll()) tickets.set(t.id, t);
let nextTicket = tickets.size + 1;
const online = new Map(); // agent -> ms since online (the ones free to take tickets)
const queue = []; // ticket ids waiting for an agent
const lastReason = new Map(); // conn -> the reason of its disconnect (offline entries carry none)

const room = (t) => `support:${t.id}`;
const save = (t) => {
  tickets.set(t.id, t);
  ticketLog.append(t);
};
const load = (agent) => [...tickets.values()].filter((t) => t.open && t.agent === agent).length;

function freeAgent(except) {
  const free = [...online.keys()].filter((a) => a !== except && load(a) < MAX_TICKETS);
  free.sort((a, b) => load(a) - load(b) || online.get(a) - online.get(b));
  return free[0] ?? null;
}

/** Gives ticket `t` to a free agent (or queues it); tells the room. */
async function assign(t, { previous = null, reason = 'new' } = {}) {
  const agent = freeAgent(previous);
  t.agent = agent;
  save(t);
  if (!agent) {
    if (!queue.includes(t.id)) queue.push(t.id);
    await broker.publish(room(t), 'waiting', { ticket: t.id, previous, reason });
    log(`ticket ${t.id}: no free agent, waiting (${reason})`);
    return;
  }
  await userJoinAll(broker, agent, room(t));
  await broker.publish(room(t), 'assigned', { ticket: t.id, agent, previous, reason });
  log(`ticket ${t.id} (${t.customer}) -> agent ${agent}${previous ? ` (was ${previous}: ${reason})` : ''}`);
}

async function customerConnected(customer) {
  let t = [...tickets.values()].find((x) => x.open && x.customer === customer);
  if (!t) {
    t = { id: `${customer}-${nextTicket++}`, customer, agent: null, open: true };
    save(t);
    log(`ticket ${t.id} opened for ${customer}`);
  }
  // Memberships decided by the backend last for the connections they
  // reached: each new connection of the customer is put in (userJoin
  // takes every live connection of the user; those already in stay).
  // userJoinAll also makes sure the connection that just came is in: see
  // lib/backend.mjs for the race it covers.
  await userJoinAll(broker, customer, room(t));
  if (t.agent && online.has(t.agent)) await userJoinAll(broker, t.agent, room(t));
  else await assign(t);
}

/** A new connection of an agent: into the agent's tickets. */
async function agentConnected(agent) {
  for (const t of tickets.values()) if (t.open && t.agent === agent) await userJoinAll(broker, agent, room(t));
}

/** An agent's first connection: free to take tickets, waiting ones first. */
async function agentOnline(agent, ts) {
  online.set(agent, ts);
  while (queue.length && load(agent) < MAX_TICKETS) {
    const t = tickets.get(queue.shift());
    if (t?.open) await assign(t, { reason: 'agent_available' });
  }
}

async function agentOffline(agent, reason) {
  online.delete(agent);
  for (const t of tickets.values()) {
    if (t.open && t.agent === agent) await assign(t, { previous: agent, reason });
  }
}

async function handle(ev) {
  if (ev.type === 'disconnect') {
    lastReason.set(ev.conn, ev.reason);
    return;
  }
  const reason = ev.type === 'offline' ? lastReason.get(ev.conn) ?? 'unknown' : undefined;
  if (ev.type === 'offline') lastReason.delete(ev.conn);
  log(`event ${ev.type} ${ev.user} on ${ev.node}${reason ? ` (${reason})` : ''}`);
  if (AGENTS.has(ev.user)) {
    if (ev.type === 'connect') await agentConnected(ev.user);
    else if (ev.type === 'online') await agentOnline(ev.user, ev.ts);
    else if (ev.type === 'offline') await agentOffline(ev.user, reason);
  } else if (ev.type === 'connect') {
    // Every connection of the customer (a second tab too), not only the first.
    await customerConnected(ev.user);
  }
}

// --- RPC --------------------------------------------------------------
function ticketFor(data, ctx) {
  const t = tickets.get(String(data?.ticket));
  if (!t || !t.open) throw Object.assign(new Error(`no open ticket ${data?.ticket}`), { code: 'not_found' });
  if (ctx.user !== t.customer && ctx.user !== t.agent) {
    throw Object.assign(new Error('not your ticket'), { code: 'forbidden' });
  }
  return t;
}

let msgCounter = messages.readAll().length;
broker.rpc.handle('support:send', async (data, ctx) => {
  const t = ticketFor(data, ctx);
  const text = String(data?.text ?? '').slice(0, 4000);
  if (!text) throw Object.assign(new Error('text is empty'), { code: 'bad_request' });
  const id = `m-${++msgCounter}`;
  const msg = { id, ticket: t.id, from: ctx.user, role: ctx.user === t.agent ? 'agent' : 'customer', text, at: Date.now() };
  const seq = await broker.publish(room(t), 'message', msg);
  messages.append({ ...msg, seq });
  return { id, seq };
});

broker.rpc.handle('support:close', async (data, ctx) => {
  const t = ticketFor(data, ctx);
  if (ctx.user !== t.agent) throw Object.assign(new Error('only the agent closes a ticket'), { code: 'forbidden' });
  t.open = false;
  save(t);
  await broker.publish(room(t), 'closed', { ticket: t.id, by: ctx.user });
  await broker.userLeave(t.customer, room(t));
  await broker.userLeave(t.agent, room(t));
  log(`ticket ${t.id} closed by ${ctx.user}`);
  return { ticket: t.id, closed: true };
});

// --- start ------------------------------------------------------------
const http = httpServer({
  'GET /tickets/:id': async (req, raw, url, { id }) => {
    const t = tickets.get(id);
    if (!t) return [404, { error: 'no such ticket' }];
    return [200, { ...t, messages: messages.readAll().filter((m) => m.ticket === id) }];
  },
  'GET /agents': async () => [200, [...AGENTS].map((a) => ({ agent: a, online: online.has(a), tickets: load(a) }))],
});

await ensureGroup(broker, EVENTS_STREAM, GROUP);
// Agents already online when this process starts (their `online` came before).
for (const a of AGENTS) if ((await broker.presence(a)).online) online.set(a, Date.now());
await broker.rpc.start({ group: GROUP, consumer: 'backend-1' });
const stop = new AbortController();
const loop = (async () => {
  for await (const ev of broker.events({ group: GROUP, consumer: 'backend-1', types: ['connect', 'disconnect', 'online', 'offline'], signal: stop.signal, blockMs: 1000 })) {
    try {
      await handle(ev);
    } catch (err) {
      log(`event ${ev.type} ${ev.user}: ${err.message}`); // acknowledged anyway; logged
    }
  }
})();

onShutdown(async () => {
  stop.abort();
  http.server.close();
  await broker.rpc.stop();
  await loop.catch(() => {});
  await broker.close();
});
http.ready();
