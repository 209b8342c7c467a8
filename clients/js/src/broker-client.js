// @broker/client: a client for the broker gateway's WebSocket protocol v1
// (docs/PROTOCOL.md), for browsers and Node 20+.
//
// Map of this file:
//   Emitter        tiny event emitter (on / once / off / emit)
//   BrokerError    every rejection and `error` event carries a `code`
//   Subscription   one joined room: its `msg` / `presence` events and the
//                  last {seq, epoch} seen, which makes recovery possible
//   BrokerClient   the connection: auth, requests matched by id, reconnect
//                  with jittered exponential backoff, re-join with `since`,
//                  token refresh, per-room deduplication by seq
//
// Recovery works like this: each Subscription remembers the `seq` and
// `epoch` of the last message it delivered (or of its join ack). After a
// reconnect every subscription is joined again with `since: {seq, epoch}`;
// the server replays what was missed before the ack and says in the ack
// whether that was everything (`recovered`). A `msg` whose seq is not above
// the last one seen is dropped, so a replay can never deliver twice.

import { encodeFrame, decodeFrame } from './codec.js';

export { encodeFrame, decodeFrame } from './codec.js';

export const VERSION = '0.1.0';
export const PROTOCOL_VERSION = 1;

/** Close codes of PROTOCOL.md §6 the client treats specially. */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  TOO_LARGE: 1009,
  INTERNAL: 1011,
  RESTARTING: 1012,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  POLICY: 4008,
  CONN_LIMIT: 4029,
});

const ROOM_RE = /^[A-Za-z0-9_-]{1,64}:[A-Za-z0-9._@-]{1,100}$/;

const DEFAULTS = Object.freeze({
  requestTimeoutMs: 10000,
  connectTimeoutMs: 10000,
  reconnect: true,
  reconnectDelayMs: 500,
  reconnectDelayMaxMs: 10000,
  randomizationFactor: 0.5,
  authMode: 'frame',
  autoConnect: true,
});

/** An error with a machine-readable `code` (a protocol code such as
 * `forbidden`, or one of the client's own: `timeout`, `disconnected`,
 * `closed`, `transport`, `decode`, `token`). */
export class BrokerError extends Error {
  constructor(code, message, extra) {
    super(message || code);
    this.name = 'BrokerError';
    this.code = code;
    if (extra) Object.assign(this, extra);
  }
}

function rethrowLater(err) {
  // A throwing listener must not break the client's state machine; the
  // error still surfaces as an uncaught exception, like in other emitters.
  setTimeout(() => { throw err; }, 0);
}

/** Minimal event emitter shared by the client and its subscriptions. */
export class Emitter {
  constructor() {
    this._listeners = new Map();
  }

  /** Adds a listener; returns `this`. */
  on(event, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let list = this._listeners.get(event);
    if (!list) {
      list = [];
      this._listeners.set(event, list);
    }
    list.push(fn);
    return this;
  }

  /** Adds a listener that runs once; returns `this`. */
  once(event, fn) {
    const wrapper = (...args) => {
      this.off(event, wrapper);
      fn(...args);
    };
    wrapper.listener = fn;
    return this.on(event, wrapper);
  }

  /** Removes one listener, or all of an event when `fn` is omitted. */
  off(event, fn) {
    if (fn === undefined) {
      this._listeners.delete(event);
      return this;
    }
    const list = this._listeners.get(event);
    if (list) {
      const i = list.findIndex((l) => l === fn || l.listener === fn);
      if (i >= 0) list.splice(i, 1);
      if (list.length === 0) this._listeners.delete(event);
    }
    return this;
  }

  /** Number of listeners of an event. */
  listenerCount(event) {
    const list = this._listeners.get(event);
    return list ? list.length : 0;
  }

  /** Calls the listeners of an event; returns whether there were any. */
  emit(event, ...args) {
    const list = this._listeners.get(event);
    if (!list || list.length === 0) return false;
    for (const fn of list.slice()) {
      try {
        fn(...args);
      } catch (err) {
        rethrowLater(err);
      }
    }
    return true;
  }
}

/**
 * One room the client is in. Created by `client.join(room)`; stays
 * subscribed across reconnects until `leave()`.
 *
 * Events: `msg` (message), `presence` ({room, user, action}), `joined`
 * (every join ack, also after a reconnect), `recovered`, `recovery_failed`,
 * `missed` ({room, epoch, seq, count}: messages up to `seq` were lost; the
 * position moves there), `error`.
 */
