// Load driver for the Socket.IO peer: the same four scenarios as
// broker-bench (bench/src/scenario/*.rs), the same parameters, and results
// in the same JSON shape ({scenario, params, results: {section: {key}}}),
// so scripts/bench-report.py can put both side by side.
//
//   node driver.js connect --url http://127.0.0.1:3001 -n 10000 --concurrency 100 --idle 5
//   node driver.js fanout  --url U1 --url U2 -m 1000 --rate 100 --duration 10 --max-duration 10 --inflight 64
//   node driver.js chat    --url U1 --url U2 -r 100 -k 10 --rate 1 --duration 10
//   node driver.js churn   --url U1 --url U2 --redis redis://... -c 200 --rooms 20 -p 2 --rate 100 --duration 10
//   (--secret S or JWT_SECRET; --save FILE writes the JSON)
//
// Latency is publish → receive on one clock (the payload carries the send
// time in µs). The driver is one Node process: at the highest rates it may
// be the bottleneck itself, as broker-bench may be for ours; both share the
// machine's cores with the servers and Redis.

const { io } = require('socket.io-client');
const jwt = require('jsonwebtoken');
const { createClient } = require('redis');
const fs = require('node:fs');

// ---------------------------------------------------------------- options
function parseArgs(argv) {
  const opts = { urls: [], scenario: argv[0] };
  const alias = { '-n': 'conns', '-m': 'members', '-r': 'rooms', '-k': 'k', '-c': 'churners', '-p': 'publishers' };
  for (let i = 1; i < argv.length; i++) {
    let key = argv[i];
    key = alias[key] || key.replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = argv[i + 1];
    if (key === 'url') opts.urls.push(value);
    else opts[key] = value;
    i++;
  }
  const num = (k, d) => (opts[k] === undefined ? d : Number(opts[k]));
  return {
    scenario: opts.scenario,
    urls: opts.urls.length ? opts.urls : ['http://127.0.0.1:3001'],
    secret: opts.secret || process.env.JWT_SECRET || 'bench-secret',
    save: opts.save,
    redis: opts.redis || 'redis://127.0.0.1:6379',
    conns: num('conns', 10000),
    concurrency: num('concurrency', 100),
    idle: num('idle', 5),
    members: num('members', 1000),
    rate: num('rate', 100),
    duration: num('duration', 10),
    maxDuration: num('maxDuration', 10),
    inflight: num('inflight', 64),
    rooms: num('rooms', 100),
    k: num('k', 10),
    churners: num('churners', 200),
    publishers: num('publishers', 2),
  };
}

// ---------------------------------------------------------------- helpers
const nowUs = () => Number(process.hrtime.bigint() / 1000n);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function token(secret, user) {
  return jwt.sign({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 }, secret, { algorithm: 'HS256' });
}

/** Latency samples in µs; percentiles in ms like broker-bench's. */
class Hist {
  constructor() {
    this.v = [];
  }
  record(us) {
    this.v.push(us);
  }
  json() {
    if (!this.v.length) return null;
    const s = Float64Array.from(this.v).sort();
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))] / 1000;
    return { p50_ms: q(0.5), p99_ms: q(0.99), p999_ms: q(0.999), max_ms: s[s.length - 1] / 1000, count: s.length };
  }
}

function connect(url, user, secret, timeoutMs = 10000) {
  return new Promise((resolve, reject) => {
    const started = nowUs();
    const socket = io(url, {
      transports: ['websocket'],
      auth: { token: token(secret, user) },
      reconnection: false,
      forceNew: true,
      timeout: timeoutMs,
    });
    const timer = setTimeout(() => {
      socket.close();
      reject(new Error('timeout'));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      resolve({ socket, us: nowUs() - started });
    });
    socket.once('connect_error', (err) => {
      clearTimeout(timer);
      socket.close();
      reject(err);
    });
  });
}

function request(socket, event, payload, timeoutMs = 10000) {
  return new Promise((resolve) => {
    socket.timeout(timeoutMs).emit(event, payload, (err, reply) => resolve(err ? { error: 'timeout' } : reply));
  });
}

async function rss(url) {
  try {
    const res = await fetch(new URL('/rss', url));
    return (await res.json()).rss;
  } catch (err) {
    return null;
  }
}

/** Runs `make(i)` for i in 0..n with at most `limit` in flight. */
async function pool(n, limit, make) {
  const out = new Array(n);
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      out[i] = await make(i).then((v) => ({ ok: v }), (e) => ({ err: e }));
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return out;
}

function progress(line) {
  if (process.stderr.isTTY) process.stderr.write(`\r${line}   `);
}

