/* The planner's data: local days, REST calls with the session cookie, day-by-day loading
 * with progress.  Every call here needs the planner role (permission "plan"); a 403 is
 * a NoPlannerRole error, which the page shows as such. */

import { API } from "../rest.js";

export const TZ = "Asia/Makassar";   // WITA, UTC+8, no daylight saving
export const OFFSET = "+08:00";
export const MAX_DAYS = 31;          // the range the page asks for (the points' API bound)
export const MAREY_MAX_DAYS = 7;     // the time-space diagram draws at most this many days

export class NoPlannerRole extends Error {}

/* "YYYY-MM-DD" of today in Makassar. */
export function today() {
  return new Date(Date.now() + 8 * 3600e3).toISOString().slice(0, 10);
}

export function addDays(day, n) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

/* The local days from `from` to `to`, both included. */
export function daysBetween(from, to) {
  const out = [];
  for (let d = from; d <= to && out.length <= MAX_DAYS; d = addDays(d, 1)) { out.push(d); }
  return out;
}

export function dayStart(day) { return day + "T00:00:00" + OFFSET; }

export function getJson(path, params) {
  const q = new URLSearchParams();
  Object.keys(params).forEach((k) => {
    if (params[k] !== null && params[k] !== undefined && params[k] !== "") { q.set(k, params[k]); }
  });
  return fetch(API + path + "?" + q.toString(), { credentials: "same-origin" }).then((r) => {
    if (r.status === 403) { throw new NoPlannerRole(path); }
    if (!r.ok) {
      return r.json().catch(() => ({})).then((b) => {
        const e = new Error(path + ": HTTP " + r.status + " " + (b.error || "") + " " + (b.detail || ""));
        e.status = r.status;
        throw e;
      });
    }
    return r.json();
  });
}

/* Everything the charts need for route/direction/checkpoint over [from, to] (local
 * days): per day the diagram (first MAREY_MAX_DAYS days), the headway points and the
 * congestion rows; over the whole range the headway report per hour and per window.
 * `progress(done, total, text)` after each call. */
export async function loadAll(sel, progress) {
  const days = daysBetween(sel.from, sel.to);
  const base = { route: sel.route, direction: sel.direction };
  const range = { from: dayStart(days[0]), to: dayStart(addDays(days[days.length - 1], 1)) };
  const total = 2 + days.length * 2 + Math.min(days.length, MAREY_MAX_DAYS);
  let done = 0;
  const step = (text) => { done++; progress(done, total, text); };
  const out = { days: days, range: range, points: [], streams: [], marey: [], congestion: [],
                hourly: [], los: [], target_s: null, truncated: false };
  out.los = await getJson("/reports/headways", Object.assign({}, base, range));
  step("level of service");
  out.hourly = await getJson("/reports/headways", Object.assign({ by: "hour" }, base, range));
  step("headways per hour");
  for (let i = 0; i < days.length; i++) {
    const win = { from: dayStart(days[i]), to: dayStart(addDays(days[i], 1)) };
    const label = "day " + (i + 1) + " of " + days.length + " (" + days[i] + ")";
    const pts = await getJson("/planner/headway-points",
      Object.assign({ checkpoint: sel.checkpoint }, base, win));
    out.points = out.points.concat(pts.points);
    out.streams = out.streams.concat(pts.streams);
    out.target_s = pts.target_s;
    out.truncated = out.truncated || pts.truncated;
    step(label + ": headways");
    out.congestion = out.congestion.concat(
      await getJson("/reports/congestion", Object.assign({}, base, win)));
    step(label + ": travel times");
    if (i < MAREY_MAX_DAYS) {
      const m = await getJson("/planner/marey", Object.assign({}, base, win));
      out.marey.push(m);
      out.truncated = out.truncated || m.truncated;
      step(label + ": time-space diagram");
    }
  }
  return out;
}
