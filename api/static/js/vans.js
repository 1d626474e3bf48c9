/* The vans: a canvas over the map, painted off the main thread.
 *
 * `vans` maps id → {v: the last van record, slot: its index in the painter's arrays}.
 * A frame only updates records and marks their slots; at the end of that task the
 * changed slots (lon, lat, look: one typed array) and the map's view go to the painter
 * (js/vanpaint.js) in a worker (js/workers/vans-worker.js), which projects and stamps
 * every van straight into canvases handed to it (OffscreenCanvas).  At most one picture
 * is being painted at a time: what changes meanwhile goes with the next.  Without
 * OffscreenCanvas (or if the worker fails) the same painter runs here, on one canvas.
 * The main thread keeps the records, hit-testing (clicks and hover, projected on demand)
 * and Leaflet: at 5,000 vans four times a second a few ms a frame (docs/benchmarks.md,
 * "War room").
 * What the other parts do about a van (select it, list a new route, show or close its
 * details) is wired in by onVanEvents().
 */

import { map } from "./map.js";
import { colorOf, routeNames } from "./routes.js";
import { routeVisible, state } from "./state.js";
import { NO_LOOK, createPainter, worldPoint } from "./vanpaint.js";

export const vans = {};

const HIT_PX = 9;      // a click this close to a van selects it
const MAX_RATIO = 2;   // pixel ratio painted at most (a 4k screen's 3× is 2.25× the pixels)

const handlers = {
  clicked: (_id) => {},      // a van was clicked
  newRoute: () => {},        // a van of a route the page does not list yet
  selectedChanged: () => {}, // the selected van moved or changed status
  selectedRemoved: () => {}  // the selected van left the map
};

export function onVanEvents(h) { Object.assign(handlers, h); }

/* Painted by the worker: two canvases handed to it (transferControlToOffscreen), so a
 * picture reaches the screen without a frame of the page's own.  A picture for the same
 * view goes to the shown canvas; one for a new view (pan, zoom, resize) to the hidden
 * one, placed there first and shown when the worker says it is painted — so the dots
 * never sit at the old view's offset for a frame.  Painted here: one "2d" canvas. */
let canvases = [];     // the worker's two canvases (elements), or [the one painted here]
let front = 0;         // the shown one
let frontView = null;  // the view the shown canvas was painted for
let worker = null;
let painter = null;    // the in-page painter, without a worker
let ctx = null;        // its "2d" context
let scheduled = false; // a flush is queued
let busy = false;      // a picture is being painted by the worker
let again = false;     // something changed while it was
let swapTo = -1;       // the canvas to show when the picture in flight is painted
let drawn = 0;         // pictures painted so far (for the test hook)

const slotOf = [];     // slot → entry (or null: free)
const freeSlots = [];
const dirty = new Set();   // slots changed since the last picture was sent
const lookIndex = new Map();  // "colour|status|heading|selected" → look index
const lookDefs = [];          // every look defined: [index, colour, status, heading, selected]
let newLooks = [];            // defined since the last message

function ratio() { return Math.min(window.devicePixelRatio || 1, MAX_RATIO); }

const VanLayer = L.Layer.extend({
  onAdd(m) {
    makeCanvases(m);
    m.on("move zoomend viewreset resize", onMapMove);
    m.on("click", onMapClick);
    m.on("mousemove", onMouseMove);
  },
  onRemove(m) {
    m.off("move zoomend viewreset resize", onMapMove);
    m.off("click", onMapClick);
    m.off("mousemove", onMouseMove);
    canvases.forEach((c) => c.remove());
    canvases = [];
  }
});

function newCanvas(m) {
  const c = L.DomUtil.create("canvas", "van-layer leaflet-zoom-hide");
  c.style.pointerEvents = "none";  // clicks reach the map (and the route lines)
  m.getPanes().overlayPane.appendChild(c);
  return c;
}

function makeCanvases(m) {
  const offscreen = typeof OffscreenCanvas === "function" && typeof Worker === "function" &&
    typeof HTMLCanvasElement.prototype.transferControlToOffscreen === "function";
  if (!painter && offscreen) {
    try {
      worker = new Worker(new URL("./workers/vans-worker.js", import.meta.url), { type: "module" });
      worker.onmessage = onPainted;
      worker.onerror = (e) => { console.warn("van painter worker", e.message || e); paintHere(); };
      canvases = [newCanvas(m), newCanvas(m)];
      canvases[1].style.visibility = "hidden";
      const handed = canvases.map((c) => c.transferControlToOffscreen());
      worker.postMessage({ type: "canvases", canvases: handed }, handed);
      return;
    } catch (e) {
      console.warn("van painter worker", e);
      if (worker) { worker.terminate(); worker = null; }
      canvases.forEach((c) => c.remove());
    }
  }
  paintHere();
}

