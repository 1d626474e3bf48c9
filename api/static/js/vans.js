/* The vans: one canvas over the map, redrawn once per animation frame when something moved.
 *
 * `vans` maps id → {v: the last van record, x, y: its point on the canvas (for clicks)}.
 * A delta only updates records and marks the layer dirty; the next animation frame
 * projects and draws every van in one pass (dot in the route's colour, heading arrow,
 * stale faded, offline grey with a cross, the selected van with a halo, drawn last).
 * One DOM marker per van (Leaflet divIcons) cost 350 ms of main thread per frame at
 * 5,000 vans; this layer stays within a display frame (docs/benchmarks.md, "War room").
 * What the other parts do about a van (select it, list a new route, show or close its
 * details) is wired in by onVanEvents().
 */

import { map } from "./map.js";
import { colorOf, routeNames } from "./routes.js";
import { routeVisible, state } from "./state.js";

export const vans = {};

const RADIUS = 4.5;    // dot radius, px
const HIT_PX = 9;      // a click this close to a van selects it
const ARROW = 8.5;     // arrow tip distance from the centre, px

const handlers = {
  clicked: (_id) => {},      // a van was clicked
  newRoute: () => {},        // a van of a route the page does not list yet
  selectedChanged: () => {}, // the selected van moved or changed status
  selectedRemoved: () => {}  // the selected van left the map
};

export function onVanEvents(h) { Object.assign(handlers, h); }

let canvas = null;
let ctx = null;
let dirty = false;
let drawn = 0;  // redraws so far (for the test hook)

const VanLayer = L.Layer.extend({
  onAdd(m) {
    canvas = L.DomUtil.create("canvas", "van-layer leaflet-zoom-hide");
    canvas.style.pointerEvents = "none";  // clicks reach the map (and the route lines)
    ctx = canvas.getContext("2d");
    m.getPanes().overlayPane.appendChild(canvas);
    this._resize();
    m.on("move zoomend viewreset", requestDraw);
    m.on("resize", this._resize, this);
    m.on("click", onMapClick);
    m.on("mousemove", onMouseMove);
  },
  onRemove(m) {
    m.off("move zoomend viewreset", requestDraw);
    m.off("resize", this._resize, this);
    m.off("click", onMapClick);
    m.off("mousemove", onMouseMove);
    canvas.remove();
    canvas = ctx = null;
  },
  _resize() {
    const size = map.getSize();
    const ratio = window.devicePixelRatio || 1;
    canvas.width = size.x * ratio;
    canvas.height = size.y * ratio;
    canvas.style.width = size.x + "px";
    canvas.style.height = size.y + "px";
    requestDraw();
  }
});

let layer = null;

function ensureLayer() {
  if (!layer) { layer = new VanLayer(); layer.addTo(map); }
}

function requestDraw() {
  if (dirty) { return; }
  dirty = true;
  requestAnimationFrame(draw);
}

function draw() {
  dirty = false;
  if (!ctx) { return; }
  drawn++;
  const size = map.getSize();
  const ratio = window.devicePixelRatio || 1;
  // the canvas sits in the map pane, which pans: pin it to the container's top-left
  L.DomUtil.setPosition(canvas, map.containerPointToLayerPoint([0, 0]));
  if (!frame || frame.width !== canvas.width || frame.height !== canvas.height) {
    frame = ctx.createImageData(canvas.width, canvas.height);
    pixels = new Uint32Array(frame.data.buffer);
  }
  pixels.fill(0);
  // container point = world pixel at this zoom − pixel origin − where the pane has panned
  const zoom = map.getZoom();
  const origin = map.getPixelOrigin();
  const topLeft = map.containerPointToLayerPoint([0, 0]);
  const ox = origin.x + topLeft.x, oy = origin.y + topLeft.y;
  let selected = null;
  for (const id in vans) {
    const e = vans[id];
    const v = e.v;
    if (e.pz !== zoom || e.plat !== v.lat || e.plon !== v.lon) {  // project once per move/zoom
      const w = map.project([v.lat, v.lon], zoom);
      e.wx = w.x; e.wy = w.y; e.pz = zoom; e.plat = v.lat; e.plon = v.lon;
    }
    const x = e.wx - ox, y = e.wy - oy;
    e.x = x; e.y = y;
    e.visible = x > -20 && y > -20 && x < size.x + 20 && y < size.y + 20;
    if (!e.visible) { continue; }
    if (id === state.selectedVan) { selected = e; continue; }
    stamp(spriteOf(v, false), Math.round(x * ratio), Math.round(y * ratio));
  }
  if (selected) {  // on top of the others
    stamp(spriteOf(selected.v, true), Math.round(selected.x * ratio), Math.round(selected.y * ratio));
  }
  ctx.putImageData(frame, 0, 0);
}

