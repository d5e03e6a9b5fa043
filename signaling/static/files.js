// Shared files: drag-and-drop or pick → SHA-256 in the browser (hash-wasm, 8 MiB slices) →
// instant upload when the server already has those bytes, otherwise a resumable tus upload
// (tus-js-client; a dropped connection or a page reload resumes where it stopped) → the file
// goes into the chat as an attachment. The file list shows DICOM study summaries.
// Whoever shared a file, and hosts, can delete it (file-removed): it leaves the list, and its
// chat attachments stay but show it as removed. History from the server flags them
// `removed: true`; live, this module marks them on file-removed (removedIds).

const SLICE = 8 * 1024 * 1024;
const RETRY_DELAYS = [0, 1000, 3000, 5000, 10000];
const SPEED_WINDOW_MS = 3000;
const removedIds = new Set(); // files deleted while this page was open

export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[i]}`;
}

function formatStudyDate(d) {
  // DICOM DA is YYYYMMDD; show it as an ISO date, anything else as it is.
  const m = /^(\d{4})(\d{2})(\d{2})$/.exec(String(d || ''));
  return m ? `${m[1]}-${m[2]}-${m[3]}` : String(d || '');
}

// "CT · 2024-03-01 · Chest with contrast · 3 series, 412 images"
export function studySummary(dicom) {
  if (!dicom) return '';
  const parts = [];
  if (dicom.modality) parts.push(dicom.modality);
  if (dicom.studyDate) parts.push(formatStudyDate(dicom.studyDate));
  if (dicom.studyDescription) parts.push(dicom.studyDescription);
  const counts = [];
  if (typeof dicom.seriesCount === 'number') {
    counts.push(`${dicom.seriesCount} series`);
  }
  if (typeof dicom.instanceCount === 'number') {
    counts.push(`${dicom.instanceCount} image${dicom.instanceCount === 1 ? '' : 's'}`);
  }
  if (counts.length) parts.push(counts.join(', '));
  return parts.join(' · ');
}

// A file as a card (chat attachment and file list alike): name, size, study, download.
export function renderFileCard(file, ctx, { uploader = false, onDelete = null } = {}) {
  const card = document.createElement('div');
  card.className = 'file-card';
  card.dataset.fileId = file.id;
  const icon = svgIcon('i-file');
  icon.classList.add('file-icon');
  if (file.dicom) icon.classList.add('dicom');
  const info = document.createElement('div');
  info.className = 'file-info';
  const name = document.createElement('span');
  name.className = 'file-name';
  name.textContent = file.name;
  name.title = file.name;
  const meta = document.createElement('span');
  meta.className = 'file-meta';
  const bits = [formatSize(file.size)];
  if (uploader && file.uploadedBy) bits.push(`shared by ${file.uploadedBy.name}`);
  if (uploader && file.uploadedAt) {
    bits.push(new Date(file.uploadedAt).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  }
  meta.textContent = bits.join(' · ');
  info.append(name, meta);
  if (file.dicom) {
    const study = document.createElement('span');
    study.className = 'file-study';
    study.textContent = `DICOM study: ${studySummary(file.dicom)}`;
    info.append(study);
  }
  const dl = document.createElement('button');
  dl.type = 'button';
  dl.className = 'file-download';
  dl.textContent = 'Download';
  dl.setAttribute('aria-label', `Download ${file.name}`);
  dl.addEventListener('click', () => download(file, ctx, dl));
  card.append(icon, info, dl);
  if (onDelete) {
    const del = document.createElement('button');
    del.type = 'button';
    del.className = 'file-delete';
    del.textContent = 'Delete';
    del.setAttribute('aria-label', `Delete ${file.name}`);
    del.addEventListener('click', () => onDelete(file, del));
    card.append(del);
  }
  if (file.removed || removedIds.has(file.id)) markRemoved(card);
  return card;
}

// The card stays where it is (a chat message said it attached this file) but cannot be
// downloaded any more.
function markRemoved(card) {
  card.classList.add('removed');
  const dl = card.querySelector('.file-download');
  if (dl) {
    dl.disabled = true;
    dl.textContent = 'Removed';
    dl.setAttribute('aria-label', 'This file was deleted');
  }
}

// The page's confirmation dialog (the one host actions use).
function confirmDialog(title, text, okLabel) {
  const dlg = document.getElementById('confirm-dialog');
  document.getElementById('confirm-title').textContent = title;
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
  });
}

export function svgIcon(id) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', 'icon');
  const use = document.createElementNS(ns, 'use');
  use.setAttribute('href', `#${id}`);
  svg.append(use);
  return svg;
}

function authHeaders(ctx) {
  return { Authorization: `Bearer ${ctx.token()}` };
}

