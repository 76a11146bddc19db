"""Walls, not filters (issue 22): no value breaks a view, no message adds up to more than the plausibility limit,
and a failing refresh shows.

- Every separator-like and unicode character (`, = : ; | \\t \\n ' " ` \\\\ { } [ ]`, NUL, RTL marks, emoji, 4-byte
  UTF-8, very long strings) as plan IDs, versions, OS/arch strings, command paths and aliases, through the
  pipeline's batch path into a real chDB: every refreshable view refreshes without an exception, every view
  answers, every analyst view equals the oracle (producers/fleet_truth.py) and the values come out byte for
  byte; a message written after the hostile ones still shows in the figures.
- The same through a running `is-telemetry up` over HTTP on 127.0.0.1, with the implausible totals (3,000 plans
  at 10^9 each; CLI execution counts of 2^64-1 and -7) and sizes (the security test's 4,000 plans and 800 commands
  of count 1 each, a plan ID, a command path and an alias one character too long) rejected and stored nowhere.
- A data directory of migrations 0001-0004 holding such values (its refresh fails: the bug) upgrades cleanly
  to 0005 and its figures come out exact.
- A failing refresh (a table it reads detached) shows in `is-telemetry status`, in /metrics and on the
  dashboard (/api/freshness, and its banner "Figures as of T" in a headless Chromium: Debian's `chromium`
  package, as for tests/test_dashboard.py), and clears once the table is back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import load_settings
from core.schema import MAX_CLI_COMMANDS, MAX_FREQUENCY_PLANS, MAX_NAME_LENGTH
from dashboard.freshness import FAILING_METRIC, LAST_SUCCESS_METRIC
from dashboard.server import ApiThread
from is_telemetry.broker import free_ports
from producers import fleet_truth
from producers.simulator import DAY_MS, Delivery, ground_truth
from sinks import migrate
from sinks.clickhouse import ClickHouseStore
from tests.analyst_checks import differences, expected, wait_for_analyst_views
from tests.browser import Dom, run_chromium
from tests.chdb_store import DAY0, H, consume, extra_views, opened, store_reader, to_records, truth_views
from tests.oracle_views import extra_truth, sorted_truth
from tests.stack import RunningStack, start_stack
from tests.uids import uid

pytestmark = pytest.mark.integration


LIMIT = 10**9
#: Each is a plan ID, an OS, an arch, a Go version, a version suffix, a command path and an alias.
HOSTILE = [
    ",",
    "=",
    "a=b",  # once made every refresh of analyst_daily fail (the plans went through 'id=count,...' text)
    "x=5",  # once counted 5 gateways for a plan 'x' with any count
    "k=1,j=2",
    ":;|",
    "\t\n\r\v\f",
    "'\"`",
    "\\",
    "\\\\'\\\"",
    "{}[]",
    '{"command_path":"fake","execution_count":99}',  # once found by the pattern over the cli text
    "\x00",
    "a\x00b=1,",
    "\u200f\u202eRTL\u202c\u2066x\u2069",
    "\ufeff\u200b",
    "😀🧪",  # 4-byte UTF-8
    "\U0010ffff\U0001d518",
    "汉字ü\u0301",
    "\x1b[31m\x7f",
    " ",
    "",
    "%s%(x)s{x:String}?$1",
    "EU_863_870" + "=,{}",  # a region prefix, then separators
]
LONG = "L" * 5000  # a very long value (every body stays under the collector's 64 KiB)
ALL = [*HOSTILE, LONG]
#: Versions of many digits (int() refuses more than 4,300: such a body once stopped the worker) or too large.
LONG_VERSIONS = ["9" * 5000 + ".1", "3." + "7" * 5000, "3.1000.0", "1000.3"]


def name(s: str) -> str:
    """`s` as a plan ID, command path or alias: at most MAX_NAME_LENGTH characters (a longer one is implausible)."""
    return s[:MAX_NAME_LENGTH]


def cli_uid(i: int) -> str:
    return f"0f8fad5b-d9cb-469f-a165-{i:012d}"


def is_message(u: str, i: int, s: str, plans: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "uid": u,
        "os": {"operating_system": s, "arch": s, "binary_version": f"3.{i}.0 {s}", "golang_version": s},
        "cli": None,
        "entities_count": {
            "gateways": {"total": 1, "gateways_by_frequency_plan_id": plans if plans is not None else {name(s): i + 1}},
            "end_devices": {
                "total": 5,
                "activate_end_devices": {"total": 4, "last_day": 1, "last_week": 2, "last_month": 3},
            },
            "applications": {"total": 1},
            "accounts": {"users": {"standard": 1, "admin": 1}, "organizations": {"total": 0}},
        },
    }


def usage(i: int, s: str) -> dict[str, Any]:
    """TTS's CmdData with `s` as command paths and alias; every fifth one under a named field (one object down)."""
    data = {
        "commands": [
            {"command_path": name(s), "execution_count": i + 1, "last_used_at": 1735700000},
            {"command_path": name(f"end-devices {s}"), "execution_count": 2, "last_used_at": 1735700001, "new": [s]},
        ],
        "aliases": [{"command_name": name(s), "alias": name(s), "usage_count": i + 1}],
    }
    return {"cmd_data": data, s: s} if i % 5 == 4 else data


