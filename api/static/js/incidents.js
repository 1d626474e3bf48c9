/* The incident panel: what an operator works (docs/api.md, "Incidents").
 *
 * Bunching and gaps come folded per route and direction, stopped and offline per van.
 * The list is loaded from REST (GET api/v1/incidents, again every minute as a safety net)
 * and kept current by the websocket's `incident` frames: every change (opened, updated,
 * acknowledged, resolved, ended) carries the incident as it now is. Active incidents
 * first, newest first; resolved ones stay for RECENT_MS, greyed, so the room sees what
 * cleared. Acknowledge / Resolve show only when the role may work alerts (the server
 * checks every call regardless).
 */

import { $, escapeHtml } from "./html.js";
import { map } from "./map.js";
import { API, api, apiPost } from "./rest.js";
import { state } from "./state.js";

const REFRESH_MS = 60 * 1000;
const RECENT_MS = 10 * 60 * 1000;   // resolved incidents stay listed this long
const TICK_MS = 5 * 1000;           // durations of ongoing incidents
const MAX_SHOWN = 100;
const WORK_ALERTS = "work alerts";
const KIND_LABELS = { bunching: "bunching", gap: "gap", stopped: "stopped", offline: "offline" };

const byId = new Map();
const changedAt = new Map();  // id → when a frame or an action last set it (ms)

function mayWork() {
  const perms = (state.config && state.config.permissions) || [];
  return perms.indexOf(WORK_ALERTS) >= 0;
}

/* One incident as it now is (from a frame, a REST list or an action's answer). */
export function upsertIncident(incident) {
  if (!incident || incident.id === undefined) { return; }
  byId.set(incident.id, incident);
  changedAt.set(incident.id, Date.now());
  render();
}

/* An `incident` frame of /ws/live. */
export function handleIncidentFrame(msg) {
  if (msg.incident) { upsertIncident(msg.incident); }
}

function shown(now) {
  const list = [];
  byId.forEach((i) => {
    if (i.state !== "resolved" || (i.resolved_at && now - i.resolved_at < RECENT_MS)) { list.push(i); }
  });
  const active = (i) => (i.state === "resolved" ? 1 : 0);
  list.sort((a, b) => active(a) - active(b) || b.started_at - a.started_at || b.id - a.id);
  return list.slice(0, MAX_SHOWN);
}

function clock(ms) {
  return ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : "";
}

function duration(i, now) {
  const end = i.ended_at || now;
  const s = Math.max(0, Math.round((end - i.started_at) / 1000));
  if (s < 60) { return s + " s"; }
  if (s < 3600) { return Math.floor(s / 60) + " min"; }
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

function where(i) {
  if (i.kind === "bunching" || i.kind === "gap") {
    return escapeHtml(i.route || "?") + (i.direction !== null && i.direction !== undefined ? " dir " + escapeHtml(i.direction) : "");
  }
  return escapeHtml(i.vehicle_id || "") + (i.route ? " · " + escapeHtml(i.route) : "");
}

function vansText(i) {
  const vans = i.active_vans && i.active_vans.length ? i.active_vans : i.vans || [];
  const head = vans.slice(0, 6).map(escapeHtml).join(", ");
  return vans.length > 6 ? head + " +" + (vans.length - 6) : head;
}

function stateText(i) {
  if (i.state === "resolved") {
    return i.auto_resolved ? "cleared" : "resolved by " + escapeHtml(i.resolved_by || "?");
  }
  if (i.state === "acknowledged") { return "ack by " + escapeHtml(i.acknowledged_by || "?"); }
  return "open";
}

function render() {
  const ul = $("incidents");
  if (!ul) { return; }
  const now = Date.now();
  const list = shown(now);
  state.incidents = list.map((i) => ({ id: i.id, kind: i.kind, route: i.route, state: i.state, vans: i.vans }));
  const active = list.filter((i) => i.state !== "resolved").length;
  $("incident-count").textContent = active ? "(" + active + " active)" : "";
  if (!list.length) { ul.innerHTML = '<li class="note">none</li>'; return; }
  ul.innerHTML = "";
  const work = mayWork();
  list.forEach((i) => {
    const li = document.createElement("li");
    li.className = "incident incident-" + i.kind + " incident-" + i.state;
    li.dataset.incident = String(i.id);
    li.innerHTML =
      '<div class="incident-head"><span class="kind">' + escapeHtml(KIND_LABELS[i.kind] || i.kind) + "</span> " +
      '<span class="where">' + where(i) + "</span>" +
      '<span class="incident-state" data-state="' + escapeHtml(i.state) + '">' + stateText(i) + "</span></div>" +
      '<div class="incident-vans">' + vansText(i) + "</div>" +
      '<div class="incident-time"><span class="when">since ' + clock(i.started_at) + "</span> · " +
      '<span class="duration">' + duration(i, now) + (i.ended_at ? "" : " so far") + "</span></div>";
    if (work && i.state !== "resolved") {
      const actions = document.createElement("div");
      actions.className = "incident-actions";
      if (i.state === "open") { actions.appendChild(button("Acknowledge", "acknowledge", i)); }
      actions.appendChild(button("Resolve", "resolve", i));
      li.appendChild(actions);
    }
    if (typeof i.lat === "number" && typeof i.lon === "number") {
      li.addEventListener("click", () => { map.setView([i.lat, i.lon], Math.max(map.getZoom(), 15)); });
    }
    ul.appendChild(li);
  });
}

function button(label, action, incident) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.dataset.action = action;
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    b.disabled = true;
    apiPost(API + "/incidents/" + incident.id + "/" + action, {})
      .then(upsertIncident)
      .catch((e) => {
        // 409: someone else was first; show the incident as it now is
        if (e.status === 409) { return api(API + "/incidents/" + incident.id).then(upsertIncident); }
        b.disabled = false;
        console.warn("incident " + action, e);
      });
  });
  return b;
}

/* Durations of what is shown, in place (a full render could swallow a click). */
function tick() {
  const now = Date.now();
  document.querySelectorAll("#incidents li[data-incident]").forEach((li) => {
    const i = byId.get(Number(li.dataset.incident));
    const el = li.querySelector(".duration");
    if (i && el) { el.textContent = duration(i, now) + (i.ended_at ? "" : " so far"); }
  });
}

function load() {
  const asked = Date.now();
  const since = new Date(asked - RECENT_MS).toISOString();
  return api(API + "/incidents?limit=" + MAX_SHOWN + "&from=" + encodeURIComponent(since)).then((list) => {
    const fresh = new Map();
    (list || []).forEach((i) => { fresh.set(i.id, i); });
    byId.forEach((i, id) => {  // a frame newer than this answer wins
      if ((changedAt.get(id) || 0) >= asked) { fresh.set(id, i); }
    });
    byId.clear();
    fresh.forEach((i, id) => { byId.set(id, i); });
    render();
  }).catch((e) => { console.warn("incidents", e); });
}

export function startIncidents() {
  load();
  setInterval(load, REFRESH_MS);
  setInterval(tick, TICK_MS);
}
