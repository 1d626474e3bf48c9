/* The Leaflet map (L is the global of vendor/leaflet.js, loaded before the modules). */

const MAKASSAR = [-5.1477, 119.4327];

export let map = null;  // set by createMap(), once

export function createMap() {
  map = L.map("map", { zoomControl: true, preferCanvas: false }).setView(MAKASSAR, 13);
  return map;
}

/* Base tiles from the API's config (none configured or no config: a plain background). */
export function addTiles(cfg) {
  if (cfg && cfg.tile_url) {
    L.tileLayer(cfg.tile_url, { maxZoom: 19, attribution: cfg.tile_attribution || "" }).addTo(map);
  } else {
    document.body.classList.add("no-tiles");
  }
}
