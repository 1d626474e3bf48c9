/* The alert panel: the active alerts from REST (refreshed every 30 s; resolved ones leave
 * it), with the websocket's alert frames added at the top in between.
 */

import { $, escapeHtml } from "./html.js";
import { map } from "./map.js";
import { API, api } from "./rest.js";
import { state } from "./state.js";

const ALERTS_REFRESH_MS = 30 * 1000;
const MAX_ALERTS = 50;

export function addAlert(a, prepend) {
  if (state.alerts.some((x) => x.id === a.id)) { return; }
  if (prepend) { state.alerts.unshift(a); } else { state.alerts.push(a); }
  state.alerts = state.alerts.slice(0, MAX_ALERTS);
  renderAlerts();
}

function renderAlerts() {
  const ul = $("alerts");
  $("alert-count").textContent = state.alerts.length ? "(" + state.alerts.length + ")" : "";
  if (!state.alerts.length) { ul.innerHTML = '<li class="note">none</li>'; return; }
  ul.innerHTML = "";
  state.alerts.forEach((a) => {
    const li = document.createElement("li");
    li.className = "alert alert-" + a.kind;
    const when = a.created_at ? new Date(a.created_at).toISOString().slice(11, 19) : "";
    li.innerHTML = '<span class="when">' + when + '</span> <span class="kind">' + escapeHtml(a.kind) + "</span> " +
      escapeHtml(a.route || "") + (a.direction !== undefined && a.direction !== null ? " dir " + escapeHtml(a.direction) : "") + " · " +
      escapeHtml(a.vehicle_id || "") + (a.other_vehicle_id ? " + " + escapeHtml(a.other_vehicle_id) : "");
    if (typeof a.lat === "number" && typeof a.lon === "number") {
      li.addEventListener("click", () => { map.setView([a.lat, a.lon], Math.max(map.getZoom(), 15)); });
    }
    ul.appendChild(li);
  });
}

function loadAlerts() {
  api(API + "/alerts?active=true&limit=" + MAX_ALERTS).then((list) => {
    state.alerts = [];
    (Array.isArray(list) ? list : list.alerts || []).forEach((a) => { addAlert(a, false); });
    renderAlerts();
  }).catch(() => { /* analytics not installed: the panel stays empty */ });
}

export function startAlerts() {
  loadAlerts();
  setInterval(loadAlerts, ALERTS_REFRESH_MS);
}
