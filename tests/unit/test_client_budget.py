"""Per-client limits, pure logic: who the client is (X-Forwarded-For only from trusted proxies, all of loopback one
client), the new-UID budget per client and UTC day (bounded memory, day reset, IPv6 per /64, bodies without a UID
counted), the request and byte buckets per client (refill, burst, bounded memory) and how a marked body is rejected
downstream. The same limits through real processes: tests/test_client_limits.py."""

from __future__ import annotations

from ipaddress import ip_address
from types import SimpleNamespace

import orjson
import pytest

from core.config import describe_validation_error, load_settings
from core.envelope import BATCH_FORMAT, HEADER_FORMAT, HEADER_RATE_LIMITED, RATE_LIMITED, Frame, pack
from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from processors.pipeline import RawRecord, process
from processors.validate import Reason
from processors.worker import records_of
from producers.client_limits import (
    ClientLimits,
    NewUidBudget,
    Refusal,
    RequestBudget,
    Throttle,
    Throttled,
    Verdict,
    client_key,
    client_of,
    networks,
)
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
        assert limits.verdict(limits.client("127.0.0.2", []), f"s-{i}".encode(), at) is Verdict.UNLIMITED
        assert limits.verdict(limits.client("2001:db8:5::1", []), f"s-{i}".encode(), at) is Verdict.UNLIMITED
    assert limits.budget.clients == 0
    # the trusted proxy forwards an unlimited address: unlimited; a limited one: counted
    assert limits.verdict(limits.client("127.0.0.1", ["127.0.0.2"]), b"p-0", at) is Verdict.UNLIMITED
    client = limits.client("127.0.0.1", ["198.51.100.1"])
    got = [limits.verdict(client, f"p-{i}".encode(), at) for i in range(3)]
    assert got == [Verdict.ADMITTED, Verdict.ADMITTED, Verdict.OVER_BUDGET]
    assert limits.budget.uids == 2


def test_a_body_without_a_uid_counts_as_a_new_uid_each_time() -> None:
    """A body whose `uid` is missing or not a string (the processors reject it anyway) takes one new UID of its
    client's budget each time: a flood of them cannot go on uncounted."""
    limits = ClientLimits(load_settings(collector={"max_new_uids_per_client_per_day": 3}).collector)
    at = DAY * DAY_MS + 5
    client = limits.client("198.51.100.1", [])
    got = [limits.verdict(client, None, at) for _ in range(4)]
    assert got == [Verdict.ADMITTED] * 3 + [Verdict.OVER_BUDGET]
    assert limits.verdict(client, b"a-real-uid", at) is Verdict.OVER_BUDGET  # the budget is spent
    assert limits.budget.uids == 3
    # the same in the budget itself, and a UID's own bytes never match one of those bodies
    budget = NewUidBudget(per_client=2, max_clients=10, max_uids=100, key=KEY)
    one = key_of("203.0.113.7")
    assert budget.admit(one, None, DAY) is Verdict.ADMITTED
    assert budget.admit(one, b"", DAY) is Verdict.ADMITTED  # an empty string is a UID (bad_uid downstream)
    assert budget.admit(one, None, DAY) is Verdict.OVER_BUDGET
    assert budget.admit(one, b"", DAY) is Verdict.ADMITTED  # a re-send


def test_every_loopback_address_is_one_client_but_the_unlimited_one() -> None:
    """127.0.0.0/8 and ::1 are one client for both budgets (any local process can bind any of them); an address
    listed in unlimited_clients (up's simulator, 127.0.0.2) stays unlimited."""
    assert key_of("127.0.0.1") == key_of("127.0.0.77") == key_of("127.255.255.254") == key_of("::1")
    assert key_of("::ffff:127.3.2.1") == key_of("127.0.0.1")
    assert key_of("127.0.0.1") not in {key_of("128.0.0.1"), key_of("126.255.255.255"), key_of("::2"), client_key(None)}
    settings = load_settings(
        collector={
            "max_new_uids_per_client_per_day": 2,
            "client_request_burst": 3,
            "client_requests_per_s": 0.001,
            "unlimited_clients": ["127.0.0.2"],
        }
    )
    limits = ClientLimits(settings.collector)
    at = DAY * DAY_MS
    a, b = limits.client("127.0.0.1", []), limits.client("127.0.0.77", [])
    assert a == b and not a.unlimited
    assert limits.verdict(a, b"l-0", at) is Verdict.ADMITTED
    assert limits.verdict(b, b"l-1", at) is Verdict.ADMITTED
    assert limits.verdict(limits.client("127.9.9.9", []), b"l-2", at) is Verdict.OVER_BUDGET
    for _ in range(3):
        limits.take_request(a, 100.0)
    with pytest.raises(Throttled) as caught:
        limits.take_request(b, 100.0)
    assert caught.value.cause is Throttle.REQUESTS and caught.value.status == 429
    simulator = limits.client("127.0.0.2", [])
    assert simulator.unlimited and simulator.key == a.key  # unlimited by its own address, not by its key
    for i in range(10):
        limits.take_request(simulator, 100.0)
        limits.take_bytes(simulator, 60_000, 100.0)
        assert limits.verdict(simulator, f"sim-{i}".encode(), at) is Verdict.UNLIMITED


# ------------------------------------------------------------------------------- request and byte buckets


