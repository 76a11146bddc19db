"""Every dashboard panel answers, with a bounded number of rows, whatever the number of distinct keys stored (the
security test's finding 5: 50 UIDs with 4,000 plans each made /api/gateways-by-frequency-plan answer 503, 120 CLI
installs with 800 commands each made /api/cli answer 503, and 95,000 plans made the page build 95,023 rows).

One real stack (`is-telemetry up --no-simulate`) is fed, straight to Kafka, two days of what one sender can store
within the bounds: 200 deployments with the most frequency plans a message may list (distinct plans, OS, arch and
versions, each one jumping 1000-fold), and 200 CLI installs with the most commands and aliases a report may list.
Then every panel answers 200 in JSON and CSV with at most its bound of rows, the rest summed in one "other" row
(key null, `others` = how many keys it sums), and the page in headless Chromium (Debian's `chromium`) is ready with
small tables.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.schema import MAX_CLI_ALIASES, MAX_CLI_COMMANDS, MAX_FREQUENCY_PLANS
from dashboard.panel_model import TOP_JUMPS, TOP_KEYS, TOP_SERIES
from producers import simulator
from producers.simulator import DAY_MS, Delivery
from tests.browser import Dom, run_chromium
from tests.panels import ANALYST_PANELS, PANELS, TOPIC, csv_rows
from tests.stack import RunningStack, start_stack
from tests.uids import uid

pytestmark = pytest.mark.integration


SENDERS = 200  # one client's new UIDs a day (collector.max_new_uids_per_client_per_day)
ESTABLISHED = 5  # deployments on the newest version, 5.0: enough to pass the bar of max(3, 1 %)
#: The most rows any panel's table may have here: two days, three dimensions, the largest K and an "other" row.
BOUND = 2 * 3 * (max(TOP_KEYS, TOP_SERIES, TOP_JUMPS) + 1)


def is_message(i: int, end_devices: int) -> bytes:
    return json.dumps(
        {
            "uid": uid(f"wide-{i}"),
            "os": {
                "operating_system": f"os-{i}",
                "arch": f"arch-{i}",
                "binary_version": "5.0.0" if i < ESTABLISHED else f"3.{i}.0",
                "golang_version": "go1.23.4",
            },
            "cli": None,
            "entities_count": {
                "gateways": {
                    "total": MAX_FREQUENCY_PLANS,
                    "gateways_by_frequency_plan_id": {f"P{i}_{j}": 1 for j in range(MAX_FREQUENCY_PLANS)},
                },
                "end_devices": {
                    "total": end_devices,
                    "activate_end_devices": {"total": 0, "last_day": 0, "last_week": 0, "last_month": 0},
                },
                "applications": {"total": 1},
                "accounts": {"users": {"standard": 1, "admin": 1}, "organizations": {"total": 1}},
            },
        },
        separators=(",", ":"),
    ).encode()


def cli_message(i: int) -> bytes:
    return json.dumps(
        {
            "uid": f"0f8fad5b-d9cb-469f-a165-{i:012d}",
            "os": {
                "operating_system": f"cos-{i}",
                "arch": f"carch-{i}",
                "binary_version": f"3.{i}.1",
                "golang_version": "",
            },
            "cli": {
                "commands": [{"command_path": f"k{i}_{j}", "execution_count": 1} for j in range(MAX_CLI_COMMANDS)],
                "aliases": [
                    {"command_name": f"c{i}", "alias": f"a{j}", "usage_count": 1} for j in range(MAX_CLI_ALIASES)
                ],
            },
            "entities_count": None,
        },
        separators=(",", ":"),
    ).encode()


def wide_deliveries(first: date) -> list[Delivery]:
    out = []
    for d in range(2):
        t0 = int(datetime(first.year, first.month, first.day, 1, tzinfo=UTC).timestamp() * 1000) + d * DAY_MS
        for i in range(SENDERS):
            body = is_message(i, end_devices=1 if d == 0 else 1000)
            out.append(Delivery(t0 + i, uid(f"wide-{i}").encode(), body))
            cli = cli_message(i)
            assert len(body) < 64 * 1024 and len(cli) < 64 * 1024  # the collector would let each in
            out.append(Delivery(t0 + SENDERS + i, f"0f8fad5b-d9cb-469f-a165-{i:012d}".encode(), cli))
    return out


@dataclass
class Wide:
    stack: RunningStack
    first: date
    last: date

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.stack.api_url + path, params=params, timeout=60)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wide]:
    stack = start_stack(tmp_path_factory.mktemp("wide") / "stack", "--no-simulate")
    try:
        last = datetime.now(UTC).date() - timedelta(days=1)
        first = last - timedelta(days=1)
        simulator.send_to_kafka(wide_deliveries(first), f"127.0.0.1:{stack.broker_port}", TOPIC)
        stack.wait_for(
            "SELECT (SELECT count() FROM snapshots FINAL) AS n, (SELECT count() FROM analyst_daily FINAL) AS days, "
            "(SELECT count() FROM analyst_daily_pending) AS pending, (SELECT count() FROM analyst_dirty) AS queued",
            # every UID applied (the queue empty) and every day refreshed since
            lambda rows: (
                rows
                and (rows[0]["n"], rows[0]["days"], rows[0]["pending"], rows[0]["queued"]) == (4 * SENDERS, 2, 0, 0)
            ),
            timeout_s=240,
        )
        yield Wide(stack, first, last)
    finally:
        stack.stop()


def tables_of(body: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {"rows": body["rows"], **{name: t["rows"] for name, t in body["tables"].items()}}


def test_every_panel_answers_with_a_bounded_number_of_rows(wide: Wide) -> None:
    for panel in PANELS + ANALYST_PANELS:
        r = wide.get(f"/api/{panel}")
        assert r.status_code == 200, (panel, r.text[:500])
        assert len(r.content) < 512 * 1024, (panel, len(r.content))
        body = r.json()
        for name, rows in tables_of(body).items():
            assert len(rows) <= BOUND, (panel, name, len(rows))
            csv = wide.get(f"/api/{panel}", format="csv", table=name)
            assert csv.status_code == 200, (panel, name, csv.text[:500])
            assert len(csv_rows(csv.text)) == len(rows), (panel, name)


def other(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["others"]]


def test_the_rest_is_summed_in_one_other_row(wide: Wide) -> None:
    plans = wide.get("/api/gateways-by-frequency-plan").json()
    assert plans["day"] == wide.last.isoformat()
    assert len(plans["rows"]) == TOP_KEYS + 1 and other(plans["rows"]) == [plans["rows"][-1]]
    rest = plans["rows"][-1]
    assert rest["frequency_plan_id"] is None and rest["others"] == SENDERS * MAX_FREQUENCY_PLANS - TOP_KEYS
    assert sum(r["gateways"] for r in plans["rows"]) == SENDERS * MAX_FREQUENCY_PLANS  # nothing lost

    versions = wide.get("/api/versions").json()
    per_day = {
        d: [r for r in versions["rows"] if r["day"] == d] for d in (wide.first.isoformat(), wide.last.isoformat())
    }
    for rows in per_day.values():
        assert len(rows) == TOP_SERIES + 1 and sum(r["deployments"] for r in rows) == SENDERS
        assert other(rows)[0]["version"] is None and abs(sum(r["share"] for r in rows) - 1) < 1e-5

    os_ = wide.get("/api/os").json()["rows"]
    for dimension in ("operating_system", "arch"):
        rows = [r for r in os_ if r["dimension"] == dimension]
        assert len(rows) == TOP_KEYS + 1 and other(rows)[0]["others"] == SENDERS - TOP_KEYS
        assert sum(r["deployments"] for r in rows) == SENDERS

    cli = wide.get("/api/cli").json()
    commands = cli["tables"]["commands"]["rows"]
    assert len(commands) == TOP_KEYS + 1 and other(commands)[0]["others"] == SENDERS * MAX_CLI_COMMANDS - TOP_KEYS
    assert sum(r["executions"] for r in commands) == 2 * SENDERS * MAX_CLI_COMMANDS  # two reports each
    for dimension in ("version", "operating_system", "arch"):
        rows = [r for r in cli["rows"] if r["dimension"] == dimension and r["day"] == wide.last.isoformat()]
        assert len(rows) == TOP_SERIES + 1 and sum(r["installs"] for r in rows) == SENDERS
    aliases = wide.get("/api/cli-aliases").json()["rows"]
    assert len(aliases) == TOP_KEYS + 1 and other(aliases)[0]["others"] == SENDERS * MAX_CLI_ALIASES - TOP_KEYS
    assert sum(r["uses"] for r in aliases) == 2 * SENDERS * MAX_CLI_ALIASES

    behind = wide.get("/api/versions-behind").json()
    assert {r["newest_version"] for r in behind["rows"]} == {"5.0"}
    assert sum(r["deployments"] for r in behind["rows"] if r["day"] == wide.last.isoformat()) == SENDERS
    assert len(behind["tables"]["deployments"]["rows"]) == 25

    quality = wide.get("/api/data-quality").json()
    jumps = quality["tables"]["jumps"]["rows"]
    assert len(jumps) == TOP_JUMPS + 1 and other(jumps)[0]["others"] == SENDERS * 1 - TOP_JUMPS  # end_devices jumped
    assert sum(r["jumps"] for r in quality["rows"]) == SENDERS


def test_the_page_stays_small_and_ready(wide: Wide, tmp_path: Path) -> None:
    result = run_chromium(tmp_path / "profile", wide.stack.api_url + "/", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    body = next(n for n in dom.nodes if n["tag"] == "body")
    assert body["attrs"].get("data-state") == "ready", (body["attrs"], result.stdout[:3000])
    states = {n["attrs"]["data-panel"]: n["attrs"].get("data-state") for n in dom.with_attr("data-panel")}
    assert states and all(s in ("ready", "partial") for s in states.values()), states
    assert len([n for n in dom.nodes if n["tag"] == "tr"]) < 2000
    rest = dom.find(data_other=str(SENDERS * MAX_FREQUENCY_PLANS - TOP_KEYS))
    assert rest and "other" in rest[0]["text"], "the gateways table shows its other row"
