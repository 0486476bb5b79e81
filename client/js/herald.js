// herald.js: the JavaScript client of Herald's websocket protocol,
// herald.v1 (docs/protocol.md). A dependency-free ES module for browsers
// (<script type="module">, bundlers) and for any runtime with a WebSocket
// class. It makes the same decisions as the Go client (client/doc.go):
//
//   - one socket at a time; when it ends, reconnect to the next URL, round
//     robin, after a backoff with jitter, authenticate, re-join the rooms
//     joined through the client and resume every subscription;
//   - publish gives each call an idempotency key and repeats the call with
//     it after anything that leaves its outcome open (the socket dying
//     after the request was sent, unavailable, unknown_outcome, internal,
//     rate_limited), so the message lands exactly once;
//   - a subscription remembers the seq and epoch of the last event it
//     delivered, subscribes again from the next seq on every new socket and
//     drops anything below it: each seq reaches the handler once, in order.
//     Truncation, epoch changes and room deletion are notices in the same
//     stream, never silent.
//
// Types are in herald.d.ts beside this file.

const SUBPROTOCOL = 'herald.v1';
const OPEN = 1; // WebSocket.OPEN, not read from the class: fakes may lack it

// A connection that lasted this long starts the backoff over: a node that
// accepts and then drops every socket must not be hammered.
const STABLE_AFTER_MS = 2000;

// The close code of a node that read a frame header over its hard limit
// (4 × max_frame); it reads nothing of the frame, so no reply says which.
const CLOSE_TOO_LARGE = 1009;

// utf8Length is the size of s as a frame: the node counts bytes, and a
// UTF-16 code unit takes 1 to 3 of them (a surrogate pair 4).
function utf8Length(s) {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if (c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 2; // two units, four bytes
      i++;
    } else n += 2;
  }
  return n;
}

/** An error a node answered, or one the client reports in the protocol's terms. */
export class HeraldError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {{retryable?: boolean, lastSeq?: number, retryAfterMs?: number, key?: string, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message ? `herald: ${code}: ${message}` : `herald: ${code}`,
      extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = 'HeraldError';
    this.code = code;
    this.retryable = !!extra.retryable;
    this.lastSeq = extra.lastSeq ?? 0;
    this.retryAfterMs = extra.retryAfterMs ?? 0;
    if (extra.key !== undefined) this.key = extra.key;
  }
}

// An attempt that died with its socket. sent says whether the request may
// have reached the node, so whether it may have taken effect.
class ConnLost extends Error {
  constructor(sent) {
    super('herald: connection lost');
    this.sent = sent;
  }
}

// The caller's signal ended an attempt; reason is the signal's.
class Aborted extends Error {
  constructor(reason, sent) {
    super('herald: aborted');
    this.reason = reason;
    this.sent = sent;
  }
}

const closedError = () => new HeraldError('closed', 'the client is closed');

