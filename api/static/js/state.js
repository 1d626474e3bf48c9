/* What the page shows, in one object (the browser test reads it as fleetState.state). */

export const state = {
  connected: false,
  frames: 0,
  snapshots: 0,
  lastFrameTs: null,
  routes: [],
  selectedRoutes: null, // null = all
  bbox: null,           // [minLon, minLat, maxLon, maxLat] while "visible area only" is on
  selectedVan: null,
  incidents: [],       // the incident panel as shown (id, kind, route, state, vans)
  congestionAvailable: false,
  error: null
};

export function routeVisible(code) {
  return state.selectedRoutes === null || state.selectedRoutes.indexOf(code) >= 0;
}
