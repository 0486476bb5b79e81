// What both pages share: finding the nodes, the connection indicator, the
// node switcher and the connection log.

import { Herald } from '/herald.js';

const wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
export const wsURL = (addr) => `${wsScheme}//${addr}/ws`;

/**
 * The nodes to connect to, this page's own node first: the page was
 * served by it, so it is the one most likely to be up.
 * @returns {Promise<{id: string, url: string}[]>}
 */
export async function discoverNodes() {
  let nodes = [];
  try {
    const res = await fetch('/nodes.json', { cache: 'no-store' });
    if (res.ok) nodes = (await res.json()).nodes || [];
  } catch {
    // Only this node, then.
  }
  const list = nodes.map((n) => ({ id: n.id, url: wsURL(n.addr) }));
  const own = wsURL(location.host);
  const i = list.findIndex((n) => n.url === own);
  if (i > 0) list.unshift(...list.splice(i, 1));
  if (i < 0) list.unshift({ id: '', url: own });
  return list;
}

const hostOf = (url) => url.replace(/^wss?:\/\//, '').replace(/\/ws$/, '');

/** Appends a timestamped line to the connection log, keeping the last 50. */
export function logLine(list, text, kind = '') {
  const li = document.createElement('li');
  const t = document.createElement('time');
  const now = new Date();
  t.dateTime = now.toISOString();
  t.textContent = now.toLocaleTimeString();
  li.append(t, ' ', text);
  if (kind) li.className = kind;
  list.append(li);
  while (list.children.length > 50) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

/** The elements of the connection header both pages have. */
export function connectionUI() {
  return { indicator: $('conn'), text: $('conn-text'), select: $('node-select'), form: $('switch-form'), log: $('connlog') };
}

/**
 * Starts a client of nodes as user name, or with token when there is one,
 * shown on the connection header els. If its first connection fails for
 * good, that goes to the log and onFail runs.
 */
export function connect(nodes, name, token, els, onFail) {
  const client = new Herald({ urls: nodes.map((n) => n.url), ...(token ? { token } : { user: name }) });
  bindConnection(client, nodes, els);
  client.ready().catch((err) => {
    logLine(els.log, `could not connect: ${err.message}`, 'warn');
    onFail();
  });
  return client;
}

/**
 * Shows the client's connection on the indicator, the node switcher and
 * the log. The indicator carries data-state and data-node for scripts and
 * styles; its text is for people.
 */
export function bindConnection(client, nodes, els) {
  const { indicator, text, select, form, log } = els;
  const idOf = (url) => (nodes.find((n) => n.url === url) || {}).id;
  const label = (url, node) => {
    const id = node || idOf(url);
    return id ? `${id} (${hostOf(url)})` : hostOf(url);
  };
  select.replaceChildren(...nodes.map((n) => {
    const o = document.createElement('option');
    o.value = n.url;
    o.textContent = n.id ? `${n.id} — ${hostOf(n.url)}` : hostOf(n.url);
    return o;
  }));
  select.disabled = false;
  form.querySelector('button').disabled = false;
  form.onsubmit = (e) => {
    e.preventDefault();
    if (select.value && select.value !== client.url) {
      logLine(log, `switching to ${hostOf(select.value)}`);
      client.reconnect(select.value);
    }
  };
  client.on('state', (s) => {
    indicator.dataset.state = s.state;
    indicator.dataset.node = s.state === 'connected' ? s.node : '';
    switch (s.state) {
      case 'connecting':
        text.textContent = `Connecting to ${label(s.url)}…`;
        logLine(log, `connecting to ${label(s.url)}`);
        break;
      case 'connected':
        text.textContent = `Connected to ${label(s.url, s.node)}`;
        logLine(log, `connected to ${label(s.url, s.node)}`, 'ok');
        if ([...select.options].some((o) => o.value === s.url)) select.value = s.url;
        break;
      case 'disconnected': {
        const why = s.closeCode ? `closed with ${s.closeCode}` : s.error && s.error.message ? s.error.message : 'lost';
        const retry = `reconnecting in ${(s.retryIn / 1000).toFixed(1)} s`;
        text.textContent = `Disconnected from ${label(s.url, s.node)}; ${retry}`;
        logLine(log, `disconnected from ${label(s.url, s.node)} (${why}); ${retry}`, 'warn');
        break;
      }
      case 'closed':
        text.textContent = s.error ? `Stopped: ${s.error.message}` : 'Not connected';
        if (s.error) logLine(log, `stopped: ${s.error.message}`, 'warn');
        select.disabled = true;
        form.querySelector('button').disabled = true;
        break;
      default:
    }
  });
  client.on('subscribed', (s) => {
    if (s.resumed) {
      logLine(log, `resumed ${s.room} from #${s.fromSeq} on ${s.node}${s.truncated ? ' (history was trimmed)' : ''}`, 'ok');
    } else {
      logLine(log, `subscribed to ${s.room} from #${s.fromSeq} on ${s.node}`);
    }
  });
  client.on('retry', (r) => logLine(log, `publish retried with the same key (${r.error.code || r.error.message})`));
}

/** Gets an element by id, failing loudly if a page lost it. */
export function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`no #${id}`);
  return el;
}
