"""What one client may do at the collector: who the client of a request is, how many requests and body bytes it may
send (token buckets), and how many new UIDs it may send per UTC day. See docs/collector.md, "Per-client limits".

    client_of(peer, forwarded_for, trusted_proxies) -> address | None   # X-Forwarded-For only from trusted proxies
    client_key(address) -> int            # an IPv4 address, an IPv6 /64, all of loopback, or "unknown"
    RequestBudget(...).take_request(client, now) / .take_bytes(client, size, now) -> Refusal | None
    NewUidBudget(per_client, max_clients, max_uids).admit(client, uid, day) -> Verdict
    ClientLimits(settings.collector): .client(peer, forwarded_for) -> Client; .take_request(client) and
        .take_bytes(client, size) raise Throttled (429); .verdict(client, uid, received_at_ms) -> Verdict

Two kinds of limit, two answers. A request past its client's request or byte bucket is flood: it is answered 429
with Retry-After and not stored. A new UID past its client's daily budget is answered 202 like any other body and
published marked (core/envelope.py); the processors reject it as `rate_limited`.

Memory is bounded. Buckets: at most `max_request_clients`, in the order they were last used; a bucket untouched
for as long as an empty one takes to fill is forgotten (a new one would be the same); while all are in use a client
without one is refused (fail closed). New UIDs: a client's remembered UIDs stop at its budget, at most
`max_clients` clients and `max_uids` UIDs in all are remembered; past either cap a UID not remembered is limited
(fail closed) until the UTC day ends. UIDs are remembered as 8-byte keyed hashes (a random key per process, so no
client can aim collisions) in one sorted array per client.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import secrets
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from core.config import CollectorSettings
from core.errors import RequestRefused

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

DAY_MS = 86_400_000
IPV6_PREFIX = 64  # an IPv6 client is its /64: one subscriber's (or one server's) usual allocation
_V6_TAG = 1 << 64  # IPv6 /64 keys sit above every IPv4 key
_UNKNOWN = -1  # a peer without an IP address (a Unix socket): all such requests are one client
_LOOPBACK = -2  # 127.0.0.0/8 and ::1: any local process can bind any of them, so they are one client
_NO_UID = b"\xff"  # prefixes the stand-in UID of a body without one: never the UTF-8 of a string, so never a UID


class Verdict(StrEnum):
    ADMITTED = "admitted"  # a new UID within the budget (a body without a UID is one), or a re-send of a remembered one
    UNLIMITED = "unlimited"  # the client is in collector.unlimited_clients
    OVER_BUDGET = "over_budget"  # a new UID past the client's budget for the day
    TABLE_FULL = "table_full"  # a new UID that cannot be remembered: the day's memory is full

    @property
    def limited(self) -> bool:
        return self is Verdict.OVER_BUDGET or self is Verdict.TABLE_FULL


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Networks of configured addresses (already checked by core.config.check_networks)."""
    return tuple(ip_network(item, strict=False) for item in items)


def _unmapped(address: Address) -> Address:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket's IPv4 peer, or such a hop
    return address


def _address(text: str) -> Address | None:
    try:
        return _unmapped(ip_address(text.strip()))
    except ValueError:
        return None


def _within(address: Address, nets: Sequence[Network]) -> bool:
    return any(address in net for net in nets)


