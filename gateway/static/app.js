// The demo chat page served at GET / by broker-gateway.
//
// It gets a development token for the chosen name from /dev/token, connects
// to the gateway on the same host (or to the one named by ?gw=host:port) and
// shows for each joined room: the history, live messages, who is online (a
// presence request plus live join/leave events) and who is typing
// (ephemeral `typing` events, published with `others` and `volatile`).
//
// It speaks either protocol the gateway serves, chosen on the login form
// (preselected by ?proto=broker|socketio):
//   - broker: the JavaScript client (/broker-client.js) on /ws;
//   - socketio: the unmodified socket.io-client browser bundle
//     (/vendor/socket.io.min.js) on /socket.io/, with the reserved
//     `broker:*` events (docs/SOCKETIO.md).
// Both sit behind one small connection interface (below); the page logic
// does not know which one it has. Chat messages are event `message` in both,
// so users of the two protocols chat in the same rooms.
//
// Safety: text from the network is only ever put into the page with
// textContent / createElement, never as HTML.

import { connect, BrokerError, Emitter } from '/broker-client.js';

const DEFAULT_ROOM = 'chat:lobby';
const MESSAGE_EV = 'message';
const TYPING_EV = 'typing';
const HISTORY_LIMIT = 50;
const REQUEST_TIMEOUT_MS = 8000;
const TYPING_SEND_EVERY_MS = 2500; // the chat namespace has a publish rate
const TYPING_SHOW_MS = 4000;
const ACTIVITY_MAX = 30;
const USER_RE = /^[A-Za-z0-9._@-]{1,100}$/;
const ROOM_RE = /^[A-Za-z0-9_-]{1,64}:[A-Za-z0-9._@-]{1,100}$/;
const GW_RE = /^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$/;
const SOCKETIO_SCRIPT = '/vendor/socket.io.min.js';

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
const gatewayHost = gateway || location.host;
const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
const wsUrl = `${wsScheme}//${gatewayHost}/ws`;

/** The open connection (see "connections" below), or null. */
let client = null;
let me = null;
/** room -> {seen: Map<seq,msg>, epoch, online: Set, typing: Map<user, timer>, unread} */
const rooms = new Map();
let current = null;
let lastTypingSent = 0;

// ---- connections -----------------------------------------------------
//
// brokerConnection() and socketioConnection() return the same interface:
//
//   join(room), leave(room), publish(room, ev, data, {others, volatile}),
//   presence(room) -> {users: [{user}], count}, history(room, {limit}) ->
//   {messages, seq, epoch}: promises that reject with a BrokerError
//   (`code`, `retryMs`); close(); `connected`; `endpoint` (for the status
//   line until the first connect).
//
//   Events: `state` (state, detail) with state connecting | connected |
//   reconnecting | closed; `connect` ({where, reconnected, recovered}) where
//   `recovered` is the Socket.IO session's (undefined for /ws); `disconnect`
//   ({reason}); `token_refused` (a new token is being fetched); `msg`
//   ({room, ev, data, seq, epoch, ts, from?, volatile?}), at most once per
//   seq; `presence` ({room, user, action}); `rejoined` ({room}) after a
//   reconnect; `recovered` ({room, seq}) / `recovery_failed` ({room}): the
//   rejoin did / did not bring every missed message; `token_refreshed`;
//   `error` (BrokerError).

async function fetchToken(user) {
  const query = new URLSearchParams({ user });
  if (gateway) query.set('gw', gateway); // for the test's static server
  const resp = await fetch(`/dev/token?${query}`, { cache: 'no-store' });
  if (!resp.ok) throw new Error(`token request failed: HTTP ${resp.status}`);
  const body = await resp.json();
  if (!body || typeof body.token !== 'string') throw new Error('token request gave no token');
  return body.token;
}

/** Completes a connection: `methods` on the emitter, and `connected` read
 * live from `isConnected`. */
function connection(emitter, isConnected, methods) {
  Object.defineProperty(emitter, 'connected', { get: isConnected });
  return Object.assign(emitter, methods);
}

/** The broker protocol on /ws: a thin layer over broker-client.js, which
 * does the reconnects, rejoins and deduplication itself. */
