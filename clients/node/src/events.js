// The lifecycle stream read in a consumer group (at least once).

import { send, ready, replyIs } from './command.js';
import { EVENTS_STREAM, eventStreamsFromSlots } from './slot.js';

const TYPES = new Set(['connect', 'disconnect', 'join', 'leave', 'online', 'offline']);

/** Fields of a stream entry ([f, v, f, v...]) as an object of strings. */
function fieldsOf(flat) {
  const out = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[String(flat[i])] = String(flat[i + 1]);
  return out;
}

/** The event the iterator yields for one entry. */
export function toEvent(stream, id, f) {
  const ev = { id, stream, type: f.type ?? '', user: f.user ?? '', conn: f.conn ?? '', node: f.node ?? '', ts: Number(f.ts ?? 0) };
  if (f.room != null) ev.room = f.room;
  if (f.reason != null) ev.reason = f.reason;
  if (f.duration_ms != null) ev.durationMs = Number(f.duration_ms);
  return ev;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms).unref?.());

export class EventReader {
  #broker;
  #main;
  #reader = null;
  #group;
  #consumer;
  #types;
  #start;
  #blockMs;
  #count;
  #topologyMs;
  #onError;
  #onClose;
  #queue = [];
  #perStream = new Map(); // stream -> entries of it in #queue
  #pumps = new Map(); // stream -> promise
  #wake = [];
  #current = null;
  #stopped = false;
  #started = null;
  #timer = null;
  #abort;

