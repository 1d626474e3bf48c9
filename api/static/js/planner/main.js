/* The planner workspace (planner/index.html): route, direction, days and checkpoint →
 * (a) headways at the checkpoint, (b) the time-space diagram, (c) heat maps checkpoint ×
 * hour (Cv_h or bunched share) and segment × 5 minutes (travel time / free flow), (d) the
 * LOS table; (e) CSV and PNG of each.  Sign-in is the war room's (js/session.js:
 * #token= traded for a session cookie); every data call needs the planner role.
 * `window.plannerState` is a read-only view for the browser test.
 *
 *   data.js    days, REST calls, day-by-day loading with progress
 *   charts.js  the uPlot charts and colour scales
 *   export.js  CSV and PNG downloads
 */

import { setConnection } from "../connection.js";
import { $, escapeHtml } from "../html.js";
import { API, api } from "../rest.js";
import { startSession, takeTokenFromAddress } from "../session.js";
import { state as pageState } from "../state.js";
import { headwaysChart, heatChart, LOS_COLOURS, losOf, mareyChart, ramp } from "./charts.js";
import { MAREY_MAX_DAYS, MAX_DAYS, NoPlannerRole, addDays, daysBetween, loadAll, today } from "./data.js";
import { downloadCsv, downloadPng } from "./export.js";

takeTokenFromAddress();  // first: the token out of the address bar

const view = { status: "starting", role: null, routes: {}, selection: null, data: null,
               charts: {}, tables: {}, progress: [0, 0], error: null };
window.plannerState = view;

const LOS_COLUMNS = ["checkpoint_id", "count", "mean_s", "median_s", "std_s", "cv", "awt_s",
  "ewt_s", "bunched_share", "gapped_share", "reference_s", "target_s", "los"];

function showMessage(text) {
  const el = $("message");
  el.textContent = text;
  el.hidden = !text;
}

function noRole(role) {
  view.status = "forbidden";
  $("controls").hidden = true;
  $("charts").hidden = true;
  const el = $("no-role");
  el.innerHTML = "<p><b>You do not have the planner role.</b> Your token's role is <b>" +
    escapeHtml(role || "unknown") + "</b>; the planner workspace and its reports need the " +
    "<b>planner</b> (or admin) role. Ask an administrator for a token made with " +
    "<code>fleet token create --role planner</code>. The <a href=\"./\">war room</a> " +
    "works with your token.</p>";
  el.hidden = false;
  setConnection("no planner role", "conn-error");
}

// ---- routes and controls
function fillRoutes(geo) {
  geo.features.forEach((f) => {
    const p = f.properties;
    if (p.kind === "route") {
      view.routes[p.code] = { code: p.code, name: p.name, target: p.target_headway_s, checkpoints: [] };
    }
  });
  geo.features.forEach((f) => {
    const p = f.properties;
    if (p.kind === "checkpoint" && view.routes[p.route]) { view.routes[p.route].checkpoints.push(p); }
  });
  const sel = $("route");
  Object.keys(view.routes).sort().forEach((code) => {
    const r = view.routes[code];
    r.checkpoints.sort((a, b) => a.seq - b.seq);
    const o = document.createElement("option");
    o.value = code;
    o.textContent = code + (r.name ? " · " + r.name : "");
    sel.appendChild(o);
  });
}

function fillCheckpoints(keep) {
  const r = view.routes[$("route").value];
  const sel = $("checkpoint");
  sel.textContent = "";
  (r ? r.checkpoints : []).forEach((c) => {
    const o = document.createElement("option");
    o.value = String(c.seq);
    o.textContent = c.id + " · " + (c.dist_m / 1000).toFixed(1) + " km";
    sel.appendChild(o);
  });
  if (keep !== undefined && r && r.checkpoints.some((c) => String(c.seq) === String(keep))) {
    sel.value = String(keep);
  } else if (r && r.checkpoints.length) {
    sel.value = String(r.checkpoints[Math.floor(r.checkpoints.length / 2)].seq);
  }
}

function selection() {
  return { route: $("route").value, direction: Number($("direction").value), from: $("from").value,
           to: $("to").value, checkpoint: Number($("checkpoint").value) };
}

