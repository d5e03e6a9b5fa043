// Consilium web client: joins a room over the v1 WebSocket protocol (docs/signaling.md),
// publishes camera+mic on one RTCPeerConnection and receives everyone else on a second one
// that the server offers. Plain ES module, no build step.

import { initChat } from './chat.js';
import { initFiles } from './files.js';

const PROTOCOL_VERSION = 1;
const ICE_GATHER_TIMEOUT_MS = 3000; // the server takes no trickled candidates
const PING_INTERVAL_MS = 20000;
// A socket that hears nothing (not even pong) this long is dead even if no close event came.
const SILENCE_LIMIT_MS = 50000;
// Reconnection after an unexpected drop: 1, 2, 4, 8, then every 10 s, for about two minutes.
const RECONNECT_MAX_DELAY_MS = 10000;
const RECONNECT_GIVE_UP_MS = 120000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  roomName: $('room-name'),
  error: $('error'),
  joinView: $('join-view'),
  joinForm: $('join-form'),
  callView: $('call-view'),
  leftView: $('left-view'),
  leftTitle: $('left-title'),
  leftDetail: $('left-detail'),
  rejoin: $('rejoin'),
  stage: $('stage'),
  tiles: $('tiles'),
  selfView: $('self-view'),
  selfVideo: $('self-video'),
  selfInitials: $('self-initials'),
  selfName: $('self-name'),
  selfRole: $('self-role'),
  btnMic: $('btn-mic'),
  btnCam: $('btn-cam'),
  btnLeave: $('btn-leave'),
  btnRec: $('btn-rec'),
  btnEnd: $('btn-end'),
  confirmDialog: $('confirm-dialog'),
  confirmTitle: $('confirm-title'),
  confirmText: $('confirm-text'),
  confirmOk: $('confirm-ok'),
  recBadge: $('rec-badge'),
  recTime: $('rec-time'),
  enableSound: $('enable-sound'),
  btnChat: $('btn-chat'),
  sidePanel: $('side-panel'),
  sideClose: $('side-close'),
  tabChat: $('tab-chat'),
  tabFiles: $('tab-files'),
  chatPane: $('chat-pane'),
  filesPane: $('files-pane'),
};

const ROLE_LABELS = {
  host: 'Host',
  specialist: 'Specialist',
  bedside: 'Bedside',
  observer: 'Observer',
};

const ERROR_MESSAGES = {
  'token-missing': 'This link has no invitation token. Ask the host for an invitation link.',
  'token-invalid': 'This invitation link is not valid. Ask the host for a new link.',
  'token-expired': 'This invitation link has expired. Ask the host for a new link.',
  'token-wrong-room': 'This invitation link belongs to a different consultation room.',
  'room-full': 'The consultation room is full. Please try again later or contact the host.',
  'forbidden': 'You are not allowed to do that in this consultation.',
  'unsupported-version': 'This page is out of date for the server. Please reload the page.',
  'negotiation-failed': 'The media connection could not be set up.',
  'bad-sdp': 'The media connection could not be set up (rejected session description).',
  'internal': 'The server hit an internal error.',
  'room-ended': 'This consultation has ended; it cannot be joined any more. '
    + 'Ask the host for a new invitation if you still need to talk.',
};

const REMOVED_MESSAGES = {
  'removed-by-host': 'The host removed you from the consultation.',
  'duplicate-identity': 'You joined this consultation from another window or device, '
    + 'so this one was disconnected.',
  'room-closed': 'The consultation has been closed.',
  'consultation-ended': 'The host ended the consultation for everyone.',
};

// ---------------------------------------------------------------------------------------------
// State exposed for tests and debugging.

const participants = new Map(); // participantId -> Participant (remote only)
const tracksByMid = new Map(); // mid -> {mid, participantId, kind, name, role} (latest offer)

const params = new URLSearchParams(window.location.search);
const consilium = {
  state: 'connecting',
  self: null,
  participants,
  error: null,
  inboundVideoStats,
  publishedLayers: [], // rids of our camera's simulcast encodings ([] = one layer)
  activeLayers: null, // rids the server last asked us to encode (dynacast)
  downlinkStats: null, // the server's view of our downlink (layers, estimate)
  lastViewport: null,
  reportViewport: () => reportViewport(true),
  debug: params.get('debug') === '1',
  recording: { active: false, startedAt: null, startedBy: null },
  reconnects: 0, // successful rejoins after a dropped connection
  resumes: 0, // of those, how many the server resumed (same session, media never stopped)
  peerConnectionsCreated: 0, // RTCPeerConnections this page made (a resume makes none)
};
window.consilium = consilium;

let ws = null;
let pubPc = null;
let subPc = null;
let localStream = null;
let iceServers = [];
let pingTimer = null;
let intentionalClose = false; // leave/removed/fatal error: a socket close is then expected
let negotiation = Promise.resolve(); // serialises subscribe-offer handling
let soundBlocked = false;
let tokenPermissions = null; // from the JWT payload, only to decide what to offer in the UI
let recTimer = null;
let selfPermissions = []; // joined.self.permissions (what the server will let us do)
let joinToken = null; // kept for rejoining after a dropped connection (and for REST calls)
let reconnect = null; // {attempt, since, timer} while trying to get back in
let lastHeardAt = 0; // Date.now() of the last message from the server
let mediaTried = false; // getUserMedia asked once; a rejoin reuses its answer
let resumeToken = null; // joined.resumeToken: after a drop, ask the server for the same session
let socketGen = 0; // which socket a message came on (an answer belongs to its offer's socket)
const joinedHooks = []; // (msg, isRejoin) => void: chat and files catch up after each join
const messageHandlers = new Map(); // message type -> handler (chat, files)
const errorHooks = []; // (msg) => true when a module explained this error itself
const participantHooks = []; // () => void after anyone joins, leaves or changes
const permissionHooks = []; // () => void when our permissions change (the host set our role)
const audioState = { muted: false };
const videoState = { muted: false };

// ---------------------------------------------------------------------------------------------
// Small helpers.

function setState(s) {
  consilium.state = s;
  document.body.dataset.state = s;
}

function setStatus(text) {
  ui.status.textContent = text;
}

function showError(message, { fatal = true, kind = 'error' } = {}) {
  consilium.error = message;
  ui.error.replaceChildren();
  ui.error.className = `banner ${kind}`;
  const text = document.createElement('span');
  text.className = 'banner-text';
  text.textContent = message;
  ui.error.append(text);
  if (!fatal) {
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'banner-close';
    close.setAttribute('aria-label', 'Dismiss message');
    close.textContent = '×';
    close.addEventListener('click', () => { ui.error.hidden = true; });
    ui.error.append(close);
  }
  ui.error.hidden = false;
  if (fatal) setState('error');
}

