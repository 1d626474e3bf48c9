"""The map library comes from the npm registry at install time and is served locally."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from api import web_assets
from api.web_assets import LEAFLET_VERSION, WebAssetsError, assets_installed, install_leaflet

STATIC = Path(web_assets.__file__).resolve().parent / "static"


def test_install_copies_leaflet_and_is_idempotent(tmp_path: Path) -> None:
    if shutil.which("npm") is None:
        pytest.fail("npm is missing: `make system-deps` installs it")
    vendor = tmp_path / "vendor"
    # the default cache (filled by `make web-assets`) keeps this off the network
    assert install_leaflet(vendor) is True
    assert assets_installed(vendor)
    js = (vendor / "leaflet.js").read_text()
    assert f"Leaflet {LEAFLET_VERSION}" in js[:400]
    assert ".leaflet-container" in (vendor / "leaflet.css").read_text()
    assert (vendor / "images" / "marker-icon.png").stat().st_size > 0
    before = (vendor / "leaflet.js").stat().st_mtime_ns
    assert install_leaflet(vendor) is False  # already there: nothing fetched or copied
    assert (vendor / "leaflet.js").stat().st_mtime_ns == before


def test_a_different_version_is_not_taken_for_installed(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    for name in ("leaflet.js", "leaflet.css"):
        (vendor / name).write_text("x")
    (vendor / ".leaflet-version").write_text("1.0.0\n")
    assert not assets_installed(vendor)


def test_missing_npm_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it; empty cache below
    with pytest.raises(WebAssetsError, match=r"npm is not installed.*apt-get install nodejs npm"):
        install_leaflet(tmp_path / "vendor", cache=tmp_path / "cache")


def test_page_loads_nothing_from_the_network() -> None:
    """Every script, stylesheet and image of the page is a relative (local) URL."""
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "vendor/leaflet.js" in refs
    assert "vendor/leaflet.css" in refs
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"index.html loads {ref} from the network"
    app_js = (STATIC / "app.js").read_text()
    assert not re.search(r"https?://", app_js.replace("http://www.w3.org", ""))