export class Subscription extends Emitter {
  constructor(client, room, since) {
    super();
    this.client = client;
    this.room = room;
    /** Last seq seen in this room (from a msg or the join ack), or null. */
    this.seq = since ? since.seq : null;
    /** Epoch of that seq, or null. */
    this.epoch = since ? since.epoch : null;
    /** True while the current connection is in the room. */
    this.joined = false;
    /** False once left (or when the first join failed). */
    this.active = true;
    this._ready = null; // {promise, resolve, reject, timer} until the first ack
  }

  /** The position to resume from: `{seq, epoch}`, or null before any. */
  get position() {
    return this.seq === null || this.epoch === null ? null : { seq: this.seq, epoch: this.epoch };
  }

  /** Leaves the room (and stops re-joining it after reconnects). */
  leave() {
    return this.client.leave(this.room);
  }

  /** `history` request for this room: `{messages, seq, epoch}`. */
  history(opts) {
    return this.client.history(this.room, opts);
  }

  /** `presence` request for this room: `{users: [{user, conns}], count}`. */
  presence() {
    return this.client.presence(this.room);
  }

  /** Publishes to this room; resolves to the ack `{seq}`. */
  publish(ev, data, opts) {
    return this.client.publish(this.room, ev, data, opts);
  }
}

/**
 * Opens a client. `url` is the gateway's WebSocket endpoint
 * (`ws://host:8080/ws`); in a browser a path such as `/ws` is resolved
 * against the page's host.
 */
export function connect(url, options) {
  return new BrokerClient(url, options);
}