/**
 * The wait before attempt+1, after attempt (from 0) failed: min doubled per
 * attempt up to max, randomized. Full jitter spreads the clients that lost
 * the same node the most.
 * @param {number} attempt
 * @param {{min?: number, max?: number, jitter?: 'full'|'equal'|'none'}} [b]
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, b = {}, random = Math.random) {
  const min = b.min > 0 ? b.min : 50;
  const max = Math.max(b.max > 0 ? b.max : 5000, min);
  let bound = max;
  if (attempt >= 0 && attempt < 32) bound = Math.min(max, min * 2 ** attempt);
  switch (b.jitter ?? 'full') {
    case 'none':
      return bound;
    case 'equal': {
      const half = bound / 2;
      return Math.max(min, half + random() * (bound - half));
    }
    default:
      return min + random() * (bound - min);
  }
}

/** A fresh random idempotency key. */
export function newKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Epochs are decimal strings that grow with each incarnation ("" for a room
// that does not exist); BigInt keeps their order past 2^53.
function parseEpoch(s) {
  if (s === undefined || s === null || s === '') return 0n;
  if (typeof s !== 'string' || !/^[0-9]+$/.test(s)) throw new Error(`epoch ${JSON.stringify(s)} is not a decimal number`);
  return BigInt(s);
}

function replyError(f) {
  const extra = { retryable: true, lastSeq: f.last_seq ?? 0, retryAfterMs: f.retry_after_ms ?? 0 };
  const e = f.error;
  if (e && typeof e === 'object' && typeof e.code === 'string' && e.code !== '') {
    return new HeraldError(e.code, e.message ?? '', { ...extra, retryable: !!e.retryable });
  }
  const msg = e === undefined || e === null ? 'reply has ok false and no error' : typeof e === 'string' ? e : JSON.stringify(e);
  return new HeraldError('internal', msg, extra);
}

function isCode(err, code) {
  return err instanceof HeraldError && err.code === code;
}

function eventOf(f) {
  return { kind: 'event', room: f.room, epoch: f.epoch ?? '', seq: f.seq, type: f.type, member: f.member, data: f.data ?? null, ts: f.ts };
}

// What an operation throws when it stops retrying: the signal's own reason
// when the caller aborted, as fetch does.
function stopError(err) {
  return err instanceof Aborted ? err.reason : err;
}

// Lock serializes the join, leave and re-join of one room: each would
// otherwise add a join event of its own.
class Lock {
  constructor() {
    this.held = false;
    this.waiters = [];
  }

  /** @returns {Promise<boolean>} false if signal ended first */
  acquire(signal) {
    if (signal && signal.aborted) return Promise.resolve(false);
    if (!this.held) {
      this.held = true;
      return Promise.resolve(true);
    }
    return new Promise((resolve) => {
      const w = { resolve, off: () => {} };
      if (signal) {
        const onAbort = () => {
          const i = this.waiters.indexOf(w);
          if (i >= 0) this.waiters.splice(i, 1);
          resolve(false);
        };
        signal.addEventListener('abort', onAbort, { once: true });
        w.off = () => signal.removeEventListener('abort', onAbort);
      }
      this.waiters.push(w);
    });
  }

  tryAcquire() {
    if (this.held) return false;
    this.held = true;
    return true;
  }

  release() {
    const w = this.waiters.shift();
    if (w) {
      w.off();
      w.resolve(true);
    } else {
      this.held = false;
    }
  }
}

// Conn is one socket to one node. Everything working on it learns that it
// ended through gone, closed and signal.
class Conn {
  constructor(client, url) {
    this.client = client;
    this.url = url;
    this.node = '';
    this.user = '';
    this.maxFrame = 0; // the node's max_frame, told at auth (0: not told)
    this.born = Date.now();
    this.lastRecv = Date.now();
    this.pending = new Map();
    this.gone = false;
    this.closeCode = 0;
    this.closeReason = '';
    this.error = null;
    this.ctl = new AbortController();
    this.signal = this.ctl.signal;
    this.closed = new Promise((resolve) => { this.resolveClosed = resolve; });
    this.opened = new Promise((resolve, reject) => { this.resolveOpened = resolve; this.rejectOpened = reject; });
    this.opened.catch(() => {});
    this.timer = null;
    const ws = new client.WebSocket(url, SUBPROTOCOL);
    this.ws = ws;
    ws.onopen = () => {
      this.lastRecv = Date.now();
      this.keepalive();
      this.resolveOpened();
    };
    ws.onmessage = (e) => {
      this.lastRecv = Date.now();
      client.dispatch(this, e.data);
    };
    ws.onclose = (e) => this.end(e.code || 1006, e.reason || '', null);
    // An error event is always followed by close, which says more.
    ws.onerror = () => {};
  }

  // keepalive sends the protocol's ping once the socket has been quiet for
  // an interval, and drops the socket if nothing at all comes back within
  // two more: a partitioned node does not close its TCP connections, and
  // scripts cannot see the websocket-level pings the browser answers. Only
  // an unanswered ping counts, never mere quiet, because browsers run the
  // timers of background tabs as rarely as once a minute.
  keepalive() {
    const every = this.client.opts.pingInterval;
    let pingAt = 0;
    this.timer = setInterval(() => {
      const now = Date.now();
      if (pingAt > 0 && this.lastRecv < pingAt) {
        if (now - pingAt >= 2 * every) this.kill(new Error(`no answer to a ping for ${Math.round(now - pingAt)} ms`));
        return;
      }
      if (now - this.lastRecv >= every) {
        pingAt = now;
        this.send({ id: ++this.client.ids, op: 'ping' });
      }
    }, Math.max(every / 2, 1));
  }

  /** @returns {boolean} whether the frame was handed to the socket */
  send(obj) {
    return this.sendText(JSON.stringify(obj));
  }

  /** @returns {boolean} whether the frame was handed to the socket */
  sendText(text) {
    if (this.gone) return false;
    if (this.ws.readyState !== OPEN) {
      // Closing, its close event not yet dispatched: end it now, or
      // requests would find it again and again meanwhile.
      this.kill(new Error('socket closed'));
      return false;
    }
    this.ws.send(text);
    return true;
  }

  // kill ends the socket now, without waiting for the close handshake,
  // which a dead network would hold up.
  kill(err) {
    if (this.gone) return;
    try {
      this.ws.close(1000, err && err.message ? String(err.message).slice(0, 40) : '');
    } catch {
      // already closing
    }
    this.end(0, '', err);
  }

  end(code, reason, err) {
    if (this.gone) return;
    this.gone = true;
    this.closeCode = code;
    this.closeReason = reason;
    this.error = err || (code ? new Error(`socket closed with ${code}${reason ? ': ' + reason : ''}`) : new Error('socket closed'));
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this.timer !== null) clearInterval(this.timer);
    this.rejectOpened(this.error);
    const pending = [...this.pending.values()];
    this.pending.clear();
    // After a 1009 the culprit still waits for its reply (the node read
    // nothing after it), and the largest waiting frame is at least as
    // large: fail it, or it would close every socket it is sent on. Others
    // are repeated as after any lost socket; an oversized one among them
    // meets the next 1009.
    const largest = code === CLOSE_TOO_LARGE ? Math.max(0, ...pending.map((c) => c.size)) : -1;
    for (const call of pending) {
      if (call.size === largest) {
        call.fail(new HeraldError('too_large', `the node closed the socket (1009) for a frame of ${largest} bytes, over its hard frame limit`));
      } else {
        call.fail(new ConnLost(true));
      }
    }
    this.ctl.abort(this.error);
    this.resolveClosed();
  }
}

// Subscription delivers one room's events to its handler, each seq once and
// in order, across reconnections to any node.
class Subscription {
  constructor(client, room, handler, opts) {
    this.client = client;
    this.room = room;
    this.handler = handler;
    this.opts = opts;
    this.wire = null; // the socket subscribed on, or being subscribed on
    this.inflight = false; // a subscribe loop runs for wire
    this.awaiting = false; // its request is sent and the answer not yet applied
    this.resync = false; // subscribe again once the loop's request is answered
    this.positioned = false; // the first subscribe was answered
    this.epoch = 0n;
    this.epochStr = '';
    this.deleted = false; // epoch ended: only a newer one may follow
    this.next = 0; // the seq owed next
    this.gaps = 0; // subscribes since the last accepted event, for backoff
    this.ended = false;
    this.closedByApp = false;
    this.error = null;
    /** the position of the last delivered event or notice */
    this.lastSeq = 0;
    this.lastEpoch = '';
    this.ready = new Promise((resolve, reject) => { this.resolveReady = resolve; this.rejectReady = reject; });
    this.ready.catch(() => {});
    this.done = new Promise((resolve) => { this.resolveDone = resolve; });
  }

  /** Where to subscribe from to resume right after the last delivered event. */
  position() {
    return { fromSeq: this.lastSeq + 1, epoch: this.lastEpoch };
  }

