"""Time each statement of ingest's batch transaction on its own (no broker, no worker).

``python -m devtools.bench_writer [--batch 2200 --vans 10000 --batches 60 --drop-index
NAME ...]`` starts an embedded PostgreSQL in a temporary directory, migrates it, and
writes ``batches`` batches of ``batch`` single-fix messages from ``vans`` vans (the
shape of ``fleet bench ingest --rate 20000 --devices 10000``) with
:mod:`ingest.writer`'s own statements, timing each step: the binary ``COPY`` into the
stage (with the Python that feeds it), the ``INSERT … ON CONFLICT`` into ``positions``,
the latest-position upsert into ``vehicles``, and the commit (the batch's items are
made before the clock starts, as the worker's decoder makes them). ``--drop-index`` drops
an index of ``positions`` first, to see what it costs each inserted fix. Prints the
median of each step after 10 warm-up batches, per batch and per fix.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from fleet.contract import Fix, telemetry_topic
from fleet.storage.embedded import EmbeddedPostgres, free_port
from fleet.storage.migrate import migrate
from ingest import writer
from ingest.writer import Item

__all__ = ["main", "time_statements"]

WARMUP_BATCHES = 10
STEPS = ("copy", "insert", "latest", "commit")


def time_statements(
    dsn: str, batch: int, vans: int, batches: int, drop: list[str]
) -> dict[str, float]:
    """Median seconds of each step of the batch transaction."""
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    now = int(time.time() * 1000)
    with psycopg.connect(dsn) as conn:
        for index in drop:
            conn.execute(f"DROP INDEX {psycopg.sql.Identifier(index).as_string(conn)}")
        conn.execute(writer._STAGE_DDL)
        conn.commit()
        for b in range(batches):
            with conn.cursor() as cur:
                items = [
                    Item(telemetry_topic(f"V{i % vans:05d}"), b"", f"V{i % vans:05d}",
                         [Fix(ts=now + i, lat=-5.14, lon=119.42, seq=i)])
                    for i in range(b * batch, (b + 1) * batch)
                ]  # fmt: skip
                t0 = time.perf_counter()
                writer.copy_to_stage(cur, items)
                t1 = time.perf_counter()
                cur.execute(writer._INSERT)
                cur.fetchone()
                t2 = time.perf_counter()
                cur.execute(writer._LATEST)
                t3 = time.perf_counter()
            conn.commit()
            t4 = time.perf_counter()
            if b >= WARMUP_BATCHES:
                for step, seconds in zip(STEPS, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    times[step].append(seconds)
    return {step: statistics.median(v) for step, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=2200)
    parser.add_argument("--vans", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--drop-index", action="append", default=[], metavar="NAME")
    a = parser.parse_args()
    if a.batches <= WARMUP_BATCHES:
        parser.error(f"--batches must be more than the {WARMUP_BATCHES} warm-up batches")
    with tempfile.TemporaryDirectory(prefix="fleet-bench-writer-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", port=free_port())
        pg.start()
        try:
            migrate(pg.dsn)
            medians = time_statements(pg.dsn, a.batch, a.vans, a.batches, a.drop_index)
        finally:
            pg.stop()
    for step, seconds in medians.items():
        print(  # noqa: T201
            f"{step}: {seconds * 1000:.1f} ms per {a.batch} fixes = "
            f"{seconds / a.batch * 1e6:.1f} us/fix"
        )
    total = sum(medians.values())
    print(  # noqa: T201
        f"total_ms={total * 1000:.1f} us_per_fix={total / a.batch * 1e6:.1f} "
        f"one_writer_max_fixes_per_s={a.batch / total:.0f} dropped={','.join(a.drop_index) or '-'}"
    )


if __name__ == "__main__":
    main()