function brokerConnection(user, firstToken) {
  let initial = firstToken;
  const c = connect(wsUrl, {
    // The first token is the one fetched at login; later ones (after a 4001
    // close or an `expiring` frame) are fetched again.
    getToken: () => {
      if (initial) {
        const t = initial;
        initial = null;
        return t;
      }
      return fetchToken(user);
    },
    requestTimeoutMs: REQUEST_TIMEOUT_MS,
  });
  const conn = new Emitter();
  const forward = (event) => c.on(event, (arg) => conn.emit(event, arg));
  ['msg', 'presence', 'recovered', 'recovery_failed', 'token_refreshed', 'error'].forEach(forward);
  c.on('state', (state) => state === 'closed' && conn.emit('state', 'closed', ''));
  c.on('connect', (info) => {
    conn.emit('state', 'connected', `${info.user} on ${info.node}`);
    conn.emit('connect', { where: info.node, reconnected: info.reconnected });
  });
  c.on('disconnect', (info) => conn.emit('disconnect', { reason: `${info.code}${info.reason ? `: ${info.reason}` : ''}` }));
  // 4001: this node does not accept the token (expired, or a restarted node
  // with a new dev-token secret); the client fetches a new one.
  c.on('connect_error', (info) => info.code === 4001 && conn.emit('token_refused'));
  c.on('reconnecting', (info) => {
    conn.emit('state', 'reconnecting', `attempt ${info.attempt}, in ${(info.delayMs / 1000).toFixed(1)} s`);
  });
  return connection(conn, () => c.connected, {
    endpoint: wsUrl,
    async join(room) {
      const sub = await c.join(room);
      // Every later join ack (after a reconnect) is a rejoin.
      sub.on('joined', () => conn.emit('rejoined', { room }));
    },
    leave: (room) => c.leave(room),
    publish: (room, ev, data, opts) => c.publish(room, ev, data, opts),
    presence: (room) => c.presence(room),
    history: (room, opts) => c.history(room, opts),
    close: () => c.close(),
  });
}

/** Loads socket.io-client's browser bundle (it sets `window.io`) once. */
let socketioLoading = null;
function loadSocketIo() {
  socketioLoading ||= new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = SOCKETIO_SCRIPT;
    script.onload = () => resolve(window.io);
    script.onerror = () => {
      script.remove();
      socketioLoading = null;
      reject(new Error(`cannot load ${SOCKETIO_SCRIPT}`));
    };
    document.head.append(script);
  });
  return socketioLoading;
}

/** Socket.IO on /socket.io/ with socket.io-client's default options
 * (long-polling, then the upgrade to WebSocket). What broker-client.js does
 * for /ws is done here with the reserved events: each request is an emit
 * with an ack, rooms are joined again with `since` after every reconnect
 * (Socket.IO's own session recovery covers only the rooms its offset
 * names), and a refused token is replaced before connecting again. */
