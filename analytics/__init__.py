"""Planner analytics: checkpoint passages, headways, congestion, alerts, reports, GTFS.

Runs inside the ingest process as :class:`analytics.loop.AnalyticsLoop`; the
reports and feeds are served by ``api.routes.reports`` / ``api.routes.gtfs`` and the
``fleet report`` / ``fleet gtfs`` commands.
"""
