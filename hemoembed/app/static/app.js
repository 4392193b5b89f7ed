// hemoembed review UI: plain JavaScript, no external assets. Every request goes through api(), which adds
// the access token (when the server has one) as "Authorization: Bearer"; images are fetched the same way
// and shown from blob URLs, so no token ever appears in a URL. Data is inserted with textContent only.
"use strict";

const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#ad494a"];
const KEYS = "123456789abcdefhijklmnopqrstuvwxyz";  // g is GradCAM
const UPLOAD_CHUNK = 16;
const S = { token: sessionStorage.getItem("hemoembed-token") || "", batch: null, cells: [], order: [],
            classes: [], model: null, detail: null, openedAt: 0, map: null, view: null, blobs: new Map(),
            uploading: 0, uploaded: 0, toUpload: 0, progress: null, listed: null, listedAt: 0 };

class AuthError extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (S.token) headers.Authorization = `Bearer ${S.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) { showLogin(); throw new AuthError("token needed"); }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}
const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, body) => (await api(path, { method: "POST", headers: { "Content-Type": "application/json" },
                                                        body: JSON.stringify(body || {}) })).json();

async function imageURL(path) {  // cached blob URL of an authorised image
  if (!S.blobs.has(path)) {
    S.blobs.set(path, api(path).then((r) => r.blob()).then((b) => URL.createObjectURL(b)));
  }
  return S.blobs.get(path);
}
function setImage(img, path) {
  img.dataset.src = path;
  imageURL(path).then((url) => { if (img.dataset.src === path) img.src = url; }).catch(() => {});
}

function showLogin() { $("login").hidden = false; $("token").focus(); }

// ------------------------------------------------------------------ batches and uploads
async function loadBatches(selectLast) {
  const batches = await getJSON("/api/batches");
  const select = $("batch");
  select.replaceChildren(...batches.map((b) => new Option(`${b.name} (${b.cells})`, b.id)));
  if (!batches.length) { S.batch = null; return; }
  if (selectLast || S.batch === null || !batches.some((b) => b.id === S.batch)) S.batch = batches[batches.length - 1].id;
  select.value = String(S.batch);
}

async function newBatch() {
  const name = `batch ${new Date().toLocaleString()}`;
  S.batch = (await postJSON("/api/batches", { name })).id;
  await loadBatches(false);
  await refresh();
}

async function uploadFiles(files) {
  files = Array.from(files);
  if (!files.length) return;
  if (S.batch === null) await newBatch();
  S.toUpload += files.length;
  $("progress").hidden = false;
  for (let i = 0; i < files.length; i += UPLOAD_CHUNK) {
    const form = new FormData();
    files.slice(i, i + UPLOAD_CHUNK).forEach((f) => form.append("files", f, f.name));
    try {
      const result = await (await api(`/api/batches/${S.batch}/files`, { method: "POST", body: form })).json();
      result.results.filter((r) => r.error).forEach((r) => addReject(r.filename, r.error));
    } catch (e) {
      if (!(e instanceof AuthError)) files.slice(i, i + UPLOAD_CHUNK).forEach((f) => addReject(f.name, e.message));
    }
    S.uploaded += Math.min(UPLOAD_CHUNK, files.length - i);
    pollProgress().catch(() => {});  // the listing follows (schedule) at most once a second
  }
  await loadBatches(false);
}

function addReject(name, reason) {
  const li = document.createElement("li");
  li.textContent = `${name}: ${reason}`;
  $("rejects").prepend(li);
}

function updateProgress() {  // per file: sent, waiting, being embedded now, classified (from /progress)
  const p = S.progress;
  if (!p) return;
  if (S.toUpload || p.queued) $("progress").hidden = false;
  const waiting = Math.max(S.toUpload - S.uploaded, 0);
  const finished = p.done + p.error;
  const inHand = Math.min(p.embedded, p.embedding.length);
  $("progress-bar").max = Math.max(p.cells + waiting, 1);
  $("progress-bar").value = finished + inHand;
  const parts = [];
  if (S.toUpload) parts.push(`${S.uploaded} of ${S.toUpload} files sent`);
  parts.push(`${finished} of ${p.cells} classified`);
  if (p.embedding.length) parts.push(`embedding ${p.embedded} of ${p.embedding_of} now`);
  if (p.queued > p.embedding.length) parts.push(`${p.queued - p.embedding.length} waiting`);
  if (p.error) parts.push(`${p.error} failed`);
  $("progress-text").textContent = parts.join(" · ");
  const now = new Set(p.embedding);
  document.querySelectorAll("#gallery .card").forEach((card) => {
    const id = Number(card.dataset.id);
    const embedding = now.has(id) && card.classList.contains("queued");
    card.classList.toggle("embedding", embedding);
    if (card.classList.contains("queued")) card.querySelector(".name").textContent = embedding ? "embedding…" : "waiting…";
  });
}

async function pollProgress() {  // cheap: counts and the cells in hand
  if (S.batch === null) { S.progress = null; return; }
  S.progress = await getJSON(`/api/batches/${S.batch}/progress`);
  updateProgress();
}

function listingStale() {  // cells were added or finished, or the model changed, since the gallery was listed
  const p = S.progress, l = S.listed;
  return !p || !l || ["batch", "cells", "done", "error", "model_version"].some((k) => p[k] !== l[k]);
}

// ------------------------------------------------------------------ polling state
async function refresh() {
  try {
    await pollProgress();  // before the listing, so the listing is at least as new as S.listed
    const listed = S.progress;
    const [model, cells] = await Promise.all([getJSON("/api/model"),
      S.batch === null ? Promise.resolve([])
        : getJSON(`/api/cells?batch=${S.batch}${$("sort").value === "review" ? "&order=review" : ""}`)]);
    S.model = model; S.classes = model.classes; S.cells = cells; S.listed = listed; S.listedAt = Date.now();
    renderModel(); renderFilters(); renderGallery(); updateProgress();
    if (S.batch !== null) renderSummary(await getJSON(`/api/batches/${S.batch}/summary`));
    if (S.detail) {
      const fresh = cells.find((c) => c.id === S.detail.id);
      if (fresh && (fresh.version !== S.detail.version || fresh.corrected !== S.detail.corrected)) openDetail(fresh.id, true);
    }
  } catch (e) { if (!(e instanceof AuthError)) console.warn(e); }
}

function schedule() {  // while cells are in work: progress twice a second, the gallery once cells finished
  const working = S.uploaded < S.toUpload || (S.progress && S.progress.queued > 0);
  const busy = working || (S.model && S.model.training !== null);
  setTimeout(async () => {
    try {
      if (working) await pollProgress();
      if (!working || (listingStale() && Date.now() - S.listedAt > 1000) || Date.now() - S.listedAt > 4000) {
        await refresh();
      }
    } catch (e) { if (!(e instanceof AuthError)) console.warn(e); }
    schedule();
  }, working ? 500 : busy ? 800 : 4000);
}

function renderModel() {
  const m = S.model;
  $("model-badge").textContent = `model v${m.version}`;
  const current = m.versions.find((v) => v.version === m.version);
  $("model-badge").title = current && current.finished
    ? `version ${m.version}: ${current.n_labels || "?"} labels, ${current.n_corrections || 0} corrections` +
      (current.cv_macro_f1 !== null ? `, CV macro-F1 ${current.cv_macro_f1.toFixed(3)}` : "") +
      `, since ${new Date(current.finished * 1000).toLocaleTimeString()}` : "the --model SVM";
  $("training").hidden = m.training === null;
  $("training").textContent = `retraining v${m.training}…`;
  const failed = m.versions.filter((v) => v.status === "failed").pop();
  $("pending").textContent = `${m.pending_corrections} correction${m.pending_corrections === 1 ? "" : "s"} not in the model` +
    (failed && failed.version > m.version ? ` · v${failed.version} failed: ${failed.error}` : "");
  $("retrain").disabled = m.training !== null;
}

function renderFilters() {
  const select = $("filter-class");
  const value = select.value;
  select.replaceChildren(new Option("all", ""), ...S.classes.map((c) => new Option(c, c)));
  select.value = S.classes.includes(value) ? value : "";
}

function finalLabel(c) { return c.corrected || c.label || ""; }

function visibleCells() {
  const cls = $("filter-class").value;
  const below = Number($("filter-conf").value) || 0;  // 0: any confidence
  let cells = S.cells.filter((c) => (!cls || finalLabel(c) === cls) && (!$("only-unreviewed").checked || !c.corrected)
    && (!below || (c.status === "done" && c.confidence < below)));
  const by = $("sort").value;
  const conf = (c) => (c.confidence === null ? -1 : c.confidence);
  // "review": kept as the server sent it (refresh asks for order=review): the labelling session's
  // active-learning query first, reviewed cells last
  if (by === "conf-asc") cells = cells.slice().sort((a, b) => conf(a) - conf(b) || a.id - b.id);
  else if (by === "conf-desc") cells = cells.slice().sort((a, b) => conf(b) - conf(a) || a.id - b.id);
  else if (by === "class") cells = cells.slice().sort((a, b) => finalLabel(a).localeCompare(finalLabel(b)) || a.id - b.id);
  return cells;
}

function renderGallery() {
  const cells = visibleCells();
  S.order = cells.map((c) => c.id);
  const gallery = $("gallery");
  const existing = new Map(Array.from(gallery.children).map((el) => [Number(el.dataset.id), el]));
  const cards = cells.map((c) => {
    const card = existing.get(c.id) || makeCard(c);
    updateCard(card, c);
    return card;
  });
  gallery.replaceChildren(...cards);
  $("empty").hidden = S.cells.length > 0;
  $("count").textContent = `${cells.length} of ${S.cells.length} cells`;
}

function makeCard(c) {
  const card = document.createElement("div");
  card.className = "card";
  card.dataset.id = c.id;
  const img = document.createElement("img");
  img.alt = c.filename;
  img.loading = "lazy";
  const lab = document.createElement("div");
  lab.className = "lab";
  const name = document.createElement("span");
  name.className = "name";
  const conf = document.createElement("span");
  conf.className = "conf";
  lab.append(name, conf);
  card.append(img, lab);
  card.addEventListener("click", () => openDetail(c.id));
  return card;
}

function updateCard(card, c) {
  const img = card.querySelector("img");
  if (c.status !== "error" && img.dataset.src !== `/api/cells/${c.id}/image`) setImage(img, `/api/cells/${c.id}/image`);
  card.querySelector(".name").textContent = c.status === "done" ? finalLabel(c) : c.status === "queued" ? "waiting…" : "error";
  card.querySelector(".conf").textContent = c.status === "done" ? `${Math.round(100 * c.confidence)}%` : "";
  card.title = `${c.filename}` + (c.error ? `: ${c.error}` : c.status === "done" ?
    `\npredicted ${c.label} (${(100 * c.confidence).toFixed(1)}%, model v${c.version})` +
    (c.corrected ? `\nreviewed: ${c.corrected} by ${c.reviewer}` : "") : "");
  card.classList.toggle("queued", c.status === "queued");
  card.classList.toggle("error", c.status === "error");
  card.classList.toggle("low", c.status === "done" && c.confidence < 0.6);
  card.classList.toggle("reviewed", !!c.corrected && c.corrected === c.label);
  card.classList.toggle("changed", !!c.corrected && c.corrected !== c.label);
  card.classList.toggle("selected", !!S.detail && S.detail.id === c.id);
}

function renderSummary(summary) {
  const rows = summary.classes.filter((r) => r.count > 0 || r.predicted > 0).map((r) => {
    const tr = document.createElement("tr");
    [r.class, String(r.count), r.percent.toFixed(1)].forEach((v) => {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    });
    return tr;
  });
  $("summary").tBodies[0].replaceChildren(...rows);
  $("summary-note").textContent = `${summary.classified} classified · ${summary.reviewed} reviewed ` +
    `(${summary.changed} changed) · ${summary.failed} failed · ${summary.rejects.length} refused at upload`;
}

// ------------------------------------------------------------------ cell detail
async function openDetail(id, keepTimer) {
  let cell;
  try { cell = await getJSON(`/api/cells/${id}`); } catch (e) { return; }
  if (!keepTimer || !S.detail || S.detail.id !== id) S.openedAt = performance.now();
  S.detail = cell;
  document.querySelector("main").classList.add("with-detail");
  $("detail").hidden = false;
  document.querySelectorAll(".card.selected").forEach((el) => el.classList.remove("selected"));
  const card = document.querySelector(`.card[data-id="${id}"]`);
  if (card) { card.classList.add("selected"); if (!keepTimer) card.scrollIntoView({ block: "nearest" }); }
  $("detail-title").textContent = `cell ${cell.id} · ${cell.filename}`;
  $("detail-meta").textContent = `${cell.width}×${cell.height} ${cell.format}` +
    (cell.status === "done" ? ` · model v${cell.version}` : ` · ${cell.error || cell.status}`);
  showDetailImage();
  renderBars(cell);
  renderLabelButtons(cell);
  renderNeighbours(cell);
  drawMap();
}

function showDetailImage() {
  const cell = S.detail;
  const path = $("gradcam").checked && cell.status === "done" ? `/api/cells/${cell.id}/gradcam?v=${cell.version}`
                                                               : `/api/cells/${cell.id}/image`;
  setImage($("detail-img"), path);
}

function renderBars(cell) {
  const bars = (cell.ranked || []).map(([name, p], i) => {
    const row = document.createElement("div");
    row.className = i === 0 ? "bar top" : "bar";
    const label = document.createElement("span"); label.textContent = name;
    const track = document.createElement("div"); track.className = "track";
    const fill = document.createElement("div"); fill.className = "fill"; fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span"); pct.className = "pct"; pct.textContent = `${(100 * p).toFixed(1)}%`;
    row.append(label, track, pct);
    return row;
  });
  $("bars").replaceChildren(...bars);
}

function renderLabelButtons(cell) {
  const buttons = S.classes.map((name, i) => {
    const b = document.createElement("button");
    b.type = "button";
    const kbd = document.createElement("kbd"); kbd.textContent = KEYS[i] || "";
    b.append(kbd, document.createTextNode(name));
    b.classList.toggle("current", finalLabel(cell) === name && cell.status === "done");
    b.disabled = cell.status !== "done";
    b.addEventListener("click", () => correct(name));
    return b;
  });
  $("label-buttons").replaceChildren(...buttons);
  $("correction-state").textContent = cell.corrected
    ? `reviewed: ${cell.corrected} by ${cell.reviewer}${cell.seconds !== null ? ` in ${cell.seconds.toFixed(1)} s` : ""}`
    : cell.status === "done" ? `predicted ${cell.label}; not reviewed yet` : "";
}

async function correct(label) {
  const cell = S.detail;
  if (!cell || cell.status !== "done") return;
  const seconds = (performance.now() - S.openedAt) / 1000;
  try {
    await postJSON(`/api/cells/${cell.id}/correction`, { label, reviewer: $("reviewer").value, seconds });
  } catch (e) { $("correction-state").textContent = e.message; return; }
  const index = S.order.indexOf(cell.id);
  await refresh();
  const next = S.order.find((id, i) => i > index - 1 && id !== cell.id && !S.cells.find((c) => c.id === id).corrected);
  if (next !== undefined) openDetail(next); else openDetail(cell.id, true);
}

function renderNeighbours(cell) {
  const items = (cell.neighbours || []).map((n) => {
    const div = document.createElement("div");
    div.className = "neighbour";
    const img = document.createElement("img");
    img.alt = n.label || "unlabelled";
    setImage(img, `/api/reference/${n.row}/image`);
    const text = document.createElement("div");
    text.textContent = `${n.label || "—"} · ${n.distance.toFixed(3)}`;
    div.title = n.path;
    div.append(img, text);
    return div;
  });
  $("neighbours").replaceChildren(...items);
}

function move(step) {
  if (!S.detail) { if (S.order.length) openDetail(S.order[0]); return; }
  const i = S.order.indexOf(S.detail.id);
  const next = S.order[Math.min(Math.max(i + step, 0), S.order.length - 1)];
  if (next !== undefined) openDetail(next);
}

function closeDetail() {
  S.detail = null;
  $("detail").hidden = true;
  document.querySelector("main").classList.remove("with-detail");
  document.querySelectorAll(".card.selected").forEach((el) => el.classList.remove("selected"));
}

// ------------------------------------------------------------------ the reference map (canvas, pan/zoom/hover)
async function loadMap() {
  try { S.map = await getJSON("/api/map"); } catch (e) { S.map = { available: false }; return; }
  if (!S.map.available) return;
  const xs = S.map.x, ys = S.map.y;
  S.map.rowToPoint = new Map(S.map.rows.map((r, i) => [r, i]));
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  S.map.bounds = { minX, maxX, minY, maxY };
  resetView();
  const legend = S.map.classes.map((c, i) => {
    const span = document.createElement("span");
    const dot = document.createElement("i"); dot.style.background = PALETTE[i % PALETTE.length];
    span.append(dot, document.createTextNode(c));
    return span;
  });
  $("map-legend").replaceChildren(...legend);
}

function resetView() {
  const c = $("map"), b = S.map.bounds;
  const scale = 0.92 * Math.min(c.width / (b.maxX - b.minX || 1), c.height / (b.maxY - b.minY || 1));
  S.view = { scale, cx: (b.minX + b.maxX) / 2, cy: (b.minY + b.maxY) / 2 };
}

function toScreen(x, y) {
  const c = $("map"), v = S.view;
  return [c.width / 2 + (x - v.cx) * v.scale, c.height / 2 - (y - v.cy) * v.scale];
}

function drawMap() {
  const canvas = $("map"), ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.map || !S.map.available) {
    ctx.fillStyle = "#6b7785"; ctx.font = "14px sans-serif";
    ctx.fillText("no map: start the server with --map MAP", 20, 30);
    return;
  }
  const { x, y, label } = S.map;
  const radius = x.length > 5000 ? 1.3 : 2.5;
  ctx.globalAlpha = 0.55;
  for (let i = 0; i < x.length; i++) {
    const [sx, sy] = toScreen(x[i], y[i]);
    if (sx < -2 || sy < -2 || sx > canvas.width + 2 || sy > canvas.height + 2) continue;
    ctx.fillStyle = label[i] < 0 ? "#c8cdd2" : PALETTE[label[i] % PALETTE.length];
    ctx.fillRect(sx - radius, sy - radius, 2 * radius, 2 * radius);
  }
  ctx.globalAlpha = 1;
  const cell = S.detail;
  if (!cell) return;
  ctx.strokeStyle = "#000"; ctx.lineWidth = 1.5;
  for (const n of cell.neighbours || []) {
    const i = S.map.rowToPoint.get(n.row);
    if (i === undefined) continue;
    const [sx, sy] = toScreen(x[i], y[i]);
    ctx.beginPath(); ctx.arc(sx, sy, 5, 0, 2 * Math.PI); ctx.stroke();
  }
  if (cell.map_x !== null && cell.map_x !== undefined) {
    const [sx, sy] = toScreen(cell.map_x, cell.map_y);
    star(ctx, sx, sy, 11, 5);
  }
}

function star(ctx, x, y, outer, inner) {
  ctx.beginPath();
  for (let k = 0; k < 10; k++) {
    const r = k % 2 ? inner : outer, a = Math.PI / 5 * k - Math.PI / 2;
    ctx.lineTo(x + r * Math.cos(a), y + r * Math.sin(a));
  }
  ctx.closePath();
  ctx.fillStyle = "#111"; ctx.fill();
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.stroke();
}

function canvasPoint(event) {
  const c = $("map"), r = c.getBoundingClientRect();
  return [(event.clientX - r.left) * c.width / r.width, (event.clientY - r.top) * c.height / r.height];
}

function nearestPoint(px, py) {
  let best = -1, bestD = 64;  // within 8 px
  const { x, y } = S.map;
  for (let i = 0; i < x.length; i++) {
    const [sx, sy] = toScreen(x[i], y[i]);
    const d = (sx - px) ** 2 + (sy - py) ** 2;
    if (d < bestD) { bestD = d; best = i; }
  }
  return best;
}

function setupMap() {
  const canvas = $("map");
  let drag = null;
  canvas.addEventListener("mousedown", (e) => { drag = canvasPoint(e); canvas.style.cursor = "grabbing"; });
  window.addEventListener("mouseup", () => { drag = null; canvas.style.cursor = "grab"; });
  canvas.addEventListener("mousemove", (e) => {
    if (!S.map || !S.map.available) return;
    const [px, py] = canvasPoint(e);
    if (drag) {
      S.view.cx -= (px - drag[0]) / S.view.scale; S.view.cy += (py - drag[1]) / S.view.scale;
      drag = [px, py]; drawMap(); return;
    }
    const i = nearestPoint(px, py);
    const tip = $("map-tip");
    if (i < 0) { tip.hidden = true; return; }
    const row = S.map.rows[i];
    const labelIndex = S.map.label[i];
    const neighbour = S.detail && (S.detail.neighbours || []).find((n) => n.row === row);
    tip.querySelector("span").textContent = (labelIndex < 0 ? "unlabelled" : S.map.classes[labelIndex]) +
      (neighbour ? ` · neighbour, distance ${neighbour.distance.toFixed(3)}` : "");
    setImage(tip.querySelector("img"), `/api/reference/${row}/image`);
    const r = canvas.getBoundingClientRect();
    tip.style.left = `${e.clientX - r.left + 14}px`; tip.style.top = `${e.clientY - r.top + 14}px`;
    tip.hidden = false;
  });
  canvas.addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
  canvas.addEventListener("wheel", (e) => {
    if (!S.map || !S.map.available) return;
    e.preventDefault();
    const [px, py] = canvasPoint(e);
    const factor = Math.exp(-e.deltaY * 0.0015);
    const wx = S.view.cx + (px - canvas.width / 2) / S.view.scale, wy = S.view.cy - (py - canvas.height / 2) / S.view.scale;
    S.view.scale *= factor;
    S.view.cx = wx - (px - canvas.width / 2) / S.view.scale; S.view.cy = wy + (py - canvas.height / 2) / S.view.scale;
    drawMap();
  }, { passive: false });
  canvas.addEventListener("dblclick", () => { resetView(); drawMap(); });
}

// ------------------------------------------------------------------ wiring
function keyboard(e) {
  if (e.target.matches("input, select, textarea") || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.key === "ArrowRight" || e.key === "ArrowDown") { move(1); e.preventDefault(); }
  else if (e.key === "ArrowLeft" || e.key === "ArrowUp") { move(-1); e.preventDefault(); }
  else if (e.key === "Escape") closeDetail();
  else if (e.key === "g" && S.detail) { $("gradcam").checked = !$("gradcam").checked; showDetailImage(); }
  else if (e.key === "Enter" && S.detail && S.detail.label) correct(S.detail.label);
  else {
    const i = KEYS.indexOf(e.key.toLowerCase());
    if (S.detail && i >= 0 && i < S.classes.length) correct(S.classes[i]);
  }
}

async function exportCSV() {
  if (S.batch === null) return;
  const blob = await (await api(`/api/batches/${S.batch}/export.csv`)).blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `hemoembed_batch_${S.batch}.csv`;
  document.body.append(a); a.click(); a.remove();
}

async function start() {
  $("reviewer").value = localStorage.getItem("hemoembed-reviewer") || "";
  $("reviewer").addEventListener("change", () => localStorage.setItem("hemoembed-reviewer", $("reviewer").value));
  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    S.token = $("token").value.trim();
    sessionStorage.setItem("hemoembed-token", S.token);
    try { await getJSON("/api/model"); $("login").hidden = true; $("login-error").textContent = ""; await boot(); }
    catch (err) { $("login-error").textContent = "wrong token"; }
  });
  $("batch").addEventListener("change", () => { S.batch = Number($("batch").value); closeDetail(); refresh(); });
  $("new-batch").addEventListener("click", newBatch);
  $("files").addEventListener("change", (e) => { uploadFiles(e.target.files); e.target.value = ""; });
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => uploadFiles(e.dataTransfer.files));
  ["filter-class", "filter-conf", "only-unreviewed"].forEach((id) => $(id).addEventListener("change", renderGallery));
  $("sort").addEventListener("change", () => { renderGallery(); refresh(); });
  $("retrain").addEventListener("click", async () => {
    try { await postJSON("/api/retrain"); } catch (e) { $("pending").textContent = e.message; }
    refresh();
  });
  $("export").addEventListener("click", exportCSV);
  $("class-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try { await postJSON("/api/classes", { name: $("class-name").value }); $("class-name").value = ""; $("class-error").textContent = ""; }
    catch (err) { $("class-error").textContent = err.message; }
    await refresh();
    if (S.detail) renderLabelButtons(S.detail);
  });
  $("gradcam").addEventListener("change", showDetailImage);
  $("prev").addEventListener("click", () => move(-1));
  $("next").addEventListener("click", () => move(1));
  $("close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", keyboard);
  setupMap();
  await boot();
}

async function boot() {
  try { await loadBatches(true); } catch (e) { return; }
  await loadMap();
  await refresh();
  if (!S.booted) { S.booted = true; schedule(); }
}

document.addEventListener("DOMContentLoaded", start);
