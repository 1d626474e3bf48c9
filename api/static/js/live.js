/* The /ws/live client (protocol: docs/api.md): connects with the session cookie,
 * reconnects with backoff, and sends the page's filter (routes, visible area).
 */

import { setConnection, showAuthError, showRateLimited } from "./connection.js";
import { state } from "./state.js";

let socket = null;
let reconnectDelay = 500;
let onFrame = (_msg) => {};

function wsUrl() {
  const proto = window.location.protocol === "https:" ? "wss:" : "ws:";
  const base = window.location.pathname.replace(/[^/]*$/, "");
  return proto + "//" + window.location.host + base + "ws/live";  // the session cookie goes along
}

/* Tell the server which vans to send (it answers with a filtered snapshot). */
export function sendFilter() {
  if (socket && socket.readyState === WebSocket.OPEN) {
    socket.send(JSON.stringify({ type: "filter", routes: state.selectedRoutes, bbox: state.bbox }));
  }
}

/* Connect and hand every frame to `handler` (counted in state.frames first). */
export function connectLive(handler) {
  onFrame = handler;
  connect();
}

function connect() {
  setConnection("connecting…", "conn-connecting");
  socket = new WebSocket(wsUrl());
  socket.onopen = () => {
    state.connected = true;
    reconnectDelay = 500;
    setConnection("live", "conn-live");
    if (state.selectedRoutes !== null || state.bbox !== null) { sendFilter(); }
  };
  socket.onmessage = (ev) => {
    let msg;
    try { msg = JSON.parse(ev.data); } catch (e) { return; }
    state.frames++;
    state.lastFrameTs = msg.ts || null;
    onFrame(msg);
  };
  socket.onclose = (ev) => {
    state.connected = false;
    if (ev.code === 4401 || ev.code === 4403) { showAuthError(); return; }
    if (ev.code === 4429) { showRateLimited(null); }
    setConnection("reconnecting (" + (ev.code || "closed") + ")…", "conn-error");
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 10000);
  };
}
