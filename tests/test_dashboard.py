"""The dashboard shows the ground truth: its JSON/CSV API and a real headless Chromium reading the page.

One real stack (`is-telemetry up --no-simulate`: embedded broker, faust worker, chDB, API) is fed ten past
days of simulated telemetry straight to Kafka; every figure the dashboard shows must equal
`producers.simulator.ground_truth()` of exactly what was sent.

Needs Debian's `chromium` package (apt-get install -y chromium); without it the browser test fails.
The screenshot of the page is kept at test-artifacts/dashboard.png.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.schema import SUMMED_COUNTS
from producers import fleet_truth, simulator
from tests.analyst_checks import normalise, wait_for_analyst_views
from tests.browser import Browser, Dom, run_chromium
from tests.panels import ANALYST_PANELS, PANELS, TOPIC, csv_rows
from tests.paths import ROOT
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


DAYS = 10
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_APT = "chromium"
FLEET_KEYS = ["deployments", "cli_installs", *SUMMED_COUNTS]
SUMMARY_METRICS = [
    "deployments",
    "gateways",
    "end_devices",
    "active_last_day",
    "active_last_week",
    "active_last_month",
    "applications",
    "users",
    "organizations",
    "cli_installs",
]


@dataclass
class Fed:
    stack: RunningStack
    truth: dict[str, Any]
    yesterday: date
    fleet: dict[str, dict[str, Any]] = field(default_factory=dict)  # ground truth fleet_daily by day
    analyst: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # producers.fleet_truth of what was sent

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.stack.api_url + path, params=params, timeout=30)

    def json(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.get(path, **params)
        assert r.status_code == 200, r.text
        return r.json()

    def day(self, back: int) -> str:
        return (self.yesterday - timedelta(days=back)).isoformat()

    def metric(self, day: str, metric: str) -> int:
        row = self.fleet[day]
        return row["users_standard"] + row["users_admin"] if metric == "users" else row[metric]

    def plans(self, day: str) -> list[tuple[str, int]]:
        rows = [
            (r["frequency_plan_id"], r["gateways"])
            for r in self.truth["gateways_by_frequency_plan_daily"]
            if r["day"] == day and r["gateways"] > 0
        ]
        return sorted(rows, key=lambda x: (-x[1], x[0]))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    stack = start_stack(tmp_path_factory.mktemp("dashboard") / "stack", "--no-simulate")
    try:
        yesterday = datetime.now(UTC).date() - timedelta(days=1)
        sim = simulator.generate(40, 15, DAYS, seed=11, end_day=yesterday, malformed_rate=0.05, jump_rate=0.03)
        sent = simulator.send_to_kafka(sim.deliveries, f"127.0.0.1:{stack.broker_port}", TOPIC)
        truth = simulator.ground_truth(sent.sent_deliveries)
        assert len(truth["fleet_daily"]) == DAYS and truth["rejected_daily"], "the simulation must cover every day"
        want_fleet = [{k: r[k] for k in ["day", *FLEET_KEYS]} for r in truth["fleet_daily"]]
        stack.wait_for(
            f"SELECT day, {', '.join(FLEET_KEYS)} FROM fleet_daily ORDER BY day", lambda rows: rows == want_fleet
        )
        stack.wait_for(
            "SELECT day, reason, messages FROM rejected_daily ORDER BY day, reason",
            lambda rows: rows == truth["rejected_daily"],
        )
        analyst = fleet_truth.analyst_ground_truth(sent.sent_deliveries)
        assert analyst["sender_jumps_daily"] and analyst["deployments_behind_daily"], "the simulation must cover them"
        wait_for_analyst_views(stack.api_url, analyst)  # refreshed by ClickHouse every 10 s
        yield Fed(stack, truth, yesterday, {r["day"]: r for r in truth["fleet_daily"]}, analyst)
    finally:
        stack.stop()


def as_csv_cells(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, str]]:
    return [
        {
            c: "" if r[c] is None else ("true" if r[c] else "false") if isinstance(r[c], bool) else str(r[c])
            for c in columns
        }
        for r in rows
    ]  # booleans as in JSON


# -- the JSON API ----------------------------------------------------------------------------------------------


def test_summary_equals_ground_truth(fed: Fed) -> None:
    body = fed.json("/api/summary")
    # Default range: the 30 days ending at the latest complete day (yesterday, which has data here).
    assert (body["from"], body["to"]) == (fed.day(29), fed.day(0))
    assert body["day"] == fed.day(0) and body["complete"] is True
    assert body["week_before_day"] == fed.day(7)
    assert [r["metric"] for r in body["rows"]] == SUMMARY_METRICS
    for r in body["rows"]:
        now, then = fed.metric(fed.day(0), r["metric"]), fed.metric(fed.day(7), r["metric"])
        assert (r["value"], r["week_before"], r["change"]) == (now, then, now - then), r
        assert type(r["value"]) is int  # a JSON number, not a string
        assert r["change_pct"] == (round((now - then) * 100 / then, 2) if then else None)


def test_panels_equal_ground_truth(fed: Fed) -> None:
    t, latest = fed.truth, fed.day(0)
    fleet = fed.json("/api/fleet")
    assert [{k: r[k] for k in ["day", *FLEET_KEYS]} for r in fleet["rows"]] == [
        {k: r[k] for k in ["day", *FLEET_KEYS]} for r in t["fleet_daily"]
    ]
    assert all(r["users"] == r["users_standard"] + r["users_admin"] for r in fleet["rows"])

    plans = fed.json("/api/gateways-by-frequency-plan")
    assert plans["day"] == latest
    assert [(r["frequency_plan_id"], r["gateways"]) for r in plans["rows"]] == fed.plans(latest)

    versions = fed.json("/api/versions")
    assert sorted((r["day"], r["version"], r["deployments"]) for r in versions["rows"]) == sorted(
        (r["day"], r["version"], r["deployments"]) for r in t["deployments_by_version_daily"]
    )
    adoption = versions["tables"]["adoption"]["rows"]
    assert {r["version"]: r["deployments"] for r in adoption} == {
        r["version"]: r["deployments"] for r in t["deployments_by_version_daily"] if r["day"] == latest
    }
    assert [r["deployments"] for r in adoption] == sorted((r["deployments"] for r in adoption), reverse=True)

    os_ = fed.json("/api/os")
    assert os_["day"] == latest
    for dimension in ("operating_system", "arch"):
        shown = sum(r["deployments"] for r in os_["rows"] if r["dimension"] == dimension)
        assert shown == fed.fleet[latest]["deployments"], dimension

    rejected = fed.json("/api/rejected")
    assert rejected["tables"]["by_reason"]["rows"] == t["rejected_daily"]
    per_day: dict[str, int] = {}
    for r in t["rejected_daily"]:
        per_day[r["day"]] = per_day.get(r["day"], 0) + r["messages"]
    assert [r["day"] for r in rejected["rows"]] == sorted(fed.fleet)
    for r in rejected["rows"]:
        n, f = per_day.get(r["day"], 0), fed.fleet[r["day"]]
        assert (r["rejected"], r["deployments"], r["cli_installs"]) == (n, f["deployments"], f["cli_installs"])
        assert r["rate"] == round(n / (n + f["deployments"] + f["cli_installs"]), 6)

    days = fed.json("/api/days")["rows"][0]
    assert (days["first_day"], days["last_day"], days["days"]) == (fed.day(DAYS - 1), latest, DAYS)
    assert (days["default_from"], days["default_to"]) == (fed.day(29), latest)


def api_rows(rows: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    return normalise(rows, columns)


def test_analyst_panels_equal_ground_truth(fed: Fed) -> None:
    a, latest = fed.analyst, fed.day(0)

    def same(
        panel_rows: list[dict[str, Any]], view: str, keep: Any = None, rename: dict[str, str] | None = None
    ) -> None:
        want = [r for r in a[view] if keep is None or keep(r)]
        assert want, view
        columns = list(want[0])
        got = [{(rename or {}).get(k, k): v for k, v in r.items()} for r in panel_rows]
        assert api_rows(got, columns) == api_rows(want, columns), view

    same(fed.json("/api/fleet-carried")["rows"], "fleet_daily_carried")
    summary = fed.json("/api/summary-carried")
    assert (summary["day"], summary["fleet"]) == (latest, "carried")
    carried = {r["day"]: r for r in a["fleet_daily_carried"]}
    for r in summary["rows"]:
        row = carried[latest]
        want = row["users_standard"] + row["users_admin"] if r["metric"] == "users" else row[r["metric"]]
        assert r["value"] == want, r
    lifecycle = fed.json("/api/lifecycle")["rows"]
    same([r for r in lifecycle if r["kind"] == "is"], "deployment_lifecycle_daily")
    same([r for r in lifecycle if r["kind"] == "cli"], "cli_lifecycle_daily")
    retention = fed.json("/api/retention")
    same(retention["rows"], "retention_weekly", rename={"periods_since": "weeks_since"})
    same(retention["tables"]["monthly"]["rows"], "retention_monthly", rename={"periods_since": "months_since"})
    same(fed.json("/api/fleet-shape")["rows"], "fleet_size_daily")
    same(fed.json("/api/regions")["rows"], "regions_daily")
    adoption = fed.json("/api/version-adoption")
    same(adoption["rows"], "version_adoption_daily")
    same(adoption["tables"]["speed"]["rows"], "version_adoption_speed")
    behind = fed.json("/api/versions-behind")
    same(behind["rows"], "versions_behind_daily")
    assert behind["day"] == latest
    same(behind["tables"]["deployments"]["rows"], "deployments_behind_daily", keep=lambda r: r["day"] == latest)
    cli = fed.json("/api/cli")
    same(cli["rows"], "cli_installs_active_daily")
    same(cli["tables"]["commands"]["rows"], "cli_command_usage_daily", keep=lambda r: r["day"] == latest)
    split = ["day", "new", "new_2025_cli", "new_older_cli"]
    assert api_rows(cli["tables"]["new_installs"]["rows"], split) == api_rows(a["cli_lifecycle_daily"], split)
    assert sum(r["new_2025_cli"] for r in a["cli_lifecycle_daily"]) > 0  # upgrades and new 2025 CLIs
    aliases = fed.json("/api/cli-aliases")
    assert aliases["day"] == latest
    same(aliases["rows"], "cli_alias_usage_daily", keep=lambda r: r["day"] == latest)
    quality = fed.json("/api/data-quality")
    same(quality["rows"], "data_quality_daily")
    same(quality["tables"]["jumps"]["rows"], "sender_jumps_daily")
    # a range: only its days
    part = fed.json("/api/lifecycle", **{"from": fed.day(4), "to": fed.day(2)})["rows"]
    assert sorted({r["day"] for r in part}) == [fed.day(4), fed.day(3), fed.day(2)]


def test_csv_downloads_are_the_same_rows(fed: Fed) -> None:
    for panel in PANELS + ANALYST_PANELS:
        body = fed.json(f"/api/{panel}")
        r = fed.get(f"/api/{panel}", format="csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv"), (panel, r.text)
        assert "attachment" in r.headers["content-disposition"]
        parsed = csv_rows(r.text)
        assert r.text.splitlines()[0].split(",") == body["columns"], panel
        assert parsed == as_csv_cells(body["rows"], body["columns"]), panel
        assert parsed or panel not in ("summary", "fleet", "gateways-by-frequency-plan"), panel
        for name, table in body["tables"].items():
            extra = fed.get(f"/api/{panel}", format="csv", table=name)
            assert extra.status_code == 200, extra.text
            assert csv_rows(extra.text) == as_csv_cells(table["rows"], table["columns"]), (panel, name)
    # The summary's CSV carries the ground-truth figures too.
    summary = {r["metric"]: r for r in csv_rows(fed.get("/api/summary", format="csv").text)}
    assert {m: int(summary[m]["value"]) for m in SUMMARY_METRICS} == {
        m: fed.metric(fed.day(0), m) for m in SUMMARY_METRICS
    }


def test_date_range_filters(fed: Fed) -> None:
    rows = fed.json("/api/fleet", **{"from": fed.day(5), "to": fed.day(2)})["rows"]
    assert [r["day"] for r in rows] == [fed.day(5), fed.day(4), fed.day(3), fed.day(2)]
    assert [r["deployments"] for r in rows] == [fed.fleet[fed.day(b)]["deployments"] for b in (5, 4, 3, 2)]
    filtered = fed.get("/api/fleet", format="csv", **{"from": fed.day(5), "to": fed.day(2)})
    csv_days = [r["day"] for r in csv_rows(filtered.text)]
    assert csv_days == [r["day"] for r in rows]

    # The single-day panels follow the end of the range; the comparison reaches a week before it.
    summary = fed.json("/api/summary", to=fed.day(2))
    assert (summary["from"], summary["to"], summary["day"], summary["week_before_day"]) == (
        fed.day(31),
        fed.day(2),
        fed.day(2),
        fed.day(9),
    )
    assert {r["metric"]: (r["value"], r["week_before"]) for r in summary["rows"]} == {
        m: (fed.metric(fed.day(2), m), fed.metric(fed.day(9), m)) for m in SUMMARY_METRICS
    }
    plans = fed.json("/api/gateways-by-frequency-plan", **{"from": fed.day(6), "to": fed.day(3)})
    assert plans["day"] == fed.day(3)
    assert [(r["frequency_plan_id"], r["gateways"]) for r in plans["rows"]] == fed.plans(fed.day(3))
    # A week before the first day with data: no comparison.
    first = fed.json("/api/summary", **{"from": fed.day(DAYS - 1), "to": fed.day(DAYS - 1)})
    assert first["day"] == fed.day(DAYS - 1)
    assert all(r["week_before"] is None and r["change"] is None for r in first["rows"])
    rejected = fed.json("/api/rejected", **{"from": fed.day(3), "to": fed.day(3)})
    assert [r["day"] for r in rejected["rows"]] == [fed.day(3)]
    assert all(r["day"] == fed.day(3) for r in rejected["tables"]["by_reason"]["rows"])
    # A range without data.
    empty = fed.json("/api/summary", **{"from": "2001-01-01", "to": "2001-01-31"})
    assert empty["rows"] == [] and empty["day"] is None
    assert fed.json("/api/fleet", **{"from": "2001-01-01", "to": "2001-01-31"})["rows"] == []
    # Only `from`: up to the default end.
    assert fed.json("/api/fleet", **{"from": fed.day(1)})["to"] == fed.day(0)


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2024-13-01"},
        {"from": "yesterday"},
        {"from": "20240101"},
        {"to": "2024-02-30"},
        {"from": "2024-03-02", "to": "2024-03-01"},
        {"from": "0001-01-01"},
        {"from": "1900-01-01", "to": "2024-01-01"},
        {"format": "xml"},
        {"format": "csv", "table": "nope"},
    ],
)
def test_bad_parameters_are_400(fed: Fed, params: dict[str, str]) -> None:
    for panel in ("summary", "fleet", "versions"):
        r = fed.get(f"/api/{panel}", **params)
        assert r.status_code == 400, (panel, params, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert "\n" not in r.text.strip()
        assert r.json()["error"] == "bad_request" and r.json()["message"]


def test_page_uses_only_local_assets(fed: Fed) -> None:
    r = fed.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    html = r.text
    refs = re.findall(r"""<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)\s*=\s*["']([^"']+)["']""", html, re.I)
    assert refs and all(ref.startswith("/static/") for ref in refs), refs
    assert not re.search(r"""(?:src|href)\s*=\s*["']\s*(?:https?:)?//""", html, re.I)
    assert "/static/vendor/chart.umd.min.js" in refs
    for ref in refs:
        asset = fed.get(ref)
        assert asset.status_code == 200 and asset.content, ref
    # The vendored library and its license ship with the package: nothing is fetched from a CDN.
    vendor = ROOT / "dashboard" / "static" / "vendor"
    assert (vendor / "chart.umd.min.js").stat().st_size > 100_000
    assert "MIT License" in (vendor / "chart.js.LICENSE.md").read_text()
    app_js = (ROOT / "dashboard" / "static" / "app.js").read_text()
    assert not re.search(r"https?://", app_js)
    # Every panel's CSV link points at the panel's API.
    links = re.findall(r'data-csv="([^"]+)"', html)
    assert set(links) == {"summary", "fleet", "gateways-by-frequency-plan", "versions", "os", "rejected"} | set(
        ANALYST_PANELS
    ) - {"summary-carried", "fleet-carried"}


