"""Report rows as JSON (one array of objects) or CSV (a header, then one line per row)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

__all__ = ["MEDIA_TYPES", "Format", "render"]

Format = Literal["json", "csv"]
MEDIA_TYPES: Final[dict[str, str]] = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}


def render(
    rows: Sequence[Mapping[str, Any]], fmt: Format, columns: Sequence[str] | None = None
) -> str:
    """``columns`` (a report's, see :attr:`analytics.reports.registry.Report.columns`)
    name the CSV header even when there are no rows; without them, the rows' keys."""
    if fmt == "json":
        return json.dumps(list(rows), ensure_ascii=False, indent=None, separators=(",", ":"))
    header = (
        list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    )
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()
