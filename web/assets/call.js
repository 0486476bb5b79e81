// The call page: two tabs in one room set up a WebRTC data channel,
// signaling through Herald. Offer, answer and ICE candidates are messages
// of the room, so both tabs see them in one order.
//
// Glare (both tabs offering at once) cannot happen: an offer is published
// with expect_seq = the last seq its tab has seen, so of two offers made
// from the same view of the room only one lands; the other gets conflict,
// and its tab answers the offer that won instead.
import { newKey } from '/herald.js';
import { $, connect, connectionUI, discoverNodes, logLine } from '/assets/common.js';

const ui = {
  joinForm: $('join-form'), name: $('name'), room: $('room'), ice: $('ice'), token: $('token'),
  call: $('call'), title: $('call-title'), hangup: $('hangup'), peerState: $('peer-state'),
  p2p: $('p2p'), p2pForm: $('p2p-form'), p2pText: $('p2p-text'),
  signals: $('signals'), log: $('connlog'),
  conn: connectionUI(),
};

const params = new URLSearchParams(location.search);
ui.name.value = params.get('name') || sessionStorage.getItem('herald-call-name') || '';
ui.room.value = params.get('room') || 'call';

const nodes = await discoverNodes();

let client = null;
let room = '';
let me = '';
let joinSeq = 0;
let iceServers = [];
let lastSeq = 0; // the last seq this tab has processed
let seenWaiters = [];
const present = new Set();
let call = null; // the one peer connection, while there is one
let chain = Promise.resolve(); // signals are processed one at a time, in seq order

ui.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  enter(ui.name.value.trim(), ui.room.value.trim(), ui.ice.value.trim(), ui.token.value.trim());
});

ui.hangup.addEventListener('click', () => leave());

ui.p2pForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.p2pText.value.trim();
  if (!text || !call || !call.dc || call.dc.readyState !== 'open') return;
  call.dc.send(text);
  ui.p2pText.value = '';
  p2pLine(me, text, true);
});

function setPeerState(state, text) {
  ui.peerState.dataset.state = state;
  ui.peerState.textContent = text;
  const open = state === 'connected';
  ui.p2pText.disabled = !open;
  ui.p2pForm.querySelector('button').disabled = !open;
}

function signal(text, kind) {
  logLine(ui.signals, text, kind);
}

function p2pLine(who, text, mine) {
  const li = document.createElement('li');
  if (mine) li.className = 'mine';
  const b = document.createElement('b');
  b.className = 'who';
  b.textContent = who;
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  li.append(b, ' ', span);
  ui.p2p.append(li);
  ui.p2p.scrollTop = ui.p2p.scrollHeight;
}

async function enter(name, roomName, ice, token) {
  if (!name || !roomName) return;
  sessionStorage.setItem('herald-call-name', name);
  me = name;
  room = roomName;
  iceServers = ice ? [{ urls: ice }] : [];
  client = connect(nodes, name, token, ui.conn, reset);
  ui.joinForm.hidden = true;
  ui.call.hidden = false;
  ui.title.textContent = `Call room ${room}`;
  setPeerState('waiting', `Waiting for someone to join ${room}…`);
  try {
    joinSeq = await client.join(room, { name });
    if (token) me = client.user;
    lastSeq = joinSeq - 1;
    // Signals from before this tab joined are not for it.
    client.subscribe(room, (ev) => {
      chain = chain.then(() => onSignal(ev)).catch((err) => signal(`signal #${ev.seq} failed: ${err.message}`, 'warn'));
    }, { fromSeq: joinSeq });
    const list = await client.members(room);
    for (const m of list.members) present.add(m.member);
    const other = list.members.find((m) => m.member !== me);
    if (other) {
      // Offer from the room as of this tab's own join, like the tab
      // already there does when it sees that join.
      await waitSeen(joinSeq);
      if (!call && present.has(other.member)) tryOffer(other.member);
    }
    ui.hangup.focus();
  } catch (err) {
    if (client) logLine(ui.log, `could not join ${room}: ${err.message}`, 'warn');
  }
}