# -- a real browser --------------------------------------------------------------------------------------------


def load_page(fed: Fed, profile: Path, query: str = "") -> Dom:
    result = run_chromium(profile, fed.stack.api_url + "/" + query, "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-dom.html").write_text(result.stdout)  # the last page loaded, for a failing assertion
    dom = Dom(result.stdout)
    body = next(n for n in dom.nodes if n["tag"] == "body")
    assert body["attrs"].get("data-state") == "ready", (body["attrs"], result.stdout[:3000])
    return dom


def cards(dom: Dom) -> dict[str, tuple[int, str, str]]:
    """metric -> (data-value, shown text, data-week-before) of the figure cards."""
    out = {}
    for node in dom.nodes:
        parent = node["parent"]
        if node["attrs"].get("class") == "value" and parent is not None and "data-metric" in parent["attrs"]:
            change = next(n for n in dom.nodes if n["parent"] is parent and "data-week-before" in n["attrs"])
            out[parent["attrs"]["data-metric"]] = (
                int(node["attrs"]["data-value"]),
                node["text"].strip(),
                change["attrs"]["data-week-before"],
            )
    return out


def test_browser_shows_the_ground_truth(fed: Fed, tmp_path: Path) -> None:
    latest, week_before = fed.day(0), fed.day(7)
    dom = load_page(fed, tmp_path / "profile")
    shown = cards(dom)
    assert list(shown) == SUMMARY_METRICS
    for metric, (value, text, before) in shown.items():
        want = fed.metric(latest, metric)
        assert value == want and text == f"{want:,}", (metric, value, text, want)
        assert before == str(fed.metric(week_before, metric)), metric
    assert dom.find(id="summary-day")[0]["text"] == latest
    for panel in ("summary", "gateways-by-frequency-plan", "versions", "os", "rejected", "fleet"):
        assert all(n["attrs"]["data-state"] == "ready" for n in dom.find(data_panel=panel)), panel

    plans = [
        (
            n["attrs"]["data-plan"],
            int(next(c for c in dom.nodes if c["parent"] is n and "data-value" in c["attrs"])["attrs"]["data-value"]),
        )
        for n in dom.with_attr("data-plan")
    ]
    assert plans == fed.plans(latest)
    deployments = {
        n["parent"]["attrs"]["data-day"]: int(n["attrs"]["data-value"])
        for n in dom.find(data_metric="deployments")
        if n["tag"] == "td"
    }
    assert deployments == {d: r["deployments"] for d, r in fed.fleet.items()}

    # CSV links carry the shown range.
    links = {n["attrs"]["href"] for n in dom.with_attr("data-csv")}
    assert f"/api/gateways-by-frequency-plan?from={fed.day(29)}&to={latest}&format=csv" in links
    assert all(link.startswith("/api/") for link in links)

    # A range in the address: the figures of its last day.
    dom = load_page(fed, tmp_path / "profile", f"?from={fed.day(6)}&to={fed.day(3)}")
    body = next(n for n in dom.nodes if n["tag"] == "body")
    assert (body["attrs"]["data-from"], body["attrs"]["data-to"]) == (fed.day(6), fed.day(3))
    assert dom.find(id="summary-day")[0]["text"] == fed.day(3)
    assert {m: v for m, (v, _, _) in cards(dom).items()} == {m: fed.metric(fed.day(3), m) for m in SUMMARY_METRICS}
    assert [n["attrs"]["data-plan"] for n in dom.with_attr("data-plan")] == [p for p, _ in fed.plans(fed.day(3))]

    # The fleet over time (default range again): every panel ready, the numbers in its tables are the ground truth.
    dom = load_page(fed, tmp_path / "profile")
    a = fed.analyst
    for panel in (p for p in ANALYST_PANELS if not p.endswith("-carried")):
        assert [n["attrs"]["data-state"] for n in dom.find(data_panel=panel)] == ["ready"], panel
    lifecycle = {
        (n["parent"]["attrs"]["data-day"], n["parent"]["attrs"]["data-kind"], n["attrs"]["data-metric"]): int(
            n["attrs"]["data-value"]
        )
        for n in dom.nodes
        if n["tag"] == "td"
        and n["parent"] is not None
        and "data-kind" in n["parent"]["attrs"]
        and "data-day" in n["parent"]["attrs"]
        and n["attrs"].get("data-metric")
    }
    want = {
        (r["day"], kind, m): r[m]
        for kind, view in (("is", "deployment_lifecycle_daily"), ("cli", "cli_lifecycle_daily"))
        for r in a[view]
        for m in ("active_1d", "active_7d", "active_30d", "new", "returning", "churned")
    }
    assert lifecycle == want
    regions = {
        n["attrs"]["data-region"]: tuple(
            int(c["attrs"]["data-value"]) for c in dom.nodes if c["parent"] is n and "data-value" in c["attrs"]
        )
        for n in dom.with_attr("data-region")
    }
    assert regions == {r["region"]: (r["deployments"], r["gateways"]) for r in a["regions_daily"] if r["day"] == latest}
    jumps = sorted(
        (n["attrs"]["data-day"], n["attrs"]["data-uid"], n["attrs"]["data-jump"]) for n in dom.with_attr("data-jump")
    )
    assert jumps == sorted((r["day"], r["uid"], r["metric"]) for r in a["sender_jumps_daily"]) != []
    behind = [
        n["attrs"]["data-uid"] for n in dom.with_attr("data-uid") if n["tag"] == "tr" and "data-jump" not in n["attrs"]
    ]
    assert behind == [r["uid"] for r in a["deployments_behind_daily"] if r["day"] == latest]
    commands = {
        n["attrs"]["data-command"]: int(
            next(c for c in dom.nodes if c["parent"] is n and c["attrs"].get("data-metric") == "installs")["attrs"][
                "data-value"
            ]
        )
        for n in dom.with_attr("data-command")
    }
    assert (
        commands == {r["command_path"]: r["installs"] for r in a["cli_command_usage_daily"] if r["day"] == latest} != {}
    )
    aliases = {
        (n["attrs"]["data-command-name"], n["attrs"]["data-alias"]): int(
            next(c for c in dom.nodes if c["parent"] is n and c["attrs"].get("data-metric") == "uses")["attrs"][
                "data-value"
            ]
        )
        for n in dom.with_attr("data-alias")
    }
    want_aliases = {
        (r["command_name"], r["alias"]): r["uses"] for r in a["cli_alias_usage_daily"] if r["day"] == latest
    }
    assert aliases == want_aliases != {}
    new_cli = {
        (n["parent"]["attrs"]["data-day"], n["attrs"]["data-metric"]): int(n["attrs"]["data-value"])
        for n in dom.nodes
        if n["tag"] == "td"
        and n["parent"] is not None
        and "data-cli-new" in n["parent"]["attrs"]
        and n["attrs"].get("data-metric")
    }
    assert new_cli == {
        (r["day"], m): r[m] for r in a["cli_lifecycle_daily"] for m in ("new", "new_2025_cli", "new_older_cli")
    }

    # The carried-forward fleet, switched on in the address: its figures, the switch pressed.
    dom = load_page(fed, tmp_path / "profile", "?fleet=carried")
    body = next(n for n in dom.nodes if n["tag"] == "body")
    assert body["attrs"]["data-fleet"] == "carried"
    assert [n["attrs"]["data-fleet"] for n in dom.find(aria_pressed="true") if "data-fleet" in n["attrs"]] == [
        "carried"
    ]
    carried = {r["day"]: r for r in a["fleet_daily_carried"]}
    want_cards = {
        m: (carried[latest]["users_standard"] + carried[latest]["users_admin"] if m == "users" else carried[latest][m])
        for m in SUMMARY_METRICS
    }
    assert {m: v for m, (v, _, _) in cards(dom).items()} == want_cards
    regions = {
        n["attrs"]["data-region"]: tuple(
            int(c["attrs"]["data-value"]) for c in dom.nodes if c["parent"] is n and "data-value" in c["attrs"]
        )
        for n in dom.with_attr("data-region")
    }
    assert regions == {
        r["region"]: (r["deployments_carried"], r["gateways_carried"]) for r in a["regions_daily"] if r["day"] == latest
    }
    links = {n["attrs"]["href"] for n in dom.with_attr("data-csv")}
    assert f"/api/fleet-carried?from={fed.day(29)}&to={latest}&format=csv" in links

    # The picture, kept among the test artifacts.
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    result = run_chromium(
        tmp_path / "profile", fed.stack.api_url + "/", f"--screenshot={shot}", "--window-size=1400,4300"
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


# -- narrow screens, the notes of the Fleet switch, the lifecycle's scale (a browser driven over DevTools) ----------

#: Everything a reader may meet, laid out: every table unfolded.
UNFOLD = "document.querySelectorAll('details').forEach((d) => { d.open = true; })"
#: How wide the laid-out document is, and what sticks out of the viewport (for the failure message).
WIDTH = """(() => {
  const w = window.innerWidth, out = [];
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (r.right > w + 0.5 && r.width > 0 && !e.closest('.table-scroll, details.data')) out.push(e.tagName + '#' + e.id);
  }
  return { document: document.documentElement.scrollWidth, viewport: w, outside: out.slice(0, 10) };
})()"""


def test_the_page_fits_a_phone(fed: Fed, tmp_path: Path) -> None:
    """At 360 and 420 CSS pixels the document is no wider than the viewport: loaded there, and after a window as
    wide as a desktop's was narrowed (the charts drawn wide must shrink), every table unfolded (they scroll inside
    their cards)."""
    url = fed.stack.api_url + "/"
    with Browser(tmp_path / "profile") as page:
        for width in (360, 420):
            for query in ("", "?fleet=carried"):
                page.open(url + query, width, 800)
                page.evaluate(UNFOLD)
                laid_out = page.evaluate(WIDTH)
                assert laid_out["document"] <= width and not laid_out["outside"], (width, query, laid_out)
        page.open(url, 1400, 900)
        for width in (420, 360):
            page.call("Emulation.setDeviceMetricsOverride", width=width, height=800, deviceScaleFactor=1, mobile=False)
            page.evaluate(UNFOLD)
            deadline = time.monotonic() + 10  # Chart.js redraws on its ResizeObserver
            while (laid_out := page.evaluate(WIDTH))["document"] > width and time.monotonic() < deadline:
                time.sleep(0.2)
            assert laid_out["document"] <= width and not laid_out["outside"], ("narrowed", width, laid_out)


def test_the_notes_say_which_fleet_the_figures_count(fed: Fed, tmp_path: Path) -> None:
    notes = "[...document.querySelectorAll('#fleet-note, #panel-active .note, #panel-deployments .note, #panel-entities .note')].map((n) => n.textContent)"
    with Browser(tmp_path / "profile") as page:
        page.open(fed.stack.api_url + "/", 1200, 900)
        reported = page.evaluate(notes)
        page.open(fed.stack.api_url + "/?fleet=carried", 1200, 900)
        carried = page.evaluate(notes)
    assert len(reported) == len(carried) == 4
    assert all("reported" in n and "carried" not in n for n in reported), reported
    assert all("carried-forward" in n or "carried forward" in n for n in carried), carried
    assert all("latest report of the last 7 days" in n for n in carried), carried


def test_the_lifecycle_bars_are_not_flattened_by_the_first_days_of_data(fed: Fed, tmp_path: Path) -> None:
    """In the first 7 days of data every sender is new (to the data): those new bars are left out of the chart, so
    that the scale is set by the days after; hovering and the table keep the counts."""
    first = fed.day(DAYS - 1)
    with Browser(tmp_path / "profile") as page:
        page.open(fed.stack.api_url + "/", 1200, 900)
        chart = page.evaluate(
            """(() => { const c = Chart.getChart(document.getElementById('chart-lifecycle'));
              const ds = c.data.datasets.find((d) => d.label === 'New');
              return { labels: c.data.labels, data: ds.data, counts: ds.counts, max: c.scales.events.max }; })()"""
        )
        table_first = page.evaluate(
            f'document.querySelector(\'#table-lifecycle tr[data-day="{first}"][data-kind="is"] td[data-metric="new"]\').dataset.value'
        )
    by_day = dict(zip(chart["labels"], zip(chart["data"], chart["counts"])))
    first_new = fed.analyst["deployment_lifecycle_daily"][0]
    assert first_new["day"] == first and first_new["new"] > 0
    assert by_day[first] == (None, first_new["new"]) and table_first == str(first_new["new"])
    warm_up = [d for d in chart["labels"] if d < fed.day(DAYS - 1 - 7)]
    assert len(warm_up) == 7 and all(by_day[d][0] is None for d in warm_up), by_day
    later = [by_day[d] for d in chart["labels"] if d not in warm_up]
    assert later and all(drawn == count for drawn, count in later), later
    assert chart["max"] < first_new["new"], chart  # the scale is the later days'
