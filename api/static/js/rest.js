/* REST calls: same origin, with the session cookie, never a token. */

import { showAuthError, showRateLimited } from "./connection.js";

export const API = "api/v1";

export function api(path) {
  return fetch(path, { credentials: "same-origin" }).then((r) => {
    if (r.status === 401 || r.status === 403) { showAuthError(); }
    if (r.status === 429) { showRateLimited(r.headers.get("Retry-After")); }
    if (!r.ok) { const e = new Error(path + " → HTTP " + r.status); e.status = r.status; throw e; }
    return r.json();
  });
}

/* A change (POST with a JSON body): the browser sends the page's Origin, which the server
 * requires of a session's unsafe methods. A refusal is thrown with its status and error. */
export function apiPost(path, body) {
  return fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {})
  }).then((r) => {
    if (r.status === 401) { showAuthError(); }
    if (r.status === 429) { showRateLimited(r.headers.get("Retry-After")); }
    return r.json().catch(() => ({})).then((doc) => {
      if (!r.ok) {
        const e = new Error(path + " → HTTP " + r.status + " " + (doc.error || ""));
        e.status = r.status;
        e.error = doc.error;
        throw e;
      }
      return doc;
    });
  });
}
