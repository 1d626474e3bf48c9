"""The tests' fixtures live in ``tests/fixtures/`` and load here as plugins.

Layout: ``unit/`` (no broker, no database), ``integration/`` (a real Mosquitto and/or
PostgreSQL, each started by a fixture on a free port), ``e2e/`` (whole processes: the
demo, the browser, sim → ingest → analytics, the fault benches).
"""

import pytest

pytest_plugins = [
    "tests.fixtures.waiting",
    "tests.fixtures.postgres",
    "tests.fixtures.mqtt",
    "tests.fixtures.ingest",
    "tests.fixtures.api",
    "tests.fixtures.sim",
    "tests.fixtures.firmware",
    "tests.fixtures.analytics",
    "tests.fixtures.demo",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (``make test``), the slow fault and
    end-to-end tests run one after another on one worker while the other worker takes
    the rest: two kill -9 scenarios never compete with each other for the two cores."""
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(pytest.mark.xdist_group("slow"))
