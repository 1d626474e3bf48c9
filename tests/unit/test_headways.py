"""Headway formulas on hand-worked cases, and every LOS band edge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analytics.headways import headway_stats, headways_from_passages, level_of_service


def test_equal_headways() -> None:
    s = headway_stats([600, 600, 600, 600])
    assert s.count == 4
    assert s.mean_s == 600 and s.median_s == 600
    assert s.std_s == 0 and s.cv == 0
    assert s.awt_s == pytest.approx(300)  # AWT = h/2 when regular
    assert s.ewt_s == pytest.approx(0)  # no irregularity wait
    assert s.bunched_share == 0 and s.gapped_share == 0
    assert s.los == "A"


def test_one_bunched_pair() -> None:
    # Four vans every 10 min, but two of them 1 min apart: 60, 540, 600, 600.
    h = [60, 540, 600, 600]
    s = headway_stats(h)
    assert s.mean_s == pytest.approx(450)
    assert s.median_s == pytest.approx(570)
    # σ² = ((−390)² + 90² + 150² + 150²)/4 = (152100 + 8100 + 22500 + 22500)/4 = 51300
    assert s.std_s == pytest.approx(math.sqrt(51300))
    assert s.cv == pytest.approx(math.sqrt(51300) / 450)  # 0.5033 → LOS D
    assert s.los == "D"
    # AWT = Σh² / 2Σh = (3600 + 291600 + 360000 + 360000) / 3600 = 282.0
    assert s.awt_s == pytest.approx(1015200 / 3600)
    assert s.ewt_s == pytest.approx(1015200 / 3600 - 225)
    # reference = median 570: bunched h ≤ 285 → 1 of 4; gapped h ≥ 855 → none
    assert s.bunched_share == pytest.approx(0.25)
    assert s.gapped_share == 0


def test_a_gap_with_target_headway() -> None:
    # Target 5 min; a 15-min gap among 5-min headways.
    h = [300, 300, 900, 300]
    s = headway_stats(h, target_s=300)
    assert s.reference_s == 300
    assert s.gapped_share == pytest.approx(0.25)  # 900 ≥ 1.5 × 300
    assert s.bunched_share == 0
    # AWT = (3·90000 + 810000) / (2·1800) = 1080000/3600 = 300
    assert s.awt_s == pytest.approx(300)
    assert s.ewt_s == pytest.approx(300 - 150)  # EWT against the target: AWT − H/2
    assert s.cv == pytest.approx(np.std(h) / np.mean(h))


def test_bunched_and_gapped_edges_are_inclusive() -> None:
    s = headway_stats([150, 450, 300], target_s=300)
    assert s.bunched_share == pytest.approx(1 / 3)  # 150 = 0.5 × 300
    assert s.gapped_share == pytest.approx(1 / 3)  # 450 = 1.5 × 300


def test_no_headways() -> None:
    s = headway_stats([])
    assert s.count == 0 and math.isnan(s.cv) and s.los == "-"


@pytest.mark.parametrize(
    ("cv", "los"),
    [
        (0.0, "A"),
        (0.21, "A"),
        (0.2101, "B"),
        (0.30, "B"),
        (0.3001, "C"),
        (0.39, "C"),
        (0.3901, "D"),
        (0.52, "D"),
        (0.5201, "E"),
        (0.74, "E"),
        (0.7401, "F"),
        (3.0, "F"),
    ],
)
def test_los_band_edges(cv: float, los: str) -> None:
    assert level_of_service(cv) == los


def test_headways_from_passages_per_stream() -> None:
    keys = [1, 2, 1, 1, 2]
    ts = [100.0, 50.0, 400.0, 250.0, 80.0]
    k, h, at = headways_from_passages(keys, ts)
    assert k.tolist() == [1, 1, 2]
    assert h.tolist() == [150.0, 150.0, 30.0]
    assert at.tolist() == [250.0, 400.0, 80.0]
