#!/usr/bin/env node
// Load driver for the Socket.IO peer: broker-bench's four scenarios
// (bench/src/scenario/*.rs) against server.js nodes, with the same options,
// the same figures and the same JSON shape ({scenario, params, results:
// {section: {key: value}}}, the same section and key names), so that
// scripts/bench-report.py reads both sides alike.
//
//   node driver.js connect --url U1 -n 10000 --concurrency 100 --idle 5
//   node driver.js fanout  --url U1 --url U2 -m 1000 --rate 100 --duration 10 --max-duration 10 --inflight 64
//   node driver.js chat    --url U1 --url U2 -r 100 -k 10 --rate 1 --duration 10
//   node driver.js churn   --url U1 --url U2 --redis redis://127.0.0.1:PORT -c 200 --rooms 20 -p 2 --rate 100 --duration 10
//
// U is a node's http://host:port. The token secret comes from --secret or
// JWT_SECRET. A progress line goes to stderr, Markdown tables to stdout,
// the JSON to --save FILE (or stdout with --json). Memory and connection
// counts are read from each node's GET /rss. `node driver.js --help`
// lists every option.
//
// The same client against this broker's gateway (docs/SOCKETIO.md), which
// serves socket.io-client at /socket.io/ with its own event names:
//
//   node driver.js fanout --dialect broker --url U1 --admin A1 --pid P1 --url U2 --admin A2 --pid P2 ...
//
// U is the gateway's public http://host:port, A its admin listener
// host:port (memory and connections from its /metrics), P its pid (CPU
// time from /proc: this machine only), each in --url order. lib/dialect.js holds every difference between the two servers;
// churn reads server.js's presence sets and runs with `peer` only.
//
// Where it differs from broker-bench, and why:
// - Payloads are `{t, p}`: the send time in µs on process.hrtime (one
//   monotonic clock for every thread of this process) and the phase.
// - A duplicate is a seq the connection already saw in that room; a lower
//   seq after a higher one is not (Socket.IO does not order messages of
//   different publishers, or relayed by different nodes).
// - fanout's subscribers run in --workers threads (default 2, as many as
//   broker-bench's runtime has on this 2-core machine); see lib/receivers.js.

const fs = require('node:fs');
const { createClient } = require('redis');
const { Threads } = require('./lib/threads');
const { open, request, openAndJoin, sources, watchClose, closeAll, nodeStats } = require('./lib/client');
const { Hist, Phase, Events, Report, Progress, recordMessages, phaseRows, drain, rate, sleep, nowUs } = require('./lib/stats');
const dialect = require('./lib/dialect');

// ---------------------------------------------------------------- options

