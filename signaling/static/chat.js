// Room chat over the signaling WebSocket (docs/signaling.md, "Chat"): history on join and
// catch-up after a reconnect (by seq: no gaps, no duplicates), delivered/read receipts as
// watermarks, mentions, burn-after-reading. User content only ever goes in via textContent.

import { renderFileCard, svgIcon } from './files.js';

const MAX_TEXT = 4000;
const BURN_GRACE_MS = 8000; // a revealed burn message stays readable this long after it burns
const PENDING_ERROR_WINDOW_MS = 15000; // an error this soon after a send is about that send

const CHAT_ERRORS = {
  'too-large': `That message is too long: at most ${MAX_TEXT} characters.`,
  'forbidden': 'You cannot post in this consultation\'s chat (observers read only).',
  'bad-field': 'The server refused that message.',
};

export function initChat(ctx) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $('chat-log'),
    empty: $('chat-empty'),
    form: $('chat-form'),
    input: $('chat-input'),
    sendBtn: $('chat-send'),
    burn: $('btn-burn'),
    attach: $('btn-attach'),
    note: $('chat-note'),
    mentions: $('mention-list'),
    badge: $('chat-badge'),
  };

  const messages = new Map(); // seq -> message (as the server sent it)
  const bySeqEl = new Map(); // seq -> element
  const receipts = new Map(); // participantId -> {delivered, read}
  const pending = new Map(); // clientId -> {body, el, sentAt}
  const revealed = new Set(); // ids of burn messages this user chose to read
  const mentionPick = new Map(); // display name -> participant id, chosen from suggestions
  let lastSeq = 0; // highest seq seen
  let syncing = false;
  let syncCursor = 0; // every message up to this seq is here (while a sync is paging)
  let sentDelivered = 0;
  let sentRead = 0;
  let canPost = false;
  let mentionState = null; // {start, query, items, active}

  const state = {
    messages, receipts, pending,
    get lastSeq() { return lastSeq; },
    get unread() { return unreadCount(); },
    get syncing() { return syncing; },
  };
  window.consilium.chat = state;

  const selfId = () => (ctx.self() ? ctx.self().id : null);
  const isMine = (m) => m.from && m.from.id === selfId();

  // ------------------------------------------------------------------ server messages

  function applyPermissions() {
    canPost = ctx.permissions().includes('chat');
    ui.input.disabled = !canPost;
    ui.sendBtn.disabled = !canPost;
    ui.burn.disabled = !canPost;
    ui.attach.hidden = !canPost;
    ui.input.placeholder = canPost ? 'Message… (type @ to mention)' : 'Observers can read the chat but not post';
    setNote(canPost ? '' : 'You are an observer here: you can read the chat but not post or share files.',
      'info');
  }
  ctx.onPermissionsChanged(applyPermissions);

  ctx.onJoined((msg, rejoin) => {
    applyPermissions();
    // Catch up from where we are (0 on the first join); a drop during paging resumes there.
    syncCursor = rejoin ? (syncing ? syncCursor : lastSeq) : 0;
    syncing = true;
    ctx.send({ type: 'chat-sync', after: syncCursor });
    renderTicks();
  });

  ctx.on('chat-history', (msg) => {
    for (const m of msg.messages || []) addMessage(m);
    for (const r of msg.receipts || []) applyReceipt(r);
    const page = msg.messages || [];
    if (page.length) syncCursor = Math.max(syncCursor, page[page.length - 1].seq);
    if (msg.more && page.length) {
      ctx.send({ type: 'chat-sync', after: syncCursor });
      return;
    }
    syncing = false;
    syncCursor = Math.max(syncCursor, lastSeq);
    resendPending();
    renderTicks();
    scrollToEnd(true);
    receiptsNow();
  });

  ctx.on('chat-message', (msg) => {
    const m = msg.message;
    if (!m) return;
    const near = nearBottom();
    addMessage(m);
    if (!syncing) syncCursor = Math.max(syncCursor, m.seq);
    if (isMine(m) || near) scrollToEnd(isMine(m));
    renderTicks();
    receiptsNow();
  });

  ctx.on('chat-receipt', (msg) => {
    if (msg.receipt) applyReceipt(msg.receipt);
    renderTicks();
    updateUnread();
  });

  ctx.on('chat-burned', (msg) => {
    for (const id of msg.ids || []) burn(id);
  });

  ctx.onError((msg) => {
    const recent = [...pending.values()].filter((p) => Date.now() - p.sentAt < PENDING_ERROR_WINDOW_MS);
    const chatCode = msg.code === 'too-large' || ((msg.code === 'forbidden' || msg.code === 'bad-field') && recent.length);
    if (!chatCode) return false;
    const failed = recent[recent.length - 1];
    if (failed) failPending(failed.body.clientId, CHAT_ERRORS[msg.code] || msg.message);
    setNote(`${CHAT_ERRORS[msg.code] || 'The message was not sent.'}${msg.message ? ` (${msg.message})` : ''}`, 'error');
    return true;
  });

  ctx.onParticipantsChanged(() => renderTicks());

  // ------------------------------------------------------------------ state

  function addMessage(m) {
    if (typeof m.seq !== 'number' || messages.has(m.seq)) return; // dedupe by seq
    messages.set(m.seq, m);
    lastSeq = Math.max(lastSeq, m.seq);
    if (isMine(m) && m.clientId && pending.has(m.clientId)) {
      pending.get(m.clientId).el.remove();
      pending.delete(m.clientId);
    }
    const el = renderMessage(m);
    bySeqEl.set(m.seq, el);
    // Keep seq order (history pages and live messages can interleave).
    let before = null;
    for (const other of ui.log.querySelectorAll('.msg[data-seq]')) {
      if (Number(other.dataset.seq) > m.seq) { before = other; break; }
    }
    if (!before) before = ui.log.querySelector('.msg.pending');
    ui.log.insertBefore(el, before);
    ui.empty.hidden = true;
    updateUnread();
  }

  function applyReceipt(r) {
    if (!r || !r.participantId) return;
    const old = receipts.get(r.participantId) || { delivered: 0, read: 0 };
    const next = {
      delivered: Math.max(old.delivered, r.delivered || 0),
      read: Math.max(old.read, r.read || 0),
    };
    receipts.set(r.participantId, next);
    if (r.participantId === selfId()) {
      // Our own watermarks (from another tab, or before a reload) count as already sent.
      sentDelivered = Math.max(sentDelivered, next.delivered);
      sentRead = Math.max(sentRead, next.read);
    }
  }

  function myRead() {
    const mine = receipts.get(selfId());
    return Math.max(sentRead, mine ? mine.read : 0);
  }

  function unreadCount() {
    const read = myRead();
    let n = 0;
    for (const m of messages.values()) if (m.seq > read && !isMine(m)) n += 1;
    return n;
  }

  function updateUnread() {
    const n = unreadCount();
    ui.badge.textContent = n > 99 ? '99+' : String(n);
    ui.badge.hidden = n === 0;
    ui.badge.setAttribute('aria-label', `${n} unread message${n === 1 ? '' : 's'}`);
  }

  // Messages count as read when the chat is on screen and the window has focus; a burn
  // message from someone else only once its reader has opened it.
  function readable() {
    return ctx.chatVisible() && document.visibilityState === 'visible' && document.hasFocus();
  }

  function readUpTo() {
    let upTo = syncCursor;
    for (const m of messages.values()) {
      if (m.burn && !isMine(m) && !revealed.has(m.id) && m.seq <= upTo) upTo = m.seq - 1;
    }
    return upTo;
  }

  function receiptsNow() {
    if (syncing || !ctx.connected()) { updateUnread(); return; }
    const r = { type: 'chat-receipt' };
    if (syncCursor > sentDelivered) r.delivered = syncCursor;
    if (readable()) {
      const upTo = readUpTo();
      if (upTo > sentRead) r.read = upTo;
    }
    if (r.delivered !== undefined || r.read !== undefined) {
      ctx.send(r);
      if (r.delivered !== undefined) sentDelivered = r.delivered;
      if (r.read !== undefined) sentRead = r.read;
    }
    updateUnread();
  }
  window.addEventListener('focus', receiptsNow);
  document.addEventListener('visibilitychange', receiptsNow);

  // ------------------------------------------------------------------ rendering

  function roleLabel(role) { return ctx.roleLabel(role); }

  function timeText(ms) {
    const d = new Date(ms);
    const today = new Date().toDateString() === d.toDateString();
    const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return today ? t : `${d.toLocaleDateString()} ${t}`;
  }

  function renderMessage(m) {
    const el = document.createElement('article');
    el.className = 'msg';
    el.dataset.seq = String(m.seq);
    el.dataset.id = m.id;
    const mine = isMine(m);
    el.classList.toggle('mine', mine);
    if ((m.mentions || []).includes(selfId())) el.classList.add('mention-me');

    const head = document.createElement('header');
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = mine ? 'You' : m.from.name;
    const role = document.createElement('span');
    role.className = 'badge';
    role.dataset.role = m.from.role;
    role.textContent = roleLabel(m.from.role);
    const when = document.createElement('time');
    when.dateTime = new Date(m.sentAt).toISOString();
    when.textContent = timeText(m.sentAt);
    when.title = new Date(m.sentAt).toLocaleString();
    head.append(who, role, when);
    el.append(head);

    const body = document.createElement('div');
    body.className = 'body';
    if (m.text) {
      const text = document.createElement('p');
      text.className = 'text';
      text.textContent = m.text;
      body.append(text);
    }
    for (const f of m.attachments || []) body.append(renderFileCard(f, ctx));
    if (m.burn) {
      el.classList.add('burn');
      const note = document.createElement('p');
      note.className = 'burn-note';
      note.append(svgIcon('i-flame'), 'Burn after reading: deleted once everyone has read it');
      el.append(note);
      if (!mine && !revealed.has(m.id)) {
        // Opening it is a deliberate act, so a message is not "read" just by arriving.
        body.hidden = true;
        const open = document.createElement('button');
        open.type = 'button';
        open.className = 'reveal';
        open.textContent = 'Tap to read';
        open.addEventListener('click', () => {
          revealed.add(m.id);
          body.hidden = false;
          open.remove();
          receiptsNow();
        });
        el.append(open);
      }
    }
    el.append(body);

    if (mine) {
      const ticks = document.createElement('span');
      ticks.className = 'ticks';
      el.append(ticks);
    }
    return el;
  }

  // A message of mine is delivered/read when every other current participant's watermark has
  // reached it.
  function renderTicks() {
    const others = [...ctx.participants.keys()];
    for (const [seq, m] of messages) {
      if (!isMine(m)) continue;
      const el = bySeqEl.get(seq);
      const ticks = el && el.querySelector('.ticks');
      if (!ticks) continue;
      let status = 'sent';
      if (others.length) {
        const rs = others.map((id) => receipts.get(id) || { delivered: 0, read: 0 });
        if (rs.every((r) => r.read >= seq)) status = 'read';
        else if (rs.every((r) => r.delivered >= seq || r.read >= seq)) status = 'delivered';
      }
      ticks.dataset.status = status;
      ticks.textContent = status === 'sent' ? '✓' : '✓✓';
      const label = { sent: 'Sent', delivered: 'Delivered to everyone', read: 'Read by everyone' }[status];
      ticks.title = label;
      ticks.setAttribute('aria-label', label);
    }
  }

  function burn(id) {
    const m = [...messages.values()].find((x) => x.id === id);
    if (!m) return;
    const el = bySeqEl.get(m.seq);
    const wipe = () => {
      if (!el) return;
      el.classList.add('burned');
      for (const part of el.querySelectorAll('.body, .reveal, .burn-note, .ticks')) part.remove();
      const note = document.createElement('p');
      note.className = 'burn-note';
      note.append(svgIcon('i-flame'), 'Burned after reading');
      el.append(note);
    };
    m.text = '';
    m.attachments = [];
    // Whoever just opened it keeps it a few seconds to finish reading; everyone else at once.
    if (revealed.has(id) && !isMine(m)) setTimeout(wipe, BURN_GRACE_MS);
    else wipe();
  }

  function nearBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 80;
  }

  function scrollToEnd(force) {
    if (force || nearBottom()) ui.log.scrollTop = ui.log.scrollHeight;
  }

  function setNote(text, kind) {
    ui.note.textContent = text;
    ui.note.hidden = !text;
    ui.note.dataset.kind = kind || 'info';
  }

  // ------------------------------------------------------------------ sending

  function newClientId() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return `c-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  }

  function post(body) {
    const clientId = newClientId();
    const full = { type: 'chat-send', clientId, ...body };
    const el = document.createElement('article');
    el.className = 'msg mine pending';
    el.dataset.clientId = clientId;
    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = body.text || (body.attachments ? 'Sharing a file…' : '');
    const state = document.createElement('span');
    state.className = 'ticks';
    state.dataset.status = 'sending';
    state.textContent = '…';
    state.setAttribute('aria-label', 'Sending');
    el.append(text, state);
    ui.log.append(el);
    ui.empty.hidden = true;
    pending.set(clientId, { body: full, el, sentAt: Date.now() });
    scrollToEnd(true);
    // Offline: it goes out after the rejoin (same clientId, so never twice).
    if (ctx.connected() && !syncing) ctx.send(full);
  }

  function resendPending() {
    for (const p of pending.values()) {
      if (p.failed) continue;
      p.sentAt = Date.now();
      ctx.send(p.body);
    }
  }

  function failPending(clientId, why) {
    const p = pending.get(clientId);
    if (!p) return;
    p.failed = true;
    p.el.classList.add('failed');
    const ticks = p.el.querySelector('.ticks');
    ticks.dataset.status = 'failed';
    ticks.textContent = '!';
    ticks.setAttribute('aria-label', `Not sent: ${why}`);
    ticks.title = `Not sent: ${why}`;
    // Failed attempts are not retried; the bubble goes away when the user types again.
    const drop = () => { p.el.remove(); pending.delete(clientId); };
    ui.input.addEventListener('input', drop, { once: true });
  }

  function mentionedIds(text) {
    const ids = [];
    for (const [name, id] of mentionPick) {
      if (text.includes(`@${name}`) && ctx.participants.has(id)) ids.push(id);
    }
    // A name typed by hand (without the list) counts too.
    for (const p of ctx.participants.values()) {
      if (text.includes(`@${p.name}`) && !ids.includes(p.id)) ids.push(p.id);
    }
    return ids.slice(0, 20);
  }

  ui.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (!canPost) return;
    const text = ui.input.value.trim();
    if (!text) return;
    if (text.length > MAX_TEXT) {
      setNote(`${CHAT_ERRORS['too-large']} This one has ${text.length}.`, 'error');
      return;
    }
    const body = { text };
    const mentions = mentionedIds(text);
    if (mentions.length) body.mentions = mentions;
    if (ui.burn.getAttribute('aria-pressed') === 'true') body.burn = { afterReading: true };
    post(body);
    ui.input.value = '';
    mentionPick.clear();
    closeMentions();
    setNote('', 'info');
    autosize();
  });

  ui.burn.addEventListener('click', () => {
    const on = ui.burn.getAttribute('aria-pressed') !== 'true';
    ui.burn.setAttribute('aria-pressed', String(on));
    ui.input.classList.toggle('burn', on);
    setNote(on ? 'Burn after reading is on: your next messages are deleted once everyone has read them.' : '',
      'info');
  });

  // Enter sends, Shift+Enter is a new line; arrows/Enter/Tab drive the mention list.
  ui.input.addEventListener('keydown', (ev) => {
    if (mentionState && mentionState.items.length) {
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        ev.preventDefault();
        const n = mentionState.items.length;
        mentionState.active = (mentionState.active + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
        renderMentions();
        return;
      }
      if (ev.key === 'Enter' || ev.key === 'Tab') {
        ev.preventDefault();
        pickMention(mentionState.items[mentionState.active]);
        return;
      }
      if (ev.key === 'Escape') { closeMentions(); return; }
    }
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      ui.form.requestSubmit();
    }
  });

  ui.input.addEventListener('input', () => {
    autosize();
    updateMentions();
  });

  function autosize() {
    ui.input.style.height = 'auto';
    ui.input.style.height = `${Math.min(ui.input.scrollHeight, 140)}px`;
  }

  // ------------------------------------------------------------------ mentions

  function updateMentions() {
    const caret = ui.input.selectionStart;
    const before = ui.input.value.slice(0, caret);
    const match = /(^|\s)@([^\s@]{0,40})$/.exec(before);
    if (!match) { closeMentions(); return; }
    const query = match[2].toLowerCase();
    const items = [...ctx.participants.values()]
      .filter((p) => p.name.toLowerCase().split(/\s+/).some((w) => w.startsWith(query))
        || p.name.toLowerCase().startsWith(query))
      .slice(0, 8);
    mentionState = { start: caret - match[2].length - 1, query, items, active: 0 };
    renderMentions();
  }

  function renderMentions() {
    ui.mentions.replaceChildren();
    if (!mentionState || !mentionState.items.length) { ui.mentions.hidden = true; return; }
    mentionState.items.forEach((p, i) => {
      const li = document.createElement('li');
      li.setAttribute('role', 'option');
      li.setAttribute('aria-selected', String(i === mentionState.active));
      li.dataset.participantId = p.id;
      const name = document.createElement('span');
      name.textContent = p.name;
      const role = document.createElement('span');
      role.className = 'badge';
      role.dataset.role = p.role;
      role.textContent = roleLabel(p.role);
      li.append(name, role);
      // mousedown, not click: the textarea must keep its caret.
      li.addEventListener('mousedown', (ev) => { ev.preventDefault(); pickMention(p); });
      ui.mentions.append(li);
    });
    ui.mentions.hidden = false;
  }

  function pickMention(p) {
    if (!mentionState) return;
    const v = ui.input.value;
    const caret = ui.input.selectionStart;
    const insert = `@${p.name} `;
    ui.input.value = v.slice(0, mentionState.start) + insert + v.slice(caret);
    const pos = mentionState.start + insert.length;
    ui.input.setSelectionRange(pos, pos);
    mentionPick.set(p.name, p.id);
    closeMentions();
    ui.input.focus();
  }

  function closeMentions() {
    mentionState = null;
    ui.mentions.hidden = true;
    ui.mentions.replaceChildren();
  }

  return {
    // A shared file goes into the chat as a message with that attachment.
    shareFiles(fileIds, text = '') { post({ text, attachments: fileIds }); },
    receiptsNow,
  };
}