def client_of(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> Address | None:
    """The client of a request: its socket peer; when the peer is a trusted proxy, the right-most hop of
    X-Forwarded-For (all its header lines, in order) that is not a trusted proxy itself. What is left of that hop was
    written by the client and is never read. A hop that is not a bare IP address ends the walk at the proxy that
    passed it on. None: the peer has no IP address."""
    client = _address(peer) if peer else None
    if client is None or not trusted or not forwarded_for or not _within(client, trusted):
        return client
    hops = ",".join(forwarded_for).split(",")
    for hop in reversed(hops):
        if not _within(client, trusted):
            break
        address = _address(hop)
        if address is None:
            break
        client = address
    return client


def client_key(address: Address | None) -> int:
    """The unit a budget is kept for: an IPv4 address; an IPv6 address's /64 (an attacker gets a /64 for free, and a
    budget per address would be 2^64 budgets); one key for all of loopback (127.0.0.0/8 and ::1: 16 million
    addresses any local process can bind); one key for peers without an address."""
    if address is None:
        return _UNKNOWN
    address = _unmapped(address)
    if address.is_loopback:
        return _LOOPBACK
    if isinstance(address, IPv4Address):
        return int(address)
    return _V6_TAG | (int(address) >> (128 - IPV6_PREFIX))


class Throttle(StrEnum):
    """Why a request was refused (429): the cause label of collector_throttled_total."""

    REQUESTS = "requests"  # the client's request bucket is empty
    BYTES = "bytes"  # the client's byte bucket holds less than the body
    TABLE_FULL = "table_full"  # the client has no bucket and there is no room for one


@dataclass(frozen=True, slots=True)
class Refusal:
    cause: Throttle
    retry_after_s: int  # whole seconds until the request could succeed, at least 1


def _seconds(s: float) -> int:
    return max(1, math.ceil(s))


class _Bucket:
    __slots__ = ("at", "bytes", "requests")

    def __init__(self, requests: float, bytes_: float, at: float) -> None:
        self.requests, self.bytes, self.at = requests, bytes_, at


class RequestBudget:
    """Two token buckets per client: requests, and body bytes. A bucket holds at most its burst and refills at its
    rate; a request takes one request token, a body its size in bytes (all or nothing)."""

    def __init__(
        self, requests_per_s: float, request_burst: int, bytes_per_s: float, byte_burst: int, max_clients: int
    ) -> None:
        self.requests_per_s, self.request_burst = requests_per_s, request_burst
        self.bytes_per_s, self.byte_burst = bytes_per_s, byte_burst
        self.max_clients = max_clients
        self.idle_s = max(request_burst / requests_per_s, byte_burst / bytes_per_s)  # empty to full, both buckets
        self._buckets: OrderedDict[int, _Bucket] = OrderedDict()  # least recently used first

    @property
    def clients(self) -> int:
        return len(self._buckets)

    def _bucket(self, client: int, now: float) -> _Bucket | Refusal:
        buckets = self._buckets
        while buckets and next(iter(buckets.values())).at <= now - self.idle_s:
            buckets.popitem(last=False)  # unused for idle_s: full again, as a new one would be
        b = buckets.get(client)
        if b is None:
            if len(buckets) >= self.max_clients:  # until the least recently used one is full again
                oldest = next(iter(buckets.values()))
                return Refusal(Throttle.TABLE_FULL, _seconds(oldest.at + self.idle_s - now))
            b = buckets[client] = _Bucket(self.request_burst, self.byte_burst, now)
            return b
        elapsed = now - b.at
        if elapsed > 0:
            b.requests = min(self.request_burst, b.requests + elapsed * self.requests_per_s)
            b.bytes = min(self.byte_burst, b.bytes + elapsed * self.bytes_per_s)
            b.at = now
        buckets.move_to_end(client)
        return b

    def take_request(self, client: int, now: float) -> Refusal | None:
        """None: the request may go on (one token taken); else why not and for how long."""
        b = self._bucket(client, now)
        if isinstance(b, Refusal):
            return b
        if b.requests >= 1:
            b.requests -= 1
            return None
        return Refusal(Throttle.REQUESTS, _seconds((1 - b.requests) / self.requests_per_s))

    def take_bytes(self, client: int, size: int, now: float) -> Refusal | None:
        """None: a body of `size` bytes may go on (its bytes taken); else why not and for how long."""
        b = self._bucket(client, now)
        if isinstance(b, Refusal):
            return b
        if b.bytes >= size:
            b.bytes -= size
            return None
        return Refusal(Throttle.BYTES, _seconds((size - b.bytes) / self.bytes_per_s))


class Throttled(RequestRefused):
    """A request past its client's request or byte budget: 429 with Retry-After; nothing is stored."""

    status, code = 429, "too_many_requests"

    def __init__(self, refusal: Refusal, message: str) -> None:
        super().__init__(
            f"{message}; nothing was stored: retry after {refusal.retry_after_s} s",
            headers={"Retry-After": str(refusal.retry_after_s)},
        )
        self.cause = refusal.cause


class NewUidBudget:
    """New UIDs per client and UTC day. A UID a client already sent today (and was admitted) is not new."""

    def __init__(self, per_client: int, max_clients: int, max_uids: int, key: bytes | None = None) -> None:
        self.per_client, self.max_clients, self.max_uids = per_client, max_clients, max_uids
        self._key = key if key is not None else secrets.token_bytes(16)
        self._day = -1
        self._seen: dict[int, array[int]] = {}  # client key -> sorted UID hashes
        self.uids = 0
        self._no_uid = itertools.count()  # numbers the stand-in UIDs of bodies without one

    @property
    def clients(self) -> int:
        return len(self._seen)

    def _hash(self, uid: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(uid, digest_size=8, key=self._key).digest(), "little")

    def admit(self, client: int, uid: bytes | None, day: int) -> Verdict:
        """`day`: days since the epoch (UTC) of the request. A later day forgets everything; an earlier one (a clock
        stepped back) counts as the current day. `uid` None: a body without a (string) UID, a new UID every time."""
        if day > self._day:
            self._day, self._seen, self.uids = day, {}, 0
        if uid is None:
            uid = _NO_UID + next(self._no_uid).to_bytes(8, "little")
        h = self._hash(uid)
        seen = self._seen.get(client)
        if seen is None:
            if len(self._seen) >= self.max_clients or self.uids >= self.max_uids:
                return Verdict.TABLE_FULL
            self._seen[client] = array("Q", (h,))
            self.uids += 1
            return Verdict.ADMITTED
        i = bisect_left(seen, h)
        if i < len(seen) and seen[i] == h:
            return Verdict.ADMITTED
        if len(seen) >= self.per_client:
            return Verdict.OVER_BUDGET
        if self.uids >= self.max_uids:
            return Verdict.TABLE_FULL
        seen.insert(i, h)
        self.uids += 1
        return Verdict.ADMITTED


@dataclass(frozen=True, slots=True)
class Client:
    """The client of a request: the key its budgets are kept under, and whether it is in unlimited_clients (by its
    own address: the simulator's 127.0.0.2 is unlimited, the rest of loopback, the same key, is not)."""

    key: int
    unlimited: bool


class ClientLimits:
    """The collector's per-client limits, from its settings."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.settings = settings
        self.trusted = networks(settings.trusted_proxies)
        self.unlimited = networks(settings.unlimited_clients)
        self.requests = RequestBudget(
            settings.client_requests_per_s,
            settings.client_request_burst,
            settings.client_body_bytes_per_s,
            settings.client_body_bytes_burst,
            settings.max_request_clients,
        )
        self.budget = NewUidBudget(
            settings.max_new_uids_per_client_per_day, settings.max_tracked_clients, settings.max_tracked_uids
        )
        self._full_on = -1  # the day the "memory full" warning was logged
        self._buckets_full = False  # the "no room for buckets" warning was logged and the table is still full

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> Client:
        address = client_of(peer, forwarded_for, self.trusted)
        unlimited = address is not None and bool(self.unlimited) and _within(address, self.unlimited)
        return Client(client_key(address), unlimited)

    def take_request(self, client: Client, now: float | None = None) -> None:
        """Take one request from the client's budget (at monotonic time `now`), or raise Throttled."""
        if client.unlimited:
            return
        refusal = self.requests.take_request(client.key, time.monotonic() if now is None else now)
        if refusal is None:
            self._buckets_full = self._buckets_full and self.requests.clients >= self.requests.max_clients
        else:
            s = self.settings
            self._refuse(
                refusal,
                f"this client made more requests than its {s.client_request_burst} at once and "
                f"{s.client_requests_per_s:g} a second after that (collector.client_request_burst, "
                "collector.client_requests_per_s)",
            )

    def take_bytes(self, client: Client, size: int, now: float | None = None) -> None:
        """Take a body's `size` bytes from the client's budget, or raise Throttled."""
        if client.unlimited:
            return
        refusal = self.requests.take_bytes(client.key, size, time.monotonic() if now is None else now)
        if refusal is not None:
            s = self.settings
            self._refuse(
                refusal,
                f"this client sent more body bytes than its {s.client_body_bytes_burst} at once and "
                f"{s.client_body_bytes_per_s} a second after that (collector.client_body_bytes_burst, "
                "collector.client_body_bytes_per_s)",
            )

    def _refuse(self, refusal: Refusal, message: str) -> None:
        if refusal.cause is not Throttle.TABLE_FULL:
            raise Throttled(refusal, message)
        r = self.requests
        if not self._buckets_full:
            self._buckets_full = True
            log.warning(
                "the per-client request budgets are full: %d clients sent requests within the last %.0f s "
                "(collector.max_request_clients %d); requests of other clients are answered 429 until a budget is "
                "free again; raise collector.max_request_clients if this is the fleet, not an attack",
                r.clients,
                r.idle_s,
                r.max_clients,
            )
        raise Throttled(
            refusal,
            f"the collector is tracking the request budgets of {r.max_clients} clients already "
            "(collector.max_request_clients)",
        )

    def verdict(self, client: Client, uid: bytes | None, received_at_ms: int) -> Verdict:
        """Whether a body with this UID (None: the body has none, a new UID every time) from this client is within
        its new-UID budget."""
        if client.unlimited:
            return Verdict.UNLIMITED
        day = received_at_ms // DAY_MS
        verdict = self.budget.admit(client.key, uid, day)
        if verdict is Verdict.TABLE_FULL and self._full_on != day:
            self._full_on = day
            b = self.budget
            log.warning(
                "the per-client limits remember %d clients and %d UIDs today (collector.max_tracked_clients %d, "
                "collector.max_tracked_uids %d): new UIDs of clients not remembered are rate-limited until the UTC "
                "day ends; raise these settings if this is the fleet, not an attack",
                b.clients,
                b.uids,
                b.max_clients,
                b.max_uids,
            )
        return verdict
