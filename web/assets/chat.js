// The chat page: join a room, see its members and its messages in seq
// order, send messages exactly once even across reconnections and reloads.
import { newKey } from '/herald.js';
import { $, connect, connectionUI, discoverNodes, logLine } from '/assets/common.js';

const HISTORY_ON_JOIN = 50;

const ui = {
  joinForm: $('join-form'), name: $('name'), room: $('room'), token: $('token'),
  chat: $('chat'), roomTitle: $('room-title'), leave: $('leave'),
  members: $('members'), memberCount: $('member-count'),
  earlier: $('earlier'), messages: $('messages'),
  sendForm: $('send-form'), text: $('text'), outboxWrap: $('outbox-wrap'), outbox: $('outbox'),
  log: $('connlog'),
  conn: connectionUI(),
};

const params = new URLSearchParams(location.search);
ui.name.value = params.get('name') || localStorage.getItem('herald-chat-name') || '';
ui.room.value = params.get('room') || localStorage.getItem('herald-chat-room') || 'lobby';

const nodes = await discoverNodes();

let client = null;
let sub = null;
let room = '';
let oldest = 0; // the lowest seq shown
let members = null; // member -> meta, as of membersSeq
let membersSeq = 0;
let presence = []; // joins and leaves seen before the member list came

ui.joinForm.addEventListener('submit', (e) => {
  e.preventDefault();
  enter(ui.name.value.trim(), ui.room.value.trim(), ui.token.value.trim());
});

ui.leave.addEventListener('click', () => exit());

ui.sendForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text || !client) return;
  ui.text.value = '';
  send({ key: newKey(), text });
});

ui.earlier.addEventListener('click', () => loadEarlier());

async function enter(name, roomName, token) {
  if (!name || !roomName) return;
  localStorage.setItem('herald-chat-name', name);
  localStorage.setItem('herald-chat-room', roomName);
  room = roomName;
  client = connect(nodes, name, token, ui.conn, reset);
  ui.joinForm.hidden = true;
  ui.chat.hidden = false;
  ui.roomTitle.textContent = `Room ${room}`;
  ui.messages.replaceChildren();
  members = null;
  presence = [];
  renderMembers();
  try {
    const joinSeq = await client.join(room, { name });
    oldest = Math.max(1, joinSeq - HISTORY_ON_JOIN + 1);
    ui.earlier.hidden = oldest <= 1;
    // The subscription delivers the recent history and then the live
    // events, in one order without gap or duplicate.
    sub = client.subscribe(room, onEvent, { fromSeq: oldest });
    ui.text.focus();
    refreshMembers();
    for (const m of outbox()) send(m);
  } catch (err) {
    if (client) logLine(ui.log, `could not join ${room}: ${err.message}`, 'warn');
  }
}

async function exit() {
  const c = client;
  if (!c) return;
  try {
    await c.leave(room, { signal: AbortSignal.timeout(5000) });
  } catch {
    // Closing the socket leaves the room too.
  }
  reset();
  ui.name.focus();
}

function reset() {
  if (sub) sub.close();
  if (client) client.close();
  client = null;
  sub = null;
  ui.chat.hidden = true;
  ui.joinForm.hidden = false;
}

function onEvent(ev) {
  switch (ev.kind) {
    case 'event':
      if (ev.type === 'join' || ev.type === 'leave') onPresence(ev);
      append(renderEvent(ev));
      break;
    case 'truncated':
      oldest = ev.seq;
      ui.earlier.hidden = true;
      append(systemLine(`Messages before #${ev.seq} were trimmed from the room's history.`));
      break;
    case 'epoch_changed':
      ui.messages.replaceChildren(systemLine('The room was deleted and created again.'));
      oldest = ev.seq;
      members = null;
      refreshMembers();
      break;
    case 'room_deleted':
      append(systemLine('The room was deleted.'));
      break;
    default:
  }
}

