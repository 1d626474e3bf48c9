/* The planner's charts, drawn with uPlot (vendor/uPlot.iife.min.js, a classic script:
 * the global `uPlot`).  Why uPlot: `fleet bench planner-charts`, docs/benchmarks.md.
 * Each builder returns the uPlot instance; times are epoch seconds shown in WITA. */

import { TZ } from "./data.js";

const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), TZ);

export function vanColour(id) {
  let h = 0;
  for (let i = 0; i < id.length; i++) { h = (h * 31 + id.charCodeAt(i)) >>> 0; }
  return "hsl(" + ((h * 137.5) % 360).toFixed(0) + ",65%,40%)";
}

function width(el) { return Math.max(480, el.clientWidth || 900); }

/* (a) Headways over the day: one point per headway (minutes), the target as a line,
 * bunched and gapped points in their own colours. */
export function headwaysChart(el, points, referenceS) {
  const xs = points.map((p) => Date.parse(p.ts) / 1000);
  const pick = (cond) => points.map((p) => (cond(p) ? p.headway_s / 60 : null));
  const ref = referenceS ? xs.map(() => referenceS / 60) : xs.map(() => null);
  const dot = (stroke, fill) => ({ paths: () => null, points: { show: true, size: 6, stroke, fill } });
  el.textContent = "";
  return new uPlot({
    width: width(el), height: 300, tzDate,
    scales: { x: { time: true }, y: { range: (u, lo, hi) => [0, Math.max(hi, (referenceS || 0) / 30)] } },
    axes: [{}, { label: "headway (min)" }],
    series: [
      {},
      Object.assign({ label: "regular" }, dot("#2b6cb0", "#2b6cb0")),
      Object.assign({ label: "bunched (≤ ½ target)" }, dot("#c53030", "#c53030")),
      Object.assign({ label: "gapped (≥ 1½ target)" }, dot("#b7791f", "#ecc94b")),
      { label: "target", stroke: "#2f855a", width: 2, dash: [6, 4], points: { show: false } }
    ]
  }, [xs, pick((p) => !p.bunched && !p.gapped), pick((p) => p.bunched), pick((p) => p.gapped), ref], el);
}

/* (b) Time-space (Marey) diagram: distance along the route (km) against time, one line
 * per van trip (days' payloads of /planner/marey, concatenated). */
export function mareyChart(el, days, checkpoints) {
  const data = [null];
  const series = [{}];
  days.forEach((m) => {
    let xs = null, ys = null, last = -1;
    for (let i = 0; i < m.t.length; i++) {
      if (m.trip[i] !== last) {
        xs = []; ys = []; last = m.trip[i];
        data.push([xs, ys]);
        series.push({ stroke: vanColour(m.vehicles[m.van[i]]), width: 1,
                      points: { show: false }, paths: uPlot.paths.linear() });
      }
      xs.push(m.t[i] / 1000); ys.push(m.dist_m[i] / 1000);
    }
  });
  const ticks = (checkpoints || []).map((c) => c.dist_m / 1000);
  el.textContent = "";
  if (data.length === 1) { return null; }
  return new uPlot({
    mode: 2, width: width(el), height: 420, tzDate, legend: { show: false },
    cursor: { drag: { x: true, y: true } },
    scales: { x: { time: true }, y: { auto: true } },
    axes: [{}, { label: "distance along the route (km)",
                 splits: ticks.length ? () => ticks.filter((_, i) => i % 2 === 0) : undefined,
                 values: (u, vals) => vals.map((v) => v.toFixed(1)) }],
    series: series
  }, data, el);
}

/* (c) A heat map: cells (x from x + dx) × rows, coloured by colour(value); `readout`
 * gets a line for the cell under the cursor. */
export function heatChart(el, spec, readout) {
  const n = spec.rows.length;
  const xs = spec.x;
  el.textContent = "";
  if (!xs.length || !n) { return null; }
  const xEnd = xs[xs.length - 1] + spec.dx;
  const cellAt = (u) => {
    const x = u.posToVal(u.cursor.left, "x"), y = Math.round(u.posToVal(u.cursor.top, "y"));
    const i = xs.findIndex((v) => v <= x && x < v + spec.dx);
    return i < 0 || y < 0 || y >= n ? null : [i, y];
  };
  const every = Math.ceil(n / 16);
  return new uPlot({
    width: width(el), height: Math.max(180, 14 * n + 60), legend: { show: false }, tzDate,
    cursor: { points: { show: false }, drag: { x: false, y: false } },
    scales: { x: { time: spec.time, range: () => [xs[0], xEnd] },
              y: { auto: false, range: () => [-0.5, n - 0.5] } },
    axes: [
      spec.time ? {} : { values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? v + ":00" : "")) },
      { label: spec.rowLabel, size: 70,
        splits: () => spec.rows.map((_, j) => j).filter((j) => j % every === 0),
        values: (u, vals) => vals.map((j) => spec.rows[j] || "") }
    ],
    series: [{}, { paths: () => null, points: { show: false } }],
    hooks: {
      draw: [(u) => {
        const ctx = u.ctx;
        ctx.save();
        ctx.beginPath();
        ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
        ctx.clip();
        for (let i = 0; i < xs.length; i++) {
          const x0 = u.valToPos(xs[i], "x", true), x1 = u.valToPos(xs[i] + spec.dx, "x", true);
          for (let j = 0; j < n; j++) {
            const v = spec.value(i, j);
            if (v === null || v === undefined) { continue; }
            const y0 = u.valToPos(j - 0.5, "y", true), y1 = u.valToPos(j + 0.5, "y", true);
            ctx.fillStyle = spec.colour(v);
            ctx.fillRect(x0, y1, Math.max(1, x1 - x0 - 0.5), Math.max(1, y0 - y1 - 0.5));
          }
        }
        ctx.restore();
      }],
      setCursor: [(u) => {
        const c = u.cursor.left >= 0 ? cellAt(u) : null;
        readout(c ? spec.describe(c[0], c[1]) : "");
      }]
    }
  }, [xs.concat([xEnd]), xs.concat([xEnd]).map(() => null)], el);
}

/* Colour scales: Cv_h by its LOS band; shares and ratios on a green → red ramp. */
export const LOS_COLOURS = { A: "#2f855a", B: "#68d391", C: "#f6e05e", D: "#f6ad55", E: "#e53e3e", F: "#742a2a" };
const LOS_BANDS = [["A", 0.21], ["B", 0.30], ["C", 0.39], ["D", 0.52], ["E", 0.74]];

export function losOf(cv) {
  for (const [letter, upper] of LOS_BANDS) { if (cv <= upper) { return letter; } }
  return "F";
}

export function ramp(t) {  // 0 → green, 1 → dark red
  const x = Math.max(0, Math.min(1, t));
  return "hsl(" + (130 - 130 * x).toFixed(0) + ",70%," + (45 - 15 * x).toFixed(0) + "%)";
}
