"""The analyst views on small fleets written by hand, with the expected figures worked out by hand.

Each test writes its deliveries through the pipeline's batch path into its own chDB directory (a real
ClickHouseStore), runs the analyst refresh, and checks named figures: the skipped day the carried fleet
smooths, every lifecycle rule, regions and size buckets at their edges, CLI command usage wherever it sits,
jumps at the factor's edge, a late snapshot, and a replay older than the snapshot TTL.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers import fleet_truth
from producers.simulator import DAY_MS, Delivery
from sinks import migrate
from sinks.clickhouse import ClickHouseStore
from tests.analyst_checks import differences
from tests.chdb_store import DAY0, H, consume, opened, refresh, store_reader, to_records
from tests.uids import uid

pytestmark = pytest.mark.integration


D1 = date(2025, 1, 1)


def at(day: int, hour: int = 12) -> int:
    """Receive time on day `day` (1 = 2025-01-01), UTC."""
    return DAY0 + (day - 1) * DAY_MS + hour * H


def is_body(
    u: str,
    *,
    end_devices: int = 10,
    plans: dict[str, int] | None = None,
    gateways_total: int | None = None,
    version: str = "3.34.1",
    applications: int = 1,
) -> bytes:
    plans = {"EU_863_870_TTN": 1} if plans is None else plans
    total = sum(plans.values()) if gateways_total is None else gateways_total
    return json.dumps(
        {
            "uid": u,
            "os": {
                "operating_system": "linux",
                "arch": "amd64",
                "binary_version": version,
                "golang_version": "go1.23.4",
            },
            "cli": None,
            "entities_count": {
                "gateways": {"total": total, "gateways_by_frequency_plan_id": plans},
                "end_devices": {
                    "total": end_devices,
                    "activate_end_devices": {"total": end_devices, "last_day": 0, "last_week": 0, "last_month": 0},
                },
                "applications": {"total": applications},
                "accounts": {"users": {"standard": 1, "admin": 1}, "organizations": {"total": 0}},
            },
        }
    ).encode()


def cli_body(u: str, cli: dict[str, Any], version: str = "3.35.0") -> bytes:
    return json.dumps(
        {
            "uid": u,
            "os": {
                "operating_system": "darwin",
                "arch": "arm64",
                "binary_version": version,
                "golang_version": "go1.24.1",
            },
            "cli": cli,
            "entities_count": None,
        }
    ).encode()


def send(u: str, day: int, body: bytes, hour: int = 12) -> Delivery:
    return Delivery(at(day, hour), u.encode(), body)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with opened(tmp_path / "chdb") as s:
        yield s


def write(store: ClickHouseStore, deliveries: list[Delivery]) -> None:
    consume(store, [to_records(deliveries)])
    refresh(store)


def by_day(store: ClickHouseStore, sql: str) -> dict[int, dict[str, Any]]:
    """Rows keyed by day number (1 = 2025-01-01)."""
    columns, rows = store.query(sql)
    out = {}
    for r in rows:
        row = dict(zip(columns, r))
        out[(row["day"] - D1).days + 1] = row
    return out


def test_a_skipped_day_does_not_make_the_carried_fleet_dip(store: ClickHouseStore) -> None:
    big, small = uid("big"), uid("small")
    deliveries = [send(small, d, is_body(small, end_devices=20, applications=2)) for d in range(1, 15)]
    # the big deployment skips day 3, then stops after day 5
    deliveries += [send(big, d, is_body(big, end_devices=5000 + d, applications=3000)) for d in (1, 2, 4, 5)]
    write(store, sorted(deliveries))
    reported = by_day(
        store,
        "SELECT day, deployments, end_devices, applications FROM fleet_daily_carried_lookback("
        "lookback = 1, first = '2025-01-01', last = '2025-01-14')",
    )  # as reported
    carried = by_day(store, "SELECT day, deployments, end_devices, applications FROM fleet_daily_carried")
    assert (reported[3]["deployments"], reported[3]["applications"]) == (1, 2)  # the dip
    assert (carried[3]["deployments"], carried[3]["end_devices"], carried[3]["applications"]) == (2, 20 + 5002, 3002)
    assert carried[4]["end_devices"] == 20 + 5004
    # carried for 7 days: its day-5 report counts on days 5..11, not on day 12
    assert [carried[d]["deployments"] for d in range(5, 14)] == [2] * 7 + [1, 1]
    assert carried[11]["end_devices"] == 20 + 5005 and carried[12]["end_devices"] == 20
    # any look-back, on the fly
    two = by_day(
        store,
        "SELECT day, deployments FROM fleet_daily_carried_lookback(lookback = 2, "
        "first = '2025-01-01', last = '2025-01-14')",
    )
    assert [two[d]["deployments"] for d in range(1, 9)] == [2, 2, 2, 2, 2, 2, 1, 1]


def test_lifecycle_rules_by_hand(store: ClickHouseStore) -> None:
    seen = {
        "a": range(1, 21),  # every day
        "b": [1, 2, 3, 12],  # silent 4..11: churned on 10 (3 + 7), returning on 12
        "c": [1],  # churned on 8
        "d": range(5, 21),  # new on 5
        "e": [1, 9],  # silent 2..8 (exactly the gap): churned on 8, returning on 9
    }
    write(store, sorted(send(uid(n), d, is_body(uid(n))) for n, days in seen.items() for d in days))
    rows = by_day(store, "SELECT * FROM deployment_lifecycle_daily")
    assert sorted(rows) == list(range(1, 21))
    pick = {
        d: (
            rows[d]["active_1d"],
            rows[d]["active_7d"],
            rows[d]["active_30d"],
            rows[d]["new"],
            rows[d]["returning"],
            rows[d]["churned"],
        )
        for d in (1, 5, 8, 9, 10, 12, 16, 20)
    }
    assert pick == {
        1: (4, 4, 4, 4, 0, 0),
        5: (2, 5, 5, 1, 0, 0),
        8: (2, 3, 5, 0, 0, 2),
        9: (3, 4, 5, 0, 1, 0),
        10: (2, 3, 5, 0, 0, 1),
        12: (3, 4, 5, 0, 1, 0),
        16: (2, 3, 5, 0, 0, 1),
        20: (2, 2, 5, 0, 0, 0),
    }
    assert sum(r["new"] for r in rows.values()) == 5
    # another gap: with G = 8, e's return after 7 silent days is no return, and b churns on day 11
    g8 = by_day(store, "SELECT * FROM lifecycle_daily(kind = 'is', gap = 8, first = '2025-01-01', last = '2025-01-20')")
    assert (g8[9]["returning"], g8[8]["churned"], g8[9]["churned"], g8[11]["churned"], g8[12]["returning"]) == (
        0,
        0,
        1,
        1,
        1,
    )
    assert by_day(store, "SELECT * FROM cli_lifecycle_daily")[1]["active_1d"] == 0
    spans = {u: (f, la, n) for _k, u, f, la, n in store.query("SELECT * FROM sender_lifespans")[1]}
    assert spans[uid("b")] == (date(2025, 1, 1), date(2025, 1, 12), 4)


def test_regions_and_size_buckets_at_their_edges(store: ClickHouseStore) -> None:
    deployments = {
        "p1": ({"EU_863_870_TTN": 3, "US_902_928_FSB_2": 0}, None, 0),
        "p2": ({"AS_920_923_LBT": 12, "AS_923_2": 1}, None, 9),
        "p3": ({"XX_915_MYSTERY": 100}, 0, 10),  # an unknown plan; an older sender: gateways.total 0
        "p4": (
            {
                "CN_470_510_FSB_11": 1,
                "ISM_2400_3CH_DRAFT2": 9999,
                "EU_433": 2,
                "KR_920_923_TTN": 1,
                "RU_864_870_TTN": 1,
                "IN_865_867": 1,
                "AU_915_928_FSB_1": 1,
                "CN_779_787": 1,
            },
            None,
            99_999,
        ),
    }
    write(
        store,
        [
            send(uid(n), 1, is_body(uid(n), plans=p, gateways_total=t, end_devices=e))
            for n, (p, t, e) in deployments.items()
        ],
    )
    regions = {r: (d, g) for _day, r, d, g, _dc, _gc in store.query("SELECT * FROM regions_daily")[1]}
    assert regions == {
        "EU868": (1, 3),
        "AS923": (1, 13),
        "other": (1, 100),
        "CN470": (1, 1),
        "ISM2400": (1, 9999),
        "EU433": (1, 2),
        "KR920": (1, 1),
        "RU864": (1, 1),
        "IN865": (1, 1),
        "AU915": (1, 1),
        "CN779": (1, 1),
    }
    sizes = {(dim, b): n for _d, dim, _m, b, n, _c in store.query("SELECT * FROM fleet_size_daily")[1]}
    assert sizes == {
        ("gateways", "1-9"): 1,
        ("gateways", "10-99"): 1,
        ("gateways", "100-999"): 1,
        ("gateways", "10000+"): 1,
        ("end_devices", "0"): 1,
        ("end_devices", "1-9"): 1,
        ("end_devices", "10-99"): 1,
        ("end_devices", "10000+"): 1,
    }
    # the mapping is the documented one, rule by rule
    rules = store.query("SELECT prefix, region FROM frequency_plan_regions")[1]
    assert sorted(rules) == sorted(fleet_truth.REGION_PREFIXES)


X, Y, Z, W = (
    "0f8fad5b-d9cb-469f-a165-70867728950e",
    "3f6c2a8e-5b1d-4c7e-9a0f-2d8b7e6c1a94",
    "0b7e4b8c-9c1f-4d2a-8f3e-6a5d4c3b2a10",
    "5d2c1b0a-6e7f-4a8b-9c0d-1e2f3a4b5c6d",
)


def cmd(path: str, n: int, at: int = 1735700000) -> dict[str, Any]:
    return {"command_path": path, "execution_count": n, "last_used_at": at}


def alias(name: str, short: str, n: int) -> dict[str, Any]:
    return {"command_name": name, "alias": short, "usage_count": n}


def report(commands: list[Any] | None = None, aliases: list[Any] | None = None) -> dict[str, Any]:
    """A 2025 CLI's `cli` object: the uses since its previous report; Go writes an empty list as null."""
    return {"commands": commands, "aliases": aliases}


