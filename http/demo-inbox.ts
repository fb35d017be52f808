import { selfContainedPagePolicy } from './server.js';
import type { FastifyInstance } from 'fastify';

/*
 * The reference inbox page, `GET /demo/inbox?tenant=…&user=…&token=…`: what an app's notification
 * bell needs, in plain HTML and one inline script, no build step. It is a reference for app
 * developers (read its script), not a product UI. It talks to the inbox API only with the user token
 * it is given, exactly as an app's front end would: the feed with counts, click (which marks read and
 * records a `clicked` receipt), mark all read, and the live stream (Server-Sent Events).
 *
 * Nothing is loaded from elsewhere: the policy allows this one script and this one style (by hash)
 * and requests to this server only; no referrer leaves the page, so the token in its address does
 * not travel with a followed link.
 */

/** Serves the reference inbox page at `/demo/inbox` (public: the page authenticates with the token it is given). */
export function registerDemoInbox(app: FastifyInstance): void {
  const page = inboxPage();
  app.get('/demo/inbox', (_req, reply) => reply
    .type('text/html; charset=utf-8')
    .header('content-security-policy', page.csp)
    .header('referrer-policy', 'no-referrer')
    .header('x-content-type-options', 'nosniff')
    .header('cache-control', 'no-cache')
    .send(page.html));
}

