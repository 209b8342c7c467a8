// Shared by the examples' backends: settings from the environment, a small
// HTTP server with /healthz, and the consumer groups created up front.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

/** A setting from the environment (scripts/example.sh sets them all). */
export function env(name, fallback) {
  const v = process.env[name];
  if (v == null || v === '') {
    if (fallback !== undefined) return fallback;
    throw new Error(`${name} is not set (start the example with scripts/example.sh)`);
  }
  return v;
}

export function log(...args) {
  console.log(new Date().toISOString().slice(11, 23), ...args);
}

/**
 * Creates a consumer group on `stream` at `$` unless it exists. `events()`
 * creates its group on the first read, after the loop has started; doing
 * it here first means the backend reports ready only once no event can
 * slip by.
 */
export async function ensureGroup(broker, stream, group) {
  try {
    await broker.command('XGROUP', ['CREATE', stream, group, '$', 'MKSTREAM'], { key: stream });
  } catch (err) {
    if (!String(err.message).startsWith('BUSYGROUP')) throw err;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * `broker.userJoin(user, room)`, then checks with `presence` that every
 * live connection of the user is in the room, and asks again when one is
 * not (within about `ms`).
 *
 * Why: a connection's `connect` / `online` lifecycle entries are written
 * when the module registers it, a moment before its gateway node has it
 * in its own table; a USER.JOIN sent in reaction to those events can
 * reach the node in between, and the node then skips that connection
 * without telling anyone. Asking again once it is there fixes that.
 * Resolves to the connections told by the last USER.JOIN.
 */
export async function userJoinAll(broker, user, room, { ms = 2000, everyMs = 50 } = {}) {
  let told = await broker.userJoin(user, room);
  const end = Date.now() + ms;
  let asked = Date.now();
  while (Date.now() < end) {
    const { conns } = await broker.presence(user);
    const missing = conns.filter((c) => !c.rooms.includes(room));
    if (missing.length === 0) return told;
    await sleep(everyMs);
    if (Date.now() - asked >= 4 * everyMs) {
      // Still not in after a while: the node had not seen it yet.
      log(`userJoin ${user} ${room}: ${missing.map((c) => c.conn).join(', ')} not in (told ${told}); asking again`);
      told = await broker.userJoin(user, room);
      asked = Date.now();
    }
  }
  log(`userJoin ${user} ${room}: some connections are still not in after ${ms} ms`);
  return told;
}

/** The route of `routes` for `method` + `pathname`, with its `:params`. */
function route(routes, method, pathname) {
  const parts = pathname.split('/');
  for (const [key, fn] of Object.entries(routes)) {
    const [m, pattern] = key.split(' ');
    const want = pattern.split('/');
    if (m !== method || want.length !== parts.length) continue;
    const params = {};
    if (want.every((w, i) => (w.startsWith(':') ? (params[w.slice(1)] = decodeURIComponent(parts[i])) !== '' : w === parts[i]))) {
      return [fn, params];
    }
  }
  return [null, null];
}

/**
 * An HTTP server on BACKEND_PORT. `routes` maps "METHOD /path" (segments
 * `:name` are parameters) to `async (req, rawBody: Buffer, url: URL, params)
 * => [status, jsonBody]`. GET /healthz answers 200 once `ready()` has been
 * called.
 */
export function httpServer(routes = {}) {
  let isReady = false;
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url, 'http://x');
    let status = 404;
    let out = { error: 'not found' };
    try {
      if (req.method === 'GET' && url.pathname === '/healthz') {
        [status, out] = isReady ? [200, { ok: true }] : [503, { ok: false }];
      } else {
        const [fn, params] = route(routes, req.method, url.pathname);
        if (fn) [status, out] = await fn(req, body, url, params);
      }
    } catch (err) {
      log('error in', req.method, url.pathname, err);
      [status, out] = [500, { error: String(err.message) }];
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(out));
  });
  server.listen(Number(env('BACKEND_PORT')), '127.0.0.1');
  return {
    server,
    ready() {
      isReady = true;
      log(`ready on http://127.0.0.1:${env('BACKEND_PORT')}`);
    },
  };
}

/** An append-only JSON-lines file: `append(obj)`, `readAll()`. */
export function jsonLines(file) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return {
    file,
    append(obj) {
      fs.appendFileSync(file, JSON.stringify(obj) + '\n');
    },
    readAll() {
      if (!fs.existsSync(file)) return [];
      return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    },
  };
}

/** Stops on SIGINT/SIGTERM: runs `fn` (close the broker, the server), then exits. */
export function onShutdown(fn) {
  const stop = async () => {
    try {
      await fn();
    } finally {
      process.exit(0);
    }
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
