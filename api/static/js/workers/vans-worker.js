/* The van layer's painter off the page's main thread (a module worker started by
 * js/vans.js).  Messages from the page:
 *   {type: "looks", defs}                         looks to define (vanpaint.js)
 *   {type: "frame", changes, view}  changed vans ([slot, lon, lat, look] each, one
 *                                  Float64Array, transferred) and the view to draw
 * Answer to each frame: {type: "drawn", id: view.id, bitmap} — the picture as an
 * ImageBitmap (transferred, no copy), which the page shows together with the view's
 * position, so the vans never lag the map when it pans.
 */

import { createPainter } from "../vanpaint.js";

const painter = createPainter((w, h) => new OffscreenCanvas(w, h));
let canvas = null, ctx = null;

self.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "looks") {
    painter.defineLooks(m.defs);
  } else if (m.type === "frame") {
    painter.update(m.changes);
    const v = m.view;
    const W = Math.max(1, Math.round(v.w * v.ratio)), H = Math.max(1, Math.round(v.h * v.ratio));
    if (!canvas || canvas.width !== W || canvas.height !== H) {
      canvas = new OffscreenCanvas(W, H);
      ctx = canvas.getContext("2d");
    }
    painter.draw(ctx, v);
    const bitmap = canvas.transferToImageBitmap();
    self.postMessage({ type: "drawn", id: v.id, bitmap: bitmap }, [bitmap]);
  }
};