/* Deep links: /planner/#route=B&direction=0&from=2026-11-02&to=2026-11-02&checkpoint=6 */
function fromHash() {
  const h = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  if (h.get("route") && view.routes[h.get("route")]) { $("route").value = h.get("route"); }
  fillCheckpoints(h.get("checkpoint") || undefined);
  if (h.get("direction") === "0" || h.get("direction") === "1") { $("direction").value = h.get("direction"); }
  const day = today();
  $("from").value = h.get("from") || day;
  $("to").value = h.get("to") || h.get("from") || day;
  return h.has("route");
}

function toHash(sel) {
  const h = new URLSearchParams({ route: sel.route, direction: String(sel.direction), from: sel.from,
                                  to: sel.to, checkpoint: String(sel.checkpoint) });
  history.replaceState(null, "", window.location.pathname + "#" + h.toString());
}

// ---- loading
function setProgress(done, total, text) {
  view.progress = [done, total];
  $("progress-box").hidden = false;
  $("progress").max = total;
  $("progress").value = done;
  $("progress-text").textContent = done < total ? "loading " + text + "…" : "loaded " + total + " parts";
}

async function show(event) {
  if (event) { event.preventDefault(); }
  const sel = selection();
  if (!sel.from || !sel.to || sel.to < sel.from) { showMessage("Pick a start day and an end day on or after it."); return; }
  if (daysBetween(sel.from, sel.to).length > MAX_DAYS) {
    showMessage("At most " + MAX_DAYS + " days at a time: pick a shorter range.");
    return;
  }
  toHash(sel);
  showMessage("");
  view.status = "loading";
  view.selection = sel;
  $("load").disabled = true;
  try {
    const data = await loadAll(sel, setProgress);
    view.data = data;
    render(sel, data);
    view.status = "ready";
  } catch (e) {
    if (e instanceof NoPlannerRole) { noRole(view.role); return; }
    view.status = "error";
    view.error = String(e.message || e);
    showMessage("Could not load the data: " + view.error);
  } finally {
    $("load").disabled = false;
  }
}

// ---- rendering
function render(sel, data) {
  const route = view.routes[sel.route];
  const cp = route.checkpoints.find((c) => c.seq === sel.checkpoint);
  const empty = !data.points.length && !data.marey.some((m) => m.passages) && !data.los.length;
  $("charts").hidden = false;
  if (empty) {
    showMessage("No passages of route " + sel.route + " direction " + sel.direction + " from " + sel.from +
      " to " + sel.to + " yet. Passages are detected from the vans' fixes as they arrive (every 5 s); " +
      "pick another day or route, or wait for service to be recorded.");
  }
  renderHeadways(sel, data, cp, route);
  renderMarey(sel, data, route);
  renderHeatHeadways(sel, data, route);
  renderHeatTravel(sel, data);
  renderLos(data);
}

function renderHeadways(sel, data, cp, route) {
  const ref = data.streams.length ? data.streams[0].reference_s : route.target;
  $("headways-where").textContent = (cp ? cp.id : sel.checkpoint) + ", direction " + sel.direction;
  const nb = data.points.filter((p) => p.bunched).length, ng = data.points.filter((p) => p.gapped).length;
  $("headways-note").textContent = data.points.length + " headways; target " +
    (data.target_s ? (data.target_s / 60).toFixed(1) + " min" : "none (reference: the median)") +
    "; bunched " + nb + ", gapped " + ng + (data.truncated ? " (truncated: pick fewer days)" : "");
  view.charts.headways = headwaysChart($("chart-headways"), data.points, ref);
  view.tables.headways = { rows: data.points, columns: ["ts", "direction", "checkpoint_seq", "checkpoint_id",
    "headway_s", "vehicle_id", "previous_vehicle_id", "bunched", "gapped"] };
}

function renderMarey(sel, data, route) {
  const n = data.marey.reduce((s, m) => s + m.passages, 0);
  const vans = new Set();
  data.marey.forEach((m) => m.vehicles.forEach((v) => vans.add(v)));
  const more = data.days.length > MAREY_MAX_DAYS ? " (the first " + MAREY_MAX_DAYS + " days of the range)" : "";
  $("marey-note").textContent = n + " passages of " + vans.size + " vans" + more +
    "; converging lines are vans bunching, wide gaps between lines are gaps in service. Drag to zoom, double-click to reset.";
  const ckpts = data.marey.length ? data.marey[0].checkpoints : route.checkpoints;
  view.charts.marey = mareyChart($("chart-marey"), data.marey, ckpts);
  const rows = [];
  data.marey.forEach((m) => {
    for (let i = 0; i < m.t.length; i++) {
      rows.push({ vehicle_id: m.vehicles[m.van[i]], trip: m.trip[i], ts: new Date(m.t[i]).toISOString(),
                  direction: m.direction[i], checkpoint_seq: m.checkpoint_seq[i], dist_m: m.dist_m[i] });
    }
  });
  view.tables.marey = { rows: rows, columns: ["vehicle_id", "trip", "ts", "direction", "checkpoint_seq", "dist_m"] };
  view.marey = { passages: n, vans: vans.size };
}

