"""The tests' fixtures live in ``tests/fixtures/`` and load here as plugins.

Layout: ``unit/`` (no broker, no database), ``integration/`` (a real Mosquitto and/or
PostgreSQL, each started by a fixture on a free port), ``e2e/`` (whole processes: the
demo, the browser, sim → ingest → analytics, the fault benches).
"""

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
