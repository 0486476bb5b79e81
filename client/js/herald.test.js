// Unit tests of herald.js with Node's built-in runner (node --test). The
// client runs against FakeCluster: an in-memory model of a cluster's rooms
// behind a fake WebSocket class, with hooks that lose replies, cut sockets
// and take nodes down. The real cluster is exercised by the browser tests
// in web/.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Herald, HeraldError, backoffDelay, newKey } from './herald.js';

const URLS = ['ws://n1.test/ws', 'ws://n2.test/ws', 'ws://n3.test/ws'];
const nodeOf = (url) => 'n' + /n(\d)/.exec(url)[1];

class FakeCluster {
  constructor() {
    this.down = new Set();
    this.rooms = new Map();
    this.sockets = [];
    this.requests = []; // every request received: {node, sock, req}
    this.hooks = [];
    this.nextEpoch = 1;
    this.refuse = false;
    this.repeatOnResume = 0; // a resumed subscription starts this many seqs early
    this.limits = null; // told in the auth reply when set
    this.hardFrame = 0; // a frame of more bytes closes its socket with 1009, unread
    this.oversized = 0; // frames closed for
    this.skipPush = 0; // pushes to leave out, making a gap
    const cluster = this;
    this.WebSocket = class FakeSocket {
      constructor(url, protocol) {
        this.url = url;
        this.protocol = protocol;
        this.readyState = 0;
        this.subs = new Map();
        this.user = null;
        this.mute = false;
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        cluster.sockets.push(this);
        setTimeout(() => {
          if (this.readyState !== 0) return;
          if (cluster.down.has(url)) {
            this.closed(1006);
            return;
          }
          this.readyState = 1;
          if (this.onopen) this.onopen({});
        }, 0);
      }

      send(text) {
        if (this.readyState !== 1) throw new Error('not open');
        if (this.mute) return;
        if (cluster.hardFrame > 0 && new TextEncoder().encode(text).length > cluster.hardFrame) {
          cluster.oversized++;
          this.closed(1009, 'message too large');
          return;
        }
        cluster.receive(this, JSON.parse(text));
      }

      close(code = 1000, reason = '') {
        if (this.readyState >= 2) return;
        this.readyState = 2;
        setTimeout(() => this.closed(code, reason), 0);
      }

      push(obj) {
        if (this.readyState !== 1 || this.mute) return;
        const data = JSON.stringify(obj);
        setTimeout(() => {
          if (this.readyState === 1 && this.onmessage) this.onmessage({ data });
        }, 0);
      }

      // closed is the socket's end as the node sees it; the close event
      // reaches the client after the frames already on their way.
      closed(code, reason = '', leave = true) {
        if (this.readyState === 3) return;
        this.readyState = 3;
        if (leave) cluster.leaveAll(this);
        setTimeout(() => {
          if (this.onclose) this.onclose({ code, reason });
        }, 0);
      }
    };
  }

  get node() { return nodeOf; }

  open(url) {
    return this.sockets.filter((s) => s.url === url && s.readyState === 1);
  }

  // crash takes a node down as a crash would: its sockets are cut and its
  // members stay (until a lease would expire).
  crash(url) {
    this.down.add(url);
    for (const s of this.open(url)) s.closed(1006, '', false);
  }

  restore(url) { this.down.delete(url); }

  // once adds a hook that acts on the first request it matches.
  once(match, action) {
    const h = { match, action, used: false };
    this.hooks.push(h);
    return h;
  }

  receive(sock, req) {
    this.requests.push({ node: nodeOf(sock.url), sock, req });
    for (const h of this.hooks) {
      if (h.used || !h.match(req, sock)) continue;
      h.used = true;
      const a = h.action;
      if (a === 'ignore') return;
      if (a === 'cut-before') { sock.closed(1006); return; }
      if (a === 'cut-after') { this.handle(sock, req, false); sock.closed(1006); return; }
      if (a === 'apply-then-error') {
        this.handle(sock, req, false);
        sock.push({ id: req.id, ok: false, error: { code: 'unknown_outcome', message: 'lost', retryable: true } });
        return;
      }
      if (typeof a === 'object') { sock.push({ id: req.id, ok: false, ...a }); return; }
    }
    this.handle(sock, req, true);
  }