// name: [default, scenarios ('*': all), help]. Long names as broker-bench's.
const OPTIONS = {
  url: [[], '*', 'node URL http://host:port; repeat for several nodes (round-robin)'],
  dialect: ['peer', '*', `the server's events: peer (server.js) or broker (the gateway's /socket.io/)`],
  admin: [[], '*', 'with --dialect broker: each node\'s admin listener host:port, in --url order (/metrics)'],
  pid: [[], '*', 'with --dialect broker: each node\'s pid, in --url order (its CPU time from /proc)'],
  secret: [process.env.JWT_SECRET || '', '*', 'HS256 secret of the nodes (default: $JWT_SECRET)'],
  concurrency: [100, '*', 'handshakes (and joins) in flight at once'],
  sources: [8, '*', 'loopback source addresses 127.0.0.2, ... (0: the kernel picks)'],
  'connect-timeout': [10, '*', 'seconds one connection attempt may take'],
  save: [null, '*', 'also write the JSON results to this file'],
  json: [false, '*', 'print the JSON instead of tables'],
  quiet: [false, '*', 'no progress line'],
  conns: [null, 'connect churn', 'connect: connections (10000); churn: churning connections (200)'],
  users: [0, 'connect', 'distinct users (connection i is user u<i % users>; 0: one per connection)'],
  idle: [5, 'connect', 'seconds all stay idle before memory is read'],
  subscribers: [1000, 'fanout', 'subscribers'],
  room: ['chat:bench', 'fanout', 'the room'],
  rate: [null, 'fanout chat churn', 'publishes/s (fanout phase 1: 100; chat: per member, 1; churn: per publisher, 100)'],
  duration: [10, 'fanout chat churn', 'seconds (fanout: phase 1)'],
  'max-duration': [10, 'fanout', 'phase 2 (max rate) seconds; 0 skips it'],
  inflight: [null, 'fanout chat', 'publishes unanswered at most (fanout: 64; chat: per member, 8)'],
  drain: [10, 'fanout chat', 'seconds to wait for late deliveries'],
  workers: [2, 'connect fanout', 'threads holding the connections / subscribers (0: the main thread)'],
  rooms: [null, 'chat churn', 'rooms (chat: 100; churn: 20)'],
  members: [10, 'chat', 'members per room'],
  prefix: [null, 'chat churn', 'room name prefix (chat:room- / chat:churn-)'],
  'conns-per-user': [2, 'churn', 'connections per churning user'],
  'max-rooms': [10, 'churn', 'rooms one churner is in at most'],
  publishers: [2, 'churn', 'publishers (in every room)'],
  redis: ['redis://127.0.0.1:6379', 'churn', 'the nodes\' Redis, to read the presence sets'],
};
const LISTS = { url: 'urls', admin: 'admins', pid: 'pids' };
const TEXT = new Set(['url', 'admin', 'dialect', 'secret', 'save', 'room', 'prefix', 'redis']);
const SHORT = { '-n': 'conns', '-m': 'subscribers', '-r': 'rooms', '-k': 'members', '-c': 'conns', '-p': 'publishers' };
const DEFAULTS = {
  connect: { conns: 10000 },
  fanout: { rate: 100, inflight: 64 },
  chat: { rate: 1, inflight: 8, rooms: 100, prefix: 'chat:room-' },
  churn: { conns: 200, rate: 100, rooms: 20, prefix: 'chat:churn-' },
};

function usage(code) {
  const lines = ['usage: node driver.js connect|fanout|chat|churn [options]', ''];
  for (const [name, [def, where, help]] of Object.entries(OPTIONS)) {
    const short = Object.keys(SHORT).find((s) => SHORT[s] === name);
    const d = Array.isArray(def) || def === null || def === false || name === 'secret' ? '' : ` (${def})`;
    lines.push(`  ${short ? `${short}, ` : ''}--${name}${d}  [${where === '*' ? 'all' : where}] ${help}`);
  }
  (code ? process.stderr : process.stdout).write(lines.join('\n') + '\n');
  process.exit(code);
}

function parseArgs(argv) {
  const scenario = argv[0];
  if (scenario === '--help' || scenario === '-h') usage(0);
  if (!DEFAULTS[scenario]) usage(2);
  const o = { urls: [], admins: [], pids: [] };
  for (const [name, [def]] of Object.entries(OPTIONS)) if (!LISTS[name]) o[name] = def;
  Object.assign(o, DEFAULTS[scenario]);
  for (let i = 1; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s);
    if (flag === '--help' || flag === '-h') usage(0);
    const name = SHORT[flag] || flag.replace(/^--/, '');
    const spec = OPTIONS[name];
    if (!spec || !flag.startsWith('-') || !(spec[1] === '*' || spec[1].split(' ').includes(scenario))) {
      console.error(`${scenario}: unknown option ${flag}`);
      usage(2);
    }
    if (typeof spec[0] === 'boolean') {
      o[name] = true;
      continue;
    }
    if (value === undefined) value = argv[++i];
    if (value === undefined) usage(2);
    if (!TEXT.has(name) && !Number.isFinite(Number(value))) {
      console.error(`${scenario}: --${name} wants a number, not ${value}`);
      usage(2);
    }
    const v = TEXT.has(name) ? value : Number(value);
    if (LISTS[name]) o[LISTS[name]].push(v); // repeated: --url, --admin, --pid
    else o[name] = v;
  }
  if (!o.urls.length) o.urls.push('http://127.0.0.1:3001');
  if (!dialect.names.includes(o.dialect)) {
    console.error(`--dialect is one of ${dialect.names.join(', ')}, not ${o.dialect}`);
    usage(2);
  }
  if (o.dialect === 'broker' && scenario === 'churn') {
    console.error('churn reads server.js\'s presence sets in Redis: --dialect peer only');
    process.exit(2);
  }
  for (const list of ['admin', 'pid']) {
    if (o[LISTS[list]].length && o[LISTS[list]].length !== o.urls.length) {
      console.error(`give one --${list} per --url (${o.urls.length}), in the same order`);
      usage(2);
    }
  }
  if (o.dialect === 'broker' && !o.admins.length) {
    console.error('warning: no --admin: no node memory, connection counts or CPU (the gateway has them on its admin /metrics)');
  }
  dialect.use(o.dialect);
  // A node's figures: `{rss, conns, cpu_us}` or null (lib/dialect.js).
  o.stats = (url) => {
    const i = o.urls.indexOf(url);
    return nodeStats(url, { admin: o.admins[i], pid: o.pids[i] });
  };
  if (!o.secret) {
    console.error('give --secret or JWT_SECRET');
    process.exit(2);
  }
  o.scenario = scenario;
  return o;
}