function renderHeatHeadways(sel, data, route) {
  const metric = $("heat-metric").value;
  const rows = data.hourly.filter((r) => r.checkpoint_id !== "ALL");
  const seqs = route.checkpoints.map((c) => c.seq);
  const ids = route.checkpoints.map((c) => c.id);
  const hours = Array.from(new Set(rows.map((r) => r.hour))).sort((a, b) => a - b);
  const cell = {};
  rows.forEach((r) => { cell[r.hour + ":" + r.checkpoint_seq] = r; });
  const colour = metric === "cv" ? (v) => LOS_COLOURS[losOf(v)] : (v) => ramp(v / 0.5);
  const spec = {
    x: hours, dx: 1, time: false, rows: ids, rowLabel: "checkpoint",
    value: (i, j) => { const r = cell[hours[i] + ":" + seqs[j]]; return r ? r[metric] : null; },
    colour: colour,
    describe: (i, j) => {
      const r = cell[hours[i] + ":" + seqs[j]];
      return ids[j] + " " + hours[i] + ":00–" + (hours[i] + 1) + ":00 — " + (r ? "Cv " + r.cv + " (LOS " + r.los +
        "), bunched " + pct(r.bunched_share) + ", " + r.count + " headways" : "no headways");
    }
  };
  $("heat-headways-note").textContent = rows.length + " checkpoint-hours (local hour of day, all days of the range pooled).";
  view.charts.heatHeadways = heatChart($("chart-heat-headways"), spec, (t) => { $("legend-heat-headways").textContent = t || legendHeat(metric); });
  $("legend-heat-headways").textContent = legendHeat(metric);
  view.tables.heatHeadways = { rows: rows, columns: ["hour", "checkpoint_seq", "checkpoint_id", "count", "cv", "los",
    "bunched_share", "gapped_share", "mean_s"] };
  view.heat = { metric: metric, cells: rows.length };
}

function legendHeat(metric) {
  return metric === "cv" ? "colour: LOS band of Cv_h — A green … F dark red; hover a cell for its figures"
                         : "colour: bunched share, 0 green … ≥ 50 % dark red; hover a cell for its figures";
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(0) + " %"; }

function renderHeatTravel(sel, data) {
  const rows = data.congestion;
  const buckets = Array.from(new Set(rows.map((r) => Date.parse(r.bucket) / 1000))).sort((a, b) => a - b);
  const segs = Array.from(new Set(rows.map((r) => r.from_seq))).sort((a, b) => a - b);
  if (sel.direction === 1) { segs.reverse(); }
  const bIndex = {}, cell = {};
  buckets.forEach((b, i) => { bIndex[b] = i; });
  rows.forEach((r) => { cell[bIndex[Date.parse(r.bucket) / 1000] + ":" + r.from_seq] = r; });
  const byFlow = rows.filter((r) => r.freeflow_travel_s).length;
  const ratio = (r) => (r.freeflow_travel_s ? r.median_travel_s / r.freeflow_travel_s : null);
  const spec = {
    x: buckets, dx: 300, time: true, rows: segs.map((s) => s + "→" + (sel.direction === 0 ? s + 1 : s - 1)),
    rowLabel: "segment",
    value: (i, j) => { const r = cell[i + ":" + segs[j]]; return r ? ratio(r) : null; },
    colour: (v) => ramp((v - 1) / 2),
    describe: (i, j) => {
      const r = cell[i + ":" + segs[j]];
      if (!r) { return "no traversals"; }
      return "segment " + r.from_seq + "→" + r.to_seq + " at " + r.bucket.slice(11, 16) + " UTC: median " +
        r.median_travel_s + " s, free flow " + (r.freeflow_travel_s === null ? "unknown" : r.freeflow_travel_s + " s") +
        ", " + r.samples + " traversals";
    }
  };
  $("heat-travel-note").textContent = rows.length + " segment-buckets" + (rows.length && !byFlow
    ? "; no free-flow speed yet (it needs off-peak traversals of the last 28 days), so nothing is coloured" : "") + ".";
  view.charts.heatTravel = heatChart($("chart-heat-travel"), spec, (t) => { $("legend-heat-travel").textContent = t || legendTravel; });
  $("legend-heat-travel").textContent = legendTravel;
  view.tables.heatTravel = { rows: rows, columns: ["bucket", "route", "direction", "from_seq", "to_seq", "samples",
    "vans", "median_travel_s", "freeflow_travel_s", "congestion_level"] };
  view.travel = { cells: rows.length, withFreeflow: byFlow };
}
const legendTravel = "colour: median travel time / free-flow travel time — 1 green … ≥ 3 dark red; hover a cell";