/* Vans are stamped into one pixel buffer, put on the canvas once per frame: with
 * Chromium's software canvas (no GPU in a control-room PC's browser, or headless) 5,000
 * drawImage calls cost ~30 ms a frame and 5,000 vector dots ~100 ms; copying each van's
 * ~100 opaque pixels costs a few ms.  Each look (route colour, status, heading in 10°
 * steps, selected) is drawn once with vector paths, then kept as its non-transparent
 * pixels: offset, colour, alpha. */
let frame = null;   // ImageData of the whole canvas
let pixels = null;  // its Uint32 view (little-endian ABGR)

function stamp(sprite, cx, cy) {
  const w = frame.width, h = frame.height, px = pixels;
  const { dx, dy, rgba, alpha } = sprite;
  for (let i = 0; i < dx.length; i++) {
    const x = cx + dx[i], y = cy + dy[i];
    if (x < 0 || y < 0 || x >= w || y >= h) { continue; }
    const at = y * w + x;
    const a = alpha[i];
    // edges keep their smoothing over the map; over another van a half-covered pixel wins
    if (a >= 128 || px[at] === 0) { px[at] = rgba[i]; }
  }
}

const SPRITE = 18;  // css px
const sprites = new Map();

function spriteOf(v, selected) {
  const color = colorOf(v.route || "?");
  const status = v.status || "online";
  const heading = typeof v.heading === "number" && status !== "offline" ?
    (Math.round(v.heading / 10) % 36) * 10 : null;
  const key = color + "|" + status + "|" + heading + "|" + selected;
  let sprite = sprites.get(key);
  if (!sprite) { sprite = pixelsOf(makeSprite(color, status, heading, selected)); sprites.set(key, sprite); }
  return sprite;
}

function pixelsOf(c) {
  const n = c.width, half = Math.floor(n / 2);
  const data = new Uint32Array(c.getContext("2d").getImageData(0, 0, n, n).data.buffer);
  const dx = [], dy = [], rgba = [], alpha = [];
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      const v = data[y * n + x];
      if ((v >>> 24) === 0) { continue; }
      dx.push(x - half); dy.push(y - half); rgba.push(v); alpha.push(v >>> 24);
    }
  }
  return { dx: Int16Array.from(dx), dy: Int16Array.from(dy), rgba: Uint32Array.from(rgba), alpha: Uint8Array.from(alpha) };
}