/** The open-file limit (soft, hard), from /proc (the script raises it). */
function nofile() {
  try {
    const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'));
    const [soft, hard] = line.split(/\s{2,}/).slice(1, 3).map(Number);
    return [soft, hard];
  } catch {
    return [0, 0];
  }
}

/** Versions of the client and, against server.js (which uses the same
 * node_modules), of the server's packages. */
function versions() {
  const v = (p) => {
    try {
      return require(`${p}/package.json`).version;
    } catch {
      return null;
    }
  };
  const out = { node: process.version };
  for (const p of ['socket.io-client', 'jsonwebtoken', ...dialect.current().serverPackages]) out[p] = v(p);
  return out;
}

/** Common connection options for lib/client.js. */
function connOpts(o, userOf, progress) {
  return {
    urls: o.urls,
    userOf,
    secret: o.secret,
    concurrency: Math.max(1, o.concurrency),
    srcs: sources(o.urls, o.sources),
    timeoutMs: o['connect-timeout'] * 1000,
    progress,
  };
}

// ---------------------------------------------------------------- pacing

/** At most `size` publishes unanswered (broker-bench's window semaphore). */
class Window {
  constructor(size) {
    this.free = Math.max(1, size);
    this.size = this.free;
    this.waiting = [];
  }

  acquire() {
    if (this.free > 0) {
      this.free--;
      return Promise.resolve();
    }
    return new Promise((r) => this.waiting.push(r));
  }

  release() {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }

  /** Waits until every slot is back (at most `maxMs`). */
  async settle(maxMs = 30000) {
    const until = Date.now() + maxMs;
    while (this.free < this.size && Date.now() < until) await sleep(5);
  }
}

/** Calls `send` so that it has run `rate × elapsed` times until `untilUs`
 * (mod.rs `paced`): at rates above the timer's resolution it sends what is
 * owed at each tick. Stops when `send` resolves false. */
async function paced(rateHz, untilUs, send) {
  const start = nowUs();
  let sent = 0;
  while (nowUs() < untilUs) {
    const owed = Math.floor(((nowUs() - start) / 1e6) * rateHz);
    while (sent < owed) {
      if (!(await send())) return sent;
      sent++;
    }
    const next = Math.min(start + ((sent + 1) / rateHz) * 1e6, untilUs);
    await sleep((next - nowUs()) / 1000);
  }
  return sent;
}

/** Publishes one `{t, p}` payload to `room` on `socket` in the window,
 * counting on `phase` (sent when written; acked or refused when answered).
 * `onAck(room)` is called for each ack. Resolves once written. */
async function publish(socket, room, others, window, phase, p, events, onAck = () => {}) {
  await window.acquire();
  if (!socket.connected) {
    window.release();
    return false;
  }
  const t = nowUs();
  phase.sent++;
  request(socket, 'pub', { room, data: { t, p }, others }, 30000).then((r) => {
    window.release();
    if (typeof r.seq === 'number') {
      phase.acked++;
      phase.ack.record(nowUs() - t);
      onAck(room);
    } else {
      phase.refused++;
      events.count(`pub refused: ${r.error}`);
    }
  });
  return true;
}

