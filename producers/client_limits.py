"""What one client may do at the collector: who the client of a request is, and how many new UIDs it may send per
UTC day. A body over the budget is still published, marked (is_telemetry/envelope.py); the processors reject it as
`rate_limited`. See docs/collector.md, "Per-client limits".

    client_of(peer, forwarded_for, trusted_proxies) -> address | None   # X-Forwarded-For only from trusted proxies
    client_key(address) -> int                                          # an IPv4 address, an IPv6 /64, or "unknown"
    NewUidBudget(per_client, max_clients, max_uids).admit(client, uid, day) -> Verdict
    ClientLimits(settings.collector).verdict(peer, forwarded_for, uid, received_at_ms) -> Verdict

The budget's memory is bounded three ways: a client's remembered UIDs stop at its budget, at most `max_clients`
clients and `max_uids` UIDs in all are remembered; past either cap a UID not remembered is limited (fail closed)
until the UTC day ends. UIDs are remembered as 8-byte keyed hashes (a random key per process, so no client can
aim collisions) in one sorted array per client.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

from is_telemetry.config import CollectorSettings

log = logging.getLogger(__name__)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

DAY_MS = 86_400_000
IPV6_PREFIX = 64  # an IPv6 client is its /64: one subscriber's (or one server's) usual allocation
_V6_TAG = 1 << 64  # IPv6 /64 keys sit above every IPv4 key
_UNKNOWN = -1  # a peer without an IP address (a Unix socket): all such requests are one client


class Verdict(StrEnum):
    ADMITTED = "admitted"  # a new UID within the budget, a re-send of a remembered one, or a body without a UID
    UNLIMITED = "unlimited"  # the client is in collector.unlimited_clients
    OVER_BUDGET = "over_budget"  # a new UID past the client's budget for the day
    TABLE_FULL = "table_full"  # a new UID that cannot be remembered: the day's memory is full

    @property
    def limited(self) -> bool:
        return self is Verdict.OVER_BUDGET or self is Verdict.TABLE_FULL


def networks(items: Iterable[str]) -> tuple[Network, ...]:
    """Networks of configured addresses (already checked by is_telemetry.config.check_networks)."""
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
    budget per address would be 2^64 budgets); one key for peers without an address."""
    if address is None:
        return _UNKNOWN
    address = _unmapped(address)
    if isinstance(address, IPv4Address):
        return int(address)
    return _V6_TAG | (int(address) >> (128 - IPV6_PREFIX))


class NewUidBudget:
    """New UIDs per client and UTC day. A UID a client already sent today (and was admitted) is not new."""

    def __init__(self, per_client: int, max_clients: int, max_uids: int, key: bytes | None = None) -> None:
        self.per_client, self.max_clients, self.max_uids = per_client, max_clients, max_uids
        self._key = key if key is not None else secrets.token_bytes(16)
        self._day = -1
        self._seen: dict[int, array[int]] = {}  # client key -> sorted UID hashes
        self.uids = 0

    @property
    def clients(self) -> int:
        return len(self._seen)

    def _hash(self, uid: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(uid, digest_size=8, key=self._key).digest(), "little")

    def admit(self, client: int, uid: bytes, day: int) -> Verdict:
        """`day`: days since the epoch (UTC) of the request. A later day forgets everything; an earlier one (a clock
        stepped back) counts as the current day."""
        if day > self._day:
            self._day, self._seen, self.uids = day, {}, 0
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


class ClientLimits:
    """The collector's per-client limits, from its settings."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.trusted = networks(settings.trusted_proxies)
        self.unlimited = networks(settings.unlimited_clients)
        self.budget = NewUidBudget(
            settings.max_new_uids_per_client_per_day, settings.max_tracked_clients, settings.max_tracked_uids
        )
        self._full_on = -1  # the day the "memory full" warning was logged

    def verdict(
        self, peer: str | None, forwarded_for: Sequence[str], uid: bytes | None, received_at_ms: int
    ) -> Verdict:
        """Whether a body with this UID (None: the body has none) from this request is within its client's budget."""
        if uid is None:  # not a UID at all: the processors reject the body with its own reason
            return Verdict.ADMITTED
        client = client_of(peer, forwarded_for, self.trusted)
        if client is not None and self.unlimited and _within(client, self.unlimited):
            return Verdict.UNLIMITED
        day = received_at_ms // DAY_MS
        verdict = self.budget.admit(client_key(client), uid, day)
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
