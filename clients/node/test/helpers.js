// Test fixtures: redis-server with the module on a free port, and a
// 3-master Redis Cluster (no replicas), each killed by stop().

import { spawn, execFile } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Redis, Cluster } from 'ioredis';
import { encode } from '@msgpack/msgpack';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** The module: $BROKER_MODULE, else <repo>/target/release/libbroker_module.so. */
export const MODULE = process.env.BROKER_MODULE || join(ROOT, 'target/release/libbroker_module.so');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A port nothing listens on now (it can be taken before we bind it: callers retry). */
export function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', rej);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

async function ping(port) {
  try {
    const { stdout } = await run('redis-cli', ['-p', String(port), 'PING']);
    return stdout.trim() === 'PONG';
  } catch {
    return false;
  }
}

/**
 * A redis-server with the module (`moduleArgs` after the path, `serverArgs`
 * before it). Resolves to {port, url, dir, client(), stop()}.
 */
export async function startRedis({ moduleArgs = ['HISTORY', 'chat', '100', '300', 'HISTORY', 'user', '10', '300'], serverArgs = [] } = {}) {
  if (!existsSync(MODULE)) throw new Error(`module not found at ${MODULE}: run 'make build' first or set BROKER_MODULE`);
  const dir = mkdtempSync(join(tmpdir(), 'broker-node-'));
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--logfile', join(dir, 'redis.log'), ...serverArgs, '--loadmodule', MODULE, ...moduleArgs,
    ], { stdio: 'ignore' });
    let exited = false;
    child.on('exit', () => { exited = true; });
    for (let i = 0; i < 100 && !exited; i++) {
      if (await ping(port)) {
        const clients = [];
        return {
          port,
          url: `redis://127.0.0.1:${port}`,
          dir,
          child,
          /** A plain ioredis client for the test's own commands (closed by stop()). */
          client() {
            const c = new Redis(port, '127.0.0.1', { lazyConnect: false });
            clients.push(c);
            return c;
          },
          async stop() {
            for (const c of clients) c.disconnect();
            child.kill('SIGKILL');
            await new Promise((r) => (exited ? r() : child.once('exit', r)));
            rmSync(dir, { recursive: true, force: true });
          },
        };
      }
      await sleep(50);
    }
    child.kill('SIGKILL');
    const log = existsSync(join(dir, 'redis.log')) ? readFileSync(join(dir, 'redis.log'), 'utf8') : '';
    if (!log.includes('Address already in use')) throw new Error(`redis-server did not start:\n${log.slice(-2000)}`);
  }
  throw new Error('redis-server did not start: no free port');
}

/**
 * `masters` masters with the module, joined by `redis-cli --cluster create`
 * (no replicas). Resolves to {servers, seeds, cluster(), stop()}.
 */
export async function startCluster(masters = 3) {
  const servers = [];
  try {
    for (let i = 0; i < masters; i++) {
      servers.push(await startRedis({
        serverArgs: ['--cluster-enabled', 'yes', '--cluster-config-file', 'nodes.conf', '--cluster-node-timeout', '2000'],
      }));
    }
    await run('redis-cli', ['--cluster', 'create', ...servers.map((s) => `127.0.0.1:${s.port}`),
      '--cluster-replicas', '0', '--cluster-yes']);
    const deadline = Date.now() + 30000;
    for (;;) {
      let ok = true;
      for (const s of servers) {
        const { stdout } = await run('redis-cli', ['-p', String(s.port), 'CLUSTER', 'INFO']);
        if (!stdout.includes('cluster_state:ok') || !stdout.includes('cluster_slots_ok:16384')) ok = false;
      }
      if (ok) break;
      if (Date.now() > deadline) throw new Error('the cluster did not become ok in 30 s');
      await sleep(100);
    }
  } catch (err) {
    await Promise.all(servers.map((s) => s.stop()));
    throw err;
  }
  const seeds = servers.map((s) => ({ host: '127.0.0.1', port: s.port }));
  const clusters = [];
  return {
    servers,
    seeds,
    /** A new ioredis Cluster on the seeds (closed by stop()). */
    cluster(options) {
      const c = new Cluster(seeds, options);
      clusters.push(c);
      return c;
    },
    async stop() {
      for (const c of clusters) c.disconnect();
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

/** Poll `fn` until it returns a truthy value or `ms` passed; returns the value. */
export async function eventually(fn, ms = 5000, what = 'condition') {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await sleep(25);
  }
}

let counter = 0;
/** A name unique within this test process (room names, users, groups). */
export const unique = (prefix) => `${prefix}${process.pid}x${++counter}`;

/**
 * A gateway node and connections made with the gateway-only commands (sent
 * through `broker`, so on a cluster the lease goes to every master and the
 * rest to the slot's master), so presence, rooms and kicks have something to
 * see: lease(), open(user, conn), join(room, user, conn), release().
 */
export function fakeGateway(broker, node = unique('gw')) {
  return {
    node,
    lease: (ttl = 30000) => broker.eachMaster('BROKER.NODE.LEASE', [node, ttl]),
    open: (user, conn, ip = '127.0.0.1') => broker.command('BROKER.CONN.OPEN', [user, conn, node, ip], { key: user }),
    join: (room, user, conn) => broker.command('BROKER.JOIN', [room, user, conn, node], { key: room }),
    release: () => broker.eachMaster('BROKER.NODE.RELEASE', [node]),
  };
}

/** Append an RPC request to broker:rpc as the gateway does; returns the entry id. */
export function addRequest(redis, { method, data = null, user = 'alice', conn = 'gw1.i.1', node = 'gw1', id = '1', deadline = Date.now() + 5000 }) {
  return redis.xadd('broker:rpc', '*', 'method', method, 'data', Buffer.from(encode(data)), 'json', JSON.stringify(data),
    'user', user, 'conn', conn, 'node', node, 'id', String(id), 'deadline', String(deadline));
}