function renderLos(data) {
  const thead = $("los").querySelector("thead"), tbody = $("los").querySelector("tbody");
  const heads = ["checkpoint", "headways", "mean", "median", "σ", "Cv_h", "AWT", "EWT", "bunched", "gapped", "LOS"];
  thead.innerHTML = "<tr>" + heads.map((h) => "<th>" + h + "</th>").join("") + "</tr>";
  const min = (s) => (s === null || s === undefined ? "–" : (s / 60).toFixed(1) + " min");
  tbody.innerHTML = data.los.map((r) => "<tr" + (r.checkpoint_id === "ALL" ? " class=\"all\"" : "") + " data-checkpoint=\"" +
    escapeHtml(r.checkpoint_id) + "\"><td>" + escapeHtml(r.checkpoint_id) + "</td><td>" + r.count + "</td><td>" +
    min(r.mean_s) + "</td><td>" + min(r.median_s) + "</td><td>" + min(r.std_s) + "</td><td>" +
    (r.cv === null ? "–" : r.cv.toFixed(3)) + "</td><td>" + min(r.awt_s) + "</td><td>" + min(r.ewt_s) + "</td><td>" +
    pct(r.bunched_share) + "</td><td>" + pct(r.gapped_share) + "</td><td class=\"los los-" + escapeHtml(r.los) +
    "\" style=\"background:" + (LOS_COLOURS[r.los] || "transparent") + "\">" + escapeHtml(r.los) + "</td></tr>").join("") ||
    "<tr><td colspan=\"11\" class=\"note\">no headways in this range</td></tr>";
  view.tables.los = { rows: data.los, columns: LOS_COLUMNS };
}

// ---- downloads
const TITLES = { headways: "Headways", marey: "Time-space diagram", heatHeadways: "Checkpoint × hour",
                 heatTravel: "Segment travel time / free flow", los: "Level of service" };

function fileBase(name) {
  const s = view.selection;
  return "planner-" + name + "-" + s.route + "-d" + s.direction + "-" + s.from + (s.to !== s.from ? "_" + s.to : "");
}

function bindDownloads() {
  document.querySelectorAll("[data-csv]").forEach((b) => b.addEventListener("click", () => {
    const t = view.tables[b.dataset.csv];
    if (t) { downloadCsv(fileBase(b.dataset.csv) + ".csv", t.rows, t.columns); }
  }));
  document.querySelectorAll("[data-png]").forEach((b) => b.addEventListener("click", () => {
    const u = view.charts[b.dataset.png], s = view.selection;
    if (u) {
      downloadPng(fileBase(b.dataset.png) + ".png", u, TITLES[b.dataset.png] + " · route " + s.route +
        " direction " + s.direction + " · " + s.from + (s.to !== s.from ? " – " + s.to : ""));
    }
  }));
}

// ---- start: session, role, routes, then the charts of the chosen (or linked) selection
startSession().then(() => {
  if (pageState.error) { throw new Error(pageState.error); }
  return api(API + "/config");
}).then((cfg) => {
  view.role = cfg.role;
  if ((cfg.permissions || []).indexOf("plan") < 0) { noRole(cfg.role); return null; }
  setConnection("signed in · " + cfg.role, "conn-live");
  return api(API + "/routes");
}).then((geo) => {
  if (!geo) { return; }
  fillRoutes(geo);
  $("route").addEventListener("change", () => fillCheckpoints());
  $("heat-metric").addEventListener("change", () => {
    if (view.data) { renderHeatHeadways(view.selection, view.data, view.routes[view.selection.route]); }
  });
  $("from").max = addDays(today(), 1);
  $("controls").addEventListener("submit", show);
  bindDownloads();
  $("controls").hidden = false;
  view.status = "idle";
  fromHash();
  show();
}).catch((e) => {
  view.status = "error";
  view.error = String(e.message || e);
});
