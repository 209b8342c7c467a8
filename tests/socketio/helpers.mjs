// What the Socket.IO tests share: the run's environment (written by
// scripts/socketio-test.sh), tokens, connecting with the real
// socket.io-client, awaiting events with a timeout (a guard against hangs,
// never an assertion), and restarting a gateway node.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { io, Manager } from 'socket.io-client';
import msgpackParser from 'socket.io-msgpack-parser';
import { Broker } from '@broker/node';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through scripts/socketio-test.sh`);
  return v;
}
const list = (name) => need(name).split(',');

/** The run: two gateway nodes on one Redis with the module. */
export const env = {
  /** http://127.0.0.1:PORT of node 1 and node 2 (the Socket.IO URL). */
  gateways: list('GATEWAYS'),
  admins: list('GATEWAY_ADMINS'),
  nodeIds: list('NODE_IDS'),
  pidfiles: list('GATEWAY_PIDFILES'),
  bin: need('GATEWAY_BIN'),
  config: need('GATEWAY_CONFIG'),
  redis: need('REDIS_URL'),
  secret: need('JWT_SECRET'),
  logDir: need('LOG_DIR'),
};

/** Every guard's default, in ms: far above what any step takes when things work. */
export const WAIT = 5000;

/**
 * The gateways' heartbeat settings (limits.ping_interval_s and
 * idle_timeout_s of the run's config) and what the Engine.IO handshake
 * must say about them (docs/SOCKETIO.md, "Engine.IO handshake").
 */
export const heartbeat = {
  pingIntervalS: Number(need('SIO_PING_INTERVAL_S')),
  idleTimeoutS: Number(need('SIO_IDLE_TIMEOUT_S')),
};
heartbeat.pingInterval = heartbeat.pingIntervalS * 1000;
heartbeat.pingTimeout = (heartbeat.idleTimeoutS - heartbeat.pingIntervalS) * 1000;

export const parsers = [
  { name: 'default parser', options: {} },
  { name: 'msgpack parser', options: { parser: msgpackParser } },
];

let counter = 0;
/** A name unique within this run (users, rooms). */
export const unique = (prefix) => `${prefix}${process.pid}x${++counter}`;

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** An HS256 JWT for `sub`, valid for `ttlS` seconds (negative: expired), with extra claims. */
export function token(sub, { ttlS = 600, secret = env.secret, ...claims } = {}) {
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url({ sub, exp: Math.floor(Date.now() / 1000) + ttlS, ...claims });
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const open = new Set();

/**
 * A socket.io-client socket for `user` (a new Manager: no multiplexing
 * between tests), not awaited. `node` is 0 or 1; `path` the namespace.
 */
export function client(user, { node = 0, nsp = '', parser = {}, auth, ...options } = {}) {
  const socket = io(env.gateways[node] + nsp, {
    forceNew: true,
    auth: auth === undefined ? { token: token(user) } : auth,
    ...parser,
    ...options,
  });
  open.add(socket);
  return socket;
}

/** A Manager for the node (several namespaces on one connection), closed by closeAll(). */
export function manager(node = 0, options = {}) {
  const m = new Manager(env.gateways[node], { autoConnect: false, ...options });
  const socket = m.socket.bind(m);
  m.socket = (nsp, opts) => {
    const s = socket(nsp, opts);
    open.add(s);
    return s;
  };
  return m;
}

/** `client()` then the `connect` event; rejects on `connect_error`. */
export async function connect(user, options = {}) {
  const socket = client(user, options);
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${user}: no connect within ${WAIT} ms`)), WAIT);
    socket.once('connect', () => { clearTimeout(timer); resolve(); });
    socket.once('connect_error', (err) => { clearTimeout(timer); reject(err); });
  });
  return socket;
}

/** Disconnects every socket made here (after each test). */
export function closeAll() {
  for (const s of open) s.disconnect();
  open.clear();
}

/** The arguments of the next `ev` on `emitter`; rejects after `ms`. */
export function once(emitter, ev, ms = WAIT) {
  return quiet(new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(ev, on);
      reject(new Error(`no ${ev} event within ${ms} ms`));
    }, ms);
    function on(...args) {
      clearTimeout(timer);
      emitter.off(ev, on);
      resolve(args);
    }
    emitter.on(ev, on);
  }));
}