function show(view) {
  for (const v of [ui.joinView, ui.callView, ui.leftView]) v.hidden = v !== view;
}

function initials(name) {
  const words = String(name || '?').trim().split(/\s+/).filter((w) => !/^(dr|prof)\.?$/i.test(w));
  const picked = words.length > 1 ? [words[0], words[words.length - 1]] : words;
  return picked.map((w) => w[0] || '').join('').toUpperCase() || '?';
}

function decodeJwtPayload(token) {
  // Only read (never trust) the claims, to decide whether to ask for camera and mic.
  try {
    const part = token.split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const padded = b64 + '='.repeat((4 - (b64.length % 4)) % 4);
    return JSON.parse(atob(padded));
  } catch {
    return null;
  }
}

function waitForIceGathering(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', onChange);
      resolve();
    };
    const onChange = () => { if (pc.iceGatheringState === 'complete') done(); };
    // Send whatever has been gathered by then; on loopback/LAN that is always enough.
    const timer = setTimeout(done, ICE_GATHER_TIMEOUT_MS);
    pc.addEventListener('icegatheringstatechange', onChange);
  });
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function isApplePlatform() {
  const ua = navigator.userAgent;
  const iOS = /iPad|iPhone|iPod/.test(ua)
    || (navigator.platform === 'MacIntel' && navigator.maxTouchPoints > 1); // iPadOS
  const safari = /^((?!chrome|chromium|crios|fxios|edg|android).)*safari/i.test(ua);
  return iOS || safari;
}

// ---------------------------------------------------------------------------------------------
// Start-up: URL → token → WebSocket.

async function main() {
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const room = params.get('room');
  const name = params.get('name');
  const role = params.get('role');

  ui.btnMic.addEventListener('click', toggleMic);
  ui.btnCam.addEventListener('click', toggleCam);
  ui.btnLeave.addEventListener('click', () => leave());
  ui.btnRec.addEventListener('click', () => {
    send({ type: consilium.recording.active ? 'stop-recording' : 'start-recording' });
  });
  ui.enableSound.addEventListener('click', enableSound);
  ui.btnEnd.addEventListener('click', async () => {
    const ok = await confirmAction('End the consultation for everyone?',
      'Everyone will be disconnected and nobody can rejoin this consultation.',
      'End consultation');
    if (ok) send({ type: 'end-consultation' });
  });
  window.addEventListener('pagehide', () => {
    if (consilium.state === 'joined') { intentionalClose = true; send({ type: 'leave' }); }
  });
  ui.rejoin.href = location.pathname + location.search;

  if (!token && (!room || !name)) {
    showJoinForm(room);
    return;
  }

  setState('connecting');
  let jwt = token;
  if (!jwt) {
    ui.roomName.textContent = room;
    setStatus('Requesting access…');
    jwt = await fetchDevToken(room, name, role);
    if (!jwt) {
      setStatus('Not connected');
      offerRejoin('Could not join the consultation', '', 'Try again');
      return;
    }
  }
  const claims = decodeJwtPayload(jwt);
  if (claims && Array.isArray(claims.permissions)) tokenPermissions = claims.permissions;
  if (claims && claims.room) ui.roomName.textContent = claims.room;
  connect(jwt);
}

function showJoinForm(room) {
  setState('idle');
  setStatus('');
  show(ui.joinView);
  if (room) $('join-room').value = room;
  ui.joinForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const data = new FormData(ui.joinForm);
    const q = new URLSearchParams({
      room: String(data.get('room')).trim(),
      name: String(data.get('name')).trim(),
      role: String(data.get('role')),
    });
    location.search = q.toString();
  });
  (room ? $('join-name') : $('join-room')).focus();
}

async function fetchDevToken(room, name, role) {
  const q = new URLSearchParams({ room, name });
  if (role) q.set('role', role);
  let resp;
  try {
    resp = await fetch(`/api/dev-token?${q}`, { headers: { Accept: 'application/json' } });
  } catch {
    showError('Cannot reach the Consilium server. Check your connection and reload.');
    return null;
  }
  if (resp.status === 404) {
    showError('This server needs an invitation link (token). '
      + 'Ask the host to send you an invitation link.');
    return null;
  }
  let body = null;
  try { body = await resp.json(); } catch { /* handled below */ }
  if (!resp.ok || !body || typeof body.token !== 'string') {
    const msg = body && body.error && body.error.message;
    showError(`Could not get access to the room${msg ? `: ${msg}` : ` (HTTP ${resp.status})`}.`);
    return null;
  }
  return body.token;
}

function connect(token) {
  joinToken = token;
  if (!reconnect) setStatus('Connecting…');
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const sock = new WebSocket(`${proto}//${location.host}/ws`);
  ws = sock;
  socketGen += 1;
  // Events of a socket we already gave up on (replaced by a newer one) are ignored.
  sock.addEventListener('open', () => {
    if (ws !== sock) return;
    lastHeardAt = Date.now();
    // After a drop, try to get the same session back (media kept); else a full join.
    const resume = reconnect && resumeToken ? { resume: resumeToken } : {};
    send({ type: 'join', version: PROTOCOL_VERSION, token, ...resume });
  });
  sock.addEventListener('message', (ev) => {
    if (ws !== sock) return;
    lastHeardAt = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    handleMessage(msg).catch((err) => {
      console.error('consilium: handling', msg.type, err);
      showError(`Something went wrong: ${err && err.message ? err.message : err}`,
        { fatal: false });
    });
  });
  sock.addEventListener('close', () => {
    if (ws !== sock) return;
    onSocketClosed();
  });
}

function onSocketClosed() {
  clearInterval(pingTimer);
  if (intentionalClose || consilium.state === 'left' || consilium.state === 'error') return;
  if (consilium.self) {
    // We were in the call: the network dropped, not the server's decision. Get back in.
    scheduleReconnect();
    return;
  }
  teardownMedia();
  showError('The connection to the server was closed unexpectedly.');
  setStatus('Disconnected');
  offerRejoin('Connection lost', '', 'Rejoin');
}