/* No worker (or it failed): the same painter on this thread, from every van afresh. */
function paintHere() {
  if (worker) { worker.terminate(); worker = null; }
  busy = false; swapTo = -1; frontView = null;
  painter = createPainter((w, h) => { const c = document.createElement("canvas"); c.width = w; c.height = h; return c; });
  painter.defineLooks(lookDefs);
  newLooks = [];
  for (let s = 0; s < slotOf.length; s++) { dirty.add(s); }
  canvases.forEach((c) => c.remove());  // a canvas handed to a worker cannot be drawn here
  canvases = [newCanvas(map)];
  front = 0;
  ctx = canvases[0].getContext("2d");
  requestDraw();
}

let layer = null;

function ensureLayer() {
  if (!layer) { layer = new VanLayer(); layer.addTo(map); }
}

/* Data changes go at the end of the current task (a websocket frame's, a replay tick's):
 * no animation frame of the page's own is needed for the worker to paint. */
function requestDraw() {
  if (scheduled) { return; }
  scheduled = true;
  queueMicrotask(flush);
}

/* Map moves: at most once per animation frame. */
let moveQueued = false;
function onMapMove() {
  if (moveQueued) { return; }
  moveQueued = true;
  requestAnimationFrame(() => { moveQueued = false; requestDraw(); });
}

function markDirty(entry) {
  dirty.add(entry.slot);
  requestDraw();
}

/* The look of a van (kept on its entry while colour, status, heading step and selection
 * stay the same: most frames change only positions). */
function lookOf(e, selected) {
  const v = e.v;
  const status = v.status || "online";
  const heading = typeof v.heading === "number" && status !== "offline" ?
    (Math.round(v.heading / 10) % 36) * 10 : null;
  const color = colorOf(v.route || "?");
  if (e.look !== undefined && e.lookColor === color && e.lookStatus === status &&
      e.lookHeading === heading && e.lookSelected === selected) { return e.look; }
  e.lookColor = color; e.lookStatus = status; e.lookHeading = heading; e.lookSelected = selected;
  e.look = lookIndexOf(color, status, heading, selected);
  return e.look;
}

function lookIndexOf(color, status, heading, selected) {
  const key = color + "|" + status + "|" + heading + "|" + selected;
  let i = lookIndex.get(key);
  if (i === undefined) {
    i = lookDefs.length;
    lookIndex.set(key, i);
    const def = [i, color, status, heading, selected];
    lookDefs.push(def);
    newLooks.push(def);
  }
  return i;
}

/* The map's view now: container point = world pixel at this zoom − (ox, oy). */
function currentView() {
  const size = map.getSize();
  const origin = map.getPixelOrigin();
  const topLeft = map.containerPointToLayerPoint([0, 0]);
  const sel = state.selectedVan && vans[state.selectedVan] ? vans[state.selectedVan].slot : -1;
  return {
    zoom: map.getZoom(), ox: origin.x + topLeft.x, oy: origin.y + topLeft.y,
    w: size.x, h: size.y, ratio: ratio(), sel: sel, left: topLeft.x, top: topLeft.y
  };
}

/* The changed slots and the view to the painter: at the end of a task that changed vans,
 * once per animation frame while the map moves, and never two pictures at a time. */
function flush() {
  scheduled = false;
  if (!canvases.length) { return; }
  if (busy) { again = true; return; }  // sent when the picture being painted is done
  const n = dirty.size;
  const buf = new Float64Array(4 * n);  // [slot, lon, lat, look] per changed van: one transfer
  let k = 0;
  for (const s of dirty) {
    const e = slotOf[s];
    buf[k] = s;
    if (e) {
      buf[k + 1] = e.v.lon; buf[k + 2] = e.v.lat; buf[k + 3] = lookOf(e, state.selectedVan === e.id);
    } else {
      buf[k + 3] = NO_LOOK;
    }
    k += 4;
  }
  dirty.clear();
  const view = currentView();
  if (!worker) {
    painter.defineLooks(newLooks);
    newLooks = [];
    painter.update(buf);
    place(canvases[0], view, true);
    painter.draw(ctx, view);
    drawn++;
    return;
  }
  if (newLooks.length) { worker.postMessage({ type: "looks", defs: newLooks }); newLooks = []; }
  let target = front;
  if (!sameView(view, frontView)) {  // a new view: painted on the hidden canvas, then shown
    target = 1 - front;
    place(canvases[target], view, false);
    swapTo = target;
    frontView = view;
  }
  busy = true;
  worker.postMessage({ type: "frame", canvas: target, changes: buf, view: view }, [buf.buffer]);
}

function sameView(a, b) {
  return b !== null && a.zoom === b.zoom && a.ox === b.ox && a.oy === b.oy && a.w === b.w &&
    a.h === b.h && a.ratio === b.ratio && a.left === b.left && a.top === b.top;
}

/* The canvas sits in the map pane, which pans: pinned to the container's top-left. */
function place(c, view, sized) {
  if (sized) {  // the worker sizes its own canvases
    const W = Math.max(1, Math.round(view.w * view.ratio)), H = Math.max(1, Math.round(view.h * view.ratio));
    if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
  }
  if (c.style.width !== view.w + "px") { c.style.width = view.w + "px"; }
  if (c.style.height !== view.h + "px") { c.style.height = view.h + "px"; }
  L.DomUtil.setPosition(c, L.point(view.left, view.top));
}

