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