  room(name, create) {
    let r = this.rooms.get(name);
    if (!r && create) {
      r = { name, epoch: String(this.nextEpoch++), firstSeq: 1, lastSeq: 0, events: [], keys: new Map(), members: new Map() };
      this.rooms.set(name, r);
    }
    return r;
  }

  append(name, type, member, data) {
    const r = this.room(name, true);
    const ev = { ev: 'event', room: name, epoch: r.epoch, seq: ++r.lastSeq, type, member, data, ts: new Date().toISOString() };
    r.events.push(ev);
    if (this.skipPush > 0) {
      this.skipPush--;
      for (const s of this.sockets) { const sub = s.subs.get(name); if (sub && sub.next === ev.seq) sub.next++; }
      return ev;
    }
    for (const s of this.sockets) {
      const sub = s.subs.get(name);
      if (s.readyState === 1 && sub && sub.next === ev.seq) {
        s.push(ev);
        sub.next++;
      }
    }
    return ev;
  }

  messages(name) {
    const r = this.rooms.get(name);
    return r ? r.events.filter((e) => e.type === 'message') : [];
  }

  // presence pushes a join or leave that takes no seq, as a room that
  // keeps presence out of its history does; afterSeq overrides the seq it
  // names, to push one out of place.
  presence(name, type, member, afterSeq) {
    const r = this.room(name, true);
    const at = afterSeq ?? r.lastSeq;
    for (const s of this.sockets) {
      const sub = s.subs.get(name);
      if (s.readyState === 1 && sub) {
        s.push({ ev: 'presence', room: name, epoch: r.epoch, after_seq: at, type, member, data: null, ts: new Date().toISOString() });
      }
    }
  }

  trim(name, firstSeq) {
    const r = this.room(name, true);
    r.firstSeq = firstSeq;
    r.events = r.events.filter((e) => e.seq >= firstSeq);
  }

  deleteRoom(name) {
    const r = this.rooms.get(name);
    this.rooms.delete(name);
    for (const s of this.sockets) {
      const sub = s.subs.get(name);
      if (s.readyState === 1 && sub) {
        s.push({ ev: 'room_deleted', room: name, epoch: r.epoch, last_seq: r.lastSeq });
        sub.next = 1;
      }
    }
  }

  leaveAll(sock) {
    for (const r of this.rooms.values()) {
      for (const [m, rec] of r.members) {
        if (rec.sock === sock) {
          r.members.delete(m);
          this.append(r.name, 'leave', m, null);
        }
      }
    }
  }