function onPainted(ev) {
  if (ev.data.type !== "painted") { return; }
  busy = false;
  drawn++;
  if (swapTo >= 0 && canvases.length === 2) {
    canvases[swapTo].style.visibility = "";
    canvases[1 - swapTo].style.visibility = "hidden";
    front = swapTo;
  }
  swapTo = -1;
  if (again) { again = false; requestDraw(); }
}

/* The van under a container point (the nearest within HIT_PX; the selected one wins ties).
 * Projected here, as the painter does, once per move or zoom of each van. */
function vanAt(x, y) {
  const size = map.getSize();
  const zoom = map.getZoom();
  const origin = map.getPixelOrigin();
  const topLeft = map.containerPointToLayerPoint([0, 0]);
  const ox = origin.x + topLeft.x, oy = origin.y + topLeft.y;
  let best = null, bestD = HIT_PX * HIT_PX;
  for (const id in vans) {
    const e = vans[id];
    const v = e.v;
    if (e.pz !== zoom || e.plat !== v.lat || e.plon !== v.lon) {
      const w = worldPoint(v.lat, v.lon, zoom);
      e.wx = w[0]; e.wy = w[1]; e.pz = zoom; e.plat = v.lat; e.plon = v.lon;
    }
    const ex = e.wx - ox, ey = e.wy - oy;
    if (ex < -20 || ey < -20 || ex > size.x + 20 || ey > size.y + 20) { continue; }
    const d = (ex - x) * (ex - x) + (ey - y) * (ey - y);
    if (d < bestD || (d === bestD && id === state.selectedVan)) { best = id; bestD = d; }
  }
  return best;
}

function onMapClick(ev) {
  const id = vanAt(ev.containerPoint.x, ev.containerPoint.y);
  if (id) { handlers.clicked(id); }
}

let hoverAt = null;  // hover hit-tests: at most one per animation frame
function onMouseMove(ev) {
  const first = hoverAt === null;
  hoverAt = ev.containerPoint;
  if (!first) { return; }
  requestAnimationFrame(() => {
    const p = hoverAt;
    hoverAt = null;
    const id = vanAt(p.x, p.y);
    map.getContainer().style.cursor = id ? "pointer" : "";
    map.getContainer().title = id ? id + (vans[id].v.route ? " · " + vans[id].v.route : "") : "";
  });
}

export function upsertVan(v) {
  if (!routeVisible(v.route)) { return; }
  ensureLayer();
  const entry = vans[v.id];
  if (!entry) {
    const slot = freeSlots.length ? freeSlots.pop() : slotOf.length;
    const e = vans[v.id] = { id: v.id, v: v, slot: slot };
    slotOf[slot] = e;
    markDirty(e);
    if (!routeNames[v.route] && state.routes.indexOf(v.route) < 0) { handlers.newRoute(); }
    return;
  }
  // never move a van back in time (the server guarantees it; keep the page honest too)
  if (entry.v.ts && v.ts && v.ts < entry.v.ts) { return; }
  entry.v = v.status ? v : Object.assign({}, entry.v, v, { status: entry.v.status });
  markDirty(entry);
  if (state.selectedVan === v.id) { handlers.selectedChanged(); }
}

export function removeVan(id) {
  const entry = vans[id];
  if (!entry) { return; }
  delete vans[id];
  freeSlot(entry);
  if (state.selectedVan === id) { handlers.selectedRemoved(); }
}

/* Every van off the map (replay seeks, back to live). */
export function clearVans() {
  Object.keys(vans).forEach((id) => { freeSlot(vans[id]); delete vans[id]; });
}

function freeSlot(entry) {
  slotOf[entry.slot] = null;
  freeSlots.push(entry.slot);
  markDirty(entry);
}

export function setStatus(id, status) {
  const entry = vans[id];
  if (!entry) { return; }
  entry.v = Object.assign({}, entry.v, { status: status });
  markDirty(entry);
  if (state.selectedVan === id) { handlers.selectedChanged(); }
}

/* Restyle after a change of selection; the selected van is drawn on top. */
export function restyle(id) {
  if (vans[id]) { markDirty(vans[id]); } else { requestDraw(); }
}

/* What the map shows, for the test hook: one record per van, by id. */
export function markerViews() {
  return Object.keys(vans).sort().map((id) => {
    const e = vans[id];
    return {
      id: id, route: e.v.route, status: e.v.status || "online",
      lat: e.v.lat, lon: e.v.lon, ts: e.v.ts, onMap: true
    };
  });
}

/* Where a van is drawn (container pixels) and how many redraws so far, for the tests. */
export function vanPoint(id) {
  const e = vans[id];
  if (!e) { return null; }
  const p = map.latLngToContainerPoint([e.v.lat, e.v.lon]);
  return { x: p.x, y: p.y, redraws: drawn };
}