  /**
   * options: group (required), consumer (required), types (array of event
   * types to yield; others are acknowledged and skipped), start ('$' or
   * '0', where a new group starts), blockMs [5000], count [100],
   * topologyMs [5000] (cluster: how often the masters' streams are derived
   * again), signal (an AbortSignal that ends the iteration), onError.
   */
  constructor(broker, options = {}, onClose = () => {}) {
    const { group, consumer, types, start = '$', blockMs = 5000, count = 100, topologyMs = 5000, signal, onError } = options;
    if (!group || !consumer) throw new TypeError('events() needs {group, consumer}');
    if (types) {
      for (const t of types) if (!TYPES.has(t)) throw new TypeError(`unknown event type ${t}`);
    }
    this.#broker = broker;
    this.#main = broker.redis;
    this.#group = group;
    this.#consumer = consumer;
    this.#types = types ? new Set(types) : null;
    this.#start = String(start);
    this.#blockMs = blockMs;
    this.#count = count;
    this.#topologyMs = topologyMs;
    this.#onError = onError ?? ((err) => console.error('broker events:', err));
    this.#onClose = onClose;
    if (signal) {
      this.#abort = () => this.return();
      if (signal.aborted) this.#stopped = true;
      else signal.addEventListener('abort', this.#abort, { once: true });
      this.#signal = signal;
    }
  }

  #signal = null;

  /** The stream names of `client`: `broker:events`, or one per master of a cluster. */
  static async streamNames(client) {
    if (!client.isCluster) return [EVENTS_STREAM];
    await ready(client);
    const slots = [];
    for (let s = 0; s < 16384; s++) slots[s] = client.slots[s]?.[0];
    return [...eventStreamsFromSlots(slots).values()];
  }

  [Symbol.asyncIterator]() {
    return this;
  }

  async next() {
    await this.#ackCurrent();
    for (;;) {
      if (this.#stopped) return this.#done();
      if (!this.#started) this.#started = this.#init();
      try {
        await this.#started;
      } catch (err) {
        await this.return();
        throw err;
      }
      const item = await this.#take();
      if (!item) return this.#done();
      const ev = toEvent(item.stream, item.id, item.fields);
      if (item.deleted || (this.#types && !this.#types.has(ev.type))) {
        await this.#ack(item);
        continue;
      }
      this.#current = item;
      return { value: ev, done: false };
    }
  }

  /** Ends the iteration: acknowledges the entry in hand and closes the reader. */
  async return() {
    await this.#ackCurrent();
    if (!this.#stopped) this.#stopped = true;
    return this.#done();
  }

  async throw(err) {
    await this.return();
    throw err;
  }

  async #done() {
    this.#stopped = true;
    this.#current = null;
    for (const w of this.#wake.splice(0)) w();
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#signal) this.#signal.removeEventListener('abort', this.#abort);
    if (this.#reader) {
      this.#reader.disconnect();
      this.#reader = null;
    }
    this.#onClose();
    return { value: undefined, done: true };
  }

  async #ackCurrent() {
    const item = this.#current;
    this.#current = null;
    if (item) await this.#ack(item);
  }

  async #ack(item) {
    await send(this.#main, 'XACK', [item.stream, this.#group, item.id], { key: item.stream });
  }

  async #init() {
    await ready(this.#main);
    this.#reader = this.#main.duplicate();
    await this.#refresh();
    if (this.#main.isCluster && this.#topologyMs > 0) {
      this.#timer = setInterval(() => this.#refresh().catch((err) => this.#onError(err)), this.#topologyMs);
      this.#timer.unref?.();
    }
  }

  /** Derive the stream names again and start a reader for each new one. */
  async #refresh() {
    if (this.#stopped) return;
    for (const stream of await EventReader.streamNames(this.#main)) {
      if (this.#pumps.has(stream)) continue;
      await this.#createGroup(stream);
      this.#perStream.set(stream, 0);
      this.#pumps.set(stream, this.#pump(stream));
    }
  }

  async #createGroup(stream) {
    try {
      await send(this.#main, 'XGROUP', ['CREATE', stream, this.#group, this.#start, 'MKSTREAM'], { key: stream });
    } catch (err) {
      if (!replyIs(err, 'BUSYGROUP')) throw err;
    }
  }

  async #take() {
    while (this.#queue.length === 0) {
      if (this.#stopped) return null;
      await new Promise((r) => this.#wake.push(r));
    }
    const item = this.#queue.shift();
    this.#perStream.set(item.stream, this.#perStream.get(item.stream) - 1);
    for (const w of this.#wake.splice(0)) w();
    return item;
  }

  /** One stream's reads: its own pending entries first (after a restart), then new ones. */
  async #pump(stream) {
    let pending = '0';
    while (!this.#stopped) {
      // Read again only when this stream's last batch was handed out.
      while (!this.#stopped && this.#perStream.get(stream) > 0) {
        await new Promise((r) => this.#wake.push(r));
      }
      if (this.#stopped || !this.#reader) return;
      const id = pending ?? '>';
      let reply;
      try {
        reply = await send(this.#reader, 'XREADGROUP',
          ['GROUP', this.#group, this.#consumer, 'COUNT', this.#count, 'BLOCK', this.#blockMs, 'STREAMS', stream, id],
          { key: stream });
      } catch (err) {
        if (this.#stopped) return;
        if (replyIs(err, 'NOGROUP')) {
          // The stream or the group was deleted: create it again.
          await this.#createGroup(stream).catch((e) => this.#onError(e));
        } else {
          this.#onError(err);
          await sleep(1000);
        }
        continue;
      }
      if (this.#stopped) return;
      const entries = reply?.[0]?.[1] ?? [];
      if (pending !== null) {
        if (entries.length === 0) {
          pending = null;
          continue;
        }
        pending = entries[entries.length - 1][0];
      }
      for (const [entryId, flat] of entries) {
        // A pending entry that was deleted meanwhile comes back without fields.
        this.#queue.push({ stream, id: entryId, fields: flat ? fieldsOf(flat) : {}, deleted: !flat });
      }
      if (entries.length > 0) {
        this.#perStream.set(stream, this.#perStream.get(stream) + entries.length);
        for (const w of this.#wake.splice(0)) w();
      }
    }
  }
}
