/* The congestion layer: offered only when the analytics report endpoint exists; one line
 * per checkpoint-to-checkpoint segment, green (free flow) to red (twice the free-flow
 * time or worse).
 */

import { $ } from "./html.js";
import { map } from "./map.js";
import { API, api } from "./rest.js";
import { checkpoints } from "./routes.js";
import { state } from "./state.js";

const REPORT_WINDOW_MS = 3600 * 1000;

let congestionLayer = null;

/* Offer the layer if the API has the report (asks the OpenAPI document, not the heavy report). */
export function probeCongestion() {
  fetch("openapi.json").then((r) => (r.ok ? r.json() : { paths: {} }))
    .then((doc) => {
      if (!doc.paths || !doc.paths["/" + API + "/reports/congestion"]) { return; }
      state.congestionAvailable = true;
      $("layers").hidden = false;
      $("congestion-toggle").addEventListener("change", toggleCongestion);
    }).catch(() => { /* no analytics */ });
}

function congestionColor(level) {
  if (typeof level !== "number") { return "#888"; }
  if (level < 0.25) { return "#1a9850"; }
  if (level < 0.5) { return "#fee08b"; }
  if (level < 1) { return "#f46d43"; }
  return "#a50026";
}

function levelOf(row) {
  for (const key of ["congestion_level", "congestion", "level"]) {
    if (typeof row[key] === "number") { return row[key]; }
  }
  return null;
}

// One line per checkpoint-to-checkpoint segment (its newest bucket, worst direction),
// drawn between the two checkpoints from /api/v1/routes; cells/points with lat/lon as dots.
function congestionShapes(rows) {
  const segments = {};
  const shapes = [];
  rows.forEach((row) => {
    const level = levelOf(row);
    const cps = checkpoints[row.route];
    if (cps && typeof row.from_seq === "number" && typeof row.to_seq === "number") {
      const a = cps[row.from_seq], b = cps[row.to_seq];
      if (!a || !b) { return; }
      const key = row.route + ":" + Math.min(row.from_seq, row.to_seq) + "-" + Math.max(row.from_seq, row.to_seq);
      const seen = segments[key];
      const newer = !seen || String(row.bucket || "") > String(seen.row.bucket || "");
      const same = seen && String(row.bucket || "") === String(seen.row.bucket || "");
      if (newer || (same && (level || 0) > (seen.level || 0))) {
        segments[key] = { row: row, level: level, latlngs: [a, b] };
      }
    } else if (row.geometry) {
      shapes.push({ geometry: row.geometry, level: level });
    } else if (typeof row.lat === "number" && typeof row.lon === "number") {
      shapes.push({ point: [row.lat, row.lon], level: level });
    }
  });
  Object.keys(segments).forEach((k) => { shapes.push(segments[k]); });
  return shapes;
}

function toggleCongestion(ev) {
  if (congestionLayer) { map.removeLayer(congestionLayer); congestionLayer = null; }
  if (!ev.target.checked) { $("congestion-note").textContent = ""; return; }
  $("congestion-note").textContent = "loading…";
  const since = new Date(Date.now() - REPORT_WINDOW_MS).toISOString();
  api(API + "/reports/congestion?format=json&from=" + encodeURIComponent(since)).then((doc) => {
    const rows = Array.isArray(doc) ? doc : (doc.rows || doc.segments || doc.cells || doc.data || []);
    const shapes = congestionShapes(rows);
    congestionLayer = L.layerGroup();
    shapes.forEach((sh) => {
      const color = congestionColor(sh.level);
      const tip = sh.level === null ? "no free-flow speed yet" : "congestion " + sh.level.toFixed(2);
      if (sh.latlngs) {
        L.polyline(sh.latlngs, { color: color, weight: 9, opacity: 0.75 }).bindTooltip(
          (sh.row.route || "") + " " + sh.row.from_seq + "→" + sh.row.to_seq + ": " + tip).addTo(congestionLayer);
      } else if (sh.geometry) {
        L.geoJSON(sh.geometry, { style: { color: color, weight: 7, opacity: 0.7 } }).addTo(congestionLayer);
      } else {
        L.circleMarker(sh.point, { radius: 9, color: color, fillOpacity: 0.5, weight: 0 }).bindTooltip(tip).addTo(congestionLayer);
      }
    });
    congestionLayer.addTo(map);
    state.congestionShapes = shapes.length;
    $("congestion-note").textContent = shapes.length ?
      shapes.length + " segments (green free flow → red twice the free-flow time or worse)" :
      rows.length + " report rows, nothing to draw yet";
  }).catch((e) => { $("congestion-note").textContent = "unavailable: " + e.message; });
}
