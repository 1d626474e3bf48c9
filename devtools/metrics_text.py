"""Figures read back from Prometheus text (a ``/metrics`` scrape): samples, histograms."""

from __future__ import annotations

__all__ = ["histogram", "metric_value", "quantile", "sum_samples"]


def metric_value(text: str, name: str, labels: str = "") -> float:
    """One sample from Prometheus text (0.0 when absent), e.g. ``rejected_total{reason="x"}``."""
    key = f"{name}{{{labels}}} " if labels else name + " "
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


def histogram(text: str, name: str) -> dict[float, float]:
    """The cumulative buckets of histogram ``name``: upper bound → count."""
    out: dict[float, float] = {}
    prefix = name + '_bucket{le="'
    for line in text.splitlines():
        if line.startswith(prefix):
            le = line[len(prefix) : line.index('"', len(prefix))]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return out


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float:
    """Prometheus-style histogram_quantile over the difference of two scrapes."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank:
            if bound == float("inf"):
                return prev_bound
            width = cum - prev_count
            frac = (rank - prev_count) / width if width > 0 else 1.0
            return prev_bound + (bound - prev_bound) * frac
        prev_bound, prev_count = bound, cum
    return prev_bound


def sum_samples(texts: list[str]) -> str:
    """Several processes' scrapes as one: each sample (name and labels) summed — right
    for counters and histogram buckets, a total for gauges. Comments are dropped."""
    totals: dict[str, float] = {}
    for text in texts:
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            totals[key] = totals.get(key, 0.0) + float(value)
    return "".join(f"{key} {value!r}\n" for key, value in totals.items())
