"""The simulator's fleet and bodies and its ground truth, computed by hand (sending to Kafka and the collector:
tests/test_simulator.py)."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from datetime import timedelta

import pytest

from core.schema import DEFAULT_UID, SUMMED_COUNTS, TelemetryMessage
from core.uid import uid_from_elements
from processors.validate import Rejection, inconsistencies, validate
from producers import simulator
from producers.simulator import Delivery, ground_truth

D1 = 1735689600000  # 2025-01-01T00:00:00Z
D2 = D1 + 86_400_000
H = 3_600_000


def test_deterministic_with_a_seed():
    a = simulator.generate(40, 15, 4, seed=5, end_day="2025-03-10")
    b = simulator.generate(40, 15, 4, seed=5, end_day="2025-03-10")
    assert a.deliveries == b.deliveries and a.intended == b.intended and a.stats == b.stats
    c = simulator.generate(40, 15, 4, seed=6, end_day="2025-03-10")
    assert c.deliveries != a.deliveries
    # the fleet (UIDs) does not depend on days or rates
    d = simulator.generate(40, 15, 2, seed=5, end_day="2025-03-10", resend_rate=0, malformed_rate=0)
    uids = {json.loads(x.body)["uid"] for x in d.deliveries}
    fleet = simulator.build_fleet(40, 15, 5)
    assert uids <= {dep.uid for dep in fleet.deployments} | {
        u for ci in fleet.cli_installs for u in (ci.uid, ci.uid_2025)
    }
    # sorted by receive time, every receive time in the window
    times = [x.received_at_ms for x in a.deliveries]
    assert times == sorted(times)
    assert a.days == ["2025-03-07", "2025-03-08", "2025-03-09", "2025-03-10"]
    assert {simulator.utc_day(t).isoformat() for t in times} <= set(a.days)


def test_today_only_up_to_now():
    now = D1 + 6 * H + 123  # "today" is 2025-01-01, 06:00
    sim = simulator.generate(80, 30, 3, seed=2, now_ms=now)
    assert sim.days[-1] == "2025-01-01"
    assert max(d.received_at_ms for d in sim.deliveries) <= now
    today = [d for d in sim.deliveries if d.received_at_ms >= D1]
    assert today and sim.stats["pending"] > 0  # some deployments have not sent yet today
    with pytest.raises(ValueError):
        simulator.generate(5, 0, 1, seed=2, end_day="2025-01-02", now_ms=now)  # the future


def test_rates_roughly_honoured():
    sim = simulator.generate(
        200,
        60,
        20,
        seed=11,
        end_day="2025-02-20",
        resend_rate=0.10,
        changed_rate=0.06,
        missed_rate=0.08,
        malformed_rate=0.04,
    )
    st = sim.stats
    valid_primaries = st["primary"] - st["malformed"]
    assert abs(st["missed"] / st["is_slots"] - 0.08) < 0.02
    assert abs(st["malformed"] / st["primary"] - 0.04) < 0.012
    assert abs(st["resend"] / valid_primaries - 0.10) < 0.02
    assert abs(st["changed"] / valid_primaries - 0.06) < 0.015
    assert sum(k is not None for k in sim.intended) == st["malformed"]
    assert len(sim.deliveries) == st["primary"] + st["resend"] + st["changed"]
    # the deliveries themselves: exact repeats of a (day, body)
    seen, dups = set(), 0
    for d in sim.deliveries:
        k = (simulator.utc_day(d.received_at_ms), d.body)
        dups += k in seen
        seen.add(k)
    assert st["resend"] <= dups <= st["resend"] * 1.2 + 5
    quiet = simulator.generate(
        50,
        20,
        5,
        seed=11,
        end_day="2025-02-20",
        resend_rate=0,
        changed_rate=0,
        missed_rate=0,
        malformed_rate=0,
        inconsistent_rate=0,
    )
    assert quiet.stats.get("missed", 0) == quiet.stats.get("resend", 0) == quiet.stats.get("malformed", 0) == 0
    assert all(k is None for k in quiet.intended)


def test_fleet_variety():
    sim = simulator.generate(300, 100, 10, seed=1, end_day="2025-05-31")
    msgs = [m for m in (validate(d.body) for d in sim.deliveries) if not isinstance(m, Rejection)]
    assert all(k is None for d, k in zip(sim.deliveries, sim.intended) if not isinstance(validate(d.body), Rejection))
    is_msgs = [m for m in msgs if m.kind == "is"]
    cli_msgs = [m for m in msgs if m.kind == "cli"]
    fleet = simulator.build_fleet(300, 100, 1)
    assert sum(d.default_uid for d in fleet.deployments) >= 2  # several deployments share the default UID
    per_day_default = Counter(
        simulator.utc_day(d.received_at_ms) for d in sim.deliveries if d.key == DEFAULT_UID.encode()
    )
    assert max(per_day_default.values()) >= 2
    old = [m for m in is_msgs if m.entities_count.accounts.users.total is not None]
    assert old and all(m.entities_count.gateways.total == 0 for m in old)
    assert any(m.entities_count.gateways.gateways_by_frequency_plan_id for m in old)
    assert any(
        sum(m.entities_count.gateways.gateways_by_frequency_plan_id.values()) > m.entities_count.gateways.total > 0
        for m in is_msgs
    )  # multi-plan gateways
    versions = [m.os.binary_version for m in is_msgs]
    assert any(v.endswith("-dev") for v in versions) and any("(" in v for v in versions)
    assert len({simulator.version_of(v) for v in versions}) >= 10
    assert any(m.os.golang_version.startswith(" go") for m in is_msgs)
    platforms = Counter((m.os.operating_system, m.os.arch) for m in is_msgs)
    assert platforms.most_common(1)[0][0] == ("linux", "amd64")
    assert platforms[("linux", "arm64")] and {"darwin", "windows"} <= {p[0] for p in platforms}
    assert any(m.cli == {} for m in cli_msgs) and any(m.cli.get("commands") for m in cli_msgs)
    assert any(m.cli.get("aliases") for m in cli_msgs)
    flagged = sum(bool(inconsistencies(m)) for m in is_msgs)
    assert 0 < flagged < 0.06 * len(is_msgs)
    # heavily skewed sizes; windows consistent where not flagged
    devices = [m.entities_count.end_devices.total for m in is_msgs]
    assert statistics.median(devices) < 50 and max(devices) > 100 * max(1, statistics.median(devices))
    assert max(devices) < 10**8
    # counts evolve slowly day over day
    by_uid: dict[str, list[int]] = defaultdict(list)
    for m in is_msgs:
        if m.uid != DEFAULT_UID:
            by_uid[m.uid].append(m.entities_count.end_devices.total)
    big = [v for v in by_uid.values() if v[-1] >= 200]
    assert big and any(v[0] != v[-1] for v in big)
    assert all(abs(v[-1] - v[0]) <= 0.25 * v[-1] + 10 for v in big)


def test_cli_bodies_as_the_2025_cli_sends_them():
    """The 2025 CLI (3.34 and newer here): each report counts the uses since the previous one (a UID's first report
    has none yet: null lists, as Go writes an empty list), cobra's paths without the binary name, aliases; an install
    upgraded from an older CLI reports under a new UID from then on (its telemetry.yml is not read); Go's User-Agent."""
    sim = simulator.generate(20, 120, 60, seed=4, end_day="2025-06-30", malformed_rate=0, changed_rate=0.05)
    fleet = simulator.build_fleet(20, 120, 4)
    reports: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    for d in sim.deliveries:
        m = validate(d.body)
        if not isinstance(m, Rejection) and m.kind == "cli":
            reports[m.uid].append((d.received_at_ms, d.body))
            assert simulator.user_agent_of(d.body) == simulator.CLI_USER_AGENT == "Go-http-client/1.1"
            assert TelemetryMessage.model_validate_json(d.body).to_json() == d.body  # byte for byte as Go writes it
    usage = [json.loads(b)["cli"] for rs in reports.values() for _t, b in rs if json.loads(b)["cli"]]
    assert usage and all(list(cli) == ["commands", "aliases"] for cli in usage)  # CmdData, inlined, Go's order
    paths = {c["command_path"] for cli in usage for c in cli["commands"] or ()}
    assert paths and not any(p.startswith("ttn-lw-cli") for p in paths) and "end-devices list" in paths
    assert any(cli["aliases"] for cli in usage) and any(cli["aliases"] is None for cli in usage)
    assert all(all(c["execution_count"] > 0 for c in cli["commands"] or ()) for cli in usage)  # only what was used
    # a 2025 UID that starts in the window: its first report is empty, the later ones count what was used since
    started = [ci for ci in fleet.cli_installs if ci.age_days <= 60 and ci.uid_2025 in reports]
    upgraded = [ci for ci in fleet.cli_installs if ci.uid in reports and ci.uid_2025 in reports]
    assert started and upgraded
    later = []
    for ci in started + upgraded:
        first, *rest = [json.loads(b)["cli"] for _t, b in sorted(reports[ci.uid_2025])]
        assert first == {"commands": None, "aliases": None}
        later += rest
    assert any(cli["commands"] for cli in later)
    for ci in upgraded:  # the old UID goes quiet when the new one starts
        old = [json.loads(b)["os"]["binary_version"] for _t, b in reports[ci.uid]]
        new = [json.loads(b)["os"]["binary_version"] for _t, b in reports[ci.uid_2025]]
        assert max(t for t, _b in reports[ci.uid]) < min(t for t, _b in reports[ci.uid_2025])
        assert all(
            int(v.split(".")[1]) < simulator.CLI_USAGE_MIN_MINOR <= int(w.split(".")[1]) for v in old for w in new
        )
    # the counts are not cumulative: the executions of a UID's reports go down as well as up
    series = [
        [sum(c["execution_count"] for c in json.loads(b)["cli"]["commands"] or ()) for _t, b in sorted(rs)]
        for rs in reports.values()
        if len(rs) > 3 and json.loads(rs[0][1])["cli"]
    ]
    assert any(any(b < a for a, b in zip(s, s[1:])) for s in series)