  handle(sock, req, reply) {
    const ok = (fields) => { if (reply) sock.push({ id: req.id, ok: true, ...fields }); };
    const fail = (code, retryable, extra = {}) => {
      if (reply) sock.push({ id: req.id, ok: false, error: { code, message: code, retryable }, ...extra });
    };
    if (req.op === 'ping') return ok({ pong: true });
    if (req.op === 'auth') {
      if (this.refuse) return fail('unauthorized', false);
      sock.user = req.user || 'token-user';
      return ok({ user: sock.user, node: nodeOf(sock.url), ...(this.limits ? { limits: this.limits } : {}) });
    }
    if (!sock.user) return fail('unauthorized', false);
    switch (req.op) {
      case 'join': {
        const ev = this.append(req.room, 'join', sock.user, req.meta ?? null);
        const r = this.room(req.room);
        r.members.set(sock.user, { meta: req.meta ?? null, joinedSeq: ev.seq, sock });
        return ok({ seq: ev.seq, epoch: r.epoch });
      }
      case 'leave': {
        const r = this.room(req.room);
        if (!r || !r.members.has(sock.user)) return fail('not_found', false);
        r.members.delete(sock.user);
        const ev = this.append(req.room, 'leave', sock.user, null);
        return ok({ seq: ev.seq, epoch: r.epoch });
      }
      case 'publish': {
        const r = this.room(req.room, true);
        if (req.key && r.keys.has(req.key)) return ok({ seq: r.keys.get(req.key), epoch: r.epoch, duplicate: true });
        if (req.expect_seq !== undefined && req.expect_seq !== r.lastSeq) return fail('conflict', false, { last_seq: r.lastSeq });
        const ev = this.append(req.room, 'message', sock.user, req.data);
        if (req.key) r.keys.set(req.key, ev.seq);
        return ok({ seq: ev.seq, epoch: r.epoch, duplicate: false });
      }
      case 'history': {
        const r = this.room(req.room);
        if (!r) return fail('not_found', false);
        const from = Math.max(req.from_seq ?? r.firstSeq, r.firstSeq);
        const events = r.events.filter((e) => e.seq >= from).slice(0, req.limit ?? 100);
        return ok({ events, first_seq: events.length ? events[0].seq : from, last_seq: r.lastSeq, epoch: r.epoch, truncated: (req.from_seq ?? r.firstSeq) < r.firstSeq });
      }
      case 'members': {
        const r = this.room(req.room);
        if (!r) return fail('not_found', false);
        return ok({ members: [...r.members].map(([member, m]) => ({ member, meta: m.meta, joined_seq: m.joinedSeq })), seq: r.lastSeq, epoch: r.epoch });
      }
      case 'subscribe': {
        const r = this.room(req.room);
        const epoch = r ? r.epoch : '';
        const first = r ? r.firstSeq : 1;
        const last = r ? r.lastSeq : 0;
        const res = { epoch, last_seq: last };
        let next;
        let replay = false;
        if (req.epoch && req.epoch !== epoch) {
          next = 1;
          res.epoch_changed = true;
          res.first_seq = first;
          if (first > 1) { next = first; res.truncated = true; }
          replay = true;
        } else if (req.from_seq !== undefined) {
          next = Math.max(req.from_seq, 1);
          if (r && next < first && next <= last) { next = first; res.truncated = true; res.first_seq = first; }
          replay = true;
        } else {
          next = last + 1;
        }
        if (replay && this.repeatOnResume > 0) next = Math.max(first, next - this.repeatOnResume);
        const sub = { next };
        sock.subs.set(req.room, sub);
        ok(res);
        if (r) {
          for (const e of r.events) {
            if (e.seq === sub.next) { sock.push(e); sub.next++; }
          }
        }
        return undefined;
      }
      case 'unsubscribe':
        sock.subs.delete(req.room);
        return ok({});
      default:
        return fail('bad_request', false);
    }
  }
}

