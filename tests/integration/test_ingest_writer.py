"""The batch writer's statements, derived from one column list, against the real schema."""

from __future__ import annotations

import time

import psycopg

from fleet.contract import Fix
from ingest.writer import FIX_COLUMNS, POSITION_COLUMNS, BatchWriter, Item


def _columns(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, bool]]:
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable = 'NO' FROM information_schema.columns"
        " WHERE table_name = %s",
        (table,),
    ).fetchall()
    return {name: (dtype, not_null) for name, dtype, not_null in rows}


def test_the_column_list_matches_the_migrated_tables_and_fix(db_dsn: str) -> None:
    assert tuple(c.name for c in FIX_COLUMNS) == Fix.__struct_fields__
    with psycopg.connect(db_dsn) as conn:
        positions = _columns(conn, "positions")
        vehicles = _columns(conn, "vehicles")
    for c in POSITION_COLUMNS:
        assert c.name in positions, c
        assert positions[c.name][1] == c.not_null, c
        if c.latest:
            assert c.latest in vehicles, c
    written = {c.name for c in POSITION_COLUMNS}
    assert set(positions) - written == {"received_at"}  # the server's own default


def test_a_batch_is_stored_once_and_the_latest_position_never_moves_back(db_dsn: str) -> None:
    now = int(time.time() * 1000)
    writer = BatchWriter(db_dsn)
    try:
        full = Fix(ts=now, lat=-5.1, lon=119.4, speed=3.5, heading=90.0, accuracy=4.0,
                   route="B", seq=7)  # fmt: skip
        older = Fix(ts=now - 60_000, lat=-5.2, lon=119.5, seq=6)  # no route: keeps "B"
        result = writer.write([Item("fleet/PP-1/telemetry", b"{}", "PP-1", [full, older])])
        assert (result.stored, result.duplicates) == (2, 0)
        again = writer.write([Item("fleet/PP-1/telemetry", b"{}", "PP-1", [full])])
        assert (again.stored, again.duplicates) == (0, 1)
        newer = Fix(ts=now + 1000, lat=-5.3, lon=119.6, seq=8)
        writer.write([Item("fleet/PP-1/telemetry", b"{}", "PP-1", [newer, older])])
    finally:
        writer.close()
    with psycopg.connect(db_dsn) as conn:
        row = conn.execute(
            "SELECT vehicle_id, (extract(epoch FROM ts) * 1000)::bigint, lat, lon, speed,"
            " heading, accuracy, route, seq FROM positions WHERE seq = 7"
        ).fetchone()
        latest = conn.execute(
            "SELECT (extract(epoch FROM last_ts) * 1000)::bigint, lat, speed, route"
            " FROM vehicles WHERE vehicle_id = 'PP-1'"
        ).fetchone()
    assert row == ("PP-1", now, -5.1, 119.4, 3.5, 90.0, 4.0, "B", 7)
    assert latest == (now + 1000, -5.3, None, "B")