async function socketioConnection(user, firstToken) {
  const io = await loadSocketIo();
  let token = firstToken;
  const socket = io(location.origin, {
    auth: (cb) => cb({ token }),
    // The test's static server forwards /socket.io/ to this gateway.
    query: gateway ? { gw: gateway } : {},
  });
  const conn = new Emitter();
  /** room -> {seq, epoch} of the last message seen there, for rejoins. */
  const joined = new Map();
  /** Settles when the connection is up and its rooms joined again. */
  let ready = null;
  let readyNow = null;
  const resetReady = () => {
    ready = new Promise((resolve) => {
      readyNow = resolve;
    });
  };
  resetReady();
  let everConnected = false;
  let refusals = 0; // CONNECT refusals since the last connect
  let closed = false;

  const transport = () => (socket.io.engine && socket.io.engine.transport ? socket.io.engine.transport.name : '?');
  const detail = () => `${user} on ${gatewayHost} via socket.io (${transport()})`;

  /** Emits a reserved event with an ack; a `{error}` answer rejects. */
  async function ask(event, payload, { waitReady = true } = {}) {
    const deadline = Date.now() + REQUEST_TIMEOUT_MS;
    if (waitReady) {
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new BrokerError('timeout', `${event}: not connected`)), REQUEST_TIMEOUT_MS);
      });
      try {
        await Promise.race([ready, late]);
      } finally {
        clearTimeout(timer);
      }
    }
    let answer;
    try {
      answer = await socket.timeout(Math.max(1, deadline - Date.now())).emitWithAck(event, payload);
    } catch {
      throw new BrokerError('timeout', `${event}: no answer within ${REQUEST_TIMEOUT_MS} ms`);
    }
    if (answer && typeof answer === 'object' && answer.error) {
      const { code, msg, retry_ms: retryMs } = answer.error;
      throw new BrokerError(code || 'internal', msg || code || 'error', { retryMs });
    }
    return answer;
  }

  /** Room messages arrive as `socket.on(ev, (data, meta, offset) => ...)`. */
  function onRoomEvent(ev, data, meta) {
    if (!meta || typeof meta.room !== 'string') return;
    const pos = joined.get(meta.room);
    if (pos && meta.seq > 0) {
      if (pos.epoch === meta.epoch && meta.seq <= pos.seq) return; // seen (replayed twice)
      pos.seq = meta.seq;
      pos.epoch = meta.epoch;
    }
    const msg = { room: meta.room, ev, data, seq: meta.seq, epoch: meta.epoch, ts: meta.ts };
    if (meta.from) msg.from = meta.from;
    if (meta.volatile) msg.volatile = true;
    conn.emit('msg', msg);
  }
  for (const ev of [MESSAGE_EV, TYPING_EV]) socket.on(ev, (data, meta) => onRoomEvent(ev, data, meta));

  /** After a reconnect: every room again, from its last position. */
  async function rejoin(room) {
    const since = joined.get(room);
    try {
      const ack = await ask('broker:join', { room, since }, { waitReady: false });
      const pos = joined.get(room);
      if (!pos) return; // left meanwhile
      if (pos.epoch !== ack.epoch || ack.seq > pos.seq) Object.assign(pos, { seq: ack.seq, epoch: ack.epoch });
      conn.emit('rejoined', { room });
      if (ack.recovered) conn.emit('recovered', { room, seq: ack.seq });
      else conn.emit('recovery_failed', { room });
    } catch (err) {
      conn.emit('error', err);
    }
  }

  socket.on('connect', async () => {
    const reconnected = everConnected;
    everConnected = true;
    refusals = 0;
    conn.emit('state', 'connected', detail());
    conn.emit('connect', { where: gatewayHost, reconnected, recovered: Boolean(socket.recovered) });
    await Promise.all([...joined.keys()].map(rejoin));
    if (socket.connected) readyNow();
  });
  socket.on('disconnect', (reason) => {
    resetReady();
    conn.emit('disconnect', { reason });
    // `io server disconnect` (a kick) and close() do not reconnect.
    if (socket.active) conn.emit('state', 'reconnecting', reason);
    else conn.emit('state', 'closed', reason);
  });
  socket.io.on('reconnect_attempt', (attempt) => conn.emit('state', 'reconnecting', `attempt ${attempt}`));
  // The transport in the status line: polling first, then websocket.
  socket.io.on('open', () => {
    socket.io.engine.on('upgrade', () => socket.connected && conn.emit('state', 'connected', detail()));
  });
  socket.on('connect_error', async (err) => {
    if (socket.active || closed) return; // the transport failed: socket.io-client retries by itself
    // The server refused the CONNECT (`err.data.code`): socket.io-client
    // leaves it to the app. A refused token (expired, or a restarted node
    // with a new dev-token secret) is replaced at once the first time;
    // every refusal in a row waits twice as long as the one before.
    refusals += 1;
    const code = (err.data && err.data.code) || 'connect_error';
    if (code === 'unauthorized') conn.emit('token_refused');
    else conn.emit('error', new BrokerError(code, err.message));
    conn.emit('state', 'reconnecting', `refused: ${code}`);
    const delayMs = code === 'unauthorized' && refusals === 1 ? 0 : Math.min(500 * 2 ** refusals, 10000);
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    if (code === 'unauthorized') token = await fetchToken(user).catch(() => token);
    if (!closed) socket.connect();
  });

  socket.on('broker:presence-event', (ev) => conn.emit('presence', ev));
  socket.on('broker:error', (e) => conn.emit('error', new BrokerError(e.code || 'internal', e.msg || e.code, { retryMs: e.retry_ms })));
  // Messages of the room were lost on the server's side: reload its state.
  socket.on('broker:missed', (ev) => conn.emit('recovery_failed', { room: ev.room }));
  socket.on('broker:expiring', async () => {
    try {
      token = await fetchToken(user);
      await ask('broker:refresh', { token });
      conn.emit('token_refreshed');
    } catch (err) {
      conn.emit('error', err instanceof BrokerError ? err : new BrokerError('token', err.message));
    }
  });

  return connection(conn, () => socket.connected, {
    endpoint: `${gatewayHost}/socket.io/`,
    async join(room) {
      const ack = await ask('broker:join', { room });
      joined.set(room, { seq: ack.seq, epoch: ack.epoch });
    },
    leave(room) {
      joined.delete(room);
      return ask('broker:leave', { room });
    },
    publish(room, ev, data, opts = {}) {
      const payload = { room, ev, data };
      if (opts.others) payload.others = true;
      if (opts.volatile) payload.volatile = true;
      return ask('broker:publish', payload);
    },
    presence: (room) => ask('broker:presence', { room }),
    history: (room, opts = {}) => ask('broker:history', { room, limit: opts.limit }),
    close() {
      closed = true;
      socket.disconnect();
    },
  });
}