  /** Ends the subscription and tells the node to stop sending it. */
  close() {
    if (this.closedByApp) return;
    this.closedByApp = true;
    const wire = this.wire;
    const awaiting = this.awaiting;
    this.finish(null);
    // The node registers a subscription in its own time after reading the
    // request: an unsubscribe sent before the answer could overtake it, so
    // the subscribe loop sends it once the answer is in.
    this.client.detach(this, awaiting ? null : wire);
  }

  finish(err) {
    if (this.ended) return;
    this.ended = true;
    this.error = err;
    if (err) this.rejectReady(err);
    else this.rejectReady(closedError());
    this.resolveDone(err);
  }

  ensure(cn) {
    if (this.ended || this.wire === cn) return;
    this.wire = cn;
    this.inflight = true;
    this.awaiting = false;
    this.resync = false;
    this.loop(cn, 0);
  }

  lost(cn) {
    if (this.wire === cn) {
      this.wire = null;
      this.inflight = this.awaiting = this.resync = false;
    }
  }

  // loop sends subscribe on cn, from the subscription's position, until the
  // node accepts it, refuses it for good, or cn ends.
  async loop(cn, delay) {
    const c = this.client;
    for (let attempt = 0; ; attempt++) {
      if (delay > 0 && !(await c.sleep(delay, cn.signal))) return;
      if (this.wire !== cn || this.ended) return;
      const req = { op: 'subscribe', room: this.room };
      if (this.positioned) {
        req.from_seq = this.next;
        if (this.epochStr !== '') req.epoch = this.epochStr;
      } else {
        if (this.opts.fromSeq > 0) req.from_seq = this.opts.fromSeq;
        if (this.opts.epoch) req.epoch = this.opts.epoch;
      }
      this.awaiting = true;
      let err = null;
      try {
        await c.roundTrip(cn, req, { apply: (f) => this.answered(cn, req, f) });
      } catch (e) {
        err = e;
      }
      if (this.wire !== cn) return;
      this.awaiting = false;
      if (this.closedByApp) {
        this.inflight = false;
        c.detach(this, cn);
        return;
      }
      if (err === null) {
        if (this.resync) {
          this.resync = false;
          delay = 0;
          continue;
        }
        this.inflight = false;
        return;
      }
      if (err instanceof HeraldError && !err.retryable) {
        this.inflight = false;
        this.finish(err);
        c.detach(this, null);
        return;
      }
      if (err instanceof ConnLost) return; // the next socket subscribes again
      const r = c.classify(err, attempt);
      if (!r.retry) return;
      delay = r.wait;
    }
  }

  // answered applies the node's answer to req as the reply is read, before
  // any later frame of the socket: the subscription must know its position
  // before its first event.
  answered(cn, req, f) {
    let e;
    try {
      e = parseEpoch(f.epoch);
    } catch (err) {
      throw new HeraldError('internal', 'subscribe reply: ' + err.message, { retryable: true });
    }
    if (this.wire !== cn || this.ended) return;
    this.awaiting = false;
    const first = !this.positioned;
    if (first) {
      this.positioned = true;
      if (req.from_seq === undefined) {
        this.epoch = e;
        this.epochStr = f.epoch ?? '';
        this.next = (f.last_seq ?? 0) + 1;
      } else {
        this.epoch = parseEpoch(req.epoch ?? '');
        this.epochStr = req.epoch ?? '';
        this.next = req.from_seq;
      }
      this.lastSeq = this.next - 1;
      this.lastEpoch = this.epochStr;
    }
    const fromSeq = req.from_seq ?? this.next;
    this.applyAnswer(f, e);
    if (first) this.resolveReady({ epoch: this.epochStr, fromSeq: this.next });
    this.client.emit('subscribed', {
      room: this.room, node: cn.node, url: cn.url, resumed: !first, fromSeq,
      epoch: f.epoch ?? '', lastSeq: f.last_seq ?? 0,
      truncated: !!f.truncated, epochChanged: !!f.epoch_changed,
    });
  }

  applyAnswer(f, e) {
    if (f.epoch_changed && e === 0n) {
      // The incarnation asked for is gone and none replaced it.
      if (this.epoch !== 0n && !this.deleted) {
        this.deleted = true;
        this.notice('room_deleted', this.epochStr, this.next - 1);
      }
      return;
    }
    if (f.epoch_changed && e > this.epoch) {
      const start = f.truncated && f.first_seq > 1 ? f.first_seq : 1;
      const announce = !this.deleted && this.epoch !== 0n ? 'epoch_changed' : start > 1 ? 'truncated' : '';
      this.enterEpoch(e, f.epoch);
      this.next = start;
      if (announce) this.notice(announce, f.epoch, start);
      return;
    }
    if (this.epoch === 0n && !this.deleted) {
      // Subscribed without an epoch: the room's is the one.
      this.epoch = e;
      this.epochStr = f.epoch ?? '';
    }
    if (f.truncated && f.first_seq > this.next && e === this.epoch) {
      this.next = f.first_seq;
      this.notice('truncated', this.epochStr, f.first_seq);
    }
  }

  enterEpoch(e, str) {
    this.epoch = e;
    this.epochStr = str;
    this.deleted = false;
    this.next = 1;
  }

  // acceptEpoch reports whether a push of incarnation e belongs to what the
  // subscription delivers, moving it to e if e is newer.
  acceptEpoch(e, str) {
    if (e === 0n || e < this.epoch) return false;
    if (e === this.epoch) return !this.deleted;
    const ended = this.epoch !== 0n && !this.deleted;
    const old = this.epochStr;
    const last = this.next - 1;
    this.enterEpoch(e, str);
    // The node announces the end of an incarnation before the next one's
    // events; should it not have, the application still learns.
    if (ended) this.notice('room_deleted', old, last);
    return true;
  }