function append(li) {
  const list = ui.messages;
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(li);
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function renderEvent(ev) {
  const li = document.createElement('li');
  li.dataset.seq = String(ev.seq);
  li.dataset.type = ev.type;
  li.dataset.member = ev.member;
  if (client && ev.member === client.user) li.classList.add('mine');
  const seq = document.createElement('span');
  seq.className = 'seq';
  seq.textContent = `#${ev.seq}`;
  const time = document.createElement('time');
  if (ev.ts) {
    time.dateTime = ev.ts;
    time.textContent = new Date(ev.ts).toLocaleTimeString();
  }
  const who = document.createElement('b');
  who.className = 'who';
  who.textContent = ev.member;
  const body = document.createElement('span');
  body.className = 'text';
  if (ev.type === 'message') {
    body.textContent = ev.data && typeof ev.data.text === 'string' ? ev.data.text : JSON.stringify(ev.data);
  } else {
    li.classList.add('sys');
    body.textContent = ev.type === 'join' ? 'joined' : 'left';
  }
  li.append(seq, ' ', time, ' ', who, ' ', body);
  return li;
}

function systemLine(text) {
  const li = document.createElement('li');
  li.className = 'sys notice';
  li.textContent = text;
  return li;
}

// The member list is read at some seq; joins and leaves after it update
// it, and those at or before it are already in it.
function onPresence(ev) {
  if (members === null) {
    presence.push(ev);
    return;
  }
  if (ev.seq > membersSeq) applyPresence(ev);
  renderMembers();
}

function applyPresence(ev) {
  membersSeq = ev.seq;
  if (ev.type === 'join') members.set(ev.member, ev.data);
  else members.delete(ev.member);
}

async function refreshMembers() {
  const c = client;
  try {
    const list = await c.members(room);
    if (c !== client) return;
    members = new Map(list.members.map((m) => [m.member, m.meta]));
    membersSeq = list.seq;
    for (const ev of presence) if (ev.seq > membersSeq) applyPresence(ev);
    presence = [];
    renderMembers();
  } catch (err) {
    if (c === client) logLine(ui.log, `could not read the members: ${err.message}`, 'warn');
  }
}

function renderMembers() {
  if (members === null) {
    ui.members.replaceChildren();
    ui.memberCount.textContent = '';
    return;
  }
  const names = [...members.keys()].sort();
  ui.members.replaceChildren(...names.map((m) => {
    const li = document.createElement('li');
    li.dataset.member = m;
    const meta = members.get(m);
    const shown = meta && typeof meta.name === 'string' && meta.name !== m ? `${meta.name} (${m})` : m;
    li.textContent = client && m === client.user ? `${shown} (you)` : shown;
    return li;
  }));
  ui.memberCount.textContent = `(${names.length})`;
}

async function loadEarlier() {
  const c = client;
  if (!c || oldest <= 1) return;
  const from = Math.max(1, oldest - HISTORY_ON_JOIN);
  ui.earlier.disabled = true;
  try {
    const page = await c.history(room, { fromSeq: from, limit: oldest - from });
    const older = page.events.filter((e) => e.seq < oldest);
    const first = ui.messages.firstChild;
    for (const ev of older) ui.messages.insertBefore(renderEvent(ev), first);
    if (older.length) oldest = older[0].seq;
    if (page.truncated) {
      ui.messages.insertBefore(systemLine(`Messages before #${page.firstSeq} were trimmed from the room's history.`), ui.messages.firstChild);
      oldest = 1;
    }
    ui.earlier.hidden = oldest <= 1;
  } catch (err) {
    logLine(ui.log, `could not load earlier messages: ${err.message}`, 'warn');
  } finally {
    ui.earlier.disabled = false;
  }
}

// The outbox keeps each message with its idempotency key in the tab's
// session storage until the node acknowledged it: after a reload the page
// sends them again with the same keys, and each still lands once.
const outboxKey = () => `herald-chat-outbox:${room}`;

function outbox() {
  try {
    return JSON.parse(sessionStorage.getItem(outboxKey()) || '[]');
  } catch {
    return [];
  }
}

function saveOutbox(items) {
  sessionStorage.setItem(outboxKey(), JSON.stringify(items));
}

async function send(m) {
  const c = client;
  const items = outbox();
  if (!items.some((x) => x.key === m.key)) saveOutbox([...items, m]);
  const li = document.createElement('li');
  li.dataset.key = m.key;
  li.textContent = `${m.text} — sending…`;
  ui.outbox.append(li);
  ui.outboxWrap.hidden = false;
  try {
    const res = await c.publish(room, { text: m.text }, { key: m.key });
    li.remove();
    if (res.duplicate) logLine(ui.log, `message #${res.seq} had landed before its retry; it is there once`, 'ok');
    saveOutbox(outbox().filter((x) => x.key !== m.key));
  } catch (err) {
    if (err.code === 'closed') {
      li.remove();
    } else {
      li.textContent = `${m.text} — not sent: ${err.message}`;
      li.classList.add('error');
      saveOutbox(outbox().filter((x) => x.key !== m.key));
    }
  }
  ui.outboxWrap.hidden = ui.outbox.children.length === 0;
}
