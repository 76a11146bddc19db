"""Every sample body POSTed to the collector ends up as the exact rows in ClickHouse (real broker, faust, chDB)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import pytest

from tests.samples import SAMPLES
from tests.stack import RunningStack, post_samples, start_stack

pytestmark = pytest.mark.integration


EXPECTED_FLEET = {
    "deployments": 3,
    "cli_installs": 3,
    "gateways": 5,
    "end_devices": 132,
    "active_end_devices": 100,
    "active_last_day": 61,
    "active_last_week": 82,
    "active_last_month": 93,
    "applications": 8,
    "users_standard": 4,
    "users_admin": 3,
    "organizations": 2,
    "default_uid_deployments": 1,
    "inconsistent_deployments": 0,
}
EXPECTED_PLANS = {"EU_863_870": 2, "EU_863_870_TTN": 3, "US_902_928_FSB_1": 1, "US_902_928_FSB_2": 2}
EXPECTED_VERSIONS = {"3.27": 1, "3.32": 1, "3.33": 1}


def test_samples_become_exact_rows(stack: RunningStack) -> None:
    post_samples(stack)
    # An exact re-send of every body the same day changes nothing.
    post_samples(stack)
    fleet = stack.wait_for(
        "SELECT * FROM fleet_daily", lambda rows: rows and rows[0]["deployments"] == 3 and rows[0]["cli_installs"] == 3
    )
    assert len(fleet) == 1
    assert {k: v for k, v in fleet[0].items() if k != "day"} == EXPECTED_FLEET

    plans = stack.sql("SELECT frequency_plan_id, gateways FROM gateways_by_frequency_plan_daily")
    assert {r["frequency_plan_id"]: r["gateways"] for r in plans} == EXPECTED_PLANS
    versions = stack.sql("SELECT version, deployments FROM deployments_by_version_daily")
    assert {r["version"]: r["deployments"] for r in versions} == EXPECTED_VERSIONS
    cli = stack.sql("SELECT version, installs FROM cli_installs_by_version_daily")
    assert sorted((r["version"], r["installs"]) for r in cli) == [("3.30", 1), ("3.35", 2)]
    assert stack.sql("SELECT * FROM rejected_daily") == []

    # One snapshot per UID, body stored byte for byte.
    snaps = stack.sql("SELECT uid, kind, body FROM snapshots_latest ORDER BY uid")
    bodies = {orjson.loads(b)["uid"]: b for b in SAMPLES.values()}
    assert {r["uid"]: r["body"].encode() for r in snaps} == bodies
    assert sorted(r["kind"] for r in snaps) == ["cli", "cli", "cli", "is", "is", "is"]

    # The 2025 CLI's report (cli-2025.json; cli-2025-first.json names nothing yet), sent twice: counted once.
    # (the analysts' day row is refreshed every 10 s: one computed while the samples were still arriving is replaced)
    want = [("applications list", 1, 1, 3), ("end-devices list", 1, 3, 3)]
    usage = stack.wait_for(
        "SELECT command_path, installs, executions, active_installs FROM cli_command_usage_daily ORDER BY command_path",
        lambda rows: [tuple(r.values()) for r in rows] == want,
    )
    assert [tuple(r.values()) for r in usage] == want
    aliases = stack.sql("SELECT command_name, alias, installs, uses FROM cli_alias_usage_daily ORDER BY alias")
    assert [tuple(r.values()) for r in aliases] == [("applications", "app", 1, 1), ("end-devices", "dev", 1, 2)]
    new = stack.sql("SELECT new, new_2025_cli, new_older_cli FROM cli_lifecycle_daily")
    assert [tuple(r.values()) for r in new] == [(3, 2, 1)]


def test_sql_cli_formats_and_restart_keeps_rows(tmp_path) -> None:
    stack = start_stack(tmp_path / "s", "--no-simulate")
    try:
        post_samples(stack)
        r = httpx.post(
            stack.collector_url,
            content=b'{"uid": "nope", "cli": {}, "entities_count": null}',
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 202  # parses: the processors reject it, not the edge
        stack.wait_for(
            "SELECT * FROM rejected_daily",
            lambda rows: rows == [{**rows[0], "reason": "bad_uid", "messages": 1}] if rows else False,
        )
        stack.wait_for("SELECT deployments FROM fleet_daily", lambda rows: rows and rows[0]["deployments"] == 3)
        cmd = [sys.executable, "-m", "is_telemetry", "sql", "--api", stack.api_url]
        out = subprocess.run(
            [*cmd, "--format", "json", "SELECT deployments, gateways FROM fleet_daily"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert orjson.loads(out) == [{"deployments": 3, "gateways": 5}]
        out = subprocess.run(
            [*cmd, "--format", "csv", "SELECT reason, messages FROM rejected_daily"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out == "reason,messages\nbad_uid,1\n"
        out = subprocess.run(
            [*cmd, "SELECT gateways FROM fleet_daily"], capture_output=True, text=True, check=True
        ).stdout
        assert out.splitlines() == ["gateways", "--------", "5", "(1 row)"]
        # Read-only: refused with 403 and a message that says so.
        bad = subprocess.run([*cmd, "DROP TABLE snapshots"], capture_output=True, text=True)
        assert bad.returncode == 1 and "refused (read-only): writes are not allowed" in bad.stderr
    finally:
        assert stack.stop() == 0
    # Everything that reached ClickHouse survives a stop and a start on the same data dir.
    again = start_stack(tmp_path / "s", "--no-simulate")
    try:
        rows = again.sql("SELECT deployments, cli_installs, gateways FROM fleet_daily")
        assert rows == [{"deployments": 3, "cli_installs": 3, "gateways": 5}]
    finally:
        assert again.stop() == 0