def test_ground_truth_by_hand():
    A, C = uid_from_elements(["a"]), uid_from_elements(["c"])
    X, Y = "3f6c2a8e-5b1d-4c7e-9a0f-2d8b7e6c1a94", "0b7e4b8c-9c1f-4d2a-8f3e-6a5d4c3b2a10"
    a1 = _is(A, "3.32.1 (1d218216, 2024-10-24T13:28:12Z)", 2, {"EU_863_870_TTN": 2}, 10, (8, 2, 4, 6), 1, 3, 1, 1)
    b_old = _is(
        DEFAULT_UID,
        "3.27.0-dev",
        0,
        {"US_902_928_FSB_1": 1, "US_902_928_FSB_2": 1},
        0,
        (0, 0, 0, 0),
        0,
        0,
        1,
        0,
        users_total=1,
    )
    c1 = _is(C, "3.33.0", 1, {"EU_863_870": 1, "EU_863_870_TTN": 1}, 5, (5, 1, 2, 3), 2, 2, 1, 0)
    c2 = _is(C, "3.33.0", 2, {"EU_863_870": 2, "EU_863_870_TTN": 1}, 7, (6, 1, 2, 4), 2, 2, 1, 0)
    c_neg = c2.replace(b'"applications":{"total":2}', b'"applications":{"total":-1}')
    b_old2 = _is(
        DEFAULT_UID,
        "3.27.0-dev",
        0,
        {"US_902_928_FSB_1": 1, "US_902_928_FSB_2": 1},
        3,
        (3, 1, 1, 2),
        0,
        0,
        1,
        0,
        users_total=1,
    )
    b_new = _is(DEFAULT_UID, "3.32.0", 1, {"AS_923": 1}, 2, (1, 0, 1, 1), 1, 0, 1, 0)
    a2 = _is(A, "3.32.1", 2, {"EU_863_870_TTN": 2}, 11, (9, 3, 5, 7), 1, 3, 1, 1)
    a3 = _is(A, "3.32.1", 3, {"EU_863_870_TTN": 3}, 12, (9, 3, 5, 7), 2, 4, 2, 1)
    a_huge = a3.replace(b'"end_devices":{"total":12', b'"end_devices":{"total":2000000000')
    cli_y = _cli(
        Y,
        {
            "commands": [{"command_path": "end-devices list", "execution_count": 3, "last_used_at": 1735794000}],
            "aliases": [{"command_name": "end-devices", "alias": "dev", "usage_count": 2}],
        },
    )
    deliveries = [
        Delivery(D1 + 8 * H, X.encode(), _cli(X, {})),
        Delivery(D1 + 9 * H, DEFAULT_UID.encode(), b_old),
        Delivery(D1 + 10 * H, A.encode(), a1),
        Delivery(D1 + 11 * H, A.encode(), a1),  # exact re-send
        Delivery(D1 + 12 * H, C.encode(), c1),
        Delivery(D1 + 13 * H, C.encode(), c2),  # changed re-send: the snapshot
        Delivery(D1 + 14 * H, C.encode(), c_neg),  # later, but rejected: not the snapshot
        Delivery(D2 + 1 * H, DEFAULT_UID.encode(), b_old2),  # two deployments on the default UID:
        Delivery(D2 + 2 * H, DEFAULT_UID.encode(), b_new),  # one UID, the later wins
        Delivery(D2 + 5 * H, X.encode(), _cli(X, {})),
        Delivery(D2 + 6 * H, Y.encode(), cli_y),
        Delivery(D2 + 7 * H, None, b'{"uid":"m64Jv5T3Bqnxz3t'),  # truncated
        Delivery(D2 + 10 * H, A.encode(), a2),
        Delivery(D2 + 10 * H, A.encode(), a3),  # same ms, later in send order: wins
        Delivery(D2 + 20 * H, A.encode(), a_huge),  # implausible
    ]
    fleet_row = dict.fromkeys(SUMMED_COUNTS, 0)
    expected = {
        "fleet_daily": [
            {
                **fleet_row,
                "day": "2025-01-01",
                "deployments": 3,
                "cli_installs": 1,
                "gateways": 4,
                "end_devices": 17,
                "active_end_devices": 14,
                "active_last_day": 3,
                "active_last_week": 6,
                "active_last_month": 10,
                "applications": 3,
                "users_standard": 5,
                "users_admin": 3,
                "organizations": 1,
            },
            {
                **fleet_row,
                "day": "2025-01-02",
                "deployments": 2,
                "cli_installs": 2,
                "gateways": 4,
                "end_devices": 14,
                "active_end_devices": 10,
                "active_last_day": 3,
                "active_last_week": 6,
                "active_last_month": 8,
                "applications": 3,
                "users_standard": 4,
                "users_admin": 3,
                "organizations": 1,
            },
        ],
        "gateways_by_frequency_plan_daily": [
            {"day": "2025-01-01", "frequency_plan_id": "EU_863_870", "gateways": 2},
            {"day": "2025-01-01", "frequency_plan_id": "EU_863_870_TTN", "gateways": 3},
            {"day": "2025-01-01", "frequency_plan_id": "US_902_928_FSB_1", "gateways": 1},
            {"day": "2025-01-01", "frequency_plan_id": "US_902_928_FSB_2", "gateways": 1},
            {"day": "2025-01-02", "frequency_plan_id": "AS_923", "gateways": 1},
            {"day": "2025-01-02", "frequency_plan_id": "EU_863_870_TTN", "gateways": 3},
        ],
        "deployments_by_version_daily": [
            {"day": "2025-01-01", "version": "3.27", "deployments": 1},
            {"day": "2025-01-01", "version": "3.32", "deployments": 1},
            {"day": "2025-01-01", "version": "3.33", "deployments": 1},
            {"day": "2025-01-02", "version": "3.32", "deployments": 2},
        ],
        "rejected_daily": [
            {"day": "2025-01-01", "reason": "negative", "messages": 1},
            {"day": "2025-01-02", "reason": "implausible", "messages": 1},
            {"day": "2025-01-02", "reason": "not_json", "messages": 1},
        ],
        "messages": 15,
        "per_day_messages": {"2025-01-01": 7, "2025-01-02": 8},
    }
    assert ground_truth(deliveries) == expected
    # order matters only at equal receive times: swapping a2/a3 makes a2 the snapshot
    swapped = deliveries[:12] + [deliveries[13], deliveries[12]] + deliveries[14:]
    assert ground_truth(swapped)["fleet_daily"][1]["end_devices"] == 2 + 11
    # a higher plausibility limit accepts the huge one (the latest of the day)
    assert ground_truth(deliveries, plausibility_limit=10**10)["fleet_daily"][1]["end_devices"] == 2 + 2_000_000_000
    json.dumps(ground_truth(deliveries))  # JSON-ready


