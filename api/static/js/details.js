/* The details of the selected van, and its recent track drawn as a dashed line. */

import { $, escapeHtml } from "./html.js";
import { map } from "./map.js";
import { API, api } from "./rest.js";
import { routeNames } from "./routes.js";
import { state } from "./state.js";
import { restyle, vans } from "./vans.js";

const TRACK_WINDOW_MS = 30 * 60 * 1000;

let trackLayer = null;

export function selectVan(id) {
  const previous = state.selectedVan;
  state.selectedVan = id;
  if (previous) { restyle(previous); }
  restyle(id);
  $("details").hidden = false;
  renderDetails();
  loadTrack(id);
}

export function closeDetails() {
  const previous = state.selectedVan;
  state.selectedVan = null;
  if (previous) { restyle(previous); }
  $("details").hidden = true;
  if (trackLayer) { map.removeLayer(trackLayer); trackLayer = null; }
}

export function renderDetails() {
  const entry = vans[state.selectedVan];
  if (!entry) { return; }
  const v = entry.v;
  $("details-id").textContent = v.id;
  const rows = [
    ["route", (v.route || "–") + (routeNames[v.route] ? " · " + routeNames[v.route] : "")],
    ["status", v.status || "online"],
    ["last fix", v.ts ? new Date(v.ts).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"],
    ["speed", typeof v.speed === "number" ? (v.speed * 3.6).toFixed(1) + " km/h" : "–"],
    ["heading", typeof v.heading === "number" ? v.heading.toFixed(0) + "°" : "–"],
    ["position", v.lat.toFixed(5) + ", " + v.lon.toFixed(5)]
  ];
  $("details-fields").innerHTML = rows.map((r) =>
    "<dt>" + r[0] + "</dt><dd>" + escapeHtml(r[1]) + "</dd>").join("");
}

function loadTrack(id) {
  const entry = vans[id];
  if (!entry) { return; }
  const to = entry.v.ts || Date.now();
  const from = to - TRACK_WINDOW_MS;
  const url = API + "/vehicles/" + encodeURIComponent(id) + "/track?format=geojson" +
    "&from=" + encodeURIComponent(new Date(from).toISOString()) +
    "&to=" + encodeURIComponent(new Date(to + 60000).toISOString());
  $("details-track").textContent = "loading track…";
  api(url).then((geo) => {
    if (state.selectedVan !== id) { return; }
    if (trackLayer) { map.removeLayer(trackLayer); }
    trackLayer = L.geoJSON(geo, {
      style: { color: "#111", weight: 3, opacity: 0.8, dashArray: "4 4" },
      pointToLayer: (_f, latlng) => L.circleMarker(latlng, { radius: 2, color: "#111" })
    }).addTo(map);
    const n = countCoords(geo);
    state.trackPoints = n;
    $("details-track").textContent = n + (n === 1 ? " fix" : " fixes") + " in the last 30 min (dashed line)";
  }).catch((e) => {
    $("details-track").textContent = "track unavailable (" + e.message + ")";
  });
}

function countCoords(geo) {
  let n = 0;
  (geo.features || [geo]).forEach((f) => {
    const g = f.geometry || f;
    if (!g) { return; }
    if (g.type === "LineString" || g.type === "MultiPoint") { n += g.coordinates.length; }
    else if (g.type === "Point") { n += 1; }
  });
  return n;
}
