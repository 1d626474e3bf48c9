/* War-room live map: Leaflet + the /ws/live protocol (docs/api.md).
 *
 * State lives in `vans` (id → van record with its marker); the websocket's snapshot
 * replaces it, deltas move markers, status frames restyle them.  `window.fleetState`
 * exposes a read-only view for the browser acceptance test.
 */
(function () {
  "use strict";

  var API = "api/v1";
  var PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#008080",
    "#f032e6", "#9a6324", "#800000", "#808000", "#000075", "#46f0f0"];
  var MAKASSAR = [-5.1477, 119.4327];
  var TRACK_WINDOW_MS = 30 * 60 * 1000;
  var ALERTS_REFRESH_MS = 30 * 1000;

  // ---- token → session: the token arrives in the address bar (#token=…, which never
  // reaches a server; or the older ?token=…), is removed from it at once, traded once
  // (POST api/v1/session, Authorization: Bearer) for an HttpOnly session cookie and then
  // forgotten: no script, storage or URL keeps it.
  function takeToken() {
    var hash = new URLSearchParams(window.location.hash.replace(/^#/, ""));
    var query = new URLSearchParams(window.location.search);
    var found = hash.get("token") || query.get("token") || "";
    if (hash.has("token") || query.has("token")) {
      hash.delete("token");
      query.delete("token");
      var q = query.toString(), h = hash.toString();
      history.replaceState(null, "", window.location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
    }
    return found;
  }
  var pendingToken = takeToken();
  try { sessionStorage.removeItem("fleetToken"); } catch (e) { /* storage disabled */ }

  var state = {
    connected: false,
    frames: 0,
    snapshots: 0,
    lastFrameTs: null,
    routes: [],
    selectedRoutes: null, // null = all
    bbox: null,           // [minLon, minLat, maxLon, maxLat] while "visible area only" is on
    selectedVan: null,
    alerts: [],
    congestionAvailable: false,
    error: null
  };
  var vans = {};         // id → {v: V, marker}
  var routeColors = {};  // code → colour
  var routeLayers = {};  // code → L.LayerGroup
  var routeNames = {};
  var checkpoints = {};  // route → seq → [lat, lon]
  var trackLayer = null;
  var congestionLayer = null;
  var socket = null;
  var reconnectDelay = 500;

  var map = L.map("map", { zoomControl: true, preferCanvas: false }).setView(MAKASSAR, 13);

  function $(id) { return document.getElementById(id); }

  // REST calls carry the session cookie (same origin), never a token
  function api(path) {
    return fetch(path, { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401 || r.status === 403) { showAuthError(); }
      if (r.status === 429) { showRateLimited(r.headers.get("Retry-After")); }
      if (!r.ok) { var e = new Error(path + " → HTTP " + r.status); e.status = r.status; throw e; }
      return r.json();
    });
  }

  function showAuthError() {
    state.error = "unauthorized";
    $("auth-error").hidden = false;
    setConnection("no valid token", "conn-error");
  }

  function showRateLimited(retryAfter) {
    state.error = "rate limited";
    setConnection("too many failed sign-ins; retry in " + (retryAfter || "a few") + " s", "conn-error");
  }

  function startSession() {
    if (!pendingToken) { return Promise.resolve(); }
    var secret = pendingToken;
    pendingToken = "";
    return fetch(API + "/session", {
      method: "POST", credentials: "same-origin", headers: { Authorization: "Bearer " + secret }
    }).then(function (r) {
      if (r.status === 429) { showRateLimited(r.headers.get("Retry-After")); }
      else if (!r.ok) { showAuthError(); }
    }).catch(function (e) { console.warn("session", e); });
  }

  function setConnection(text, cls) {
    var el = $("connection");
    el.textContent = text;
    el.className = "conn " + cls;
  }

  function colorOf(route) {
    if (!(route in routeColors)) {
      var n = Object.keys(routeColors).length;
      routeColors[route] = PALETTE[n % PALETTE.length];
    }
    return routeColors[route];
  }

  function escapeHtml(s) {
    return String(s).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }[c];
    });
  }

  // ---- routes (GeoJSON FeatureCollection: LineStrings + checkpoint Points)
  function routeCodeOf(props) {
    return props.code || props.route || props.route_code || props.id || "?";
  }

  function loadRoutes() {
    return api(API + "/routes").then(function (fc) {
      var bounds = L.latLngBounds([]);
      (fc.features || []).forEach(function (f) {
        var props = f.properties || {};
        var code = routeCodeOf(props);
        if (!routeLayers[code]) { routeLayers[code] = L.layerGroup().addTo(map); }
        var color = props.color || colorOf(code);
        routeColors[code] = color;
        if (f.geometry && f.geometry.type === "Point" && typeof props.seq === "number") {
          (checkpoints[code] = checkpoints[code] || {})[props.seq] =
            [f.geometry.coordinates[1], f.geometry.coordinates[0]];
        }
        var layer = L.geoJSON(f, {
          style: { color: color, weight: 4, opacity: 0.55 },
          pointToLayer: function (_f, latlng) {
            // checkpoints: small white stops on the line, unlike the vans' filled dots
            return L.circleMarker(latlng, { radius: 2, color: color, weight: 1, fillColor: "#fff", fillOpacity: 1 });
          }
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
      renderRouteList();
    }).catch(function (e) { console.warn("routes", e); });
  }

  function knownRoutes() {
    var set = {};
    state.routes.forEach(function (r) { set[r] = true; });
    Object.keys(vans).forEach(function (id) { if (vans[id].v.route) { set[vans[id].v.route] = true; } });
    return Object.keys(set).sort();
  }

  function renderRouteList() {
    var ul = $("routes");
    var routes = knownRoutes();
    var existing = {};
    Array.prototype.forEach.call(ul.children, function (li) { existing[li.dataset.route] = li; });
    routes.forEach(function (code) {
      if (existing[code]) { return; }
      var li = document.createElement("li");
      li.dataset.route = code;
      li.innerHTML = '<label><input type="checkbox" data-route="' + escapeHtml(code) + '"> ' +
        '<span class="swatch" style="background:' + colorOf(code) + '"></span>' +
        '<span class="code">' + escapeHtml(code) + '</span> ' +
        '<span class="name">' + escapeHtml(routeNames[code] || "") + '</span>' +
        '<b class="count" data-count="' + escapeHtml(code) + '">0</b></label>';
      var box = li.querySelector("input");
      box.checked = state.selectedRoutes === null || state.selectedRoutes.indexOf(code) >= 0;
      box.addEventListener("change", onRouteToggle);
      // keep the list sorted
      var before = null;
      Array.prototype.forEach.call(ul.children, function (other) {
        if (!before && other.dataset.route > code) { before = other; }
      });
      ul.insertBefore(li, before);
    });
    updateCounts();
  }

  function checkedRoutes() {
    var boxes = $("routes").querySelectorAll("input[type=checkbox]");
    var on = [];
    Array.prototype.forEach.call(boxes, function (b) { if (b.checked) { on.push(b.dataset.route); } });
    return on.length === boxes.length ? null : on;
  }

  function onRouteToggle() { applyFilter(checkedRoutes()); }

  function setAllRoutes(checked) {
    Array.prototype.forEach.call($("routes").querySelectorAll("input[type=checkbox]"),
      function (b) { b.checked = checked; });
    applyFilter(checkedRoutes());
  }

  function routeVisible(code) {
    return state.selectedRoutes === null || state.selectedRoutes.indexOf(code) >= 0;
  }

  function applyFilter(routes) {
    state.selectedRoutes = routes;
    Object.keys(routeLayers).forEach(function (code) {
      if (routeVisible(code)) { routeLayers[code].addTo(map); } else { map.removeLayer(routeLayers[code]); }
    });
    // hide now; the server's next snapshot (filtered) confirms
    Object.keys(vans).forEach(function (id) {
      if (!routeVisible(vans[id].v.route)) { removeVan(id); }
    });
    sendFilter();
    updateCounts();
  }

  function sendFilter() {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify({ type: "filter", routes: state.selectedRoutes, bbox: state.bbox }));
    }
  }

  // "only vans in the visible area": the server filters by the map's bounds (bbox)
  var bboxTimer = null;
  function viewBbox() {
    var b = map.getBounds();
    return [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (x) { return +x.toFixed(6); });
  }

  function onBboxToggle(ev) {
    state.bbox = ev.target.checked ? viewBbox() : null;
    sendFilter();
  }

  map.on("moveend", function () {
    if (state.bbox === null) { return; }
    clearTimeout(bboxTimer);
    bboxTimer = setTimeout(function () { state.bbox = viewBbox(); sendFilter(); }, 300);
  });

  // ---- vans
  function vanIcon(v) {
    var color = colorOf(v.route || "?");
    var heading = typeof v.heading === "number" ? v.heading : null;
    var arrow = heading === null ? "" :
      '<div class="van-arrow" style="transform:rotate(' + heading.toFixed(0) + 'deg)">' +
      '<svg viewBox="0 0 24 24" width="24" height="24"><path d="M12 0 L17 8.5 L7 8.5 Z" fill="' + color + '" stroke="#222" stroke-width="0.8"/></svg></div>';
    return L.divIcon({
      className: "van van-" + (v.status || "online") + (state.selectedVan === v.id ? " van-selected" : ""),
      html: arrow + '<div class="van-dot" style="background:' + color + '"></div>',
      iconSize: [24, 24],
      iconAnchor: [12, 12]
    });
  }

  function iconKey(v) {
    return (v.route || "") + "|" + (v.status || "online") + "|" + (state.selectedVan === v.id) + "|" +
      (typeof v.heading === "number" ? Math.round(v.heading / 10) : "-");
  }

  function upsertVan(v) {
    if (!routeVisible(v.route)) { return; }
    var entry = vans[v.id];
    if (!entry) {
      var marker = L.marker([v.lat, v.lon], { icon: vanIcon(v), title: v.id, keyboard: false });
      marker.on("click", function () { selectVan(v.id); });
      marker.addTo(map);
      vans[v.id] = { v: v, marker: marker, key: iconKey(v) };
      if (!routeNames[v.route] && state.routes.indexOf(v.route) < 0) { renderRouteList(); }
      return;
    }
    // never move a van back in time (the server guarantees it; keep the page honest too)
    if (entry.v.ts && v.ts && v.ts < entry.v.ts) { return; }
    var status = v.status || entry.v.status;
    entry.v = Object.assign({}, entry.v, v, { status: status });
    entry.marker.setLatLng([v.lat, v.lon]);
    var key = iconKey(entry.v);
    if (key !== entry.key) { entry.marker.setIcon(vanIcon(entry.v)); entry.key = key; }
    if (state.selectedVan === v.id) { renderDetails(); }
  }

  function removeVan(id) {
    var entry = vans[id];
    if (!entry) { return; }
    map.removeLayer(entry.marker);
    delete vans[id];
    if (state.selectedVan === id) { closeDetails(); }
  }

  function setStatus(id, status) {
    var entry = vans[id];
    if (!entry) { return; }
    entry.v = Object.assign({}, entry.v, { status: status });
    var key = iconKey(entry.v);
    if (key !== entry.key) { entry.marker.setIcon(vanIcon(entry.v)); entry.key = key; }
    if (state.selectedVan === id) { renderDetails(); }
  }

  function updateCounts() {
    var totals = { online: 0, stale: 0, offline: 0 };
    var perRoute = {};
    Object.keys(vans).forEach(function (id) {
      var v = vans[id].v;
      var st = v.status || "online";
      totals[st] = (totals[st] || 0) + 1;
      if (st !== "offline") { perRoute[v.route] = (perRoute[v.route] || 0) + 1; }
    });
    $("count-online").textContent = totals.online;
    $("count-stale").textContent = totals.stale;
    $("count-offline").textContent = totals.offline;
    Array.prototype.forEach.call(document.querySelectorAll("[data-count]"), function (el) {
      var code = el.getAttribute("data-count");
      el.textContent = routeVisible(code) ? (perRoute[code] || 0) : "–";
    });
  }

  // ---- details + track
  function restyle(id) {
    var entry = vans[id];
    if (!entry) { return; }
    var key = iconKey(entry.v);
    if (key !== entry.key) { entry.marker.setIcon(vanIcon(entry.v)); entry.key = key; }
    entry.marker.setZIndexOffset(state.selectedVan === id ? 1000 : 0);
  }

  function selectVan(id) {
    var previous = state.selectedVan;
    state.selectedVan = id;
    if (previous) { restyle(previous); }
    restyle(id);
    $("details").hidden = false;
    renderDetails();
    loadTrack(id);
  }

  function closeDetails() {
    var previous = state.selectedVan;
    state.selectedVan = null;
    if (previous) { restyle(previous); }
    $("details").hidden = true;
    if (trackLayer) { map.removeLayer(trackLayer); trackLayer = null; }
  }

  function renderDetails() {
    var entry = vans[state.selectedVan];
    if (!entry) { return; }
    var v = entry.v;
    $("details-id").textContent = v.id;
    var rows = [
      ["route", (v.route || "–") + (routeNames[v.route] ? " · " + routeNames[v.route] : "")],
      ["status", v.status || "online"],
      ["last fix", v.ts ? new Date(v.ts).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–"],
      ["speed", typeof v.speed === "number" ? (v.speed * 3.6).toFixed(1) + " km/h" : "–"],
      ["heading", typeof v.heading === "number" ? v.heading.toFixed(0) + "°" : "–"],
      ["position", v.lat.toFixed(5) + ", " + v.lon.toFixed(5)]
    ];
    $("details-fields").innerHTML = rows.map(function (r) {
      return "<dt>" + r[0] + "</dt><dd>" + escapeHtml(r[1]) + "</dd>";
    }).join("");
  }

  function loadTrack(id) {
    var entry = vans[id];
    if (!entry) { return; }
    var to = entry.v.ts || Date.now();
    var from = to - TRACK_WINDOW_MS;
    var url = API + "/vehicles/" + encodeURIComponent(id) + "/track?format=geojson" +
      "&from=" + encodeURIComponent(new Date(from).toISOString()) +
      "&to=" + encodeURIComponent(new Date(to + 60000).toISOString());
    $("details-track").textContent = "loading track…";
    api(url).then(function (geo) {
      if (state.selectedVan !== id) { return; }
      if (trackLayer) { map.removeLayer(trackLayer); }
      trackLayer = L.geoJSON(geo, {
        style: { color: "#111", weight: 3, opacity: 0.8, dashArray: "4 4" },
        pointToLayer: function (_f, latlng) { return L.circleMarker(latlng, { radius: 2, color: "#111" }); }
      }).addTo(map);
      var n = countCoords(geo);
      state.trackPoints = n;
      $("details-track").textContent = n + (n === 1 ? " fix" : " fixes") + " in the last 30 min (dashed line)";
    }).catch(function (e) {
      $("details-track").textContent = "track unavailable (" + e.message + ")";
    });
  }

  function countCoords(geo) {
    var n = 0;
    (geo.features || [geo]).forEach(function (f) {
      var g = f.geometry || f;
      if (!g) { return; }
      if (g.type === "LineString" || g.type === "MultiPoint") { n += g.coordinates.length; }
      else if (g.type === "Point") { n += 1; }
    });
    return n;
  }

  // ---- alerts
  function addAlert(a, prepend) {
    if (state.alerts.some(function (x) { return x.id === a.id; })) { return; }
    if (prepend) { state.alerts.unshift(a); } else { state.alerts.push(a); }
    state.alerts = state.alerts.slice(0, 50);
    renderAlerts();
  }

  function renderAlerts() {
    var ul = $("alerts");
    $("alert-count").textContent = state.alerts.length ? "(" + state.alerts.length + ")" : "";
    if (!state.alerts.length) { ul.innerHTML = '<li class="note">none</li>'; return; }
    ul.innerHTML = "";
    state.alerts.forEach(function (a) {
      var li = document.createElement("li");
      li.className = "alert alert-" + a.kind;
      var when = a.created_at ? new Date(a.created_at).toISOString().slice(11, 19) : "";
      li.innerHTML = '<span class="when">' + when + '</span> <span class="kind">' + escapeHtml(a.kind) + "</span> " +
        escapeHtml(a.route || "") + (a.direction !== undefined && a.direction !== null ? " dir " + escapeHtml(a.direction) : "") + " · " +
        escapeHtml(a.vehicle_id || "") + (a.other_vehicle_id ? " + " + escapeHtml(a.other_vehicle_id) : "");
      if (typeof a.lat === "number" && typeof a.lon === "number") {
        li.addEventListener("click", function () { map.setView([a.lat, a.lon], Math.max(map.getZoom(), 15)); });
      }
      ul.appendChild(li);
    });
  }

  // The active list from REST replaces the panel (resolved alerts leave it); frames in
  // between add new ones at the top.
  function loadAlerts() {
    api(API + "/alerts?active=true&limit=50").then(function (list) {
      state.alerts = [];
      (Array.isArray(list) ? list : list.alerts || []).forEach(function (a) { addAlert(a, false); });
      renderAlerts();
    }).catch(function () { /* analytics not installed: the panel stays empty */ });
  }

  // ---- congestion layer: shown only when the analytics report endpoint exists
  function probeCongestion() {
    // the analytics reports are optional: ask the OpenAPI document, not the (heavy) report
    fetch("openapi.json").then(function (r) { return r.ok ? r.json() : { paths: {} }; })
      .then(function (doc) {
        if (!doc.paths || !doc.paths["/" + API + "/reports/congestion"]) { return; }
        state.congestionAvailable = true;
        $("layers").hidden = false;
        $("congestion-toggle").addEventListener("change", toggleCongestion);
      }).catch(function () { /* no analytics */ });
  }

  function congestionColor(level) {
    if (typeof level !== "number") { return "#888"; }
    if (level < 0.25) { return "#1a9850"; }
    if (level < 0.5) { return "#fee08b"; }
    if (level < 1) { return "#f46d43"; }
    return "#a50026";
  }

  function levelOf(row) {
    var keys = ["congestion_level", "congestion", "level"];
    for (var i = 0; i < keys.length; i++) {
      if (typeof row[keys[i]] === "number") { return row[keys[i]]; }
    }
    return null;
  }

  // One line per checkpoint-to-checkpoint segment (its newest bucket, worst direction),
  // drawn between the two checkpoints from /api/v1/routes; cells/points with lat/lon as dots.
  function congestionShapes(rows) {
    var segments = {};
    var shapes = [];
    rows.forEach(function (row) {
      var level = levelOf(row);
      var cps = checkpoints[row.route];
      if (cps && typeof row.from_seq === "number" && typeof row.to_seq === "number") {
        var a = cps[row.from_seq], b = cps[row.to_seq];
        if (!a || !b) { return; }
        var key = row.route + ":" + Math.min(row.from_seq, row.to_seq) + "-" + Math.max(row.from_seq, row.to_seq);
        var seen = segments[key];
        var newer = !seen || String(row.bucket || "") > String(seen.row.bucket || "");
        var same = seen && String(row.bucket || "") === String(seen.row.bucket || "");
        if (newer || (same && (level || 0) > (seen.level || 0))) {
          segments[key] = { row: row, level: level, latlngs: [a, b] };
        }
      } else if (row.geometry) {
        shapes.push({ geometry: row.geometry, level: level });
      } else if (typeof row.lat === "number" && typeof row.lon === "number") {
        shapes.push({ point: [row.lat, row.lon], level: level });
      }
    });
    Object.keys(segments).forEach(function (k) { shapes.push(segments[k]); });
    return shapes;
  }

  function toggleCongestion(ev) {
    if (congestionLayer) { map.removeLayer(congestionLayer); congestionLayer = null; }
    if (!ev.target.checked) { $("congestion-note").textContent = ""; return; }
    $("congestion-note").textContent = "loading…";
    var since = new Date(Date.now() - 3600 * 1000).toISOString();
    api(API + "/reports/congestion?format=json&from=" + encodeURIComponent(since)).then(function (doc) {
      var rows = Array.isArray(doc) ? doc : (doc.rows || doc.segments || doc.cells || doc.data || []);
      var shapes = congestionShapes(rows);
      congestionLayer = L.layerGroup();
      shapes.forEach(function (sh) {
        var color = congestionColor(sh.level);
        var tip = sh.level === null ? "no free-flow speed yet" : "congestion " + sh.level.toFixed(2);
        if (sh.latlngs) {
          L.polyline(sh.latlngs, { color: color, weight: 9, opacity: 0.75 }).bindTooltip(
            (sh.row.route || "") + " " + sh.row.from_seq + "→" + sh.row.to_seq + ": " + tip).addTo(congestionLayer);
        } else if (sh.geometry) {
          L.geoJSON(sh.geometry, { style: { color: color, weight: 7, opacity: 0.7 } }).addTo(congestionLayer);
        } else {
          L.circleMarker(sh.point, { radius: 9, color: color, fillOpacity: 0.5, weight: 0 }).bindTooltip(tip).addTo(congestionLayer);
        }
      });
      congestionLayer.addTo(map);
      state.congestionShapes = shapes.length;
      $("congestion-note").textContent = shapes.length ?
        shapes.length + " segments (green free flow → red twice the free-flow time or worse)" :
        rows.length + " report rows, nothing to draw yet";
    }).catch(function (e) { $("congestion-note").textContent = "unavailable: " + e.message; });
  }

  // ---- websocket
  function wsUrl() {
    var proto = window.location.protocol === "https:" ? "wss:" : "ws:";
    var base = window.location.pathname.replace(/[^/]*$/, "");
    return proto + "//" + window.location.host + base + "ws/live";  // the session cookie goes along
  }

  function connect() {
    setConnection("connecting…", "conn-connecting");
    socket = new WebSocket(wsUrl());
    socket.onopen = function () {
      state.connected = true;
      reconnectDelay = 500;
      setConnection("live", "conn-live");
      if (state.selectedRoutes !== null || state.bbox !== null) { sendFilter(); }
    };
    socket.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      state.frames++;
      state.lastFrameTs = msg.ts || null;
      handle(msg);
    };
    socket.onclose = function (ev) {
      state.connected = false;
      if (ev.code === 4401 || ev.code === 4403) { showAuthError(); return; }
      if (ev.code === 4429) { showRateLimited(null); }
      setConnection("reconnecting (" + (ev.code || "closed") + ")…", "conn-error");
      setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 10000);
    };
  }

  function handle(msg) {
    if (msg.type === "snapshot") {
      state.snapshots++;
      var seen = {};
      var snapRoutes = {};
      (msg.vehicles || []).forEach(function (v) { seen[v.id] = true; snapRoutes[v.route] = true; });
      state.lastSnapshotRoutes = Object.keys(snapRoutes).sort();
      state.lastSnapshotSize = (msg.vehicles || []).length;
      Object.keys(vans).forEach(function (id) { if (!seen[id]) { removeVan(id); } });
      (msg.vehicles || []).forEach(upsertVan);
      renderRouteList();
    } else if (msg.type === "delta") {
      (msg.vehicles || []).forEach(upsertVan);
    } else if (msg.type === "status") {
      setStatus(msg.vehicle_id, msg.status);
    } else if (msg.type === "alert" && msg.alert) {
      addAlert(msg.alert, true);
    }
    updateCounts();
  }

  // ---- test hook: a read-only view of what the map shows
  window.fleetState = {
    state: state,
    markers: function () {
      return Object.keys(vans).sort().map(function (id) {
        var e = vans[id];
        var ll = e.marker.getLatLng();
        return {
          id: id, route: e.v.route, status: e.v.status || "online",
          lat: ll.lat, lon: ll.lng, ts: e.v.ts, onMap: map.hasLayer(e.marker)
        };
      });
    },
    routes: function () { return knownRoutes(); },
    routeColors: function () { return Object.assign({}, routeColors); },
    select: selectVan,
    map: map
  };

  // ---- start
  $("routes-all").addEventListener("click", function () { setAllRoutes(true); });
  $("routes-none").addEventListener("click", function () { setAllRoutes(false); });
  $("bbox-toggle").addEventListener("change", onBboxToggle);
  $("details-close").addEventListener("click", closeDetails);
  startSession().then(function () {
    if (state.error) { throw new Error(state.error); }
    return api(API + "/config");
  }).then(function (cfg) {
    state.config = cfg;
    if (cfg && cfg.tile_url) {
      L.tileLayer(cfg.tile_url, { maxZoom: 19, attribution: cfg.tile_attribution || "" }).addTo(map);
    } else {
      document.body.classList.add("no-tiles");
    }
  }).catch(function () { document.body.classList.add("no-tiles"); })
    .then(function () { if (!state.error) { return loadRoutes(); } })
    .then(function () {
      if (state.error) { return; }
      connect();
      loadAlerts();
      setInterval(loadAlerts, ALERTS_REFRESH_MS);
      probeCongestion();
    });
})();