// ---------------------------------------------------------------- connect

// connect.rs: N connections with `concurrency` handshakes in flight; a
// connection counts once Socket.IO's `connect` arrived (the server's auth
// middleware accepted it). Then, all idle, the node's RSS again:
// (after − before) / N. Then all closed, and how long until the node's
// connection count is back.
async function scenarioConnect(o) {
  const [n, url] = [o.conns, o.urls[0]];
  const limit = nofile();
  if (n + 64 > limit[0]) {
    console.error(`warning: ${n} connections need about ${n + 64} open files; the limit is ${limit[0]} (hard ${limit[1]})`);
  }
  const before = await o.stats(url);
  const pool = new Threads(o.workers);
  await pool.ready();
  const r = rate();
  const bar = new Progress(
    () => `connect: ${pool.opened()}/${n} open, ${pool.failed()} failed, ${r(pool.opened()).toFixed(0)} conn/s`,
    o.quiet,
  );
  // Every connection to the first node, as broker-bench's connect.
  const started = nowUs();
  const opened = await pool.open(
    Array.from({ length: n }, (_, i) => i),
    { urls: [url], prefix: 'u', users: o.users, rooms: [], secret: o.secret, concurrency: o.concurrency, nsources: o.sources, timeoutMs: o['connect-timeout'] * 1000 },
  );
  const elapsedS = (nowUs() - started) / 1e6;
  bar.stop();
  const handshake = new Hist();
  for (const h of opened.handshake) handshake.add(h);
  const count = opened.opened;
  const report = new Report('connect', {
    urls: o.urls,
    conns: n,
    concurrency: o.concurrency,
    users: o.users,
    idle_s: o.idle,
    workers: o.workers,
    source_addrs: sources([url], o.sources).length,
    nofile: limit,
    ...dialect.current().params,
    versions: versions(),
  });
  report
    .section('connect', `connect: ${n} connections, ${o.concurrency} in flight`)
    .int('attempted', 'connections attempted', n)
    .int('opened', 'connections open (connect received)', count)
    .int('failed', 'failures', n - count)
    .events('failures', 'failures by kind', opened.failures)
    .num('elapsed_s', 'time to open all (s)', elapsedS, 2)
    .num('conns_per_s', 'connections / s', count / Math.max(1e-9, elapsedS), 0)
    .latency('handshake', 'connect + upgrade + connect packet p50 / p99 / p99.9 / max', handshake);

  // Idle: Socket.IO's heartbeat (pingInterval 25 s) comes later than this.
  await sleep(o.idle * 1000);
  const after = await o.stats(url);
  if (before && after) {
    report
      .num('rss_before_mib', 'node RSS before (MiB)', before.rss / 1048576, 1)
      .num('rss_after_mib', 'node RSS with all idle (MiB)', after.rss / 1048576, 1)
      .num('gateway_connections', 'node connections (this node)', after.conns - before.conns, 0);
    if (count) report.num('rss_per_conn_kib', 'node RSS per idle connection (KiB)', (after.rss - before.rss) / count / 1024, 2);
  }

  // Close all and wait for the node's count to come back.
  const closing = nowUs();
  const closed = pool.close();
  if (before) {
    let back = null;
    let last = null;
    while ((nowUs() - closing) / 1e6 < 15) {
      last = (await o.stats(url)) || last;
      if (last && last.conns <= before.conns) {
        back = (nowUs() - closing) / 1e6;
        break;
      }
      await sleep(100);
    }
    if (back !== null) report.num('close_drain_s', 'after closing all: node connections back in (s)', back, 2);
    else report.text('close_drain_s', 'after closing all: node connections back in (s)', 'not within 15 s');
    if (last) report.num('rss_closed_mib', 'node RSS after closing all (MiB)', last.rss / 1048576, 1);
  }
  await closed;
  return report;
}

// ---------------------------------------------------------------- fanout

