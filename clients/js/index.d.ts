// Type declarations of @broker/client (dist/broker-client.js).
// Protocol: docs/PROTOCOL.md (WebSocket + MessagePack, protocol v1).

export declare const VERSION: string;
export declare const PROTOCOL_VERSION: 1;

/** Close codes of PROTOCOL.md §6 that the client treats specially. */
export declare const CloseCode: Readonly<{
  NORMAL: 1000;
  TOO_LARGE: 1009;
  INTERNAL: 1011;
  RESTARTING: 1012;
  UNAUTHORIZED: 4001;
  FORBIDDEN: 4003;
  POLICY: 4008;
  CONN_LIMIT: 4029;
}>;

/** Protocol error codes (PROTOCOL.md §5). */
export type ProtocolErrorCode =
  | 'bad_frame' | 'unauthorized' | 'forbidden' | 'invalid_room' | 'not_member'
  | 'rate_limited' | 'too_many_rooms' | 'payload_too_large' | 'unavailable' | 'internal'
  | 'timeout' | 'rpc_error';

/** The client's own error codes. */
export type ClientErrorCode =
  | 'timeout' | 'disconnected' | 'closed' | 'transport' | 'decode' | 'token';

export declare class BrokerError extends Error {
  constructor(code: string, message?: string, extra?: object);
  readonly name: 'BrokerError';
  /** A protocol code, or one of the client's own. */
  code: ProtocolErrorCode | ClientErrorCode | (string & {});
  /** With `rate_limited`: when a publish will be accepted again (ms). */
  retryMs?: number;
  /** With `rpc_error`: the backend's own code. */
  rpcCode?: string;
  /** When the error comes from a close: its close code. */
  closeCode?: number;
  cause?: unknown;
}

/** A position in a room's stream. */
export interface Position {
  seq: number;
  epoch: string;
}

/** A `msg` frame as delivered to listeners. */
export interface Message<T = unknown> {
  room: string;
  ev: string;
  data: T;
  /** The room's sequence number (0 for broadcasts). */
  seq: number;
  epoch: string;
  /** Unix time in ms. */
  ts: number;
  /** Present when a client published. */
  from?: { user: string; conn: string };
  /** An ephemeral message (`seq` 0, never in history). */
  volatile?: boolean;
}

export interface PresenceEvent {
  room: string;
  user: string;
  action: 'join' | 'leave';
}

export interface PresenceResult {
  /** At most 1000 users, in name order. */
  users: Array<{ user: string; conns: number }>;
  /** Users in the room, all pages together. */
  count: number;
  /** Present when more users follow: the `after` of the next page. */
  next?: string;
}

export interface PresenceOptions extends RequestOptions {
  /** Users whose names sort after this one (a page's `next`). */
  after?: string;
}

export interface HistoryResult {
  messages: Array<Message & { t: 'msg' }>;
  seq: number;
  epoch: string;
  /** True when the answer was cut by size: ask again with `since` = the last `seq`. */
  more?: boolean;
}

export interface JoinedInfo extends Position {
  room: string;
  recovered: boolean;
}

export interface RecoveryInfo extends JoinedInfo {
  /** The position the client asked to resume from. */
  since: Position;
}

/** A `joined` frame: the backend put the connection into `room`, which
 * was at `seq` (messages after it follow). */
export interface ServerMembership {
  room: string;
  seq: number;
  epoch: string;
}

/** A `missed` frame: messages of `room` up to `seq` were lost for this
 * connection (the gateway's own link to Redis dropped and history no
 * longer held them). The subscription's position moves to `{seq, epoch}`;
 * reload the room's state from your backend. */
export interface MissedInfo {
  room: string;
  /** The room's epoch now. */
  epoch: string;
  /** The room's sequence number after the gap; live messages follow it. */
  seq: number;
  /** How many messages were lost, or null when not known. */
  count: number | null;
}

export interface ConnectInfo {
  user: string;
  conn: string;
  node: string;
  exp: number;
  pingMs: number;
  /** True for every welcome after the first. */
  reconnected: boolean;
}

export interface CloseInfo {
  /** The WebSocket close code (0 for a connect timeout). */
  code: number;
  reason: string;
  wasClean: boolean;
}

export interface ReconnectingInfo {
  attempt: number;
  delayMs: number;
  code: number;
  reason: string;
}

export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** Anything constructible like the browser's WebSocket (e.g. the `ws` package). */
export interface WebSocketConstructor {
  new (url: string): any;
}

export interface ClientOptions {
  /** A fixed JWT. */
  token?: string;
  /** Called for the first token, after a 4001 close, and on `expiring`. */
  getToken?: () => string | Promise<string>;
  /** Defaults to `globalThis.WebSocket`; pass `ws`'s class in Node 20. */
  WebSocket?: WebSocketConstructor;
  /** `frame` (default): an `auth` frame first; `query`: `?token=` in the URL. */
  authMode?: 'frame' | 'query';
  /** Each request rejects with code `timeout` after this long (default 10000). */
  requestTimeoutMs?: number;
  /** No `welcome` within this long: the attempt is dropped and retried (default 10000). */
  connectTimeoutMs?: number;
  /** Reconnect automatically (default true). */
  reconnect?: boolean;
  /** First reconnect delay (default 500 ms), doubled per attempt... */
  reconnectDelayMs?: number;
  /** ...up to this (default 10000 ms). */
  reconnectDelayMaxMs?: number;
  /** Share of each delay that is randomized (0..1, default 0.5). */
  randomizationFactor?: number;
  /** Connect in the constructor (default true); else call `open()`. */
  autoConnect?: boolean;
  /** Random source for the jitter (tests). */
  random?: () => number;
}

