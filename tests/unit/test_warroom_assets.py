"""The map library comes from the npm registry at install time and is served locally; the
page's own code is native ES modules (no build step) served as JavaScript."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api import web_assets
from api.app import create_app
from api.web_assets import LEAFLET_VERSION, WebAssetsError, assets_installed, install_leaflet
from fleet.settings import ApiSettings
from tests.fixtures.es_modules import IMPORT, reachable_modules

STATIC = Path(web_assets.__file__).resolve().parent / "static"
ENTRY = STATIC / "app.js"
EXPORT = re.compile(r"^export (?:const|let|function) ([\w$]+)", re.MULTILINE)


def _modules() -> list[Path]:
    return reachable_modules(ENTRY)


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
    assert '<script type="module" src="app.js"></script>' in html
    for module in _modules():
        code = module.read_text().replace("http://www.w3.org", "")
        assert not re.search(r"https?://", code), f"{module.name} names a network URL"


def test_modules_import_only_what_the_others_export() -> None:
    """Relative imports of files that exist and export the names (a browser, not a bundler,
    resolves them: a typo is a blank page)."""
    modules = _modules()
    assert len(modules) >= 8
    on_disk = {ENTRY, *(p.resolve() for p in (STATIC / "js").glob("*.js"))}
    assert set(modules) == on_disk, "a module in js/ that the entry never loads"
    for module in modules:
        code = module.read_text()
        lines = [line for line in code.splitlines() if line.startswith("import ")]
        assert len(lines) == len(IMPORT.findall(code)), f"{module.name}: an unexpected import form"
        for names, spec in IMPORT.findall(code):
            assert spec.startswith("./") and spec.endswith(".js"), (module.name, spec)
            target = (module.parent / spec).resolve()
            assert target.is_file(), (module.name, spec)
            exported = set(EXPORT.findall(target.read_text()))
            for name in (n.strip() for n in names.split(",")):
                assert name in exported, f"{module.name} imports {name} that {spec} does not export"


def test_the_api_serves_the_modules_as_javascript() -> None:
    """Browsers refuse a module script with any other MIME type."""
    app = create_app(ApiSettings(dsn="postgresql://unused@127.0.0.1:1/unused"))
    client = TestClient(app)  # not started: static files need no database
    assert "app.js" in client.get("/").text
    for module in _modules():
        response = client.get("/" + module.relative_to(STATIC).as_posix())
        assert response.status_code == 200, module
        media_type = response.headers["content-type"].split(";")[0]
        assert media_type in ("text/javascript", "application/javascript"), (module, media_type)