async function waitFor(cond, what, timeout = 3000) {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

function client(fc, extra = {}) {
  return new Herald({
    urls: URLS, user: 'alice', WebSocket: fc.WebSocket,
    backoff: { min: 1, max: 5 }, dialTimeout: 500, ...extra,
  });
}

// connected starts a client on fc, closes it when the test ends and waits
// for its first connection.
async function connected(t, fc = new FakeCluster(), extra = {}) {
  const c = client(fc, extra);
  t.after(() => c.close());
  await c.ready();
  return { fc, c };
}

const sent = (fc, op) => fc.requests.filter((r) => r.req.op === op);

test('connects, authenticates and reports its states', async (t) => {
  const fc = new FakeCluster();
  const c = client(fc);
  t.after(() => c.close());
  const states = [];
  c.on('state', (s) => states.push(s.state + (s.node ? ':' + s.node : '')));
  await c.ready();
  assert.equal(c.state, 'connected');
  assert.equal(c.node, 'n1');
  assert.deepEqual(states, ['connecting', 'connected:n1']);
  assert.equal(sent(fc, 'auth')[0].req.user, 'alice');
  assert.equal(fc.sockets[0].protocol, 'herald.v1');
});

test('a token source is asked at every connection', async (t) => {
  const fc = new FakeCluster();
  let n = 0;
  const c = new Herald({ urls: URLS, tokenSource: async () => `t${++n}`, WebSocket: fc.WebSocket, backoff: { min: 1, max: 5 } });
  t.after(() => c.close());
  await c.ready();
  fc.crash(URLS[0]);
  await waitFor(() => c.node === 'n2', 'reconnection');
  assert.deepEqual(sent(fc, 'auth').map((r) => r.req.token), ['t1', 't2']);
});

test('refused credentials at the first connection end the client', async () => {
  const fc = new FakeCluster();
  fc.refuse = true;
  const c = client(fc);
  const states = [];
  c.on('state', (s) => states.push(s.state));
  await assert.rejects(c.ready(), (err) => err instanceof HeraldError && err.code === 'unauthorized');
  await waitFor(() => c.state === 'closed', 'closed state');
  await assert.rejects(c.publish('lobby', 'x'), (err) => err.code === 'unauthorized');
  assert.equal(sent(fc, 'auth').length, 1, 'the same credentials are not tried again');
});

test('connects to the next node, round robin, when one is down', async (t) => {
  const fc = new FakeCluster();
  fc.down.add(URLS[0]);
  const { c } = await connected(t, fc);
  assert.equal(c.node, 'n2');
  fc.crash(URLS[1]);
  await waitFor(() => c.node === 'n3', 'failover to n3');
  fc.restore(URLS[0]);
  fc.crash(URLS[2]);
  await waitFor(() => c.node === 'n1', 'failover back to n1');
});

test('backoff grows, stays within its bounds and is jittered', () => {
  const b = { min: 100, max: 1000 };
  for (let attempt = 0; attempt < 10; attempt++) {
    const bound = Math.min(1000, 100 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, { ...b, jitter: 'none' }), bound);
    assert.equal(backoffDelay(attempt, b, () => 0), 100);
    assert.equal(backoffDelay(attempt, b, () => 1), bound);
    const eq = backoffDelay(attempt, { ...b, jitter: 'equal' }, () => 0);
    assert.equal(eq, Math.max(100, bound / 2));
  }
  assert.equal(backoffDelay(100, b, () => 1), 1000);
  const spread = new Set(Array.from({ length: 20 }, () => backoffDelay(3, b)));
  assert.ok(spread.size > 1, 'delays are randomized');
});

test('the connection is retried with backoff while every node is down', async (t) => {
  const fc = new FakeCluster();
  for (const u of URLS) fc.down.add(u);
  const c = client(fc, { backoff: { min: 5, max: 20 } });
  t.after(() => c.close());
  const waits = [];
  c.on('state', (s) => { if (s.state === 'disconnected') waits.push(s.retryIn); });
  await waitFor(() => waits.length >= 6, 'several attempts');
  assert.ok(waits.every((w) => w >= 5 && w <= 20), `waits within bounds: ${waits}`);
  for (const u of URLS) fc.restore(u);
  await c.ready();
});

test('publish lands once when the socket dies after the node applied it', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'publish', 'cut-after');
  const res = await c.publish('lobby', { text: 'hi' });
  assert.equal(res.seq, 1);
  assert.equal(res.duplicate, true, 'the repeat found the first attempt');
  assert.equal(fc.messages('lobby').length, 1);
  const pubs = sent(fc, 'publish');
  assert.equal(pubs.length, 2);
  assert.equal(pubs[0].req.key, pubs[1].req.key);
  assert.notEqual(pubs[0].node, pubs[1].node, 'the repeat went to another node');
  assert.equal(pubs[0].req.key, res.key);
});

test('publish is retried with the same key after unavailable and unknown_outcome', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'publish', { error: { code: 'unavailable', message: 'no leader', retryable: true } });
  fc.once((r) => r.op === 'publish', 'apply-then-error');
  const retries = [];
  c.on('retry', (r) => retries.push(r.error.code));
  const res = await c.publish('lobby', 'hello', { key: 'k-1' });
  assert.deepEqual(retries, ['unavailable', 'unknown_outcome']);
  assert.deepEqual(res, { seq: 1, epoch: '1', duplicate: true, key: 'k-1' });
  assert.deepEqual(sent(fc, 'publish').map((r) => r.req.key), ['k-1', 'k-1', 'k-1']);
  assert.equal(fc.messages('lobby').length, 1);
});

test('publish waits out rate_limited for retry_after_ms', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'publish', { error: { code: 'rate_limited', retryable: true }, retry_after_ms: 60 });
  const start = Date.now();
  await c.publish('lobby', 1);
  assert.ok(Date.now() - start >= 55, 'waited for retry_after_ms');
});