/** A publish phase's counters, with the rows broker-bench's phase_rows writes. */
class Phase {
  constructor() {
    this.sent = 0;
    this.acked = 0;
    this.refused = 0;
    this.delivered = 0;
    this.duplicates = 0;
    this.ack = new Hist();
    this.latency = new Hist();
    this.started = 0;
    this.ended = 0;
    this.lastDelivery = 0;
  }
  rows(expected) {
    const pubS = Math.max(1e-9, (this.ended - this.started) / 1e6);
    const delS = Math.max(1e-9, (Math.max(this.lastDelivery, this.started) - this.started) / 1e6);
    const r = {
      published: this.sent,
      acked: this.acked,
      refused: this.refused,
      publish_per_s: this.acked / pubS,
      ack_latency: this.ack.json(),
      delivered: this.delivered,
      delivered_per_s: this.delivered / delS,
      duplicates: this.duplicates,
      latency: this.latency.json(),
    };
    if (expected !== undefined) {
      r.expected = expected;
      r.lost = Math.max(0, expected - this.delivered);
    }
    return r;
  }
}

/** Sequence numbers seen per (receiver, room): everything up to `floor`
 * plus the few above it that came early (Socket.IO does not keep the order
 * between publishers, so a lower seq may arrive after a higher one). */
class Seen {
  constructor() {
    this.floor = 0;
    this.above = new Set();
  }
  /** False when `seq` was seen already. */
  add(seq) {
    if (seq <= this.floor || this.above.has(seq)) return false;
    this.above.add(seq);
    while (this.above.delete(this.floor + 1)) this.floor++;
    return true;
  }
}

/** Records a received message on `phases` (by the payload's phase). */
function receiver(phases, seen) {
  return (socket, key) => {
    socket.on('msg', (m) => {
      const d = m && m.data;
      if (!d || typeof d.t !== 'number') return;
      const p = phases[d.p];
      if (!p) return;
      const k = `${key}|${m.room}`;
      let s = seen.get(k);
      if (!s) {
        s = new Seen();
        seen.set(k, s);
      }
      if (!s.add(m.seq)) {
        p.duplicates++;
        return;
      }
      p.delivered++;
      const now = nowUs();
      p.lastDelivery = now;
      p.latency.record(now - d.t);
    });
  };
}

async function publishAt(socket, rooms, phase, p, rate, seconds) {
  const until = nowUs() + seconds * 1e6;
  const every = 1e6 / rate;
  let next = nowUs();
  let i = 0;
  const pending = [];
  while (nowUs() < until) {
    const room = rooms[i++ % rooms.length];
    phase.sent++;
    const t = nowUs();
    pending.push(
      request(socket, 'pub', { room, ev: 'm', data: { t, p }, others: false }).then((r) => {
        if (r && typeof r.seq === 'number') {
          phase.acked++;
          phase.ack.record(nowUs() - t);
        } else phase.refused++;
      }),
    );
    next += every;
    const wait = (next - nowUs()) / 1000;
    if (wait > 0) await sleep(wait);
    else if (i % 64 === 0) await sleep(0);
  }
  await Promise.all(pending);
}

async function drain(owed, phase, quietMs = 2000, maxMs = 10000) {
  const started = Date.now();
  let last = phase.delivered;
  let lastChange = Date.now();
  while (phase.delivered < owed() && Date.now() - started < maxMs) {
    await sleep(50);
    if (phase.delivered !== last) {
      last = phase.delivered;
      lastChange = Date.now();
    } else if (Date.now() - lastChange > quietMs) break;
  }
  return (Date.now() - started) / 1000;
}

// ---------------------------------------------------------------- scenarios
async function scenarioConnect(o) {
  const before = await rss(o.urls[0]);
  const hs = new Hist();
  const failures = {};
  const started = nowUs();
  const results = await pool(o.conns, o.concurrency, async (i) => {
    const c = await connect(o.urls[0], `u${i}`, o.secret);
    hs.record(c.us);
    if (i % 500 === 0) progress(`connect: ${i}/${o.conns}`);
    return c.socket;
  });
  const elapsed = (nowUs() - started) / 1e6;
  const sockets = results.filter((r) => r.ok).map((r) => r.ok);
  for (const r of results) if (r.err) failures[r.err.message] = (failures[r.err.message] || 0) + 1;
  await sleep(o.idle * 1000);
  const after = await rss(o.urls[0]);
  const res = {
    attempted: o.conns,
    opened: sockets.length,
    failed: o.conns - sockets.length,
    failures,
    elapsed_s: elapsed,
    conns_per_s: sockets.length / elapsed,
    handshake: hs.json(),
  };
  if (before !== null && after !== null) {
    res.rss_before_mib = before / 1048576;
    res.rss_after_mib = after / 1048576;
    if (sockets.length) res.rss_per_conn_kib = (after - before) / sockets.length / 1024;
  }
  for (const s of sockets) s.close();
  return { connect: res };
}

