/* The van layer's painter off the page's main thread (a module worker started by
 * js/vans.js).  Messages from the page:
 *   {type: "canvases", canvases}           its two canvases (OffscreenCanvas, transferred)
 *   {type: "looks", defs}                  looks to define (vanpaint.js)
 *   {type: "frame", canvas, changes, view} changed vans ([slot, lon, lat, look] each, one
 *                                          Float64Array, transferred), painted for `view`
 *                                          on canvas 0 or 1
 * Answer to each frame, once painted: {type: "painted"} (the page then shows that canvas
 * if it was the hidden one, and sends the next picture).
 */

import { createPainter } from "../vanpaint.js";

const painter = createPainter((w, h) => new OffscreenCanvas(w, h));
let canvases = [];
let contexts = [];

self.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "canvases") {
    canvases = m.canvases;
    contexts = canvases.map((c) => c.getContext("2d"));
  } else if (m.type === "looks") {
    painter.defineLooks(m.defs);
  } else if (m.type === "frame") {
    painter.update(m.changes);
    const v = m.view, c = canvases[m.canvas];
    const W = Math.max(1, Math.round(v.w * v.ratio)), H = Math.max(1, Math.round(v.h * v.ratio));
    if (c.width !== W || c.height !== H) { c.width = W; c.height = H; }
    painter.draw(contexts[m.canvas], v);
    // after this task, whose end hands the picture to the compositor: only then may the
    // page show a canvas that was hidden
    setTimeout(() => { self.postMessage({ type: "painted" }); }, 0);
  }
};
