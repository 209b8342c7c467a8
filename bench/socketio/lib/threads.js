// Connections held by worker threads: the connect storm's connections and
// the fan-out's subscribers.
//
// Node runs JavaScript on one thread. Opening Socket.IO connections (token,
// WebSocket handshake, Socket.IO's connect packet) or decoding a Socket.IO
// packet (a WebSocket frame, then JSON.parse) for each of 1,000
// subscribers at a few hundred publishes a second is more than one thread
// does, and the driver would measure itself. With `workers` > 0 the
// connections are split over that many threads (broker-bench's runtime
// has as many threads as cores); with 0 they live on the main thread.
// process.hrtime is the process's clock, so publish → receive latency
// stays on one clock either way.
//
// Each part mirrors its counters into a SharedArrayBuffer every 100 ms
// (for the progress line and for waiting on late deliveries) and sends its
// histograms when asked, at the end.

const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');
const { openMany, request, sources, watchClose } = require('./client');
const { Phase, Events, recordMessages, sleep } = require('./stats');
const dialect = require('./dialect');

const FIELDS = 3; // per phase: delivered, duplicates, last delivery (µs)
// After the phases: opened, failed, closes.
const slots = (phases) => phases * FIELDS + 3;

const histJSON = (h) => ({ counts: h.counts, count: h.count, max: h.max });

/** One part, in this thread: opens (and joins) its connections, records
 * deliveries on `phases` phases, mirrors its counters into `shared`. */
function part(shared, phases) {
  const phase = Array.from({ length: phases }, () => new Phase());
  const events = new Events();
  const progress = { opened: 0, failed: 0 };
  let sockets = [];
  let closes = 0;
  const mirror = () => {
    phase.forEach((p, k) => {
      shared[k * FIELDS] = p.delivered;
      shared[k * FIELDS + 1] = p.duplicates;
      shared[k * FIELDS + 2] = p.lastDeliveryUs;
    });
    shared[phases * FIELDS] = progress.opened;
    shared[phases * FIELDS + 1] = progress.failed;
    shared[phases * FIELDS + 2] = closes;
  };
  const timer = setInterval(mirror, 100);
  timer.unref();
  return {
    /** Opens `indices` as users `prefix<i>` (`prefix<i % users>` when
     * `users`), then joins each to `rooms`. */
    async open({ indices, urls, prefix, users, rooms, secret, concurrency, nsources, timeoutMs }) {
      const opened = await openMany(indices, {
        urls,
        userOf: (i) => `${prefix}${users ? i % users : i}`,
        secret,
        concurrency,
        srcs: sources(urls, nsources),
        timeoutMs,
        progress,
      });
      const failures = {};
      for (const [kind, n] of Object.entries(opened.failures)) failures[`connect: ${kind}`] = n;
      // Handlers first, then the joins, `concurrency` at a time.
      let next = 0;
      const joined = [];
      const lane = async () => {
        while (next < opened.conns.length) {
          const [, socket] = opened.conns[next++];
          recordMessages(socket, phase, events);
          watchClose(socket, events, () => closes++);
          let failed = null;
          for (const room of rooms) {
            const r = await request(socket, 'join', { room });
            if (r.error) {
              failed = `join: ${r.error}`;
              break;
            }
          }
          if (failed) failures[failed] = (failures[failed] || 0) + 1;
          else joined.push(socket);
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, concurrency) }, lane));
      sockets = opened.conns.map(([, s]) => s);
      mirror();
      return { opened: opened.conns.length, joined: joined.length, failures, handshake: histJSON(opened.handshake) };
    },
    collect() {
      mirror();
      return {
        phases: phase.map((p) => ({
          delivered: p.delivered,
          duplicates: p.duplicates,
          lastDeliveryUs: p.lastDeliveryUs,
          latency: histJSON(p.latency),
        })),
        events: events.map,
        closes,
      };
    },
    ping() {
      return true;
    },
    async close() {
      for (const s of sockets) s.close();
      sockets = [];
      mirror();
      await sleep(100); // the close frames leave
    },
  };
}