def test_every_malformed_body_gets_its_intended_reason():
    sim = simulator.generate(40, 40, 4, seed=9, end_day="2025-04-01", malformed_rate=1.0)
    kinds = Counter(sim.intended)
    assert set(kinds) == set(simulator.MALFORMED_KINDS_IS)  # every kind generated
    for d, kind in zip(sim.deliveries, sim.intended):
        r = validate(d.body)
        assert isinstance(r, Rejection) and r.reason == kind, (kind, r, d.body[:300])
        assert d.key == simulator.key_of(d.body)
        assert (d.key is None) == (kind in ("not_json", "not_object", "missing_field"))
    truth = ground_truth(sim.deliveries)
    assert sum(r["messages"] for r in truth["rejected_daily"]) == len(sim.deliveries)
    assert truth["fleet_daily"] == []
    # and at the default rate, in a normal run
    sim = simulator.generate(100, 30, 10, seed=4, end_day="2025-04-01")
    truth = ground_truth(sim.deliveries)
    assert sum(k is not None for k in sim.intended) == sum(r["messages"] for r in truth["rejected_daily"]) > 0
    assert truth["messages"] == len(sim.deliveries) == sum(truth["per_day_messages"].values())
    for d, kind in zip(sim.deliveries, sim.intended):
        r = validate(d.body)
        assert (r.reason if isinstance(r, Rejection) else None) == kind


