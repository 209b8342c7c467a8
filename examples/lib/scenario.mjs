// Shared by the examples' scenarios: where the running example is, tokens,
// WebSocket clients, waiting for events, and checks that fail the run.

import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { connect } from '@broker/client';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/**
 * The running example's addresses and secrets: the file EXAMPLE_ENV, or
 * .run/examples/<name>/env.json written by `scripts/example.sh <name>`.
 */
export function exampleEnv(name) {
  const file = process.env.EXAMPLE_ENV || path.join(ROOT, '.run/examples', name, 'env.json');
  if (!fs.existsSync(file)) {
    throw new Error(`${file} not found: start the example first (make example NAME=${name})`);
  }
  const e = JSON.parse(fs.readFileSync(file, 'utf8'));
  const list = (s) => (s ? String(s).split(',') : []);
  return {
    ...e,
    gateways: list(e.GATEWAYS),
    admins: list(e.GATEWAY_ADMINS),
    gatewayPids: list(e.GATEWAY_PIDS).map(Number),
    nodeIds: list(e.NODE_IDS),
  };
}

const b64url = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/**
 * An HS256 JWT for `sub`, valid for an hour: what the application's login
 * would hand its client. `extra` adds claims (`rooms`, `roles`).
 */
export function token(secret, sub, extra = {}) {
  const now = Math.floor(Date.now() / 1000);
  const head = b64url({ alg: 'HS256', typ: 'JWT' });
  const body = b64url({ sub, iat: now, exp: now + 3600, ...extra });
  const sig = crypto.createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

const clients = [];

/**
 * A connected @broker/client on `url` (resolves after `welcome`). Every
 * `msg` is also kept in `client.inbox` for the checks.
 */
export async function client(url, tok, opts = {}) {
  const c = connect(url, { token: tok, WebSocket, reconnectDelayMs: 200, reconnectDelayMaxMs: 1000, ...opts });
  c.inbox = [];
  c.on('msg', (m) => c.inbox.push(m));
  // Memberships the backend decided, as they came (they can come right
  // after `welcome`, before a listener added later would hear them).
  c.memberships = [];
  c.on('server_joined', (j) => c.memberships.push({ event: 'server_joined', ...j }));
  c.on('server_left', (l) => c.memberships.push({ event: 'server_left', ...l }));
  c.on('error', () => {});
  clients.push(c);
  await waitFor(c, 'connect', () => true, 10000, `${url} connect`);
  return c;
}

/** Closes every client opened by `client()`. */
export function closeAll() {
  for (const c of clients) c.close();
}

/**
 * Resolves with the first `event` of `emitter` whose argument passes
 * `pred`; rejects after `ms`.
 */
export function waitFor(emitter, event, pred = () => true, ms = 5000, what = event) {
  return new Promise((resolve, reject) => {
    const fn = (arg) => {
      let ok = false;
      try {
        ok = pred(arg);
      } catch (err) {
        ok = false;
      }
      if (ok) {
        clearTimeout(timer);
        emitter.off(event, fn);
        resolve(arg);
      }
    };
    const timer = setTimeout(() => {
      emitter.off(event, fn);
      reject(new Error(`timed out after ${ms} ms waiting for ${what}`));
    }, ms);
    emitter.on(event, fn);
  });
}

/** A `msg` of event `ev` (in `room`, when given) on client `c`, already received or coming. */
export async function message(c, ev, { room, where = () => true, ms = 5000 } = {}) {
  const match = (m) => m.ev === ev && (room == null || m.room === room) && where(m);
  const seen = c.inbox.find(match);
  if (seen) return seen;
  return waitFor(c, 'msg', match, ms, `msg ${ev}${room ? ` in ${room}` : ''} for ${c.user}`);
}

/** A `server_joined` / `server_left` of client `c` passing `pred`, already received or coming. */
export async function membership(c, event, pred = () => true, ms = 5000) {
  const seen = c.memberships.find((m) => m.event === event && pred(m));
  if (seen) return seen;
  return waitFor(c, event, pred, ms, `${event} for ${c.user}`);
}

/** Polls `fn` until it returns something truthy; rejects after `ms`. */
export async function until(fn, ms = 5000, what = 'a condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let checks = 0;

/** A named check: prints `ok - what` or throws. */
export function check(cond, what, detail) {
  checks++;
  if (!cond) {
    const err = new Error(`not ok - ${what}${detail !== undefined ? `: ${JSON.stringify(detail)}` : ''}`);
    err.check = true;
    throw err;
  }
  console.log(`ok - ${what}`);
}

/** Deep equality through JSON (the data went through MessagePack or JSON anyway). */
export function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** `await p` must reject with a BrokerError of `code`; resolves with the error. */
export async function rejects(p, code) {
  try {
    await p;
  } catch (err) {
    return err.code === code ? err : Promise.reject(new Error(`expected ${code}, got ${err.code}: ${err.message}`));
  }
  throw new Error(`expected ${code}, the request succeeded`);
}

/** Runs the scenario `fn`, then closes the clients; exit code 1 on any failure. */
export async function run(name, fn) {
  const started = Date.now();
  try {
    await fn(exampleEnv(name));
    closeAll();
    console.log(`# ${name}: ${checks} checks passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.exit(0);
  } catch (err) {
    console.error(err.check ? err.message : err);
    console.error(`# ${name}: FAILED after ${checks} passed checks`);
    closeAll();
    process.exit(1);
  }
}

/** POST JSON to `url`; resolves to `{status, body}`. */
export async function postJson(url, body, headers = {}) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, body: parsed };
}
