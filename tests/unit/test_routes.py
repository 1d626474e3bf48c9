"""The routes file and its loader: the bundled Makassar routes, checkpoints, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fleet.geometry import haversine_m
from fleet.routes import DEFAULT_ROUTES_PATH, RoutesError, load_routes, routes_geojson

# Makassar city plus Sungguminasa (Gowa): a generous bounding box.
LAT_RANGE = (-5.25, -5.05)
LON_RANGE = (119.35, 119.55)


def test_bundled_routes_are_valid_makassar_corridors() -> None:
    routes = load_routes()
    assert len(routes) >= 8
    doc = json.loads(DEFAULT_ROUTES_PATH.read_text())
    assert "APPROXIMATE" in doc["description"]
    for code, r in routes.items():
        assert r.code == code
        assert 5_000 <= r.length_m <= 15_000, (code, r.length_m)
        assert r.color.startswith("#") and len(r.color) == 7
        assert r.name
        assert np.all((LAT_RANGE[0] < r.lat) & (r.lat < LAT_RANGE[1])), code
        assert np.all((LON_RANGE[0] < r.lon) & (r.lon < LON_RANGE[1])), code
        assert r.cum_m[0] == 0.0 and np.all(np.diff(r.cum_m) > 0)
        assert r.cum_m[-1] == pytest.approx(r.length_m)
    # the corridors the issue names are covered
    names = " ".join(r.name for r in routes.values())
    for street in (
        "Perintis Kemerdekaan",
        "Urip Sumoharjo",
        "Pettarani",
        "Sultan Alauddin",
        "Veteran",
        "Ratulangi",
        "Daya",
        "Unhas",
        "Panakkukang",
        "Makassar Mall",
        "Mallengkeri",
        "Sungguminasa",
    ):
        assert street in names, street


def test_every_route_has_evenly_spaced_checkpoints_on_the_line() -> None:
    routes = load_routes()
    all_ids: set[str] = set()
    for r in routes.values():
        cps = r.checkpoints
        assert len(cps) >= 10, r.code
        assert [c.seq for c in cps] == list(range(len(cps)))
        assert all(c.route == r.code and c.id == f"{r.code}-{c.seq:03d}" for c in cps)
        d = r.checkpoint_dist_m
        spacing = np.diff(d)
        assert np.allclose(spacing, spacing[0]) and 350 <= spacing[0] <= 450
        # strictly inside: half a spacing from each terminal, never at a turnaround
        assert d[0] == pytest.approx(spacing[0] / 2) and r.length_m - d[-1] == pytest.approx(
            spacing[0] / 2
        )
        lat, lon = r.position_at(d)
        assert np.allclose(lat, [c.lat for c in cps]) and np.allclose(lon, [c.lon for c in cps])
        all_ids.update(c.id for c in cps)
    assert len(all_ids) == sum(len(r.checkpoints) for r in routes.values())


def test_checkpoint_spacing_is_configurable() -> None:
    coarse = load_routes(checkpoint_spacing_m=800)
    fine = load_routes(checkpoint_spacing_m=200)
    for code in coarse:
        n_fine, n_coarse = len(fine[code].checkpoints), len(coarse[code].checkpoints)
        assert 3.5 * n_coarse <= n_fine <= 4.5 * n_coarse
    with pytest.raises(RoutesError, match="spacing"):
        load_routes(checkpoint_spacing_m=0)


def test_position_and_bearing_follow_the_polyline() -> None:
    r = load_routes()["D"]
    lat, lon = r.position_at([0.0, r.length_m, -5.0, r.length_m + 100])
    assert (lat[0], lon[0]) == (r.lat[0], r.lon[0])
    assert (lat[1], lon[1]) == pytest.approx((r.lat[-1], r.lon[-1]))
    assert (lat[2], lat[3]) == (lat[0], lat[1])  # clipped to the route
    mid = r.cum_m[3] + 10.0
    la, lo = r.position_at(mid)
    assert float(haversine_m(la, lo, r.lat[3], r.lon[3])) == pytest.approx(10.0, abs=0.01)
    # D runs from Makassar Mall east, then north-east to Daya
    b = r.bearing_at(np.linspace(0, r.length_m, 50))
    assert np.all((b > 25) & (b < 125))


def test_routes_geojson_has_lines_and_checkpoints() -> None:
    routes = load_routes()
    fc = routes_geojson(routes)
    json.dumps(fc)  # serialisable as is
    assert fc["type"] == "FeatureCollection"
    lines = [f for f in fc["features"] if f["properties"]["kind"] == "route"]
    points = [f for f in fc["features"] if f["properties"]["kind"] == "checkpoint"]
    assert {f["properties"]["code"] for f in lines} == set(routes)
    assert len(points) == sum(len(r.checkpoints) for r in routes.values())
    assert all(f["geometry"]["type"] == "Point" for f in points)
    b = next(f for f in lines if f["properties"]["code"] == "B")
    assert b["geometry"]["coordinates"][0] == [
        round(float(routes["B"].lon[0]), 6),
        round(float(routes["B"].lat[0]), 6),
    ]


def _feature(code: str = "X1", coords: object = None, **props: object) -> dict[str, object]:
    coords = coords if coords is not None else [[119.41, -5.13], [119.45, -5.13]]
    return {
        "type": "Feature",
        "properties": {"code": code, "name": "Test route", "color": "#123456", **props},
        "geometry": {"type": "LineString", "coordinates": coords},
    }


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "routes.geojson"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_a_minimal_custom_file_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, {"type": "FeatureCollection", "features": [_feature()]})
    routes = load_routes(path)
    assert list(routes) == ["X1"]
    assert routes["X1"].length_m == pytest.approx(4430, rel=0.01)
    assert routes["X1"].target_headway_s is None


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({"type": "Feature"}, "FeatureCollection"),
        ({"type": "FeatureCollection", "features": []}, "non-empty"),
        ({"type": "FeatureCollection", "features": [42]}, "feature 0: expected a GeoJSON Feature"),
        (
            {"type": "FeatureCollection", "features": [_feature(), _feature("bad code!")]},
            "feature 1: properties.code",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(coords=[[119.41, -5.13]])]},
            r"feature 0 \(route X1\): a LineString needs at least 2",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [_feature(coords=[[-5.13, 119.41], [-5.13, 119.45]])],
            },
            r"position 0 .* out of range \(GeoJSON order is \[lon, lat\]\)",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(coords=[[119.41, "x"], [1, 2]])]},
            "position 0 must be",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(color="red")]},
            "properties.color",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(name="")]},
            "properties.name",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(target_headway_s=-5)]},
            "target_headway_s",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(), _feature()]},
            "feature 1: duplicate route code 'X1'",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [_feature(coords=[[119.41, -5.13], [119.41, -5.13], [119.45, -5.13]])],
            },
            "positions 0 and 1 are identical",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [_feature(coords=[[119.41, -5.13], [119.4101, -5.13]])],
            },
            "route is 11 m long",
        ),
        (
            {
                "type": "FeatureCollection",
                "features": [
                    {**_feature(), "geometry": {"type": "Point", "coordinates": [119.4, -5.1]}}
                ],
            },
            "geometry must be a LineString, got 'Point'",
        ),
    ],
)
def test_broken_files_get_a_clear_error(tmp_path: Path, doc: object, expected: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(RoutesError, match=expected) as err:
        load_routes(path)
    assert str(err.value).startswith(str(path))


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(RoutesError, match="cannot read the routes file"):
        load_routes(tmp_path / "nope.geojson")
