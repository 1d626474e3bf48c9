"""``fleet bench planner-charts``: render time of a route-day Marey diagram per chart library.

The planner workspace draws a time-space (Marey) diagram of a whole route-day; the
library for it was chosen with this measurement (``docs/benchmarks.md``).

1. A route-day is generated in memory exactly as ``fleet bench analytics`` does
   (``vans`` vans out and back on one route, one fix per second for ``hours`` hours, 5 m
   GPS noise; defaults 100 vans × 16 h), its passages detected by the product's own
   detector (:func:`analytics.passages.detect_crossings`) and turned into the diagram's
   lines by :func:`analytics.planner.marey_lines` — the very payload
   ``/api/v1/planner/marey`` sends (≈ 90,000 passages for route B).
2. Each candidate (uPlot, Apache ECharts, Observable Plot with d3) is fetched from the
   npm registry with ``npm pack`` into the cache (as ``make web-assets`` fetches the
   page's libraries) and loaded as its minified browser build in headless Chromium.
3. In the page, one *render* is: turn the column-wise payload into the library's input,
   build the chart (one line per trip, coloured per van, time axis, distance axis) and
   wait until it is on screen — the next animation frame after the library is done
   (ECharts: its ``finished`` event). One warm-up render, then ``runs`` measured renders
   into a fresh container; the median, min and max are printed, with the machine's load.
"""

from __future__ import annotations

import json
import os
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from analytics.passages import RouteLine, detect_crossings
from analytics.planner import MareyLines, marey_lines
from api.web_assets import cache_dir, npm_pack
from devtools.bench_analytics import generate_day
from devtools.browser import launch_chromium
from fleet.routes import Route

__all__ = ["CANDIDATES", "LIBRARIES", "Candidate", "ChartTiming", "marey_payload", "run_bench"]

DAY_START_S: Final = 1_793_653_200.0  # 2026-11-02 05:00 WITA (21:00 UTC the day before)
WIDTH, HEIGHT = 1200, 640


@dataclass(frozen=True)
class Candidate:
    name: str
    packages: tuple[str, ...]  # npm specs, fetched with npm pack
    scripts: tuple[tuple[str, str], ...]  # (tarball of packages[i] → file in it) per script
    render_js: str  # defines window.renderChart(el, data) → Promise (resolves when drawn)


_PREPARE_TRIPS: Final = """
function trips(d) {  // column-wise passages (sorted by van, time) → one [x[], y[], van] per trip
  const out = [];
  let cur = null, last = -1;
  for (let i = 0; i < d.t.length; i++) {
    if (d.trip[i] !== last) {
      cur = { x: [], y: [], van: d.van[i] }; out.push(cur); last = d.trip[i];
    }
    cur.x.push(d.t[i]); cur.y.push(d.dist_m[i]);
  }
  return out;
}
function colour(van) { return "hsl(" + ((van * 137.5) % 360) + ",65%,42%)"; }
"""

UPLOT: Final = Candidate(
    "uplot",
    ("uplot@1.6.32",),
    (("uplot@1.6.32", "package/dist/uPlot.iife.min.js"),),
    _PREPARE_TRIPS
    + """
window.renderChart = (el, d) => new Promise((done) => {
  const ts = trips(d);
  const data = [null].concat(ts.map((s) => [s.x.map((x) => x / 1000), s.y]));
  const series = [{}].concat(ts.map((s) => ({
    stroke: colour(s.van), width: 1, points: { show: false }, paths: uPlot.paths.linear()
  })));
  new uPlot({
    mode: 2, width: __W__, height: __H__, legend: { show: false }, cursor: { show: false },
    scales: { x: { time: true }, y: { auto: true } }, series: series,
    axes: [{}, { label: "distance along the route (m)" }]
  }, data, el);
  requestAnimationFrame(() => setTimeout(done, 0));
});
""",
)

ECHARTS: Final = Candidate(
    "echarts",
    ("echarts@6.1.0",),
    (("echarts@6.1.0", "package/dist/echarts.min.js"),),
    _PREPARE_TRIPS
    + """
window.renderChart = (el, d) => new Promise((done) => {
  const ts = trips(d);
  const chart = echarts.init(el, null, { renderer: "canvas", width: __W__, height: __H__ });
  chart.on("finished", () => requestAnimationFrame(() => setTimeout(done, 0)));
  chart.setOption({
    animation: false, grid: { left: 60, right: 20, top: 20, bottom: 40 },
    xAxis: { type: "time" }, yAxis: { type: "value", name: "m" },
    series: ts.map((s) => ({
      type: "line", showSymbol: false, silent: true, lineStyle: { width: 1, color: colour(s.van) },
      data: s.x.map((x, i) => [x, s.y[i]])
    }))
  });
});
""",
)

PLOT: Final = Candidate(
    "observable-plot",
    ("d3@7.9.2", "@observablehq/plot@0.6.17"),
    (
        ("d3@7.9.2", "package/dist/d3.min.js"),
        ("@observablehq/plot@0.6.17", "package/dist/plot.umd.min.js"),
    ),
    _PREPARE_TRIPS
    + """
window.renderChart = (el, d) => new Promise((done) => {
  const rows = new Array(d.t.length);
  for (let i = 0; i < d.t.length; i++) {
    rows[i] = { t: new Date(d.t[i]), y: d.dist_m[i], trip: d.trip[i], van: d.van[i] };
  }
  el.append(Plot.plot({
    width: __W__, height: __H__, x: { type: "time" }, y: { label: "distance along the route (m)" },
    marks: [Plot.line(rows, {
      x: "t", y: "y", z: "trip", stroke: (r) => colour(r.van), strokeWidth: 1
    })]
  }));
  requestAnimationFrame(() => setTimeout(done, 0));
});
""",
)