def cli_message(u: str, i: int, s: str) -> dict[str, Any]:
    return {
        "uid": u,
        "os": {"operating_system": s, "arch": s, "binary_version": f"3.{i}.1{s}", "golang_version": s},
        "cli": usage(i, s),
        "entities_count": None,
    }


def dumps(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def hostile_bodies() -> list[tuple[str, bytes]]:
    """(uid, body) of one IS and one CLI message per hostile value, and one IS message with every value as a plan."""
    out = []
    for i, s in enumerate(ALL):
        out.append((uid(f"hostile-{i}"), dumps(is_message(uid(f"hostile-{i}"), i, s))))
        out.append((cli_uid(i), dumps(cli_message(cli_uid(i), i, s))))
    plans = {name(s): i + 1 for i, s in enumerate(ALL)} | {f"US_902_928{s}": 7 for s in HOSTILE}
    out.append((uid("all-plans"), dumps(is_message(uid("all-plans"), 99, "linux", plans))))
    for j, version in enumerate(LONG_VERSIONS):  # no major.minor below 1000: 'unknown'
        is_m, cli_m = is_message(uid(f"version-{j}"), 0, "linux"), cli_message(cli_uid(500 + j), 0, "linux")
        is_m["os"]["binary_version"] = cli_m["os"]["binary_version"] = version
        out += [(uid(f"version-{j}"), dumps(is_m)), (cli_uid(500 + j), dumps(cli_m))]
    return out


def implausible_bodies() -> list[tuple[str, bytes, str]]:
    """(uid, body, reason): what the totals rule rejects."""
    three_thousand = is_message(uid("plans"), 1, "linux", {f"P{i}": LIMIT for i in range(3000)})
    three_thousand["entities_count"]["gateways"]["total"] = 0
    huge, negative = cli_message(cli_uid(900), 1, "x"), cli_message(cli_uid(901), 1, "x")
    huge["cli"] = {"commands": [{"command_path": "end-devices list", "execution_count": 2**64 - 1}]}
    negative["cli"] = {"commands": [{"command_path": "end-devices list", "execution_count": -7}]}
    # the plausible sizes (the security test's finding 5): every count 1, too many names or one too long
    many_plans = is_message(uid("many-plans"), 1, "linux", {f"C0_{j}": 1 for j in range(4000)})
    long_plan = is_message(uid("long-plan"), 1, "linux", {"P" * (MAX_NAME_LENGTH + 1): 1})
    many_commands, long_path, long_alias = (cli_message(cli_uid(n), 1, "x") for n in (902, 903, 904))
    many_commands["cli"] = {"commands": [{"command_path": f"k0_{j}", "execution_count": 1} for j in range(800)]}
    long_path["cli"] = {"commands": [{"command_path": "c" * (MAX_NAME_LENGTH + 1), "execution_count": 1}]}
    long_alias["cli"] = {"aliases": [{"command_name": "end-devices", "alias": "a" * (MAX_NAME_LENGTH + 1)}]}
    assert 800 > MAX_CLI_COMMANDS and 4000 > MAX_FREQUENCY_PLANS
    return [
        (uid("plans"), dumps(three_thousand), "implausible"),
        (cli_uid(900), dumps(huge), "implausible"),
        (cli_uid(901), dumps(negative), "negative"),
        (uid("many-plans"), dumps(many_plans), "implausible"),
        (uid("long-plan"), dumps(long_plan), "implausible"),
        (cli_uid(902), dumps(many_commands), "implausible"),
        (cli_uid(903), dumps(long_path), "implausible"),
        (cli_uid(904), dumps(long_alias), "implausible"),
    ]


def later_bodies() -> list[tuple[str, bytes]]:
    """Sent after the hostile ones: they must show in the figures."""
    after_cli = cli_message(cli_uid(999), 7, "after")
    after_cli["cli"] = {"commands": [{"command_path": "after the hostile ones", "execution_count": 3}]}
    return [(uid("after"), dumps(is_message(uid("after"), 7, "after"))), (cli_uid(999), dumps(after_cli))]


def deliveries(bodies: Sequence[tuple[str, bytes]], day: int, start_h: int = 0) -> list[Delivery]:
    t0 = DAY0 + (day - 1) * DAY_MS + start_h * H
    return [Delivery(t0 + k * 1000, u.encode(), body) for k, (u, body) in enumerate(bodies)]


# -- the store: every view, forced refreshes ----------------------------------------------------------------------

#: Parameterized views and arguments for them (`first`, `last`, `day`: filled in).
PARAMETERIZED = {
    "fleet_daily_carried_lookback": "lookback = 7, first = '{first}', last = '{last}'",
    "lifecycle_daily": "kind = 'cli', gap = 7, first = '{first}', last = '{last}'",
    "sender_jumps": "factor = 10, first = '{first}', last = '{last}'",
    "deployments_behind": "day = '{last}', min_behind = 0",
    "carried_snapshots": "day = '{last}', lookback = 7, cli_lookback = 30",
    "analyst_compute": "days = ['{first}', '{last}'], seen = [1, 1], lookback = 7, cli_lookback = 30, factor = 10, gap = 7",
    "cli_usage_compute": "days = ['{first}', '{last}'], lookback = 30",
    "cli_command_usage": "lookback = 30, first = '{first}', last = '{last}'",
    "cli_alias_usage": "lookback = 30, first = '{first}', last = '{last}'",
    "analyst_uid_events": "token = 0",  # migration 0009
    "analyst_uid_jumps": "token = 0",
    "analyst_totals": "days = ['{first}', '{last}']",
    "analyst_behind_floors": "days = ['{first}', '{last}']",
    "analyst_assemble": "days = ['{first}', '{last}'], seen = [1, 1]",
}


def refreshable_views(store: ClickHouseStore) -> list[str]:
    views = [r[0] for r in store.query("SELECT view FROM system.view_refreshes WHERE database = currentDatabase()")[1]]
    assert views, "no refreshable view"
    return sorted(views)


def refresh_every_view(store: ClickHouseStore, attempts: int = 5) -> None:
    """Apply the queued UIDs (as a writer's applier would), then run every refreshable view now and wait for it, until
    nothing is due; each must succeed."""
    store.apply_analysts()
    views = refreshable_views(store)
    for _ in range(attempts):
        for view in views:
            store.client.command(f"SYSTEM REFRESH VIEW {view}")
            store.client.command(f"SYSTEM WAIT VIEW {view}")
        failing = store.query(
            "SELECT view, exception FROM system.view_refreshes WHERE database = currentDatabase() AND exception != ''"
        )[1]
        assert not failing, failing
        pending = store.query("SELECT day FROM analyst_daily_pending")[1]
        retention_due = store.query(
            "SELECT (SELECT sum(changes) FROM snapshot_changes) > (SELECT max(inputs_seen) FROM retention_cohorts)"
        )[1][0][0]
        if not pending and not retention_due:
            return
    raise AssertionError(
        f"still due after {attempts} refreshes: {store.query('SELECT * FROM analyst_daily_pending')[1]}"
    )


def every_view_answers(store: ClickHouseStore, first: date, last: date) -> None:
    names = [
        r[0]
        for r in store.query(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'View' ORDER BY name"
        )[1]
    ]
    assert set(PARAMETERIZED) <= set(names)
    for name in names:
        args = PARAMETERIZED.get(name)
        source = f"{name}({args.format(first=first, last=last)})" if args else name
        store.query(f"SELECT * FROM {source}")  # raises if the view cannot be read


def assert_values_come_out(read: Callable[[str], list[dict[str, Any]]], sent: Sequence[bytes]) -> None:
    """The hostile strings, byte for byte, in the views that show them (whatever the day)."""
    messages = [json.loads(b) for b in sent]
    plans: dict[str, int] = {}
    for m in messages:
        if m["entities_count"]:
            for plan, n in m["entities_count"]["gateways"]["gateways_by_frequency_plan_id"].items():
                plans[plan] = plans.get(plan, 0) + n
    got = {
        r["frequency_plan_id"]: r["gateways"]
        for r in read("SELECT frequency_plan_id, gateways FROM gateways_by_frequency_plan_daily")
    }
    assert got == plans
    regions: dict[str, int] = {}
    for plan, n in plans.items():
        regions[fleet_truth.region_of(plan)] = regions.get(fleet_truth.region_of(plan), 0) + n
    got_regions = {r["region"]: r["gateways"] for r in read("SELECT region, gateways FROM regions_daily")}
    assert got_regions == regions
    os_values = {m["os"]["operating_system"] for m in messages if m["entities_count"]}
    assert {r["operating_system"] for r in read("SELECT operating_system FROM deployments_by_os_daily")} == os_values
    assert {r["arch"] for r in read("SELECT arch FROM deployments_by_arch_daily")} == os_values
    cli_messages = [m for m in messages if m["cli"] is not None]
    cli_os = {m["os"]["operating_system"] for m in cli_messages}
    active = read("SELECT dimension, value FROM cli_installs_active_daily WHERE dimension != 'version'")
    assert {r["value"] for r in active if r["dimension"] == "operating_system"} == cli_os
    assert {r["value"] for r in active if r["dimension"] == "arch"} == cli_os
    paths = {p for m in cli_messages for p, _n in fleet_truth.commands_of(m["cli"])}
    assert {r["command_path"] for r in read("SELECT command_path FROM cli_command_usage_daily")} == paths
    aliases = {(c, a) for m in cli_messages for c, a, _n in fleet_truth.aliases_of(m["cli"])}
    assert {(r["command_name"], r["alias"]) for r in read("SELECT command_name, alias FROM cli_alias_usage_daily")} == (
        aliases
    )
    assert len(aliases) >= len(ALL)  # every hostile value as a command name and an alias
    stored = {r["uid"]: json.loads(r["cli"]) for r in read("SELECT uid, cli FROM snapshots_latest WHERE kind = 'cli'")}
    assert stored == {m["uid"]: m["cli"] for m in cli_messages}  # aliases and every unknown field, as sent


def store_sql(store: ClickHouseStore) -> Callable[[str], list[dict[str, Any]]]:
    def read(sql: str) -> list[dict[str, Any]]:
        columns, rows = store.query(sql)
        return [dict(zip(columns, r)) for r in rows]

    return read


def compare_with_the_oracles(store: ClickHouseStore, sent: Sequence[Delivery]) -> None:
    assert differences(store_reader(store), expected(sent)) == {}
    truth = ground_truth(sent)
    assert truth_views(store, truth) == sorted_truth(truth)
    assert extra_views(store) == extra_truth(sent)


def test_every_view_survives_hostile_values_byte_for_byte(tmp_path: Path) -> None:
    hostile = deliveries(hostile_bodies(), day=1)
    rejected = deliveries([(u, b) for u, b, _ in implausible_bodies()], day=1, start_h=5)
    later = deliveries(later_bodies(), day=2)
    with opened(tmp_path / "chdb") as store:
        consume(store, [to_records(hostile + rejected)])
        refresh_every_view(store)
        every_view_answers(store, date(2025, 1, 1), date(2025, 1, 1))
        compare_with_the_oracles(store, hostile + rejected)
        assert_values_come_out(store_sql(store), [d.body for d in hostile])
        reasons = store.query("SELECT reason, count() FROM rejections FINAL GROUP BY reason ORDER BY reason")[1]
        assert reasons == [("implausible", 7), ("negative", 1)]
        stored = {r[0] for r in store.query("SELECT uid FROM snapshots FINAL")[1]}
        assert not stored & {u for u, _b, _r in implausible_bodies()}  # stored nowhere but as rejections
        # what comes after the hostile values shows in the figures
        consume(store, [to_records(hostile + rejected + later)])
        refresh_every_view(store)
        every_view_answers(store, date(2025, 1, 1), date(2025, 1, 2))
        compare_with_the_oracles(store, hostile + rejected + later)
        usage_day2 = store.query(
            "SELECT command_path, installs, executions FROM cli_command_usage_daily WHERE day = '2025-01-02'"
        )[1]
        assert ("after the hostile ones", 1, 3) in usage_day2


def test_an_existing_data_directory_upgrades_to_0005(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0001-0004 with hostile values stored: their refresh fails (the bug); then 0005: every refresh succeeds and
    every figure is exact, with nothing re-sent."""
    sent = deliveries(hostile_bodies(), day=1) + deliveries(later_bodies(), day=2)
    every = migrate.migrations
    monkeypatch.setattr(migrate, "migrations", lambda: [m for m in every() if m[0] <= 4])
    with opened(tmp_path / "chdb") as store:
        consume(store, [to_records(sent)])
        store.client.command("SYSTEM REFRESH VIEW analyst_daily_refresh")
        with pytest.raises(Exception, match="Cannot parse"):
            store.client.command("SYSTEM WAIT VIEW analyst_daily_refresh")
    monkeypatch.undo()
    with opened(tmp_path / "chdb") as store:
        applied = [r[0] for r in store.query("SELECT version FROM schema_migrations FINAL ORDER BY version")[1]]
        assert applied == [v for v, _name, _sql in every()]  # 0005 and every later one
        refresh_every_view(store)
        every_view_answers(store, date(2025, 1, 1), date(2025, 1, 2))
        compare_with_the_oracles(store, sent)


# -- a running stack over HTTP ------------------------------------------------------------------------------------


def post(stack: RunningStack, body: bytes) -> None:
    r = httpx.post(stack.collector_url, content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 202, r.text


def now_deliveries(bodies: Sequence[tuple[str, bytes]]) -> list[Delivery]:
    t = int(time.time() * 1000)
    return [Delivery(t, u.encode(), b) for u, b in bodies]


def test_hostile_values_and_implausible_totals_through_a_running_stack(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "stack", "--no-simulate")
    try:
        hostile, rejected = hostile_bodies(), implausible_bodies()
        for _u, body in hostile:
            post(stack, body)
        for _u, body, _reason in rejected:
            post(stack, body)
        stack.wait_for(
            "SELECT (SELECT count() FROM snapshots FINAL) AS n, (SELECT count() FROM rejections FINAL) AS r",
            lambda rows: rows and rows[0]["n"] == len(hostile) and rows[0]["r"] == len(rejected),
        )
        reasons = stack.sql("SELECT reason, messages FROM rejected_daily ORDER BY reason")
        assert [(r["reason"], r["messages"]) for r in reasons] == [("implausible", 7), ("negative", 1)]
        stored = {r["uid"] for r in stack.sql("SELECT uid FROM snapshots")}
        assert not stored & {u for u, _b, _r in rejected}  # stored nowhere but as rejections
        plans = {
            r["frequency_plan_id"] for r in stack.sql("SELECT frequency_plan_id FROM gateways_by_frequency_plan_daily")
        }
        assert not plans & {f"P{i}" for i in range(3000)}  # the 3,000 plans moved nothing
        assert not plans & {f"C0_{j}" for j in range(4000)}  # nor the 4,000
        paths = {r["command_path"] for r in stack.sql("SELECT command_path FROM cli_command_usage_daily")}
        assert not paths & {f"k0_{j}" for j in range(800)}  # nor the 800 commands
        messages = [r["message"] for r in stack.sql("SELECT message FROM rejections WHERE reason = 'implausible'")]
        assert any("4000 plan IDs" in m and f"bound of {MAX_FREQUENCY_PLANS}" in m for m in messages), messages
        assert any("800 entries" in m and f"bound of {MAX_CLI_COMMANDS}" in m for m in messages), messages
        sent = now_deliveries(hostile)
        wait_for_analyst_views(stack.api_url, expected(sent))  # the refresh ran (every 10 s) and came out exact
        assert_values_come_out(stack.sql, [b for _u, b in hostile])
        freshness = httpx.get(stack.api_url + "/api/freshness", timeout=10).json()
        assert freshness["rows"] and not freshness["behind"], freshness
        assert not [r for r in freshness["rows"] if r["failing"]], freshness
        # sent after the hostile ones: in the figures at the next refresh
        for _u, body in later_bodies():
            post(stack, body)
        wait_for_analyst_views(stack.api_url, expected(sent + now_deliveries(later_bodies())))
        usage = stack.sql("SELECT command_path, installs, executions FROM cli_command_usage_daily")
        assert {"command_path": "after the hostile ones", "installs": 1, "executions": 3} in usage
    finally:
        assert stack.stop() == 0


# -- a failing refresh shows --------------------------------------------------------------------------------------


def metric_values(text: str, name: str) -> dict[str, float]:
    """view -> value of a gauge `name{view="..."}` in a Prometheus text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + '{view="'):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) + len('{view="') : -2]] = float(value)
    return out