def cli_usage_deliveries() -> tuple[list[Delivery], Delivery]:
    """(the deliveries in order, one older report of X that arrives after its newer ones)."""
    first = [
        send(X, 1, cli_body(X, report([cmd("end-devices list", 5), cmd("login", 1)],
                                      [alias("end-devices", "dev", 2), {"command_name": "gateways", "usage_count": 9}])), 9),
        send(X, 2, cli_body(X, report([cmd("end-devices list", 3)])), 9),
        # a second report of X on day 2 (a shared cache directory): the uses since its first one count too
        send(X, 2, cli_body(X, report([cmd("end-devices list", 2), cmd("applications list", 1)],
                                      [alias("applications", "app", 1)])), 20),
        send(Y, 2, cli_body(Y, report([cmd("end-devices list", 4)], [alias("end-devices", "dev", 3)])), 10),
        send(Y, 2, cli_body(Y, report([cmd("end-devices list", 4)], [alias("end-devices", "dev", 3)])), 11),  # re-sent
        send(X, 3, cli_body(X, report()), 9),  # nothing since: its latest report names no command
        # one object down (a named field) counts; deeper lists are unknown fields
        send(Z, 3, cli_body(Z, {"usage": report([cmd("end-devices list", 6)], [alias("end-devices", "ed", 4)]),
                                "a": {"b": report([cmd("login", 100)])}})),
        send(W, 3, cli_body(W, {}, version="3.30.2")),  # an older CLI: no command usage
        send(X, 20, cli_body(X, report([cmd("end-devices list", 9)])), 9),
        send(uid("a"), 35, is_body(uid("a"))),  # a later day: only X's day-20 report is within its 30 days
    ]  # fmt: skip
    late = send(X, 3, cli_body(X, report([cmd("gateways list", 7)])), 5)  # received before X's day-3 report
    return first, late