// fanout.rs: M subscribers round-robin over the nodes join one room; one
// publisher (first node) publishes with `others: true`, so each message is
// owed to exactly the M subscribers. Phase 1 at --rate for --duration s,
// phase 2 as fast as the --inflight window allows for --max-duration s.
async function scenarioFanout(o) {
  const m = o.subscribers;
  const phaseCount = o['max-duration'] > 0 ? 2 : 1;
  const phases = Array.from({ length: phaseCount }, () => new Phase());
  const events = new Events();
  const subs = new Threads(o.workers, phaseCount);
  await subs.ready();

  const bar1 = new Progress(() => `fanout: ${subs.opened()} subscribers open, ${subs.failed()} failed`, o.quiet);
  const { joined: subscribed, failures } = await subs.open(
    Array.from({ length: m }, (_, i) => i),
    { urls: o.urls, prefix: 's', users: 0, rooms: [o.room], secret: o.secret, concurrency: o.concurrency, nsources: o.sources, timeoutMs: o['connect-timeout'] * 1000 },
  );
  bar1.stop();
  // The publisher, on the first node, in the room too.
  const { socket: publisher } = await open(o.urls[0], 'bench-pub', { secret: o.secret });
  let closes = 0;
  watchClose(publisher, events, () => closes++);
  const joinedPub = await request(publisher, 'join', { room: o.room });
  if (joinedPub.error) throw new Error(`the publisher could not join: ${joinedPub.error}`);

  let current = 0;
  const rp = rate();
  const rd = rate();
  const bar = new Progress(() => {
    const p = phases[current];
    return `fanout phase ${current + 1}: ${p.acked} acked (${rp(p.acked).toFixed(0)}/s), ${rd(subs.total()).toFixed(0)} deliveries/s, ${subs.duplicates(current)} dup, ${subs.closes() + closes} closes`;
  }, o.quiet);
  const window = new Window(o.inflight);
  const drained = [];
  const owed = (k) => () => phases[k].acked * subscribed;
  const unique = (k) => () => subs.delivered(k);
  for (let k = 0; k < phaseCount; k++) {
    current = k;
    const p = phases[k];
    p.start();
    const send = () => publish(publisher, o.room, true, window, p, k, events);
    if (k === 0) {
      await paced(o.rate, nowUs() + o.duration * 1e6, send);
    } else {
      const until = nowUs() + o['max-duration'] * 1e6;
      while (nowUs() < until) if (!(await send())) break;
    }
    p.end();
    await window.settle();
    // Quiet for 5 s before giving up: a subscriber thread working through a
    // backlog (max rate) can report nothing for 2 s, and its messages
    // would be counted lost while still arriving.
    drained.push(await drain(owed(k), unique(k), () => subs.total(), 5000, o.drain * 1000));
  }
  bar.stop();
  closes += await subs.collect(phases, events);

  const report = new Report('fanout', {
    urls: o.urls,
    subscribers: m,
    room: o.room,
    rate: o.rate,
    duration_s: o.duration,
    max_duration_s: o['max-duration'],
    inflight: o.inflight,
    workers: o.workers,
    ...dialect.current().params,
    versions: versions(),
  });
  report
    .section('setup', `fanout: ${m} subscribers on ${o.urls.length} node(s), room ${o.room}`)
    .int('subscribed', 'subscribers joined', subscribed)
    .events('setup_failures', 'set-up failures', failures);
  const titles = [`phase 1: ${o.rate} msg/s for ${o.duration} s`, `phase 2: max rate (${o.inflight} in flight) for ${o['max-duration']} s`];
  phases.forEach((p, k) => {
    report.section(['phase1', 'phase2'][k], titles[k]);
    phaseRows(report, p, p.acked * subscribed);
    report.num('drain_s', 'waited for late deliveries (s)', drained[k], 2);
  });
  report
    .section('gateways', 'fanout: connections and nodes')
    .int('closes', 'connections ended by the server', closes)
    .events('events', 'events', events.map);
  publisher.close();
  await subs.close();
  return report;
}

// ---------------------------------------------------------------- chat

