/* The van markers: one per vehicle, moved by deltas, restyled by status and selection.
 *
 * `vans` maps id → {v: the last van record, marker, key: what its icon shows}.  What the
 * other parts do about a van (select it, list a new route, show or close its details)
 * is wired in by onVanEvents().
 */

import { map } from "./map.js";
import { colorOf, routeNames } from "./routes.js";
import { routeVisible, state } from "./state.js";

export const vans = {};

const handlers = {
  clicked: (_id) => {},      // a marker was clicked
  newRoute: () => {},        // a van of a route the page does not list yet
  selectedChanged: () => {}, // the selected van moved or changed status
  selectedRemoved: () => {}  // the selected van left the map
};

export function onVanEvents(h) { Object.assign(handlers, h); }

function vanIcon(v) {
  const color = colorOf(v.route || "?");
  const heading = typeof v.heading === "number" ? v.heading : null;
  const arrow = heading === null ? "" :
    '<div class="van-arrow" style="transform:rotate(' + heading.toFixed(0) + 'deg)">' +
    '<svg viewBox="0 0 24 24" width="24" height="24"><path d="M12 0 L17 8.5 L7 8.5 Z" fill="' + color + '" stroke="#222" stroke-width="0.8"/></svg></div>';
  return L.divIcon({
    className: "van van-" + (v.status || "online") + (state.selectedVan === v.id ? " van-selected" : ""),
    html: arrow + '<div class="van-dot" style="background:' + color + '"></div>',
    iconSize: [24, 24],
    iconAnchor: [12, 12]
  });
}

function iconKey(v) {
  return (v.route || "") + "|" + (v.status || "online") + "|" + (state.selectedVan === v.id) + "|" +
    (typeof v.heading === "number" ? Math.round(v.heading / 10) : "-");
}

function refreshIcon(entry) {
  const key = iconKey(entry.v);
  if (key !== entry.key) { entry.marker.setIcon(vanIcon(entry.v)); entry.key = key; }
}

export function upsertVan(v) {
  if (!routeVisible(v.route)) { return; }
  const entry = vans[v.id];
  if (!entry) {
    const marker = L.marker([v.lat, v.lon], { icon: vanIcon(v), title: v.id, keyboard: false });
    marker.on("click", () => { handlers.clicked(v.id); });
    marker.addTo(map);
    vans[v.id] = { v: v, marker: marker, key: iconKey(v) };
    if (!routeNames[v.route] && state.routes.indexOf(v.route) < 0) { handlers.newRoute(); }
    return;
  }
  // never move a van back in time (the server guarantees it; keep the page honest too)
  if (entry.v.ts && v.ts && v.ts < entry.v.ts) { return; }
  const status = v.status || entry.v.status;
  entry.v = Object.assign({}, entry.v, v, { status: status });
  entry.marker.setLatLng([v.lat, v.lon]);
  refreshIcon(entry);
  if (state.selectedVan === v.id) { handlers.selectedChanged(); }
}

export function removeVan(id) {
  const entry = vans[id];
  if (!entry) { return; }
  map.removeLayer(entry.marker);
  delete vans[id];
  if (state.selectedVan === id) { handlers.selectedRemoved(); }
}

export function setStatus(id, status) {
  const entry = vans[id];
  if (!entry) { return; }
  entry.v = Object.assign({}, entry.v, { status: status });
  refreshIcon(entry);
  if (state.selectedVan === id) { handlers.selectedChanged(); }
}

/* Restyle after a change of selection; the selected van is drawn on top. */
export function restyle(id) {
  const entry = vans[id];
  if (!entry) { return; }
  refreshIcon(entry);
  entry.marker.setZIndexOffset(state.selectedVan === id ? 1000 : 0);
}

/* What the map shows, for the test hook: one record per marker, by id. */
export function markerViews() {
  return Object.keys(vans).sort().map((id) => {
    const e = vans[id];
    const ll = e.marker.getLatLng();
    return {
      id: id, route: e.v.route, status: e.v.status || "online",
      lat: ll.lat, lon: ll.lng, ts: e.v.ts, onMap: map.hasLayer(e.marker)
    };
  });
}