def test_cli_usage_sums_every_report_of_the_window(store: ClickHouseStore) -> None:
    """The 2025 CLI resets its counts after each report: a window's executions are the sum of its reports (two of
    one install on one day, and one received before a newer one but written after it, included); an exact re-send
    counts once; installs are those with a report naming the command."""
    first, late = cli_usage_deliveries()
    write(store, first)
    consume(store, [to_records([late])])  # written after X's newer day-3 report: it counts all the same
    refresh(store)
    day = lambda n: D1 + timedelta(days=n - 1)  # noqa: E731
    usage = {(d, c): (i, e, a) for d, c, i, e, a in store.query("SELECT * FROM cli_command_usage_daily")[1]}
    assert {k[1]: v for k, v in usage.items() if k[0] == day(1)} == {"end-devices list": (1, 5, 1), "login": (1, 1, 1)}
    assert {k[1]: v for k, v in usage.items() if k[0] == day(2)} == {
        "end-devices list": (2, 5 + 3 + 2 + 4, 2),
        "login": (1, 1, 2),
        "applications list": (1, 1, 2),
    }
    assert {k[1]: v for k, v in usage.items() if k[0] == day(3)} == {
        "end-devices list": (3, 10 + 4 + 6, 4),
        "login": (1, 1, 4),
        "applications list": (1, 1, 4),
        "gateways list": (1, 7, 4),
    }
    assert usage[(day(20), "end-devices list")] == (3, 29, 4)
    assert {k[1]: v for k, v in usage.items() if k[0] == day(35)} == {"end-devices list": (1, 9, 1)}
    aliases = {(d, c, a): (i, u) for d, c, a, i, u in store.query("SELECT * FROM cli_alias_usage_daily")[1]}
    assert {k[1:]: v for k, v in aliases.items() if k[0] == day(3)} == {
        ("end-devices", "dev"): (2, 5),
        ("applications", "app"): (1, 1),
        ("end-devices", "ed"): (1, 4),
    }
    assert not [k for k in aliases if k[0] == day(35)]
    # another look-back, on the fly: day 3 alone
    one = store.query(
        "SELECT day, command_path, installs, executions, active_installs FROM "
        "cli_command_usage(lookback = 1, first = '2025-01-01', last = '2025-01-03') ORDER BY day, command_path"
    )[1]
    assert [r[1:] for r in one if r[0] == day(3)] == [("end-devices list", 1, 6, 3), ("gateways list", 1, 7, 3)]
    assert [r[1:] for r in one if r[0] == day(2)] == [("applications list", 1, 1, 2), ("end-devices list", 2, 9, 2)]
    one_alias = store.query(
        "SELECT day, command_name, alias, installs, uses FROM "
        "cli_alias_usage(lookback = 1, first = '2025-01-02', last = '2025-01-02') ORDER BY alias"
    )[1]
    assert [r[1:] for r in one_alias] == [("applications", "app", 1, 1), ("end-devices", "dev", 1, 3)]
    # new installs: on a 2025 CLI (it reports command usage; an upgrade from 3.32 gets a new UID) or an older one
    lifecycle = by_day(store, "SELECT day, new, new_2025_cli, new_older_cli FROM cli_lifecycle_daily")
    assert [(lifecycle[d]["new_2025_cli"], lifecycle[d]["new_older_cli"]) for d in (1, 2, 3)] == [
        (1, 0),
        (1, 0),
        (1, 1),
    ]
    # the oracle agrees, and a replay changes nothing
    truth = fleet_truth.analyst_ground_truth([*first, late])
    views = ["cli_command_usage_daily", "cli_alias_usage_daily", "cli_lifecycle_daily", "cli_installs_active_daily"]
    assert differences(store_reader(store), truth, views) == {}
    consume(store, [to_records(list(reversed([*first, late])))])
    refresh(store)
    assert differences(store_reader(store), truth, views) == {}