async function leave() {
  const c = client;
  if (!c) return;
  if (call && call.peer) {
    await c.publish(room, { type: 'bye', from: me, to: call.peer }, { signal: AbortSignal.timeout(3000) }).catch(() => {});
  }
  endCall(call);
  await c.leave(room, { signal: AbortSignal.timeout(3000) }).catch(() => {});
  reset();
  ui.name.focus();
}

function reset() {
  endCall(call);
  if (client) client.close();
  client = null;
  present.clear();
  ui.call.hidden = true;
  ui.joinForm.hidden = false;
  setPeerState('idle', 'Not in a call');
}

function waitSeen(seq) {
  if (lastSeq >= seq) return Promise.resolve();
  return new Promise((resolve) => seenWaiters.push({ seq, resolve }));
}

function seen(seq) {
  lastSeq = seq;
  const due = seenWaiters.filter((w) => w.seq <= seq);
  seenWaiters = seenWaiters.filter((w) => w.seq > seq);
  for (const w of due) w.resolve();
}

function newCall(role, peer) {
  const pc = new RTCPeerConnection({ iceServers });
  const c = {
    role, peer, pc, dc: null, session: 0, nonce: newKey(),
    canSend: false, localQueue: [], remoteQueue: [], remoteSet: false,
  };
  pc.onicecandidate = (e) => {
    if (!e.candidate) return;
    c.localQueue.push(e.candidate.toJSON());
    flushLocal(c);
  };
  pc.onconnectionstatechange = () => {
    if (call !== c) return;
    signal(`peer connection ${pc.connectionState}`);
    if (pc.connectionState === 'failed') setPeerState('failed', `Could not reach ${peer} peer to peer`);
  };
  call = c;
  return c;
}

function bindChannel(c, dc) {
  c.dc = dc;
  dc.onopen = () => {
    if (call !== c) return;
    setPeerState('connected', `Connected to ${c.peer}, peer to peer`);
    signal(`data channel open with ${c.peer}`, 'ok');
    ui.p2pText.focus();
  };
  dc.onmessage = (e) => p2pLine(c.peer, String(e.data), false);
  dc.onclose = () => {
    if (call !== c) return;
    endCall(c);
    setPeerState('waiting', `The channel with ${c.peer} closed; waiting for someone to join ${room}…`);
  };
}

function endCall(c) {
  if (!c) return;
  if (call === c) call = null;
  c.pc.onicecandidate = c.pc.onconnectionstatechange = null;
  if (c.dc) c.dc.onopen = c.dc.onclose = c.dc.onmessage = null;
  c.pc.close();
}

// flushLocal publishes this tab's ICE candidates once the peer can place
// them: after the offer landed (for the offerer) or the answer was sent.
function flushLocal(c) {
  if (!c.canSend || call !== c) return;
  const batch = c.localQueue.splice(0);
  for (const candidate of batch) {
    client.publish(room, { type: 'candidate', from: me, to: c.peer, session: c.session, candidate })
      .then((res) => signal(`#${res.seq} ICE candidate to ${c.peer} sent`))
      .catch((err) => signal(`a candidate was not sent: ${err.message}`, 'warn'));
  }
}

async function addRemote(c, candidate) {
  if (!c.remoteSet) {
    c.remoteQueue.push(candidate);
    return;
  }
  await c.pc.addIceCandidate(candidate);
}

