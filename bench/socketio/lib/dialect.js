// The one place where the two servers the driver runs against differ: the
// same socket.io-client, the same scenarios, two event vocabularies.
//
// - `peer` (default): server.js, the Socket.IO 4 + redis-adapter stack.
//   `join` / `leave` / `pub` / `presence`, each acked; an error acks
//   `{error: 'code'}`. Room messages arrive as `msg` `{room, ev, data, seq,
//   ts, from}`. Node stats from the node's `GET /rss`.
// - `broker`: this broker's gateway at `/socket.io/` (docs/SOCKETIO.md).
//   `broker:join` / `broker:leave` / `broker:publish` / `broker:presence`,
//   each acked; a refusal acks `{error: {code, msg, retry_ms?}}`. A room
//   message arrives as its own `ev` (the driver publishes `ev: 'msg'`) with
//   the arguments `data, meta {room, seq, epoch, ts, from}, offset`.
//   Unsolicited `broker:error` and `broker:missed` are counted as events.
//   Node stats from the admin listener's Prometheus `/metrics`
//   (`process_resident_memory_bytes`, `broker_connections`): the gateway
//   has no `GET /rss`. CPU time from /proc/<pid>/stat when the node's pid
//   is known (same machine), else `process_cpu_seconds_total` (the
//   prometheus crate counts it in whole seconds: too coarse for a
//   scenario of a few seconds).
//
// The dialect is chosen once per process (and per worker thread) with
// `use(name)`; lib/client.js and lib/stats.js ask `current()`.

/** GET /rss of a server.js node: `{rss, conns, cpu_us}`, or null. */
async function rssStats(url) {
  try {
    const res = await fetch(new URL('/rss', url));
    return await res.json();
  } catch {
    return null;
  }
}

/** The value of the unlabelled series `name` in a Prometheus text
 * exposition, or null. */
function metric(text, name) {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${name} `)) {
      const v = Number(line.slice(name.length + 1).trim().split(' ')[0]);
      return Number.isFinite(v) ? v : null;
    }
  }
  return null;
}

/** CPU time (user + system) of process `pid` in µs, from /proc (in clock
 * ticks of 10 ms: USER_HZ is 100 on Linux), or null. */
function procCpuUs(pid) {
  try {
    const stat = require('node:fs').readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces) in parentheses.
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10000; // utime, stime
  } catch {
    return null;
  }
}

/** A gateway node's figures from its admin `/metrics` (`admin` is its
 * admin listener's host:port) and, when `pid` is given, its CPU from
 * /proc: `{rss, conns, cpu_us}`, or null. */
async function metricsStats(_url, { admin, pid } = {}) {
  if (!admin) return null;
  try {
    const res = await fetch(`http://${admin}/metrics`);
    if (!res.ok) return null;
    const text = await res.text();
    const rss = metric(text, 'process_resident_memory_bytes');
    const conns = metric(text, 'broker_connections');
    const cpu = metric(text, 'process_cpu_seconds_total');
    if (rss === null || conns === null) return null;
    const procCpu = pid ? procCpuUs(pid) : null;
    return { rss, conns, cpu_us: procCpu ?? (cpu === null ? 0 : cpu * 1e6) };
  } catch {
    return null;
  }
}

const DIALECTS = {
  peer: {
    name: 'peer',
    // What the report's params say about the server.
    params: { dialect: 'peer', peer: 'socket.io' },
    nodesLabel: 'Socket.IO nodes',
    // The server's npm packages (their versions go into the report).
    serverPackages: ['socket.io', '@socket.io/redis-adapter', 'redis'],
    event: { join: 'join', leave: 'leave', pub: 'pub', presence: 'presence' },
    /** The `pub` payload for `{room, data, others}`. */
    pub: ({ room, data, others }) => ({ room, ev: 'bench', data, others }),
    /** Calls `fn(room, seq, data)` for each room message on `socket`. */
    onMessage(socket, fn) {
      socket.on('msg', (m) => fn(m && m.room, m && m.seq, m && m.data));
    },
    /** Counts the server's unsolicited events on `events`. */
    watch() {},
    stats: rssStats,
  },
  broker: {
    name: 'broker',
    params: { dialect: 'broker', server: 'broker-gateway /socket.io/' },
    nodesLabel: 'gateway nodes',
    serverPackages: [],
    event: { join: 'broker:join', leave: 'broker:leave', pub: 'broker:publish', presence: 'broker:presence' },
    pub: ({ room, data, others }) => ({ room, ev: 'msg', data, others }),
    onMessage(socket, fn) {
      socket.on('msg', (data, meta) => fn(meta && meta.room, meta && meta.seq, data));
    },
    watch(socket, events) {
      socket.on('broker:error', (e) => events.count(`broker:error ${(e && e.code) || JSON.stringify(e)}`));
      socket.on('broker:missed', (m) => events.count(`broker:missed (${(m && m.count) ?? '?'} messages)`));
    },
    stats: metricsStats,
  },
};

let dialect = DIALECTS.peer;

/** Chooses the dialect of this thread; throws on an unknown name. */
function use(name) {
  if (!DIALECTS[name]) throw new Error(`unknown dialect ${name} (peer or broker)`);
  dialect = DIALECTS[name];
  return dialect;
}

const current = () => dialect;

/** An ack's error as a short string (`code`), whichever way the server
 * says it: server.js acks `{error: 'code'}`, the gateway `{error: {code,
 * msg}}`. Null for a success. */
function ackError(reply) {
  if (!reply || reply.error === undefined || reply.error === null) return null;
  const e = reply.error;
  if (typeof e === 'object') return String(e.code || e.message || JSON.stringify(e));
  return String(e);
}

module.exports = { use, current, ackError, metric, names: Object.keys(DIALECTS) };
