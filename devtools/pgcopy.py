"""PostgreSQL binary COPY rows from numpy columns, for the benchmarks' bulk preloads.

Every column is fixed-width (``>i8``, ``>f8``, ``>f4``, ``S<n>``…), so a row is one
numpy record: field count, then each value's length and bytes; no Python per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np

__all__ = ["COPY_HEADER", "COPY_TRAILER", "PG_EPOCH_US", "copy_rows", "pg_timestamps"]

COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
COPY_TRAILER: Final = (-1).to_bytes(2, "big", signed=True)
PG_EPOCH_US: Final = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1_000_000)


def pg_timestamps(epoch_s: Any) -> Any:
    """Epoch seconds → PostgreSQL's binary timestamptz (µs since 2000-01-01)."""
    return (np.asarray(epoch_s, dtype=np.float64) * 1e6).astype(np.int64) - PG_EPOCH_US


def copy_rows(columns: Sequence[tuple[str, str, Any]], count: int) -> bytes:
    """``count`` rows of the (name, big-endian dtype, values) columns, in their order;
    values broadcast (a scalar fills the column)."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for name, dtype, _ in columns:
        fields += [(f"len_{name}", ">i4"), (name, dtype)]
    rows = np.empty(count, dtype=np.dtype(fields))
    rows["n"] = len(columns)
    for name, dtype, values in columns:
        rows[f"len_{name}"] = np.dtype(dtype).itemsize
        rows[name] = values
    return rows.tobytes()
