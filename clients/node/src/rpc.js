// RPC handlers: the stream broker:rpc read in a consumer group.

import { decode } from '@msgpack/msgpack';
import { send, ready, replyIs } from './command.js';
import { RPC_STREAM } from './slot.js';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms).unref?.());

function fieldsOf(flat) {
  const out = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i].toString('utf8')] = flat[i + 1];
  return out;
}

/** The request's data: the MessagePack `data` field, else the `json` field. */
function dataOf(f) {
  if (f.data != null && f.data.length > 0) return decode(f.data);
  if (f.json != null) return JSON.parse(f.json.toString('utf8'));
  return null;
}

export class Rpc {
  #broker;
  #handlers = new Map();
  #run = null;

  constructor(broker) {
    this.#broker = broker;
  }

  /**
   * Register `fn(data, ctx)` for `method`; its result (JSON-serialisable)
   * is the client's answer, a thrown error becomes BROKER.RPC.ERROR with
   * `err.code` (default "error") and `err.message`. Returns this.
   */
  handle(method, fn) {
    if (typeof fn !== 'function') throw new TypeError('handler must be a function');
    this.#handlers.set(method, fn);
    return this;
  }

  /** Whether start() is running. */
  get running() {
    return this.#run !== null;
  }

  /**
   * Read broker:rpc in consumer group `group` as `consumer`, at most
   * `concurrency` calls at a time. Resolves once the group exists.
   */
  async start({ group = 'rpc', consumer, concurrency = 16, start = '$', blockMs = 5000, onError } = {}) {
    if (this.#run) throw new Error('rpc already started');
    if (!consumer) throw new TypeError('rpc.start() needs {consumer}');
    if (!(concurrency >= 1)) throw new TypeError('concurrency must be at least 1');
    const main = this.#broker.redis;
    await ready(main);
    try {
      await send(main, 'XGROUP', ['CREATE', RPC_STREAM, group, String(start), 'MKSTREAM'], { key: RPC_STREAM });
    } catch (err) {
      if (!replyIs(err, 'BUSYGROUP')) throw err;
    }
    const run = {
      main,
      reader: main.duplicate(),
      group,
      consumer,
      concurrency,
      blockMs,
      onError: onError ?? ((err, ctx) => console.error('broker rpc:', ctx?.method ?? '', err)),
      stopped: false,
      inFlight: new Set(),
      wake: [],
    };
    run.loop = this.#loop(run);
    this.#run = run;
  }

  /** Stop reading, wait for the calls in flight to answer, close the reader. */
  async stop() {
    const run = this.#run;
    if (!run) return;
    this.#run = null;
    run.stopped = true;
    for (const w of run.wake.splice(0)) w();
    run.reader.disconnect();
    await run.loop;
    await Promise.allSettled([...run.inFlight]);
  }

  async #loop(run) {
    let pending = '0';
    while (!run.stopped) {
      while (!run.stopped && run.inFlight.size >= run.concurrency) {
        await new Promise((r) => run.wake.push(r));
      }
      if (run.stopped) return;
      const room = run.concurrency - run.inFlight.size;
      let reply;
      try {
        reply = await send(run.reader, 'XREADGROUP',
          ['GROUP', run.group, run.consumer, 'COUNT', room, 'BLOCK', run.blockMs, 'STREAMS', RPC_STREAM, pending ?? '>'],
          { key: RPC_STREAM, buffers: true });
      } catch (err) {
        if (run.stopped) return;
        if (replyIs(err, 'NOGROUP')) {
          await send(run.main, 'XGROUP', ['CREATE', RPC_STREAM, run.group, '$', 'MKSTREAM'], { key: RPC_STREAM })
            .catch((e) => { if (!replyIs(e, 'BUSYGROUP')) run.onError(e); });
        } else {
          run.onError(err);
          await sleep(1000);
        }
        continue;
      }
      const entries = reply?.[0]?.[1] ?? [];
      if (pending !== null) {
        if (entries.length === 0) {
          pending = null;
          continue;
        }
        pending = entries[entries.length - 1][0].toString('utf8');
      }
      for (const [rawId, flat] of entries) {
        const p = this.#call(run, rawId.toString('utf8'), flat ? fieldsOf(flat) : null)
          .catch((err) => run.onError(err))
          .finally(() => {
            run.inFlight.delete(p);
            for (const w of run.wake.splice(0)) w();
          });
        run.inFlight.add(p);
      }
    }
  }

  async #ack(run, entryId) {
    await send(run.main, 'XACK', [RPC_STREAM, run.group, entryId], { key: RPC_STREAM });
  }

  /** One request: answer it (or skip it when late), then acknowledge it. */
  async #call(run, entryId, f) {
    if (!f) return this.#ack(run, entryId); // deleted while pending
    const s = (name) => (f[name] == null ? '' : f[name].toString('utf8'));
    const deadline = Number(s('deadline')) || 0;
    const ctx = { user: s('user'), conn: s('conn'), node: s('node'), id: s('id'), deadline, method: s('method'), entryId };
    const now = Date.now();
    if (deadline && deadline <= now) return this.#ack(run, entryId);
    ctx.signal = AbortSignal.timeout(deadline ? deadline - now : 2 ** 31 - 1);

    let answer; // [command, args]
    const fn = this.#handlers.get(ctx.method);
    if (!fn) {
      answer = ['BROKER.RPC.ERROR', [ctx.conn, ctx.id, 'unknown_method', `no handler for ${ctx.method}`]];
    } else {
      try {
        const result = await fn(dataOf(f), ctx);
        const payload = JSON.stringify(result === undefined ? null : result) ?? 'null';
        answer = ['BROKER.RPC.REPLY', [ctx.conn, ctx.id, payload, 'FORMAT', 'json']];
      } catch (err) {
        const code = typeof err?.code === 'string' && err.code ? err.code : 'error';
        const message = String(err?.message ?? err);
        answer = ['BROKER.RPC.ERROR', [ctx.conn, ctx.id, code, message]];
      }
    }
    try {
      await send(run.main, answer[0], answer[1]);
    } catch (err) {
      // Not acknowledged: the entry stays pending for this consumer and is
      // read again at its next start (and skipped then if it is late).
      run.onError(err, ctx);
      return;
    }
    await this.#ack(run, entryId);
  }
}