function scheduleReconnect() {
  if (!reconnect) {
    reconnect = { attempt: 0, since: Date.now(), timer: null };
    // The peer connections stay: the server keeps our session for a while, and a resume
    // carries on with them. A full rejoin drops them (onJoined).
    clearInterval(pingTimer);
    setState('reconnecting');
    showBanner('Connection lost. Reconnecting…', 'warn');
  }
  clearTimeout(reconnect.timer);
  if (Date.now() - reconnect.since > RECONNECT_GIVE_UP_MS) {
    reconnect = null;
    teardownMedia();
    showError('The connection to the server was lost and could not be restored. '
      + 'Check your network, then rejoin.');
    setStatus('Disconnected');
    offerRejoin('Connection lost', '', 'Rejoin');
    return;
  }
  const delay = Math.min(1000 * 2 ** reconnect.attempt, RECONNECT_MAX_DELAY_MS);
  reconnect.attempt += 1;
  setStatus(`Reconnecting… (attempt ${reconnect.attempt})`);
  reconnect.timer = setTimeout(() => connect(joinToken), delay);
}

// The network came back: try now rather than at the end of the back-off.
window.addEventListener('online', () => {
  if (reconnect && (!ws || ws.readyState !== WebSocket.CONNECTING)) {
    clearTimeout(reconnect.timer);
    connect(joinToken);
  }
});

// A socket can die without a close event (a NAT forgets it, a phone changes network): if the
// server has said nothing for too long, drop it ourselves.
setInterval(() => {
  if (consilium.state !== 'joined' || !ws || Date.now() - lastHeardAt < SILENCE_LIMIT_MS) return;
  const dead = ws;
  ws = null;
  try { dead.close(4000, 'silent'); } catch { /* already closing */ }
  onSocketClosed();
}, 5000);

