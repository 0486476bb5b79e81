// Types of herald.js, the JavaScript client of protocol herald.v1.

/** How the client spaces reconnections and retries: min doubled per failed attempt up to max, randomized. */
export interface Backoff {
  /** milliseconds; default 50 */
  min?: number;
  /** milliseconds; default 5000 */
  max?: number;
  /** default 'full': uniform between min and the bound, which spreads the clients that lost the same node the most */
  jitter?: 'full' | 'equal' | 'none';
}

/** A localStorage-like store for subscription positions. */
export interface PositionStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface Options {
  /** ws:// or wss:// URLs (ending in /ws) of one or more nodes; tried in order, then round robin. */
  urls: string[];
  /** A JWT sent with auth. */
  token?: string;
  /** Asked for a token at every (re)connection, so a long-lived page outlives its tokens. */
  tokenSource?: () => string | Promise<string>;
  /** The bare user name, for a node in insecure mode. */
  user?: string;
  backoff?: Backoff;
  /** Bounds one connection attempt (socket and auth), ms; default 10000. */
  dialTimeout?: number;
  /** The client pings a socket quiet for this long and drops it if nothing answers within two more, ms; default 15000. */
  pingInterval?: number;
  /** The WebSocket class; default globalThis.WebSocket. */
  WebSocket?: new (url: string, protocol: string) => WebSocket;
  /** Where subscription positions are kept across page loads (e.g. sessionStorage). */
  storage?: PositionStorage;
  /** Key prefix in storage; default 'herald:pos:'. */
  storagePrefix?: string;
  /** Told of the client's inner workings (warn, info, debug). */
  logger?: Partial<Pick<Console, 'error' | 'warn' | 'info' | 'debug'>>;
  /** Same as on('state', fn). */
  onState?: (s: StateChange) => void;
}

export type State = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface StateChange {
  state: State;
  /** The node URL tried or lost. */
  url?: string;
  /** The id of the node, once connected. */
  node?: string;
  /** Why an attempt failed or a connection ended. */
  error?: unknown;
  /** The websocket close code the connection ended with (1001 going away, 4008 slow consumer...), or 0. */
  closeCode?: number;
  /** With disconnected: ms until the next attempt. */
  retryIn?: number;
}

/** A subscription (re)started on some node. */
export interface Subscribed {
  room: string;
  node: string;
  url: string;
  /** false for the first subscribe, true for each resume after it. */
  resumed: boolean;
  fromSeq: number;
  epoch: string;
  lastSeq: number;
  truncated: boolean;
  epochChanged: boolean;
}

export interface Retry {
  op: 'publish';
  room: string;
  key: string;
  attempt: number;
  error: unknown;
}

export interface HandlerError {
  room: string;
  event: RoomEvent;
  error: unknown;
}

export interface EventMap {
  state: StateChange;
  subscribed: Subscribed;
  retry: Retry;
  /** A subscription handler threw; delivery went on. */
  error: HandlerError;
}

/**
 * What a subscription delivers, in seq order:
 * - 'event': an event of the room (type message, join or leave);
 * - 'truncated': events of epoch below seq were trimmed before they could be delivered; delivery continues at seq;
 * - 'epoch_changed': the room was deleted and created again while the subscription was away; delivery continues in epoch at seq;
 * - 'room_deleted': incarnation epoch ended at seq; if the room is used again, its events follow with a new epoch from seq 1;
 * - 'presence': a join or leave (type) of a room that keeps them out of its history: no seq of its own, it follows the event at seq
 *   (0: the room's first is yet to come), and only a subscription live at that point gets it.
 */
export interface RoomEvent {
  kind: 'event' | 'truncated' | 'epoch_changed' | 'room_deleted' | 'presence';
  room: string;
  /** The room's incarnation, a decimal string. */
  epoch: string;
  seq: number;
  type?: 'message' | 'join' | 'leave';
  member?: string;
  /** The message, or the member's meta for a join. */
  data?: unknown;
  /** When the leader appended it, RFC 3339 UTC. */
  ts?: string;
}

export interface SubscribeOptions {
  /** The first seq to deliver; absent or 0: after the room's current last seq. */
  fromSeq?: number;
  /** The incarnation fromSeq belongs to. */
  epoch?: string;
  /** Start right after the position kept for the room (in memory or storage), if there is one. */
  resume?: boolean;
}

export interface Subscription {
  readonly room: string;
  /** Resolves at the node's first answer; rejects if the subscription is refused or closed first. */
  readonly ready: Promise<{ epoch: string; fromSeq: number }>;
  /** Resolves when the subscription ends: null after close(), else why (a HeraldError with code 'unsubscribed' when the server ended it). */
  readonly done: Promise<unknown>;
  /** The seq of the last delivered event (or, before any, where delivery starts minus one). */
  readonly lastSeq: number;
  readonly lastEpoch: string;
  /** Where to subscribe from to resume right after the last delivered event. */
  position(): { fromSeq: number; epoch: string };
  /** Ends the subscription and tells the node to stop sending it. */
  close(): void;
}

