/* The vans: one canvas over the map, painted off the main thread.
 *
 * `vans` maps id → {v: the last van record, slot: its index in the painter's arrays}.
 * A frame only updates records and marks their slots; once per animation frame the
 * changed slots (lon, lat, look as typed arrays) and the map's view go to the painter
 * (js/vanpaint.js) in a worker (js/workers/vans-worker.js), which projects and stamps
 * every van and answers with the picture as an ImageBitmap; the page shows it at the
 * view's position (so the dots never lag a pan).  At most one picture is being painted
 * at a time: what changes meanwhile goes with the next.  Without OffscreenCanvas (or if
 * the worker fails) the same painter runs here.  The main thread keeps the records,
 * hit-testing (clicks and hover, projected on demand) and Leaflet; at 5,000 vans four
 * times a second that is a few ms a frame (docs/benchmarks.md, "War room").
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

let canvas = null;
let ctx = null;        // "bitmaprenderer" (worker paints) or "2d" (painted here)
let worker = null;
let painter = null;    // the in-page painter, without a worker
let scheduled = false; // an animation frame is requested
let busy = false;      // a picture is being painted by the worker
let again = false;     // something changed while it was
let drawn = 0;         // pictures shown so far (for the test hook)
let viewId = 0;
const pinned = new Map();  // view id → the layer point its picture belongs at

const slotOf = [];     // slot → entry (or null: free)
const freeSlots = [];
const dirty = new Set();   // slots changed since the last picture was sent
const lookIndex = new Map();  // "colour|status|heading|selected" → look index
const lookDefs = [];          // every look defined: [index, colour, status, heading, selected]
let newLooks = [];            // defined since the last message

function ratio() { return Math.min(window.devicePixelRatio || 1, MAX_RATIO); }

const VanLayer = L.Layer.extend({
  onAdd(m) {
    makeCanvas(m);
    m.on("move zoomend viewreset resize", onMapMove);
    m.on("click", onMapClick);
    m.on("mousemove", onMouseMove);
  },
  onRemove(m) {
    m.off("move zoomend viewreset resize", onMapMove);
    m.off("click", onMapClick);
    m.off("mousemove", onMouseMove);
    canvas.remove();
    canvas = ctx = null;
  }
});

function makeCanvas(m) {
  canvas = L.DomUtil.create("canvas", "van-layer leaflet-zoom-hide");
  canvas.style.pointerEvents = "none";  // clicks reach the map (and the route lines)
  m.getPanes().overlayPane.appendChild(canvas);
  if (!worker && !painter && typeof OffscreenCanvas === "function" && typeof Worker === "function") {
    try {
      worker = new Worker(new URL("./workers/vans-worker.js", import.meta.url), { type: "module" });
      worker.onmessage = onDrawn;
      worker.onerror = (e) => { console.warn("van painter worker", e.message || e); paintHere(); };
    } catch (e) {
      worker = null;
    }
  }
  ctx = worker ? canvas.getContext("bitmaprenderer") : canvas.getContext("2d");
  if (!worker && !painter) { paintHere(); }
}

/* No worker (or it failed): the same painter on this thread, from every van afresh. */
function paintHere() {
  if (worker) { worker.terminate(); worker = null; }
  busy = false;
  painter = createPainter((w, h) => { const c = document.createElement("canvas"); c.width = w; c.height = h; return c; });
  painter.defineLooks(lookDefs);
  newLooks = [];
  for (let s = 0; s < slotOf.length; s++) { dirty.add(s); }
  if (canvas) {  // a canvas keeps its first context type: a fresh one for "2d"
    const parent = canvas.parentNode;
    canvas.remove();
    canvas = L.DomUtil.create("canvas", "van-layer leaflet-zoom-hide");
    canvas.style.pointerEvents = "none";
    if (parent) { parent.appendChild(canvas); }
    ctx = canvas.getContext("2d");
  }
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
    id: ++viewId, zoom: map.getZoom(), ox: origin.x + topLeft.x, oy: origin.y + topLeft.y,
    w: size.x, h: size.y, ratio: ratio(), sel: sel, left: topLeft.x, top: topLeft.y
  };
}

/* Once per animation frame: the changed slots and the view to the painter. */
function flush() {
  scheduled = false;
  if (!ctx) { return; }
  if (busy) { again = true; return; }  // sent when the picture being painted comes back
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
  if (worker) {
    if (newLooks.length) { worker.postMessage({ type: "looks", defs: newLooks }); newLooks = []; }
    pinned.set(view.id, [view.left, view.top, view.w, view.h]);
    busy = true;
    worker.postMessage({ type: "frame", changes: buf, view: view }, [buf.buffer]);
    return;
  }
  painter.defineLooks(newLooks);
  newLooks = [];
  painter.update(buf);
  place(view.left, view.top, view.w, view.h);
  painter.draw(ctx, view);
  drawn++;
}

/* The canvas sits in the map pane, which pans: pin it to the container's top-left. */
function place(left, top, w, h) {
  const W = Math.max(1, Math.round(w * ratio())), H = Math.max(1, Math.round(h * ratio()));
  if (canvas.width !== W || canvas.height !== H) { canvas.width = W; canvas.height = H; }
  if (canvas.style.width !== w + "px") { canvas.style.width = w + "px"; }
  if (canvas.style.height !== h + "px") { canvas.style.height = h + "px"; }
  L.DomUtil.setPosition(canvas, L.point(left, top));
}

function onDrawn(ev) {
  const m = ev.data;
  if (m.type !== "drawn") { return; }
  busy = false;
  const at = pinned.get(m.id);
  pinned.delete(m.id);
  if (ctx && at && worker) {
    place(at[0], at[1], at[2], at[3]);
    ctx.transferFromImageBitmap(m.bitmap);
    drawn++;
  } else if (m.bitmap) {
    m.bitmap.close();
  }
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