// A warning banner without a close button (replaced when the situation changes).
function showBanner(message, kind) {
  ui.error.replaceChildren();
  ui.error.className = `banner ${kind}`;
  const text = document.createElement('span');
  text.className = 'banner-text';
  text.textContent = message;
  ui.error.append(text);
  ui.error.hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Protocol messages.

async function handleMessage(msg) {
  const extra = messageHandlers.get(msg.type);
  if (extra) return extra(msg);
  switch (msg.type) {
    case 'joined': return onJoined(msg);
    case 'publish-answer':
      if (pubPc) await pubPc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      return undefined;
    case 'subscribe-offer': {
      // Chain so that offers are applied strictly in arrival order.
      const gen = socketGen;
      negotiation = negotiation.then(() => onSubscribeOffer(msg, gen)).catch((err) => {
        console.error('consilium: subscribe negotiation', err);
        showError('Could not receive the other participants\' media.', { fatal: false });
      });
      return negotiation;
    }
    case 'participant-joined':
    case 'participant-updated':
      upsertParticipant(msg.participant);
      return undefined;
    case 'participant-left':
      removeParticipant(msg.participantId);
      return undefined;
    case 'error': return onServerError(msg);
    case 'removed': return onRemoved(msg);
    case 'muted-by-host': return onMutedByHost();
    case 'role-changed': return onRoleChanged(msg);
    case 'consultation-ended':
      consilium.endedBy = msg.by || null;
      // Everyone hears this first; the server's per-person teardown (and `removed`) follows
      // and can take a while in a busy room, so the page shows the end at once.
      return onRemoved({ reason: 'consultation-ended' });
    case 'pong': return undefined;
    case 'publisher-layers': return onPublisherLayers(msg);
    case 'recording': return applyRecording(msg);
    case 'downlink-stats':
      consilium.downlinkStats = msg;
      renderDebug();
      return undefined;
    default:
      // New message types may appear within v1; ignoring them is the documented rule.
      return undefined;
  }
}

async function onJoined(msg) {
  const rejoin = reconnect !== null;
  const resumed = rejoin && msg.resumed === true;
  if (rejoin) {
    clearTimeout(reconnect.timer);
    reconnect = null;
    consilium.reconnects += 1;
    if (resumed) consilium.resumes += 1;
    // Not resumed: a new session on the server, so new peer connections here.
    else dropCallConnections();
  }
  resumeToken = typeof msg.resumeToken === 'string' ? msg.resumeToken : null;
  iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
  consilium.self = msg.self;
  consilium.room = msg.room;
  setState('joined');
  ui.roomName.textContent = msg.room;
  show(ui.callView);
  ui.error.hidden = true;
  consilium.error = null;
  clearInterval(pingTimer);
  pingTimer = setInterval(() => send({ type: 'ping' }), PING_INTERVAL_MS);

  // After a rejoin the server's list is the truth: drop whoever left while we were away.
  const present = new Set((msg.participants || []).map((p) => p.id));
  for (const id of [...participants.keys()]) if (!present.has(id)) removeParticipant(id);
  for (const p of msg.participants || []) {
    if (p.id !== msg.self.id) upsertParticipant(p);
  }
  renderSelf();
  updateStatus();

  // The server may list effective permissions in self; otherwise fall back to role and token.
  const perms = Array.isArray(msg.self.permissions) ? msg.self.permissions : tokenPermissions;
  ui.btnRec.hidden = !(perms ? perms.includes('record') : msg.self.role === 'host');
  selfPermissions = perms || (msg.self.role === 'host' ? ['admin'] : []);
  ui.btnEnd.hidden = !isAdmin();
  for (const p of participants.values()) renderTile(p);
  applyRecording(msg.recording || { active: false });
  const canPublish = perms === null ? msg.self.role !== 'observer' : perms.includes('publish');
  for (const hook of joinedHooks) {
    try { hook(msg, rejoin); } catch (err) { console.error('consilium: join hook', err); }
  }
  ui.btnMic.hidden = !canPublish;
  ui.btnCam.hidden = !canPublish;
  // Resumed: our publishing connection still feeds the same session.
  if (resumed && pubPc) return;
  if (canPublish) await startPublishing();
  else {
    ui.selfView.hidden = true;
    ui.btnMic.hidden = true;
    ui.btnCam.hidden = true;
  }
}

function onServerError(msg) {
  if (!msg.fatal && consilium.state === 'joined' && errorHooks.some((hook) => hook(msg))) return;
  const human = ERROR_MESSAGES[msg.code];
  const text = human
    ? `${human}${msg.code === 'room-full' || !msg.message ? '' : ` (${msg.message})`}`
    : `Server error (${msg.code}): ${msg.message || 'no details'}`;
  // Before `joined` any refusal ends the attempt, whether or not the server marks it fatal.
  if (msg.fatal || consilium.state === 'connecting' || consilium.state === 'reconnecting') {
    intentionalClose = true;
    if (reconnect) { clearTimeout(reconnect.timer); reconnect = null; }
    teardownMedia();
    if (ws) ws.close(1000, 'error');
    showError(text);
    setStatus('Not connected');
    offerRejoin(consilium.self ? 'Disconnected' : 'Could not join the consultation', '',
      'Try again', { allowRejoin: msg.code !== 'room-ended' && msg.code !== 'forbidden' });
  } else {
    showError(text, { fatal: false });
  }
}

function onRemoved(msg) {
  if (consilium.state === 'left') return; // `removed` after `consultation-ended`: shown already
  intentionalClose = true;
  const text = REMOVED_MESSAGES[msg.reason] || `You were removed from the consultation (${msg.reason}).`;
  teardownMedia();
  setState('left');
  consilium.error = text;
  ui.error.className = 'banner error';
  ui.error.textContent = text;
  ui.error.hidden = false;
  setStatus('Not connected');
  const ended = msg.reason === 'room-closed' || msg.reason === 'consultation-ended';
  // Neither a removed participant nor anyone in an ended consultation may come back in.
  const final = msg.reason === 'removed-by-host' || msg.reason === 'consultation-ended';
  offerRejoin(ended ? 'The consultation has ended' : 'You were removed', text, 'Rejoin',
    { allowRejoin: !final });
}

// The host silenced our microphone: show it muted; unmuting is still ours to do.
function onMutedByHost() {
  if (localStream) for (const t of localStream.getAudioTracks()) t.enabled = false;
  audioState.muted = true;
  renderSelf();
  showError('The host muted your microphone. Press Mute again when you want to speak.',
    { fatal: false, kind: 'warn' });
}

// The host gave us another role: its permissions replace ours at once.
async function onRoleChanged(msg) {
  const before = selfPermissions;
  selfPermissions = Array.isArray(msg.permissions) ? msg.permissions : [];
  if (consilium.self) consilium.self = { ...consilium.self, role: msg.role, permissions: selfPermissions };
  renderSelf();
  ui.btnRec.hidden = !selfPermissions.includes('record');
  ui.btnEnd.hidden = !isAdmin();
  for (const p of participants.values()) renderTile(p);
  for (const hook of permissionHooks) hook();
  updateStatus();
  const label = ROLE_LABELS[msg.role] || msg.role;
  showError(`The host changed your role to ${label}.`, { fatal: false, kind: 'warn' });
  const could = before.includes('publish');
  const can = selfPermissions.includes('publish');
  if (could && !can) {
    // The server no longer forwards our media: stop the camera rather than pretend.
    if (pubPc) { pubPc.close(); pubPc = null; }
    if (localStream) for (const t of localStream.getTracks()) t.stop();
    localStream = null;
    mediaTried = false;
    ui.selfView.hidden = true;
    ui.btnMic.hidden = true;
    ui.btnCam.hidden = true;
  } else if (!could && can) {
    ui.btnMic.hidden = false;
    ui.btnCam.hidden = false;
    await startPublishing();
  }
}

function isAdmin() {
  return selfPermissions.includes('admin');
}

// A modal yes/no question (a <dialog>, so it is keyboard-accessible and testable).
function confirmAction(title, text, okLabel) {
  const dlg = ui.confirmDialog;
  ui.confirmTitle.textContent = title;
  ui.confirmText.textContent = text;
  ui.confirmOk.textContent = okLabel;
  return new Promise((resolve) => {
    const done = () => {
      dlg.removeEventListener('close', done);
      resolve(dlg.returnValue === 'ok');
    };
    dlg.returnValue = '';
    dlg.addEventListener('close', done);
    dlg.showModal();
  });
}

async function hostRemove(p) {
  const ok = await confirmAction(`Remove ${p.name}?`,
    `${p.name} will be disconnected and cannot rejoin this consultation.`, 'Remove');
  if (ok) send({ type: 'remove-participant', participantId: p.id });
}

// ---------------------------------------------------------------------------------------------
// Publishing: our camera and mic, client-offered, send-only.

async function startPublishing() {
  // A rejoin after a dropped connection keeps the camera running and asks for nothing again.
  const fresh = !mediaTried;
  if (fresh) {
    mediaTried = true;
    localStream = await getLocalMedia();
  }
  if (!localStream) {
    ui.btnMic.disabled = true;
    ui.btnCam.disabled = true;
    renderSelf();
    // Receive-only: show the others a muted mic and camera-off rather than a silent tile.
    sendMute('audio', true);
    sendMute('video', true);
    return;
  }
  if (fresh) watchTrackEnds();
  await publishLocalStream();
}

function watchTrackEnds() {
  for (const track of localStream.getTracks()) {
    track.addEventListener('ended', () => {
      // Unplugged device, revoked permission or the OS took the camera away.
      if (consilium.state !== 'joined') return;
      const what = track.kind === 'audio' ? 'microphone' : 'camera';
      showError(`Your ${what} stopped working; others can no longer ${
        track.kind === 'audio' ? 'hear' : 'see'} you. Rejoin to try again.`,
      { fatal: false, kind: 'warn' });
      sendMute(track.kind, true);
    });
  }
}

async function publishLocalStream() {
  if (pubPc) pubPc.close();
  ui.selfVideo.srcObject = localStream;
  ui.selfVideo.play().catch(() => { /* muted self-view: autoplay is allowed */ });
  ui.btnMic.disabled = localStream.getAudioTracks().length === 0;
  ui.btnCam.disabled = localStream.getVideoTracks().length === 0;
  renderSelf();

  pubPc = newPeerConnection();
  pubPc.addEventListener('connectionstatechange', () => {
    if (pubPc && pubPc.connectionState === 'failed') {
      showError('Your camera and microphone could not reach the server (network blocked?).',
        { fatal: false });
    }
  });
  for (const track of localStream.getTracks()) {
    const tr = addPublishTransceiver(track);
    if (track.kind === 'video') preferVideoCodec(tr);
  }
  const offer = await pubPc.createOffer();
  await pubPc.setLocalDescription(offer);
  await waitForIceGathering(pubPc);
  send({ type: 'publish', sdp: pubPc.localDescription.sdp });
  // Tell the others about devices we do not have (or have muted: a rejoined session starts
  // unmuted on the server), so their tiles show it.
  if (localStream.getAudioTracks().length === 0 || audioState.muted) sendMute('audio', true);
  if (localStream.getVideoTracks().length === 0 || videoState.muted) sendMute('video', true);
}

// Simulcast: the camera is sent as up to three encodings (1/4, 1/2 and full size), lowest
// first, so the server can give each viewer the one that fits their link and tile. Small
// cameras get fewer layers; a browser that refuses encodings sends one stream.
const SIMULCAST_LAYERS = [
  // The lowest layer is what a phone on a bad cellular link gets: 15 fps keeps it small
  // enough (about 100 kbit/s) to fit next to audio in a 300 kbit/s link.
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 100000, maxFramerate: 15 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];

function simulcastEncodings(track) {
  if (params.get('simulcast') === '0') return null;
  const height = (track.getSettings && track.getSettings().height) || 0;
  if (height >= 540) return SIMULCAST_LAYERS.map((e) => ({ ...e }));
  if (height >= 270) {
    return [
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 300000 },
      { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 900000 },
    ];
  }
  return null;
}

