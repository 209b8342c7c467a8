// Accounting, as broker-bench's bench/src/stats.rs does it: latency
// histograms, the counters of a publish phase, the live progress line, and
// the report (Markdown tables on stdout, JSON in the same shape and with
// the same keys as broker-bench's `--save`).

const dialect = require('./dialect');

// ---------------------------------------------------------------- histogram

// Latencies in µs, 1 µs to 60 s, at least 3 significant digits, in fixed
// buckets like an HDR histogram: values below 2048 each have their bucket,
// above that each power of two is cut into 1024 buckets. About 18,000
// counters (72 KiB) whatever the number of samples, and two histograms
// merge by adding their counters (what the worker threads send back).
const SUB = 1024;
const MAX_US = 60_000_000;
const BUCKETS = (Math.ceil(Math.log2(MAX_US / SUB)) + 1) * SUB;

function bucketOf(us) {
  if (us < 2 * SUB) return us;
  const e = 31 - Math.clz32(us) - 10; // us >> e is in [1024, 2048)
  return (e + 1) * SUB + (us >>> e) - SUB;
}

/** The highest value that falls in bucket `b` (what HDR reports). */
function highestOf(b) {
  if (b < 2 * SUB) return b;
  const e = Math.floor(b / SUB) - 1;
  const m = (b % SUB) + SUB;
  return ((m + 1) << e) - 1;
}

class Hist {
  constructor() {
    this.counts = new Uint32Array(BUCKETS);
    this.count = 0;
    this.max = 0;
  }

  /** Records one latency in µs (clamped to the bounds, as broker-bench). */
  record(us) {
    const v = Math.min(MAX_US, Math.max(1, Math.round(us)));
    this.counts[bucketOf(v)]++;
    this.count++;
    if (v > this.max) this.max = v;
  }

  /** Adds another histogram, or its `toJSON()` as sent by a worker. */
  add(other) {
    const counts = other.counts;
    for (let i = 0; i < BUCKETS; i++) if (counts[i]) this.counts[i] += counts[i];
    this.count += other.count;
    this.max = Math.max(this.max, other.max);
  }

  /** The value at quantile `q` in µs (HDR's value_at_quantile). */
  quantile(q) {
    const rank = Math.max(1, Math.ceil(q * this.count));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(highestOf(i), this.max);
    }
    return this.max;
  }

  /** broker-bench's latency object, or null when empty. */
  summary() {
    if (!this.count) return null;
    const q = (p) => this.quantile(p) / 1000;
    return { p50_ms: q(0.5), p99_ms: q(0.99), p999_ms: q(0.999), max_ms: this.max / 1000, count: this.count };
  }
}

// ---------------------------------------------------------------- clock

/** Now in µs on the monotonic clock every thread of the process shares:
 * the publisher writes it into the payload, receivers subtract it. */
const nowUs = () => Number(process.hrtime.bigint() / 1000n);

// ---------------------------------------------------------------- phases

/** The figures of one publish phase (stats.rs `Phase`). `delivered`
 * counts unique deliveries; duplicates apart. */
class Phase {
  constructor() {
    this.sent = 0;
    this.acked = 0;
    this.refused = 0;
    this.delivered = 0;
    this.duplicates = 0;
    this.startedUs = 0;
    this.endedUs = 0;
    this.lastDeliveryUs = 0;
    this.latency = new Hist();
    this.ack = new Hist();
  }

  start() {
    this.startedUs = nowUs();
  }

  end() {
    this.endedUs = nowUs();
  }

  /** Adds what a worker thread counted for this phase. */
  absorb(w) {
    this.delivered += w.delivered;
    this.duplicates += w.duplicates;
    this.lastDeliveryUs = Math.max(this.lastDeliveryUs, w.lastDeliveryUs);
    this.latency.add(w.latency);
  }
}

