// Types of @broker/node (hand-written; checked by `npm run typecheck`).

import type { Redis, Cluster, RedisOptions, ClusterNode, ClusterOptions } from 'ioredis';

export type Format = 'json' | 'msgpack' | 'string';

export interface PublishOptions {
  /** How `data` is sent: JSON text (default), MessagePack (values are encoded; bytes are taken as MessagePack already) or a string. */
  format?: Format;
  /** A connection id that does not receive the message. */
  except?: string;
  /** Reach current members only: seq 0, not kept in history. */
  volatile?: boolean;
  /** Keep it in the room's history (`HISTORY size ttl_s`); without it the
   * module's `HISTORY <namespace>` argument decides. */
  history?: { size: number; ttlS: number };
}

export interface BroadcastOptions {
  /** Only connections in a room of this namespace. */
  ns?: string;
  format?: Format;
}

export interface PresenceConn {
  conn: string;
  node: string;
  ip: string;
  /** ms since the epoch */
  connectedAt: number;
  rooms: string[];
}

export interface Presence {
  user: string;
  status: 'online' | 'offline';
  online: boolean;
  connections: number;
  conns: PresenceConn[];
}

export interface RoomMember {
  user: string;
  /** 0 while the user lingers within a presence grace */
  conns: number;
}

export interface Counts {
  users: number;
  connections: number;
}

export interface NodeInfo {
  node: string;
  connections: number;
  leaseDeadlineMs: number;
}

export interface Message<T = unknown> {
  room: string;
  ev: string;
  data: T;
  seq: number;
  epoch: string;
  ts: number;
  from?: { user: string; conn: string };
}

export interface History<T = unknown> {
  seq: number;
  epoch: string;
  /** retained messages after the last one were left out: ask again with `since` = its seq */
  more: boolean;
  messages: Message<T>[];
}

export interface HistoryOptions {
  since?: number;
  limit?: number;
  maxBytes?: number;
}

export interface Throttle {
  limited: boolean;
  limit: number;
  remaining: number;
  retryAfterS: number;
  resetAfterS: number;
}

export type EventType = 'connect' | 'disconnect' | 'join' | 'leave' | 'online' | 'offline';

export interface BrokerEvent {
  /** the stream entry id */
  id: string;
  /** the stream it came from (`broker:events`, or a master's `broker:events:{n}`) */
  stream: string;
  type: EventType | (string & {});
  user: string;
  conn: string;
  node: string;
  /** join and leave */
  room?: string;
  /** disconnect and leave: client, kicked, node_lost, idle, slow_consumer, token_expired, shutdown, ... */
  reason?: string;
  /** disconnect */
  durationMs?: number;
  /** ms since the epoch */
  ts: number;
}

export interface EventsOptions {
  group: string;
  consumer: string;
  /** yield only these; other entries are acknowledged and skipped */
  types?: EventType[];
  /** where a group that does not exist yet starts: '$' (default, new entries only) or '0' (everything kept) */
  start?: '$' | '0' | string;
  /** XREADGROUP BLOCK per read, ms [5000] */
  blockMs?: number;
  /** entries per read [100] */
  count?: number;
  /** cluster: how often the masters' streams are derived again, ms [5000]; 0 never */
  topologyMs?: number;
  /** ends the iteration (the entry in hand is acknowledged) */
  signal?: AbortSignal;
  /** read errors (the reader retries after 1 s); default console.error */
  onError?: (err: unknown) => void;
}

export interface EventIterator extends AsyncIterableIterator<BrokerEvent> {
  next(): Promise<IteratorResult<BrokerEvent, undefined>>;
  return(): Promise<IteratorResult<BrokerEvent, undefined>>;
}

export interface RpcContext {
  user: string;
  conn: string;
  node: string;
  /** the client's request id */
  id: string;
  /** ms since the epoch; the client gets `timeout` after it */
  deadline: number;
  method: string;
  /** the broker:rpc entry id */
  entryId: string;
  /** aborted at the deadline */
  signal: AbortSignal;
}

/** A handler's result is sent as JSON; a thrown error's `code` (default "error") and `message` go to the client. */
export type RpcHandler<D = any, R = unknown> = (data: D, ctx: RpcContext) => R | Promise<R>;

export interface RpcStartOptions {
  /** consumer group [rpc] */
  group?: string;
  consumer: string;
  /** calls at a time [16] */
  concurrency?: number;
  /** where a new group starts [$] */
  start?: '$' | '0' | string;
  blockMs?: number;
  /** read errors and answers that could not be sent; default console.error */
  onError?: (err: unknown, ctx?: RpcContext) => void;
}

export interface Rpc {
  handle<D = any, R = unknown>(method: string, fn: RpcHandler<D, R>): this;
  start(options: RpcStartOptions): Promise<void>;
  stop(): Promise<void>;
  readonly running: boolean;
}

export interface CommandOptions {
  /** route to the master of this key's slot on a cluster */
  key?: string | Buffer;
  /** keep bulk strings as Buffers */
  buffers?: boolean;
}

export type BrokerOptions =
  | string
  | Redis
  | Cluster
  | { cluster: ClusterNode[]; clusterOptions?: ClusterOptions }
  | { redis: RedisOptions }
  | RedisOptions;

export class Broker {
  constructor(redisOrOptions?: BrokerOptions);
  readonly redis: Redis | Cluster;
  readonly isCluster: boolean;
  readonly rpc: Rpc;

  publish(room: string, ev: string, data: unknown, options?: PublishOptions): Promise<number>;
  emitToUser(user: string, ev: string, data: unknown, options?: PublishOptions): Promise<number>;
  broadcast(ev: string, data: unknown, options?: BroadcastOptions): Promise<number>;
  presence(user: string): Promise<Presence>;
  roomMembers(room: string, options?: { pageSize?: number }): Promise<RoomMember[]>;
  roomCount(room: string): Promise<Counts>;
  online(): Promise<Counts>;
  nodes(): Promise<NodeInfo[]>;
  history<T = unknown>(room: string, options?: HistoryOptions): Promise<History<T>>;
  kick(user: string, reason?: string): Promise<number>;
  userJoin(user: string, room: string): Promise<number>;
  userLeave(user: string, room: string): Promise<number>;
  throttle(key: string, maxBurst: number, count: number, periodS: number, quantity?: number): Promise<Throttle>;
  events(options: EventsOptions): EventIterator;
  eventStreams(): Promise<string[]>;
  command(name: string, args?: Array<string | number | Buffer>, options?: CommandOptions): Promise<any>;
  eachMaster(name: string, args?: Array<string | number | Buffer>, options?: CommandOptions): Promise<any[]>;
  close(): Promise<void>;
}

export function encodePayload(data: unknown, format?: Format): [string | Buffer, Format];
export function keySlot(key: string | Uint8Array): number;
export function crc16(bytes: Uint8Array): number;
export function eventStreamsFromSlots(slots: Array<string | undefined>): Map<string, string>;
export function toEvent(stream: string, id: string, fields: Record<string, string>): BrokerEvent;
export const EVENTS_STREAM: 'broker:events';
export const RPC_STREAM: 'broker:rpc';