// chat.rs: R rooms of K members (member i in room <prefix><i / K>, on node
// i mod U), each publishing at --rate from a random offset for --duration
// s and receiving its own messages too: each acked publish is owed to
// every member of its room.
async function scenarioChat(o) {
  const k = Math.max(1, o.members);
  const n = o.rooms * k;
  const roomOf = (i) => `${o.prefix}${Math.floor(i / k)}`;
  const phase = new Phase();
  const events = new Events();
  let closes = 0;
  const progress = { opened: 0, failed: 0 };
  const bar1 = new Progress(() => `chat: ${progress.opened}/${n} members open, ${progress.failed} failed`, o.quiet);
  const failures = {};
  const members = await openAndJoin(
    Array.from({ length: n }, (_, i) => i),
    connOpts(o, (i) => `c${i}`, progress),
    (i) => [roomOf(i)],
    (i, socket) => {
      recordMessages(socket, [phase], events);
      watchClose(socket, events, () => closes++);
    },
    failures,
  );
  bar1.stop();
  const joined = new Map();
  for (const [i] of members) joined.set(roomOf(i), (joined.get(roomOf(i)) || 0) + 1);
  const roomAcked = new Map();
  const onAck = (room) => roomAcked.set(room, (roomAcked.get(room) || 0) + 1);

  const rp = rate();
  const rd = rate();
  const bar = new Progress(
    () => `chat: ${phase.acked} acked (${rp(phase.acked).toFixed(0)}/s), ${rd(phase.delivered).toFixed(0)} deliveries/s, ${phase.duplicates} dup, ${closes} closes`,
    o.quiet,
  );
  phase.start();
  const base = nowUs();
  const until = base + o.duration * 1e6;
  const interval = 1e6 / Math.max(o.rate, 1e-3);
  await Promise.all(
    members.map(async ([i, socket]) => {
      const window = new Window(o.inflight);
      let next = base + interval * Math.random();
      while (next < until) {
        await sleep((next - nowUs()) / 1000);
        if (!(await publish(socket, roomOf(i), false, window, phase, 0, events, onAck))) return;
        next += interval;
      }
      await window.settle();
    }),
  );
  phase.end();
  const expected = () => [...roomAcked].reduce((sum, [room, acked]) => sum + acked * (joined.get(room) || 0), 0);
  const drained = await drain(expected, () => phase.delivered, () => phase.delivered + phase.duplicates, 2000, o.drain * 1000);
  bar.stop();

  const report = new Report('chat', {
    urls: o.urls,
    rooms: o.rooms,
    members: k,
    rate: o.rate,
    duration_s: o.duration,
    inflight: o.inflight,
    ...dialect.current().params,
    versions: versions(),
  });
  report
    .section('chat', `chat: ${o.rooms} rooms × ${k} members on ${o.urls.length} node(s), ${o.rate} msg/s per member for ${o.duration} s`)
    .int('members', 'members joined', members.length)
    .events('setup_failures', 'set-up failures', failures);
  phaseRows(report, phase, expected());
  report
    .num('drain_s', 'waited for late deliveries (s)', drained, 2)
    .int('closes', 'connections ended by the server', closes)
    .events('events', 'events', events.map);
  await closeAll(members.map(([, s]) => s));
  return report;
}

// ---------------------------------------------------------------- churn