def run_status(api_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    broker, collector = free_ports(2)
    return subprocess.run(
        [sys.executable, "-m", "is_telemetry", "status", "--api", api_url, "--collector", f"http://127.0.0.1:{collector}",
         "--kafka", f"127.0.0.1:{broker}", "--timeout", "2"],
        capture_output=True, text=True, timeout=60, cwd=cwd,
    )  # fmt: skip


def views_line(out: str) -> str:
    lines = [x for x in out.splitlines() if x.strip().startswith("views ")]
    assert len(lines) == 1, out
    return lines[0]


def wait_until(what: str, predicate: Callable[[], Any], timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_failing_refresh_shows_in_status_metrics_and_the_dashboard(tmp_path: Path) -> None:
    with opened(tmp_path / "chdb") as store:
        consume(store, [to_records(deliveries(hostile_bodies(), day=1))])
        refresh_every_view(store)
        before = datetime.now(UTC)
        (api_port,) = free_ports(1)
        settings = load_settings(None, api={"port": api_port}, clickhouse={"dsn": store.dsn})
        api = ApiThread(settings).start()
        url = f"http://127.0.0.1:{api_port}"
        try:
            wait_until("the API", lambda: _answers(url + "/healthz"))
            metrics = httpx.get(url + "/metrics", timeout=10).text
            assert metric_values(metrics, FAILING_METRIC) == {"analyst_daily_refresh": 0.0, "retention_refresh": 0.0}
            assert all(v > 0 for v in metric_values(metrics, LAST_SUCCESS_METRIC).values())
            assert " OK " in views_line(run_status(url, tmp_path).stdout)
            assert httpx.get(url + "/api/freshness", timeout=10).json()["behind"] is False

            # A table both refreshes read goes away: each refresh fails, and the figures stay as they were.
            store.client.command("DETACH TABLE snapshot_changes")
            for view in refreshable_views(store):
                store.client.command(f"SYSTEM REFRESH VIEW {view}")
            wait_until(
                "both refreshes to fail",
                lambda: (
                    metric_values(httpx.get(url + "/metrics", timeout=10).text, FAILING_METRIC)
                    == {"analyst_daily_refresh": 1.0, "retention_refresh": 1.0}
                ),
            )
            last = metric_values(httpx.get(url + "/metrics", timeout=10).text, LAST_SUCCESS_METRIC)
            assert all(v >= int(before.timestamp()) - 60 for v in last.values()), last  # kept: the last success
            fresh = httpx.get(url + "/api/freshness", timeout=10).json()
            assert fresh["behind"] is True and fresh["as_of"], fresh
            assert (
                fresh["message"].startswith("Figures as of ")
                and "the refresh of analyst_daily_refresh is failing (" in fresh["message"]
            )
            assert all(r["failing"] and "snapshot_changes" in r["error"] for r in fresh["rows"]), fresh["rows"]
            r = run_status(url, tmp_path)
            assert r.returncode == 1
            line = views_line(r.stdout)
            assert "DOWN" in line and "analyst_daily_refresh FAILING:" in line and "snapshot_changes" in line, line
            assert "last success 20" in line and "figures as of 20" in line, line
            assert "views down" in r.stdout.splitlines()[-1], r.stdout
            state, node = banner(url, tmp_path / "profile")
            assert state == "behind" and "hidden" not in node["attrs"], (state, node["attrs"])
            assert node["text"] == fresh["message"] and node["attrs"]["data-as-of"] == fresh["as_of"]

            # Back: the next refresh succeeds and nothing shows any more.
            store.client.command("ATTACH TABLE snapshot_changes")
            refresh_every_view(store)
            wait_until(
                "the refreshes to succeed",
                lambda: (
                    set(metric_values(httpx.get(url + "/metrics", timeout=10).text, FAILING_METRIC).values()) == {0.0}
                ),
            )
            assert httpx.get(url + "/api/freshness", timeout=10).json()["behind"] is False
            assert " OK " in views_line(run_status(url, tmp_path).stdout)
            state, node = banner(url, tmp_path / "profile")
            assert state == "current" and "hidden" in node["attrs"] and not node["text"], (state, node)
        finally:
            api.stop()


def banner(url: str, profile: Path) -> tuple[str, dict[str, Any]]:
    """The dashboard page in a real browser (headless Chromium): <body>'s data-freshness and the banner node."""
    result = run_chromium(profile, url + "/", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = Dom(result.stdout)
    body = next(n for n in dom.nodes if n["tag"] == "body")
    (node,) = dom.find(id="freshness")
    return body["attrs"].get("data-freshness", ""), node


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
