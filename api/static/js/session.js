/* Token → session.  The token arrives in the address bar (#token=…, which never reaches a
 * server; or the older ?token=…), is removed from it at once, traded once
 * (POST api/v1/session, Authorization: Bearer) for an HttpOnly session cookie and then
 * forgotten: no script, storage or URL keeps it.
 */

import { showAuthError, showRateLimited } from "./connection.js";
import { API } from "./rest.js";

let pendingToken = "";

/* Take the token out of the address bar (and any stored by older pages); call first. */
export function takeTokenFromAddress() {
  const hash = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  const query = new URLSearchParams(window.location.search);
  pendingToken = hash.get("token") || query.get("token") || "";
  if (hash.has("token") || query.has("token")) {
    hash.delete("token");
    query.delete("token");
    const q = query.toString(), h = hash.toString();
    history.replaceState(null, "", window.location.pathname + (q ? "?" + q : "") + (h ? "#" + h : ""));
  }
  try { sessionStorage.removeItem("fleetToken"); } catch (e) { /* storage disabled */ }
}

/* Trade the token taken for a session cookie (nothing to do without one). */
export function startSession() {
  if (!pendingToken) { return Promise.resolve(); }
  const secret = pendingToken;
  pendingToken = "";
  return fetch(API + "/session", {
    method: "POST", credentials: "same-origin", headers: { Authorization: "Bearer " + secret }
  }).then((r) => {
    if (r.status === 429) { showRateLimited(r.headers.get("Retry-After")); }
    else if (!r.ok) { showAuthError(); }
  }).catch((e) => { console.warn("session", e); });
}
