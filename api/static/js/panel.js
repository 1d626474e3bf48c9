/* The route list and filters of the side panel: which routes are shown (sent to the
 * server as the live filter), "only vans in the visible area", and the van counts.
 */

import { $, escapeHtml } from "./html.js";
import { sendFilter } from "./live.js";
import { map } from "./map.js";
import { colorOf, routeNames, showSelectedRoutes } from "./routes.js";
import { routeVisible, state } from "./state.js";
import { removeVan, vans } from "./vans.js";

const BBOX_DEBOUNCE_MS = 300;

let bboxTimer = null;

/* Routes with a line, and any route a van reports. */
export function knownRoutes() {
  const set = {};
  state.routes.forEach((r) => { set[r] = true; });
  Object.keys(vans).forEach((id) => { if (vans[id].v.route) { set[vans[id].v.route] = true; } });
  return Object.keys(set).sort();
}

/* Add a checkbox for every known route not listed yet (the list stays sorted). */
export function renderRouteList() {
  const ul = $("routes");
  const existing = {};
  for (const li of ul.children) { existing[li.dataset.route] = li; }
  knownRoutes().forEach((code) => {
    if (existing[code]) { return; }
    const li = document.createElement("li");
    li.dataset.route = code;
    li.innerHTML = '<label><input type="checkbox" data-route="' + escapeHtml(code) + '"> ' +
      '<span class="swatch" style="background:' + colorOf(code) + '"></span>' +
      '<span class="code">' + escapeHtml(code) + '</span> ' +
      '<span class="name">' + escapeHtml(routeNames[code] || "") + '</span>' +
      '<b class="count" data-count="' + escapeHtml(code) + '">0</b></label>';
    const box = li.querySelector("input");
    box.checked = state.selectedRoutes === null || state.selectedRoutes.indexOf(code) >= 0;
    box.addEventListener("change", onRouteToggle);
    let before = null;
    for (const other of ul.children) {
      if (!before && other.dataset.route > code) { before = other; }
    }
    ul.insertBefore(li, before);
  });
  updateCounts();
}

export function updateCounts() {
  const totals = { online: 0, stale: 0, offline: 0 };
  const perRoute = {};
  Object.keys(vans).forEach((id) => {
    const v = vans[id].v;
    const st = v.status || "online";
    totals[st] = (totals[st] || 0) + 1;
    if (st !== "offline") { perRoute[v.route] = (perRoute[v.route] || 0) + 1; }
  });
  setText($("count-online"), totals.online);
  setText($("count-stale"), totals.stale);
  setText($("count-offline"), totals.offline);
  for (const el of document.querySelectorAll("[data-count]")) {
    const code = el.getAttribute("data-count");
    setText(el, routeVisible(code) ? (perRoute[code] || 0) : "–");
  }
}

// a write of the same text still costs a layout and a paint: four times a second, at 5,000 vans
function setText(el, value) {
  const text = String(value);
  if (el.textContent !== text) { el.textContent = text; }
}

function routeBoxes() { return $("routes").querySelectorAll("input[type=checkbox]"); }

/* The checked routes, or null when all are. */
function checkedRoutes() {
  const boxes = routeBoxes();
  const on = [];
  for (const b of boxes) { if (b.checked) { on.push(b.dataset.route); } }
  return on.length === boxes.length ? null : on;
}

function onRouteToggle() { applyFilter(checkedRoutes()); }

function setAllRoutes(checked) {
  for (const b of routeBoxes()) { b.checked = checked; }
  applyFilter(checkedRoutes());
}

function applyFilter(routes) {
  state.selectedRoutes = routes;
  showSelectedRoutes();
  // hide now; the server's next snapshot (filtered) confirms
  Object.keys(vans).forEach((id) => {
    if (!routeVisible(vans[id].v.route)) { removeVan(id); }
  });
  sendFilter();
  updateCounts();
}

// "only vans in the visible area": the server filters by the map's bounds (bbox)
function viewBbox() {
  const b = map.getBounds();
  return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((x) => +x.toFixed(6));
}

function onBboxToggle(ev) {
  state.bbox = ev.target.checked ? viewBbox() : null;
  sendFilter();
}

function onMoveEnd() {
  if (state.bbox === null) { return; }
  clearTimeout(bboxTimer);
  bboxTimer = setTimeout(() => { state.bbox = viewBbox(); sendFilter(); }, BBOX_DEBOUNCE_MS);
}

export function bindFilters() {
  $("routes-all").addEventListener("click", () => { setAllRoutes(true); });
  $("routes-none").addEventListener("click", () => { setAllRoutes(false); });
  $("bbox-toggle").addEventListener("change", onBboxToggle);
  map.on("moveend", onMoveEnd);
}