// churn.rs: C churners (user k<i / conns-per-user>, so users hold several
// connections, on different nodes) each loop for --duration s: pick a room
// at random, leave it when in it, join it otherwise (at most --max-rooms),
// wait for the ack, repeat. P publishers are in every room and publish
// round-robin over them at --rate each; every connection receives. At the
// end, all still connected and quiet, the presence sets in Redis are
// compared exactly with what the acks said (users: SCARD presence:<room>;
// connections: the per-user counters); then all are closed and every room
// must empty.
async function scenarioChurn(o) {
  const c = o.conns;
  const perUser = Math.max(1, o['conns-per-user']);
  const rooms = Array.from({ length: Math.max(1, o.rooms) }, (_, r) => `${o.prefix}${r}`);
  const user = (i) => (i < c ? `k${Math.floor(i / perUser)}` : `p${i - c}`);
  const phase = new Phase();
  const events = new Events();
  let closes = 0;
  const setup = (i, socket) => {
    recordMessages(socket, [phase], events);
    watchClose(socket, events, () => closes++);
  };
  const redis = createClient({ url: o.redis });
  await redis.connect();

  const progress = { opened: 0, failed: 0 };
  const bar1 = new Progress(() => `churn: ${progress.opened} open, ${progress.failed} failed`, o.quiet);
  const failures = {};
  const opts = connOpts(o, user, progress);
  const publishers = await openAndJoin(Array.from({ length: o.publishers }, (_, j) => c + j), opts, () => rooms, setup, failures);
  const churners = await openAndJoin(Array.from({ length: c }, (_, i) => i), opts, () => [], setup, failures);
  bar1.stop();

  let joins = 0;
  let leaves = 0;
  const joinH = new Hist();
  const leaveH = new Hist();
  const rj = rate();
  const rl = rate();
  const bar = new Progress(
    () => `churn: ${rj(joins).toFixed(0)} joins/s, ${rl(leaves).toFixed(0)} leaves/s, ${phase.delivered} msgs delivered, ${closes} closes`,
    o.quiet,
  );
  const started = nowUs();
  const until = started + o.duration * 1e6;
  phase.start();
  const pubs = publishers.map(async ([, socket]) => {
    const window = new Window(64);
    let k = 0;
    await paced(o.rate, until, () => publish(socket, rooms[++k % rooms.length], false, window, phase, 0, events));
    await window.settle();
  });
  const churned = await Promise.all(
    churners.map(async ([i, socket]) => {
      const mine = new Set();
      let gone = false;
      while (nowUs() < until) {
        let r = Math.floor(Math.random() * rooms.length);
        let join = !mine.has(r);
        if (join && mine.size >= o['max-rooms']) {
          r = [...mine][Math.floor(Math.random() * mine.size)];
          join = false;
        }
        const t = nowUs();
        const reply = await request(socket, join ? 'join' : 'leave', { room: rooms[r] });
        const us = nowUs() - t;
        if (reply.error === 'closed') {
          gone = true;
          break;
        } else if (reply.error) {
          events.count(`${join ? 'join' : 'leave'} refused: ${reply.error}`);
        } else if (join) {
          mine.add(r);
          joins++;
          joinH.record(us);
        } else {
          mine.delete(r);
          leaves++;
          leaveH.record(us);
        }
      }
      return { i, mine, gone };
    }),
  );
  const churnSecs = (nowUs() - started) / 1e6;
  await Promise.all(pubs);
  phase.end();
  // Let the last deliveries arrive (nothing is owed exactly here).
  await drain(() => Infinity, () => phase.delivered, () => phase.delivered + phase.duplicates, 500, 5000);
  bar.stop();

  // What the acks say each room holds: churners still connected, and the
  // publishers in every room. Then what Redis says.
  const belief = new Map(rooms.map((r) => [r, { users: new Set(), conns: 0 }]));
  for (const d of churned.filter((d) => !d.gone)) {
    for (const r of d.mine) {
      belief.get(rooms[r]).users.add(user(d.i));
      belief.get(rooms[r]).conns++;
    }
  }
  for (const [j] of publishers) {
    for (const room of rooms) {
      belief.get(room).users.add(user(j));
      belief.get(room).conns++;
    }
  }
  const counts = await presenceCounts(redis, rooms);
  const mismatches = [];
  for (const [room, b] of belief) {
    const [users, conns] = counts.get(room);
    if (users !== b.users.size || conns !== b.conns) {
      mismatches.push(`${room}: Redis ${users} users / ${conns} conns, tool ${b.users.size} / ${b.conns}`);
    }
  }

  const report = new Report('churn', {
    urls: o.urls,
    conns: c,
    conns_per_user: perUser,
    rooms: rooms.length,
    max_rooms: o['max-rooms'],
    publishers: o.publishers,
    rate: o.rate,
    duration_s: o.duration,
    ...dialect.current().params,
    versions: versions(),
  });
  report
    .section('churn', `churn: ${c} connections over ${rooms.length} rooms, ${publishers.length} publishers × ${o.rate} msg/s, ${o.duration} s`)
    .int('churners', 'churning connections', churners.length)
    .events('setup_failures', 'set-up failures', failures)
    .int('joins', 'joins acked', joins)
    .int('leaves', 'leaves acked', leaves)
    .num('ops_per_s', 'join + leave / s', (joins + leaves) / churnSecs, 0)
    .latency('join_latency', 'join → ack p50 / p99 / p99.9 / max', joinH)
    .latency('leave_latency', 'leave → ack p50 / p99 / p99.9 / max', leaveH)
    .int('members_at_end', 'room memberships at the end (tool)', [...belief.values()].reduce((s, b) => s + b.conns, 0))
    .text(
      'room_count_exact',
      'presence sets exact (users and conns, every room)',
      mismatches.length ? `NO: ${mismatches.join('; ')}` : `yes (${rooms.length} rooms)`,
    );
  if (closes > churned.filter((d) => d.gone).length) {
    report.text('note', 'note', 'a publisher was closed by the server: counts may differ');
  }
  report.section('messages', 'churn: messages published meanwhile');
  phaseRows(report, phase);
  report.int('closes', 'connections ended by the server', closes).events('events', 'events', events.map);

  // Close everything; every room must empty (the nodes' disconnect
  // handlers take the connections out of the presence sets).
  const closing = nowUs();
  await closeAll([...churners, ...publishers].map(([, s]) => s));
  let emptied = null;
  let left = [];
  while ((nowUs() - closing) / 1e6 < 10) {
    const now = await presenceCounts(redis, rooms);
    left = [...now].filter(([, [u, n]]) => u !== 0 || n !== 0).map(([room, [u, n]]) => `${room}: ${u} users / ${n} conns`);
    if (!left.length) {
      emptied = (nowUs() - closing) / 1e6;
      break;
    }
    await sleep(100);
  }
  report.text(
    'rooms_empty_after_close',
    'every room count 0 after closing all',
    emptied !== null ? `yes, after ${emptied.toFixed(2)} s` : `NO after 10 s: ${left.join('; ')}`,
  );
  await redis.quit();
  return report;
}

