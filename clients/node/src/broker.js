import { Redis, Cluster } from 'ioredis';
import { encode, decode } from '@msgpack/msgpack';
import { send, masters } from './command.js';
import { toObject, toPairs, num, str, list } from './replies.js';
import { EventReader } from './events.js';
import { Rpc } from './rpc.js';

const FORMATS = new Set(['json', 'msgpack', 'string']);

/** The payload argument and FORMAT word for a JS value. */
export function encodePayload(data, format = 'json') {
  if (!FORMATS.has(format)) throw new TypeError(`format must be json, msgpack or string, not ${format}`);
  if (format === 'json') return [JSON.stringify(data === undefined ? null : data) ?? 'null', format];
  if (format === 'msgpack') {
    // Bytes are taken as MessagePack already; any other value is encoded.
    if (data instanceof Uint8Array) return [Buffer.from(data.buffer, data.byteOffset, data.byteLength), format];
    return [Buffer.from(encode(data === undefined ? null : data)), format];
  }
  if (data instanceof Uint8Array) return [Buffer.from(data.buffer, data.byteOffset, data.byteLength), format];
  return [String(data), format];
}

const isClient = (x) => x instanceof Redis || x instanceof Cluster
  || (x != null && typeof x === 'object' && typeof x.sendCommand === 'function' && typeof x.isCluster === 'boolean');

export class Broker {
  #redis;
  #owned;
  #readers = new Set();
  #closed = false;

  /**
   * @param redisOrOptions an ioredis `Redis` or `Cluster` (left open by
   * `close()`), a `redis://` URL, `{cluster: [seeds], clusterOptions}` or
   * ioredis options for one Redis (those connections are the broker's own
   * and `close()` quits them).
   */
  constructor(redisOrOptions = {}) {
    if (isClient(redisOrOptions)) {
      this.#redis = redisOrOptions;
      this.#owned = false;
    } else if (typeof redisOrOptions === 'string') {
      this.#redis = new Redis(redisOrOptions);
      this.#owned = true;
    } else if (redisOrOptions.cluster) {
      this.#redis = new Cluster(redisOrOptions.cluster, redisOrOptions.clusterOptions);
      this.#owned = true;
    } else {
      const { redis, ...rest } = redisOrOptions;
      this.#redis = redis ? new Redis(redis) : new Redis(rest);
      this.#owned = true;
    }
    /** RPC handlers: `broker.rpc.handle(method, fn)`, `start()`, `stop()`. */
    this.rpc = new Rpc(this);
  }

  /** The ioredis client commands go through. */
  get redis() {
    return this.#redis;
  }

