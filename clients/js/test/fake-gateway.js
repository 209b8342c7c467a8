// An in-process stand-in for the gateway, enough of protocol v1 for the
// client's tests: auth, welcome, join (with `since` replay), leave, pub,
// presence, history, refresh, ping. Each test can override how a request
// is answered with `gw.handle(t, fn)`, and sees every frame the client
// sent in `gw.received`.
import { WebSocketServer } from 'ws';
import { encodeFrame, decodeFrame } from '../dist/broker-client.js';

export class FakeGateway {
  constructor() {
    this.received = []; // {conn, frame, bytes}
    this.conns = [];
    this.rooms = new Map(); // room -> {seq, epoch, log: [msg]}
    this.handlers = new Map();
    this.validTokens = null; // null: every token is fine; else a Set
    this.exp = 2000000000;
    this._waiters = [];
    this._connSeq = 0;
  }

  async start() {
    this.wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => this.wss.once('listening', resolve));
    this.url = `ws://127.0.0.1:${this.wss.address().port}/ws`;
    this.wss.on('connection', (socket, req) => this._accept(socket, req));
    return this;
  }

  async stop() {
    for (const c of this.conns) c.socket.terminate();
    await new Promise((resolve) => this.wss.close(resolve));
  }

  /** Overrides the answer to request type `t`: fn(conn, frame) may
   * return a value to ack with, or handle everything itself (return undefined). */
  handle(t, fn) {
    this.handlers.set(t, fn);
  }

  room(name) {
    let r = this.rooms.get(name);
    if (!r) {
      r = { seq: 0, epoch: 'e0000000000000001', log: [] };
      this.rooms.set(name, r);
    }
    return r;
  }

  /** Resolves with the first received frame that matches, waiting at most `ms`. */
  waitFrame(pred, ms = 2000) {
    const found = this.received.find((r) => pred(r.frame, r.conn));
    if (found) return Promise.resolve(found.frame);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('waitFrame timed out')), ms);
      this._waiters.push({ pred, resolve: (f) => { clearTimeout(timer); resolve(f); } });
    });
  }

  /** Frames of type t received, in order. */
  frames(t) {
    return this.received.filter((r) => r.frame.t === t).map((r) => r.frame);
  }

  get last() {
    return this.conns[this.conns.length - 1];
  }

  send(conn, frame) {
    conn.socket.send(encodeFrame(frame));
  }

  /** Publishes server-side into a room: every member gets the msg. */
  publish(roomName, ev, data, from) {
    const r = this.room(roomName);
    r.seq += 1;
    const msg = { t: 'msg', room: roomName, ev, data, seq: r.seq, epoch: r.epoch, ts: Date.now() };
    if (from) msg.from = from;
    r.log.push(msg);
    for (const c of this.conns) {
      if (c.rooms.has(roomName) && c.socket.readyState === 1) this.send(c, msg);
    }
    return msg;
  }

  _accept(socket, req) {
    this._connSeq += 1;
    const conn = { socket, id: `fake.${this._connSeq}`, rooms: new Set(), user: null, url: req.url };
    this.conns.push(conn);
    socket.on('message', (bytes, isBinary) => {
      if (!isBinary) return;
      const frame = decodeFrame(new Uint8Array(bytes));
      this.received.push({ conn, frame, bytes: new Uint8Array(bytes) });
      this._waiters = this._waiters.filter((w) => {
        if (w.pred(frame, conn)) {
          w.resolve(frame);
          return false;
        }
        return true;
      });
      this._answer(conn, frame);
    });
  }

  _answer(conn, frame) {
    const ack = (data) => this.send(conn, { t: 'ack', id: frame.id, data });
    const err = (code, msg) => this.send(conn, { t: 'err', id: frame.id, code, msg: msg || code });
    const custom = this.handlers.get(frame.t);
    if (custom) {
      const out = custom(conn, frame, { ack, err });
      if (out !== undefined) ack(out);
      return;
    }
    switch (frame.t) {
      case 'auth': {
        if (this.validTokens && !this.validTokens.has(frame.token)) {
          err('unauthorized', 'invalid token');
          conn.socket.close(4001, 'invalid token');
          return;
        }
        conn.user = String(frame.token).split('.')[0];
        ack({ user: conn.user, exp: this.exp });
        this.send(conn, { t: 'welcome', conn: conn.id, user: conn.user, node: 'fake', ping_ms: 25000, exp: this.exp });
        return;
      }
      case 'join': {
        const r = this.room(frame.room);
        let recovered = false;
        if (frame.since && frame.since.epoch === r.epoch) {
          const missed = r.log.filter((m) => m.seq > frame.since.seq);
          for (const m of missed) this.send(conn, m);
          recovered = frame.since.seq <= r.seq;
        }
        conn.rooms.add(frame.room);
        ack({ room: frame.room, seq: r.seq, epoch: r.epoch, recovered });
        return;
      }
      case 'leave':
        if (!conn.rooms.delete(frame.room)) err('not_member');
        else ack({});
        return;
      case 'pub': {
        if (!conn.rooms.has(frame.room)) {
          err('not_member', 'join the room first');
          return;
        }
        const r = this.room(frame.room);
        r.seq += 1;
        const msg = {
          t: 'msg', room: frame.room, ev: frame.ev, data: frame.data, seq: r.seq, epoch: r.epoch,
          ts: Date.now(), from: { user: conn.user, conn: conn.id },
        };
        r.log.push(msg);
        for (const c of this.conns) {
          if (c.rooms.has(frame.room) && !(frame.others && c === conn) && c.socket.readyState === 1) this.send(c, msg);
        }
        ack({ seq: r.seq });
        return;
      }
      case 'presence':
        ack({ users: [{ user: conn.user, conns: 1 }], count: 1 });
        return;
      case 'history': {
        const r = this.room(frame.room);
        const since = frame.since || 0;
        const limit = frame.limit || 1000;
        ack({ messages: r.log.filter((m) => m.seq > since).slice(0, limit), seq: r.seq, epoch: r.epoch });
        return;
      }
      case 'refresh':
        this.exp += 3600;
        ack({ exp: this.exp });
        return;
      case 'ping':
        ack({ ts: Date.now() });
        return;
      default:
        this.send(conn, { t: 'err', id: frame.id, code: 'bad_frame', msg: 'unknown t' });
    }
  }
}

/** Resolves on the next `event` of `emitter`, or rejects after `ms`. */
export function nextEvent(emitter, event, ms = 2000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      emitter.off(event, fn);
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    const fn = (value) => {
      clearTimeout(timer);
      emitter.off(event, fn);
      resolve(value);
    };
    emitter.on(event, fn);
  });
}
