"""Planner analytics: checkpoint passages, headways, congestion, alerts, reports, GTFS.

A library with three users, none of which it imports: the ingest process runs
:class:`analytics.loop.AnalyticsLoop`; the API serves the reports and feeds
(``api.routes.reports``, ``api.routes.gtfs``); ``fleet report`` and ``fleet gtfs``
are :mod:`analytics.cli`. Each report is described once, in
:mod:`analytics.reports.registry`, for both the CLI and the API.
"""
