/* The connection badge, and what the page says when the server refuses it. */

import { $ } from "./html.js";
import { state } from "./state.js";

export function setConnection(text, cls) {
  const el = $("connection");
  el.textContent = text;
  el.className = "conn " + cls;
}

export function showAuthError() {
  state.error = "unauthorized";
  $("auth-error").hidden = false;
  setConnection("no valid token", "conn-error");
}

export function showRateLimited(retryAfter) {
  state.error = "rate limited";
  setConnection("too many failed sign-ins; retry in " + (retryAfter || "a few") + " s", "conn-error");
}