async function scenarioFanout(o) {
  const room = 'chat:fanout';
  const phases = [new Phase(), new Phase()];
  const onMsg = receiver(phases, new Map());
  const subs = await pool(o.members, o.concurrency, async (i) => {
    const { socket } = await connect(o.urls[i % o.urls.length], `s${i}`, o.secret);
    onMsg(socket, i);
    const r = await request(socket, 'join', { room });
    if (r.error) throw new Error(r.error);
    return socket;
  });
  const subscribed = subs.filter((r) => r.ok).length;
  const { socket: publisher } = await connect(o.urls[0], 'publisher', o.secret);
  await request(publisher, 'join', { room });
  const pubOthers = (p) => ({ room, ev: 'm', data: { t: nowUs(), p }, others: true });

  // Phase 1: a fixed rate.
  const p1 = phases[0];
  p1.started = nowUs();
  {
    const until = nowUs() + o.duration * 1e6;
    const every = 1e6 / o.rate;
    let next = nowUs();
    const pending = [];
    while (nowUs() < until) {
      const payload = pubOthers(0);
      p1.sent++;
      pending.push(
        request(publisher, 'pub', payload).then((r) => {
          if (r && typeof r.seq === 'number') {
            p1.acked++;
            p1.ack.record(nowUs() - payload.data.t);
          } else p1.refused++;
        }),
      );
      next += every;
      const wait = (next - nowUs()) / 1000;
      if (wait > 0) await sleep(wait);
      progress(`fanout phase 1: ${p1.delivered} delivered`);
    }
    await Promise.all(pending);
  }
  p1.ended = nowUs();
  const drain1 = await drain(() => p1.acked * subscribed, p1);

  // Phase 2: as fast as acks come back, `inflight` at a time.
  const p2 = phases[1];
  p2.started = nowUs();
  {
    const until = nowUs() + o.maxDuration * 1e6;
    async function lane() {
      while (nowUs() < until) {
        const payload = pubOthers(1);
        p2.sent++;
        const r = await request(publisher, 'pub', payload);
        if (r && typeof r.seq === 'number') {
          p2.acked++;
          p2.ack.record(nowUs() - payload.data.t);
        } else p2.refused++;
        if (p2.sent % 200 === 0) progress(`fanout phase 2: ${p2.delivered} delivered`);
      }
    }
    await Promise.all(Array.from({ length: o.inflight }, lane));
  }
  p2.ended = nowUs();
  const drain2 = await drain(() => p2.acked * subscribed, p2);
  publisher.close();
  for (const r of subs) if (r.ok) r.ok.close();
  return {
    setup: { subscribed },
    phase1: { ...p1.rows(p1.acked * subscribed), drain_s: drain1 },
    phase2: { ...p2.rows(p2.acked * subscribed), drain_s: drain2 },
  };
}

async function scenarioChat(o) {
  const phase = new Phase();
  const onMsg = receiver([phase], new Map());
  const members = [];
  const joined = new Map();
  const results = await pool(o.rooms * o.k, o.concurrency, async (i) => {
    const room = `chat:r${Math.floor(i / o.k)}`;
    const { socket } = await connect(o.urls[i % o.urls.length], `c${i}`, o.secret);
    onMsg(socket, i);
    const r = await request(socket, 'join', { room });
    if (r.error) throw new Error(r.error);
    joined.set(room, (joined.get(room) || 0) + 1);
    return { socket, room };
  });
  for (const r of results) if (r.ok) members.push(r.ok);
  const ackedPerRoom = new Map();
  phase.started = nowUs();
  const spread = 1000 / Math.max(o.rate, 1e-9);
  await Promise.all(
    members.map(async (m, i) => {
      await sleep((i / members.length) * spread);
      const local = new Phase();
      await publishAt(m.socket, [m.room], local, 0, o.rate, o.duration);
      phase.sent += local.sent;
      phase.acked += local.acked;
      phase.refused += local.refused;
      for (const v of local.ack.v) phase.ack.record(v);
      ackedPerRoom.set(m.room, (ackedPerRoom.get(m.room) || 0) + local.acked);
    }),
  );
  phase.ended = nowUs();
  const owed = () => [...ackedPerRoom].reduce((s, [room, n]) => s + n * (joined.get(room) || 0), 0);
  const drained = await drain(owed, phase);
  for (const m of members) m.socket.close();
  return { chat: { members: members.length, ...phase.rows(owed()), drain_s: drained } };
}