/** Sequence numbers one connection saw in one room: everything up to
 * `floor`, plus those above it that came early. Socket.IO keeps no order
 * between publishers (nor between the two nodes' Pub/Sub relays), so a
 * lower seq arriving after a higher one is not a duplicate; a seq seen
 * before is. A connection that was out of the room for a while has gaps
 * that never fill: past WINDOW early ones, the floor jumps to the lowest
 * (seqs below it count as seen: duplicates are looked for in a window of
 * the last WINDOW messages). */
const WINDOW = 1024;

class Seen {
  constructor() {
    this.floor = 0; // seqs start at 1 (INCR on a fresh Redis)
    this.above = new Set();
  }

  /** False when `seq` was seen already. */
  add(seq) {
    if (seq <= this.floor || this.above.has(seq)) return false;
    if (seq === this.floor + 1) {
      this.floor = seq; // the usual case: in order
    } else {
      this.above.add(seq);
      if (this.above.size > WINDOW) this.floor = Math.min(...this.above) - 1;
    }
    if (this.above.size) while (this.above.delete(this.floor + 1)) this.floor++;
    return true;
  }
}

/** Makes `socket` record the room messages it receives on `phases` (the
 * payload `{t, p}` names the send time and the phase); `events` counts
 * anything unexpected. How a message arrives is the dialect's
 * (lib/dialect.js). */
function recordMessages(socket, phases, events) {
  const seen = new Map(); // room -> Seen
  dialect.current().onMessage(socket, (room, seq, d) => {
    const p = d && phases[d.p];
    if (!p || typeof d.t !== 'number' || typeof seq !== 'number') {
      events.count('msg with a payload the tool did not send');
      return;
    }
    let s = seen.get(room);
    if (!s) seen.set(room, (s = new Seen()));
    const now = nowUs();
    p.lastDeliveryUs = now;
    if (!s.add(seq)) {
      p.duplicates++;
      return;
    }
    p.delivered++;
    p.latency.record(now - d.t);
  });
}

/** Counted events by description (refusals, closes, stray frames). */
class Events {
  constructor() {
    this.map = {};
  }

  count(what, n = 1) {
    this.map[what] = (this.map[what] || 0) + n;
  }

  addAll(map) {
    for (const [k, n] of Object.entries(map)) this.count(k, n);
  }
}

/** Waits until `unique()` reaches `owed()`, or deliveries stop for
 * `quietMs`, or `maxMs` passes; returns the seconds waited (stats.rs
 * `Recorder::drain`). */
