"""Install the pages' libraries from the npm registry, at install time: the war room's map
(Leaflet) and the planner workspace's charts (uPlot).

``python -m api.web_assets`` (``make web-assets``) fetches ``leaflet@<LEAFLET_VERSION>``
and ``uplot@<UPLOT_VERSION>`` with ``npm pack`` into a cache directory and copies
``leaflet.js``, ``leaflet.css`` and its marker images, ``uPlot.iife.min.js`` and
``uPlot.min.css`` into ``api/static/vendor/``, which the API serves.  Nothing is loaded
from a CDN at run time.  A second run with the same versions is a no-op.  (Why uPlot:
``fleet bench planner-charts``, ``docs/benchmarks.md``.)
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Final

__all__ = [
    "LEAFLET_VERSION",
    "UPLOT_VERSION",
    "VENDOR_DIR",
    "WebAssetsError",
    "assets_installed",
    "charts_installed",
    "install_charts",
    "install_leaflet",
    "main",
    "npm_pack",
]

log = logging.getLogger(__name__)

LEAFLET_VERSION: Final = "1.9.4"
VENDOR_DIR: Final = Path(__file__).resolve().parent / "static" / "vendor"
STAMP_NAME: Final = ".leaflet-version"
UPLOT_VERSION: Final = "1.6.32"
UPLOT_STAMP: Final = ".uplot-version"
#: (file in the uplot package, file in vendor/)
UPLOT_FILES: Final = (
    ("package/dist/uPlot.iife.min.js", "uPlot.iife.min.js"),
    ("package/dist/uPlot.min.css", "uPlot.min.css"),
)
# Files the page needs, relative to the package's ``dist/`` directory.
REQUIRED: Final = ("leaflet.js", "leaflet.css")
IMAGES: Final = ("layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png")


class WebAssetsError(RuntimeError):
    """npm is missing or the package could not be fetched; the message says what to do."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "makassar-fleet" / "npm"


def assets_installed(vendor_dir: Path = VENDOR_DIR, version: str = LEAFLET_VERSION) -> bool:
    stamp = vendor_dir / STAMP_NAME
    if not stamp.exists() or stamp.read_text().strip() != version:
        return False
    return all((vendor_dir / name).is_file() for name in REQUIRED)


def _npm() -> str:
    npm = shutil.which("npm")
    if npm is None:
        raise WebAssetsError(
            "npm is not installed, so the map library (Leaflet) cannot be fetched from the "
            "npm registry: run `make system-deps` or `apt-get install nodejs npm`, then "
            "`make web-assets`"
        )
    return npm


def npm_pack(spec: str, cache: Path) -> Path:
    """The tarball of ``spec`` (``name@version``) from the npm registry, cached in ``cache``."""
    name, _, version = spec.rpartition("@")
    tarball = cache / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [_npm(), "pack", spec, "--pack-destination", str(cache), "--silent"]
    log.info("fetching %s from the npm registry", spec)
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired:
        raise WebAssetsError(
            f"`npm pack {spec}` took more than 5 minutes: is the npm registry "
            "reachable (proxy, `npm config get registry`)?"
        ) from None
    if res.returncode != 0 or not tarball.is_file():
        raise WebAssetsError(
            f"`npm pack {spec}` failed (exit {res.returncode}): "
            f"{(res.stderr or res.stdout).strip()[-800:]}"
        )
    return tarball


def _fetch_tarball(version: str, cache: Path) -> Path:
    return npm_pack(f"leaflet@{version}", cache)


def _copy_from_tarball(tarball: Path, vendor_dir: Path, version: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
        tar.extractall(tmp, members=members, filter="data")
        dist = Path(tmp) / "package" / "dist"
        missing = [
            n for n in (*REQUIRED, *(f"images/{i}" for i in IMAGES)) if not (dist / n).is_file()
        ]
        if missing:
            raise WebAssetsError(f"{tarball} lacks {', '.join(missing)}: delete it and rerun")
        (vendor_dir / "images").mkdir(parents=True, exist_ok=True)
        for name in REQUIRED:
            shutil.copyfile(dist / name, vendor_dir / name)
        for image in sorted((dist / "images").iterdir()):
            shutil.copyfile(image, vendor_dir / "images" / image.name)
    (vendor_dir / STAMP_NAME).write_text(version + "\n")


def install_leaflet(
    vendor_dir: Path = VENDOR_DIR, version: str = LEAFLET_VERSION, cache: Path | None = None
) -> bool:
    """Ensure Leaflet is in ``vendor_dir``; return True when something was installed."""
    if assets_installed(vendor_dir, version):
        return False
    tarball = _fetch_tarball(version, cache or cache_dir())
    _copy_from_tarball(tarball, vendor_dir, version)
    log.info("leaflet@%s installed in %s", version, vendor_dir)
    return True


def charts_installed(vendor_dir: Path = VENDOR_DIR, version: str = UPLOT_VERSION) -> bool:
    stamp = vendor_dir / UPLOT_STAMP
    if not stamp.exists() or stamp.read_text().strip() != version:
        return False
    return all((vendor_dir / name).is_file() for _, name in UPLOT_FILES)


def install_charts(
    vendor_dir: Path = VENDOR_DIR, version: str = UPLOT_VERSION, cache: Path | None = None
) -> bool:
    """Ensure uPlot (the planner's charts) is in ``vendor_dir``; True when installed now."""
    if charts_installed(vendor_dir, version):
        return False
    tarball = npm_pack(f"uplot@{version}", cache or cache_dir())
    vendor_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        for member, name in UPLOT_FILES:
            f = tar.extractfile(member)
            if f is None:
                raise WebAssetsError(f"{tarball} lacks {member}: delete it and rerun")
            (vendor_dir / name).write_bytes(f.read())
    (vendor_dir / UPLOT_STAMP).write_text(version + "\n")
    log.info("uplot@%s installed in %s", version, vendor_dir)
    return True


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        installed = install_leaflet()
        charts = install_charts()
    except WebAssetsError as exc:
        sys.stderr.write(f"web-assets: {exc}\n")
        sys.exit(2)
    if not installed:
        log.info("leaflet@%s already in %s", LEAFLET_VERSION, VENDOR_DIR)
    if not charts:
        log.info("uplot@%s already in %s", UPLOT_VERSION, VENDOR_DIR)


if __name__ == "__main__":
    main()
