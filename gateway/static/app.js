// The demo chat page served at GET / by broker-gateway.
//
// It gets a development token for the chosen name from /dev/token, connects
// with the JavaScript client (/broker-client.js) to /ws on the same host (or
// to the gateway named by ?gw=host:port), and shows for each joined room:
// the history, live messages, who is online (a presence request plus live
// join/leave events) and who is typing (ephemeral `typing` events published
// with `others: true`).
//
// Safety: text from the network is only ever put into the page with
// textContent / createElement, never as HTML.

import { connect } from '/broker-client.js';

const DEFAULT_ROOM = 'chat:lobby';
const HISTORY_LIMIT = 50;
const TYPING_SEND_EVERY_MS = 2500; // the chat namespace has a publish rate
const TYPING_SHOW_MS = 4000;
const ACTIVITY_MAX = 30;
const USER_RE = /^[A-Za-z0-9._@-]{1,100}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}:[A-Za-z0-9._@-]{1,100}$/;
const GW_RE = /^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$/;

const $ = (id) => document.getElementById(id);

/** createElement with a class and text; never parses HTML. */
function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const params = new URLSearchParams(location.search);
const gwParam = params.get('gw');
const gateway = gwParam && GW_RE.test(gwParam) ? gwParam : null;
const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const wsUrl = `${wsScheme}//${gateway || location.host}/ws`;

let client = null;
let me = null;
/** room -> {sub, seen: Map<seq,msg>, epoch, online: Set, typing: Map<user, timer>, unread} */
const rooms = new Map();
let current = null;
let lastTypingSent = 0;

// ---- connection ------------------------------------------------------

async function fetchToken(user) {
  const query = new URLSearchParams({ user });
  if (gateway) query.set('gw', gateway); // for the test's static server
  const resp = await fetch(`/dev/token?${query}`, { cache: 'no-store' });
  if (!resp.ok) throw new Error(`token request failed: HTTP ${resp.status}`);
  const body = await resp.json();
  if (!body || typeof body.token !== 'string') throw new Error('token request gave no token');
  return body.token;
}

function setState(state, detail) {
  const badge = $('conn-state');
  badge.dataset.state = state;
  badge.textContent = state;
  $('conn-detail').textContent = detail || '';
}

function activity(text, kind) {
  const list = $('activity');
  const item = el('li', kind || '', `${new Date().toLocaleTimeString()} ${text}`);
  list.prepend(item);
  while (list.children.length > ACTIVITY_MAX) list.lastElementChild.remove();
}

async function login(user) {
  $('login-error').textContent = '';
  if (!USER_RE.test(user)) {
    $('login-error').textContent = 'Use 1-100 letters, digits or . _ @ -';
    return;
  }
  // Fail early with a readable message when tokens are not available.
  let first;
  try {
    first = await fetchToken(user);
  } catch (err) {
    $('login-error').textContent = `${err.message} (is auth.dev_tokens on?)`;
    return;
  }
  me = user;
  let initial = first;
  client = connect(wsUrl, {
    // The first token is the one fetched above; later ones (after a 4001
    // close or an `expiring` frame) are fetched again.
    getToken: () => {
      if (initial) {
        const t = initial;
        initial = null;
        return t;
      }
      return fetchToken(user);
    },
    requestTimeoutMs: 8000,
  });
  window.brokerDemo = { client, rooms };
  wireClient(client);
  $('login').hidden = true;
  $('chat').hidden = false;
  $('logout').hidden = false;
  joinRoom(DEFAULT_ROOM);
}

function wireClient(c) {
  setState(c.state, wsUrl);
  c.on('state', (state) => {
    if (state === 'connecting') setState('connecting', wsUrl);
    else if (state === 'closed') setState('closed', '');
  });
  c.on('connect', (info) => {
    setState('connected', `${info.user} on ${info.node}`);
    activity(info.reconnected ? `reconnected to ${info.node}` : `connected to ${info.node} as ${info.user}`, 'ok');
  });
  c.on('disconnect', (info) => {
    activity(`disconnected (${info.code}${info.reason ? `: ${info.reason}` : ''})`, 'warn');
  });
  c.on('connect_error', (info) => {
    // 4001: this node does not accept the token (expired, or a restarted
    // node with a new dev-token secret); the client fetches a new one.
    if (info.code === 4001) activity('token refused: getting a new one', 'warn');
  });
  c.on('reconnecting', (info) => {
    setState('reconnecting', `attempt ${info.attempt}, in ${(info.delayMs / 1000).toFixed(1)} s`);
  });
  c.on('recovered', (info) => activity(`${info.room}: caught up to #${info.seq}`, 'ok'));
  c.on('recovery_failed', (info) => {
    activity(`${info.room}: could not replay everything missed; history reloaded`, 'warn');
    const room = rooms.get(info.room);
    if (room) loadHistory(info.room, room);
  });
  c.on('token_refreshed', () => activity('token refreshed', 'ok'));
  c.on('error', (err) => activity(`error: ${err.code}: ${err.message}`, 'err'));
}

