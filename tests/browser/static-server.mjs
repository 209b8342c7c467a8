// A tiny stand-in for the gateway's page routes, used while the gateway
// does not serve the demo page at GET / itself (chat.spec.mjs checks for
// the `data-broker-demo` marker first).
//
// Serves the same table the gateway is to serve:
//   /                   gateway/static/index.html
//   /app.js, /style.css gateway/static/*
//   /broker-client.js   clients/js/dist/broker-client.js
//   /vendor/socket.io.min.js  gateway/static/vendor/socket.io.min.js
// and two proxy routes, to loopback hosts only:
//   - GET /dev/token?user=NAME&gw=HOST:PORT is forwarded to
//     http://HOST:PORT/dev/token?user=NAME. In its broker mode the page talks
//     to the gateway named by ?gw= directly over WebSocket; the token has to
//     come from that same node (dev tokens are signed with a per-node random
//     secret) and the gateway sends no CORS headers, hence this proxy.
//   - /socket.io/?...&gw=HOST:PORT (long-polling requests and the WebSocket
//     upgrade) is forwarded to http://HOST:PORT/socket.io/?... without the
//     `gw` parameter. In its Socket.IO mode the page uses socket.io-client's
//     default transports, and long-polling is plain HTTP: across origins it
//     would need CORS headers and a wider Content-Security-Policy. Bytes are
//     passed through untouched (the upgraded connection as a raw TCP pipe).
//
// Standalone: node tests/browser/static-server.mjs [PORT]
//   then open http://127.0.0.1:PORT/?gw=127.0.0.1:8080 (add &proto=socketio
//   for the page's Socket.IO mode)

import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** path -> [file, content type]: the serving table of the demo page. */
export const ROUTES = {
  '/': [join(root, 'gateway', 'static', 'index.html'), 'text/html; charset=utf-8'],
  '/app.js': [join(root, 'gateway', 'static', 'app.js'), 'text/javascript; charset=utf-8'],
  '/style.css': [join(root, 'gateway', 'static', 'style.css'), 'text/css; charset=utf-8'],
  '/broker-client.js': [join(root, 'clients', 'js', 'dist', 'broker-client.js'), 'text/javascript; charset=utf-8'],
  '/vendor/socket.io.min.js': [join(root, 'gateway', 'static', 'vendor', 'socket.io.min.js'), 'text/javascript; charset=utf-8'],
};

/** Where Socket.IO requests go: the same path the gateway serves. */
const SOCKETIO_PATH = '/socket.io/';

const LOOPBACK = /^(127\.[0-9]+\.[0-9]+\.[0-9]+|localhost|\[::1\]):[0-9]{1,5}$/;

function send(res, status, type, body) {
  res.writeHead(status, {
    'content-type': type,
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
  });
  res.end(body);
}

async function proxyToken(url, res) {
  const gw = url.searchParams.get('gw') || '';
  const user = url.searchParams.get('user') || '';
  if (!LOOPBACK.test(gw)) {
    send(res, 400, 'application/json', JSON.stringify({ error: 'gw must be a loopback host:port' }));
    return;
  }
  try {
    const upstream = await fetch(`http://${gw}/dev/token?user=${encodeURIComponent(user)}`, {
      signal: AbortSignal.timeout(5000),
    });
    send(res, upstream.status, upstream.headers.get('content-type') || 'application/json', await upstream.text());
  } catch (err) {
    send(res, 502, 'application/json', JSON.stringify({ error: `gateway unreachable: ${err.message}` }));
  }
}

/** The gateway a /socket.io/ request names in `gw` (loopback only) and
 * the request's path and query without `gw`, or null. */
function socketioTarget(rawUrl) {
  const url = new URL(rawUrl, 'http://localhost');
  if (url.pathname !== SOCKETIO_PATH) return null;
  const gw = url.searchParams.get('gw') || '';
  if (!LOOPBACK.test(gw)) return null;
  url.searchParams.delete('gw');
  const { hostname, port } = new URL(`http://${gw}`);
  const host = hostname.replace(/^\[(.*)\]$/, '$1'); // [::1] -> ::1
  return { gw, host, port: Number(port), path: `${url.pathname}${url.search}` };
}

/** Headers for the gateway: the client's, with `host` naming the gateway. */
function forwardedHeaders(req, gw) {
  return { ...req.headers, host: gw };
}

/** A long-polling request (GET or POST), forwarded as it is. */
function proxySocketio(req, res, target) {
  const upstream = http.request({
    host: target.host,
    port: target.port,
    method: req.method,
    path: target.path,
    headers: forwardedHeaders(req, target.gw),
  }, (answer) => {
    res.writeHead(answer.statusCode, answer.headers);
    answer.pipe(res);
  });
  upstream.on('error', (err) => {
    if (res.headersSent) res.destroy();
    else send(res, 502, 'text/plain', `gateway unreachable: ${err.message}\n`);
  });
  req.pipe(upstream);
}

/** The WebSocket upgrade: the request written again for the gateway, then
 * both sockets piped into each other. */
function proxyUpgrade(req, socket, head) {
  const target = socketioTarget(req.url);
  if (!target) {
    socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
    return;
  }
  const upstream = net.connect(target.port, target.host, () => {
    const headers = forwardedHeaders(req, target.gw);
    const lines = [`${req.method} ${target.path} HTTP/1.1`];
    for (const [name, value] of Object.entries(headers)) {
      for (const v of Array.isArray(value) ? value : [value]) lines.push(`${name}: ${v}`);
    }
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head && head.length) upstream.write(head);
    upstream.pipe(socket);
    socket.pipe(upstream);
  });
  upstream.on('error', () => socket.destroy());
  socket.on('error', () => upstream.destroy());
  upstream.on('close', () => socket.destroy());
  socket.on('close', () => upstream.destroy());
}

/** Starts the server on 127.0.0.1:`port` (0: any); resolves to {server, port, url}. */
export async function startStaticServer(port = 0) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === SOCKETIO_PATH) {
      const target = socketioTarget(req.url);
      if (target) proxySocketio(req, res, target);
      else send(res, 400, 'text/plain', 'gw must be a loopback host:port\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'text/plain', 'method not allowed\n');
      return;
    }
    if (url.pathname === '/dev/token') {
      await proxyToken(url, res);
      return;
    }
    const route = ROUTES[url.pathname];
    if (!route) {
      send(res, 404, 'text/plain', 'not found\n');
      return;
    }
    try {
      send(res, 200, route[1], await readFile(route[0]));
    } catch (err) {
      send(res, 500, 'text/plain', `cannot read ${route[0]}: ${err.message}\n`);
    }
  });
  server.on('upgrade', proxyUpgrade);
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', ok);
  });
  const actual = server.address().port;
  return { server, port: actual, url: `http://127.0.0.1:${actual}` };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { url } = await startStaticServer(Number(process.argv[2] || 0));
  console.log(`serving the demo page at ${url}/?gw=HOST:PORT`);
}
