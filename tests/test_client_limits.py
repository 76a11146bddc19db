"""Per-client limits against a running `is-telemetry up` (real HTTP on 127.0.0.1, real broker, worker, chDB).

The attack of issue 22 ("fleet poisoning"): one address invents thousands of UIDs and each one counts as a
deployment. Here the collector caps new UIDs per client address and UTC day (20 in these stacks, set through the
environment); the excess is published marked, rejected by the processors as `rate_limited`, and shows in
`rejections`, `rejected_daily` and the roll-up's `rejected_by_reason`. Clients are told apart by their loopback
source address (127.0.0.0/8 is all loopback on Linux). The pure logic: tests/unit/test_client_budget.py.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from producers.simulator import LiveFeed
from producers.truth_rules import Rejected, judge
from tests.conftest import RunningStack, start_stack
from tests.samples import SAMPLES

LIMIT = 20
PROXY = "127.0.0.1"  # the trusted proxy of the first stack
LIMITS_ENV = {
    "IS_TELEMETRY_COLLECTOR__MAX_NEW_UIDS_PER_CLIENT_PER_DAY": str(LIMIT),
    "IS_TELEMETRY_COLLECTOR__TRUSTED_PROXIES": f'["{PROXY}"]',
}
JSON = {"content-type": "application/json", "user-agent": "TheThingsStack/3.32.1 (linux/amd64)"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    s = start_stack(tmp_path_factory.mktemp("client-limits") / "stack", "--no-simulate", env=LIMITS_ENV)
    try:
        yield s
    finally:
        assert s.stop() == 0, s.log()


# -------------------------------------------------------------------------------------------------- helpers


def uid_for(seed: str) -> str:
    return base64.b64encode(hashlib.sha512(seed.encode()).digest()).decode()


def body_for(seed: str, gateways: int = 1) -> bytes:
    message = orjson.loads(SAMPLES["is-3.32.json"])
    message["uid"] = uid_for(seed)
    message["entities_count"]["gateways"]["total"] = gateways
    return orjson.dumps(message)


def post_from(stack: RunningStack, source: str, bodies: list[bytes], forwarded_for: str | None = None) -> None:
    """POST each body in order from the loopback address `source`; every one is answered 202."""
    headers = dict(JSON)
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=15) as client:
        for body in bodies:
            r = client.post(stack.collector_url, content=body, headers=headers)
            assert r.status_code == 202, r.text  # limited or not: the same answer (see docs/collector.md)


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def quoted(uids: list[str]) -> str:
    return ", ".join(f"'{u}'" for u in uids)  # base64: no quote can occur


def stored_uids(stack: RunningStack, uids: list[str]) -> set[str]:
    rows = stack.sql(f"SELECT DISTINCT uid FROM snapshots FINAL WHERE uid IN ({quoted(uids)})")
    return {r["uid"] for r in rows}


def limited_bodies(stack: RunningStack, uids: list[str]) -> dict[str, str]:
    rows = stack.sql(
        "SELECT JSONExtractString(body, 'uid') AS uid, body FROM rejections FINAL "
        f"WHERE reason = 'rate_limited' AND JSONExtractString(body, 'uid') IN ({quoted(uids)})"
    )
    return {r["uid"]: r["body"] for r in rows}


def rate_limited_today(stack: RunningStack) -> tuple[int, int]:
    """(rejected_daily's rate_limited messages, the roll-up's rejected_by_reason['rate_limited']) for today."""
    view = stack.sql(
        f"SELECT sum(messages) AS n FROM rejected_daily WHERE day = '{today()}' AND reason = 'rate_limited'"
    )
    rollup = stack.sql(
        f"SELECT sum(rejected_by_reason['rate_limited']) AS n FROM daily_rollup FINAL WHERE day = '{today()}'"
    )
    return int(view[0]["n"] or 0), int(rollup[0]["n"] or 0)


def wait_outcome(stack: RunningStack, admitted: list[str], limited: list[str], timeout_s: float = 90) -> None:
    """Wait until every admitted UID is stored and every limited one is in `rejections`; then check that no limited
    UID became a snapshot and no admitted one was limited."""
    deadline = time.monotonic() + timeout_s
    while True:
        stored, rejected = stored_uids(stack, admitted), limited_bodies(stack, limited)
        if stored == set(admitted) and set(rejected) == set(limited):
            break
        assert time.monotonic() < deadline, (
            f"stored {len(stored)}/{len(admitted)}, rate_limited {len(rejected)}/{len(limited)}\n{stack.log()}"
        )
        time.sleep(0.3)
    assert not stored_uids(stack, limited), "a limited UID became a snapshot"
    assert not limited_bodies(stack, admitted), "an admitted UID was limited"


def wait_rate_limited_today(stack: RunningStack, expected: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (got := rate_limited_today(stack)) != (expected, expected):
        assert time.monotonic() < deadline, f"rate_limited today (view, roll-up) = {got}, expected {expected}"
        time.sleep(0.3)


# ---------------------------------------------------------------------------------------------------- tests


def test_one_address_adds_at_most_the_limit_of_new_uids_a_day(stack: RunningStack) -> None:
    before = rate_limited_today(stack)[0]
    fleet_before = stack.sql(f"SELECT deployments FROM fleet_daily WHERE day = '{today()}'")
    seeds = [f"poison-{i}" for i in range(LIMIT + 10)]
    bodies = [body_for(s) for s in seeds]
    post_from(stack, "127.0.0.11", bodies)
    # re-sends of an admitted UID are not new: a changed body of the first one replaces its snapshot
    changed = body_for(seeds[0], gateways=7)
    post_from(stack, "127.0.0.11", [changed, body_for(seeds[1])])
    uids = [uid_for(s) for s in seeds]
    wait_outcome(stack, uids[:LIMIT], uids[LIMIT:])
    # the excess is kept, byte for byte, with its reason; and counted in the day's figures
    assert limited_bodies(stack, uids[LIMIT:]) == {uid_for(s): body_for(s).decode() for s in seeds[LIMIT:]}
    wait_rate_limited_today(stack, before + 10)
    (row,) = stack.sql(f"SELECT body FROM snapshots_latest WHERE uid = '{uids[0]}'")
    assert row["body"].encode() == changed
    deployments = stack.sql(f"SELECT deployments FROM fleet_daily WHERE day = '{today()}'")[0]["deployments"]
    assert deployments == (fleet_before[0]["deployments"] if fleet_before else 0) + LIMIT
    # and in the dashboard's data-quality figures: the rejected messages per reason
    panel = httpx.get(stack.api_url + "/api/rejected", params={"from": today(), "to": today()}, timeout=30).json()
    assert "rate_limited" in panel["reasons"]
    by_reason = {r["reason"]: r["messages"] for r in panel["tables"]["by_reason"]["rows"]}
    assert by_reason["rate_limited"] == before + 10


def test_forwarded_for_from_an_untrusted_peer_is_ignored(stack: RunningStack) -> None:
    before = rate_limited_today(stack)[0]
    seeds = [f"untrusted-{i}" for i in range(LIMIT + 5)]
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.12"), timeout=15) as client:
        for i, seed in enumerate(seeds):  # a new forwarded address with every request: the peer is still limited
            r = client.post(
                stack.collector_url, content=body_for(seed), headers={**JSON, "x-forwarded-for": f"198.51.100.{i}"}
            )
            assert r.status_code == 202
    uids = [uid_for(s) for s in seeds]
    wait_outcome(stack, uids[:LIMIT], uids[LIMIT:])
    wait_rate_limited_today(stack, before + 5)


def test_forwarded_for_from_a_trusted_proxy_names_the_client(stack: RunningStack) -> None:
    before = rate_limited_today(stack)[0]
    first = [f"behind-proxy-a-{i}" for i in range(LIMIT + 5)]
    post_from(stack, PROXY, [body_for(s) for s in first], forwarded_for="203.0.113.7")
    # another client behind the same proxy has its own budget
    second = [f"behind-proxy-b-{i}" for i in range(5)]
    post_from(stack, PROXY, [body_for(s) for s in second], forwarded_for="203.0.113.8")
    # what a client writes into the header itself is left of what the proxy appended: the proxy's hop counts
    forged = [f"behind-proxy-forged-{i}" for i in range(3)]
    post_from(stack, PROXY, [body_for(s) for s in forged], forwarded_for="203.0.113.9, 203.0.113.7")
    # the proxy's own requests (no header) are the proxy's budget, untouched by its clients'
    own = ["proxy-itself"]
    post_from(stack, PROXY, [body_for(s) for s in own])
    admitted = [uid_for(s) for s in first[:LIMIT] + second + own]
    limited = [uid_for(s) for s in first[LIMIT:] + forged]
    wait_outcome(stack, admitted, limited)
    wait_rate_limited_today(stack, before + 8)


def test_the_simulated_fleet_of_up_is_not_limited_but_other_local_clients_are(tmp_path: Path) -> None:
    """`up` sends its simulated fleet (more deployments than the limit) from an address it lists as unlimited;
    everyone else on 127.0.0.1 is limited as usual."""
    deployments, cli_installs = 3 * LIMIT, 5
    env = {"IS_TELEMETRY_COLLECTOR__MAX_NEW_UIDS_PER_CLIENT_PER_DAY": str(LIMIT)}
    fleet = ["--deployments", str(deployments), "--cli-installs", str(cli_installs), "--days", "0", "--seed", "4"]
    s = start_stack(tmp_path / "stack", *fleet, env=env)
    try:
        day = datetime.now(UTC).date()
        bodies = LiveFeed(s.collector_url, deployments, cli_installs, 4, threading.Event())._day_bodies(day)
        valid = {r.uid for b in bodies if not isinstance(r := judge(b), Rejected)}
        assert len(valid) > LIMIT
        s.wait_for(
            f"SELECT count(DISTINCT uid) AS n FROM snapshots FINAL WHERE day = '{day}'",
            lambda rows: rows[0]["n"] == len(valid),
        )
        assert rate_limited_today(s) == (0, 0)
        seeds = [f"local-{i}" for i in range(LIMIT + 1)]
        post_from(s, "127.0.0.1", [body_for(x) for x in seeds])
        uids = [uid_for(x) for x in seeds]
        wait_outcome(s, uids[:LIMIT], uids[LIMIT:])
        wait_rate_limited_today(s, 1)
    finally:
        assert s.stop() == 0, s.log()


def test_compose_trusts_the_proxy_alone_and_the_proxy_overwrites_forwarded_for() -> None:
    """In compose the collector believes X-Forwarded-For only from the proxy's fixed address, which lies in the
    network's subnet and outside the range other containers get addresses from; nginx replaces the header with the
    address it saw, so nothing a client writes into it reaches the collector."""
    from ipaddress import ip_address, ip_network

    from is_telemetry.config import load_settings
    from tests.test_compose import COMPOSE, COMPOSE_FILE, compose_config, env_of

    config = compose_config(COMPOSE_FILE)
    collector, proxy = config["services"]["collector"], config["services"]["proxy"]
    trusted = load_settings(
        collector={"trusted_proxies": orjson.loads(env_of(collector)["IS_TELEMETRY_COLLECTOR__TRUSTED_PROXIES"])}
    )
    address = ip_address(proxy["networks"]["default"]["ipv4_address"])
    assert trusted.collector.trusted_proxies == [f"{address}/32"]
    (pool,) = config["networks"]["default"]["ipam"]["config"]
    assert address in ip_network(pool["subnet"]) and address not in ip_network(pool["ip_range"])
    assert int(env_of(collector)["IS_TELEMETRY_COLLECTOR__MAX_NEW_UIDS_PER_CLIENT_PER_DAY"]) == 200
    template = (COMPOSE / "nginx" / "templates" / "default.conf.template").read_text()
    collect = template[template.index("location = /collect") :]
    collect = collect[: collect.index("}\n    location")]
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in collect
    assert "$proxy_add_x_forwarded_for" not in template  # appending would pass a client's own header on