function addPublishTransceiver(track) {
  const init = { direction: 'sendonly', streams: [localStream] };
  const encodings = track.kind === 'video' ? simulcastEncodings(track) : null;
  if (encodings) {
    try {
      const tr = pubPc.addTransceiver(track, { ...init, sendEncodings: encodings });
      consilium.publishedLayers = encodings.map((e) => e.rid);
      return tr;
    } catch (err) {
      console.warn('consilium: simulcast refused, sending one layer', err);
    }
  }
  consilium.publishedLayers = [];
  return pubPc.addTransceiver(track, init);
}

// Dynacast: the server says which of our encodings anyone watches; the rest stop encoding.
async function onPublisherLayers(msg) {
  if (!pubPc || !Array.isArray(msg.active)) return;
  consilium.activeLayers = msg.active;
  for (const tr of pubPc.getTransceivers()) {
    if (String(tr.mid) !== String(msg.mid) || !tr.sender || !tr.sender.track) continue;
    const p = tr.sender.getParameters();
    if (!p.encodings || p.encodings.length < 2) return;
    let changed = false;
    for (const e of p.encodings) {
      const on = msg.active.includes(e.rid);
      if (e.active !== on) { e.active = on; changed = true; }
    }
    if (changed) await tr.sender.setParameters(p);
  }
}

async function getLocalMedia() {
  const video = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
  const attempts = [
    { audio: true, video },
    { audio: false, video },
    { audio: true, video: false },
  ];
  let lastErr = null;
  for (const constraints of attempts) {
    try {
      const stream = await navigator.mediaDevices.getUserMedia(constraints);
      if (!constraints.audio) {
        showError('Microphone unavailable: others will not hear you.', { fatal: false, kind: 'warn' });
      } else if (!constraints.video) {
        showError('Camera unavailable: others will not see you.', { fatal: false, kind: 'warn' });
      }
      return stream;
    } catch (err) {
      lastErr = err;
      // A denied permission applies to every attempt; do not prompt again.
      if (err && (err.name === 'NotAllowedError' || err.name === 'SecurityError')) break;
    }
  }
  const why = !navigator.mediaDevices ? 'this page is not served over HTTPS'
    : lastErr && lastErr.name === 'NotAllowedError' ? 'access was denied'
      : lastErr && lastErr.name === 'NotFoundError' ? 'no camera or microphone was found'
        : lastErr && lastErr.name === 'NotReadableError' ? 'the device is in use by another app'
          : (lastErr && lastErr.message) || 'unknown reason';
  showError(`Camera and microphone unavailable (${why}). `
    + 'You joined receive-only: you can see and hear others, but they cannot see or hear you.',
  { fatal: false, kind: 'warn' });
  return null;
}

function preferVideoCodec(transceiver) {
  if (typeof transceiver.setCodecPreferences !== 'function') return;
  const caps = (RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities('video'))
    || (RTCRtpReceiver.getCapabilities && RTCRtpReceiver.getCapabilities('video'));
  if (!caps || !caps.codecs) return;
  // iPhones decode VP8 in software, so Apple devices get H264 first; everyone else VP8.
  const want = isApplePlatform() ? 'video/h264' : 'video/vp8';
  const rank = (c) => {
    const mime = c.mimeType.toLowerCase();
    if (mime !== want) return 2;
    if (mime === 'video/h264') {
      // The server's H264 is packetization-mode 1, constrained baseline.
      const fmtp = c.sdpFmtpLine || '';
      const pm1 = /packetization-mode=1/.test(fmtp);
      const cb = /profile-level-id=42e0/i.test(fmtp);
      return pm1 && cb ? 0 : pm1 ? 0.5 : 1;
    }
    return 0;
  };
  const codecs = caps.codecs.map((c, i) => ({ c, i }))
    .sort((a, b) => rank(a.c) - rank(b.c) || a.i - b.i)
    .map((x) => x.c);
  if (rank(codecs[0]) >= 2) return; // preferred codec not available: keep the default order
  try {
    transceiver.setCodecPreferences(codecs);
  } catch (err) {
    console.warn('consilium: setCodecPreferences failed', err);
  }
}

function sendMute(kind, muted) {
  send({ type: 'mute', kind, muted });
}

function toggleMic() {
  if (!localStream) return;
  audioState.muted = !audioState.muted;
  for (const t of localStream.getAudioTracks()) t.enabled = !audioState.muted;
  sendMute('audio', audioState.muted);
  renderSelf();
}

function toggleCam() {
  if (!localStream) return;
  videoState.muted = !videoState.muted;
  for (const t of localStream.getVideoTracks()) t.enabled = !videoState.muted;
  sendMute('video', videoState.muted);
  renderSelf();
}

function renderSelf() {
  const self = consilium.self;
  if (!self) return;
  const hasVideo = !!localStream && localStream.getVideoTracks().length > 0;
  const hasAudio = !!localStream && localStream.getAudioTracks().length > 0;
  // Hidden for anyone who may not publish (observers, or a role the host changed).
  ui.selfView.hidden = selfPermissions.length > 0 && !selfPermissions.includes('publish');
  ui.selfName.textContent = `${self.name} (you)`;
  ui.selfInitials.textContent = initials(self.name);
  ui.selfRole.textContent = ROLE_LABELS[self.role] || self.role;
  ui.selfRole.dataset.role = self.role;
  ui.selfView.classList.toggle('video-off', !hasVideo || videoState.muted);
  ui.selfView.classList.toggle('audio-off', !hasAudio || audioState.muted);

  // Toggle buttons keep one name; aria-pressed (and the red style) carries the state.
  ui.btnMic.setAttribute('aria-pressed', String(audioState.muted));
  ui.btnMic.title = audioState.muted ? 'Microphone is muted: press to unmute' : 'Mute microphone';
  ui.btnCam.setAttribute('aria-pressed', String(videoState.muted));
  ui.btnCam.title = videoState.muted ? 'Camera is off: press to turn it on' : 'Turn camera off';
}

// ---------------------------------------------------------------------------------------------
// Subscribing: the server offers everyone else's media; we answer, receive-only.

