"""Every command logs through the one set-up (core/logsetup.py): `IS_TELEMETRY_LOG_FORMAT=json` makes each log line
one JSON object, `produce` included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from is_telemetry.broker import free_port

pytestmark = pytest.mark.integration  # it starts `is-telemetry produce`


def test_produce_logs_json_lines_on_request(tmp_path: Path) -> None:
    """An Identity Server database where nothing listens: its retry lines are logged, each one JSON object."""
    env = {**os.environ, "IS_TELEMETRY_LOG_FORMAT": "json"}
    dsn = f"postgresql://telemetry@127.0.0.1:{free_port()}/ttn_lorawan"
    args = ["--once", "--database", dsn, "--target", "http://127.0.0.1:9/collect"]
    retry = ["--max-retries", "1", "--retry-initial-seconds", "0.1"]
    r = subprocess.run(
        [sys.executable, "-m", "is_telemetry", "produce", *args, *retry],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 1, r.stdout + r.stderr
    logged = [line for line in r.stderr.splitlines() if "database unreachable" in line and "error: message" not in line]
    assert len(logged) == 2, r.stderr  # the retry and the give-up
    entries = [json.loads(line) for line in logged]  # every log line is one JSON object
    assert [e["level"] for e in entries] == ["WARNING", "ERROR"], entries
    assert all(e["logger"] == "core.retry" for e in entries), entries