CANDIDATES: Final = (UPLOT, ECHARTS, PLOT)
LIBRARIES: Final = tuple(c.name for c in CANDIDATES)

PAGE: Final = """<!doctype html><html><head><meta charset="utf-8"></head>
<body style="margin:0"><div id="chart"></div>
__SCRIPTS__
<script>__RENDER__
window.measure = async (data, runs) => {
  const times = [];
  for (let i = 0; i <= runs; i++) {
    const old = document.getElementById("chart");
    const el = document.createElement("div");
    el.id = "chart"; el.style.width = "__W__px"; el.style.height = "__H__px";
    old.replaceWith(el);
    const t0 = performance.now();
    await window.renderChart(el, data);
    if (i > 0) { times.push(performance.now() - t0); }  // the first render warms up
  }
  return times;
};
</script></body></html>
"""


@dataclass(frozen=True)
class ChartTiming:
    library: str
    version: str
    runs_ms: list[float]
    script_kib: float

    @property
    def median_ms(self) -> float:
        return float(statistics.median(self.runs_ms))

    def line(self) -> str:
        return (
            f"{self.library}@{self.version}: median_ms={self.median_ms:.0f} "
            f"min_ms={min(self.runs_ms):.0f} max_ms={max(self.runs_ms):.0f} "
            f"runs={len(self.runs_ms)} script_kib={self.script_kib:.0f}"
        )


def marey_payload(route: Route, vans: int, hours: float) -> tuple[MareyLines, dict[str, Any]]:
    """A generated route-day's Marey lines and the JSON the API would send for them."""
    line = RouteLine(route)
    t, lat, lon, _speed = generate_day(route, vans, hours)
    rows: list[tuple[str, float, int, int]] = []
    step = 10  # vans per detection call, as in fleet bench analytics
    for a in range(0, vans, step):
        b = min(a + step, vans)
        group = np.repeat(np.arange(a, b), t.shape[1])
        det = detect_crossings(
            line, group, t[a:b].ravel() + DAY_START_S, lat[a:b].ravel(), lon[a:b].ravel()
        )
        c = det.crossings
        seqs = line.checkpoint_seq[c.checkpoint]
        rows.extend(
            (f"bench-{g:04d}", tt, d, s)
            for g, tt, d, s in zip(
                c.group.tolist(), c.t.tolist(), c.direction.tolist(), seqs.tolist(), strict=True
            )
        )
    lines = marey_lines(rows, route, max_gap_s=1800.0)
    return lines, lines.columns()


def _spec_parts(spec: str) -> tuple[str, str]:
    name, _, version = spec.rpartition("@")
    return name, version


@contextmanager
def _page_dir(candidate: Candidate, cache: Path) -> Iterator[tuple[Path, float]]:
    tarballs = {spec: npm_pack(spec, cache) for spec in candidate.packages}
    with tempfile.TemporaryDirectory(prefix="bench-planner-") as tmp:
        root = Path(tmp)
        tags, size = [], 0
        for i, (spec, member) in enumerate(candidate.scripts):
            with tarfile.open(tarballs[spec]) as tar:
                f = tar.extractfile(member)
                if f is None:
                    raise RuntimeError(f"{tarballs[spec]} has no {member}")
                data = f.read()
            (root / f"lib{i}.js").write_bytes(data)
            size += len(data)
            tags.append(f'<script src="lib{i}.js"></script>')
        page = PAGE.replace("__SCRIPTS__", "\n".join(tags))
        page = page.replace("__RENDER__", candidate.render_js)
        page = page.replace("__W__", str(WIDTH)).replace("__H__", str(HEIGHT))
        (root / "index.html").write_text(page)
        yield root / "index.html", size / 1024


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def run_bench(
    route: Route,
    vans: int = 100,
    hours: float = 16.0,
    runs: int = 5,
    libraries: tuple[str, ...] = LIBRARIES,
    say: Callable[[str], None] = lambda _: None,
) -> list[ChartTiming]:
    """Render the route-day's diagram ``runs`` times with each library; the timings."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - dev tooling only

    t0 = time.perf_counter()
    lines, payload = marey_payload(route, vans, hours)
    trips = int(lines.trip.max()) + 1 if len(lines) else 0
    say(
        f"route {route.code}: {vans} vans × {hours:g} h → {len(lines):,} passages, "
        f"{trips} trips ({time.perf_counter() - t0:.1f} s; payload "
        f"{len(json.dumps(payload)) / 1e6:.1f} MB of JSON)"
    )
    say(load_line())
    cache = cache_dir()
    out: list[ChartTiming] = []
    chosen = [c for c in CANDIDATES if c.name in libraries]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            for cand in chosen:
                with _page_dir(cand, cache) as (index, kib):
                    page = browser.new_page(viewport={"width": WIDTH + 40, "height": HEIGHT + 40})
                    errors: list[str] = []
                    page.on("pageerror", lambda exc: errors.append(str(exc)))  # noqa: B023
                    page.goto(index.as_uri())
                    times = page.evaluate("([d, n]) => window.measure(d, n)", [payload, runs])
                    if errors:
                        raise RuntimeError(f"{cand.name}: page error: {errors[0]}")
                    page.close()
                _name, version = _spec_parts(cand.packages[-1])
                timing = ChartTiming(cand.name, version, [float(x) for x in times], kib)
                say(timing.line())
                out.append(timing)
        finally:
            browser.close()
    say(load_line())
    return out
