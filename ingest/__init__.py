"""Ingest: MQTT → validation → PostgreSQL, acknowledging only what has been committed."""
