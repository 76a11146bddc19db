import os

# The benches' simulated fleets end on fixed days (2025), older than the default retention (core/config.py: 396 days
# of snapshots): every process a bench starts keeps everything, as in tests/conftest.py.
for _ttl in ("SNAPSHOT_TTL_DAYS", "REJECTION_BODY_TTL_DAYS", "UID_STATE_TTL_DAYS"):
    os.environ.setdefault(f"IS_TELEMETRY_CLICKHOUSE__{_ttl}", "0")