/**
 * `p` itself, marked as handled: a guard that is never awaited because the
 * test failed earlier does not end as an unhandled rejection. Awaiting it
 * still throws.
 */
function quiet(p) {
  p.catch(() => {});
  return p;
}

/**
 * Every `ev` the socket gets from now on: `items` (each the argument list);
 * `until(n)` resolves when there are at least n, `find(pred)` with the
 * first argument list that satisfies `pred`.
 */
export function collect(socket, ev) {
  const items = [];
  const waiters = [];
  const settle = () => {
    for (const w of waiters.slice()) {
      const v = w.check();
      if (v !== undefined) {
        clearTimeout(w.timer);
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(v);
      }
    }
  };
  socket.on(ev, (...args) => {
    items.push(args);
    settle();
  });
  const wait = (check, what, ms) => {
    const v = check();
    if (v !== undefined) return Promise.resolve(v);
    return quiet(new Promise((resolve, reject) => {
      const w = { check, resolve };
      w.timer = setTimeout(() => {
        waiters.splice(waiters.indexOf(w), 1);
        reject(new Error(`${ev}: ${what} not within ${ms} ms; got ${items.length}: ${JSON.stringify(items)}`));
      }, ms);
      waiters.push(w);
    }));
  };
  return {
    items,
    until: (n, ms = WAIT) => wait(() => (items.length >= n ? items : undefined), `${n} events`, ms),
    find: (pred, ms = WAIT) => wait(() => items.find((args) => pred(...args)), 'the one awaited', ms),
  };
}

/** emit with an ack; resolves to the ack's one argument (rejects on the guard's timeout). */
export function call(socket, ev, ...args) {
  return socket.timeout(WAIT).emitWithAck(ev, ...args);
}

/** `broker:join` that must succeed; resolves to the ack. */
export async function join(socket, room, extra = {}) {
  const ack = await call(socket, 'broker:join', { room, ...extra });
  if (ack?.error) throw new Error(`join ${room}: ${JSON.stringify(ack.error)}`);
  return ack;
}

/** A Broker (the Node backend library) on the run's Redis. */
export function backend() {
  return new Broker(env.redis);
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function until(what, pred, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await pred()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/**
 * `signal` (SIGKILL, or SIGTERM: the drain) to gateway node `n` (0 or 1);
 * resolves once the process is gone.
 */
export async function killNode(n, signal = 'SIGKILL') {
  const pid = Number(readFileSync(env.pidfiles[n], 'utf8').trim());
  process.kill(pid, signal);
  // A drain waits up to 5 s for its clients to go (docs/OPERATIONS.md).
  await until(`node ${n + 1} (pid ${pid}) exits after ${signal}`, () => !alive(pid), 15000);
}

/**
 * Starts node `n` again with the same node id, listen and admin addresses;
 * its pid replaces the old one in the pidfile (the script stops it at the
 * end). Resolves once /readyz answers 200.
 */
export async function startNode(n) {
  const fd = openSync(`${env.logDir}/gateway-${n + 1}.log`, 'a');
  const child = spawn(env.bin, ['--config', env.config], {
    env: {
      ...process.env,
      BROKER_LISTEN: new URL(env.gateways[n]).host,
      BROKER_ADMIN_LISTEN: env.admins[n],
      BROKER_REDIS__URL: env.redis,
      BROKER_NODE_ID: env.nodeIds[n],
      BROKER_AUTH__SECRET: env.secret,
      RUST_LOG: process.env.RUST_LOG || 'info',
    },
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  child.unref();
  writeFileSync(env.pidfiles[n], `${child.pid}\n`);
  await until(`restarted node ${n + 1} is ready`, async () => {
    if (child.exitCode !== null) throw new Error(`restarted node ${n + 1} exited with ${child.exitCode}`);
    try {
      const resp = await fetch(`${env.gateways[n]}/readyz`, { signal: AbortSignal.timeout(1000) });
      return resp.ok;
    } catch {
      return false;
    }
  }, 15000);
}

/** Polls `fn` until it returns a truthy value (a guard of `ms`); returns the value. */
export async function eventually(what, fn, ms = WAIT) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
