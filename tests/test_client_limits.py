"""Per-client limits against a running `is-telemetry up` (real HTTP on 127.0.0.1, real broker, worker, chDB).

The attack of issue 22 ("fleet poisoning"): one address invents thousands of UIDs and each one counts as a
deployment. Here the collector caps new UIDs per client address and UTC day (20 in these stacks, set through the
environment); the excess is published marked, rejected by the processors as `rate_limited`, and shows in
`rejections`, `rejected_daily` and the roll-up's `rejected_by_reason`.

The floods of the security test (docs/reliability.md): one client re-sending one admitted UID with 63 KB bodies,
or sending bodies whose `uid` is not a string, as fast as a few keep-alive connections go. Here every request to
/collect takes one of its client's request tokens and its body's bytes from its byte bucket (60 requests and
256 KiB at once in this module's stack, refilled so slowly that nothing comes back during the tests); the excess
is answered 429 and never reaches Kafka.

All of loopback (127.0.0.0/8) is one client, so every test here but one names its client through X-Forwarded-For
from the stack's trusted proxy, 127.0.0.1; `test_every_loopback_address_is_one_client` alone spends loopback's own
budgets. The pure logic: tests/unit/test_client_budget.py.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest

from producers.simulator import LiveFeed
from producers.truth_rules import Rejected, judge
from tests.processes import Body, consume_bodies
from tests.samples import SAMPLES
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


LIMIT = 20  # new UIDs per client and day
REQUESTS = 60  # requests per client at once
BODY_BYTES = 4 * 64 * 1024  # body bytes per client at once: four bodies of the largest size
PROXY = "127.0.0.1"  # the trusted proxy of the first stack
LIMITS_ENV = {
    "IS_TELEMETRY_COLLECTOR__MAX_NEW_UIDS_PER_CLIENT_PER_DAY": str(LIMIT),
    "IS_TELEMETRY_COLLECTOR__TRUSTED_PROXIES": f'["{PROXY}"]',
    "IS_TELEMETRY_COLLECTOR__CLIENT_REQUEST_BURST": str(REQUESTS),
    "IS_TELEMETRY_COLLECTOR__CLIENT_REQUESTS_PER_S": "0.001",  # one more request per 1,000 s
    "IS_TELEMETRY_COLLECTOR__CLIENT_BODY_BYTES_BURST": str(BODY_BYTES),
    "IS_TELEMETRY_COLLECTOR__CLIENT_BODY_BYTES_PER_S": "1",
}
JSON = {"content-type": "application/json", "user-agent": "TheThingsStack/3.32.1 (linux/amd64)"}
RAW_TOPIC = "tts-telemetry-raw"


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


def post_statuses(
    stack: RunningStack, source: str, bodies: list[bytes], forwarded_for: str | None = None
) -> list[httpx.Response]:
    """POST each body in order from the loopback address `source` on one kept-alive connection; every answer."""
    headers = dict(JSON)
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as client:
        return [client.post(stack.collector_url, content=body, headers=headers) for body in bodies]


def flood(stack: RunningStack, client: str, bodies: list[bytes], connections: int = 6) -> list[httpx.Response]:
    """The bodies from `client` (named by the trusted proxy), over `connections` kept-alive connections at once."""
    shares = [bodies[i::connections] for i in range(connections)]
    with ThreadPoolExecutor(connections) as pool:
        answers = list(pool.map(lambda share: post_statuses(stack, PROXY, share, forwarded_for=client), shares))
    return [r for part in answers for r in part]


def assert_throttled(responses: list[httpx.Response]) -> None:
    for r in responses:
        assert r.status_code == 429, r.text
        assert r.json()["error"] == "too_many_requests" and int(r.headers["retry-after"]) >= 1, r.text


def raw_bodies(stack: RunningStack, match: bytes, expected: int) -> list[Body]:
    """The raw topic's bodies that contain `match`: read until `expected` are there, then for 3 s more, so that
    one more would be seen."""
    bootstrap = f"127.0.0.1:{stack.broker_port}"
    count = lambda bodies: sum(match in b.value for b in bodies)  # noqa: E731
    consume_bodies(bootstrap, RAW_TOPIC, lambda bodies: count(bodies) >= expected, timeout_s=60)
    return [
        b for b in consume_bodies(bootstrap, RAW_TOPIC, lambda bodies: count(bodies) > expected, 3) if match in b.value
    ]


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
    post_from(stack, PROXY, bodies, forwarded_for="192.0.2.11")
    # re-sends of an admitted UID are not new: a changed body of the first one replaces its snapshot
    changed = body_for(seeds[0], gateways=7)
    post_from(stack, PROXY, [changed, body_for(seeds[1])], forwarded_for="192.0.2.11")
    uids = [uid_for(s) for s in seeds]
    wait_outcome(stack, uids[:LIMIT], uids[LIMIT:])
    # the excess is kept, byte for byte, with its reason; and counted in the day's figures
    assert limited_bodies(stack, uids[LIMIT:]) == {uid_for(s): body_for(s).decode() for s in seeds[LIMIT:]}
    wait_rate_limited_today(stack, before + 10)
    # the changed body replaces the first one's snapshot (the UID was stored already: wait for the replacement)
    deadline = time.monotonic() + 60
    while (
        body := stack.sql(f"SELECT body FROM snapshots_latest WHERE uid = '{uids[0]}'")[0]["body"]
    ) != changed.decode():
        assert time.monotonic() < deadline, f"the changed body never replaced the first: {body[:200]}"
        time.sleep(0.3)
    deployments = stack.sql(f"SELECT deployments FROM fleet_daily WHERE day = '{today()}'")[0]["deployments"]
    assert deployments == (fleet_before[0]["deployments"] if fleet_before else 0) + LIMIT
    # and in the dashboard's data-quality figures: the rejected messages per reason
    panel = httpx.get(stack.api_url + "/api/rejected", params={"from": today(), "to": today()}, timeout=30).json()
    assert "rate_limited" in panel["reasons"]
    by_reason = {r["reason"]: r["messages"] for r in panel["tables"]["by_reason"]["rows"]}
    assert by_reason["rate_limited"] == before + 10


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
    admitted = [uid_for(s) for s in first[:LIMIT] + second]
    limited = [uid_for(s) for s in first[LIMIT:] + forged]
    wait_outcome(stack, admitted, limited)
    wait_rate_limited_today(stack, before + 8)


def test_every_loopback_address_is_one_client(stack: RunningStack) -> None:
    """Any local process can bind any of 127.0.0.0/8: all of it is one client, for the new-UID budget and for the
    request budget; X-Forwarded-For from an address that is not a trusted proxy is ignored; the trusted proxy's
    own requests (no header) are loopback's too. The only test of the module that spends loopback's budgets."""
    before = rate_limited_today(stack)[0]
    first = [f"loopback-a-{i}" for i in range(LIMIT - 5)]
    with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.12"), timeout=15) as client:
        for i, seed in enumerate(first):  # a new forwarded address with every request: the peer is still counted
            r = client.post(
                stack.collector_url, content=body_for(seed), headers={**JSON, "x-forwarded-for": f"198.51.100.{i}"}
            )
            assert r.status_code == 202
    second = [f"loopback-b-{i}" for i in range(10)]
    post_from(stack, "127.0.0.13", [body_for(s) for s in second])  # another address, the same budget: 5 left
    own = ["proxy-itself"]
    post_from(stack, PROXY, [body_for(s) for s in own])
    uids = [uid_for(s) for s in first + second + own]
    wait_outcome(stack, uids[:LIMIT], uids[LIMIT:])
    wait_rate_limited_today(stack, before + 6)
    # the requests: 26 made so far from loopback; a third address gets what is left of the 60, then 429
    resend = body_for(first[0])
    got = post_statuses(stack, "127.0.0.14", [resend] * (REQUESTS - 26 + 5))
    assert [r.status_code for r in got] == [202] * (REQUESTS - 26) + [429] * 5
    assert_throttled(got[REQUESTS - 26 :])
    for source in ("127.0.0.15", "127.255.0.1", PROXY):  # and every other loopback address is out of requests too
        assert_throttled(post_statuses(stack, source, [resend]))
    # a client named by the proxy is served meanwhile
    post_from(stack, PROXY, [body_for("loopback-c")], forwarded_for="192.0.2.14")
    wait_outcome(stack, [uid_for("loopback-c")], [])


def test_a_re_send_flood_of_one_uid_is_cut_to_its_clients_byte_budget(stack: RunningStack) -> None:
    """bigbody_flood.py of the security test: six kept-alive connections re-send one admitted UID with 63 KB bodies
    (re-sends take no new UID). The client's byte bucket (256 KiB) lets four through; the rest get 429 and are not
    in Kafka. Another client sends meanwhile and is served as usual."""
    attacker, other = "198.51.100.70", "198.51.100.71"
    seed = "bigbody-flood"
    first = body_for(seed)
    post_from(stack, PROXY, [first], forwarded_for=attacker)

    def big(i: int) -> bytes:
        message = orjson.loads(first)
        message["pad"] = f"{i:04d}-" + "p" * 63_000
        return orjson.dumps(message)

    big_bodies = [big(i) for i in range(36)]
    fits = (BODY_BYTES - len(first)) // len(big_bodies[0])
    assert fits == 4 and all(len(b) == len(big_bodies[0]) <= 64 * 1024 for b in big_bodies)
    others = [f"bigbody-bystander-{i}" for i in range(10)]
    with ThreadPoolExecutor(1) as side:  # post_from asserts that each of the other client's bodies gets 202
        bystander = side.submit(post_from, stack, PROXY, [body_for(s) for s in others], other)
        answers = flood(stack, attacker, big_bodies)
        bystander.result()
    accepted = [r for r in answers if r.status_code == 202]
    assert len(accepted) == fits, Counter(r.status_code for r in answers)
    assert_throttled([r for r in answers if r.status_code != 202])
    # Kafka holds the first body and the four accepted big ones, nothing else of this UID
    stored = raw_bodies(stack, uid_for(seed).encode(), 1 + fits)
    assert len(stored) == 1 + fits
    assert sum(b.value == first for b in stored) == 1 and all(b.value in big_bodies for b in stored if b.value != first)
    wait_outcome(stack, [uid_for(seed), *(uid_for(s) for s in others)], [])


def test_a_flood_of_bodies_without_a_uid_is_cut_to_its_clients_request_budget(stack: RunningStack) -> None:
    """reject_flood.py of the security test: bodies `{"uid":1,"junk":"<random text>"}`, which the processors reject
    and `rejections` keeps. Each takes a request (60 per client here) and counts as a new UID (20 here): of 100,
    60 are stored, the first 20 rejected as `wrong_type`, the next 40 as `rate_limited`; the other 40 get 429 and
    reach neither Kafka nor ClickHouse. Another client is served meanwhile."""
    attacker, other = "198.51.100.72", "198.51.100.73"
    tag = f"uidless-{os.getpid()}"
    bodies = [
        b'{"flood":"%s-%03d","uid":1,"junk":"%s"}' % (tag.encode(), i, base64.b64encode(os.urandom(2000)))
        for i in range(100)
    ]
    assert REQUESTS * max(map(len, bodies)) < BODY_BYTES  # the requests run out first, not the bytes
    others = [f"uidless-bystander-{i}" for i in range(10)]
    with ThreadPoolExecutor(1) as side:
        bystander = side.submit(post_from, stack, PROXY, [body_for(s) for s in others], other)
        answers = flood(stack, attacker, bodies, connections=4)
        bystander.result()
    assert Counter(r.status_code for r in answers) == {202: REQUESTS, 429: 100 - REQUESTS}
    assert_throttled([r for r in answers if r.status_code != 202])
    assert len(raw_bodies(stack, tag.encode(), REQUESTS)) == REQUESTS
    query = f"SELECT reason, count() AS n FROM rejections FINAL WHERE body LIKE '%{tag}%' GROUP BY reason"
    expected = {"wrong_type": LIMIT, "rate_limited": REQUESTS - LIMIT}
    stack.wait_for(query, lambda rows: {r["reason"]: r["n"] for r in rows} == expected)
    wait_outcome(stack, [uid_for(s) for s in others], [])


def test_the_simulated_fleet_of_up_is_not_limited_but_other_local_clients_are(tmp_path: Path) -> None:
    """`up` sends its simulated fleet (more deployments than the limit) from an address it lists as unlimited;
    everyone else on loopback is one client, limited as usual."""
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
        post_from(s, "127.0.0.1", [body_for(x) for x in seeds[:10]])
        post_from(s, "127.0.0.77", [body_for(x) for x in seeds[10:]])  # another local address: the same client
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

    from core.config import load_settings
    from tests.compose_files import COMPOSE, COMPOSE_FILE, compose_config, env_of

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
