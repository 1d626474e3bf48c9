"""Planner reports: headways, congestion (segments or H3 areas) and service.

One registry (:mod:`analytics.reports.registry`) describes every report — name,
parameters, SQL, row type, CSV columns — and both ``fleet report`` and
``/api/v1/reports/*`` are built from it, so the two give identical rows.

* ``params``: the filters and :class:`ReportParams`;
* ``headways``, ``congestion``, ``service``: each report's SQL, row type and builder;
* ``registry``: the :class:`Report` descriptions;
* ``run``: reading a report (sync, piece by piece; or async);
* ``render``: JSON and CSV.
"""

from analytics.reports.params import ReportError, ReportParams, parse_time, read_params
from analytics.reports.registry import PUBLISHED, REPORTS, Report, Variant, report_named
from analytics.reports.render import MEDIA_TYPES, render
from analytics.reports.run import report_chunks, run_report, run_report_async

__all__ = [
    "MEDIA_TYPES",
    "PUBLISHED",
    "REPORTS",
    "Report",
    "ReportError",
    "ReportParams",
    "Variant",
    "parse_time",
    "read_params",
    "render",
    "report_chunks",
    "report_named",
    "run_report",
    "run_report_async",
]
