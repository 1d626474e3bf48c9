/* Fleet replay: the map at any past moment, played forward at 1×, 10× or 60×; one click
 * back to live.
 *
 * A seek asks GET api/v1/fleet/at (every van's last stored position at or before t, its
 * status then, the alerts open then) and redraws the whole fleet (or the selected
 * routes).  Playing reads GET api/v1/fleet/replay (positions in time order, paged) a few
 * minutes of data ahead of the playhead and moves the vans four times a second, as the
 * live feed does; a van without a fix for the server's stale time turns stale.  While
 * replaying, the live websocket's van frames are ignored (app.js asks `replaying()`);
 * back to live, the page asks the server for a fresh snapshot.
 */

import { $, escapeHtml } from "./html.js";
import { sendFilter } from "./live.js";
import { API, api } from "./rest.js";
import { state } from "./state.js";
import { clearVans, removeVan, setStatus, upsertVan, vans } from "./vans.js";

const TICK_MS = 250;              // playback frames: as often as live deltas
const FETCH_AHEAD_MS = 120 * 1000; // keep this much data time buffered ahead
const CHUNK_MS = 10 * 60 * 1000;   // data time per replay request window
const PAGE_ROWS = 20000;
const ALERTS_EVERY_MS = 5000;      // wall time between alert refreshes while playing
const DAY_MS = 24 * 3600 * 1000;

const replay = {
  active: false,
  t: null,            // the playhead, epoch ms
  playing: false,
  speed: 1,
  dayStart: null,     // the slider's day (local midnight), epoch ms
  staleAfterMs: 60000,
  buffer: [],         // replay rows not applied yet, in time order
  bufferedTo: null,   // data time fetched up to (exclusive)
  fetching: false,
  generation: 0,      // bumps on every seek: answers to an older seek are dropped
  alerts: [],
  seeks: 0,
  lastAlertsAt: 0
};
let timer = null;

export function replaying() { return replay.active; }

/* A read-only view for the browser test. */
export function replayView() {
  return {
    active: replay.active, t: replay.t, playing: replay.playing, speed: replay.speed,
    seeks: replay.seeks, alerts: replay.alerts.length, buffered: replay.buffer.length
  };
}

function routesParam() {  // the panel's route filter (none selected: nothing to ask)
  return state.selectedRoutes === null ? "" : "&route=" + encodeURIComponent(state.selectedRoutes.join(","));
}

function noRoutes() { return state.selectedRoutes !== null && state.selectedRoutes.length === 0; }

function iso(ms) { return new Date(ms).toISOString(); }

function localMidnight(ms) { const d = new Date(ms); d.setHours(0, 0, 0, 0); return d.getTime(); }

function dateValue(ms) {  // yyyy-mm-dd of the local day
  const d = new Date(ms);
  return d.getFullYear() + "-" + String(d.getMonth() + 1).padStart(2, "0") + "-" +
    String(d.getDate()).padStart(2, "0");
}

function clock(ms) {
  const d = new Date(ms);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
}

// ---- the bar ---------------------------------------------------------------------

function buildBar() {
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = "replay.css";
  document.head.appendChild(css);
  const bar = document.createElement("div");
  bar.id = "replay";
  bar.innerHTML =
    '<button type="button" id="replay-enter" title="rewind the fleet to a past moment">⏪ Replay</button>' +
    '<span id="replay-controls" hidden>' +
    '<button type="button" id="replay-play" title="play / pause">▶</button>' +
    '<select id="replay-speed" title="playback speed">' +
    '<option value="1">1×</option><option value="10">10×</option><option value="60">60×</option></select>' +
    '<input type="date" id="replay-date" title="day">' +
    '<input type="range" id="replay-slider" min="0" max="86399" step="1" title="time of day">' +
    '<b id="replay-clock">--:--:--</b>' +
    '<button type="button" id="replay-live" title="back to the live map">● Live</button>' +
    '<span id="replay-alerts" class="note"></span>' +
    "</span>";
  document.body.appendChild(bar);
  $("replay-enter").addEventListener("click", () => { enterReplay(Date.now() - 30 * 60 * 1000); });
  $("replay-live").addEventListener("click", backToLive);
  $("replay-play").addEventListener("click", () => { setPlaying(!replay.playing); });
  $("replay-speed").addEventListener("change", (ev) => { replay.speed = Number(ev.target.value) || 1; });
  $("replay-slider").addEventListener("input", (ev) => {
    $("replay-clock").textContent = clock(replay.dayStart + Number(ev.target.value) * 1000);
  });
  $("replay-slider").addEventListener("change", (ev) => {
    seek(Math.min(replay.dayStart + Number(ev.target.value) * 1000, Date.now()));
  });
  $("replay-date").addEventListener("change", (ev) => {
    const [y, m, d] = String(ev.target.value).split("-").map(Number);
    if (!y) { return; }
    const day = new Date(y, m - 1, d).getTime();
    seek(Math.min(day + (replay.t - replay.dayStart), Date.now()));
  });
}