function logout() {
  if (client) client.close();
  client = null;
  for (const room of rooms.values()) for (const t of room.typing.values()) clearTimeout(t);
  rooms.clear();
  current = null;
  $('room-list').replaceChildren();
  $('log').replaceChildren();
  $('online').replaceChildren();
  $('activity').replaceChildren();
  $('typing').textContent = '';
  $('chat').hidden = true;
  $('login').hidden = false;
  $('logout').hidden = true;
  setState('idle', '');
  $('conn-state').textContent = 'not connected';
}

// ---- rooms -----------------------------------------------------------

async function joinRoom(name) {
  if (!client || !ROOM_RE.test(name)) return;
  if (rooms.has(name)) {
    show(name);
    return;
  }
  const room = { sub: null, seen: new Map(), epoch: null, online: new Set(), typing: new Map(), unread: 0 };
  rooms.set(name, room);
  renderRoomList();
  show(name);
  let sub;
  try {
    sub = await client.join(name);
  } catch (err) {
    rooms.delete(name);
    activity(`cannot join ${name}: ${err.code}`, 'err');
    if (current === name) current = null;
    renderRoomList();
    show(current || [...rooms.keys()][0] || null);
    return;
  }
  if (rooms.get(name) !== room) return; // left meanwhile
  room.sub = sub;
  sub.on('msg', (msg) => onMessage(name, room, msg));
  sub.on('presence', (ev) => onPresence(name, room, ev));
  // After every (re)join the online list may be stale: ask again.
  sub.on('joined', () => refreshPresence(name, room));
  activity(`joined ${name}`, 'ok');
  await Promise.all([loadHistory(name, room), refreshPresence(name, room)]);
}

async function leaveRoom(name) {
  const room = rooms.get(name);
  if (!room) return;
  rooms.delete(name);
  for (const t of room.typing.values()) clearTimeout(t);
  if (current === name) current = null;
  renderRoomList();
  show([...rooms.keys()][0] || null);
  try {
    await client.leave(name);
    activity(`left ${name}`);
  } catch (err) {
    activity(`leave ${name}: ${err.code}`, 'err');
  }
}

async function loadHistory(name, room) {
  try {
    const hist = await client.history(name, { limit: HISTORY_LIMIT });
    if (hist.epoch !== room.epoch) room.seen.clear();
    room.epoch = hist.epoch;
    for (const msg of hist.messages) {
      if (msg.ev === 'message') room.seen.set(msg.seq, msg);
    }
    if (current === name) renderLog();
  } catch (err) {
    activity(`history of ${name}: ${err.code}`, 'err');
  }
}

async function refreshPresence(name, room) {
  try {
    const result = await client.presence(name);
    room.online = new Set(result.users.map((u) => u.user));
    if (current === name) renderOnline();
  } catch (err) {
    activity(`presence of ${name}: ${err.code}`, 'err');
  }
}

function onMessage(name, room, msg) {
  const sender = msg.from ? msg.from.user : null;
  if (msg.ev === 'typing') {
    if (sender && sender !== me && Date.now() - msg.ts < TYPING_SHOW_MS) setTyping(name, room, sender);
    return;
  }
  if (msg.ev !== 'message') return;
  if (msg.epoch !== room.epoch) {
    room.seen.clear();
    room.epoch = msg.epoch;
  }
  room.seen.set(msg.seq, msg);
  if (sender) clearTyping(name, room, sender);
  if (current === name) appendMessage(msg);
  else {
    room.unread += 1;
    renderRoomList();
  }
}

function onPresence(name, room, ev) {
  if (ev.action === 'join') room.online.add(ev.user);
  else if (ev.action === 'leave') {
    room.online.delete(ev.user);
    clearTyping(name, room, ev.user);
  }
  if (current === name) renderOnline();
}

function setTyping(name, room, user) {
  clearTimeout(room.typing.get(user));
  room.typing.set(user, setTimeout(() => clearTyping(name, room, user), TYPING_SHOW_MS));
  if (current === name) renderTyping();
}

