"""The planner page: served at /planner/, native ES modules whose imports resolve (a
browser, not a bundler, resolves them), nothing from the network, the chart library
installed from the npm registry like Leaflet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from api import web_assets
from api.app import create_app
from api.web_assets import UPLOT_VERSION, charts_installed, install_charts
from fleet.settings import ApiSettings
from tests.fixtures.es_modules import IMPORT, reachable_modules

STATIC = Path(web_assets.__file__).resolve().parent / "static"
PAGE = STATIC / "planner" / "index.html"
ENTRY = STATIC / "js" / "planner" / "main.js"
EXPORT = re.compile(r"^export (?:const|let|(?:async )?function|class) ([\w$]+)", re.MULTILINE)


def _modules() -> list[Path]:
    return reachable_modules(ENTRY)


def test_planner_modules_import_only_what_the_others_export() -> None:
    modules = _modules()
    assert {p.name for p in modules} >= {"main.js", "data.js", "charts.js", "export.js"}
    on_disk = {p.resolve() for p in (STATIC / "js" / "planner").glob("*.js")}
    assert on_disk <= set(modules), "a planner module the entry never loads"
    for module in modules:
        code = module.read_text()
        for names, spec in IMPORT.findall(code):
            assert spec.startswith((".", "..")) and spec.endswith(".js"), (module.name, spec)
            target = (module.parent / spec).resolve()
            assert target.is_file(), (module.name, spec)
            exported = set(EXPORT.findall(target.read_text()))
            for name in (n.strip().split(" as ")[0] for n in names.split(",")):
                assert name in exported, f"{module.name} imports {name} that {spec} does not export"
        assert not re.search(r"https?://", code), f"{module.name} names a network URL"


def test_planner_page_is_served_with_local_assets_only() -> None:
    html = PAGE.read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "vendor/uPlot.iife.min.js" in refs and "js/planner/main.js" in refs
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"the planner page loads {ref} from the network"
    client = TestClient(create_app(ApiSettings(dsn="postgresql://unused@127.0.0.1:1/unused")))
    r = client.get("/planner", follow_redirects=False)
    assert r.status_code in (307, 308) and r.headers["location"].endswith("/planner/")
    assert "js/planner/main.js" in client.get("/planner/").text
    for module in _modules():
        response = client.get("/" + module.relative_to(STATIC).as_posix())
        assert response.headers["content-type"].split(";")[0] == "text/javascript", module
    assert 'href="planner/"' in (STATIC / "index.html").read_text(), "the war room links it"


def test_chart_library_installs_once(tmp_path: Path) -> None:
    cache = web_assets.cache_dir()
    if not (cache / f"uplot-{UPLOT_VERSION}.tgz").is_file():
        pytest.skip("uplot tarball not cached (make web-assets fetches it)")
    vendor = tmp_path / "vendor"
    assert not charts_installed(vendor)
    assert install_charts(vendor, cache=cache) is True
    assert charts_installed(vendor)
    assert b"uPlot" in (vendor / "uPlot.iife.min.js").read_bytes()[:200]
    assert install_charts(vendor, cache=cache) is False