async function tryOffer(peer) {
  if (call) return;
  const c = newCall('offerer', peer);
  bindChannel(c, c.pc.createDataChannel('chat'));
  const offer = await c.pc.createOffer();
  await c.pc.setLocalDescription(offer);
  if (call !== c) return;
  const expect = lastSeq;
  setPeerState('offering', `Calling ${peer}…`);
  try {
    const res = await client.publish(room,
      { type: 'offer', from: me, to: peer, nonce: c.nonce, sdp: { type: offer.type, sdp: offer.sdp } },
      { expectSeq: expect });
    signal(`#${res.seq} offer to ${peer} landed (expect_seq ${expect})`);
    if (call === c && !c.canSend) {
      c.session = res.seq;
      c.canSend = true;
      flushLocal(c);
    }
  } catch (err) {
    if (call !== c) return; // superseded: this tab answers the offer that won
    endCall(c);
    if (err.code !== 'conflict') {
      setPeerState('failed', `Could not send the offer: ${err.message}`);
      return;
    }
    signal(`offer to ${peer} refused: the room is at #${err.lastSeq}, not #${expect} (no glare)`);
    // What moved the room on may be the peer's own offer: see it first.
    await waitSeen(err.lastSeq);
    if (!call && present.has(peer)) tryOffer(peer);
  }
}

async function onSignal(ev) {
  if (ev.kind !== 'event') {
    if (ev.kind === 'epoch_changed' || ev.kind === 'room_deleted') endCall(call);
    return;
  }
  seen(ev.seq);
  if (ev.type === 'join') {
    present.add(ev.member);
    if (ev.member !== me && ev.seq > joinSeq && !call) tryOffer(ev.member);
    return;
  }
  if (ev.type === 'leave') {
    present.delete(ev.member);
    if (call && ev.member === call.peer) {
      signal(`#${ev.seq} ${ev.member} left`);
      endCall(call);
      setPeerState('waiting', `${ev.member} left; waiting for someone to join ${room}…`);
    }
    return;
  }
  const m = ev.data;
  if (!m || typeof m !== 'object') return;
  if (m.type === 'offer' && m.from === me && call && call.nonce === m.nonce) {
    // Our own offer: its event may come before the reply to its publish,
    // and the answer right after it.
    call.session = ev.seq;
    call.canSend = true;
    flushLocal(call);
    return;
  }
  if (m.to !== me) return;
  switch (m.type) {
    case 'offer':
      await onOffer(ev, m);
      return;
    case 'answer':
      if (call && call.role === 'offerer' && call.peer === m.from && call.session === m.session) {
        signal(`#${ev.seq} answer from ${m.from}`);
        setPeerState('connecting', `Connecting to ${m.from}…`);
        await call.pc.setRemoteDescription(m.sdp);
        call.remoteSet = true;
        for (const cand of call.remoteQueue.splice(0)) await call.pc.addIceCandidate(cand);
      }
      return;
    case 'candidate':
      if (call && call.peer === m.from && call.session === m.session) {
        signal(`#${ev.seq} ICE candidate from ${m.from}`);
        await addRemote(call, m.candidate);
      }
      return;
    case 'bye':
      if (call && call.peer === m.from) {
        signal(`#${ev.seq} ${m.from} hung up`);
        endCall(call);
        setPeerState('waiting', `${m.from} hung up; waiting for someone to join ${room}…`);
      }
      return;
    default:
  }
}

async function onOffer(ev, m) {
  if (call && call.peer !== m.from && call.session !== 0) {
    signal(`#${ev.seq} offer from ${m.from} ignored: already in a call with ${call.peer}`);
    return;
  }
  // An offer of ours still in flight was made from a view of the room
  // before this one: it gets conflict, so this tab answers. A new offer
  // from the peer of the current call means it started over.
  if (call) endCall(call);
  signal(`#${ev.seq} offer from ${m.from}`);
  const c = newCall('answerer', m.from);
  c.session = ev.seq;
  c.pc.ondatachannel = (e) => bindChannel(c, e.channel);
  setPeerState('answering', `Answering ${m.from}…`);
  await c.pc.setRemoteDescription(m.sdp);
  c.remoteSet = true;
  const answer = await c.pc.createAnswer();
  await c.pc.setLocalDescription(answer);
  if (call !== c) return;
  client.publish(room, { type: 'answer', from: me, to: m.from, session: c.session, sdp: { type: answer.type, sdp: answer.sdp } })
    .then((res) => {
      signal(`#${res.seq} answer to ${m.from} sent`);
      c.canSend = true;
      flushLocal(c);
    })
    .catch((err) => signal(`the answer was not sent: ${err.message}`, 'warn'));
}