// within fails if p has not settled within ms, so that a call that would
// hang fails its test instead of stalling the run.
function within(p, ms, what) {
  let timer;
  const late = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} still pending after ${ms} ms`)), ms); });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

test('a request over the node max_frame is refused with too_large before it is sent', async (t) => {
  const fc = new FakeCluster();
  fc.limits = { max_frame: 200, max_data: 150 };
  const { c } = await connected(t, fc);
  for (const data of ['x'.repeat(300), 'é'.repeat(90), '😀'.repeat(45)]) {
    await assert.rejects(within(c.publish('lobby', data), 1000, 'oversized publish'), (err) => {
      assert.ok(err instanceof HeraldError, String(err));
      assert.equal(err.code, 'too_large');
      assert.equal(err.retryable, false);
      assert.ok(/at most 200 bytes/.test(err.message), err.message);
      return true;
    });
  }
  await assert.rejects(c.join('lobby', { pad: 'y'.repeat(300) }), (err) => err.code === 'too_large');
  assert.equal(sent(fc, 'publish').length + sent(fc, 'join').length, 0, 'nothing oversized was sent');
  assert.equal((await c.publish('lobby', 'é'.repeat(40))).seq, 1, 'a frame within the limit goes out');
  assert.equal(fc.sockets.length, 1, 'no reconnection');
});

test('data JSON cannot carry fails the publish instead of being retried', async (t) => {
  const { fc, c } = await connected(t);
  await assert.rejects(within(c.publish('lobby', { n: 1n }), 1000, 'publish of a BigInt'), (err) => err instanceof TypeError);
  assert.equal(fc.sockets.length, 1);
});

test('a socket closed with 1009 fails its largest waiting request with too_large, which is not sent again', async (t) => {
  const fc = new FakeCluster();
  fc.hardFrame = 500; // a node that does not tell its limits at auth
  const c = client(fc);
  t.after(() => c.close());
  const closes = [];
  c.on('state', (s) => { if (s.state === 'disconnected') closes.push(s.closeCode); });
  await c.ready();
  await assert.rejects(within(c.publish('lobby', 'x'.repeat(600)), 2000, 'publish over the hard limit'), (err) => {
    assert.equal(err.code, 'too_large');
    assert.equal(err.retryable, false);
    return true;
  });
  assert.equal((await within(c.publish('lobby', 'small'), 2000, 'publish after the 1009')).seq, 1);
  assert.equal(fc.oversized, 1, 'the oversized frame was sent once');
  assert.deepEqual(closes, [1009]);
});

test('a conflict is not retried and tells the room last seq', async (t) => {
  const { fc, c } = await connected(t);
  await c.publish('lobby', 'a');
  await c.publish('lobby', 'b', { expectSeq: 1 });
  await assert.rejects(c.publish('lobby', 'c', { expectSeq: 1 }), (err) => {
    assert.ok(err instanceof HeraldError);
    assert.equal(err.code, 'conflict');
    assert.equal(err.retryable, false);
    assert.equal(err.lastSeq, 2);
    return true;
  });
  assert.equal(sent(fc, 'publish').length, 3);
});

test('a conditional publish whose first attempt committed gets its success back', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'publish', 'cut-after');
  const res = await c.publish('lobby', 'offer', { expectSeq: 0 });
  assert.equal(res.seq, 1);
  assert.equal(res.duplicate, true);
});

test('a publish given up after it may have been applied fails with unknown_outcome and its key', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'publish', 'ignore');
  const err = await c.publish('lobby', 'x', { signal: AbortSignal.timeout(30) }).catch((e) => e);
  assert.ok(err instanceof HeraldError, String(err));
  assert.equal(err.code, 'unknown_outcome');
  assert.equal(err.key, sent(fc, 'publish')[0].req.key);
  // The key tells what happened.
  const again = await c.publish('lobby', 'x', { key: err.key });
  assert.equal(again.duplicate, false);
  assert.equal(fc.messages('lobby').length, 1);

  // Never sent: the caller's own abort reason, not unknown_outcome.
  fc.crash(URLS[0]);
  fc.crash(URLS[1]);
  fc.crash(URLS[2]);
  const ctl = new AbortController();
  const p = c.publish('lobby', 'y', { signal: ctl.signal });
  ctl.abort(new Error('user gave up'));
  await assert.rejects(p, /user gave up/);
});

test('messages published while disconnected are sent once, after the reconnection', async (t) => {
  const { fc, c } = await connected(t);
  for (const u of URLS) fc.crash(u);
  await waitFor(() => c.state !== 'connected', 'disconnection');
  const pending = [c.publish('lobby', 'one'), c.publish('lobby', 'two')];
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(sent(fc, 'publish').length, 0);
  fc.restore(URLS[1]);
  const res = await Promise.all(pending);
  assert.deepEqual(res.map((r) => r.seq).sort(), [1, 2]);
  assert.deepEqual(fc.messages('lobby').map((e) => e.data).sort(), ['one', 'two']);
});

test('a subscription resumes after a reconnect with no gap and no duplicate', async (t) => {
  const { fc, c } = await connected(t);
  const got = [];
  const sub = c.subscribe('lobby', (ev) => got.push(ev.seq), { fromSeq: 1 });
  await sub.ready;
  for (let i = 0; i < 3; i++) fc.append('lobby', 'message', 'bob', i);
  await waitFor(() => got.length === 3, 'live events');
  const resumed = [];
  c.on('subscribed', (s) => { if (s.resumed) resumed.push(s); });
  fc.repeatOnResume = 2; // the node repeats what the client already has
  fc.crash(URLS[0]);
  for (let i = 3; i < 6; i++) fc.append('lobby', 'message', 'bob', i);
  await waitFor(() => got.length >= 6, 'resumed events');
  fc.append('lobby', 'message', 'bob', 6);
  await waitFor(() => got.length >= 7, 'live after resume');
  assert.deepEqual(got, [1, 2, 3, 4, 5, 6, 7]);
  const subs = sent(fc, 'subscribe');
  assert.equal(subs.length, 2);
  assert.deepEqual([subs[1].req.from_seq, subs[1].req.epoch, subs[1].node], [4, '1', 'n2']);
  assert.equal(resumed.length, 1);
  assert.equal(resumed[0].fromSeq, 4);
  assert.deepEqual(sub.position(), { fromSeq: 8, epoch: '1' });
});

test('a gap in the pushes makes the client subscribe again from the missing seq', async (t) => {
  const { fc, c } = await connected(t);
  const got = [];
  const sub = c.subscribe('lobby', (ev) => got.push(ev.seq));
  await sub.ready;
  fc.append('lobby', 'message', 'bob', 'a');
  fc.skipPush = 1;
  fc.append('lobby', 'message', 'bob', 'b');
  fc.append('lobby', 'message', 'bob', 'c');
  await waitFor(() => got.length === 3, 'the gap filled');
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(sent(fc, 'subscribe').at(-1).req.from_seq, 2);
});

test('truncation and epoch changes are told in the stream', async (t) => {
  const fc = new FakeCluster();
  for (let i = 0; i < 6; i++) fc.append('lobby', 'message', 'bob', i);
  fc.trim('lobby', 4);
  const { c } = await connected(t, fc);
  const got = [];
  const sub = c.subscribe('lobby', (ev) => got.push(`${ev.kind}:${ev.epoch}:${ev.seq}`), { fromSeq: 1 });
  await sub.ready;
  await waitFor(() => got.length === 4, 'truncated history');
  assert.deepEqual(got, ['truncated:1:4', 'event:1:4', 'event:1:5', 'event:1:6']);

  // Deleted and created again while the client was away.
  got.length = 0;
  fc.crash(URLS[0]);
  fc.deleteRoom('lobby');
  fc.append('lobby', 'message', 'carol', 'new');
  await waitFor(() => got.length === 2, 'the new incarnation');
  assert.deepEqual(got, ['epoch_changed:2:1', 'event:2:1']);

  // Deleted while subscribed.
  got.length = 0;
  fc.deleteRoom('lobby');
  fc.append('lobby', 'message', 'carol', 'newer');
  await waitFor(() => got.length === 2, 'deletion and the next incarnation');
  assert.deepEqual(got, ['room_deleted:2:1', 'event:3:1']);
});

test('presence kept out of history arrives in its place, without a seq of its own', async (t) => {
  const { fc, c } = await connected(t);
  const got = [];
  const sub = c.subscribe('game', (ev) => got.push(`${ev.kind}:${ev.type}:${ev.seq}`), { fromSeq: 1 });
  await sub.ready;
  fc.presence('game', 'join', 'alice');
  fc.append('game', 'message', 'alice', 'hi');
  fc.presence('game', 'leave', 'bob', 0); // out of place: it follows no event the client is at
  fc.presence('game', 'leave', 'alice');
  fc.append('game', 'message', 'bob', 'bye');
  await waitFor(() => got.length === 4, 'the events and presence');
  assert.deepEqual(got, ['presence:join:0', 'event:message:1', 'presence:leave:1', 'event:message:2']);
  assert.equal(sub.lastSeq, 2);
});

test('a subscription starting without from_seq gets only new events', async (t) => {
  const fc = new FakeCluster();
  fc.append('lobby', 'message', 'bob', 'old');
  const { c } = await connected(t, fc);
  const got = [];
  const sub = c.subscribe('lobby', (ev) => got.push(ev.data));
  assert.deepEqual(await sub.ready, { epoch: '1', fromSeq: 2 });
  fc.append('lobby', 'message', 'bob', 'new');
  await waitFor(() => got.length === 1, 'the new event');
  assert.deepEqual(got, ['new']);
  assert.throws(() => c.subscribe('lobby', () => {}), (err) => err.code === 'subscribed');
  sub.close();
  assert.equal(await sub.done, null);
  await waitFor(() => sent(fc, 'unsubscribe').length === 1, 'unsubscribe');
});

test('a handler that throws costs neither order nor the stream', async (t) => {
  const { fc, c } = await connected(t);
  const errors = [];
  c.on('error', (e) => errors.push(e.event.seq));
  const got = [];
  c.subscribe('lobby', (ev) => { got.push(ev.seq); if (ev.seq === 1) throw new Error('app bug'); }, { fromSeq: 1 });
  fc.append('lobby', 'message', 'bob', 1);
  fc.append('lobby', 'message', 'bob', 2);
  await waitFor(() => got.length === 2, 'both events');
  assert.deepEqual(errors, [1]);
});

test('joins are restored on a new socket, with the same meta, before other requests', async (t) => {
  const { fc, c } = await connected(t);
  const seq = await c.join('lobby', { name: 'Alice' });
  assert.equal(seq, 1);
  fc.crash(URLS[0]);
  const p = c.publish('lobby', 'after');
  await p;
  const onN2 = fc.requests.filter((r) => r.node === 'n2').map((r) => r.req.op);
  assert.deepEqual(onN2.slice(0, 3), ['auth', 'join', 'publish']);
  const rejoin = fc.requests.find((r) => r.node === 'n2' && r.req.op === 'join');
  assert.deepEqual(rejoin.req.meta, { name: 'Alice' });
  const m = await c.members('lobby');
  assert.deepEqual(m.members.map((x) => [x.member, x.meta]), [['alice', { name: 'Alice' }]]);

  // After leave, the room is not re-joined any more.
  assert.ok((await c.leave('lobby')) > 0);
  fc.crash(URLS[1]);
  await waitFor(() => c.node === 'n3', 'n3');
  await c.members('lobby');
  assert.equal(fc.requests.filter((r) => r.node === 'n3' && r.req.op === 'join').length, 0);
});

test('leave of a member already gone resolves 0; of a room never joined is not_found', async (t) => {
  const { fc, c } = await connected(t);
  await c.join('lobby');
  fc.rooms.get('lobby').members.clear();
  assert.equal(await c.leave('lobby'), 0);
  await assert.rejects(c.leave('elsewhere'), (err) => err.code === 'not_found');
});

test('a join cut off after the node applied it counts as joined', async (t) => {
  const { fc, c } = await connected(t);
  fc.once((r) => r.op === 'join', 'cut-after');
  const seq = await c.join('lobby', { v: 1 });
  assert.ok(seq > 0);
  const joins = sent(fc, 'join');
  assert.ok(joins.length === 2, `joins: ${joins.length}`);
  assert.ok(fc.rooms.get('lobby').members.has('alice'));
});

test('reads are retried after unavailable and on another node after a cut', async (t) => {
  const { fc, c } = await connected(t);
  for (let i = 1; i <= 5; i++) fc.append('lobby', 'message', 'bob', i);
  fc.once((r) => r.op === 'history', { error: { code: 'unavailable', retryable: true } });
  fc.once((r) => r.op === 'history', 'cut-before');
  const page = await c.history('lobby', { fromSeq: 2, limit: 3 });
  assert.deepEqual(page.events.map((e) => e.data), [2, 3, 4]);
  assert.equal(page.more, true);
  assert.equal(page.nextSeq, 5);
  assert.equal(page.lastSeq, 5);
  await assert.rejects(c.members('nowhere'), (err) => err.code === 'not_found');
});

test('the position is stored and a new client resumes after it', async (t) => {
  const fc = new FakeCluster();
  const mem = new Map();
  const storage = { getItem: (k) => mem.get(k) ?? null, setItem: (k, v) => mem.set(k, v) };
  const a = client(fc, { storage });
  const got = [];
  a.subscribe('lobby', (ev) => got.push(ev.seq), { fromSeq: 1 });
  for (let i = 0; i < 3; i++) fc.append('lobby', 'message', 'bob', i);
  await waitFor(() => got.length === 3, 'events');
  assert.deepEqual(a.position('lobby'), { seq: 3, epoch: '1' });
  a.close();

  fc.append('lobby', 'message', 'bob', 3);
  const b = client(fc, { storage });
  t.after(() => b.close());
  const more = [];
  const sub = b.subscribe('lobby', (ev) => more.push(ev.seq), { resume: true, fromSeq: 1 });
  await sub.ready;
  await waitFor(() => more.length === 1, 'the event after the stored position');
  assert.deepEqual(more, [4]);
  assert.deepEqual([sent(fc, 'subscribe').at(-1).req.from_seq, sent(fc, 'subscribe').at(-1).req.epoch], [4, '1']);
});

test('a socket that does not answer a ping is dropped', async (t) => {
  const { fc, c } = await connected(t, new FakeCluster(), { pingInterval: 20 });
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(sent(fc, 'ping').length > 0, 'a quiet socket is pinged');
  assert.equal(c.node, 'n1', 'a socket that answers pings stays');
  fc.sockets[0].mute = true;
  await waitFor(() => c.node === 'n2', 'the silent socket replaced', 1000);
});

test('reconnect moves to the node asked for, and subscriptions follow', async (t) => {
  const { fc, c } = await connected(t);
  const got = [];
  const sub = c.subscribe('lobby', (ev) => got.push(ev.seq), { fromSeq: 1 });
  await sub.ready;
  fc.append('lobby', 'message', 'bob', 1);
  await waitFor(() => got.length === 1, 'first event');
  c.reconnect(URLS[2]);
  await waitFor(() => c.node === 'n3', 'the switch');
  await waitFor(() => sent(fc, 'subscribe').length === 2, 'resubscribe');
  fc.append('lobby', 'message', 'bob', 2);
  await waitFor(() => got.length === 2, 'second event');
  assert.deepEqual(got, [1, 2]);
});

test('close fails calls in progress and ends subscriptions', async () => {
  const fc = new FakeCluster();
  for (const u of URLS) fc.down.add(u);
  const c = client(fc);
  const sub = c.subscribe('lobby', () => {});
  const p = c.history('lobby');
  c.close();
  await assert.rejects(p, (err) => err.code === 'closed');
  await assert.rejects(c.ready(), (err) => err.code === 'closed');
  assert.equal(await sub.done, null);
  await waitFor(() => c.state === 'closed', 'closed');
});

test('keys are unique', () => {
  const keys = new Set(Array.from({ length: 1000 }, newKey));
  assert.equal(keys.size, 1000);
});
