"""Per-client limits, pure logic: who the client is (X-Forwarded-For only from trusted proxies), the new-UID budget
per client and UTC day (bounded memory, day reset, IPv6 per /64), and how a marked body is rejected downstream.
The same limits through real processes: tests/test_client_limits.py."""

from __future__ import annotations

from ipaddress import ip_address
from types import SimpleNamespace

import orjson
import pytest

from is_telemetry.config import describe_validation_error, load_settings
from is_telemetry.envelope import BATCH_FORMAT, HEADER_FORMAT, HEADER_RATE_LIMITED, RATE_LIMITED, Frame, pack
from is_telemetry.kafka import HEADER_RECEIVED_AT
from is_telemetry.partitioning import partition_of
from processors.pipeline import RawRecord, process
from processors.validate import Reason
from processors.worker import records_of
from producers.client_limits import ClientLimits, NewUidBudget, Verdict, client_key, client_of, networks
from producers.truth_rules import REASONS, Rejected, judge
from tests.samples import SAMPLES

DAY = 20_500  # days since the epoch
DAY_MS = 86_400_000
KEY = b"0123456789abcdef"


def key_of(address: str) -> int:
    return client_key(ip_address(address))


def uids(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


# ------------------------------------------------------------------------------------------ the budget


def test_new_uids_beyond_the_budget_are_limited_and_re_sends_are_not() -> None:
    budget = NewUidBudget(per_client=3, max_clients=10, max_uids=100, key=KEY)
    client = key_of("203.0.113.7")
    got = [budget.admit(client, uid, DAY) for uid in uids("u", 5)]
    assert got == [Verdict.ADMITTED] * 3 + [Verdict.OVER_BUDGET] * 2
    assert budget.admit(client, b"u-0", DAY) is Verdict.ADMITTED  # a re-send of an admitted UID
    assert budget.admit(client, b"u-2", DAY) is Verdict.ADMITTED
    assert budget.admit(client, b"u-4", DAY) is Verdict.OVER_BUDGET  # a limited UID stays limited
    # another client has a budget of its own, for the same UIDs too
    assert budget.admit(key_of("203.0.113.8"), b"u-4", DAY) is Verdict.ADMITTED
    assert (budget.clients, budget.uids) == (2, 4)


def test_memory_is_bounded_per_client_in_clients_and_in_uids() -> None:
    budget = NewUidBudget(per_client=5, max_clients=3, max_uids=12, key=KEY)
    one = key_of("198.51.100.1")
    for uid in uids("flood", 10_000):
        budget.admit(one, uid, DAY)
    assert (budget.clients, budget.uids) == (1, 5)  # a client's memory stops at its budget
    for i in (2, 3):
        assert budget.admit(key_of(f"198.51.100.{i}"), b"x", DAY) is Verdict.ADMITTED
    # the table holds 3 clients: a fourth is not remembered, and limited (fail closed) until the day ends
    assert budget.admit(key_of("198.51.100.4"), b"x", DAY) is Verdict.TABLE_FULL
    assert budget.clients == 3
    # the UIDs are capped overall too: 5 + 1 + 1 remembered, 4 more to the second client's budget, one more fits
    two = key_of("198.51.100.2")
    assert [budget.admit(two, uid, DAY) for uid in uids("more", 5)] == [Verdict.ADMITTED] * 4 + [Verdict.OVER_BUDGET]
    assert budget.uids == 11
    assert budget.admit(key_of("198.51.100.3"), b"y", DAY) is Verdict.ADMITTED
    assert budget.admit(key_of("198.51.100.3"), b"z", DAY) is Verdict.TABLE_FULL
    assert budget.uids == 12
    # what is remembered is still admitted: re-sends go on
    assert budget.admit(one, b"flood-0", DAY) is Verdict.ADMITTED
    assert budget.admit(two, b"more-3", DAY) is Verdict.ADMITTED


def test_a_new_utc_day_starts_every_budget_afresh() -> None:
    budget = NewUidBudget(per_client=2, max_clients=2, max_uids=4, key=KEY)
    client = key_of("192.0.2.1")
    assert [budget.admit(client, uid, DAY) for uid in uids("d", 3)] == [Verdict.ADMITTED] * 2 + [Verdict.OVER_BUDGET]
    budget.admit(key_of("192.0.2.2"), b"x", DAY)
    assert budget.admit(key_of("192.0.2.3"), b"x", DAY) is Verdict.TABLE_FULL
    # a clock stepped back a day does not reset anything
    assert budget.admit(client, b"d-2", DAY - 1) is Verdict.OVER_BUDGET
    assert [budget.admit(client, uid, DAY + 1) for uid in uids("d", 3)] == [Verdict.ADMITTED] * 2 + [
        Verdict.OVER_BUDGET
    ]
    assert (budget.clients, budget.uids) == (1, 2)
    assert budget.admit(key_of("192.0.2.3"), b"x", DAY + 1) is Verdict.ADMITTED


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert key_of("2001:db8:1:2::1") == key_of("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert key_of("2001:db8:1:2::1") != key_of("2001:db8:1:3::1")
    assert key_of("::ffff:203.0.113.7") == key_of("203.0.113.7")
    assert key_of("203.0.113.7") != key_of("203.0.113.6")
    # the IPv4 and IPv6 spaces do not overlap: ::cb00:7107/64 is not 203.0.113.7
    assert key_of("::203.0.113.7") != key_of("203.0.113.7") and key_of("::") != key_of("0.0.0.0")
    budget = NewUidBudget(per_client=2, max_clients=10, max_uids=100, key=KEY)
    got = [budget.admit(key_of(f"2001:db8:1:2::{i:x}"), f"v6-{i}".encode(), DAY) for i in range(1, 4)]
    assert got == [Verdict.ADMITTED] * 2 + [Verdict.OVER_BUDGET]  # three addresses of one /64: one budget


# ----------------------------------------------------------------------------------------- the client


TRUSTED = networks(["10.0.0.0/8", "172.30.64.2"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.7", [], "203.0.113.7"),
        ("203.0.113.7", ["198.51.100.1"], "203.0.113.7"),  # not a trusted proxy: its header is ignored
        ("172.30.64.2", [], "172.30.64.2"),
        ("172.30.64.2", ["198.51.100.1"], "198.51.100.1"),
        ("172.30.64.2", ["1.2.3.4, 198.51.100.1"], "198.51.100.1"),  # what the client wrote is left of the hop
        ("172.30.64.2", ["1.2.3.4", "198.51.100.1"], "198.51.100.1"),  # two header lines are one list
        ("10.0.0.2", ["198.51.100.1, 10.0.0.3"], "198.51.100.1"),  # a chain of trusted proxies
        ("10.0.0.2", ["10.0.0.4,10.0.0.3"], "10.0.0.4"),  # all trusted: the left-most
        ("172.30.64.2", ["not-an-address"], "172.30.64.2"),  # garbage: the proxy it came from
        ("172.30.64.2", ["198.51.100.1, 198.51.100.2:443"], "172.30.64.2"),
        ("172.30.64.2", [" 2001:db8::1 "], "2001:db8::1"),
        ("172.30.64.2", ["::ffff:198.51.100.9"], "198.51.100.9"),
        ("::ffff:172.30.64.2", ["198.51.100.1"], "198.51.100.1"),  # a dual-stack socket's peer
        ("172.30.64.2", [""], "172.30.64.2"),
    ],
)
def test_forwarded_for_counts_only_from_trusted_proxies(peer: str, forwarded: list[str], client: str) -> None:
    assert client_of(peer, forwarded, TRUSTED) == ip_address(client)


def test_an_unknown_peer_is_one_client() -> None:
    assert client_of(None, ["198.51.100.1"], TRUSTED) is None
    assert client_of("not-an-address", [], TRUSTED) is None
    assert client_key(None) == client_key(None)


def test_a_huge_forwarded_for_header_is_read_from_the_right_only() -> None:
    header = ", ".join(["1.2.3.4"] * 2000 + ["198.51.100.1"])
    assert client_of("172.30.64.2", [header], TRUSTED) == ip_address("198.51.100.1")


def test_client_limits_from_settings_trust_unlimited_and_count_per_client() -> None:
    settings = load_settings(
        collector={
            "max_new_uids_per_client_per_day": 2,
            "trusted_proxies": ["127.0.0.1"],
            "unlimited_clients": ["127.0.0.2", "2001:db8::/32"],
        }
    )
    limits = ClientLimits(settings.collector)
    at = DAY * DAY_MS + 5
    for i in range(5):  # unlimited clients are not counted (nor remembered)
        assert limits.verdict("127.0.0.2", [], f"s-{i}".encode(), at) is Verdict.UNLIMITED
        assert limits.verdict("2001:db8:5::1", [], f"s-{i}".encode(), at) is Verdict.UNLIMITED
    assert limits.budget.clients == 0
    # the trusted proxy forwards an unlimited address: unlimited; a limited one: counted
    assert limits.verdict("127.0.0.1", ["127.0.0.2"], b"p-0", at) is Verdict.UNLIMITED
    got = [limits.verdict("127.0.0.1", ["198.51.100.1"], f"p-{i}".encode(), at) for i in range(3)]
    assert got == [Verdict.ADMITTED, Verdict.ADMITTED, Verdict.OVER_BUDGET]
    # a body without a UID is not a new UID: the processors reject it with its own reason
    assert limits.verdict("198.51.100.1", [], None, at) is Verdict.ADMITTED
    assert limits.budget.uids == 2


@pytest.mark.parametrize("key", ["trusted_proxies", "unlimited_clients"])
def test_addresses_in_the_settings_must_be_addresses_or_networks(key: str) -> None:
    with pytest.raises(Exception) as caught:
        load_settings(collector={key: ["10.0.0.0/8", "proxy.example"]})
    message = describe_validation_error(caught.value)  # type: ignore[arg-type]
    assert f"collector.{key}" in message and "'proxy.example'" in message and "172.30.64.2" in message, message
    ok = load_settings(collector={key: ["10.1.2.3/8", "::1"]})
    assert getattr(ok.collector, key) == ["10.0.0.0/8", "::1/128"]  # canonical: host bits cleared


# ----------------------------------------------------------------------------- the mark, downstream


def _body(uid_seed: str) -> bytes:
    import base64
    import hashlib

    message = orjson.loads(SAMPLES["is-3.32.json"])
    message["uid"] = base64.b64encode(hashlib.sha512(uid_seed.encode()).digest()).decode()
    return orjson.dumps(message)


def test_a_marked_body_is_rejected_as_rate_limited_with_its_body_kept() -> None:
    at = DAY * DAY_MS + 1000
    bodies = [_body("kept"), _body("limited")]
    keys = [orjson.loads(b)["uid"].encode() for b in bodies]
    records = [
        RawRecord("raw", partition_of(k, 8), i, at, {HEADER_RECEIVED_AT: str(at).encode()}, b, k)
        for i, (k, b) in enumerate(zip(keys, bodies))
    ]
    records[1].headers[HEADER_RATE_LIMITED] = RATE_LIMITED
    out = process(records, 8)
    assert [s.uid for s in out.snapshots] == [keys[0].decode()]
    assert dict(out.rejected) == {"rate_limited": 1}
    (row,) = out.rejections
    assert row.reason == Reason.RATE_LIMITED == "rate_limited" and row.body == bodies[1].decode()
    (dead,) = out.dead_letters
    assert dead.value == bodies[1] and dict(dead.headers)["reason"] == b"rate_limited"
    # the oracle knows the reason: a marked body is rejected whatever it holds
    assert judge(bodies[1], rate_limited=True) == Rejected("rate_limited", "client")
    assert "rate_limited" in REASONS
    # a mark with another value is no mark (an allowlist of one value)
    records[1].headers[HEADER_RATE_LIMITED] = b"0"
    assert len(process(records, 8).snapshots) == 2


def test_a_marked_batch_record_marks_every_body_in_it() -> None:
    at = DAY * DAY_MS
    frames = [Frame(at, b"TheThingsStack/3.32.1", _body(f"batched-{i}")) for i in range(3)]

    def event(headers: list[tuple[str, bytes]]) -> SimpleNamespace:
        message = SimpleNamespace(
            topic="raw", partition=0, offset=7, key=None, value=pack(frames), headers=headers, timestamp=at / 1000
        )
        return SimpleNamespace(message=message, value=message.value)

    marked = records_of(event([(HEADER_FORMAT, BATCH_FORMAT), (HEADER_RATE_LIMITED, RATE_LIMITED)]))
    assert len(marked) == 3 and all(r.headers.get(HEADER_RATE_LIMITED) == RATE_LIMITED for r in marked)
    assert dict(process(marked, 8).rejected) == {"rate_limited": 3}
    plain = records_of(event([(HEADER_FORMAT, BATCH_FORMAT)]))
    assert not any(HEADER_RATE_LIMITED in r.headers for r in plain)
    assert "rate_limited" not in process(plain, 8).rejected