async function drain(owed, unique, total, quietMs, maxMs) {
  const start = Date.now();
  let last = total();
  let lastChange = Date.now();
  for (;;) {
    if (unique() >= owed() || Date.now() - start >= maxMs || Date.now() - lastChange >= quietMs) {
      return (Date.now() - start) / 1000;
    }
    await sleep(50);
    const now = total();
    if (now !== last) {
      last = now;
      lastChange = Date.now();
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

// ---------------------------------------------------------------- progress

/** The live progress line on stderr: rewritten in place every second on a
 * terminal, one line every 2 s otherwise (logs). */
class Progress {
  constructor(line, quiet = false) {
    this.tty = Boolean(process.stderr.isTTY);
    const start = Date.now();
    this.timer = quiet
      ? null
      : setInterval(
          () => {
            const text = `[${((Date.now() - start) / 1000).toFixed(1).padStart(6)}s] ${line()}`;
            process.stderr.write(this.tty ? `\r\x1b[K${text}` : `${text}\n`);
          },
          this.tty ? 1000 : 2000,
        );
  }

  stop() {
    if (this.timer) clearInterval(this.timer);
    if (this.timer && this.tty) process.stderr.write('\r\x1b[K');
  }
}

/** A per-second rate of a counter since the last call. */
function rate() {
  let last = 0;
  let at = Date.now();
  return (now) => {
    const secs = Math.max(1e-3, (Date.now() - at) / 1000);
    const r = (now - last) / secs;
    last = now;
    at = Date.now();
    return r;
  };
}

// ---------------------------------------------------------------- report

/** `1234567` → `1,234,567`. */
const group = (n) => Math.round(n).toLocaleString('en-US');

function ms(x) {
  if (x >= 100) return x.toFixed(0);
  if (x >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** Sections of rows, printed as Markdown tables or as one JSON object
 * (stats.rs `Report`): the same keys, labels and number formats. */
class Report {
  constructor(scenario, params) {
    this.scenario = scenario;
    this.params = params;
    this.sections = []; // [key, title, rows: [key, label, value, shown]]
  }

  section(key, title) {
    this.sections.push([key, title, []]);
    return this;
  }

  push(key, label, value, shown) {
    if (!this.sections.length) this.section(this.scenario, this.scenario);
    this.sections[this.sections.length - 1][2].push([key, label, value, shown]);
    return this;
  }

  int(key, label, n) {
    return this.push(key, label, n, group(n));
  }

  num(key, label, x, decimals) {
    if (!Number.isFinite(x)) return this.push(key, label, null, String(x));
    const shown = Math.abs(x) >= 1000 && decimals <= 1 ? group(x) : x.toFixed(decimals);
    return this.push(key, label, x, shown);
  }

  text(key, label, s) {
    return this.push(key, label, s, s);
  }

  latency(key, label, hist) {
    const v = hist.summary();
    if (!v) return this.push(key, label, null, '-');
    return this.push(key, label, v, `${ms(v.p50_ms)} / ${ms(v.p99_ms)} / ${ms(v.p999_ms)} / ${ms(v.max_ms)} ms`);
  }

  events(key, label, map) {
    const entries = Object.entries(map).sort(([a], [b]) => (a < b ? -1 : 1));
    const shown = entries.length ? entries.map(([k, n]) => `${n} × ${k}`).join('; ') : 'none';
    return this.push(key, label, Object.fromEntries(entries), shown);
  }

  table() {
    let out = '';
    for (const [, title, rows] of this.sections) {
      out += `| ${title} | |\n|---|---:|\n`;
      for (const [, label, , shown] of rows) out += `| ${label} | ${String(shown).replaceAll('|', '/')} |\n`;
      out += '\n';
    }
    return out;
  }

  json() {
    const results = {};
    for (const [key, , rows] of this.sections) {
      results[key] = Object.fromEntries(rows.map(([k, , v]) => [k, v]));
    }
    return { scenario: this.scenario, params: this.params, results };
  }
}

/** The rows of a publish phase (stats.rs `phase_rows`); `expected` is the
 * number of deliveries owed, when the scenario knows it. */
function phaseRows(report, p, expected) {
  const pubSecs = Math.max(1e-9, (Math.max(p.endedUs, p.startedUs) - p.startedUs) / 1e6);
  const deliverSecs = Math.max(1e-9, (Math.max(p.lastDeliveryUs, p.startedUs) - p.startedUs) / 1e6);
  report
    .int('published', 'publishes sent', p.sent)
    .int('acked', 'publishes acked', p.acked)
    .int('refused', 'publishes refused or lost', p.refused)
    .num('publish_per_s', 'publishes acked / s', p.acked / pubSecs, 1)
    .latency('ack_latency', 'pub → ack p50 / p99 / p99.9 / max', p.ack);
  if (expected !== undefined) report.int('expected', 'deliveries expected', expected);
  report.int('delivered', 'deliveries (unique)', p.delivered);
  report.num('delivered_per_s', 'deliveries / s', p.delivered / deliverSecs, 0);
  if (expected !== undefined) {
    report.int('lost', 'lost', Math.max(0, expected - p.delivered));
    if (p.delivered > expected) report.int('unexpected', 'unexpected extra deliveries', p.delivered - expected);
  }
  report
    .int('duplicates', 'duplicates', p.duplicates)
    .latency('latency', 'publish → receive p50 / p99 / p99.9 / max', p.latency);
}

module.exports = {
  Hist,
  Phase,
  Seen,
  Events,
  Report,
  Progress,
  recordMessages,
  phaseRows,
  drain,
  rate,
  sleep,
  nowUs,
  group,
};