function clearTyping(name, room, user) {
  if (!room.typing.has(user)) return;
  clearTimeout(room.typing.get(user));
  room.typing.delete(user);
  if (current === name) renderTyping();
}

// ---- rendering -------------------------------------------------------

function show(name) {
  current = name;
  const room = name ? rooms.get(name) : null;
  if (room) room.unread = 0;
  $('room-title').textContent = name || 'no room';
  $('leave-room').disabled = !room;
  $('message').disabled = !room;
  $('send').disabled = !room;
  renderRoomList();
  renderLog();
  renderOnline();
  renderTyping();
}

function renderRoomList() {
  const list = $('room-list');
  list.replaceChildren();
  for (const [name, room] of rooms) {
    const item = el('li', name === current ? 'active' : '');
    const button = el('button', 'room-link', name);
    button.type = 'button';
    button.dataset.room = name;
    button.addEventListener('click', () => show(name));
    item.append(button);
    if (room.unread > 0) item.append(el('span', 'unread', room.unread));
    list.append(item);
  }
}

function messageText(data) {
  if (data && typeof data === 'object' && typeof data.text === 'string') return data.text;
  try {
    return JSON.stringify(data);
  } catch {
    return String(data);
  }
}

function messageItem(msg) {
  const sender = msg.from ? msg.from.user : 'server';
  const item = el('li', sender === me ? 'msg mine' : 'msg');
  item.dataset.seq = String(msg.seq);
  const time = el('time', 'time', new Date(msg.ts).toLocaleTimeString());
  time.dateTime = new Date(msg.ts).toISOString();
  item.append(time, el('span', 'who', sender), el('span', 'text', messageText(msg.data)));
  return item;
}

function renderLog() {
  const log = $('log');
  log.replaceChildren();
  const room = current ? rooms.get(current) : null;
  if (!room) return;
  const msgs = [...room.seen.values()].sort((a, b) => a.seq - b.seq);
  for (const msg of msgs) log.append(messageItem(msg));
  log.scrollTop = log.scrollHeight;
}

function appendMessage(msg) {
  const log = $('log');
  const last = log.lastElementChild;
  if (last && Number(last.dataset.seq) > msg.seq) {
    renderLog(); // out of order (history arrived late): redraw sorted
    return;
  }
  log.append(messageItem(msg));
  log.scrollTop = log.scrollHeight;
}

function renderOnline() {
  const list = $('online');
  list.replaceChildren();
  const room = current ? rooms.get(current) : null;
  const users = room ? [...room.online].sort() : [];
  for (const user of users) {
    const item = el('li', user === me ? 'me' : '', user);
    item.dataset.user = user;
    list.append(item);
  }
  $('online-count').textContent = String(users.length);
}

function renderTyping() {
  const room = current ? rooms.get(current) : null;
  const users = room ? [...room.typing.keys()].sort() : [];
  const line = $('typing');
  if (users.length === 0) line.textContent = '';
  else if (users.length === 1) line.textContent = `${users[0]} is typing…`;
  else line.textContent = `${users.join(', ')} are typing…`;
  line.dataset.users = users.join(',');
}

// ---- input -----------------------------------------------------------

async function send(text) {
  $('send-error').textContent = '';
  const name = current;
  if (!client || !name || !text) return;
  try {
    await client.publish(name, 'message', { text });
    lastTypingSent = 0;
  } catch (err) {
    const wait = err.retryMs ? ` (retry in ${Math.ceil(err.retryMs / 1000)} s)` : '';
    $('send-error').textContent = `not sent: ${err.code}${wait}`;
    $('message').value = $('message').value || text;
  }
}

function typing() {
  const now = Date.now();
  if (!client || !client.connected || !current || now - lastTypingSent < TYPING_SEND_EVERY_MS) return;
  lastTypingSent = now;
  // Ephemeral: not shown in the log; others: true skips this connection.
  client.publish(current, 'typing', {}, { others: true }).catch(() => {});
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  login($('user-name').value.trim());
});
$('logout').addEventListener('click', logout);
$('join-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const name = $('join-room').value.trim();
  $('join-room').value = '';
  joinRoom(name);
});
$('leave-room').addEventListener('click', () => current && leaveRoom(current));
$('send-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const input = $('message');
  const text = input.value.trim();
  input.value = '';
  send(text);
});
$('message').addEventListener('input', typing);

const presetUser = params.get('user');
if (presetUser && USER_RE.test(presetUser)) $('user-name').value = presetUser;
document.documentElement.dataset.ready = '1';