export interface RequestOptions {
  /** Overrides `requestTimeoutMs` for this request (0: none). */
  timeoutMs?: number;
  /** When offline: wait for the connection (default) or reject at once. */
  queue?: boolean;
}

export interface PublishOptions extends RequestOptions {
  /** Do not deliver to the sending connection. */
  others?: boolean;
  /** An ephemeral message: seq 0, not kept, skipped by lagging members. */
  volatile?: boolean;
}

export interface HistoryOptions extends RequestOptions {
  /** Messages with a seq above this (default 0). */
  since?: number;
  /** At most this many (the gateway caps it at 1000). */
  limit?: number;
}

export interface JoinOptions {
  /** Resume from a saved position. */
  since?: Position;
  timeoutMs?: number;
}

type Listener<A extends any[]> = (...args: A) => void;

export declare class Emitter<Events extends { [K in keyof Events]: any[] }> {
  on<E extends keyof Events>(event: E, fn: Listener<Events[E]>): this;
  once<E extends keyof Events>(event: E, fn: Listener<Events[E]>): this;
  off<E extends keyof Events>(event: E, fn?: Listener<Events[E]>): this;
  emit<E extends keyof Events>(event: E, ...args: Events[E]): boolean;
  listenerCount(event: keyof Events): number;
}

export interface SubscriptionEvents {
  msg: [Message];
  presence: [PresenceEvent];
  joined: [JoinedInfo];
  recovered: [RecoveryInfo];
  recovery_failed: [RecoveryInfo];
  missed: [MissedInfo];
  error: [BrokerError];
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly client: BrokerClient;
  readonly room: string;
  /** Last seq seen (msg or join ack), or null. */
  seq: number | null;
  epoch: string | null;
  /** True while the current connection is in the room. */
  joined: boolean;
  /** False once left. */
  active: boolean;
  readonly position: Position | null;
  leave(): Promise<{}>;
  history(opts?: HistoryOptions): Promise<HistoryResult>;
  presence(): Promise<PresenceResult>;
  publish(ev: string, data: unknown, opts?: PublishOptions): Promise<{ seq: number }>;
}

export interface ClientEvents {
  connect: [ConnectInfo];
  disconnect: [CloseInfo];
  connect_error: [CloseInfo];
  reconnecting: [ReconnectingInfo];
  state: [ClientState];
  msg: [Message];
  presence: [PresenceEvent];
  recovered: [RecoveryInfo];
  recovery_failed: [RecoveryInfo];
  missed: [MissedInfo];
  /** The backend put this connection into `room` (`BROKER.USER.JOIN`);
   * its messages follow as client-level `msg` events. Lasts for this
   * connection: after a reconnect the backend decides again. */
  server_joined: [ServerMembership];
  /** The backend took this connection out of `room` (`BROKER.USER.LEAVE`). */
  server_left: [{ room: string }];
  expiring: [{ inMs: number }];
  token_refreshed: [{ exp: number | null }];
  error: [BrokerError];
}

export declare class BrokerClient extends Emitter<ClientEvents> {
  constructor(url: string, options?: ClientOptions);
  readonly url: string;
  state: ClientState;
  user: string | null;
  conn: string | null;
  node: string | null;
  /** Token expiry, Unix seconds. */
  exp: number | null;
  readonly connected: boolean;
  readonly rooms: string[];
  subscription(room: string): Subscription | null;
  open(): this;
  close(): void;
  join(room: string, opts?: JoinOptions): Promise<Subscription>;
  leave(room: string): Promise<{}>;
  publish(room: string, ev: string, data: unknown, opts?: PublishOptions): Promise<{ seq: number }>;
  /** `rpc`: resolves to the backend's answer. */
  rpc<T = unknown>(method: string, data?: unknown, opts?: RequestOptions): Promise<T>;
  presence(room: string, opts?: PresenceOptions): Promise<PresenceResult>;
  history(room: string, opts?: HistoryOptions): Promise<HistoryResult>;
  ping(opts?: RequestOptions): Promise<{ ts: number }>;
  refresh(token?: string): Promise<{ exp: number }>;
}

/** Opens a client (`url`: `ws://host:port/ws`, or a path in a browser). */
export declare function connect(url: string, options?: ClientOptions): BrokerClient;

/** Encodes one frame as the bytes of one binary WebSocket message. */
export declare function encodeFrame(frame: Record<string, unknown>): Uint8Array;
/** Decodes one binary message; throws unless it is a map with a string `t`. */
export declare function decodeFrame(bytes: ArrayBuffer | ArrayBufferView): Record<string, any> & { t: string };

declare const _default: {
  connect: typeof connect;
  BrokerClient: typeof BrokerClient;
  BrokerError: typeof BrokerError;
  Subscription: typeof Subscription;
  CloseCode: typeof CloseCode;
  VERSION: string;
  PROTOCOL_VERSION: 1;
};
export default _default;