  // offer takes a push of cn for this room, in frame order.
  offer(cn, f) {
    if (this.wire !== cn || !this.positioned || this.ended) {
      // Pushes before the first answer belong to a subscription of this
      // room the node had before (a closed one, not yet gone).
      return;
    }
    let e;
    try {
      e = parseEpoch(f.epoch);
    } catch {
      this.client.log('warn', 'push with a bad epoch', { room: this.room, epoch: f.epoch });
      return;
    }
    switch (f.ev) {
      case 'event':
        if (!this.acceptEpoch(e, f.epoch) || this.ended) return;
        if (f.seq < this.next) return; // already delivered: a resumed subscription repeats
        if (f.seq > this.next) {
          this.resubscribe(cn);
          return;
        }
        this.gaps = 0;
        this.next++;
        this.deliver(eventOf(f));
        return;
      case 'presence':
        // A join or leave kept out of history: no seq of its own, and
        // delivered only in its place, right after the event it follows.
        if (!this.acceptEpoch(e, f.epoch) || this.ended || f.after_seq !== this.next - 1) return;
        this.deliver({ ...eventOf(f), kind: 'presence', seq: f.after_seq });
        return;
      case 'truncated':
        if (this.acceptEpoch(e, f.epoch) && f.first_seq > this.next) {
          this.next = f.first_seq;
          this.notice('truncated', f.epoch, f.first_seq);
        }
        return;
      case 'room_deleted':
        if (e === 0n || e < this.epoch || (e === this.epoch && this.deleted)) return;
        this.epoch = e;
        this.epochStr = f.epoch;
        this.deleted = true;
        this.notice('room_deleted', f.epoch, f.last_seq ?? 0);
        return;
      case 'unsubscribed':
        // The application's backend ended it (the server API's
        // unsubscribe): subscribing again would undo that.
        this.inflight = false;
        this.finish(new HeraldError('unsubscribed', 'the server ended the subscription'));
        this.client.detach(this, null);
        return;
      default:
    }
  }

  // resubscribe subscribes again on cn from next, after a gap the node
  // should never leave or after it ended the subscription.
  resubscribe(cn) {
    if (this.awaiting) {
      // The subscribe in flight starts at or below next: it covers the gap.
      return;
    }
    if (this.inflight) {
      this.resync = true;
      return;
    }
    this.inflight = true;
    // A node that keeps leaving gaps must not make the client spin.
    const delay = this.gaps > 0 ? backoffDelay(this.gaps - 1, this.client.opts.backoff) : 0;
    this.gaps++;
    this.loop(cn, delay);
  }

  notice(kind, epoch, seq) {
    this.deliver({ kind, room: this.room, epoch, seq });
  }

  deliver(ev) {
    if (ev.kind === 'truncated' || ev.kind === 'epoch_changed') {
      this.lastSeq = ev.seq - 1;
    } else {
      this.lastSeq = ev.seq;
    }
    this.lastEpoch = ev.epoch;
    this.client.savePosition(this.room, this.lastSeq, this.lastEpoch);
    try {
      this.handler(ev, this);
    } catch (err) {
      // The application's mistake must not cost the stream its order.
      this.client.emit('error', { room: this.room, event: ev, error: err });
    }
  }
}

// joinState is what the client wants for one room's membership and what
// the current socket has. Its fields belong to whoever holds lock.
class JoinState {
  constructor(room) {
    this.room = room;
    this.lock = new Lock();
    this.want = false;
    this.meta = undefined;
    this.metaKey = '';
    this.wire = null; // the socket the member is joined through
    this.wireMetaKey = '';
    this.seq = 0; // the seq of that join
  }

  joinedOn(cn) {
    return this.want && this.wire === cn && this.wireMetaKey === this.metaKey;
  }
}

/**
 * A connection to a Herald cluster that survives the loss of any node.
 * See herald.d.ts for the options and methods.
 */
export class Herald {
  /** Creates a client and waits for its first connection. */
  static async connect(opts) {
    const c = new Herald(opts);
    try {
      await c.ready();
    } catch (err) {
      c.close();
      throw err;
    }
    return c;
  }

