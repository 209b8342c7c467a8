// A tiny stand-in for the gateway's page routes, used while the gateway
// does not serve the demo page at GET / itself (chat.spec.mjs checks for
// the `data-broker-demo` marker first).
//
// Serves the same table the gateway is to serve:
//   /                   gateway/static/index.html
//   /app.js, /style.css gateway/static/*
//   /broker-client.js   clients/js/dist/broker-client.js
// and one proxy route: GET /dev/token?user=NAME&gw=HOST:PORT is forwarded
// to http://HOST:PORT/dev/token?user=NAME, loopback hosts only. The page
// talks to the gateway named by ?gw= directly over WebSocket; the token has
// to come from that same node (dev tokens are signed with a per-node random
// secret) and the gateway sends no CORS headers, hence this one proxy.
//
// Standalone: node tests/browser/static-server.mjs [PORT]
//   then open http://127.0.0.1:PORT/?gw=127.0.0.1:8080

import http from 'node:http';
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
};

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

/** Starts the server on 127.0.0.1:`port` (0: any); resolves to {server, port, url}. */
export async function startStaticServer(port = 0) {
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
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