def test_a_data_directory_of_0005_upgrades_to_0006(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored by 0001-0005 (each install's latest report of a day), then 0006: its CLI reports are those snapshots,
    every day is recomputed with the sums, and a report written after the upgrade adds to them."""
    first, late = cli_usage_deliveries()
    once_a_day = [d for d in first if not (d.key == X.encode() and d.received_at_ms == at(2, 9))]  # one a day
    every = migrate.migrations
    monkeypatch.setattr(migrate, "migrations", lambda: [m for m in every() if m[0] <= 5])
    with opened(tmp_path / "chdb") as s:
        write(s, once_a_day)
        assert "cli_reports" not in {r[0] for r in s.query("SELECT name FROM system.tables")[1]}
    monkeypatch.undo()
    with opened(tmp_path / "chdb") as s:
        applied = [r[0] for r in s.query("SELECT version FROM schema_migrations FINAL ORDER BY version")[1]]
        assert applied == [v for v, _name, _sql in every()] and 6 in applied
        stored = s.query("SELECT count() FROM snapshots FINAL WHERE kind = 'cli'")[1]
        assert s.query("SELECT count() FROM cli_reports FINAL")[1] == stored
        assert {r[0] for r in s.query("SELECT day FROM analyst_daily_pending")[1]} == {
            r[0] for r in s.query("SELECT DISTINCT day FROM snapshots")[1]
        }  # every day is due
        refresh(s)
        views = ["cli_command_usage_daily", "cli_alias_usage_daily", "cli_lifecycle_daily", "cli_installs_active_daily"]
        assert differences(store_reader(s), fleet_truth.analyst_ground_truth(once_a_day), views) == {}
        consume(s, [to_records([late])])  # after the upgrade: an older report of X on day 3 counts too
        refresh(s)
        assert differences(store_reader(s), fleet_truth.analyst_ground_truth([*once_a_day, late]), views) == {}


def test_jumps_at_the_edge_of_the_factor(store: ClickHouseStore) -> None:
    a, b = uid("a"), uid("b")
    devices_a = {1: 150, 2: 2000, 3: 2000, 4: 200, 5: 19}
    devices_b = {1: 5, 2: 60}
    write(
        store,
        [send(a, d, is_body(a, end_devices=n)) for d, n in devices_a.items()]
        + [send(b, d, is_body(b, end_devices=n)) for d, n in devices_b.items()],
    )
    jumps = {
        ((d - D1).days + 1, m, p, c) for d, _u, m, _pd, p, c, _f in store.query("SELECT * FROM sender_jumps_daily")[1]
    }
    # 150 -> 2000 (> 10x); 2000 -> 200 is exactly 10x: no jump; 200 -> 19 (> 10x); b stays under 100
    assert jumps == {(2, "end_devices", 150, 2000), (5, "end_devices", 200, 19)}
    quality = by_day(store, "SELECT * FROM data_quality_daily")
    assert [quality[d]["jumps"] for d in range(1, 6)] == [0, 1, 0, 0, 1]
    assert {
        (r["day"], r["metric"])
        for r in fleet_truth.jumps(
            fleet_truth.Snapshots.of([send(a, d, is_body(a, end_devices=n)) for d, n in devices_a.items()])
        )
    } == {("2025-01-02", "end_devices"), ("2025-01-05", "end_devices")}


def test_a_late_snapshot_recomputes_the_days_it_reaches(store: ClickHouseStore) -> None:
    a, b = uid("a"), uid("b")
    first = [send(a, d, is_body(a, end_devices=10)) for d in (1, 2, 3)] + [
        send(b, d, is_body(b, end_devices=1)) for d in range(1, 7)
    ]
    write(store, first)
    assert by_day(store, "SELECT day, end_devices FROM fleet_daily_carried")[5]["end_devices"] == 11
    late = send(a, 3, is_body(a, end_devices=70), hour=20)  # written after, received later on day 3: it wins
    consume(store, [to_records([late])])
    pending = {(d - D1).days + 1 for (d,) in store.query("SELECT day FROM analyst_daily_pending")[1]}
    assert pending == {3, 4, 5, 6}
    refresh(store)
    carried = by_day(store, "SELECT day, end_devices FROM fleet_daily_carried")
    assert [carried[d]["end_devices"] for d in range(1, 7)] == [11, 11, 71, 71, 71, 71]


def test_a_replay_older_than_the_snapshot_ttl_keeps_the_analyst_rows(tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    a = uid("a")
    deliveries = [send(a, d, is_body(a, end_devices=10 + d)) for d in range(1, 6)]  # 2025-01: long gone
    with opened(path) as s:
        write(s, deliveries)
        before = s.query("SELECT * FROM fleet_daily_carried ORDER BY day")[1]
        lifecycle = s.query("SELECT * FROM deployment_lifecycle_daily ORDER BY day")[1]
        assert len(before) == 5
    with opened(path, snapshot_ttl_days=30) as s:
        s.client.command("OPTIMIZE TABLE snapshots FINAL")
        assert s.query("SELECT count() FROM snapshots")[1] == [(0,)]
        consume(s, [to_records(deliveries)])  # a replay of the whole topic
        s.client.command("SYSTEM REFRESH VIEW analyst_daily_refresh")
        s.client.command("SYSTEM WAIT VIEW analyst_daily_refresh")
        assert s.query("SELECT * FROM fleet_daily_carried ORDER BY day")[1] == before
        assert s.query("SELECT * FROM deployment_lifecycle_daily ORDER BY day")[1] == lifecycle


def test_older_history_written_late_moves_new_and_returning(store: ClickHouseStore) -> None:
    """A UID's first days arrive after its later ones, 40 days apart (a backfill of old data): day 41 is out of every
    look-back of the days written, yet its figures change (a return instead of a new deployment): the UID's events
    there change, and make it due once applied."""
    a, b = uid("a"), uid("b")
    later = [send(a, d, is_body(a)) for d in range(41, 46)] + [send(b, d, is_body(b)) for d in range(1, 46)]
    write(store, later)
    assert by_day(store, "SELECT day, new FROM deployment_lifecycle_daily")[41]["new"] == 1
    earlier = [send(a, d, is_body(a)) for d in range(1, 4)]
    consume(store, [to_records(earlier)])
    store.apply_analysts()  # what the writer's applier does within a second
    pending = {(d - D1).days + 1 for (d,) in store.query("SELECT day FROM analyst_daily_pending")[1]}
    assert pending >= {1, 2, 3, 41}
    refresh(store)
    rows = by_day(store, "SELECT * FROM deployment_lifecycle_daily")
    assert (rows[1]["new"], rows[41]["new"], rows[41]["returning"], rows[10]["churned"]) == (2, 0, 1, 1)
    truth = fleet_truth.lifecycle(fleet_truth.Snapshots.of(later + earlier), "is")
    assert [tuple(r.values()) for r in sorted(truth, key=lambda r: r["day"])] == [
        (d.isoformat(), *v) for d, *v in store.query("SELECT * FROM deployment_lifecycle_daily ORDER BY day")[1]
    ]


# -- the newest version: one deployment cannot set it (the security test's finding 6) ------------------------------

FAKE = "3.999.0 (deadbeef, 2026-12-07T00:00:00Z)"


def newest_version_deliveries() -> list[Delivery]:
    """18 deployments on 3.33 (5) and 3.34 (13) on days 1-6; one forged deployment on 3.999 from day 2, a second on
    day 3 (3.998); on day 5 three of the 3.34 ones upgrade to 3.35 (three, and more than 1 % of the fleet)."""
    out = []
    for n in range(18):
        u = uid(f"real-{n}")
        for d in range(1, 7):
            version = "3.33.2" if n < 5 else "3.35.0" if n >= 15 and d >= 5 else "3.34.1"
            out.append(send(u, d, is_body(u, end_devices=100 + n, version=version)))
    out += [send(uid("forged-1"), d, is_body(uid("forged-1"), version=FAKE)) for d in range(2, 7)]
    out += [send(uid("forged-2"), d, is_body(uid("forged-2"), version="3.998.0")) for d in range(3, 7)]
    return out


def test_one_or_two_deployments_on_a_fake_newest_version_move_nothing(store: ClickHouseStore) -> None:
    sent = newest_version_deliveries()
    write(store, sent)
    newest = {
        d: r["newest_version"]
        for d, r in by_day(store, "SELECT DISTINCT day, newest_version FROM versions_behind_daily").items()
    }
    assert newest == {1: "3.34", 2: "3.34", 3: "3.34", 4: "3.34", 5: "3.35", 6: "3.35"}
    behind: dict[int, dict[int, int]] = {}
    for day, _newest, b, n in store.query("SELECT day, newest_version, behind, deployments FROM versions_behind_daily")[
        1
    ]:
        behind.setdefault((day - D1).days + 1, {})[b] = n
    # the forged ones count as current (they are not behind): every real deployment is as far behind as before
    assert behind[1] == {0: 13, 1: 5} and behind[3] == {0: 13 + 2, 1: 5}
    assert behind[5] == {0: 3 + 2, 1: 10, 2: 5}
    assert store.query("SELECT count() FROM deployments_behind_daily")[1] == [(0,)]  # nobody 3 or more behind
    # adoption and upgrade speed list only the versions that pass the bar; the version shares show every one
    adoption = {(r[0], r[1]) for r in store.query("SELECT version, day FROM version_adoption_daily")[1]}
    assert {v for v, _d in adoption} == {"3.33", "3.34", "3.35"}
    speed = {r[0]: r[1] for r in store.query("SELECT version, first_seen FROM version_adoption_speed")[1]}
    assert speed == {"3.33": D1, "3.34": D1, "3.35": D1 + timedelta(days=4)}
    shares = {r[0] for r in store.query("SELECT version FROM deployments_by_version_daily WHERE day = '2025-01-03'")[1]}
    assert shares == {"3.33", "3.34", "3.998", "3.999"}
    on_day = store.query("SELECT DISTINCT newest_version FROM deployments_behind(day = '2025-01-03', min_behind = 0)")
    assert on_day[1] == [("3.34",)]
    views = ["versions_behind_daily", "deployments_behind_daily", "version_adoption_daily", "version_adoption_speed"]
    assert differences(store_reader(store), fleet_truth.analyst_ground_truth(sent), views) == {}


def test_a_data_directory_of_0006_upgrades_to_0007(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored and refreshed by 0001-0006 (newest_version 3.999, from one forged deployment), then 0007: every day is
    recomputed with the bar, and nothing is re-sent."""
    sent = newest_version_deliveries()
    every = migrate.migrations
    monkeypatch.setattr(migrate, "migrations", lambda: [m for m in every() if m[0] <= 6])
    with opened(tmp_path / "chdb") as s:
        write(s, sent)
        assert ("3.999",) in s.query("SELECT DISTINCT newest_version FROM versions_behind_daily")[1]
    monkeypatch.undo()
    with opened(tmp_path / "chdb") as s:
        applied = [r[0] for r in s.query("SELECT version FROM schema_migrations FINAL ORDER BY version")[1]]
        assert applied == [v for v, _name, _sql in every()] and 7 in applied
        assert {r[0] for r in s.query("SELECT day FROM analyst_daily_pending")[1]} == {
            r[0] for r in s.query("SELECT DISTINCT day FROM snapshots")[1]
        }  # every day is due
        refresh(s)
        assert differences(store_reader(s), fleet_truth.analyst_ground_truth(sent)) == {}
        assert s.query("SELECT DISTINCT newest_version FROM versions_behind_daily ORDER BY 1")[1] == [
            ("3.34",),
            ("3.35",),
        ]
