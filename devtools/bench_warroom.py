"""``fleet bench warroom``: the war-room page's main-thread time per live frame.

What runs: an embedded PostgreSQL, Mosquitto and the API as its own process
(``fleet api``), so the page loads as in production (session, config, the routes layer
from ``/api/v1/routes``); then headless Chromium opens the page.  Its ``/ws/live``
connection goes — a real websocket, through the browser's network stack — to a frame
server in this process instead of the API (the page's ``WebSocket`` is pointed there by
an init script): it sends the snapshot and then a delta every ``1 / fps`` s, each moving
``moving × vans`` vans along their routes' lines, in the wire format of ``docs/api.md``.
The page's own code receives them (``live.js`` → ``app.js`` → the van layer) exactly
as it would from the API.

Why synthetic frames, not the API's: the figure is the page's own cost, and on this
two-core machine an API fanning out 5,000-van deltas four times a second, fed 20,000
fixes/s through the broker by a publisher, takes the cores Chromium measures on
(``fleet bench live`` measures that path).  Why not Playwright's websocket routing:
it hands each frame to the page through a DevTools command, ~50 ms of the page's main
thread per 650 KB frame that a real socket does not cost.

The figure: before each frame and a frame period later, the renderer's cumulative
main-thread task time (CDP ``Performance.getMetrics`` ``TaskDuration``, which counts
script, style, layout, paint and GC of the page's main thread, less
``DevToolsCommandDuration``: the bench's own metric reads); the difference is that
frame's main-thread time.  Printed: median / p95 / max ms per frame over the measured
frames (after ``warmup`` frames), the page's long tasks (> 50 ms, Long Tasks API), the
frames the page actually handled, and the load average.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import psycopg
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

from api.tokens import Role, create_token
from broker.runner import MosquittoBroker
from devtools.api_child import ApiChild
from devtools.browser import launch_chromium
from devtools.processes import ChildProcess
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate

__all__ = ["WarroomOptions", "run_bench"]

VIEWPORT: Final = {"width": 1400, "height": 860}

# The page's live websocket goes to the bench's frame server (a real socket).
_REDIRECT_LIVE: Final = """
(() => {
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      super(String(url).endsWith("/ws/live") ? "ws://127.0.0.1:%d/ws/live" : url, protocols);
    }
  };
})();
"""

# Long tasks as the page sees them (the Long Tasks API: main-thread tasks over 50 ms).
_OBSERVE_LONG_TASKS: Final = """
window.__longTasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { window.__longTasks.push(e.duration); }
  }).observe({ type: "longtask", buffered: true });
} catch (e) { /* not supported */ }
"""


@dataclass(frozen=True)
class WarroomOptions:
    vans: int = 5000
    fps: float = 4.0
    frames: int = 80  # measured frames
    warmup: int = 12
    moving: float = 1.0  # share of the vans that move in each delta (1 = every van)
    keep: bool = False


@dataclass(frozen=True)
class WarroomResult:
    median_ms: float
    p95_ms: float
    max_ms: float
    long_tasks: int
    handled_frames: int
    sent_frames: int
    load: float


class _Fleet:
    """Synthetic vans running along the real route lines, as live-frame vehicles."""

    def __init__(self, routes: dict[str, list[list[float]]], n: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.codes = sorted(routes)
        self.lines = [np.asarray(routes[c], dtype=np.float64) for c in self.codes]
        self.ids = [f"bench-{i:05d}" for i in range(n)]
        self.route_of = np.arange(n) % len(self.codes)
        self.pos = rng.uniform(0, 1, n)  # share of the line
        self.step = rng.uniform(0.0002, 0.001, n)  # of the line per frame
        self.ts = int(time.time() * 1000)

    def _where(self, i: int) -> tuple[float, float, float]:
        line = self.lines[self.route_of[i]]
        f = self.pos[i] * (len(line) - 1)
        k = min(int(f), len(line) - 2)
        a, b = line[k], line[k + 1]
        u = f - k
        lon, lat = a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u
        heading = math.degrees(math.atan2(b[0] - a[0], b[1] - a[1])) % 360
        return lat, lon, heading

    def vehicle(self, i: int) -> dict[str, Any]:
        lat, lon, heading = self._where(i)
        return {
            "id": self.ids[i],
            "route": self.codes[self.route_of[i]],
            "ts": self.ts,
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed": 6.5,
            "heading": round(heading, 1),
            "status": "online",
        }

    def frame(self, kind: str, moving: np.ndarray | None = None) -> str:
        self.ts += 250
        if moving is None:
            idx: Any = range(len(self.ids))
        else:
            self.pos[moving] = (self.pos[moving] + self.step[moving]) % 1.0
            idx = moving
        vehicles = [self.vehicle(int(i)) for i in idx]
        return json.dumps({"type": kind, "ts": self.ts, "vehicles": vehicles})


def _route_lines(base: str, token: str) -> dict[str, list[list[float]]]:
    doc = httpx.get(
        f"{base}/api/v1/routes", headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    lines: dict[str, list[list[float]]] = {}
    for f in doc["features"]:
        if f["geometry"]["type"] == "LineString" and f["properties"].get("kind") == "route":
            lines.setdefault(f["properties"]["code"], f["geometry"]["coordinates"])
    return lines


def run_bench(opts: WarroomOptions) -> Iterator[str]:
    """Progress lines, then the result line (``median_ms=… p95_ms=…``)."""
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-warroom-"))
    broker: MosquittoBroker | None = None
    pg: EmbeddedPostgres | None = None
    api: ChildProcess | None = None
    try:
        broker = MosquittoBroker(root / "broker-state", port=free_port())
        broker.start()
        creds = broker.layout.service_credentials()
        pg = EmbeddedPostgres(root / "postgres", port=free_port())
        pg.start()
        migrate(pg.dsn)
        with psycopg.connect(pg.dsn) as conn:
            _, token = create_token(conn, "bench-warroom", Role.VIEWER)
        api = ApiChild(pg.dsn, broker.port, creds["svc-api"], root / "api.log")
        api.start()
        base = api.base
        yield f"api {base}; {opts.vans} vans, {opts.fps:g} frames/s, {opts.moving:.0%} moving"
        fleet = _Fleet(_route_lines(base, token), opts.vans)
        result = _drive_page(base, token, fleet, opts)
        yield (
            f"frames handled by the page {result.handled_frames}/{result.sent_frames}, "
            f"long tasks (> 50 ms) {result.long_tasks}, load average {result.load:.2f}"
        )
        yield (
            f"vans={opts.vans} fps={opts.fps:g} median_ms={result.median_ms:.1f} "
            f"p95_ms={result.p95_ms:.1f} max_ms={result.max_ms:.1f}"
        )
    finally:
        if api is not None:
            api.stop()
        if pg is not None:
            pg.stop()
        if broker is not None:
            broker.stop()
        if not opts.keep:
            shutil.rmtree(root, ignore_errors=True)


class _FrameServer:
    """A websocket server on a free port; ``send`` goes to the (one) connected page."""

    def __init__(self) -> None:
        self.clients: list[ServerConnection] = []
        self.port = free_port()
        self.server = serve(self._handle, "127.0.0.1", self.port, compression=None, max_size=None)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handle(self, conn: ServerConnection) -> None:
        self.clients.append(conn)
        with contextlib.suppress(ConnectionClosed):
            for _ in conn:  # the page's filter messages: ignored
                pass

    def send(self, text: str) -> None:
        self.clients[-1].send(text)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def _drive_page(base: str, token: str, fleet: _Fleet, opts: WarroomOptions) -> WarroomResult:
    frames = _FrameServer()
    try:
        return _measure(base, token, fleet, opts, frames)
    finally:
        frames.close()


def _measure(
    base: str, token: str, fleet: _Fleet, opts: WarroomOptions, frames: _FrameServer
) -> WarroomResult:
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    rng = np.random.default_rng(11)
    period_ms = 1000.0 / opts.fps
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport=VIEWPORT)  # type: ignore[arg-type]
            page.add_init_script(_OBSERVE_LONG_TASKS + _REDIRECT_LIVE % frames.port)

            page.goto(f"{base}/#token={token}")
            page.wait_for_function(
                "window.fleetState && fleetState.state.connected", timeout=60_000
            )
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")

            def task_ms() -> float:
                got = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
                return 1000.0 * float(got["TaskDuration"] - got.get("DevToolsCommandDuration", 0))

            frames.send(fleet.frame("snapshot"))
            page.wait_for_function(
                f"fleetState.state.snapshots >= 1 && fleetState.markers().length >= {opts.vans}",
                timeout=120_000,
            )
            page.evaluate("window.__longTasks = []")
            frames0 = page.evaluate("fleetState.state.frames")
            n_moving = max(1, round(opts.moving * opts.vans))
            samples: list[float] = []
            total = opts.warmup + opts.frames
            for k in range(total):
                moving = np.sort(rng.choice(opts.vans, n_moving, replace=False))
                text = fleet.frame("delta", moving)  # built before the clock starts
                before = task_ms()
                started = time.monotonic()
                frames.send(text)
                left = period_ms - 1000 * (time.monotonic() - started)
                page.wait_for_timeout(max(1.0, left))
                if k >= opts.warmup:
                    samples.append(task_ms() - before)
            handled = page.evaluate("fleetState.state.frames") - frames0
            long_tasks = page.evaluate("window.__longTasks.length")
        finally:
            browser.close()
    arr = np.asarray(samples)
    return WarroomResult(
        median_ms=float(np.median(arr)),
        p95_ms=float(np.percentile(arr, 95)),
        max_ms=float(arr.max()),
        long_tasks=int(long_tasks),
        handled_frames=int(handled),
        sent_frames=total,
        load=os.getloadavg()[0],
    )