  constructor(opts = {}) {
    const urls = Array.isArray(opts.urls) ? opts.urls.slice() : opts.url ? [opts.url] : [];
    if (urls.length === 0) throw new TypeError('herald: no urls');
    if (!opts.token && !opts.tokenSource && !opts.user) {
      throw new TypeError('herald: no token, tokenSource or user to authenticate with');
    }
    const WS = opts.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== 'function') throw new TypeError('herald: no WebSocket class; pass one as the WebSocket option');
    this.WebSocket = WS;
    this.urls = urls;
    this.opts = {
      token: opts.token,
      tokenSource: opts.tokenSource,
      user: opts.user,
      backoff: { min: 50, max: 5000, jitter: 'full', ...(opts.backoff || {}) },
      dialTimeout: opts.dialTimeout > 0 ? opts.dialTimeout : 10000,
      pingInterval: opts.pingInterval > 0 ? opts.pingInterval : 15000,
      storage: opts.storage ?? null,
      storagePrefix: opts.storagePrefix ?? 'herald:pos:',
      logger: opts.logger ?? null,
    };
    this.ids = 0;
    this.user = ''; // as the node named it at the last auth
    this.cur = null; // the connection requests may use
    this.active = null; // the connection being set up or in use
    this.waiters = new Set(); // requests waiting for a connection
    this.sleepers = new Set();
    this.subs = new Map();
    this.joins = new Map();
    this.positions = new Map();
    this.listeners = new Map();
    this.closed = false;
    this.err = null; // why the client stopped
    this.forced = null; // the URL reconnect() asked for, or true for the next one
    this.wake = null; // ends the current wait between attempts
    this._state = 'connecting';
    this.firstUp = new Promise((resolve, reject) => { this.resolveFirstUp = resolve; this.rejectFirstUp = reject; });
    this.firstUp.catch(() => {});
    if (typeof opts.onState === 'function') this.on('state', opts.onState);
    // Started after the constructor returns, so that listeners added right
    // after it see the first connecting state.
    Promise.resolve().then(() => this.run());
  }

  /** connecting, connected, disconnected or closed. */
  get state() { return this._state; }
  /** The id of the node the client is connected to, or "". */
  get node() { return this.cur ? this.cur.node : ''; }
  /** The URL of the node the client is connected to, or "". */
  get url() { return this.cur ? this.cur.url : ''; }

  /** Resolves at the first connection; rejects if the client fails or closes first. */
  ready() { return this.firstUp; }

  /**
   * Adds a listener: 'state', 'subscribed', 'retry' or 'error'.
   * @returns {() => void} removes it
   */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => set.delete(fn);
  }

  emit(type, detail) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        this.log('error', `a ${type} listener threw`, { error: err });
      }
    }
  }

  log(level, msg, fields) {
    const l = this.opts.logger;
    if (l && typeof l[level] === 'function') l[level]('herald: ' + msg, fields ?? {});
  }

  setState(state, detail) {
    this._state = state;
    this.emit('state', { state, ...detail });
  }

  /**
   * Ends the socket and connects to url (or the next URL) at once. Joins and
   * subscriptions follow; requests in flight are retried there.
   */
  reconnect(url) {
    if (this.closed) return;
    if (url !== undefined && !this.urls.includes(url)) this.urls.push(url);
    this.forced = url ?? true;
    if (this.active) this.active.kill(new Error('switching node'));
    if (this.wake) this.wake();
  }

  /** Closes the socket and ends every subscription; calls in progress fail with code 'closed'. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.err = this.err || closedError();
    this.stopAll();
  }

  stopAll() {
    const err = this.err;
    for (const w of [...this.waiters]) w.reject(err);
    this.waiters.clear();
    for (const wake of [...this.sleepers]) wake();
    if (this.wake) this.wake();
    if (this.active) this.active.kill(new Error('client closed'));
    this.rejectFirstUp(err);
    for (const s of [...this.subs.values()]) s.finish(isCode(err, 'closed') ? null : err);
  }

  // fail stops the client for good with err.
  fail(err) {
    if (this.closed) return;
    this.closed = true;
    this.err = err;
    this.stopAll();
  }

  // sleep waits ms unless signal ends or the client closes first; it
  // resolves whether ms passed.
  sleep(ms, signal) {
    if (this.closed || (signal && signal.aborted)) return Promise.resolve(false);
    if (!(ms > 0)) return Promise.resolve(true);
    return new Promise((resolve) => {
      let timer = null;
      const done = (ok) => {
        clearTimeout(timer);
        this.sleepers.delete(wake);
        if (signal) signal.removeEventListener('abort', wake);
        resolve(ok);
      };
      const wake = () => done(false);
      timer = setTimeout(() => done(true), ms);
      this.sleepers.add(wake);
      if (signal) signal.addEventListener('abort', wake, { once: true });
    });
  }

  // pause is the wait between connection attempts, which reconnect() and
  // close() cut short.
  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const self = this;
      function done() {
        clearTimeout(timer);
        if (self.wake === done) self.wake = null;
        resolve();
      }
      this.wake = done;
    });
  }

  nextURL(next) {
    const f = this.forced;
    this.forced = null;
    if (typeof f === 'string') {
      const i = this.urls.indexOf(f);
      return [f, i + 1];
    }
    return [this.urls[next % this.urls.length], next + 1];
  }

  // run owns the connection: it connects, restores joins and
  // subscriptions, waits for the socket to end, and starts over.
  async run() {
    let next = 0;
    let attempt = 0;
    let connectedOnce = false;
    while (!this.closed) {
      let url;
      [url, next] = this.nextURL(next);
      this.setState('connecting', { url });
      let cn;
      try {
        cn = await this.dial(url);
      } catch (err) {
        if (this.closed) break;
        if (err instanceof HeraldError && !err.retryable && (!this.opts.tokenSource || !connectedOnce)) {
          // The same credentials would be refused again.
          this.fail(err);
          break;
        }
        const delay = this.forced ? 0 : backoffDelay(attempt, this.opts.backoff);
        attempt++;
        this.setState('disconnected', { url, error: err, closeCode: 0, retryIn: delay });
        await this.pause(delay);
        continue;
      }
      connectedOnce = true;
      await this.restoreJoins(cn);
      if (!cn.gone && !this.closed) {
        this.connected(cn);
        this.setState('connected', { url, node: cn.node });
        await cn.closed;
      }
      this.disconnected(cn);
      if (this.closed) break;
      if (Date.now() - cn.born >= STABLE_AFTER_MS) attempt = 0;
      const delay = this.forced ? 0 : backoffDelay(attempt, this.opts.backoff);
      attempt++;
      this.setState('disconnected', { url, node: cn.node, error: cn.error, closeCode: cn.closeCode, retryIn: delay });
      await this.pause(delay);
    }
    const err = this.err && !isCode(this.err, 'closed') ? this.err : null;
    this.setState('closed', { error: err });
  }

  // dial opens a socket to url and authenticates on it.
  async dial(url) {
    const cn = new Conn(this, url);
    this.active = cn;
    const timer = setTimeout(() => cn.kill(new Error(`no connection within ${this.opts.dialTimeout} ms`)), this.opts.dialTimeout);
    try {
      await cn.opened;
      const req = { op: 'auth' };
      if (this.opts.tokenSource) {
        req.token = await this.opts.tokenSource();
      } else if (this.opts.token) {
        req.token = this.opts.token;
      } else {
        req.user = this.opts.user;
      }
      const f = await this.roundTrip(cn, req, { signal: cn.signal });
      cn.node = f.node ?? '';
      cn.user = f.user ?? '';
      const max = f.limits && f.limits.max_frame;
      cn.maxFrame = typeof max === 'number' && max > 0 ? max : 0;
      this.user = cn.user;
      return cn;
    } catch (err) {
      cn.kill(err instanceof Error ? err : new Error(String(err)));
      if (this.active === cn) this.active = null;
      if (err instanceof ConnLost || err instanceof Aborted) throw cn.error;
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  connected(cn) {
    this.cur = cn;
    const waiters = [...this.waiters];
    this.waiters.clear();
    for (const w of waiters) w.resolve(cn);
    this.resolveFirstUp();
    for (const s of [...this.subs.values()]) s.ensure(cn);
  }

  disconnected(cn) {
    if (this.cur === cn) this.cur = null;
    if (this.active === cn) this.active = null;
    for (const s of [...this.subs.values()]) s.lost(cn);
  }

  // waitConn resolves the current connection, waiting for one.
  waitConn(signal) {
    if (this.err) return Promise.reject(this.err);
    if (signal && signal.aborted) return Promise.reject(new Aborted(signal.reason, false));
    if (this.cur && !this.cur.gone) return Promise.resolve(this.cur);
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      if (signal) {
        const onAbort = () => {
          this.waiters.delete(w);
          reject(new Aborted(signal.reason, false));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        w.resolve = (cn) => { signal.removeEventListener('abort', onAbort); resolve(cn); };
        w.reject = (err) => { signal.removeEventListener('abort', onAbort); reject(err); };
      }
      this.waiters.add(w);
    });
  }

  // roundTrip sends req on cn and resolves its successful reply. apply, if
  // given, runs as the reply is read, before any later frame of the socket.
  roundTrip(cn, req, { signal, apply } = {}) {
    return new Promise((resolve, reject) => {
      if (signal && signal.aborted) {
        reject(new Aborted(signal.reason, false));
        return;
      }
      if (cn.gone) {
        reject(new ConnLost(false));
        return;
      }
      const id = ++this.ids;
      let text;
      try {
        text = JSON.stringify({ id, ...req });
      } catch (err) {
        // Data JSON cannot carry (a BigInt, a cycle): no node could take it.
        reject(new TypeError(`herald: cannot encode the ${req.op} request as JSON: ${err && err.message}`));
        return;
      }
      const size = utf8Length(text);
      if (cn.maxFrame > 0 && size > cn.maxFrame) {
        // The node would refuse it, and past 4 × max_frame close the
        // socket for it: refuse it here, where the caller learns why.
        reject(new HeraldError('too_large',
          `the ${req.op} request is ${size} bytes as JSON; node ${cn.node || cn.url} takes frames of at most ${cn.maxFrame} bytes (its max_frame)`));
        return;
      }
      let onAbort = null;
      const settle = (fn, v) => {
        if (onAbort) signal.removeEventListener('abort', onAbort);
        fn(v);
      };
      const call = {
        apply,
        size,
        ok: (f) => settle(resolve, f),
        fail: (err) => settle(reject, err),
      };
      cn.pending.set(id, call);
      let sent = false;
      try {
        sent = cn.sendText(text);
      } catch {
        sent = false;
      }
      if (!sent) {
        // A frame the socket did not take cannot have been applied.
        cn.pending.delete(id);
        reject(new ConnLost(false));
        return;
      }
      if (signal) {
        onAbort = () => {
          if (cn.pending.delete(id)) reject(new Aborted(signal.reason, true));
        };
        signal.addEventListener('abort', onAbort, { once: true });
      }
    });
  }

  // dispatch handles one frame of cn, in the socket's order.
  dispatch(cn, data) {
    if (cn.gone) return;
    if (typeof data !== 'string') {
      this.log('warn', 'ignoring a binary frame', { url: cn.url });
      return;
    }
    let f;
    try {
      f = JSON.parse(data);
    } catch (err) {
      this.log('warn', 'unreadable frame', { url: cn.url, error: err });
      // Fail the request it answers, if that much can be read, rather
      // than leave it waiting.
      const m = /"id"\s*:\s*([0-9]+)/.exec(data);
      if (m) this.settle(cn, Number(m[1]), null, new HeraldError('internal', 'unreadable reply', { retryable: true }));
      return;
    }
    if (f === null || typeof f !== 'object') return;
    if (typeof f.ev === 'string' && f.ev !== '') {
      const s = this.subs.get(f.room);
      if (s) s.offer(cn, f);
      return;
    }
    if (typeof f.id !== 'number') {
      // Replies to frames the node could not attribute (id null).
      this.log('warn', 'reply to no request of this client', { url: cn.url, frame: f });
      return;
    }
    this.settle(cn, f.id, f, f.ok ? null : replyError(f));
  }

  settle(cn, id, f, err) {
    const call = cn.pending.get(id);
    if (!call) return; // its caller stopped waiting
    cn.pending.delete(id);
    if (err) {
      call.fail(err);
      return;
    }
    if (call.apply) {
      try {
        call.apply(f);
      } catch (e) {
        call.fail(e);
        return;
      }
    }
    call.ok(f);
  }

  // classify says whether to try a failed attempt again, after how long,
  // and whether it may have taken effect.
  classify(err, attempt) {
    if (err instanceof ConnLost) {
      // waitConn waits for the reconnection, which has its own backoff.
      return { retry: true, wait: 0, maybe: err.sent };
    }
    if (err instanceof Aborted) return { retry: false, wait: 0, maybe: err.sent };
    if (err instanceof HeraldError && err.code !== 'closed' && err.code !== 'overtaken') {
      if (!err.retryable) return { retry: false, wait: 0, maybe: false };
      let wait = backoffDelay(attempt, this.opts.backoff);
      if (err.code === 'rate_limited' && err.retryAfterMs > 0) wait = err.retryAfterMs;
      return { retry: true, wait, maybe: err.code === 'unknown_outcome' || err.code === 'internal' };
    }
    return { retry: false, wait: 0, maybe: false };
  }

  /**
   * Appends data to room exactly once and resolves where it landed.
   * @returns {Promise<{seq: number, epoch: string, duplicate: boolean, key: string}>}
   */
  async publish(room, data, { key, expectSeq, signal } = {}) {
    if (data === undefined) throw new TypeError('herald: publish needs data');
    if (!key) key = newKey();
    const req = { op: 'publish', room, data, key };
    if (expectSeq !== undefined && expectSeq !== null) req.expect_seq = expectSeq;
    let uncertain = false;
    // Once an attempt may have been applied, only a conflict proves it was
    // not (the key is checked before expect_seq); anything else leaves the
    // outcome unknown.
    const giveUp = (err) => {
      if (!uncertain || isCode(err, 'conflict')) return stopError(err);
      const cause = stopError(err);
      return new HeraldError('unknown_outcome',
        `the publish may or may not have been applied (${cause && cause.message ? cause.message : cause}); publish again with key ${JSON.stringify(key)} to find out`,
        { retryable: true, key, cause });
    };
    const f = await this.attempts(req, signal, giveUp, (err, r, attempt) => {
      uncertain = uncertain || r.maybe;
      if (r.retry) this.emit('retry', { op: 'publish', room, key, attempt: attempt + 1, error: err instanceof ConnLost ? new Error('connection lost') : err });
    });
    return { seq: f.seq, epoch: f.epoch ?? '', duplicate: !!f.duplicate, key };
  }

  // request runs a request that may be repeated freely (reads), on any
  // node, until it succeeds, fails for good or signal ends.
  request(req, signal) {
    return this.attempts(req, signal, stopError, () => {});
  }

  // attempts sends req, on any node, until it succeeds, fails for good or
  // signal ends. Each failed attempt and how classify judged it go to
  // failed before the next; fail makes the error thrown from the one
  // attempts stopped on.
  async attempts(req, signal, fail, failed) {
    for (let attempt = 0; ; attempt++) {
      let cn;
      try {
        cn = await this.waitConn(signal);
      } catch (err) {
        throw fail(err);
      }
      try {
        return await this.roundTrip(cn, req, { signal });
      } catch (err) {
        const r = this.classify(err, attempt);
        failed(err, r, attempt);
        if (!r.retry) throw fail(err);
        if (!(await this.sleep(r.wait, signal))) throw fail(this.err || new Aborted(signal && signal.reason, false));
      }
    }
  }

  /**
   * Reads up to limit events of room from fromSeq on (default: the first retained).
   * The node also bounds a page in bytes (max_page_bytes), so a page of big
   * events holds fewer than limit: read on from nextSeq while more.
   */
  async history(room, { fromSeq, limit, stale, signal } = {}) {
    const req = { op: 'history', room };
    if (fromSeq > 0) req.from_seq = fromSeq;
    if (limit > 0) req.limit = limit;
    if (stale) req.consistency = 'stale';
    const f = await this.request(req, signal);
    const events = (f.events || []).map(eventOf);
    const lastSeq = f.last_seq ?? 0;
    const nextSeq = events.length ? events[events.length - 1].seq + 1 : lastSeq + 1;
    return {
      events, firstSeq: f.first_seq ?? 0, lastSeq, epoch: f.epoch ?? '',
      truncated: !!f.truncated, stale: !!f.stale, more: events.length > 0 && nextSeq <= lastSeq, nextSeq,
    };
  }

  /** Reads who is in room. */
  async members(room, { stale, signal } = {}) {
    const req = { op: 'members', room };
    if (stale) req.consistency = 'stale';
    const f = await this.request(req, signal);
    return {
      members: (f.members || []).map((m) => ({ member: m.member, meta: m.meta ?? null, joinedSeq: m.joined_seq ?? 0 })),
      seq: f.seq ?? 0, epoch: f.epoch ?? '', stale: !!f.stale,
    };
  }

  joinFor(room) {
    let j = this.joins.get(room);
    if (!j) this.joins.set(room, (j = new JoinState(room)));
    return j;
  }

  // tidyJoin drops j if the client does not want the room, unless another
  // call holds it.
  tidyJoin(j) {
    if (j.lock.tryAcquire()) {
      this.forgetJoin(j);
      j.lock.release();
    }
  }

  forgetJoin(j) {
    if (!j.want && this.joins.get(j.room) === j) this.joins.delete(j.room);
  }

  /**
   * Makes the user a member of room with meta as its presence data and
   * resolves the seq of the join event. The client re-joins, with the same
   * meta, on every new socket until leave.
   */
  async join(room, meta, { signal } = {}) {
    const metaKey = meta === undefined ? '' : JSON.stringify(meta);
    const j = this.joinFor(room);
    let uncertain = false;
    const giveUp = (err) => {
      if (!uncertain) return stopError(err);
      return new HeraldError('unknown_outcome',
        'the join may or may not have been applied; the client keeps the member joined until leave',
        { retryable: true, cause: stopError(err) });
    };
    try {
      for (let attempt = 0; ; attempt++) {
        let cn;
        try {
          cn = await this.connLocked(j, signal);
        } catch (err) {
          throw giveUp(err);
        }
        if (uncertain) {
          if (!j.want || j.metaKey !== metaKey) {
            j.lock.release();
            throw new HeraldError('overtaken', 'a later join or leave of the room changed what the client wants');
          }
          if (j.joinedOn(cn)) {
            // The re-join after a reconnect finished it.
            j.lock.release();
            return j.seq;
          }
        }
        const req = { op: 'join', room };
        if (meta !== undefined) req.meta = meta;
        try {
          const f = await this.roundTrip(cn, req, { signal });
          j.want = true;
          j.meta = meta;
          j.metaKey = metaKey;
          j.wire = cn;
          j.wireMetaKey = metaKey;
          j.seq = f.seq;
          j.lock.release();
          return f.seq;
        } catch (err) {
          const r = this.classify(err, attempt);
          if (r.maybe && !uncertain) {
            // The member may be joined: keep it so on later sockets, as
            // for a join that succeeded.
            uncertain = true;
            j.want = true;
            j.meta = meta;
            j.metaKey = metaKey;
          }
          j.lock.release();
          if (!r.retry) throw giveUp(err);
          if (!(await this.sleep(r.wait, signal))) throw giveUp(this.err || new Aborted(signal && signal.reason, false));
        }
      }
    } finally {
      this.tidyJoin(j);
    }
  }

  // connLocked waits for a connection, then for the room's lock: a join or
  // leave is sent holding both.
  async connLocked(j, signal) {
    const cn = await this.waitConn(signal);
    if (!(await j.lock.acquire(signal))) throw new Aborted(signal && signal.reason, false);
    return cn;
  }

  /**
   * Removes the user from room and resolves the seq of the leave event (0
   * if the member was already gone). The client stops re-joining the room
   * at once.
   */
  async leave(room, { signal } = {}) {
    const j = this.joinFor(room);
    try {
      if (!(await j.lock.acquire(signal))) throw stopError(new Aborted(signal && signal.reason, false));
      const wasJoined = j.want || j.wire !== null;
      j.want = false;
      j.meta = undefined;
      j.metaKey = '';
      j.lock.release();
      for (let attempt = 0; ; attempt++) {
        let cn;
        try {
          cn = await this.connLocked(j, signal);
        } catch (err) {
          throw stopError(err);
        }
        if (j.want) {
          j.lock.release();
          throw new HeraldError('overtaken', 'a later join of the room changed what the client wants');
        }
        try {
          const f = await this.roundTrip(cn, { op: 'leave', room }, { signal });
          j.wire = null;
          j.lock.release();
          return f.seq;
        } catch (err) {
          if (isCode(err, 'not_found') && wasJoined) {
            // The socket it joined through closed and the node removed it.
            j.wire = null;
            j.lock.release();
            return 0;
          }
          j.lock.release();
          const r = this.classify(err, attempt);
          if (!r.retry) throw stopError(err);
          if (!(await this.sleep(r.wait, signal))) throw this.err || (signal && signal.reason);
        }
      }
    } finally {
      this.tidyJoin(j);
    }
  }

  // restoreJoins re-joins, through a new socket, the rooms the client is
  // joined to, before the socket serves other requests: a publish to a
  // members-only room must not race its own re-join. A re-join slower than
  // the dial timeout goes on in the background.
  async restoreJoins(cn) {
    const joins = [...this.joins.values()];
    if (joins.length === 0) return;
    const all = Promise.all(joins.map((j) => this.rejoin(cn, j)));
    const stop = new AbortController();
    const onEnd = () => stop.abort();
    cn.signal.addEventListener('abort', onEnd, { once: true });
    await Promise.race([all, this.sleep(this.opts.dialTimeout, stop.signal)]);
    stop.abort();
    cn.signal.removeEventListener('abort', onEnd);
  }

  async rejoin(cn, j) {
    for (let attempt = 0; ; attempt++) {
      if (!(await j.lock.acquire(cn.signal))) return;
      if (!j.want || j.joinedOn(cn)) {
        j.lock.release();
        return;
      }
      const meta = j.meta;
      const metaKey = j.metaKey;
      const req = { op: 'join', room: j.room };
      if (meta !== undefined) req.meta = meta;
      try {
        const f = await this.roundTrip(cn, req, { signal: cn.signal });
        j.wire = cn;
        j.wireMetaKey = metaKey;
        j.seq = f.seq;
        j.lock.release();
        return;
      } catch (err) {
        const r = this.classify(err, attempt);
        if (!r.retry) {
          if (!(err instanceof Aborted) && !cn.gone) {
            // The node will not have this member any more (the token lost
            // the right, say): stop wanting it.
            this.log('warn', 're-join refused; the client no longer joins the room', { room: j.room, error: err });
            j.want = false;
            j.meta = undefined;
            j.metaKey = '';
            this.forgetJoin(j);
          }
          j.lock.release();
          return;
        }
        j.lock.release();
        if (err instanceof ConnLost || !(await this.sleep(r.wait, cn.signal))) return;
      }
    }
  }

  /**
   * Starts delivering room's events to handler, in seq order, each once,
   * across reconnections. Throws if the client already subscribes to room.
   */
  subscribe(room, handler, opts = {}) {
    if (typeof handler !== 'function') throw new TypeError('herald: subscribe needs a handler');
    if (this.err) throw this.err;
    if (this.subs.has(room)) throw new HeraldError('subscribed', `room ${JSON.stringify(room)} is already subscribed on this client`);
    const o = { fromSeq: opts.fromSeq, epoch: opts.epoch };
    if (opts.resume) {
      const p = this.position(room);
      if (p) {
        o.fromSeq = p.seq + 1;
        o.epoch = p.epoch;
      }
    }
    if (o.epoch !== undefined && o.epoch !== '') parseEpoch(o.epoch);
    const s = new Subscription(this, room, handler, o);
    this.subs.set(room, s);
    if (this.cur && !this.cur.gone) s.ensure(this.cur);
    return s;
  }

  // detach removes s from the client and, if cn is given and no newer
  // subscription took the room, unsubscribes on cn.
  detach(s, cn) {
    if (this.subs.get(s.room) === s) this.subs.delete(s.room);
    if (!cn || cn.gone || this.subs.has(s.room)) return;
    // The reply is not waited for: an unknown id is ignored when it comes.
    cn.send({ id: ++this.ids, op: 'unsubscribe', room: s.room });
  }

  /**
   * The position of the last event delivered for room, kept across
   * subscriptions (and page loads, with the storage option).
   * @returns {{seq: number, epoch: string} | null}
   */
  position(room) {
    const p = this.positions.get(room);
    if (p) return { ...p };
    const st = this.opts.storage;
    if (!st) return null;
    try {
      const raw = st.getItem(this.opts.storagePrefix + room);
      if (!raw) return null;
      const v = JSON.parse(raw);
      if (typeof v.seq === 'number' && typeof v.epoch === 'string') return { seq: v.seq, epoch: v.epoch };
    } catch {
      // unreadable: start as if there were none
    }
    return null;
  }

  savePosition(room, seq, epoch) {
    this.positions.set(room, { seq, epoch });
    const st = this.opts.storage;
    if (!st) return;
    try {
      st.setItem(this.opts.storagePrefix + room, JSON.stringify({ seq, epoch }));
    } catch {
      // a full or forbidden storage costs the resume after a reload only
    }
  }
}

export default Herald;