function inboxPage(): { html: string; csp: string } {
  const csp = selfContainedPagePolicy(PAGE_SCRIPT, PAGE_STYLE);
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Inbox — Herald</title>
<style>${PAGE_STYLE}</style>
</head>
<body>
<header class="bar">
  <h1>Herald inbox <span id="who" class="muted"></span></h1>
  <span id="live" class="live" data-state="connecting">Connecting…</span>
  <div class="bell-wrap">
    <button id="bell" type="button" class="bell" aria-expanded="true" aria-controls="panel" aria-label="Notifications">
      <svg viewBox="0 0 24 24" width="24" height="24" aria-hidden="true" focusable="false"><path fill="currentColor" d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"/></svg>
    </button>
    <span id="badge" class="badge" role="status" aria-label="no unread notifications" hidden></span>
  </div>
</header>
<main>
  <p id="error" class="error" role="alert" hidden></p>
  <section id="panel" class="panel" aria-labelledby="panel-title">
    <div class="panel-head">
      <h2 id="panel-title">Notifications</h2>
      <button id="mark-all" type="button">Mark all read</button>
    </div>
    <ul id="feed" class="feed"></ul>
    <p id="empty" class="muted empty" hidden>Nothing here yet.</p>
    <button id="more" type="button" class="more" hidden>Load more</button>
  </section>
  <p class="note muted">A reference page for app developers. It authenticates with the user token in its address
  (<code>?token=</code>); a real app gets that token from its own backend (<code>POST /v1/users/{user_id}/token</code>
  with a tenant key, which never reaches a browser) and renews it before it expires.</p>
</main>
<script>${PAGE_SCRIPT}</script>
</body>
</html>
`;
  return { html, csp };
}

const PAGE_STYLE = `
[hidden] { display: none !important; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1b1f24; background: #f4f5f7; }
.bar { display: flex; align-items: center; gap: 1rem; padding: .6rem 1.2rem; background: #fff; border-bottom: 1px solid #dde; }
.bar h1 { font-size: 1.1rem; margin: 0; flex: 1; }
.muted { color: #667; font-weight: normal; }
.live { font-size: .85rem; color: #667; }
.live[data-state="live"] { color: #168a3a; }
.live[data-state="live"]::before { content: "● "; }
.live[data-state="closed"] { color: #c0262d; }
.bell-wrap { position: relative; }
.bell { border: 1px solid #ccd; background: #fff; border-radius: 50%; width: 2.6rem; height: 2.6rem; display: grid; place-items: center; cursor: pointer; color: #333; }
.bell:hover { background: #f0f2f5; }
.badge { position: absolute; top: -.3rem; right: -.4rem; min-width: 1.25rem; height: 1.25rem; padding: 0 .3rem; box-sizing: border-box;
  border-radius: .65rem; background: #d62d3a; color: #fff; font-size: .75rem; font-weight: 700; display: grid; place-items: center; pointer-events: none; }
main { max-width: 40rem; margin: 1.2rem auto; padding: 0 1rem; }
.panel { background: #fff; border: 1px solid #dde; border-radius: 8px; overflow: hidden; }
.panel-head { display: flex; align-items: center; justify-content: space-between; padding: .6rem .9rem; border-bottom: 1px solid #eef; }
.panel-head h2 { font-size: 1rem; margin: 0; }
button { font: inherit; }
#mark-all, .more { border: 1px solid #ccd; background: #fff; border-radius: 5px; padding: .25rem .7rem; cursor: pointer; }
#mark-all:disabled { opacity: .5; cursor: default; }
.feed { list-style: none; margin: 0; padding: 0; }
.feed li + li { border-top: 1px solid #eef; }
.item { display: block; width: 100%; text-align: left; border: 0; background: none; padding: .7rem .9rem .7rem 1.7rem; cursor: pointer; position: relative; color: inherit; }
.item:hover, .item:focus-visible { background: #f6f8fb; }
.item.unread { background: #eef5ff; }
.item.unread::before { content: ""; position: absolute; left: .7rem; top: 1.05rem; width: .5rem; height: .5rem; border-radius: 50%; background: #0a6cbd; }
.item .title { display: block; font-weight: 600; }
.item.read .title { font-weight: normal; }
.item .body { display: block; color: #333; }
.item time { display: block; font-size: .8rem; color: #667; margin-top: .15rem; }
.item .link { font-size: .8rem; color: #0a6cbd; }
.empty { padding: 1rem .9rem; margin: 0; }
.more { display: block; margin: .6rem auto; }
.error { background: #fdecee; border: 1px solid #f3b7bd; color: #8a1620; border-radius: 6px; padding: .6rem .9rem; }
.note { font-size: .85rem; margin-top: 1.2rem; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

/**
 * Runs in the browser. Builds every node with DOM calls and textContent (nothing from a notification
 * is ever parsed as HTML). No template literals here: this text lives in one.
 */
const PAGE_SCRIPT = `
(() => {
  const params = new URLSearchParams(location.search);
  const tenant = params.get('tenant') || '';
  const user = params.get('user') || '';
  const token = params.get('token') || '';
  const base = '/v1/users/' + encodeURIComponent(user) + '/notifications';
  const $ = (id) => document.getElementById(id);
  const ui = { who: $('who'), live: $('live'), bell: $('bell'), badge: $('badge'), error: $('error'), panel: $('panel'),
    feed: $('feed'), empty: $('empty'), more: $('more'), markAll: $('mark-all') };

  /** The items shown, newest first, and where the next page starts. */
  let items = [];
  let nextCursor = null;
  let counts = { unseen: 0, unread: 0, total: 0 };
  /** The stream has said counts: it is subscribed and sends every change from then on. */
  let streaming = false;

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = !text;
  }

  const EXPIRED = 'Your user token is missing, invalid or expired. A real app asks its backend for a fresh one; '
    + 'here, mint one with: herald keys user-token --tenant ' + (tenant || 'T') + ' --user ' + (user || 'U')
    + ', and open this page again with ?token=…';

  /** Calls the inbox API with the user token; throws an Error whose message says what went wrong. */
  async function api(method, path, body) {
    let res;
    try {
      res = await fetch(base + path, {
        method,
        headers: Object.assign({ authorization: 'Bearer ' + token }, body ? { 'content-type': 'application/json' } : {}),
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch (err) {
      throw new Error('Herald is not reachable (' + err.message + ').');
    }
    if (res.status === 401) throw new Error(EXPIRED);
    const answer = await res.json().catch(() => null);
    if (!res.ok) throw new Error((answer && (answer.detail || answer.title)) || ('HTTP ' + res.status));
    return answer;
  }

  function setCounts(next) {
    counts = next;
    const n = counts.unread;
    ui.badge.textContent = n > 99 ? '99+' : String(n);
    ui.badge.hidden = n === 0;
    ui.badge.setAttribute('aria-label', n === 0 ? 'no unread notifications' : n + ' unread notification' + (n === 1 ? '' : 's'));
    ui.bell.setAttribute('aria-label', n === 0 ? 'Notifications' : 'Notifications, ' + n + ' unread');
    ui.markAll.disabled = n === 0;
  }

  function ago(iso) {
    const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
    if (s < 45) return 'just now';
    if (s < 3600) return Math.round(s / 60) + ' min ago';
    if (s < 86400) return Math.round(s / 3600) + ' h ago';
    return new Date(iso).toLocaleString();
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  /** Draws the feed from the items; keyboard focus stays on the item it was on. */
  function render() {
    const focused = ui.feed.contains(document.activeElement) ? document.activeElement.dataset.id : null;
    ui.feed.replaceChildren(...items.map((item) => {
      const button = el('button', 'item ' + (item.read ? 'read' : 'unread'));
      button.type = 'button';
      button.dataset.id = item.id;
      if (!item.read) button.append(el('span', 'sr-only', 'Unread: '));
      button.append(el('span', 'title', item.title));
      if (item.body) button.append(el('span', 'body', item.body));
      const time = el('time', null, ago(item.created_at));
      time.dateTime = item.created_at;
      time.title = new Date(item.created_at).toLocaleString();
      button.append(time);
      if (safeUrl(item.action_url)) button.append(el('span', 'link', 'Opens ' + new URL(item.action_url).host + ' in a new tab'));
      button.addEventListener('click', () => clickItem(item));
      const li = el('li');
      li.append(button);
      return li;
    }));
    ui.empty.hidden = items.length > 0;
    ui.more.hidden = !nextCursor;
    const again = focused && [...ui.feed.querySelectorAll('button.item')].find((b) => b.dataset.id === focused);
    if (again) again.focus();
  }

  /** Times read "5 min ago": they are brought up to date every minute. */
  function retime() {
    for (const time of ui.feed.querySelectorAll('time')) time.textContent = ago(time.dateTime);
  }

  /** Only http(s) links are followed, whatever a notification carries. */
  function safeUrl(url) {
    try {
      return url != null && /^https?:$/.test(new URL(url).protocol);
    } catch {
      return false;
    }
  }

  /** A newer item (from the stream) goes on top; one already shown is replaced. */
  function addNewest(item) {
    const at = items.findIndex((i) => i.id === item.id);
    if (at >= 0) items[at] = item;
    else items.unshift(item);
  }

  /** A page of older items goes below what is shown. */
  function addOlder(page) {
    for (const item of page) if (!items.some((i) => i.id === item.id)) items.push(item);
  }

  /** The newest page, again; items the stream brought meanwhile stay on top. */
  async function loadFirstPage() {
    const page = await api('GET', '?limit=20');
    const newest = page.data.length ? Date.parse(page.data[0].created_at) : -Infinity;
    const arrived = items.filter((i) => Date.parse(i.created_at) > newest && !page.data.some((p) => p.id === i.id));
    items = arrived.concat(page.data);
    nextCursor = page.next_cursor;
    // Once the stream is live its counts are the freshest (this page may have been counted before them).
    if (!streaming) setCounts(page.counts);
    render();
  }

  async function loadMore() {
    if (!nextCursor) return;
    ui.more.disabled = true;
    try {
      const page = await api('GET', '?limit=20&cursor=' + encodeURIComponent(nextCursor));
      addOlder(page.data);
      nextCursor = page.next_cursor;
      if (!streaming) setCounts(page.counts);
      render();
      showError('');
    } catch (err) {
      showError(err.message);
    } finally {
      ui.more.disabled = false;
    }
  }

  /** A click is recorded (it marks the item read and counts as a click), then its link opens. */
  async function clickItem(item) {
    try {
      const changed = await api('POST', '/' + encodeURIComponent(item.id) + '/click');
      addNewest(changed.item);
      setCounts(changed.counts);
      render();
      showError('');
    } catch (err) {
      showError(err.message);
    }
    if (safeUrl(item.action_url)) window.open(item.action_url, '_blank', 'noopener,noreferrer');
  }

  async function markAllRead() {
    ui.markAll.disabled = true;
    try {
      const done = await api('POST', '/mark-all', { read: true });
      for (const item of items) { item.read = true; item.seen = true; }
      setCounts(done.counts);
      render();
      showError('');
    } catch (err) {
      showError(err.message);
      ui.markAll.disabled = counts.unread === 0;
    }
  }

  /** Live updates. EventSource cannot send headers, so the token goes in the query. */
  function connect() {
    const source = new EventSource(base + '/stream?token=' + encodeURIComponent(token));
    let reconnected = false;
    const live = (state, text) => { ui.live.dataset.state = state; ui.live.textContent = text; };
    source.addEventListener('notification', (e) => {
      addNewest(JSON.parse(e.data));
      render();
    });
    source.addEventListener('counts', (e) => {
      // The first counts event says the stream is subscribed: from here on nothing is missed.
      const resumed = reconnected;
      streaming = true;
      reconnected = false;
      live('live', 'Live');
      setCounts(JSON.parse(e.data));
      // Back after a break, or fewer unread than shown (read on another device): show the feed as it now is.
      if (resumed || items.filter((i) => !i.read).length > counts.unread) loadFirstPage().catch((err) => showError(err.message));
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself (sending Last-Event-ID); once back, the feed is read again.
        streaming = false;
        reconnected = true;
        live('connecting', 'Reconnecting…');
        return;
      }
      // Closed for good: the server refused the stream. Ask the API why (an expired token, say).
      streaming = false;
      live('closed', 'Offline');
      api('GET', '?limit=1').then(
        () => showError('The live stream was refused; reload the page to try again.'),
        (err) => showError(err.message),
      );
    });
  }

  ui.who.textContent = (tenant ? tenant + ' / ' : '') + user;
  ui.bell.addEventListener('click', () => {
    ui.panel.hidden = !ui.panel.hidden;
    ui.bell.setAttribute('aria-expanded', String(!ui.panel.hidden));
  });
  ui.more.addEventListener('click', loadMore);
  ui.markAll.addEventListener('click', markAllRead);
  setInterval(retime, 60000);
  setCounts(counts);

  if (!user || !token) {
    ui.live.dataset.state = 'closed';
    ui.live.textContent = 'Offline';
    showError('Open this page as /demo/inbox?tenant=T&user=U&token=TOKEN. ' + EXPIRED);
    render();
    return;
  }
  // The stream first, then the feed: an item arriving in between comes by either, and shows once.
  connect();
  loadFirstPage().catch((err) => showError(err.message));
})();
`;
