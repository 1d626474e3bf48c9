/* The routes layer: lines and checkpoints from /api/v1/routes (a GeoJSON FeatureCollection
 * of LineStrings and checkpoint Points), one colour and one layer group per route code.
 */

import { map } from "./map.js";
import { API, api } from "./rest.js";
import { routeVisible, state } from "./state.js";

const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080",
  "#f032e6", "#9a6324", "#800000", "#808000", "#000075", "#46f0f0"];

export const routeColors = {};  // code → colour
export const routeNames = {};   // code → name (routes with a line)
export const checkpoints = {};  // route → seq → [lat, lon]
const routeLayers = {};         // code → L.LayerGroup

export function colorOf(route) {
  if (!(route in routeColors)) {
    const n = Object.keys(routeColors).length;
    routeColors[route] = PALETTE[n % PALETTE.length];
  }
  return routeColors[route];
}

function routeCodeOf(props) {
  return props.code || props.route || props.route_code || props.id || "?";
}

/* Draw every route, fit the map to them and set state.routes. */
export function loadRoutes() {
  return api(API + "/routes").then((fc) => {
    const bounds = L.latLngBounds([]);
    (fc.features || []).forEach((f) => {
      const props = f.properties || {};
      const code = routeCodeOf(props);
      if (!routeLayers[code]) { routeLayers[code] = L.layerGroup().addTo(map); }
      const color = props.color || colorOf(code);
      routeColors[code] = color;
      if (f.geometry && f.geometry.type === "Point" && typeof props.seq === "number") {
        (checkpoints[code] = checkpoints[code] || {})[props.seq] =
          [f.geometry.coordinates[1], f.geometry.coordinates[0]];
      }
      const layer = L.geoJSON(f, {
        style: { color: color, weight: 4, opacity: 0.55 },
        // checkpoints: small white stops on the line, unlike the vans' filled dots
        pointToLayer: (_f, latlng) =>
          L.circleMarker(latlng, { radius: 2, color: color, weight: 1, fillColor: "#fff", fillOpacity: 1 })
      });
      if (f.geometry && f.geometry.type !== "Point") {
        routeNames[code] = props.name || code;
        layer.bindTooltip(code + (props.name ? " · " + props.name : ""), { sticky: true });
        bounds.extend(layer.getBounds());
      }
      layer.addTo(routeLayers[code]);
    });
    state.routes = Object.keys(routeNames).sort();
    if (bounds.isValid()) { map.fitBounds(bounds, { padding: [20, 20] }); }
  });
}

/* Show the lines of the routes the filter selects, hide the others. */
export function showSelectedRoutes() {
  Object.keys(routeLayers).forEach((code) => {
    if (routeVisible(code)) { routeLayers[code].addTo(map); } else { map.removeLayer(routeLayers[code]); }
  });
}