function makeSprite(color, status, heading, selected) {
  const ratio = window.devicePixelRatio || 1;
  const c = document.createElement("canvas");
  c.width = c.height = SPRITE * ratio;
  const g = c.getContext("2d", { willReadFrequently: true });
  g.setTransform(ratio, 0, 0, ratio, SPRITE / 2 * ratio, SPRITE / 2 * ratio);  // origin: centre
  if (selected) {
    g.beginPath(); g.arc(0, 0, SPRITE / 2, 0, 2 * Math.PI);
    g.fillStyle = "rgba(255, 214, 0, 0.85)"; g.fill();
  }
  if (heading !== null) {  // the arrow ahead of the dot, pointing where the van heads
    g.save();
    g.rotate(heading * Math.PI / 180);
    g.beginPath(); g.moveTo(0, -ARROW); g.lineTo(3.5, -2); g.lineTo(-3.5, -2); g.closePath();
    g.fillStyle = color; g.fill();
    g.strokeStyle = "#222"; g.lineWidth = 0.8; g.stroke();
    g.restore();
  }
  g.beginPath(); g.arc(0, 0, RADIUS + 1, 0, 2 * Math.PI);
  g.fillStyle = "rgba(0, 0, 0, 0.55)"; g.fill();  // outline ring
  g.beginPath(); g.arc(0, 0, RADIUS, 0, 2 * Math.PI);
  g.fillStyle = status === "offline" ? "#9aa3ad" : "#fff"; g.fill();  // white border
  if (status === "offline") {
    g.beginPath();
    g.moveTo(-3, -3); g.lineTo(3, 3); g.moveTo(3, -3); g.lineTo(-3, 3);
    g.strokeStyle = "#c00"; g.lineWidth = 2; g.stroke();
  } else {
    g.beginPath(); g.arc(0, 0, RADIUS - 2, 0, 2 * Math.PI);
    g.fillStyle = color; g.fill();
  }
  if (status === "stale") {  // faded: paled towards white, yet opaque (stamps do not blend)
    g.setTransform(1, 0, 0, 1, 0, 0);
    g.globalCompositeOperation = "source-atop";
    g.fillStyle = "rgba(255, 255, 255, 0.55)";
    g.fillRect(0, 0, c.width, c.height);
  }
  return c;
}

/* The van under a container point (the nearest within HIT_PX; the selected one wins ties). */
function vanAt(x, y) {
  let best = null, bestD = HIT_PX * HIT_PX;
  for (const id of Object.keys(vans)) {
    const e = vans[id];
    if (!e.visible) { continue; }
    const d = (e.x - x) * (e.x - x) + (e.y - y) * (e.y - y);
    if (d < bestD || (d === bestD && id === state.selectedVan)) { best = id; bestD = d; }
  }
  return best;
}

function onMapClick(ev) {
  const id = vanAt(ev.containerPoint.x, ev.containerPoint.y);
  if (id) { handlers.clicked(id); }
}

function onMouseMove(ev) {
  const id = vanAt(ev.containerPoint.x, ev.containerPoint.y);
  map.getContainer().style.cursor = id ? "pointer" : "";
  map.getContainer().title = id ? id + (vans[id].v.route ? " · " + vans[id].v.route : "") : "";
}

export function upsertVan(v) {
  if (!routeVisible(v.route)) { return; }
  ensureLayer();
  const entry = vans[v.id];
  if (!entry) {
    vans[v.id] = { v: v, x: 0, y: 0, visible: false };
    if (!routeNames[v.route] && state.routes.indexOf(v.route) < 0) { handlers.newRoute(); }
    requestDraw();
    return;
  }
  // never move a van back in time (the server guarantees it; keep the page honest too)
  if (entry.v.ts && v.ts && v.ts < entry.v.ts) { return; }
  entry.v = v.status ? v : Object.assign({}, entry.v, v, { status: entry.v.status });
  requestDraw();
  if (state.selectedVan === v.id) { handlers.selectedChanged(); }
}

export function removeVan(id) {
  const entry = vans[id];
  if (!entry) { return; }
  delete vans[id];
  requestDraw();
  if (state.selectedVan === id) { handlers.selectedRemoved(); }
}

/* Every van off the map (replay seeks, back to live). */
export function clearVans() {
  Object.keys(vans).forEach((id) => { delete vans[id]; });
  requestDraw();
}

export function setStatus(id, status) {
  const entry = vans[id];
  if (!entry) { return; }
  entry.v = Object.assign({}, entry.v, { status: status });
  requestDraw();
  if (state.selectedVan === id) { handlers.selectedChanged(); }
}

/* Restyle after a change of selection; the selected van is drawn on top. */
export function restyle(_id) { requestDraw(); }

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