async function scenarioChurn(o) {
  const rooms = Array.from({ length: o.rooms }, (_, i) => `chat:churn${i}`);
  const belief = new Map(rooms.map((r) => [r, new Set()]));
  const phase = new Phase();
  const onMsg = receiver([phase], new Map());
  const churners = (
    await pool(o.churners, o.concurrency, async (i) => {
      const user = `k${i}`;
      const { socket } = await connect(o.urls[i % o.urls.length], user, o.secret);
      return { socket, user, mine: new Set() };
    })
  )
    .filter((r) => r.ok)
    .map((r) => r.ok);
  const publishers = [];
  for (let i = 0; i < o.publishers; i++) {
    const user = `p${i}`;
    const { socket } = await connect(o.urls[i % o.urls.length], user, o.secret);
    onMsg(socket, `p${i}`);
    for (const room of rooms) {
      await request(socket, 'join', { room });
      belief.get(room).add(user);
    }
    publishers.push(socket);
  }
  const joinH = new Hist();
  const leaveH = new Hist();
  let joins = 0;
  let leaves = 0;
  const until = nowUs() + o.duration * 1e6;
  phase.started = nowUs();
  const churn = churners.map(async (c) => {
    while (nowUs() < until) {
      const room = rooms[Math.floor(Math.random() * rooms.length)];
      const join = !c.mine.has(room);
      const t = nowUs();
      const r = await request(c.socket, join ? 'join' : 'leave', { room });
      if (r && !r.error) {
        if (join) {
          joins++;
          joinH.record(nowUs() - t);
          c.mine.add(room);
          belief.get(room).add(c.user);
        } else {
          leaves++;
          leaveH.record(nowUs() - t);
          c.mine.delete(room);
          belief.get(room).delete(c.user);
        }
      }
      if ((joins + leaves) % 1000 === 0) progress(`churn: ${joins + leaves} ops`);
    }
  });
  const pubs = publishers.map((s) => publishAt(s, rooms, phase, 0, o.rate, o.duration));
  await Promise.all([...churn, ...pubs]);
  phase.ended = nowUs();
  const seconds = o.duration;
  await sleep(500);
  // The presence sets in Redis must match what the acks said.
  const redis = createClient({ url: o.redis });
  await redis.connect();
  const mismatches = [];
  for (const room of rooms) {
    const n = await redis.sCard(`presence:${room}`);
    if (n !== belief.get(room).size) mismatches.push(`${room}: redis ${n}, acked ${belief.get(room).size}`);
  }
  await redis.quit();
  for (const c of churners) c.socket.close();
  for (const s of publishers) s.close();
  return {
    churn: {
      churners: churners.length,
      joins,
      leaves,
      ops_per_s: (joins + leaves) / seconds,
      join_latency: joinH.json(),
      leave_latency: leaveH.json(),
      room_count_exact: mismatches.length ? `NO: ${mismatches.slice(0, 5).join('; ')}` : `yes (${rooms.length} rooms)`,
    },
    messages: phase.rows(),
  };
}

// ---------------------------------------------------------------- output
function table(results) {
  const lines = [];
  for (const [section, rows] of Object.entries(results)) {
    lines.push(`| ${section} | |`, '|---|---:|');
    for (const [k, v] of Object.entries(rows)) {
      let shown = v;
      if (v && typeof v === 'object' && 'p50_ms' in v) {
        shown = `${v.p50_ms.toFixed(2)} / ${v.p99_ms.toFixed(2)} / ${v.p999_ms.toFixed(2)} / ${v.max_ms.toFixed(2)} ms`;
      } else if (typeof v === 'number') shown = Number.isInteger(v) ? v : v.toFixed(2);
      else if (v && typeof v === 'object') shown = JSON.stringify(v);
      lines.push(`| ${k} | ${shown} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const run = { connect: scenarioConnect, fanout: scenarioFanout, chat: scenarioChat, churn: scenarioChurn }[o.scenario];
  if (!run) {
    console.error('usage: node driver.js connect|fanout|chat|churn [options]');
    process.exit(2);
  }
  const results = await run(o);
  if (process.stderr.isTTY) process.stderr.write('\n');
  const doc = { scenario: o.scenario, params: o, results, peer: 'socket.io' };
  if (o.save) fs.writeFileSync(o.save, JSON.stringify(doc, null, 2) + '\n');
  console.log(table(results));
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
