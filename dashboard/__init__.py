"""HTTP API and dashboard over the ClickHouse store."""