export interface PublishOptions {
  /** The idempotency key; default a random one per call. Give your own to stay exactly-once across page loads. */
  key?: string;
  /** Append only if the room's last seq is expectSeq; else a 'conflict' HeraldError with lastSeq. */
  expectSeq?: number;
  /** Ends the retries; a publish that may have been applied then fails with 'unknown_outcome' and its key. */
  signal?: AbortSignal;
}

export interface PublishResult {
  seq: number;
  epoch: string;
  /** The key had been published already (by an earlier attempt of this call): seq is that publish's. */
  duplicate: boolean;
  key: string;
}

export interface ReadOptions {
  /** Let any replica answer from what it has applied, possibly behind. */
  stale?: boolean;
  signal?: AbortSignal;
}

export interface HistoryOptions extends ReadOptions {
  /** Default: the first retained event. */
  fromSeq?: number;
  /** Default 100, at most 1000. */
  limit?: number;
}

export interface HistoryPage {
  events: RoomEvent[];
  firstSeq: number;
  /** The room's last seq. */
  lastSeq: number;
  epoch: string;
  /** fromSeq was below the oldest retained event: the page starts at firstSeq. */
  truncated: boolean;
  stale: boolean;
  /** The room has events after this page. */
  more: boolean;
  /** The fromSeq of the next page. */
  nextSeq: number;
}

export interface Member {
  member: string;
  meta: unknown;
  joinedSeq: number;
}

export interface MemberList {
  members: Member[];
  seq: number;
  epoch: string;
  stale: boolean;
}

/**
 * An error a node answered (code bad_request, unauthorized, forbidden, not_found, conflict, too_large,
 * rate_limited, limit_exceeded, unavailable, unknown_outcome, internal) or one of the client's own:
 * 'closed' (the client is closed), 'subscribed' (the room is already subscribed on this client),
 * 'overtaken' (a later join or leave of the room changed what the client wants), 'unknown_outcome'
 * for a publish given up after an attempt that may have been applied (key tells which), and
 * 'too_large' for a request whose frame is over the node's max_frame (refused before it is sent) or
 * that the node closed the socket for (1009); it is never retried.
 */
export class HeraldError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  /** With conflict: the room's last seq. */
  readonly lastSeq: number;
  /** With rate_limited. */
  readonly retryAfterMs: number;
  /** With a publish's unknown_outcome: publish again with this key to find out. */
  readonly key?: string;
}

/**
 * A connection to a Herald cluster that survives the loss of any node: it reconnects (next URL, backoff with
 * jitter), authenticates, re-joins its rooms and resumes its subscriptions without gap or duplicate.
 */
export class Herald {
  /** Creates a client and waits for its first connection. */
  static connect(opts: Options): Promise<Herald>;
  constructor(opts: Options);
  readonly state: State;
  /** The id of the node the client is connected to, or ''. */
  readonly node: string;
  /** The URL of the node the client is connected to, or ''. */
  readonly url: string;
  /** The user id the last auth was accepted for ('' before it). */
  readonly user: string;
  /** The node URLs the client goes through. */
  readonly urls: string[];
  /** Resolves at the first connection; rejects if the client fails (credentials refused) or closes first. */
  ready(): Promise<void>;
  on<K extends keyof EventMap>(type: K, fn: (detail: EventMap[K]) => void): () => void;
  /** Appends data to room exactly once, retrying on any node, and resolves where it landed. */
  publish(room: string, data: unknown, opts?: PublishOptions): Promise<PublishResult>;
  /** Delivers room's events to handler, each seq once and in order, across reconnections. */
  subscribe(room: string, handler: (ev: RoomEvent, sub: Subscription) => void, opts?: SubscribeOptions): Subscription;
  /** Joins room with meta as presence data; resolves the join's seq. Re-joined on every new socket until leave. */
  join(room: string, meta?: unknown, opts?: { signal?: AbortSignal }): Promise<number>;
  /** Leaves room; resolves the leave's seq, or 0 if the member was already gone. */
  leave(room: string, opts?: { signal?: AbortSignal }): Promise<number>;
  members(room: string, opts?: ReadOptions): Promise<MemberList>;
  history(room: string, opts?: HistoryOptions): Promise<HistoryPage>;
  /** The position of the last event delivered for room, kept across subscriptions and, with storage, page loads. */
  position(room: string): { seq: number; epoch: string } | null;
  /** Drops the socket and connects to url (added to urls if new) or the next URL at once. */
  reconnect(url?: string): void;
  /** Closes the socket and ends every subscription; calls in progress fail with code 'closed'. */
  close(): void;
}

/** The wait in ms before attempt+1 after attempt (from 0) failed. */
export function backoffDelay(attempt: number, backoff?: Backoff, random?: () => number): number;
/** A fresh random idempotency key. */
export function newKey(): string;

export default Herald;