function resolveUrl(url) {
  const text = String(url);
  if (/^wss?:\/\//i.test(text)) return text;
  if (/^https?:\/\//i.test(text)) return text.replace(/^http/i, 'ws');
  const loc = typeof globalThis.location === 'object' ? globalThis.location : null;
  if (loc && loc.host) {
    const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    if (text.startsWith('//')) return scheme + text;
    const path = text.startsWith('/') ? text : '/' + text;
    return `${scheme}//${loc.host}${path}`;
  }
  throw new TypeError(`not an absolute ws:// or wss:// URL: ${text}`);
}

function withQuery(url, name, value) {
  const sep = url.includes('?') ? '&' : '?';
  return `${url}${sep}${name}=${encodeURIComponent(value)}`;
}

function noop() {}

/**
 * The connection to a gateway. States: `connecting` (first attempt),
 * `connected` (welcome received), `reconnecting` (waiting or retrying),
 * `closed` (by `close()`, a kick, or a token that cannot be renewed).
 *
 * Events: `connect` (welcome info), `disconnect` ({code, reason}),
 * `connect_error` (an attempt that failed before welcome), `reconnecting`
 * ({attempt, delayMs}), `state` (new state), `msg`, `presence`,
 * `recovered` / `recovery_failed` ({room, ...}), `missed` ({room, epoch,
 * seq, count}: messages lost while the gateway's own Redis link was down;
 * `count` is null when not known), `expiring` ({inMs}),
 * `token_refreshed` ({exp}), `error` (BrokerError).
 */
export class BrokerClient extends Emitter {
  constructor(url, options = {}) {
    super();
    this.options = { ...DEFAULTS, ...options };
    this.url = resolveUrl(url);
    const WS = options.WebSocket || globalThis.WebSocket;
    if (typeof WS !== 'function') {
      throw new TypeError('no WebSocket implementation: pass options.WebSocket (e.g. from the "ws" package)');
    }
    this._WS = WS;
    this._getToken = typeof options.getToken === 'function' ? options.getToken : null;
    this._token = typeof options.token === 'string' ? options.token : null;
    this._tokenStale = false;
    this._random = typeof options.random === 'function' ? options.random : Math.random;

    /** `connecting` | `connected` | `reconnecting` | `closed` */
    this.state = 'closed';
    /** From the welcome frame: user id, connection id, node id, token expiry (s). */
    this.user = null;
    this.conn = null;
    this.node = null;
    this.exp = null;

    this._ws = null;
    this._subs = new Map(); // room -> Subscription
    this._pending = new Map(); // id -> request entry, sent on this connection
    this._queue = []; // request entries waiting for a connection
    this._nextId = 1;
    this._attempt = 0; // reconnect attempts since the last welcome
    this._everConnected = false;
    this._closedByUser = false;
    this._reconnectTimer = null;
    this._handshakeTimer = null;
    this._refreshing = null;
    this._lastCloseCode = null; // of the attempts since the last welcome

    if (this.options.autoConnect) this.open();
  }

  /** True between `welcome` and the connection's end. */
  get connected() {
    return this.state === 'connected';
  }

  /** Names of the rooms this client is subscribed to. */
  get rooms() {
    return [...this._subs.keys()];
  }

  /** The Subscription of a room, if joined. */
  subscription(room) {
    return this._subs.get(room) || null;
  }

  /** Starts connecting (done by the constructor unless `autoConnect: false`). */
  open() {
    if (this.state !== 'closed') return this;
    this._closedByUser = false;
    this._setState(this._everConnected ? 'reconnecting' : 'connecting');
    this._connect();
    return this;
  }

  /** Closes for good: no reconnect; pending requests are rejected. */
  close() {
    if (this._closedByUser && this.state === 'closed') return;
    this._closedByUser = true;
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const wasConnected = this.state === 'connected';
    const ws = this._ws;
    this._detach(ws);
    if (ws) {
      try {
        ws.close(1000, 'client closed');
      } catch {
        // already closing
      }
    }
    for (const sub of this._subs.values()) {
      sub.joined = false;
      this._settleReady(sub, new BrokerError('closed', 'client closed'));
    }
    this._failAll(new BrokerError('closed', 'client closed'), true);
    this._setState('closed');
    if (wasConnected) this.emit('disconnect', { code: 1000, reason: 'client closed', wasClean: true });
  }

  /**
   * Joins a room. Resolves to its Subscription once the server acked the
   * join (joining a room already joined returns the same Subscription).
   * `since: {seq, epoch}` resumes from a position saved earlier.
   */
  join(room, opts = {}) {
    if (typeof room !== 'string' || !ROOM_RE.test(room)) {
      return Promise.reject(new BrokerError('invalid_room', `invalid room name: ${room}`));
    }
    if (this.state === 'closed') {
      return Promise.reject(new BrokerError('closed', 'client is closed'));
    }
    let sub = this._subs.get(room);
    if (sub) return sub._ready ? sub._ready.promise : Promise.resolve(sub);
    sub = new Subscription(this, room, opts.since || null);
    sub._explicitSince = Boolean(opts.since);
    this._subs.set(room, sub);
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
    const ready = { promise, resolve, reject, timer: null };
    if (timeoutMs > 0) {
      ready.timer = setTimeout(() => {
        if (sub._ready !== ready) return;
        this._dropSub(sub);
        this._settleReady(sub, new BrokerError('timeout', `join ${room} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
    }
    sub._ready = ready;
    if (this.connected) this._sendJoin(sub, false);
    return promise;
  }

  /** Leaves a room. Resolves when the server acked (or at once when offline). */
  async leave(room) {
    const sub = this._subs.get(room);
    if (sub) {
      this._dropSub(sub);
      this._settleReady(sub, new BrokerError('closed', `left ${room}`));
    }
    if (!this.connected) return {};
    try {
      return await this._request({ t: 'leave', room }, { queue: false });
    } catch (err) {
      if (err.code === 'not_member' || err.code === 'disconnected') return {};
      throw err;
    }
  }

  /**
   * Publishes `data` as event `ev` in a room the client has joined.
   * `others: true` skips the sender; `volatile: true` makes it ephemeral
   * (seq 0, not kept, skipped by members that lag). Resolves to the ack
   * `{seq}`.
   */
  publish(room, ev, data, opts = {}) {
    const frame = { t: 'pub', room, ev: String(ev), data: data === undefined ? null : data };
    if (opts.others) frame.others = true;
    if (opts.volatile) frame.volatile = true;
    return this._request(frame, opts);
  }

  /**
   * Asks the backends: `rpc {method, data}`. Resolves to the backend's
   * answer (the ack's `data`); rejects with a BrokerError `rpc_error`
   * (with `rpcCode`) when the backend answered an error, `timeout` when
   * none answered in time.
   */
  async rpc(method, data, opts = {}) {
    const frame = { t: 'rpc', method: String(method), data: data === undefined ? null : data };
    const ack = await this._request(frame, opts);
    return ack ? ack.data : undefined;
  }

  /**
   * `presence` request: `{users: [{user, conns}], count, next?}`. A room of
   * more than 1000 users comes in pages: pass the `next` of one page as
   * `opts.after` to get the following one.
   */
  presence(room, opts = {}) {
    const frame = { t: 'presence', room };
    if (opts.after != null) frame.after = opts.after;
    return this._request(frame, opts);
  }

  /** `history` request: `{messages, seq, epoch}`, oldest first. */
  history(room, opts = {}) {
    const frame = { t: 'history', room };
    if (opts.since != null) frame.since = opts.since;
    if (opts.limit != null) frame.limit = opts.limit;
    return this._request(frame, opts);
  }

  /** Application-level round trip: `{ts}` (server clock, Unix ms). */
  ping(opts = {}) {
    return this._request({ t: 'ping' }, opts);
  }

  /**
   * Replaces the connection's token: with `token`, or with one from
   * `getToken()`. Resolves to the ack `{exp}`.
   */
  async refresh(token) {
    let next = token;
    if (next === undefined) {
      if (!this._getToken) throw new BrokerError('token', 'no token given and no getToken option');
      next = await this._getToken();
    }
    if (typeof next !== 'string' || next === '') throw new BrokerError('token', 'getToken did not return a token');
    this._token = next;
    const ack = await this._request({ t: 'refresh', token: next }, { queue: false });
    if (ack && typeof ack.exp === 'number') this.exp = ack.exp;
    this.emit('token_refreshed', { exp: this.exp });
    return ack;
  }

  // ---- connection ---------------------------------------------------

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state);
  }

  async _connect() {
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    if (this._getToken && (this._token === null || this._tokenStale)) {
      let token;
      try {
        token = await this._getToken();
      } catch (err) {
        if (this._closedByUser) return;
        this.emit('error', new BrokerError('token', `getToken failed: ${err && err.message ? err.message : err}`, { cause: err }));
        this._scheduleReconnect({ code: 0, reason: 'getToken failed' });
        return;
      }
      if (this._closedByUser) return;
      if (typeof token !== 'string' || token === '') {
        this.emit('error', new BrokerError('token', 'getToken did not return a token'));
        this._scheduleReconnect({ code: 0, reason: 'no token' });
        return;
      }
      this._token = token;
      this._tokenStale = false;
    }
    let url = this.url;
    const useQuery = this.options.authMode === 'query' && this._token;
    if (useQuery) url = withQuery(url, 'token', this._token);
    let ws;
    try {
      ws = new this._WS(url);
    } catch (err) {
      // A malformed URL will not get better by retrying.
      this.emit('error', new BrokerError('transport', `cannot open ${this.url}: ${err.message}`, { cause: err }));
      this._failAll(new BrokerError('closed', 'cannot connect'), true);
      this._setState('closed');
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    this._welcomed = false;
    this._handshakeTimer = setTimeout(() => {
      if (this._ws !== ws || this._welcomed) return;
      this._detach(ws);
      try {
        ws.close();
      } catch {
        // ignore
      }
      this._onClosed(ws, 0, 'connect timeout', false);
    }, this.options.connectTimeoutMs);
    ws.onopen = () => {
      if (this._ws !== ws) return;
      if (this._token && !useQuery) {
        // The auth frame: its ack comes before welcome; a bad token gets
        // err unauthorized and close 4001, handled in _onClosed.
        this._sendNow({ t: 'auth', token: this._token }, {
          resolve: (ack) => {
            if (ack && typeof ack.exp === 'number') this.exp = ack.exp;
          },
          reject: (err) => {
            // A refused token is reported by the 4001 close that follows.
            if (err.code !== 'disconnected' && err.code !== 'unauthorized') this.emit('error', err);
          },
          timer: null,
        });
      }
    };
    ws.onmessage = (event) => this._onData(ws, event.data);
    ws.onerror = () => {
      // Browsers say nothing useful here; the close event follows.
    };
    ws.onclose = (event) => this._onClosed(ws, event.code, event.reason || '', event.wasClean);
  }

  /** Stops listening to a socket we no longer use. Handlers become no-ops
   * rather than null: the `ws` package throws on an unhandled `error`. */
  _detach(ws) {
    if (!ws) return;
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onerror = noop;
    ws.onclose = noop;
    if (this._ws === ws) this._ws = null;
    clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
  }

  _onClosed(ws, code, reason, wasClean) {
    if (this._ws !== ws && this._ws !== null) return;
    this._detach(ws);
    const wasConnected = this.state === 'connected';
    for (const sub of this._subs.values()) sub.joined = false;
    // Requests in flight may or may not have been done: tell the caller.
    for (const entry of this._pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(new BrokerError('disconnected', 'connection lost before the answer'));
    }
    this._pending.clear();
    const info = { code, reason, wasClean: Boolean(wasClean) };
    if (wasConnected) this.emit('disconnect', info);
    else this.emit('connect_error', info);
    if (this._closedByUser) {
      this._setState('closed');
      return;
    }
    if (code === CloseCode.FORBIDDEN) {
      this._giveUp(new BrokerError('forbidden', `disconnected by the server: ${reason || 'forbidden'}`, { closeCode: code }));
      return;
    }
    if (code === CloseCode.UNAUTHORIZED) {
      if (!this._getToken) {
        this._giveUp(new BrokerError('unauthorized', `token rejected or expired: ${reason || 'unauthorized'}`, { closeCode: code }));
        return;
      }
      this._tokenStale = true;
    }
    if (!this.options.reconnect) {
      this._giveUp(null);
      return;
    }
    // A first 4001 is about the token, not the server (e.g. a restarted
    // node with a new dev-token secret): retry soon with a fresh token.
    // A second one in a row backs off like any other failure.
    const fast = code === CloseCode.UNAUTHORIZED && this._lastCloseCode !== CloseCode.UNAUTHORIZED;
    this._lastCloseCode = code;
    this._scheduleReconnect(info, fast);
  }

  _giveUp(err) {
    this._closedByUser = true;
    if (err) this.emit('error', err);
    for (const sub of this._subs.values()) {
      this._settleReady(sub, err || new BrokerError('closed', 'connection closed'));
    }
    this._failAll(err || new BrokerError('closed', 'connection closed'), true);
    this._setState('closed');
  }

  /** The delay before reconnect attempt `attempt` (1-based): exponential,
   * capped, with the top `randomizationFactor` share of it randomized. */
  _backoff(attempt) {
    const { reconnectDelayMs: min, reconnectDelayMaxMs: max, randomizationFactor: f } = this.options;
    const cap = Math.min(max, min * 2 ** Math.min(attempt - 1, 30));
    return Math.max(0, Math.round(cap * (1 - f * this._random())));
  }

  _scheduleReconnect(info, fast = false) {
    this._attempt += 1;
    const delayMs = this._backoff(fast ? 1 : this._attempt);
    this._setState('reconnecting');
    this.emit('reconnecting', { attempt: this._attempt, delayMs, code: info.code, reason: info.reason });
    clearTimeout(this._reconnectTimer);
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._closedByUser) this._connect();
    }, delayMs);
  }

  // ---- frames -------------------------------------------------------

  _onData(ws, data) {
    if (this._ws !== ws) return;
    if (typeof data === 'string') return; // not part of the protocol
    let frame;
    try {
      frame = decodeFrame(data);
    } catch (err) {
      this.emit('error', new BrokerError('decode', `undecodable frame: ${err.message}`, { cause: err }));
      return;
    }
    switch (frame.t) {
      case 'welcome':
        this._onWelcome(frame);
        break;
      case 'ack':
        this._settle(frame.id, null, frame.data);
        break;
      case 'err':
        this._onErr(frame);
        break;
      case 'msg':
        this._onMsg(frame);
        break;
      case 'presence':
        this._onPresence(frame);
        break;
      case 'expiring':
        this._onExpiring(frame);
        break;
      case 'missed':
        this._onMissed(frame);
        break;
      case 'joined':
        // The backend put this connection into a room (BROKER.USER.JOIN):
        // its messages come as client-level 'msg' events from now on.
        this.emit('server_joined', { room: frame.room, seq: frame.seq, epoch: frame.epoch });
        break;
      case 'left':
        this.emit('server_left', { room: frame.room });
        break;
      default:
        break; // unknown frame types are ignored (PROTOCOL.md §4)
    }
  }

  _onWelcome(frame) {
    this._welcomed = true;
    clearTimeout(this._handshakeTimer);
    this._handshakeTimer = null;
    this.user = frame.user;
    this.conn = frame.conn;
    this.node = frame.node;
    if (typeof frame.exp === 'number') this.exp = frame.exp;
    const reconnected = this._everConnected;
    this._everConnected = true;
    this._attempt = 0;
    this._lastCloseCode = null;
    this._setState('connected');
    this.emit('connect', {
      user: frame.user, conn: frame.conn, node: frame.node, exp: frame.exp,
      pingMs: frame.ping_ms, reconnected,
    });
    if (this.state !== 'connected') return; // a listener closed us
    // Re-join first: the server answers requests in order, so queued
    // publishes below reach rooms the connection is already in again.
    for (const sub of this._subs.values()) this._sendJoin(sub, reconnected);
    const queued = this._queue;
    this._queue = [];
    for (const entry of queued) this._sendNow(entry.frame, entry);
  }

  _onErr(frame) {
    const err = new BrokerError(frame.code || 'internal', frame.msg || frame.code || 'error', {
      retryMs: frame.retry_ms,
      rpcCode: frame.rpc_code,
    });
    if (typeof frame.id === 'number' && this._pending.has(frame.id)) {
      this._settle(frame.id, err);
    } else {
      this.emit('error', err);
    }
  }

  _onMsg(frame) {
    const sub = this._subs.get(frame.room);
    if (sub && typeof frame.seq === 'number' && frame.seq > 0) {
      if (sub.epoch === frame.epoch && sub.seq !== null && frame.seq <= sub.seq) return; // seen
      sub.seq = frame.seq;
      sub.epoch = frame.epoch;
    }
    const message = {
      room: frame.room, ev: frame.ev, data: frame.data, seq: frame.seq,
      epoch: frame.epoch, ts: frame.ts,
    };
    if (frame.from) message.from = frame.from;
    if (frame.volatile) message.volatile = true;
    if (sub) sub.emit('msg', message);
    this.emit('msg', message);
  }

  _onPresence(frame) {
    const event = { room: frame.room, user: frame.user, action: frame.action };
    const sub = this._subs.get(frame.room);
    if (sub) sub.emit('presence', event);
    this.emit('presence', event);
  }

  /** `missed`: messages of the room up to `seq` were lost for this
   * connection (the gateway's link to Redis dropped and history no longer
   * held them). The stored position moves to `{seq, epoch}`: a rejoin with
   * `since` would not bring them back. */
  _onMissed(frame) {
    const sub = this._subs.get(frame.room);
    const event = {
      room: frame.room, epoch: frame.epoch, seq: frame.seq,
      count: typeof frame.count === 'number' ? frame.count : null,
    };
    if (sub && typeof frame.seq === 'number' && typeof frame.epoch === 'string') {
      if (sub.epoch !== frame.epoch || sub.seq === null || frame.seq > sub.seq) {
        sub.seq = frame.seq;
        sub.epoch = frame.epoch;
      }
    }
    if (sub) sub.emit('missed', event);
    this.emit('missed', event);
  }

  _onExpiring(frame) {
    const inMs = frame.in_ms;
    this.emit('expiring', { inMs });
    if (!this._getToken || this._refreshing) return;
    this._refreshing = this.refresh()
      .catch((err) => {
        if (err.code !== 'disconnected' && err.code !== 'closed') this.emit('error', err);
      })
      .finally(() => {
        this._refreshing = null;
      });
  }

  // ---- rooms --------------------------------------------------------

  _sendJoin(sub, rejoin) {
    const frame = { t: 'join', room: sub.room };
    const since = sub.position;
    const resume = since !== null && (rejoin || sub._explicitSince);
    if (resume) frame.since = since;
    const ws = this._ws;
    this._sendNow(frame, {
      timer: null,
      resolve: (ack) => this._onJoined(sub, ack, resume ? since : null),
      reject: (err) => {
        if (!sub.active || this._subs.get(sub.room) !== sub) return;
        if (err.code === 'disconnected') return; // joined again on reconnect
        const transient = err.code === 'unavailable' || err.code === 'internal' || err.code === 'timeout';
        const first = sub._ready !== null;
        if (first || !transient) {
          // The first join failed (its promise says so), or the server
          // refuses this room now (the subscription ends).
          this._dropSub(sub);
          this._settleReady(sub, err);
          if (!first) {
            sub.emit('error', err);
            this.emit('error', err);
          }
          return;
        }
        sub.emit('error', err);
        setTimeout(() => {
          if (sub.active && this._ws === ws && this.connected && !sub.joined) this._sendJoin(sub, true);
        }, this._backoff(1));
      },
    }, this.options.requestTimeoutMs);
  }

  _onJoined(sub, ack, since) {
    if (!sub.active || this._subs.get(sub.room) !== sub) return;
    const data = ack || {};
    sub.joined = true;
    if (typeof data.seq === 'number' && typeof data.epoch === 'string') {
      if (sub.epoch === data.epoch && sub.seq !== null) sub.seq = Math.max(sub.seq, data.seq);
      else sub.seq = data.seq;
      sub.epoch = data.epoch;
    }
    const info = { room: sub.room, seq: sub.seq, epoch: sub.epoch, recovered: Boolean(data.recovered) };
    sub.emit('joined', info);
    if (since) {
      const detail = { ...info, since };
      if (data.recovered) {
        sub.emit('recovered', detail);
        this.emit('recovered', detail);
      } else {
        sub.emit('recovery_failed', detail);
        this.emit('recovery_failed', detail);
      }
    }
    this._settleReady(sub, null);
  }

  _dropSub(sub) {
    sub.active = false;
    sub.joined = false;
    if (this._subs.get(sub.room) === sub) this._subs.delete(sub.room);
  }

  _settleReady(sub, err) {
    const ready = sub._ready;
    if (!ready) return;
    sub._ready = null;
    clearTimeout(ready.timer);
    if (err) ready.reject(err);
    else ready.resolve(sub);
  }

  // ---- requests -----------------------------------------------------

  /** Sends a request, or queues it until connected (`queue: false`
   * rejects at once instead). Rejects with `timeout` after
   * `timeoutMs` (default `requestTimeoutMs`), counted from this call. */
  _request(frame, opts = {}) {
    return new Promise((resolve, reject) => {
      if (this.state === 'closed') {
        reject(new BrokerError('closed', 'client is closed'));
        return;
      }
      const entry = { frame, resolve, reject, timer: null, id: null };
      const timeoutMs = opts.timeoutMs ?? this.options.requestTimeoutMs;
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          if (entry.id !== null) this._pending.delete(entry.id);
          const i = this._queue.indexOf(entry);
          if (i >= 0) this._queue.splice(i, 1);
          reject(new BrokerError('timeout', `${frame.t} timed out after ${timeoutMs} ms`));
        }, timeoutMs);
      }
      if (this.connected) {
        this._sendNow(frame, entry);
      } else if (opts.queue === false) {
        clearTimeout(entry.timer);
        reject(new BrokerError('disconnected', 'not connected'));
      } else {
        this._queue.push(entry);
      }
    });
  }

  /** Puts a request on the current socket; `entry` gets its answer. An
   * internal entry without a timer gets one of `timeoutMs` when given. */
  _sendNow(frame, entry, timeoutMs) {
    const id = this._nextId++;
    entry.id = id;
    entry.frame = frame;
    if (!entry.timer && timeoutMs > 0) {
      entry.timer = setTimeout(() => {
        if (this._pending.get(id) !== entry) return;
        this._pending.delete(id);
        entry.reject(new BrokerError('timeout', `${frame.t} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
    }
    this._pending.set(id, entry);
    try {
      // `t` first, then `id`, then the rest: the order PROTOCOL.md shows.
      this._ws.send(encodeFrame({ t: frame.t, id, ...frame }));
    } catch (err) {
      this._pending.delete(id);
      clearTimeout(entry.timer);
      entry.reject(err instanceof BrokerError ? err : new BrokerError('transport', err.message, { cause: err }));
    }
  }

  _settle(id, err, data) {
    const entry = this._pending.get(id);
    if (!entry) return; // timed out already, or not ours
    this._pending.delete(id);
    clearTimeout(entry.timer);
    if (err) entry.reject(err);
    else entry.resolve(data === undefined ? {} : data);
  }

  _failAll(err, includeQueue) {
    for (const entry of this._pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(err);
    }
    this._pending.clear();
    if (includeQueue) {
      const queued = this._queue;
      this._queue = [];
      for (const entry of queued) {
        clearTimeout(entry.timer);
        entry.reject(err);
      }
    }
  }
}

export default { connect, BrokerClient, BrokerError, Subscription, CloseCode, VERSION, PROTOCOL_VERSION };