async function apiError(resp) {
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch { /* not JSON */ }
  return `HTTP ${resp.status}`;
}

// Links are short-lived and signed for this participant: ask for one per click.
async function download(file, ctx, button) {
  button.disabled = true;
  try {
    const resp = await fetch(`/api/rooms/${encodeURIComponent(ctx.room())}/files/${encodeURIComponent(file.id)}/link`, {
      method: 'POST', headers: authHeaders(ctx),
    });
    if (!resp.ok) throw new Error(await apiError(resp));
    const { url } = await resp.json();
    const a = document.createElement('a');
    a.href = url;
    a.download = file.name;
    a.rel = 'noopener';
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    ctx.showError(`Could not download ${file.name}: ${err.message || err}`, { fatal: false });
  } finally {
    button.disabled = false;
  }
}

export function initFiles(ctx) {
  const $ = (id) => document.getElementById(id);
  const ui = {
    list: $('file-list'),
    empty: $('files-empty'),
    count: $('files-count'),
    uploads: $('uploads'),
    input: $('file-input'),
    pick: $('btn-upload'),
    attach: $('btn-attach'),
    overlay: $('drop-overlay'),
  };
  const files = new Map(); // id -> FileInfo
  const uploads = []; // for tests and debugging: {name, state, instant, fileId}
  let canUpload = false;
  window.consilium.files = { files, uploads };

  const applyPermissions = () => {
    canUpload = ctx.permissions().includes('chat');
    ui.pick.hidden = !canUpload;
    ui.attach.hidden = !canUpload;
    for (const el of ui.list.querySelectorAll('.file-card')) {
      const del = el.querySelector('.file-delete');
      if (del) del.hidden = !mayDelete(files.get(el.dataset.fileId));
    }
  };
  // The server decides; this only hides a button that would be refused.
  const mayDelete = (f) => !!f && (ctx.permissions().includes('admin')
    || (!!ctx.self() && !!f.uploadedBy && f.uploadedBy.id === ctx.self().id));
  ctx.onPermissionsChanged(applyPermissions);
  ctx.onJoined(() => {
    applyPermissions();
    refreshList();
  });

  ctx.on('file-shared', (msg) => {
    if (msg.file) addFile(msg.file);
  });
  ctx.on('file-removed', (msg) => {
    if (msg.fileId) removeFile(msg.fileId);
  });

  async function refreshList() {
    try {
      const resp = await fetch(`/api/rooms/${encodeURIComponent(ctx.room())}/files`, { headers: authHeaders(ctx) });
      if (!resp.ok) return;
      const body = await resp.json();
      const listed = new Set();
      for (const f of body.files || []) { listed.add(f.id); addFile(f); }
      // Deleted while this page was away (a reconnect): gone from the server's list.
      for (const id of [...files.keys()]) if (!listed.has(id)) removeFile(id);
    } catch (err) {
      console.warn('consilium: file list', err);
    }
  }

  function addFile(f) {
    if (!f || !f.id || files.has(f.id) || removedIds.has(f.id)) return;
    files.set(f.id, f);
    const li = document.createElement('li');
    const card = renderFileCard(f, ctx, { uploader: true, onDelete: deleteFile });
    card.querySelector('.file-delete').hidden = !mayDelete(f);
    li.append(card);
    ui.list.append(li); // the server lists newest last, and live ones are newer
    showCount();
  }

  function showCount() {
    ui.empty.hidden = files.size > 0;
    ui.count.textContent = files.size ? String(files.size) : '';
  }

  function removeFile(id) {
    removedIds.add(id);
    files.delete(id);
    const item = ui.list.querySelector(`.file-card[data-file-id="${CSS.escape(id)}"]`);
    if (item) item.closest('li').remove();
    showCount();
    // Chat attachments (and any other card) of this file stay, shown as removed.
    for (const card of document.querySelectorAll(`.file-card[data-file-id="${CSS.escape(id)}"]`)) {
      markRemoved(card);
    }
  }

  async function deleteFile(f, button) {
    const ok = await confirmDialog(`Delete ${f.name}?`,
      'It is removed for everyone in this consultation and can no longer be downloaded.',
      'Delete');
    if (!ok) return;
    button.disabled = true;
    try {
      const resp = await fetch(`/api/rooms/${encodeURIComponent(ctx.room())}/files/${encodeURIComponent(f.id)}`, {
        method: 'DELETE', headers: authHeaders(ctx),
      });
      if (!resp.ok && resp.status !== 404) throw new Error(await apiError(resp));
      removeFile(f.id); // file-removed follows for everyone else
    } catch (err) {
      button.disabled = false;
      ctx.showError(`Could not delete ${f.name}: ${err.message || err}`, { fatal: false });
    }
  }

  // ------------------------------------------------------------------ picking and dropping

  const pickFiles = () => { if (canUpload) ui.input.click(); };
  ui.pick.addEventListener('click', pickFiles);
  ui.attach.addEventListener('click', pickFiles);
  ui.input.addEventListener('change', () => {
    for (const f of ui.input.files) startUpload(f);
    ui.input.value = '';
  });

  let dragDepth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...ev.dataTransfer.types].includes('Files');
  document.addEventListener('dragenter', (ev) => {
    if (!hasFiles(ev) || !canUpload || !ctx.inCall()) return;
    dragDepth += 1;
    ui.overlay.hidden = false;
  });
  document.addEventListener('dragleave', (ev) => {
    if (!hasFiles(ev)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) ui.overlay.hidden = true;
  });
  document.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault(); // allow the drop (and keep the browser from opening the file)
    ev.dataTransfer.dropEffect = canUpload && ctx.inCall() ? 'copy' : 'none';
  });
  document.addEventListener('drop', (ev) => {
    if (!hasFiles(ev)) return;
    ev.preventDefault();
    dragDepth = 0;
    ui.overlay.hidden = true;
    if (!canUpload || !ctx.inCall()) return;
    for (const f of ev.dataTransfer.files) startUpload(f);
  });

  // ------------------------------------------------------------------ one upload

  function startUpload(file) {
    ctx.openPanel();
    const item = new UploadItem(file);
    uploads.push(item.record);
    ui.uploads.prepend(item.el);
    item.run();
  }

  class UploadItem {
    constructor(file) {
      this.file = file;
      this.tus = null;
      this.paused = false;
      this.resuming = false; // until the next PATCH says from where
      this.resumedPct = undefined;
      this.samples = [];
      this.record = { name: file.name, size: file.size, state: 'checking', instant: false, fileId: null, error: null, resumedFrom: 0 };
      const el = document.createElement('div');
      el.className = 'upload';
      const name = document.createElement('span');
      name.className = 'upload-name';
      name.textContent = file.name;
      name.title = file.name;
      const bar = document.createElement('progress');
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute('aria-label', `Progress of ${file.name}`);
      const status = document.createElement('span');
      status.className = 'upload-status';
      status.setAttribute('role', 'status');
      const pause = document.createElement('button');
      pause.type = 'button';
      pause.className = 'upload-pause';
      pause.textContent = 'Pause';
      pause.hidden = true;
      pause.addEventListener('click', () => this.togglePause());
      const dismiss = document.createElement('button');
      dismiss.type = 'button';
      dismiss.className = 'upload-dismiss';
      dismiss.textContent = '×';
      dismiss.setAttribute('aria-label', `Dismiss ${file.name}`);
      dismiss.hidden = true;
      dismiss.addEventListener('click', () => el.remove());
      el.append(name, dismiss, bar, status, pause);
      Object.assign(this, { el, bar, status, pauseBtn: pause, dismissBtn: dismiss });
    }

    set(state, text, percent) {
      this.record.state = state;
      this.el.dataset.state = state;
      this.status.textContent = text;
      if (percent !== undefined) this.bar.value = percent;
    }

    async run() {
      try {
        const sha256 = await this.hash();
        const room = encodeURIComponent(ctx.room());
        this.set('checking', 'Checking whether the server already has it…', 100);
        const resp = await fetch(`/api/rooms/${room}/files/instant`, {
          method: 'POST',
          headers: { ...authHeaders(ctx), 'Content-Type': 'application/json' },
          body: JSON.stringify({ sha256, size: this.file.size, name: this.file.name, type: this.file.type || 'application/octet-stream' }),
        });
        if (resp.status === 201) {
          const body = await resp.json();
          this.record.instant = true;
          this.done(body.file.id, 'Shared instantly: the server already had this file', body.file);
          return;
        }
        if (resp.status !== 404) throw new Error(await apiError(resp));
        this.upload(sha256);
      } catch (err) {
        this.fail(err.message || String(err));
      }
    }

    // SHA-256 over 8 MiB slices, so a multi-GB study never sits in memory.
    async hash() {
      if (!window.hashwasm) throw new Error('hashing library not loaded');
      const hasher = await window.hashwasm.createSHA256();
      hasher.init();
      const size = this.file.size;
      this.set('checking', 'Checking… 0 %', 0);
      for (let off = 0; off < size; off += SLICE) {
        const buf = await this.file.slice(off, Math.min(size, off + SLICE)).arrayBuffer();
        hasher.update(new Uint8Array(buf));
        const pct = Math.floor((Math.min(size, off + SLICE) / size) * 100);
        this.set('checking', `Checking… ${pct} %`, pct);
      }
      return hasher.digest('hex');
    }

    upload(sha256) {
      if (!window.tus) throw new Error('upload library not loaded');
      this.set('uploading', 'Uploading… 0 %', 0);
      this.pauseBtn.hidden = false;
      const upload = new window.tus.Upload(this.file, {
        endpoint: `${location.origin}/api/rooms/${encodeURIComponent(ctx.room())}/uploads`,
        chunkSize: SLICE,
        retryDelays: RETRY_DELAYS,
        metadata: { filename: this.file.name, filetype: this.file.type || 'application/octet-stream', sha256 },
        headers: authHeaders(ctx),
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        onProgress: (sent, total) => this.progress(sent, total),
        onBeforeRequest: (req) => this.beforeRequest(req),
        onSuccess: ({ lastResponse }) => {
          const id = lastResponse && lastResponse.getHeader('Consilium-File-Id');
          if (!id) { this.fail('the server did not say which file it stored'); return; }
          this.done(id, 'Shared');
        },
        // The default also gives up whenever navigator.onLine is false, which some browsers
        // report on networks without a default route; a retry costs one request.
        onShouldRetry: (err) => {
          const status = err.originalResponse ? err.originalResponse.getStatus() : 0;
          return !(status >= 400 && status < 500) || status === 409 || status === 423;
        },
        onError: (err) => {
          // No answer at all: the connection is gone, not the upload. Offer to carry on.
          if (!err.originalResponse) this.interrupt();
          else this.fail(tusMessage(err));
        },
      });
      this.tus = upload;
      // A page reload (or a second try with the same file) resumes at the server's offset.
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) {
          upload.resumeFromPreviousUpload(previous[0]);
          this.resuming = true;
          this.set('uploading', 'Resuming an earlier upload…');
        }
        upload.start();
      }).catch(() => upload.start());
    }

    // The first PATCH after a resume starts at the server's offset: tell the user how much
    // was already there, so a reloaded page visibly does not start over.
    beforeRequest(req) {
      if (!this.resuming || req.getMethod() !== 'PATCH') return;
      this.resuming = false;
      const offset = Number.parseInt(String(req.getHeader('Upload-Offset')), 10);
      if (!(offset > 0) || !this.file.size) return;
      this.record.resumedFrom = offset;
      this.resumedPct = Math.floor((offset / this.file.size) * 100);
      this.set('uploading', `Resuming from ${this.resumedPct} %`, this.resumedPct);
    }

    progress(sent, total) {
      const now = performance.now();
      this.samples.push([now, sent]);
      while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) this.samples.shift();
      const [t0, b0] = this.samples[0];
      const speed = now > t0 ? ((sent - b0) * 1000) / (now - t0) : 0;
      const pct = total ? Math.floor((sent / total) * 100) : 0;
      const rate = speed > 0 ? ` · ${formatSize(speed)}/s` : '';
      const resumed = this.resumedPct !== undefined ? ` · resumed from ${this.resumedPct} %` : '';
      this.set('uploading', `Uploading ${pct} % (${formatSize(sent)} of ${formatSize(total)})${rate}${resumed}`, pct);
    }

    togglePause() {
      if (!this.tus) return;
      if (this.paused) {
        this.paused = false;
        this.samples = [];
        this.pauseBtn.textContent = 'Pause';
        this.resuming = true;
        this.set('uploading', 'Resuming…');
        this.tus.start();
      } else {
        this.paused = true;
        this.tus.abort(); // keeps the server's partial upload: start() continues from there
        this.pauseBtn.textContent = 'Resume';
        this.set('paused', `Paused at ${this.bar.value} %`);
      }
    }

    interrupt() {
      this.paused = true;
      this.pauseBtn.hidden = false;
      this.pauseBtn.textContent = 'Resume';
      this.set('paused', `Connection lost at ${this.bar.value} %: press Resume to continue`);
    }

    done(fileId, text, fileInfo) {
      this.record.fileId = fileId;
      this.pauseBtn.hidden = true;
      this.dismissBtn.hidden = false;
      this.set(this.record.instant ? 'instant' : 'done', text, 100);
      if (fileInfo) addFile(fileInfo);
      ctx.shareFiles([fileId]);
    }

    fail(why) {
      this.record.error = why;
      this.pauseBtn.hidden = true;
      this.dismissBtn.hidden = false;
      this.set('failed', `Not shared: ${why}`);
    }
  }
}

function tusMessage(err) {
  const res = err && err.originalResponse;
  if (res) {
    try {
      const body = JSON.parse(res.getBody());
      if (body && body.error && body.error.message) return body.error.message;
    } catch { /* not JSON */ }
    return `the server answered ${res.getStatus()}`;
  }
  return (err && err.message) || 'the upload failed';
}
