// Opening Socket.IO connections the way broker-bench opens its own
// (bench/src/scenario/mod.rs): WebSocket transport only, a JWT per user
// in the handshake's `auth`, a bounded number of handshakes in flight,
// spread over the nodes round-robin and over loopback source addresses.

const { io } = require('socket.io-client');
const { createSecretKey } = require('node:crypto');
const jwt = require('jsonwebtoken');
const { Hist, nowUs, sleep } = require('./stats');
const dialect = require('./dialect');

/** An HS256 token for `user`, valid for an hour (bench/src/jwt.rs). The
 * secret goes in as a KeyObject: given a string, jsonwebtoken first tries
 * to parse it as a PEM private key, which costs about 0.3 ms a token. */
const keys = new Map();
function token(secret, user) {
  if (!keys.has(secret)) keys.set(secret, createSecretKey(Buffer.from(secret)));
  return jwt.sign({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, keys.get(secret), { algorithm: 'HS256' });
}

/** Loopback source addresses 127.0.0.2, 127.0.0.3, ... (`count` of them,
 * shifted by `offset`) when every URL is on loopback: each gives about
 * 28,000 ephemeral ports. None (the kernel's choice) otherwise. */
function sources(urls, count, offset = 0) {
  const loopback = urls.every((u) => ['127.0.0.1', 'localhost'].includes(new URL(u).hostname));
  if (!count || !loopback) return [];
  return Array.from({ length: count }, (_, i) => `127.0.0.${2 + offset + i}`);
}

/** Opens one connection as `user` and waits for Socket.IO's `connect`
 * (the server's auth middleware let it in). Resolves `{socket, us}`;
 * rejects with a short description of the failure. */
function open(url, user, { secret, timeoutMs = 10000, localAddress }) {
  return new Promise((resolve, reject) => {
    const started = nowUs();
    const socket = io(url, {
      transports: ['websocket'],
      auth: { token: token(secret, user) },
      reconnection: false,
      forceNew: true,
      timeout: timeoutMs,
      localAddress,
    });
    const fail = (why) => {
      clearTimeout(timer);
      socket.removeAllListeners();
      socket.close();
      reject(new Error(why));
    };
    const timer = setTimeout(() => fail('timeout'), timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('connect_error');
      resolve({ socket, us: nowUs() - started });
    });
    socket.once('connect_error', (err) => fail(err.message || String(err)));
  });
}

/** Does `op` (`join`, `leave`, `pub`, `presence`: payloads `{room}`, the
 * publish's `{room, data, others}`) as the dialect names it (lib/dialect.js),
 * with an ack callback. Resolves the server's answer; a failure as
 * `{error: 'code'}` whichever way the server signals it, or `{error:
 * 'timeout'}` / `{error: 'closed'}`. */
function request(socket, op, payload, timeoutMs = 10000) {
  const d = dialect.current();
  return new Promise((resolve) => {
    if (!socket.connected) return resolve({ error: 'closed' });
    const args = op === 'pub' ? d.pub(payload) : payload;
    socket.timeout(timeoutMs).emit(d.event[op], args, (err, reply) => {
      if (err) return resolve({ error: 'timeout' });
      const error = dialect.ackError(reply);
      resolve(error === null ? reply || {} : { error });
    });
  });
}

/** Opens connection `i` for every `i` in `indices` as `userOf(i)` on
 * `urls[i % urls.length]`, at most `concurrency` at once (mod.rs
 * `open_many`). `progress` gets `opened` and `failed` counts as it goes.
 * Resolves `{conns: [[i, socket]], failures: {kind: n}, elapsedS,
 * handshake: Hist}`. */
async function openMany(indices, { urls, userOf, secret, concurrency, srcs = [], timeoutMs, progress = {} }) {
  const handshake = new Hist();
  const failures = {};
  const conns = [];
  progress.opened = progress.opened || 0;
  progress.failed = progress.failed || 0;
  const started = nowUs();
  let next = 0;
  async function lane() {
    while (next < indices.length) {
      const i = indices[next++];
      // The source address by i / nodes, as broker-bench picks it.
      const localAddress = srcs.length ? srcs[Math.floor(i / urls.length) % srcs.length] : undefined;
      try {
        const c = await open(urls[i % urls.length], userOf(i), { secret, timeoutMs, localAddress });
        handshake.record(c.us);
        conns.push([i, c.socket]);
        progress.opened++;
      } catch (err) {
        failures[err.message] = (failures[err.message] || 0) + 1;
        progress.failed++;
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, indices.length)) }, lane));
  return { conns, failures, elapsedS: (nowUs() - started) / 1e6, handshake };
}

/** Opens connections, calls `setup(i, socket)` on each (handlers before
 * the first join), then joins each to `roomsOf(i)`, `concurrency` at a
 * time (mod.rs `open_and_join`). Resolves the connections in all their
 * rooms, sorted by index; failures (opening or joining) are counted in
 * `failures`. */
async function openAndJoin(indices, opts, roomsOf, setup, failures) {
  const opened = await openMany(indices, opts);
  for (const [kind, n] of Object.entries(opened.failures)) {
    failures[`connect: ${kind}`] = (failures[`connect: ${kind}`] || 0) + n;
  }
  const joined = [];
  let next = 0;
  async function lane() {
    while (next < opened.conns.length) {
      const [i, socket] = opened.conns[next++];
      setup(i, socket);
      let failed = null;
      for (const room of roomsOf(i)) {
        const r = await request(socket, 'join', { room });
        if (r.error) {
          failed = `join: ${r.error}`;
          break;
        }
      }
      if (failed) failures[failed] = (failures[failed] || 0) + 1;
      else joined.push([i, socket]);
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, opened.conns.length)) }, lane));
  joined.sort((a, b) => a[0] - b[0]);
  return joined;
}

/** Watches `socket` for the server ending it (anything but our own
 * close); counts it in `events` and calls `onClose`. Also counts the
 * server's unsolicited events (the dialect's errors and losses). */
function watchClose(socket, events, onClose = () => {}) {
  dialect.current().watch(socket, events);
  socket.on('disconnect', (reason) => {
    if (reason === 'io client disconnect') return;
    events.count(`connection ended by the server: ${reason}`);
    onClose(reason);
  });
}

/** Closes every connection and gives the close frames a moment to leave. */
async function closeAll(sockets) {
  for (const s of sockets) s.close();
  await sleep(100);
}

/** A node's `{rss, conns, cpu_us}` as the dialect reads it (server.js:
 * its GET /rss; the gateway: `node.admin`'s /metrics and `node.pid`'s
 * /proc), or null. */
function nodeStats(url, node) {
  return dialect.current().stats(url, node);
}

module.exports = { token, sources, open, request, openMany, openAndJoin, watchClose, closeAll, nodeStats };