// ---------------------------------------------------------------- worker side
if (!isMainThread && workerData && workerData.role === 'conns') {
  dialect.use(workerData.dialect);
  const me = part(new Float64Array(workerData.shared), workerData.phases);
  parentPort.on('message', async ({ id, op, args }) => {
    parentPort.postMessage({ id, result: await me[op](args) });
  });
}

// ---------------------------------------------------------------- main side

/** Connections in `workers` threads (0: this thread), recording `phases`
 * publish phases; each thread speaks this thread's dialect. */
class Threads {
  constructor(workers, phases = 0) {
    this.phases = phases;
    const n = Math.max(1, workers);
    this.shared = Array.from({ length: n }, () => new Float64Array(new SharedArrayBuffer(8 * slots(phases))));
    if (workers > 0) {
      const calls = new Map();
      let nextId = 0;
      this.workers = this.shared.map((s) => {
        const w = new Worker(__filename, { workerData: { role: 'conns', shared: s.buffer, phases, dialect: dialect.current().name } });
        w.on('message', ({ id, result }) => {
          calls.get(id)(result);
          calls.delete(id);
        });
        w.on('error', (err) => {
          console.error('connection thread:', err);
          process.exit(1);
        });
        return w;
      });
      this.parts = this.workers.map(
        (w) => (op, args) =>
          new Promise((resolve) => {
            const id = nextId++;
            calls.set(id, resolve);
            w.postMessage({ id, op, args });
          }),
      );
    } else {
      const local = part(this.shared[0], phases);
      this.workers = [];
      this.parts = [async (op, args) => local[op](args)];
    }
  }

  /** Resolves once every thread has loaded and answers. */
  async ready() {
    await Promise.all(this.parts.map((call) => call('ping')));
  }

  /** Opens connections `indices` and joins each to `opts.rooms`, split
   * round-robin over the threads (so each holds a share of every node's),
   * `opts.concurrency` in flight in all. Resolves `{opened, joined,
   * failures, handshake: [histograms]}`. */
  async open(indices, opts) {
    const n = this.parts.length;
    const concurrency = Math.max(1, Math.ceil(opts.concurrency / n));
    const done = await Promise.all(
      this.parts.map((call, w) => call('open', { ...opts, concurrency, indices: indices.filter((_, k) => k % n === w) })),
    );
    const out = { opened: 0, joined: 0, failures: {}, handshake: [] };
    for (const d of done) {
      out.opened += d.opened;
      out.joined += d.joined;
      out.handshake.push(d.handshake);
      for (const [k, v] of Object.entries(d.failures)) out.failures[k] = (out.failures[k] || 0) + v;
    }
    return out;
  }

  sum(slot) {
    return this.shared.reduce((s, a) => s + a[slot], 0);
  }

  /** Unique deliveries of phase `k` so far (all threads). */
  delivered(k) {
    return this.sum(k * FIELDS);
  }

  duplicates(k) {
    return this.sum(k * FIELDS + 1);
  }

  /** Every delivery of every phase, duplicates included. */
  total() {
    let s = 0;
    for (let k = 0; k < this.phases; k++) s += this.delivered(k) + this.duplicates(k);
    return s;
  }

  opened() {
    return this.sum(this.phases * FIELDS);
  }

  failed() {
    return this.sum(this.phases * FIELDS + 1);
  }

  closes() {
    return this.sum(this.phases * FIELDS + 2);
  }

  /** Adds every thread's figures into `phases` (Phase objects) and
   * `events`; resolves how many connections the server ended. */
  async collect(phases, events) {
    const all = await Promise.all(this.parts.map((call) => call('collect')));
    let closes = 0;
    for (const r of all) {
      r.phases.forEach((p, k) => phases[k].absorb(p));
      events.addAll(r.events);
      closes += r.closes;
    }
    return closes;
  }

  /** Closes every connection, then ends the threads. */
  async close() {
    await Promise.all(this.parts.map((call) => call('close')));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

module.exports = { Threads };