/** Per room: [users in presence:<room>, sum of its per-user connection
 * counters presence:conns:<room>] (server.js keeps both). */
async function presenceCounts(redis, rooms) {
  const counts = new Map();
  for (const room of rooms) {
    const [users, perUser] = await Promise.all([redis.sCard(`presence:${room}`), redis.hVals(`presence:conns:${room}`)]);
    counts.set(room, [users, perUser.reduce((s, v) => s + Number(v), 0)]);
  }
  return counts;
}

// ---------------------------------------------------------------- main

/** CPU time so far, µs: this process (every thread) and the nodes. */
async function cpuNow(o) {
  const { user, system } = process.cpuUsage();
  const nodes = await Promise.all([...new Set(o.urls)].map(o.stats));
  return { driver: user + system, nodes: nodes.reduce((s, n) => s + (n ? n.cpu_us : 0), 0), at: nowUs() };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const run = { connect: scenarioConnect, fanout: scenarioFanout, chat: scenarioChat, churn: scenarioChurn }[o.scenario];
  const cpu0 = await cpuNow(o);
  const report = await run(o);
  // Who had the CPU: on a shared machine the driver's time is the nodes'
  // loss (Redis is not counted).
  const cpu1 = await cpuNow(o);
  const wall = (cpu1.at - cpu0.at) / 1e6;
  report
    .section('cpu', `CPU time over the whole scenario (${wall.toFixed(1)} s)`)
    .num('driver_cpu_s', 'driver CPU (s, all threads)', (cpu1.driver - cpu0.driver) / 1e6, 1)
    .num('nodes_cpu_s', `${dialect.current().nodesLabel} CPU (s, all)`, (cpu1.nodes - cpu0.nodes) / 1e6, 1)
    .num('wall_s', 'wall time (s)', wall, 1);
  const doc = report.json();
  if (o.save) fs.writeFileSync(o.save, JSON.stringify(doc, null, 2) + '\n');
  process.stdout.write(o.json ? JSON.stringify(doc, null, 2) + '\n' : report.table());
  // Sockets may still be closing; the figures are out.
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
