/* Drawing the vans: the fleet as typed arrays, projected and stamped into one pixel buffer.
 *
 * No DOM here: the same code runs in a worker (js/workers/vans-worker.js, the page's
 * normal case: off the main thread) and, where a browser has no OffscreenCanvas, in the
 * page itself (vans.js).  The page gives every van a slot and sends what changed:
 * slot, lon, lat and its look, four numbers a van in one Float64Array (an index into the looks it defined: route colour, status,
 * heading in 10° steps, selected); the painter keeps them in typed arrays, projects a
 * van once per move or zoom (Web Mercator, as Leaflet's EPSG:3857) and stamps each
 * van's look into one ImageData.
 *
 * Why stamped pixels: with Chromium's software canvas (no GPU in a control-room PC's
 * browser, or headless) 5,000 drawImage calls cost ~30 ms a frame and 5,000 vector dots
 * ~100 ms; copying each van's ~100 opaque pixels costs a few ms.  Each look is drawn
 * once with vector paths, then kept as its non-transparent pixels: offset, colour, alpha.
 */

export const NO_LOOK = 0xffff;  // an empty slot

const RADIUS = 4.5;    // dot radius, css px
const ARROW = 8.5;     // arrow tip distance from the centre, css px
const SPRITE = 18;     // a look's square, css px
const EARTH_R = 6378137;
const MAX_LAT = 85.0511287798;
const D2R = Math.PI / 180;

/* World pixel of (lat, lon) at `zoom`, exactly as Leaflet's L.CRS.EPSG3857.latLngToPoint. */
export function worldPoint(lat, lon, zoom) {
  const scale = 256 * Math.pow(2, zoom);
  const la = Math.max(Math.min(MAX_LAT, lat), -MAX_LAT);
  const sin = Math.sin(la * D2R);
  const mx = EARTH_R * lon * D2R;
  const my = EARTH_R * Math.log((1 + sin) / (1 - sin)) / 2;
  const k = 0.5 / (Math.PI * EARTH_R);
  return [scale * (k * mx + 0.5), scale * (-k * my + 0.5)];
}

/* makeCanvas(w, h) → a canvas (OffscreenCanvas or a DOM one) for drawing the looks. */
export function createPainter(makeCanvas) {
  let cap = 0, top = 0;  // slots allocated, slots in use up to
  let lon = new Float64Array(0), lat = new Float64Array(0);
  let wx = new Float64Array(0), wy = new Float64Array(0), pz = new Float64Array(0);
  let look = new Uint16Array(0);
  const looks = [];      // index → its pixels (built when first drawn)
  const lookDefs = [];   // index → [color, status, heading, selected]
  let lookRatio = 0;     // the pixel ratio the looks were built for
  let image = null, px = null;  // the frame's ImageData and its Uint32 view

  function grow(n) {
    if (n <= cap) { return; }
    const c = Math.max(n, cap * 2, 1024);
    const g64 = (a, fill) => { const b = new Float64Array(c).fill(fill); b.set(a); return b; };
    lon = g64(lon, 0); lat = g64(lat, 0); wx = g64(wx, 0); wy = g64(wy, 0); pz = g64(pz, NaN);
    const l = new Uint16Array(c).fill(NO_LOOK); l.set(look); look = l;
    cap = c;
  }

  return {
    /* defs: [[index, color, status, heading|null, selected], ...] */
    defineLooks(defs) {
      for (const [i, color, status, heading, selected] of defs) {
        lookDefs[i] = [color, status, heading, selected];
        looks[i] = null;
      }
    },

    /* Changed slots: [slot, lon, lat, look] per van, look NO_LOOK when it left. */
    update(changes) {
      let high = 0;
      for (let k = 0; k < changes.length; k += 4) { if (changes[k] >= high) { high = changes[k] + 1; } }
      grow(high);
      for (let k = 0; k < changes.length; k += 4) {
        const s = changes[k];
        if (lon[s] !== changes[k + 1] || lat[s] !== changes[k + 2]) { pz[s] = NaN; }
        lon[s] = changes[k + 1]; lat[s] = changes[k + 2]; look[s] = changes[k + 3];
      }
      if (high > top) { top = high; }
      while (top > 0 && look[top - 1] === NO_LOOK) { top--; }
    },

    /* Draw into ctx (a 2D context of a canvas view.w × view.h css px at view.ratio):
     * container point = world pixel − (ox, oy); the slot `sel` on top. */
    draw(ctx, view) {
      const { zoom, ox, oy, ratio, sel } = view;
      const W = Math.round(view.w * ratio), H = Math.round(view.h * ratio);
      if (lookRatio !== ratio) { looks.fill(null); lookRatio = ratio; }
      if (!image || image.width !== W || image.height !== H) {
        image = ctx.createImageData(W, H);
        px = new Uint32Array(image.data.buffer);
      } else {
        px.fill(0);
      }
      const xmax = view.w + 20, ymax = view.h + 20;
      for (let s = 0; s < top; s++) {
        const lk = look[s];
        if (lk === NO_LOOK || s === sel) { continue; }
        if (pz[s] !== zoom) { project(s, zoom); }
        const x = wx[s] - ox, y = wy[s] - oy;
        if (x < -20 || y < -20 || x > xmax || y > ymax) { continue; }
        stamp(spriteOf(lk), Math.round(x * ratio), Math.round(y * ratio), W, H);
      }
      if (sel >= 0 && sel < top && look[sel] !== NO_LOOK) {  // the selected van on top
        if (pz[sel] !== zoom) { project(sel, zoom); }
        stamp(spriteOf(look[sel]), Math.round((wx[sel] - ox) * ratio), Math.round((wy[sel] - oy) * ratio), W, H);
      }
      ctx.putImageData(image, 0, 0);
    }
  };

  function project(s, zoom) {
    const p = worldPoint(lat[s], lon[s], zoom);
    wx[s] = p[0]; wy[s] = p[1]; pz[s] = zoom;
  }

  function stamp(sprite, cx, cy, w, h) {
    const { dx, dy, rgba, alpha } = sprite;
    for (let i = 0; i < dx.length; i++) {
      const x = cx + dx[i], y = cy + dy[i];
      if (x < 0 || y < 0 || x >= w || y >= h) { continue; }
      const at = y * w + x;
      // edges keep their smoothing over the map; over another van a half-covered pixel wins
      if (alpha[i] >= 128 || px[at] === 0) { px[at] = rgba[i]; }
    }
  }

  function spriteOf(i) {
    let sprite = looks[i];
    if (!sprite) {
      const d = lookDefs[i] || ["#888", "online", null, false];
      sprite = looks[i] = pixelsOf(makeLook(makeCanvas, lookRatio, d[0], d[1], d[2], d[3]));
    }
    return sprite;
  }
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

/* One look: dot in the route's colour, heading arrow, stale faded, offline grey with a
 * cross, the selected van with a halo. */
function makeLook(makeCanvas, ratio, color, status, heading, selected) {
  const n = Math.round(SPRITE * ratio);
  const c = makeCanvas(n, n);
  const g = c.getContext("2d", { willReadFrequently: true });
  g.setTransform(ratio, 0, 0, ratio, n / 2, n / 2);  // origin: centre
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
