/* War-room live map: the entry module (index.html loads it with type="module").
 *
 * Leaflet comes from vendor/leaflet.js (a classic script before this one); the parts
 * live in js/, one job each:
 *   session.js    the #token= (or ?token=) traded for a session cookie, then forgotten
 *   live.js       the /ws/live client (docs/api.md) and the filter it sends
 *   map.js        the map and its tiles       routes.js   route lines, colours, checkpoints
 *   vans.js       the vans (one canvas)       details.js  the selected van and its track
 *   panel.js      route list, filters, counts incidents.js the incident panel
 *   congestion.js the congestion layer        state.js    what the page shows
 *   replay.js     the fleet at a past moment, played forward; back to live
 * This module wires them together: the websocket's frames go to the markers, the panel
 * and the incident list.  `window.fleetState` is a read-only view for the browser test.
 */

import { probeCongestion } from "./js/congestion.js";
import { closeDetails, renderDetails, selectVan } from "./js/details.js";
import { $ } from "./js/html.js";
import { handleIncidentFrame, startIncidents } from "./js/incidents.js";
import { connectLive } from "./js/live.js";
import { addTiles, createMap } from "./js/map.js";
import { bindFilters, knownRoutes, renderRouteList, updateCounts } from "./js/panel.js";
import { API, api } from "./js/rest.js";
import { loadRoutes, routeColors } from "./js/routes.js";
import { replaySeek, replaying, replayView, startReplay } from "./js/replay.js";
import { startSession, takeTokenFromAddress } from "./js/session.js";
import { state } from "./js/state.js";
import { markerViews, onVanEvents, removeVan, setStatus, upsertVan, vanPoint, vans } from "./js/vans.js";

takeTokenFromAddress();  // first: out of the address bar before anything else runs
const map = createMap();

onVanEvents({
  clicked: selectVan,
  newRoute: renderRouteList,
  selectedChanged: renderDetails,
  selectedRemoved: closeDetails
});

// One websocket frame: a snapshot replaces the vans, deltas move them, status frames
// restyle them, incident frames update the incident panel.
function handle(msg) {
  if (replaying() && (msg.type === "snapshot" || msg.type === "delta" || msg.type === "status")) {
    return;  // the map shows the past: the present waits until "Live" asks for a snapshot
  }
  if (msg.type === "snapshot") {
    state.snapshots++;
    const seen = {};
    const snapRoutes = {};
    (msg.vehicles || []).forEach((v) => { seen[v.id] = true; snapRoutes[v.route] = true; });
    state.lastSnapshotRoutes = Object.keys(snapRoutes).sort();
    state.lastSnapshotSize = (msg.vehicles || []).length;
    Object.keys(vans).forEach((id) => { if (!seen[id]) { removeVan(id); } });
    (msg.vehicles || []).forEach(upsertVan);
    renderRouteList();
  } else if (msg.type === "delta") {
    (msg.vehicles || []).forEach(upsertVan);
  } else if (msg.type === "status") {
    setStatus(msg.vehicle_id, msg.status);
  } else if (msg.type === "incident") {
    handleIncidentFrame(msg);
  }
  updateCounts();
}

// ---- test hook: a read-only view of what the map shows
window.fleetState = {
  state: state,
  markers: markerViews,
  routes: knownRoutes,
  routeColors: () => Object.assign({}, routeColors),
  select: selectVan,
  map: map,
  vanPoint: vanPoint,
  replay: replayView,
  replaySeek: replaySeek
};

// ---- start: session, config (tiles), routes, then the live feed, incidents, congestion
bindFilters();
startReplay();
$("details-close").addEventListener("click", closeDetails);
startSession().then(() => {
  if (state.error) { throw new Error(state.error); }
  return api(API + "/config");
}).then((cfg) => {
  state.config = cfg;
  addTiles(cfg);
}).catch(() => { document.body.classList.add("no-tiles"); })
  .then(() => {
    if (!state.error) {
      return loadRoutes().then(renderRouteList).catch((e) => { console.warn("routes", e); });
    }
  })
  .then(() => {
    if (state.error) { return; }
    connectLive(handle);
    startIncidents();
    probeCongestion();
  });