// ---- page state ------------------------------------------------------

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

async function login(user, proto) {
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
  let conn;
  try {
    conn = proto === 'socketio' ? await socketioConnection(user, first) : brokerConnection(user, first);
  } catch (err) {
    $('login-error').textContent = err.message;
    return;
  }
  me = user;
  client = conn;
  window.brokerDemo = { client, rooms, proto };
  document.documentElement.dataset.proto = proto;
  setState('connecting', conn.endpoint);
  wireConnection(conn);
  $('login').hidden = true;
  $('chat').hidden = false;
  $('logout').hidden = false;
  joinRoom(DEFAULT_ROOM);
}

function wireConnection(c) {
  // Events of a connection closed by logout are not this page's any more.
  const on = (event, fn) => c.on(event, (...args) => client === c && fn(...args));
  on('state', setState);
  on('connect', (info) => {
    const session = info.recovered === undefined ? '' : info.recovered ? ' (session recovered)' : ' (new session)';
    activity(info.reconnected ? `reconnected to ${info.where}${session}` : `connected to ${info.where} as ${me}`, 'ok');
  });
  on('disconnect', (info) => activity(`disconnected (${info.reason})`, 'warn'));
  on('token_refused', () => activity('token refused: getting a new one', 'warn'));
  on('msg', (msg) => {
    const room = rooms.get(msg.room);
    if (room) onMessage(msg.room, room, msg);
  });
  on('presence', (ev) => {
    const room = rooms.get(ev.room);
    if (room) onPresence(ev.room, room, ev);
  });
  // After every rejoin the online list may be stale: ask again.
  on('rejoined', ({ room }) => rooms.has(room) && refreshPresence(room, rooms.get(room)));
  on('recovered', (info) => activity(`${info.room}: caught up to #${info.seq}`, 'ok'));
  on('recovery_failed', (info) => {
    activity(`${info.room}: could not replay everything missed; history reloaded`, 'warn');
    const room = rooms.get(info.room);
    if (room) loadHistory(info.room, room);
  });
  on('token_refreshed', () => activity('token refreshed', 'ok'));
  on('error', (err) => activity(`error: ${err.code}: ${err.message}`, 'err'));
}

function logout() {
  const c = client;
  client = null;
  if (c) c.close();
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
  const room = { seen: new Map(), epoch: null, online: new Set(), typing: new Map(), unread: 0 };
  rooms.set(name, room);
  renderRoomList();
  show(name);
  try {
    await client.join(name);
  } catch (err) {
    if (rooms.get(name) !== room) return;
    rooms.delete(name);
    activity(`cannot join ${name}: ${err.code}`, 'err');
    if (current === name) current = null;
    renderRoomList();
    show(current || [...rooms.keys()][0] || null);
    return;
  }
  if (rooms.get(name) !== room) return; // left meanwhile
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
      if (msg.ev === MESSAGE_EV) room.seen.set(msg.seq, msg);
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
  if (msg.ev === TYPING_EV) {
    if (sender && sender !== me && Date.now() - msg.ts < TYPING_SHOW_MS) setTyping(name, room, sender);
    return;
  }
  if (msg.ev !== MESSAGE_EV) return;
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
    await client.publish(name, MESSAGE_EV, { text });
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
  // Ephemeral (volatile: not kept in history) and not sent back to this
  // connection (others).
  client.publish(current, TYPING_EV, {}, { others: true, volatile: true }).catch(() => {});
}

$('login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  login($('user-name').value.trim(), $('proto').value);
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
if (params.get('proto') === 'socketio') $('proto').value = 'socketio';
document.documentElement.dataset.ready = '1';