  /** Whether the client is a Redis Cluster. */
  get isCluster() {
    return Boolean(this.#redis.isCluster);
  }

  /** Send any command, on a cluster to the master of `key`'s slot. */
  command(name, args = [], opts = {}) {
    if (this.#closed) return Promise.reject(new Error('the broker is closed'));
    return send(this.#redis, name, args, opts);
  }

  /** Send `name args` to every master (one Redis: to it); the replies in order. */
  async eachMaster(name, args = [], opts = {}) {
    const nodes = await masters(this.#redis);
    return Promise.all(nodes.map((node) => send(node, name, args, opts)));
  }

  // --- publishing ----------------------------------------------------

  /**
   * BROKER.PUBLISH: deliver `ev` with `data` to every member of `room`.
   * Resolves to the room's sequence number (0 for a volatile message).
   * `history: {size, ttlS}` keeps the message in the room's history; without
   * it the module's `HISTORY <namespace> ...` argument decides (a gateway's
   * `[namespaces.<ns>] history` applies to publishes through the gateway only).
   */
  async publish(room, ev, data, { format = 'json', except, volatile = false, history } = {}) {
    const [payload, fmt] = encodePayload(data, format);
    const args = [room, ev, payload, 'FORMAT', fmt];
    if (except != null) args.push('EXCEPT', except);
    if (history != null) args.push('HISTORY', String(history.size), String(history.ttlS));
    if (volatile) args.push('VOLATILE');
    return num(await this.command('BROKER.PUBLISH', args, { key: room }));
  }

  /** Publish to the user's personal room `user:<id>` (every connection of theirs). */
  emitToUser(user, ev, data, opts) {
    return this.publish(`user:${user}`, ev, data, opts);
  }

  /**
   * BROKER.BROADCAST: a server message to every connection on every live
   * node (`ns`: only connections in a room of that namespace). Not stored,
   * no sequence. Resolves to the number of nodes told.
   */
  async broadcast(ev, data, { ns, format = 'json' } = {}) {
    const [payload, fmt] = encodePayload(data, format);
    const args = [ev, payload, 'FORMAT', fmt];
    if (ns != null) args.push('NS', ns);
    return num(await this.command('BROKER.BROADCAST', args));
  }

  // --- presence ------------------------------------------------------

  /**
   * BROKER.PRESENCE: `{user, status, online, connections, conns: [{conn,
   * node, ip, connectedAt, rooms}]}`. On a cluster each connection's rooms
   * on every shard are added (BROKER.USER.ROOMS on every master).
   */
  async presence(user) {
    const p = toObject(await this.command('BROKER.PRESENCE', [user], { key: user }));
    const conns = list(p.conns).map((c) => {
      const o = toObject(c);
      return {
        conn: str(o.conn),
        node: str(o.node),
        ip: str(o.ip),
        connectedAt: num(o.connected_at),
        rooms: list(o.rooms).map(str),
      };
    });
    if (this.isCluster && conns.length > 0) {
      const byConn = new Map(conns.map((c) => [c.conn, c]));
      for (const reply of await this.eachMaster('BROKER.USER.ROOMS', [user])) {
        for (const item of list(reply)) {
          const o = toObject(item);
          const c = byConn.get(str(o.conn));
          if (!c) continue;
          for (const room of list(o.rooms).map(str)) if (!c.rooms.includes(room)) c.rooms.push(room);
        }
      }
    }
    const status = str(p.status);
    return { user, status, online: status === 'online', connections: num(p.connections ?? 0), conns };
  }

  /**
   * BROKER.ROOM.MEMBERS, every page: `[{user, conns}]` in user-name order
   * (a user lingering in a presence grace has `conns: 0`).
   */
  async roomMembers(room, { pageSize = 1000 } = {}) {
    const out = [];
    let after;
    for (;;) {
      const args = [room];
      if (after !== undefined) args.push('AFTER', after);
      args.push('LIMIT', pageSize);
      const page = toPairs(await this.command('BROKER.ROOM.MEMBERS', args, { key: room }));
      for (const [user, conns] of page) out.push({ user, conns: num(conns) });
      if (page.length < pageSize) return out;
      after = page[page.length - 1][0];
    }
  }

  /** BROKER.ROOM.COUNT: `{users, connections}`, O(1). */
  async roomCount(room) {
    const o = toObject(await this.command('BROKER.ROOM.COUNT', [room], { key: room }));
    return { users: num(o.users), connections: num(o.connections) };
  }

  /** BROKER.ONLINE, summed over the masters of a cluster: `{users, connections}`. */
  async online() {
    let users = 0;
    let connections = 0;
    for (const reply of await this.eachMaster('BROKER.ONLINE')) {
      const o = toObject(reply);
      users += num(o.users);
      connections += num(o.connections);
    }
    return { users, connections };
  }

  /**
   * BROKER.NODES, merged over the masters: `[{node, connections,
   * leaseDeadlineMs}]` (connections summed over the shards).
   */
  async nodes() {
    const byNode = new Map();
    for (const reply of await this.eachMaster('BROKER.NODES')) {
      for (const item of list(reply)) {
        const o = toObject(item);
        const id = str(o.node);
        const n = byNode.get(id) ?? { node: id, connections: 0, leaseDeadlineMs: 0 };
        n.connections += num(o.connections);
        n.leaseDeadlineMs = Math.max(n.leaseDeadlineMs, num(o.lease_deadline_ms));
        byNode.set(id, n);
      }
    }
    return [...byNode.values()].sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  // --- history, kick, memberships, throttle ---------------------------

  /**
   * BROKER.HISTORY: `{seq, epoch, more, messages: [{room, ev, data, seq,
   * epoch, ts, from?}]}`, messages after `since`, oldest first, at most
   * `limit`. `more` is true when retained messages were left out: ask again
   * with `since` = the last message's seq.
   */
  async history(room, { since, limit, maxBytes } = {}) {
    const args = [room];
    if (since != null) args.push('SINCE', since);
    if (limit != null) args.push('LIMIT', limit);
    if (maxBytes != null) args.push('MAXBYTES', maxBytes);
    const o = toObject(await this.command('BROKER.HISTORY', args, { key: room, buffers: true }));
    const messages = list(o.messages).map((frame) => {
      const { t: _t, ...msg } = /** @type {any} */ (decode(frame));
      return msg;
    });
    return { seq: num(o.seq), epoch: str(o.epoch), more: num(o.more ?? 0) === 1, messages };
  }

  /** BROKER.KICK: close every connection of `user`; resolves to the number told. */
  async kick(user, reason) {
    const args = reason == null ? [user] : [user, reason];
    return num(await this.command('BROKER.KICK', args, { key: user }));
  }

  /**
   * BROKER.USER.JOIN: put every live connection of `user` into `room`.
   * Resolves to the number of connections told. (Sent without a routing
   * key: on a cluster ioredis follows the MOVED reply to the right master.)
   */
  async userJoin(user, room) {
    return num(await this.command('BROKER.USER.JOIN', [user, room]));
  }

  /** BROKER.USER.LEAVE: take every connection of `user` out of `room`. */
  async userLeave(user, room) {
    return num(await this.command('BROKER.USER.LEAVE', [user, room]));
  }

  /**
   * BROKER.THROTTLE (GCRA, redis-cell's reply): `{limited, limit, remaining,
   * retryAfterS, resetAfterS}`.
   */
  async throttle(key, maxBurst, count, periodS, quantity = 1) {
    const r = await this.command('BROKER.THROTTLE', [key, maxBurst, count, periodS, quantity], { key });
    const [limited, limit, remaining, retryAfterS, resetAfterS] = list(r).map(num);
    return { limited: limited === 1, limit, remaining, retryAfterS, resetAfterS };
  }

  // --- lifecycle events ------------------------------------------------

  /**
   * The lifecycle stream in a consumer group, as an async iterator of
   * `{id, stream, type, user, conn, node, room?, reason?, durationMs?, ts}`.
   * Each entry is acknowledged when the next one is pulled or the loop ends
   * (at least once). See README.md.
   */
  events(options) {
    if (this.#closed) throw new Error('the broker is closed');
    const reader = new EventReader(this, options, () => this.#readers.delete(reader));
    this.#readers.add(reader);
    return reader;
  }

  /** The lifecycle stream names: `['broker:events']`, or one per master of a cluster. */
  async eventStreams() {
    return EventReader.streamNames(this.#redis);
  }

  // --- lifecycle -------------------------------------------------------

  /**
   * Stop the RPC handler (waiting for the calls in flight) and every
   * events() iterator (acknowledging the entry in hand), then quit the
   * connections this broker opened. A client passed in stays open.
   */
  async close() {
    if (this.#closed) return;
    await this.rpc.stop();
    await Promise.all([...this.#readers].map((r) => r.return()));
    this.#closed = true;
    if (this.#owned) {
      const redis = this.#redis;
      const ended = redis.status === 'end' ? null : new Promise((r) => redis.once('end', r));
      try {
        await redis.quit();
      } catch {
        redis.disconnect();
      }
      await ended;
    }
  }
}