def test_a_client_gets_its_burst_at_once_then_its_rate() -> None:
    budget = RequestBudget(requests_per_s=2, request_burst=5, bytes_per_s=100, byte_burst=1000, max_clients=10)
    one, other = key_of("198.51.100.1"), key_of("198.51.100.2")
    assert [budget.take_request(one, 0.0) for _ in range(5)] == [None] * 5
    assert budget.take_request(one, 0.0) == Refusal(Throttle.REQUESTS, 1)
    assert budget.take_request(one, 0.25) == Refusal(Throttle.REQUESTS, 1)  # half a token: not enough
    assert budget.take_request(one, 0.5) is None  # one token back after 1 / 2 s
    assert budget.take_request(one, 0.5) == Refusal(Throttle.REQUESTS, 1)
    # another client has its own bucket, full
    assert [budget.take_request(other, 0.5) for _ in range(5)] == [None] * 5
    # refilled up to the burst, never beyond, however long the client was away
    assert [budget.take_request(one, 1000.0) for _ in range(6)] == [None] * 5 + [Refusal(Throttle.REQUESTS, 1)]
    # Retry-After: the whole seconds until the next token, at least 1
    slow = RequestBudget(requests_per_s=0.1, request_burst=1, bytes_per_s=100, byte_burst=1000, max_clients=10)
    assert slow.take_request(one, 0.0) is None
    assert slow.take_request(one, 0.0) == Refusal(Throttle.REQUESTS, 10)
    assert slow.take_request(one, 7.5) == Refusal(Throttle.REQUESTS, 3)


def test_body_bytes_are_counted_too() -> None:
    budget = RequestBudget(requests_per_s=100, request_burst=100, bytes_per_s=100, byte_burst=1000, max_clients=10)
    one = key_of("2001:db8:1:2::1")
    assert budget.take_bytes(one, 600, 0.0) is None
    assert budget.take_bytes(one, 600, 0.0) == Refusal(Throttle.BYTES, 2)  # 400 left: 200 more take 2 s
    assert budget.take_bytes(one, 400, 0.0) is None  # a smaller body still fits
    assert budget.take_bytes(one, 1, 0.0) == Refusal(Throttle.BYTES, 1)
    assert budget.take_bytes(key_of("2001:db8:1:2::ffff"), 1, 0.0) == Refusal(Throttle.BYTES, 1)  # one /64
    assert budget.take_bytes(one, 500, 5.0) is None
    # a refused body takes nothing: the bucket is as it was
    assert budget.take_bytes(one, 1000, 5.0) == Refusal(Throttle.BYTES, 10)
    assert budget.take_bytes(one, 0, 5.0) is None


def test_bucket_memory_is_bounded_and_full_buckets_are_forgotten() -> None:
    """At most max_clients buckets; a bucket untouched long enough to be full again is forgotten (it holds nothing
    a new one would not); while every bucket is in use, a client without one is refused (fail closed) until the
    oldest is full again."""
    budget = RequestBudget(requests_per_s=1, request_burst=10, bytes_per_s=100, byte_burst=2000, max_clients=3)
    assert budget.idle_s == 20  # the longer refill: 2000 bytes at 100 a second
    for i in range(3):
        assert budget.take_request(key_of(f"192.0.2.{i}"), float(i)) is None
    assert budget.clients == 3
    late = key_of("192.0.2.100")
    assert budget.take_request(late, 5.0) == Refusal(Throttle.TABLE_FULL, 15)  # 192.0.2.0 is full again at 20
    assert budget.take_bytes(late, 1, 5.0) == Refusal(Throttle.TABLE_FULL, 15)
    assert budget.take_request(key_of("192.0.2.0"), 6.0) is None  # a client with a bucket goes on
    assert budget.take_request(late, 20.5) == Refusal(Throttle.TABLE_FULL, 1)  # 192.0.2.1 (used at 1): full at 21
    # from 22 on, two buckets are full again and forgotten: the late one gets a bucket
    assert budget.take_request(late, 22.0) is None
    assert budget.clients == 2  # 192.0.2.0 (used at 6) and the late one
    # a flood of clients never holds more than max_clients buckets
    for i in range(10_000):
        budget.take_request(key_of(f"10.{i >> 8 & 255}.{i & 255}.1"), 30.0 + i / 1000)
    assert budget.clients == 3
    # and a forgotten client starts again from a full bucket
    assert [budget.take_request(key_of("192.0.2.0"), 100.0) for _ in range(11)][-2:] == [
        None,
        Refusal(Throttle.REQUESTS, 1),
    ]


def test_throttled_is_a_429_with_retry_after_naming_the_settings() -> None:
    settings = load_settings(
        collector={"client_request_burst": 1, "client_body_bytes_burst": 65536, "client_body_bytes_per_s": 1000}
    )
    limits = ClientLimits(settings.collector)
    client = limits.client("198.51.100.1", [])
    limits.take_request(client, 0.0)
    with pytest.raises(Throttled) as caught:
        limits.take_request(client, 0.0)
    t = caught.value
    assert (t.status, t.code, t.headers) == (429, "too_many_requests", {"Retry-After": "1"})
    assert "collector.client_request_burst" in t.message and "collector.client_requests_per_s" in t.message
    limits.take_bytes(client, 65536, 0.0)
    with pytest.raises(Throttled) as caught:
        limits.take_bytes(client, 2500, 0.0)
    t = caught.value
    assert t.cause is Throttle.BYTES and t.headers == {"Retry-After": "3"}
    assert "collector.client_body_bytes_burst" in t.message


def test_a_byte_bucket_smaller_than_the_largest_body_is_refused() -> None:
    with pytest.raises(Exception) as caught:
        load_settings(collector={"max_body_bytes": 100_000, "client_body_bytes_burst": 65536})
    message = describe_validation_error(caught.value)  # type: ignore[arg-type]
    assert "client_body_bytes_burst" in message and "at least 100000" in message, message


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