def test_releases_and_upgrades_by_the_rules():
    from producers.fleet_lifecycle import Lifecycle, newest_release, release_back

    assert release_back(35, 0) == 30 and release_back(34, 0) == 80 and release_back(35, 2) == 6
    assert newest_release(31) == (34, 4) and newest_release(30) == (35, 0) and newest_release(0) == (35, 2)
    eager = Lifecycle(upgrade_lag=3)
    assert eager.version((30, 1), 27) == (35, 0) and eager.version((30, 1), 28) == (34, 4)  # 3 days after it
    assert eager.version((30, 1), 40) == (34, 3)
    assert Lifecycle().version((33, 2), 0) == (33, 2)  # a laggard stays
    assert Lifecycle().version((35, 4), 40) == (34, 3)  # never a version before its release ...
    assert Lifecycle(prerelease=True).version((35, 0), 40) == (35, 0)  # ... except a -dev build
    assert Lifecycle(stop_back=5).stopped(4) and not Lifecycle(stop_back=5).stopped(5)


def test_the_fleet_lives():
    """60 days of 300 deployments: onboarding, churn for good, outages with returns, upgrades after the release
    30 days before the end, one-day jumps, and the sizes stay heavily skewed."""
    sim = simulator.generate(300, 80, 60, seed=13, end_day="2025-06-30", jump_rate=0.002)
    msgs = [
        (simulator.utc_day(d.received_at_ms), m)
        for d in sim.deliveries
        if not isinstance(m := validate(d.body), Rejection)
    ]
    days: dict[str, list] = defaultdict(list)
    for day, m in msgs:
        if m.kind == "is" and m.uid != DEFAULT_UID:
            days[m.uid].append(day)
    first, last = min(d for ds in days.values() for d in ds), max(d for ds in days.values() for d in ds)
    assert sum(min(ds) > first for ds in days.values()) >= 5  # onboarded during the window
    assert sum(max(ds) < last - timedelta(days=10) for ds in days.values()) >= 5  # stopped for good
    gaps = [
        max((b - a).days for a, b in zip(sorted(set(ds)), sorted(set(ds))[1:]))
        for ds in days.values()
        if len(set(ds)) > 1
    ]
    assert sum(g > 7 for g in gaps) >= 3  # silent for more than a week, then back
    assert sim.stats["churned"] and sim.stats["outage"] and sim.stats["jump"]
    share_35 = {}
    for when in (first, last - timedelta(days=25), last):
        on_day = [m for d, m in msgs if d == when and m.kind == "is"]
        share_35[when] = sum(simulator.version_of(m.os.binary_version) == "3.35" for m in on_day) / len(on_day)
    before, soon, end = share_35.values()
    assert before < 0.05 < soon < end and end > 0.4  # adopted after its release, 30 days before the end
    cli_35 = [
        m for d, m in msgs if m.kind == "cli" and d == last and simulator.version_of(m.os.binary_version) == "3.35"
    ]
    assert cli_35 and all("commands" in m.cli for m in cli_35)  # upgraded CLIs send command usage


def _is(uid, version, gw, plans, ed, active, apps, std, admin, orgs, users_total=None) -> bytes:
    users = (
        {"standard": std, "admin": admin}
        if users_total is None
        else {"total": users_total, "standard": std, "admin": admin}
    )
    return TelemetryMessage.model_validate(
        {
            "uid": uid,
            "os": {
                "operating_system": "linux",
                "arch": "amd64",
                "binary_version": version,
                "golang_version": "go1.22.5",
            },
            "cli": None,
            "entities_count": {
                "gateways": {"total": gw, "gateways_by_frequency_plan_id": plans},
                "end_devices": {
                    "total": ed,
                    "activate_end_devices": dict(zip(("total", "last_day", "last_week", "last_month"), active)),
                },
                "applications": {"total": apps},
                "accounts": {"users": users, "organizations": {"total": orgs}},
            },
        }
    ).to_json()


def _cli(uid, cli) -> bytes:
    return TelemetryMessage.model_validate(
        {
            "uid": uid,
            "os": {
                "operating_system": "darwin",
                "arch": "arm64",
                "binary_version": "3.34.1",
                "golang_version": "go1.23.4",
            },
            "cli": cli,
            "entities_count": None,
        }
    ).to_json()
