"""Sinks: batched, idempotent writes of snapshots and day aggregates to ClickHouse."""