function ensureSubPc() {
  if (subPc) return subPc;
  subPc = newPeerConnection();
  subPc.addEventListener('track', (ev) => {
    const mid = ev.transceiver && ev.transceiver.mid;
    // A remote track starts muted until its first packets arrive; re-render on both edges.
    ev.track.addEventListener('unmute', () => attachTracks());
    ev.track.addEventListener('mute', () => attachTracks());
    if (mid != null) attachTracks();
  });
  subPc.addEventListener('connectionstatechange', () => {
    if (subPc && subPc.connectionState === 'failed') {
      showError('Could not receive media from the server (network blocked?).', { fatal: false });
    }
    updateStatus();
  });
  return subPc;
}

function newPeerConnection() {
  consilium.peerConnectionsCreated += 1;
  return new RTCPeerConnection({ iceServers });
}

async function onSubscribeOffer(msg, gen) {
  if (consilium.state !== 'joined') return;
  const pc = ensureSubPc();
  tracksByMid.clear();
  for (const t of msg.tracks || []) tracksByMid.set(String(t.mid), t);
  await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
  const answer = await pc.createAnswer();
  await pc.setLocalDescription(answer);
  await waitForIceGathering(pc);
  // The offer came on a socket that has since dropped: the server sends it again on resume,
  // and it is that copy that gets the answer.
  if (gen === socketGen) send({ type: 'subscribe-answer', sdp: pc.localDescription.sdp });
  attachTracks();
}

// Rebuild each tile's MediaStream from the transceivers whose mid the latest offer assigns
// to that participant. Doing it from scratch each time also covers reused m-lines.
function attachTracks() {
  if (!subPc) return;
  const byParticipant = new Map();
  for (const tr of subPc.getTransceivers()) {
    if (tr.mid == null || tr.currentDirection === 'inactive' || tr.stopped) continue;
    const info = tracksByMid.get(String(tr.mid));
    if (!info) continue;
    const list = byParticipant.get(info.participantId) || [];
    list.push(tr.receiver.track);
    byParticipant.set(info.participantId, list);
  }
  for (const [pid, p] of participants) {
    const tile = ensureTile(p);
    const video = tile.querySelector('video');
    const tracks = byParticipant.get(pid) || [];
    const current = video.srcObject ? video.srcObject.getTracks() : [];
    const same = current.length === tracks.length && tracks.every((t) => current.includes(t));
    if (!same) {
      video.srcObject = tracks.length ? new MediaStream(tracks) : null;
      if (tracks.length) playVideo(video);
    }
    tile.dataset.hasVideo = String(tracks.some((t) => t.kind === 'video' && !t.muted));
    renderTile(p);
  }
}

function playVideo(video) {
  video.muted = soundBlocked;
  video.play().catch((err) => {
    if (err && err.name === 'NotAllowedError') {
      // Autoplay with sound needs a user gesture: play muted now, offer a button for sound.
      soundBlocked = true;
      video.muted = true;
      ui.enableSound.hidden = false;
      video.play().catch(() => { /* retried when the user taps the button */ });
    }
  });
}

function enableSound() {
  soundBlocked = false;
  ui.enableSound.hidden = true;
  for (const v of ui.tiles.querySelectorAll('video')) {
    v.muted = false;
    v.play().catch(() => { /* still blocked: keep the button */ ui.enableSound.hidden = false; });
  }
}

async function inboundVideoStats() {
  if (!subPc) return [];
  const out = [];
  for (const tr of subPc.getTransceivers()) {
    if (tr.mid == null || tr.receiver.track.kind !== 'video') continue;
    const info = tracksByMid.get(String(tr.mid));
    if (!info) continue;
    const report = await tr.receiver.getStats();
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'video') {
        const codec = s.codecId ? report.get(s.codecId) : null;
        out.push({
          participantId: info.participantId,
          mid: String(tr.mid),
          codec: codec ? codec.mimeType : null,
          framesDecoded: s.framesDecoded || 0,
          frameWidth: s.frameWidth || 0,
          frameHeight: s.frameHeight || 0,
          bytesReceived: s.bytesReceived || 0,
          packetsLost: s.packetsLost || 0,
          freezeCount: s.freezeCount || 0,
          totalFreezesDuration: s.totalFreezesDuration || 0,
          keyFramesDecoded: s.keyFramesDecoded || 0,
          pliCount: s.pliCount || 0,
          nackCount: s.nackCount || 0,
        });
      }
    });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Viewport reports: the size each remote tile is drawn at and whether it is seen at all. The
// server picks each video's simulcast layer from it, and pauses videos nobody can see.

const tileIntersecting = new Map(); // participantId -> bool (IntersectionObserver)
let viewportTimer = null;
const tileIntersection = 'IntersectionObserver' in window
  ? new IntersectionObserver((entries) => {
    for (const e of entries) tileIntersecting.set(e.target.dataset.participantId, e.isIntersecting);
    scheduleViewport();
  }) : null;
const tileResize = 'ResizeObserver' in window ? new ResizeObserver(() => scheduleViewport()) : null;
document.addEventListener('visibilitychange', () => scheduleViewport());
window.addEventListener('resize', () => scheduleViewport());

function observeTile(tile) {
  if (tileIntersection) tileIntersection.observe(tile);
  if (tileResize) tileResize.observe(tile);
}

function scheduleViewport() {
  if (viewportTimer) return;
  viewportTimer = setTimeout(() => { viewportTimer = null; reportViewport(false); }, 250);
}

function reportViewport(force) {
  if (consilium.state !== 'joined' || !ws || ws.readyState !== WebSocket.OPEN) return;
  const dpr = window.devicePixelRatio || 1;
  const pageVisible = document.visibilityState !== 'hidden';
  const tiles = [];
  for (const pid of participants.keys()) {
    const tile = tileFor(pid);
    if (!tile) continue;
    const rect = tile.querySelector('video').getBoundingClientRect();
    const visible = pageVisible && rect.width > 0 && rect.height > 0
      && tileIntersecting.get(pid) !== false;
    tiles.push({
      participantId: pid,
      width: Math.round(rect.width * dpr),
      height: Math.round(rect.height * dpr),
      visible,
      pinned: tile.classList.contains('pinned'),
    });
  }
  const text = JSON.stringify(tiles);
  if (!force && text === JSON.stringify(consilium.lastViewport)) return;
  consilium.lastViewport = tiles;
  send({ type: 'viewport', tiles });
}

// Debug overlay (?debug=1, or press Shift+D): each tile shows the server's layer choice.
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'D' && ev.shiftKey && !(ev.target instanceof HTMLInputElement)) {
    consilium.debug = !consilium.debug;
    renderDebug();
  }
});

