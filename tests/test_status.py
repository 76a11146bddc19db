"""`is-telemetry status` against a real stack (embedded broker, faust worker, chDB, collector, API), then against
the same addresses with everything stopped."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.stack import RunningStack, post_samples, start_stack

pytestmark = pytest.mark.integration


def run_status(stack: RunningStack, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "is_telemetry",
            "status",
            "--api",
            stack.api_url,
            "--collector",
            stack.collector_url,
            "--kafka",
            f"127.0.0.1:{stack.broker_port}",
            "--timeout",
            "3",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=stack.data_dir,
    )


def line(out: str, name: str) -> str:
    found = [x for x in out.splitlines() if re.match(rf"\s+{re.escape(name)}\s{{2,}}", x)]
    assert len(found) == 1, f"no single {name!r} line in:\n{out}"
    return found[0]


def test_status_of_a_running_then_stopped_stack(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack", "--no-simulate")
    try:
        post_samples(stack)
        stack.wait_for(
            "SELECT deployments, cli_installs FROM fleet_daily",
            lambda rows: rows and rows[0]["deployments"] == 3 and rows[0]["cli_installs"] == 3,
        )
        # The worker commits its offsets about once a second after a batch is stored: allow a few tries for lag 0.
        deadline = time.monotonic() + 20
        while True:
            r = run_status(stack)
            if (r.returncode == 0 and "0 records behind" in r.stdout) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert r.returncode == 0, r.stdout + r.stderr
        out = r.stdout
        assert re.search(r"collector\s+OK\s+http://127\.0\.0\.1:\d+\s+healthz ok, readyz ready", line(out, "collector"))
        assert re.search(rf"API\s+OK\s+{re.escape(stack.api_url)}\s+healthz ok", line(out, "API"))
        assert re.search(
            r"Kafka\s+OK\s+.*topic tts-telemetry-raw: 8 partitions, high-water marks sum to 6", line(out, "Kafka")
        )
        assert re.search(
            r"lag\s+OK\s+0 records behind on tts-telemetry-raw \(group is-telemetry-processors;", line(out, "lag")
        )
        ch = line(out, "ClickHouse")
        assert re.search(r"ClickHouse\s+OK\s+last snapshot received \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ \(\d+ s ago\)", ch)
        # `up` serves the API from the writing worker, so its /metrics has the sink metric.
        assert re.search(r"sink last write \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", ch)
        # the refreshes of the fleet over time (dashboard /api/freshness)
        assert re.search(r"views\s+OK\s+analyst_daily_refresh, retention_refresh refreshing", line(out, "views"))
        today = line(out, "today")
        for figure in (
            "deployments 3",
            "CLI installs 3",
            "gateways 5",
            "end devices 132",
            "applications 8",
            "users 7",
            "organizations 2",
        ):
            assert figure in today, (figure, today)
        assert out.rstrip().endswith("all healthy")
        # --max-lag turns lag into a health condition (0 is not over 0).
        assert run_status(stack, "--max-lag", "0").returncode == 0
    finally:
        assert stack.stop() == 0

    started = time.monotonic()
    r = run_status(stack)
    assert r.returncode == 1, r.stdout
    assert time.monotonic() - started < 30
    out = r.stdout
    assert re.search(r"collector\s+DOWN\s+.*connection refused", line(out, "collector"))
    assert re.search(r"API\s+DOWN\s+.*connection refused", line(out, "API"))
    assert re.search(r"Kafka\s+DOWN\s+127\.0\.0\.1:\d+\s+not reachable", line(out, "Kafka"))
    assert "not computed" in line(out, "lag") and "not checked" in line(out, "ClickHouse")
    assert "not checked" in line(out, "views")
    assert out.splitlines()[-1] == "unhealthy: collector, API, Kafka down; lag, ClickHouse, views not checked"