function renderBar() {
  $("replay-enter").hidden = replay.active;
  $("replay-controls").hidden = !replay.active;
  document.body.classList.toggle("replaying", replay.active);
  if (!replay.active) { return; }
  $("replay-play").textContent = replay.playing ? "❚❚" : "▶";
  $("replay-date").value = dateValue(replay.t);
  $("replay-date").max = dateValue(Date.now());
  $("replay-slider").value = String(Math.round((replay.t - replay.dayStart) / 1000));
  $("replay-clock").textContent = clock(replay.t);
  const n = replay.alerts.length;
  $("replay-alerts").innerHTML = n === 0 ? "no alert open then" :
    n + " alert" + (n > 1 ? "s" : "") + " open then: " + replay.alerts.slice(0, 4).map((a) =>
      '<span class="replay-alert alert-' + escapeHtml(a.kind) + '">' + escapeHtml(a.kind) + " " +
      escapeHtml(a.route || "") + " " + escapeHtml(a.vehicle_id || "") + "</span>").join(" ") +
    (n > 4 ? " …" : "");
}

// ---- seeking and playing ---------------------------------------------------------

/* Rewind to t (epoch ms): for the test hook. */
export function replaySeek(t) { return seek(t); }

export function enterReplay(t) {
  replay.active = true;
  seek(t);
}

function seek(t) {
  replay.t = Math.round(t);
  replay.dayStart = localMidnight(replay.t);
  replay.buffer = [];
  replay.bufferedTo = replay.t + 1;  // fleet/at covers (…, t]
  const gen = ++replay.generation;
  renderBar();
  if (noRoutes()) { clearVans(); replay.alerts = []; replay.seeks++; renderBar(); return Promise.resolve(); }
  return api(API + "/fleet/at?t=" + encodeURIComponent(iso(replay.t)) + routesParam()).then((doc) => {
    if (gen !== replay.generation || !replay.active) { return; }
    replay.staleAfterMs = (doc.stale_after_s || 60) * 1000;
    replay.alerts = doc.alerts || [];
    replay.lastAlertsAt = Date.now();
    clearVans();
    (doc.vehicles || []).forEach(upsertVan);
    replay.seeks++;
    renderBar();
    if (replay.playing) { fetchAhead(); }
  }).catch((e) => { $("replay-alerts").textContent = "replay unavailable: " + e.message; });
}

function setPlaying(on) {
  replay.playing = on;
  clearInterval(timer);
  timer = null;
  if (on) {
    fetchAhead();
    timer = setInterval(tick, TICK_MS);
  }
  renderBar();
}

function fetchAhead() {
  if (noRoutes()) { return; }
  if (replay.fetching || replay.bufferedTo >= replay.t + FETCH_AHEAD_MS * Math.max(1, replay.speed / 10)) { return; }
  const now = Date.now();
  if (replay.bufferedTo >= now) { return; }
  const from = replay.bufferedTo, to = Math.min(from + CHUNK_MS, now);
  const gen = replay.generation;
  replay.fetching = true;
  const page = (after) => api(API + "/fleet/replay?from=" + encodeURIComponent(iso(from)) +
      "&to=" + encodeURIComponent(iso(to)) + "&limit=" + PAGE_ROWS + routesParam() +
      (after ? "&after=" + encodeURIComponent(after) : "")).then((doc) => {
    if (gen !== replay.generation) { return null; }
    const f = doc.fields;
    const it = f.indexOf("ts"), iid = f.indexOf("id"), ilat = f.indexOf("lat"), ilon = f.indexOf("lon"),
      isp = f.indexOf("speed"), ihd = f.indexOf("heading"), irt = f.indexOf("route");
    doc.rows.forEach((r) => {
      replay.buffer.push({ id: r[iid], ts: r[it], lat: r[ilat], lon: r[ilon], speed: r[isp], heading: r[ihd], route: r[irt] });
    });
    return doc.next ? page(doc.next) : true;
  });
  page(null).then((done) => {
    if (done) { replay.bufferedTo = to; }
  }).catch((e) => { $("replay-alerts").textContent = "replay unavailable: " + e.message; })
    .then(() => { replay.fetching = false; });
}

function tick() {
  if (!replay.active || !replay.playing) { return; }
  const now = Date.now();
  replay.t = Math.min(replay.t + TICK_MS * replay.speed, now);
  let n = 0;
  while (n < replay.buffer.length && replay.buffer[n].ts <= replay.t) {
    const row = replay.buffer[n++];
    const known = vans[row.id];
    upsertVan(Object.assign({}, row, { route: row.route || (known ? known.v.route : null), status: "online" }));
  }
  if (n) { replay.buffer.splice(0, n); }
  Object.keys(vans).forEach((id) => {  // the live state's stale rule, at the playhead
    const v = vans[id].v;
    if (v.status === "online" && replay.t - v.ts > replay.staleAfterMs) { setStatus(id, "stale"); }
  });
  if (replay.t >= replay.dayStart + DAY_MS) { replay.dayStart = localMidnight(replay.t); }
  if (now - replay.lastAlertsAt > ALERTS_EVERY_MS) { refreshAlerts(); }
  if (replay.t >= now) { setPlaying(false); }
  fetchAhead();
  renderBar();
}

function refreshAlerts() {
  replay.lastAlertsAt = Date.now();
  const gen = replay.generation;
  if (noRoutes()) { return; }
  api(API + "/fleet/at?lookback_s=1&t=" + encodeURIComponent(iso(replay.t)) + routesParam()).then((doc) => {
    if (gen === replay.generation && replay.active) { replay.alerts = doc.alerts || []; renderBar(); }
  }).catch(() => { /* the next refresh tries again */ });
}

export function backToLive() {
  setPlaying(false);
  replay.active = false;
  replay.generation++;
  replay.buffer = [];
  replay.alerts = [];
  Object.keys(vans).forEach(removeVan);
  renderBar();
  sendFilter();  // the server answers with a fresh snapshot of the present
}

export function startReplay() {
  buildBar();
  renderBar();
}