function kbps(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

function renderDebug() {
  const stats = consilium.downlinkStats;
  for (const tile of ui.tiles.querySelectorAll('.tile')) {
    const el = tile.querySelector('.debug');
    if (!el) continue;
    el.hidden = !consilium.debug || !stats;
    if (el.hidden) continue;
    const t = (stats.tracks || []).find((x) => x.participantId === tile.dataset.participantId);
    const layer = (n) => (n === null || n === undefined ? '–' : String(n));
    el.textContent = t ? [
      `layer ${layer(t.current)} → ${layer(t.target)} (wants ${layer(t.preferred)})`,
      t.pauseReason ? `paused: ${t.pauseReason}` : `${t.switches} switches`,
      `downlink ${kbps(stats.estimateBps)} (${stats.feedback || 'no feedback'})`,
    ].join('\n') : `downlink ${kbps(stats.estimateBps)}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Participant tiles.

function upsertParticipant(p) {
  if (!p || !p.id) return;
  if (consilium.self && p.id === consilium.self.id) {
    consilium.self = p;
    renderSelf();
    return;
  }
  participants.set(p.id, p);
  ensureTile(p);
  renderTile(p);
  updateStatus();
  for (const hook of participantHooks) hook();
}

function removeParticipant(id) {
  const gone = tileFor(id);
  if (gone && gone.classList.contains('pinned')) ui.tiles.classList.remove('has-pinned');
  participants.delete(id);
  tileIntersecting.delete(id);
  scheduleViewport();
  const tile = tileFor(id);
  if (tile) {
    const v = tile.querySelector('video');
    if (v) v.srcObject = null;
    tile.remove();
  }
  updateStatus();
  for (const hook of participantHooks) hook();
}

function tileFor(id) {
  return ui.tiles.querySelector(`.tile[data-participant-id="${CSS.escape(id)}"]`);
}

function ensureTile(p) {
  let tile = tileFor(p.id);
  if (tile) return tile;
  tile = document.createElement('div');
  tile.className = 'tile';
  tile.dataset.participantId = p.id;
  tile.dataset.hasVideo = 'false';
  tile.innerHTML = `
    <video playsinline autoplay></video>
    <div class="avatar" aria-hidden="true"><span class="initials"></span></div>
    <div class="label">
      <span class="name"></span>
      <span class="badge"></span>
      <span class="indicator mic-off" title="Microphone muted">
        <svg viewBox="0 0 24 24" aria-hidden="true"><use href="#i-mic-off"/></svg>
      </span>
      <span class="indicator cam-off" title="Camera off">
        <svg viewBox="0 0 24 24" aria-hidden="true"><use href="#i-cam-off"/></svg>
      </span>
    </div>
    <div class="host-actions" hidden>
      <select class="host-role"></select>
      <button type="button" class="host-mute">Mute</button>
      <button type="button" class="host-remove">Remove</button>
    </div>
    <div class="conn-state" hidden>Reconnecting…</div>
    <pre class="debug" hidden></pre>`;
  const muteBtn = tile.querySelector('.host-mute');
  const removeBtn = tile.querySelector('.host-remove');
  const roleSelect = tile.querySelector('.host-role');
  for (const [role, label] of Object.entries(ROLE_LABELS)) {
    roleSelect.append(new Option(label, role));
  }
  // Controls live inside the clickable tile: keep their clicks from pinning it.
  for (const b of [muteBtn, removeBtn, roleSelect]) {
    b.addEventListener('keydown', (ev) => ev.stopPropagation());
    b.addEventListener('click', (ev) => ev.stopPropagation());
  }
  roleSelect.addEventListener('change', () => {
    // The tile shows the new role once the server confirms it (participant-updated).
    send({ type: 'set-role', participantId: p.id, role: roleSelect.value });
    roleSelect.value = (participants.get(p.id) || p).role;
  });
  muteBtn.addEventListener('click', (ev) => {
    ev.stopPropagation();
    send({ type: 'mute-participant', participantId: p.id });
  });
  removeBtn.addEventListener('click', (ev) => {
    ev.stopPropagation();
    hostRemove(participants.get(p.id) || p);
  });
  tile.tabIndex = 0;
  tile.title = 'Click to pin (large, best quality); click again to unpin';
  tile.addEventListener('click', () => togglePin(tile));
  tile.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') togglePin(tile); });
  ui.tiles.append(tile);
  observeTile(tile);
  scheduleViewport();
  return tile;
}

// Pinning: one tile fills the stage and its video gets priority for bandwidth; the others
// shrink to a strip (the server gives them small layers).
function togglePin(tile) {
  const pin = !tile.classList.contains('pinned');
  for (const t of ui.tiles.querySelectorAll('.tile.pinned')) t.classList.remove('pinned');
  tile.classList.toggle('pinned', pin);
  ui.tiles.classList.toggle('has-pinned', pin);
  scheduleViewport();
}

function renderTile(p) {
  const tile = tileFor(p.id);
  if (!tile) return;
  // Video state comes from what actually arrives; the flags add the sender's own choice.
  const audioOff = !!p.audioMuted || p.role === 'observer';
  const videoOff = !!p.videoMuted || tile.dataset.hasVideo !== 'true';
  tile.querySelector('.name').textContent = p.name;
  tile.querySelector('.initials').textContent = initials(p.name);
  const badge = tile.querySelector('.badge');
  badge.textContent = ROLE_LABELS[p.role] || p.role;
  badge.dataset.role = p.role;
  tile.classList.toggle('audio-off', audioOff);
  tile.classList.toggle('video-off', videoOff);
  // Their signaling dropped; the server keeps them (and their media) while they come back.
  const away = p.connection === 'reconnecting';
  tile.classList.toggle('reconnecting', away);
  tile.querySelector('.conn-state').hidden = !away;
  const actions = tile.querySelector('.host-actions');
  actions.hidden = !isAdmin();
  const muteBtn = actions.querySelector('.host-mute');
  muteBtn.disabled = audioOff;
  muteBtn.textContent = audioOff ? 'Muted' : 'Mute';
  muteBtn.setAttribute('aria-label', audioOff ? `${p.name} is muted` : `Mute ${p.name}`);
  actions.querySelector('.host-remove').setAttribute('aria-label', `Remove ${p.name}`);
  const roleSelect = actions.querySelector('.host-role');
  roleSelect.value = p.role;
  roleSelect.setAttribute('aria-label', `Role of ${p.name}`);
  const states = [audioOff ? 'microphone muted' : null, videoOff ? 'camera off' : null]
    .filter(Boolean).join(', ');
  tile.setAttribute('role', 'group');
  tile.setAttribute('aria-label',
    `${p.name}, ${ROLE_LABELS[p.role] || p.role}${states ? `, ${states}` : ''}${
      away ? ', reconnecting' : ''}`);
}

function updateStatus() {
  const n = participants.size;
  ui.stage.classList.toggle('alone', n === 0);
  ui.stage.dataset.count = String(Math.min(n, 9));
  if (consilium.state !== 'joined') return;
  const conn = subPc ? subPc.connectionState : 'new';
  const others = n === 0 ? 'no one else yet' : n === 1 ? '1 other participant'
    : `${n} other participants`;
  const watching = consilium.self && consilium.self.role === 'observer' ? 'Observing' : 'In call';
  setStatus(`${conn === 'connecting' ? 'Connecting media · ' : ''}${watching} · ${others}`);
}

// ---------------------------------------------------------------------------------------------
// Leaving.

function applyRecording(state) {
  consilium.recording = {
    active: Boolean(state.active),
    startedAt: state.startedAt ?? null,
    startedBy: state.startedBy ?? null,
  };
  const { active, startedBy } = consilium.recording;
  ui.recBadge.hidden = !active;
  ui.recBadge.title = active
    ? `This consultation is being recorded${startedBy ? ` (started by ${startedBy})` : ''}`
    : '';
  ui.btnRec.setAttribute('aria-pressed', String(active));
  ui.btnRec.setAttribute('aria-label', active ? 'Stop recording' : 'Start recording');
  ui.btnRec.querySelector('.txt').textContent = active ? 'Stop rec' : 'Record';
  clearInterval(recTimer);
  recTimer = null;
  if (active) {
    renderRecTime();
    recTimer = setInterval(renderRecTime, 1000);
  }
}

function renderRecTime() {
  const started = consilium.recording.startedAt;
  const s = started ? Math.max(0, Math.floor(Date.now() / 1000 - started)) : 0;
  const h = Math.floor(s / 3600);
  const mm = String(Math.floor((s % 3600) / 60));
  const ss = String(s % 60).padStart(2, '0');
  ui.recTime.textContent = h ? `${h}:${mm.padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

// The peer connections die with the signaling session; the camera keeps running for the rejoin.
function dropCallConnections() {
  clearInterval(pingTimer);
  if (pubPc) { pubPc.close(); pubPc = null; }
  if (subPc) { subPc.close(); subPc = null; }
  tracksByMid.clear();
  negotiation = Promise.resolve();
  for (const v of ui.tiles.querySelectorAll('video')) v.srcObject = null;
  for (const tile of ui.tiles.querySelectorAll('.tile')) tile.dataset.hasVideo = 'false';
  for (const p of participants.values()) renderTile(p);
}

function teardownMedia() {
  if (reconnect) { clearTimeout(reconnect.timer); reconnect = null; }
  clearInterval(pingTimer);
  clearInterval(recTimer);
  ui.recBadge.hidden = true;
  if (pubPc) { pubPc.close(); pubPc = null; }
  if (subPc) { subPc.close(); subPc = null; }
  if (localStream) { for (const t of localStream.getTracks()) t.stop(); localStream = null; }
  ui.selfVideo.srcObject = null;
  for (const v of ui.tiles.querySelectorAll('video')) v.srcObject = null;
  ui.enableSound.hidden = true;
}

function leave() {
  intentionalClose = true;
  send({ type: 'leave' });
  teardownMedia();
  if (ws) ws.close(1000, 'leave');
  ui.error.hidden = true;
  consilium.error = null;
  setState('left');
  setStatus('Not connected');
  offerRejoin('You left the consultation', 'You can rejoin with the same link.');
}

function offerRejoin(title, detail, linkText = 'Rejoin', { allowRejoin = true } = {}) {
  ui.leftTitle.textContent = title;
  ui.leftDetail.textContent = detail;
  ui.leftDetail.hidden = !detail;
  ui.rejoin.textContent = linkText;
  ui.rejoin.hidden = !allowRejoin;
  participants.clear();
  ui.tiles.replaceChildren();
  ui.btnEnd.hidden = true;
  if (ui.confirmDialog.open) ui.confirmDialog.close();
  show(ui.leftView);
  if (allowRejoin) ui.rejoin.focus();
}

// ---------------------------------------------------------------------------------------------
// The side panel: chat and shared files (a column beside the videos; a sheet on phones).

function panelOpen() {
  return !ui.sidePanel.hidden;
}

function setPanel(open, tab) {
  ui.sidePanel.hidden = !open;
  ui.btnChat.setAttribute('aria-expanded', String(open));
  document.body.classList.toggle('panel-open', open);
  if (tab) selectTab(tab);
  scheduleViewport(); // the tiles change size
  if (open) {
    const log = document.getElementById('chat-log');
    log.scrollTop = log.scrollHeight;
  }
  chat.receiptsNow();
}

function selectTab(tab) {
  const chatTab = tab === 'chat';
  ui.tabChat.setAttribute('aria-selected', String(chatTab));
  ui.tabFiles.setAttribute('aria-selected', String(!chatTab));
  ui.chatPane.hidden = !chatTab;
  ui.filesPane.hidden = chatTab;
  chat.receiptsNow();
}

const workspace = {
  send,
  on: (type, fn) => messageHandlers.set(type, fn),
  onJoined: (fn) => joinedHooks.push(fn),
  onError: (fn) => errorHooks.push(fn),
  onParticipantsChanged: (fn) => participantHooks.push(fn),
  onPermissionsChanged: (fn) => permissionHooks.push(fn),
  self: () => consilium.self,
  participants,
  permissions: () => selfPermissions,
  token: () => joinToken,
  room: () => consilium.room,
  connected: () => consilium.state === 'joined' && !!ws && ws.readyState === WebSocket.OPEN,
  inCall: () => consilium.state === 'joined' || consilium.state === 'reconnecting',
  chatVisible: () => panelOpen() && !ui.chatPane.hidden,
  openPanel: () => { if (!panelOpen()) setPanel(true); },
  roleLabel: (role) => ROLE_LABELS[role] || role,
  showError,
  shareFiles: (ids) => chat.shareFiles(ids),
};
const chat = initChat(workspace);
initFiles(workspace);

ui.btnChat.addEventListener('click', () => setPanel(!panelOpen(), panelOpen() ? null : 'chat'));
ui.sideClose.addEventListener('click', () => setPanel(false));
ui.tabChat.addEventListener('click', () => selectTab('chat'));
ui.tabFiles.addEventListener('click', () => selectTab('files'));
// Wide screens start with the chat open beside the videos; phones keep the videos full-screen.
if (window.matchMedia('(min-width: 1000px)').matches) setPanel(true, 'chat');

main().catch((err) => {
  console.error('consilium: start-up failed', err);
  showError(`Could not start: ${err && err.message ? err.message : err}`);
});
