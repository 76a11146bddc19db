"""Fleet simulator: deterministic telemetry of N Identity Server deployments and M CLI installs.

Everything the pipeline must compute can be computed here too: `generate()` is a pure function of
its arguments (`random.Random` seeded from `seed`; the wall clock only matters through `now_ms`
for today's deliveries) and `ground_truth()` derives the expected day aggregates from the exact
deliveries with rules of its own (producers/truth_rules.py: day, version, validity), written from the
documented semantics rather than taken from the processors, so that the two can disagree.

A delivery is `(received_at_ms, key, body)`: the receive time the collector would stamp, the
Kafka key (the body's uid as bytes when it has a string uid, else None) and the raw body.

Senders: `send_to_kafka()` (record timestamp = received_at_ms, the collector's headers) and
`send_to_collector()` (HTTP POST; the collector stamps its own time, so the ground truth of an
HTTP run uses our clock at send time, see docs/simulator.md). For `is-telemetry up`:
`backfill()` (past days straight to Kafka) and `live_feed()` / `LiveFeed` (today's bodies over HTTP).

See docs/simulator.md for flags, distributions, rates and the ground-truth format.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import random
import sys
import threading
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NamedTuple, Optional

import orjson
import typer

from is_telemetry.schema import DEFAULT_UID, TelemetryMessage
from is_telemetry.uid import uid_from_elements
from producers.fleet_lifecycle import Lifecycle, Outages, cli_lifecycle, deployment_lifecycle, jump
from producers.truth_rules import REASONS, Rejected, judge
from producers.truth_rules import utc_day as day_of  # simulator.day_of, simulator.major_minor: the oracle's own
from producers.truth_rules import version_of as major_minor

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
DEFAULT_PLAUSIBILITY_LIMIT = 10**9
FALLBACK_USER_AGENT = "TheThingsStack/3.32.1 (linux/amd64)"

#: progress(done, total): called from the sending thread now and then, and once at the end.
Progress = Callable[[int, int], None]


class Delivery(NamedTuple):
    received_at_ms: int
    key: bytes | None
    body: bytes


# --------------------------------------------------------------------------------------------
# Distributions of the fleet
# --------------------------------------------------------------------------------------------

#: IS minor versions (3.x) and their weight in the fleet.
_IS_MINORS = {21: 2, 22: 2, 23: 3, 24: 3, 25: 4, 26: 4, 27: 6, 28: 5, 29: 6, 30: 8, 31: 9, 32: 12, 33: 13, 34: 12,
              35: 8}
_CLI_MINORS = {26: 2, 27: 3, 28: 3, 29: 4, 30: 6, 31: 7, 32: 9, 33: 10, 34: 10, 35: 8}
_PATCH_WEIGHTS = [5, 4, 3, 2, 1]  # x.y.0 .. x.y.4
#: Older senders (<= 3.27) send users.total and leave gateways.total at 0.
_OLD_SENDER_MAX_MINOR = 27
#: CLI versions from this minor send command-usage data in "cli" (before: {}).
_CLI_USAGE_MIN_MINOR = 34
#: Go release by TTS minor version.
_GO_BY_MINOR = [(22, "1.18"), (25, "1.19"), (28, "1.20"), (30, "1.21"), (32, "1.22"), (34, "1.23"), (99, "1.24")]

_IS_PLATFORMS = [(("linux", "amd64"), 78), (("linux", "arm64"), 14), (("linux", "arm"), 2),
                 (("darwin", "arm64"), 3), (("darwin", "amd64"), 1), (("windows", "amd64"), 2)]
_CLI_PLATFORMS = [(("darwin", "arm64"), 30), (("darwin", "amd64"), 8), (("linux", "amd64"), 35),
                  (("linux", "arm64"), 5), (("windows", "amd64"), 20), (("windows", "arm64"), 2)]

#: Region -> weight, and the frequency-plan combinations its gateways use (a combination of several
#: IDs is a gateway configured with several plans: each ID gets the gateway's count).
_REGIONS: dict[str, tuple[int, list[tuple[tuple[str, ...], int]]]] = {
    "EU": (45, [(("EU_863_870_TTN",), 6), (("EU_863_870",), 4), (("EU_863_870", "EU_863_870_TTN"), 1),
                (("EU_863_870_ROAMING_DRAFT",), 1)]),
    "US": (20, [(("US_902_928_FSB_2",), 7), (("US_902_928_FSB_1",), 3),
                (("US_902_928_FSB_1", "US_902_928_FSB_2"), 1)]),
    "AU": (7, [(("AU_915_928_FSB_2",), 5), (("AU_915_928_FSB_1",), 1)]),
    "AS": (10, [(("AS_923",), 5), (("AS_923_2",), 2), (("AS_923_3",), 2), (("AS_920_923_LBT",), 1),
                (("AS_923", "AS_923_2"), 1)]),
    "IN": (5, [(("IN_865_867",), 1)]),
    "KR": (3, [(("KR_920_923_TTN",), 1)]),
    "RU": (3, [(("RU_864_870_TTN",), 1)]),
    "CN": (2, [(("CN_470_510_FSB_11",), 1)]),
    "ISM": (1, [(("ISM_2400_3CH_DRAFT2",), 1)]),
    "MA": (1, [(("MA_869_870_DRAFT",), 1)]),  # a plan no region rule of the analyst views knows: region "other"
}

_CLI_COMMANDS = [
    "ttn-lw-cli end-devices list", "ttn-lw-cli end-devices get", "ttn-lw-cli end-devices create",
    "ttn-lw-cli end-devices set", "ttn-lw-cli gateways list", "ttn-lw-cli gateways get",
    "ttn-lw-cli applications list", "ttn-lw-cli applications create", "ttn-lw-cli login",
    "ttn-lw-cli users get", "ttn-lw-cli organizations list", "ttn-lw-cli simulate uplink",
    "ttn-lw-cli end-devices templates extend", "ttn-lw-cli applications link get",
]
_CLI_ALIASES = [("end-devices", "dev"), ("end-devices", "devices"), ("end-devices", "ed"),
                ("applications", "apps"), ("applications", "app"), ("gateways", "gtw"), ("gateways", "gw"),
                ("organizations", "orgs"), ("users", "user")]

#: Malformed kinds, by the rejection reason each must get. Which apply to which sender kind:
MALFORMED_KINDS_IS = ["not_json", "not_object", "missing_field", "wrong_type", "fractional", "negative",
                      "out_of_range", "kind_ambiguous", "bad_uid", "implausible"]
MALFORMED_KINDS_CLI = ["not_json", "not_object", "missing_field", "wrong_type", "kind_ambiguous", "bad_uid"]
assert set(MALFORMED_KINDS_IS) <= set(REASONS)

_IS_COUNT_PATHS = [
    ("gateways", "total"), ("end_devices", "total"), ("end_devices", "activate_end_devices", "total"),
    ("end_devices", "activate_end_devices", "last_day"), ("end_devices", "activate_end_devices", "last_month"),
    ("applications", "total"), ("accounts", "users", "standard"), ("accounts", "users", "admin"),
    ("accounts", "organizations", "total"),
]

#: Upper bound of any generated valid count (far below the plausibility limit).
_COUNT_CAP = 5_000_000


def _weighted(rng: random.Random, pairs: Sequence[tuple[Any, int]] | dict[Any, int]) -> Any:
    items = list(pairs.items()) if isinstance(pairs, dict) else list(pairs)
    return rng.choices([v for v, _ in items], weights=[w for _, w in items])[0]


def version_string(minor: int, patch: int, dev: bool = False, commit_suffix: bool = False) -> str:
    """'3.32.1', '3.27.0-dev' or '3.32.1 (1d218216, 2024-10-24T13:28:12Z)'.

    Commit and date are a function of the version (every deployment of a release reports the same)."""
    v = f"3.{minor}.{patch}"
    if dev:
        return v + "-dev"
    if commit_suffix:
        commit = hashlib.sha1(v.encode()).hexdigest()[:8]
        released = datetime(2022, 8, 1, tzinfo=UTC) + timedelta(days=(minor - 21) * 50 + patch * 9,
                                                                seconds=int(commit, 16) % 86400)
        return f"{v} ({commit}, {released.strftime('%Y-%m-%dT%H:%M:%SZ')})"
    return v


def go_version(minor: int, patch: int, quirk: bool = False) -> str:
    """The Go release TTS 3.<minor>.<patch> was built with; `quirk` adds the documented leading space."""
    go = next(g for m, g in _GO_BY_MINOR if minor <= m)
    s = f"go{go}.{(minor * 7 + patch * 3) % 10}"
    return " " + s if quirk else s


def user_agent(binary_version: str, operating_system: str, arch: str) -> str:
    """`TheThingsStack/<version> (<os>/<arch>)` as the TTS HTTP client sends it (version without build info)."""
    return f"TheThingsStack/{binary_version.split(' ')[0] or 'unknown'} ({operating_system}/{arch})"


def user_agent_of(body: bytes) -> str:
    """The User-Agent of the sender of `body` (from its os object; a fixed one for unreadable bodies)."""
    try:
        o = json.loads(body)["os"]
        return user_agent(str(o["binary_version"]), str(o["operating_system"]), str(o["arch"]))
    except Exception:
        return FALLBACK_USER_AGENT


def key_of(body: bytes) -> bytes | None:
    """The Kafka key: the body's uid as bytes when the body is a JSON object with a string uid, else None."""
    try:
        obj = json.loads(body)
    except Exception:
        return None
    uid = obj.get("uid") if isinstance(obj, dict) else None
    return uid.encode() if isinstance(uid, str) else None


# --------------------------------------------------------------------------------------------
# The fleet
# --------------------------------------------------------------------------------------------


@dataclass
class Deployment:
    index: int
    uid: str
    operating_system: str
    arch: str
    minor: int  # base version: what it runs before it upgrades (producers/fleet_lifecycle.py)
    patch: int
    dev: bool
    commit_suffix: bool
    go_quirk: bool
    age_days: int  # days before the end day it started sending (>= days: before the window)
    time_of_day_ms: int  # when its daily entity-count task fires
    # counts on the end day
    end_devices: int
    gateways: int
    applications: int
    users_standard: int
    users_admin: int
    organizations: int
    ratio_active: float  # active total / end devices
    ratio_month: float  # last_month / active total
    ratio_week: float  # last_week / last_month
    ratio_day: float  # last_day / last_week
    device_growth: float  # mean daily relative growth of end devices
    plan_combos: list[tuple[tuple[str, ...], float]] = field(default_factory=list)  # fractions sum to 1
    life: Lifecycle = field(default_factory=Lifecycle)  # upgrades, churn, outages

    @property
    def default_uid(self) -> bool:
        return self.uid == DEFAULT_UID


@dataclass
class CliInstall:
    index: int
    uid: str
    operating_system: str
    arch: str
    minor: int
    patch: int
    use_probability: float  # chance of running a command (hence sending) on a day
    age_days: int
    commands: list[tuple[str, int, float]]  # (command_path, executions on the end day, executions per use day)
    aliases: list[tuple[str, str, int]]  # (command_name, alias, usage count on the end day)
    life: Lifecycle = field(default_factory=Lifecycle)  # upgrades, churn


@dataclass
class Fleet:
    deployments: list[Deployment]
    cli_installs: list[CliInstall]


def _pareto_size(rng: random.Random) -> float:
    return min(rng.paretovariate(0.85), 200_000.0)


def _make_deployment(rng: random.Random, i: int, default_uid_rate: float) -> Deployment:
    default = rng.random() < default_uid_rate
    os_, arch = _weighted(rng, _IS_PLATFORMS)
    minor = _weighted(rng, _IS_MINORS)
    patch = _weighted(rng, list(enumerate(_PATCH_WEIGHTS)))
    dev = rng.random() < (0.25 if default else 0.03)
    if dev:
        patch = 0
    if default:  # deployments left on localhost URLs: test and hobby setups, tiny
        uid, size = DEFAULT_UID, 1.0 + rng.random()
    else:
        host = f"lns-{i}-{rng.getrandbits(40):010x}.example.net"
        uid = uid_from_elements([f"https://{host}/api/v3"] * 5)
        size = _pareto_size(rng)
    devices = 0 if rng.random() < 0.18 else min(_COUNT_CAP, int(size * rng.lognormvariate(1.2, 0.9)))
    gateways = min(_COUNT_CAP, int(devices / rng.lognormvariate(3.0, 0.8)) + (1 if rng.random() < 0.7 else 0))
    applications = min(_COUNT_CAP, (1 if devices else int(rng.random() < 0.5))
                       + int(devices / rng.lognormvariate(3.3, 1.0)))
    users_standard = min(_COUNT_CAP, max(0, int(size * rng.lognormvariate(0.2, 1.0)) - 1))
    users_admin = 1 + int(rng.paretovariate(2.5)) - 1 + (users_standard // 200)
    organizations = min(_COUNT_CAP, int(users_standard / rng.lognormvariate(1.9, 0.7)))
    region = _weighted(rng, {r: w for r, (w, _) in _REGIONS.items()})
    n_combos = 1 + min(3, int(math.log10(gateways + 1) * rng.random() * 1.5))
    combos: dict[tuple[str, ...], float] = {}
    for k in range(n_combos):
        reg = region if k == 0 or rng.random() < 0.7 else _weighted(rng, {r: w for r, (w, _) in _REGIONS.items()})
        combo = _weighted(rng, _REGIONS[reg][1])
        combos[combo] = combos.get(combo, 0.0) + (1.0 if k == 0 else rng.random() * 0.6)
    total_w = sum(combos.values())
    age = rng.randint(1, 90) if rng.random() < 0.12 else 10_000
    return Deployment(
        index=i, uid=uid, operating_system=os_, arch=arch, minor=minor, patch=patch, dev=dev,
        commit_suffix=not dev and rng.random() < 0.35, go_quirk=rng.random() < (0.5 if dev else 0.04),
        age_days=age, time_of_day_ms=rng.randrange(DAY_MS),
        end_devices=devices, gateways=gateways, applications=applications, users_standard=users_standard,
        users_admin=users_admin, organizations=organizations,
        ratio_active=rng.uniform(0.35, 1.0), ratio_month=rng.uniform(0.6, 1.0), ratio_week=rng.uniform(0.65, 1.0),
        ratio_day=rng.uniform(0.5, 1.0), device_growth=rng.uniform(-0.001, 0.006),
        plan_combos=[(c, w / total_w) for c, w in combos.items()],
    )


def _make_cli(rng: random.Random, i: int) -> CliInstall:
    os_, arch = _weighted(rng, _CLI_PLATFORMS)
    minor = _weighted(rng, _CLI_MINORS)
    patch = _weighted(rng, list(enumerate(_PATCH_WEIGHTS)))
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    commands = [(path, rng.randint(1, 400), rng.uniform(1, 12))
                for path in rng.sample(_CLI_COMMANDS, rng.randint(1, 6))]
    aliases = [(name, alias, rng.randint(1, 150)) for name, alias in rng.sample(_CLI_ALIASES, rng.randint(0, 3))]
    return CliInstall(index=i, uid=uid, operating_system=os_, arch=arch, minor=minor, patch=patch,
                      use_probability=min(1.0, rng.betavariate(0.8, 1.6) + 0.05),
                      age_days=rng.randint(1, 60) if rng.random() < 0.3 else 10_000,
                      commands=commands, aliases=aliases)


def build_fleet(deployments: int, cli_installs: int, seed: int, default_uid_rate: float = 0.04) -> Fleet:
    """The same fleet for the same arguments (independent of days and rates)."""
    rng_is = random.Random(f"simulator:{seed}:deployments")
    rng_cli = random.Random(f"simulator:{seed}:cli")
    fleet = Fleet([_make_deployment(rng_is, i, default_uid_rate) for i in range(deployments)],
                  [_make_cli(rng_cli, i) for i in range(cli_installs)])
    rng_life = random.Random(f"simulator:{seed}:lifecycle")
    for dep in fleet.deployments:  # -dev builds and the tiny default-UID setups never upgrade
        dep.life = deployment_lifecycle(rng_life, frozen=dep.dev or dep.default_uid, dev=dep.dev)
    for ci in fleet.cli_installs:
        ci.life = cli_lifecycle(rng_life)
    return fleet


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------


def _is_object(dep: Deployment, minor: int, patch: int, counts: dict[str, int]) -> dict[str, Any]:
    """The JSON object a deployment sends, as plain data (counts already per day)."""
    old = minor <= _OLD_SENDER_MAX_MINOR
    plans: dict[str, int] = {}
    g = counts["gateways"]
    if g:
        alloc = [int(g * frac) for _, frac in dep.plan_combos]
        alloc[0] += g - sum(alloc)
        for (combo, _), n in zip(dep.plan_combos, alloc):
            if n:
                for plan in combo:
                    plans[plan] = plans.get(plan, 0) + n
    users: dict[str, int] = {}
    if old:
        users["total"] = counts["users_standard"] + counts["users_admin"]
    users.update(standard=counts["users_standard"], admin=counts["users_admin"])
    return {
        "uid": dep.uid,
        "os": {"operating_system": dep.operating_system, "arch": dep.arch,
               "binary_version": version_string(minor, patch, dep.dev, dep.commit_suffix),
               "golang_version": go_version(minor, patch, dep.go_quirk)},
        "cli": None,
        "entities_count": {
            "gateways": {"total": 0 if old else g, "gateways_by_frequency_plan_id": dict(sorted(plans.items()))},
            "end_devices": {"total": counts["end_devices"], "activate_end_devices": {
                "total": counts["active_end_devices"], "last_day": counts["active_last_day"],
                "last_week": counts["active_last_week"], "last_month": counts["active_last_month"]}},
            "applications": {"total": counts["applications"]},
            "accounts": {"users": users, "organizations": {"total": counts["organizations"]}},
        },
    }


def _cli_object(ci: CliInstall, back: int, received_at_ms: int, rng: random.Random) -> dict[str, Any]:
    cli: dict[str, Any] = {}
    minor, patch = ci.life.version((ci.minor, ci.patch), back)
    if minor >= _CLI_USAGE_MIN_MINOR:
        now_s = received_at_ms // 1000
        cmds = []
        for j, (path, count, per_day) in enumerate(ci.commands):
            n = max(1, count - int(back * per_day * ci.use_probability))
            last = now_s - (rng.randint(0, 60) if j == 0 else rng.randint(60, 20 * 86400))
            cmds.append({"command_path": path, "execution_count": n, "last_used_at": last})
        aliases = [{"command_name": name, "alias": alias, "usage_count": max(1, n - back // 3)}
                   for name, alias, n in ci.aliases]
        cli = {"commands": cmds, "aliases": aliases}
    return {
        "uid": ci.uid,
        "os": {"operating_system": ci.operating_system, "arch": ci.arch,
               "binary_version": version_string(minor, patch),
               "golang_version": go_version(minor, patch)},
        "cli": cli,
        "entities_count": None,
    }


def build_body(obj: dict[str, Any]) -> bytes:
    """A valid body: through the one message definition, serialised as TTS does."""
    return TelemetryMessage.model_validate(obj).to_json()


def _changed(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A later, different body of the same sender on the same day (a few more devices, a gateway, a command)."""
    new = copy.deepcopy(obj)
    ec = new.get("entities_count")
    if ec is not None:
        k = rng.randint(1, 5)
        ed = ec["end_devices"]
        ed["total"] += k
        a = ed["activate_end_devices"]
        if a["total"] + k <= ed["total"]:
            a["total"] += k
            a["last_month"] = min(a["total"], a["last_month"] + k)
            a["last_week"] = min(a["last_month"], a["last_week"] + k)
            a["last_day"] = min(a["last_week"], a["last_day"] + k)
        if rng.random() < 0.3:
            gw = ec["gateways"]
            plans = gw["gateways_by_frequency_plan_id"]
            plan = next(iter(plans), "EU_863_870_TTN")
            plans[plan] = plans.get(plan, 0) + 1
            gw["gateways_by_frequency_plan_id"] = dict(sorted(plans.items()))
            if "total" not in ec["accounts"]["users"]:  # older senders (users.total) leave gateways.total at 0
                gw["total"] += 1
    elif new["cli"].get("commands"):
        c = new["cli"]["commands"][0]
        c["execution_count"] += rng.randint(1, 3)
        c["last_used_at"] += rng.randint(1, 600)
    else:  # "cli": {} -- the user upgraded the CLI and ran it again
        o = new["os"]
        parts = o["binary_version"].split(".")
        o["binary_version"] = f"{parts[0]}.{parts[1]}.{int(parts[2].split('-')[0]) + 1}"
    return new


def _corrupt(obj: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """A malformed body the pipeline must reject with reason `kind` (one problem only)."""
    o = copy.deepcopy(obj)
    ec = o.get("entities_count")

    def set_count(value: Any) -> None:
        assert ec is not None
        path = rng.choice(_IS_COUNT_PATHS)
        node = ec
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    if kind == "not_json":
        good = orjson.dumps(o)
        variant = rng.randrange(3)
        if variant == 0:
            return good[: rng.randint(1, len(good) - 2)]  # truncated
        if variant == 1:
            return b"uid=" + o["uid"].encode() + b"&os=linux"  # form-encoded
        return b"\xff\xfe" + good[1:]  # not UTF-8
    if kind == "not_object":
        return json.dumps(rng.choice([[o], "telemetry", 42, None]), separators=(",", ":")).encode()
    if kind == "missing_field":
        del o["uid"]
    elif kind == "wrong_type":
        if ec is not None:
            set_count(str(rng.randint(0, 500)))
        else:
            o["os"] = o["os"]["operating_system"]
    elif kind == "fractional":
        set_count(rng.randint(0, 500) + 0.5)
    elif kind == "negative":
        set_count(-rng.randint(1, 500))
    elif kind == "out_of_range":
        set_count(2**64 + rng.randint(0, 10**6))
    elif kind == "implausible":
        set_count(DEFAULT_PLAUSIBILITY_LIMIT + rng.randint(1, 10**12))
    elif kind == "kind_ambiguous":
        if ec is not None:
            o["cli"] = {}
        else:
            o["entities_count"] = {"gateways": {"total": 1, "gateways_by_frequency_plan_id": {"EU_863_870": 1}}}
    elif kind == "bad_uid":
        uid = o["uid"]
        if ec is not None:  # not 88-char standard base64
            o["uid"] = rng.choice([uid[:43], uid.rstrip("=") + "!!", uid.replace("+", "-").replace("/", "_") + "x",
                                   "localhost"])
        else:  # not a UUID
            o["uid"] = rng.choice([uid.replace("-", ""), uid[:23], "not-a-uuid", uid + "-0"])
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode()


def _inconsistent(ec: dict[str, Any], rng: random.Random) -> None:
    """One window that cannot hold (the processors keep it and flag it)."""
    ed = ec["end_devices"]
    a = ed["activate_end_devices"]
    which = rng.randrange(4)
    if which == 0:
        a["last_day"] = a["last_week"] + rng.randint(1, 5)
    elif which == 1:
        a["last_week"] = a["last_month"] + rng.randint(1, 5)
    elif which == 2:
        a["last_month"] = a["total"] + rng.randint(1, 5)
    else:
        a["total"] = ed["total"] + rng.randint(1, 5)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


@dataclass
class Simulation:
    """Deliveries sorted by receive time (stable: the send order), with what each malformed one must be rejected for."""

    deliveries: list[Delivery]
    intended: list[str | None]  # parallel to deliveries: the reason a malformed body must be rejected for, else None
    days: list[str]
    stats: dict[str, int]


def _utc_today(now_ms: int | None = None) -> date:
    return day_of(now_ms if now_ms is not None else int(time.time() * 1000))


def _day_start_ms(d: date) -> int:
    return d.toordinal() * DAY_MS - date(1970, 1, 1).toordinal() * DAY_MS


class _Evolution:
    """Per-deployment day-by-day factors, walked backwards from the end day (where the counts are the fleet's),
    and the version it runs each day (its lifecycle: upgrades after releases)."""

    def __init__(self, dep: Deployment, days: int, rng: random.Random) -> None:
        self.dev = [1.0] * days
        self.org = [1.0] * days
        self.version = [dep.life.version((dep.minor, dep.patch), days - 1 - i) for i in range(days)]
        for i in range(days - 2, -1, -1):
            self.dev[i] = self.dev[i + 1] / (1.0 + rng.gauss(dep.device_growth, 0.004))
            step = rng.gauss(0.01, 0.02) if rng.random() < 0.1 else 0.0
            self.org[i] = self.org[i + 1] / (1.0 + step)


def _counts(dep: Deployment, ev: _Evolution, i: int, rng: random.Random) -> dict[str, int]:
    def scaled(base: int, f: float) -> int:
        return min(_COUNT_CAP, max(0, int(round(base * f))))

    devices = scaled(dep.end_devices, ev.dev[i])
    active = int(devices * min(1.0, dep.ratio_active * rng.uniform(0.97, 1.03)))
    month = int(active * min(1.0, dep.ratio_month * rng.uniform(0.95, 1.05)))
    week = int(month * min(1.0, dep.ratio_week * rng.uniform(0.92, 1.08)))
    day = int(week * min(1.0, dep.ratio_day * rng.uniform(0.85, 1.15)))
    return {
        "gateways": scaled(dep.gateways, ev.org[i]), "end_devices": devices, "active_end_devices": active,
        "active_last_day": day, "active_last_week": week, "active_last_month": month,
        "applications": scaled(dep.applications, ev.org[i]), "users_standard": scaled(dep.users_standard, ev.org[i]),
        "users_admin": max(1, scaled(dep.users_admin, ev.org[i])),
        "organizations": scaled(dep.organizations, ev.org[i]),
    }


def generate(
    deployments: int,
    cli_installs: int,
    days: int,
    seed: int,
    end_day: date | str | None = None,
    *,
    resend_rate: float = 0.05,
    changed_rate: float = 0.03,
    missed_rate: float = 0.05,
    malformed_rate: float = 0.01,
    inconsistent_rate: float = 0.02,
    default_uid_rate: float = 0.04,
    jump_rate: float = 0.001,
    lifecycle: bool = True,
    now_ms: int | None = None,
) -> Simulation:
    """Deliveries of the fleet over `days` days ending `end_day` (default: today, UTC).

    Deterministic for the same arguments; for a window that includes today only receive times up to
    `now_ms` (default: the wall clock) are produced. `lifecycle=False` leaves out churn and outages (every
    sender that has started sends); upgrades after releases and jumps (`jump_rate`) happen either way.
    """
    for name, rate in (("resend_rate", resend_rate), ("changed_rate", changed_rate), ("missed_rate", missed_rate),
                       ("malformed_rate", malformed_rate), ("inconsistent_rate", inconsistent_rate),
                       ("default_uid_rate", default_uid_rate), ("jump_rate", jump_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], not {rate}")
    if days < 1 or deployments < 0 or cli_installs < 0:
        raise ValueError("days must be >= 1, deployments and cli_installs >= 0")
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    today = _utc_today(now_ms)
    end = date.fromisoformat(end_day) if isinstance(end_day, str) else (end_day or today)
    if end > today:
        raise ValueError(f"end day {end} is after today ({today}, UTC)")

    fleet = build_fleet(deployments, cli_installs, seed, default_uid_rate)
    rng_ev = random.Random(f"simulator:{seed}:evolution:{days}")
    evolutions = [_Evolution(dep, days, rng_ev) for dep in fleet.deployments]
    rng_val = random.Random(f"simulator:{seed}:values:{days}:{end.isoformat()}")
    rng = random.Random(f"simulator:{seed}:events:{days}:{end.isoformat()}")
    rng_life = random.Random(f"simulator:{seed}:life:{days}:{end.isoformat()}")
    outages = Outages()

    out: list[tuple[int, Delivery, str | None]] = []
    stats: Counter[str] = Counter()

    def emit(t: int, obj: dict[str, Any], limit: int, kind_list: list[str]) -> None:
        stats["primary"] += 1
        if rng.random() < malformed_rate:
            kind = rng.choice(kind_list)
            body = _corrupt(obj, kind, rng)
            out.append((t, Delivery(t, key_of(body), body), kind))
            stats["malformed"] += 1
            stats[f"malformed_{kind}"] += 1
            return
        body = build_body(obj)
        key = obj["uid"].encode()
        out.append((t, Delivery(t, key, body), None))
        if rng.random() < resend_rate:  # exact re-send (restart, several IS instances), later that day
            t2 = rng.randint(t + 1, limit) if limit > t else t
            out.append((t2, Delivery(t2, key, body), None))
            stats["resend"] += 1
        if rng.random() < changed_rate:  # a later, different body the same day
            t3 = rng.randint(t + 1, limit) if limit > t else t
            body3 = build_body(_changed(obj, rng))
            out.append((t3, Delivery(t3, key, body3), None))
            stats["changed"] += 1

    day_list = [end - timedelta(days=days - 1 - i) for i in range(days)]
    for i, d in enumerate(day_list):
        back = days - 1 - i  # days before the end day
        start = _day_start_ms(d)
        limit = min(start + DAY_MS - 1, now_ms) if d == today else start + DAY_MS - 1
        for dep, ev in zip(fleet.deployments, evolutions):
            if back >= dep.age_days:
                continue  # not started yet
            if lifecycle and dep.life.stopped(back):
                stats["churned"] += 1  # stopped for good
                continue
            if lifecycle and outages.silent(dep.index, rng_life, dep.life.outage_rate):
                stats["outage"] += 1  # silent for a few days, back later
                continue
            counts = _counts(dep, ev, i, rng_val)
            if rng_life.random() < jump_rate:
                counts = jump(counts, rng_life, _COUNT_CAP)
                stats["jump"] += 1
            jitter = rng.randint(-120_000, 120_000)
            stats["is_slots"] += 1
            if rng.random() < missed_rate:
                stats["missed"] += 1
                continue
            t = min(max(start, start + dep.time_of_day_ms + jitter), start + DAY_MS - 1)
            if t > limit:
                stats["pending"] += 1  # today, not yet
                continue
            minor, patch = ev.version[i]
            obj = _is_object(dep, minor, patch, counts)
            if rng.random() < inconsistent_rate:
                _inconsistent(obj["entities_count"], rng)
                stats["inconsistent"] += 1
            stats["is_messages"] += 1
            emit(t, obj, limit, MALFORMED_KINDS_IS)
        for ci in fleet.cli_installs:
            if back >= ci.age_days or (lifecycle and ci.life.stopped(back)):
                continue
            used = rng.random() < ci.use_probability or back == ci.age_days - 1  # first use sends
            t = start + rng.randrange(DAY_MS)
            if not used or t > limit:
                continue
            stats["cli_messages"] += 1
            emit(t, _cli_object(ci, back, t, rng), limit, MALFORMED_KINDS_CLI)

    out.sort(key=lambda x: x[0])  # stable: at equal times, the order sent
    stats["deliveries"] = len(out)
    return Simulation([d for _, d, _ in out], [k for _, _, k in out], [d.isoformat() for d in day_list], dict(stats))


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------

_FLEET_SUMS = ["gateways", "end_devices", "active_end_devices", "active_last_day", "active_last_week",
               "active_last_month", "applications", "users_standard", "users_admin", "organizations"]


def ground_truth(
    deliveries: Iterable[Sequence[Any]], plausibility_limit: int = DEFAULT_PLAUSIBILITY_LIMIT
) -> dict[str, Any]:
    """The day aggregates the pipeline must hold after consuming exactly these deliveries, in this order.

    Day = UTC day of received_at_ms. Rejected deliveries count once each under their reason. Per (day,
    uid) the snapshot is the valid body with the latest receive time (ties: the later in the list).
    """
    per_day: Counter[str] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    latest: dict[tuple[str, str], tuple[int, TelemetryMessage]] = {}
    n = 0
    for received_at_ms, _key, body in deliveries:
        n += 1
        day = day_of(received_at_ms).isoformat()
        per_day[day] += 1
        result = judge(body, plausibility_limit)
        if isinstance(result, Rejected):
            rejected[(day, result.reason)] += 1
            continue
        k = (day, result.uid)
        cur = latest.get(k)
        if cur is None or received_at_ms >= cur[0]:
            latest[k] = (received_at_ms, result)

    fleet: dict[str, dict[str, Any]] = {}
    plans: Counter[tuple[str, str]] = Counter()
    versions: Counter[tuple[str, str]] = Counter()
    for (day, _uid), (_t, m) in latest.items():
        row = fleet.setdefault(day, {"day": day, "deployments": 0, "cli_installs": 0, **dict.fromkeys(_FLEET_SUMS, 0)})
        ec = m.entities_count
        if ec is None:
            row["cli_installs"] += 1
            continue
        row["deployments"] += 1
        counts = ec.counts()
        for name in _FLEET_SUMS:
            row[name] += counts[name]
        for plan, g in ec.gateways.gateways_by_frequency_plan_id.items():
            plans[(day, plan)] += g
        versions[(day, major_minor(m.os.binary_version if m.os else ""))] += 1

    return {
        "fleet_daily": [fleet[d] for d in sorted(fleet)],
        "gateways_by_frequency_plan_daily": [
            {"day": d, "frequency_plan_id": p, "gateways": g} for (d, p), g in sorted(plans.items())],
        "deployments_by_version_daily": [
            {"day": d, "version": v, "deployments": c} for (d, v), c in sorted(versions.items())],
        "rejected_daily": [{"day": d, "reason": r, "messages": c} for (d, r), c in sorted(rejected.items())],
        "messages": n,
        "per_day_messages": dict(sorted(per_day.items())),
    }


def write_ground_truth(truth: dict[str, Any], path: Path | str) -> None:
    Path(path).write_text(json.dumps(truth, indent=1) + "\n")


# --------------------------------------------------------------------------------------------
# Senders
# --------------------------------------------------------------------------------------------


@dataclass
class SendResult:
    total: int  # deliveries given
    sent: int = 0  # acknowledged (Kafka) / answered 2xx (HTTP)
    failed: int = 0  # send errors (Kafka) / non-2xx other than 400, or given up after retries (HTTP)
    refused: int = 0  # HTTP 400: the collector refused the body at the edge (not JSON): never in Kafka
    not_attempted: int = 0  # left unsent (Ctrl-C, or sending stopped after an error)
    retried: int = 0  # HTTP: attempts repeated after 503 / connection errors (each may have been published)
    interrupted: bool = False
    elapsed_s: float = 0.0
    #: Exactly what reached the target, in send order. HTTP: re-stamped with our clock at the send.
    sent_deliveries: list[Delivery] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the first few

    @property
    def ok(self) -> bool:
        return self.failed == 0 and not self.interrupted and self.not_attempted == 0

    def summary(self) -> str:
        s = f"sent {self.sent}/{self.total}"
        if self.refused:
            s += f", refused by the collector (400) {self.refused}"
        if self.failed:
            s += f", FAILED {self.failed}"
        if self.not_attempted:
            s += f", not sent {self.not_attempted}"
        if self.retried:
            s += f", retried {self.retried}"
        if self.interrupted:
            s += " (interrupted)"
        rate = self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return s + f" in {self.elapsed_s:.1f}s ({rate:.0f}/s)"


class SendError(RuntimeError):
    def __init__(self, result: SendResult) -> None:
        detail = "; ".join(result.errors[:3])
        super().__init__(f"{result.summary()}: {detail}")
        self.result = result


def _finish(result: SendResult, n: int, started: float, progress: Progress | None, raise_on_failure: bool) -> SendResult:
    """Close a send: elapsed time, a last progress report, and SendError if anything was not delivered."""
    result.elapsed_s = time.monotonic() - started
    if progress is not None:
        progress(result.sent, n)
    if raise_on_failure and (result.failed or (result.not_attempted and not result.interrupted)):
        raise SendError(result)
    return result


def send_to_kafka(
    deliveries: Sequence[Delivery],
    bootstrap_servers: str,
    topic: str,
    progress: Progress | None = None,
    *,
    raise_on_failure: bool = True,
    flush_timeout_s: float = 120.0,
    **producer_overrides: Any,
) -> SendResult:
    """Produce every delivery, in order: key, value = body, timestamp = received_at_ms, the collector's headers.

    Ctrl-C stops submitting, flushes what was submitted and returns (interrupted=True). Any failed send
    raises SendError (with the result, whose sent_deliveries are what reached Kafka) unless raise_on_failure
    is False. One request in flight per connection keeps the order within each partition.
    `producer_overrides` go to is_telemetry.kafka.make_producer (kafka-python KafkaProducer settings).
    """
    from kafka.errors import KafkaError

    from is_telemetry.kafka import headers, make_producer

    deliveries = list(deliveries)
    n = len(deliveries)
    result = SendResult(total=n)
    acked = [False] * n
    lock = threading.Lock()
    counters = {"ok": 0, "err": 0}

    def on_ok(i: int, _meta: Any) -> None:
        with lock:
            acked[i] = True
            counters["ok"] += 1

    def on_err(i: int, exc: BaseException) -> None:
        with lock:
            counters["err"] += 1
            if len(result.errors) < 10:
                result.errors.append(f"delivery {i}: {exc!r}")

    started = time.monotonic()
    config: dict[str, Any] = dict(max_in_flight_requests_per_connection=1, client_id="is-telemetry-simulator",
                                  bootstrap_timeout_ms=10_000)
    config.update(producer_overrides)
    try:
        producer = make_producer(bootstrap_servers, **config)
    except KafkaError as exc:  # no broker at all
        result.not_attempted = n
        result.errors.append(f"cannot connect to Kafka at {bootstrap_servers}: {exc!r}")
        result.elapsed_s = time.monotonic() - started
        if raise_on_failure and n:
            raise SendError(result) from exc
        return result
    submitted = 0
    try:
        try:
            for i, d in enumerate(deliveries):
                try:
                    fut = producer.send(
                        topic, value=d.body, key=d.key, timestamp_ms=d.received_at_ms,
                        headers=headers(d.received_at_ms, "simulator", user_agent=user_agent_of(d.body),
                                        body_length=len(d.body)),
                    )
                except KafkaError as exc:  # e.g. no metadata within max_block_ms: the broker is gone
                    on_err(i, exc)
                    submitted += 1
                    break
                fut.add_callback(on_ok, i)
                fut.add_errback(on_err, i)
                submitted += 1
                if progress is not None and submitted % 250 == 0:
                    progress(counters["ok"], n)
        except KeyboardInterrupt:
            result.interrupted = True
        try:
            producer.flush(timeout=flush_timeout_s)
        except KeyboardInterrupt:
            result.interrupted = True
        except KafkaError as exc:
            result.errors.append(f"flush: {exc!r}")
    finally:
        try:
            producer.close(timeout=5)
        except Exception:  # noqa: BLE001 - closing must not hide the result
            pass
    with lock:
        result.sent = counters["ok"]
        # anything submitted but neither acknowledged nor failed (flush timed out/interrupted) counts as failed
        result.failed = submitted - counters["ok"]
        unconfirmed = submitted - counters["ok"] - counters["err"]
        if unconfirmed:
            result.errors.append(f"{unconfirmed} send(s) unconfirmed (flush interrupted or timed out): "
                                 "they may or may not be in Kafka")
        result.sent_deliveries = [d for d, ok in zip(deliveries, acked) if ok]
    result.not_attempted = n - submitted
    return _finish(result, n, started, progress, raise_on_failure)


def _now_ms() -> int:
    return int(time.time() * 1000)


def send_to_collector(
    deliveries: Sequence[Delivery],
    url: str,
    concurrency: int = 8,
    progress: Progress | None = None,
    *,
    retries: int = 6,
    timeout_s: float = 10.0,
    raise_on_failure: bool = True,
) -> SendResult:
    """POST every body to the collector as TTS does (Content-Type application/json, the TTS User-Agent).

    Deliveries with the same key go through the same connection one after the other, so the collector
    sees each UID's bodies in this order. 503 and connection errors are retried with backoff; 400 (the
    collector refuses bodies that are not JSON) counts as refused: never published, not in the ground
    truth; any other non-2xx answer counts as failed. The collector stamps its own receive time: `sent_deliveries` carry
    our clock at the successful attempt, which is what the ground truth of an HTTP run is computed from.
    """
    import httpx

    deliveries = list(deliveries)
    n = len(deliveries)
    concurrency = max(1, concurrency)
    result = SendResult(total=n)
    lanes: list[list[int]] = [[] for _ in range(concurrency)]
    for i, d in enumerate(deliveries):
        lanes[(zlib.crc32(d.key) if d.key is not None else i) % concurrency].append(i)
    stamps: list[int | None] = [None] * n
    attempted = [False] * n
    stop = threading.Event()
    lock = threading.Lock()
    counters = {"ok": 0, "err": 0, "retried": 0, "refused": 0}

    def fail(i: int, why: str) -> None:
        with lock:
            counters["err"] += 1
            if len(result.errors) < 10:
                result.errors.append(f"delivery {i}: {why}")

    def lane_worker(client: httpx.Client, lane: list[int]) -> None:
        for i in lane:
            if stop.is_set():
                return
            d = deliveries[i]
            attempted[i] = True
            hdrs = {"Content-Type": "application/json", "User-Agent": user_agent_of(d.body)}
            for attempt in range(retries + 1):
                t = _now_ms()
                try:
                    r = client.post(url, content=d.body, headers=hdrs)
                except httpx.TransportError as exc:
                    why = repr(exc)
                else:
                    if 200 <= r.status_code < 300:
                        stamps[i] = t
                        with lock:
                            counters["ok"] += 1
                        break
                    if r.status_code == 400:  # refused at the edge (the collector's not_json): not published
                        with lock:
                            counters["refused"] += 1
                        break
                    if r.status_code != 503:
                        fail(i, f"HTTP {r.status_code}: {r.text[:200]}")
                        break
                    why = "HTTP 503"
                if attempt == retries:
                    fail(i, f"gave up after {retries + 1} attempts: {why}")
                    break
                with lock:
                    counters["retried"] += 1
                if stop.wait(min(5.0, 0.1 * 2**attempt)):
                    fail(i, f"interrupted while retrying: {why}")
                    return

    started = time.monotonic()
    with httpx.Client(timeout=timeout_s, limits=httpx.Limits(max_connections=concurrency,
                                                               max_keepalive_connections=concurrency)) as client:
        threads = [threading.Thread(target=lane_worker, args=(client, lane), daemon=True, name=f"sim-post-{k}")
                   for k, lane in enumerate(lanes) if lane]
        for th in threads:
            th.start()
        try:
            while any(th.is_alive() for th in threads):
                for th in threads:
                    th.join(0.2)
                if progress is not None:
                    progress(counters["ok"], n)
        except KeyboardInterrupt:
            result.interrupted = True
            stop.set()
            for th in threads:
                th.join()
    result.sent = counters["ok"]
    result.failed = counters["err"]
    result.retried = counters["retried"]
    result.refused = counters["refused"]
    result.not_attempted = n - sum(attempted)
    result.sent_deliveries = [Delivery(s, d.key, d.body) for d, s in zip(deliveries, stamps) if s is not None]
    return _finish(result, n, started, progress, raise_on_failure)


# --------------------------------------------------------------------------------------------
# For `is-telemetry up`
# --------------------------------------------------------------------------------------------


def backfill(
    settings_bootstrap: str,
    topic: str,
    deployments: int,
    cli_installs: int,
    days: int,
    seed: int,
    progress: Progress | None = None,
    generated: Callable[[Simulation], None] | None = None,
) -> int:
    """Send days [today-days, today-1] (UTC) straight to Kafka with those days' receive times; returns records sent.
    `generated` sees the simulation before it is sent (`is-telemetry up` derives what must be stored from it).

    Raises SendError if a send failed, KeyboardInterrupt (after flushing) if interrupted. The topic must exist.
    """
    if days <= 0 or deployments + cli_installs <= 0:
        return 0
    sim = generate(deployments, cli_installs, days, seed, end_day=_utc_today() - timedelta(days=1))
    if generated is not None:
        generated(sim)
    result = send_to_kafka(sim.deliveries, settings_bootstrap, topic, progress=progress)
    if result.interrupted:
        raise KeyboardInterrupt
    return result.sent


BACKFILL_RECORD = "simulator-backfill.json"  # in the data directory: the fleets whose history it holds


def _fleet(deployments: int, cli_installs: int, seed: int) -> str:
    return f"seed={seed},deployments={deployments},cli_installs={cli_installs}"


def recorded_backfill(data_dir: Path, deployments: int, cli_installs: int, seed: int) -> dict[str, Any] | None:
    """The record of this fleet's backfill into `data_dir` (its history is stored: not to be sent again), or None."""
    try:
        done = orjson.loads((data_dir / BACKFILL_RECORD).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    entry = done.get(_fleet(deployments, cli_installs, seed)) if isinstance(done, dict) else None
    return entry if isinstance(entry, dict) else None


def stored_expectation(sim: Simulation, plausibility_limit: int = DEFAULT_PLAUSIBILITY_LIMIT) -> dict[date, tuple[int, int]]:
    """Per day: (UID-days, rejected bodies) that ClickHouse holds (after duplicates collapse) once `sim` is stored."""
    uid_days: dict[date, set[str]] = {}
    rejected: Counter[date] = Counter()
    for received_at_ms, _key, body in sim.deliveries:
        day = day_of(received_at_ms)
        result = validate(body, plausibility_limit)
        if isinstance(result, Rejection):
            rejected[day] += 1
        else:
            uid_days.setdefault(day, set()).add(result.uid)
    return {d: (len(uid_days.get(d, ())), rejected[d]) for d in sorted(set(uid_days) | set(rejected))}


def record_backfill(data_dir: Path, deployments: int, cli_installs: int, seed: int, days: int, records: int) -> None:
    """Remember that this fleet's history (`days` up to yesterday) is stored from `data_dir`'s pipeline."""
    path = data_dir / BACKFILL_RECORD
    try:
        done = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        done = {}
    done[_fleet(deployments, cli_installs, seed)] = {
        "days": days, "through": str(_utc_today() - timedelta(days=1)), "records": records,
        "stored_at": datetime.now(UTC).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(orjson.dumps(done, option=orjson.OPT_INDENT_2))
    tmp.replace(path)


class LiveFeed:
    """Today's bodies of the same fleet (same seed) POSTed to the collector until `stop_event` is set.

    Each deployment (and each CLI install used today) once, in time-of-day order, at `rate_per_s`;
    then every `1/idle_rate_per_s` seconds an exact re-send or a changed body of a random sender.
    A new UTC day starts a new pass. Connection errors and 503 wait and retry the same body.
    """

    def __init__(self, collector_url: str, deployments: int, cli_installs: int, seed: int,
                 stop_event: threading.Event, rate_per_s: float = 20.0, idle_rate_per_s: float = 0.2,
                 malformed_rate: float = 0.01, timeout_s: float = 10.0) -> None:
        self.url, self.deployments, self.cli_installs, self.seed = collector_url, deployments, cli_installs, seed
        self.stop_event, self.rate_per_s, self.idle_rate_per_s = stop_event, rate_per_s, idle_rate_per_s
        self.malformed_rate, self.timeout_s = malformed_rate, timeout_s
        self.posted = 0
        self.refused = 0  # 400: bodies the collector refuses at the edge (not JSON)
        self.failed = 0

    def _day_bodies(self, day: date) -> list[bytes]:
        sim = generate(self.deployments, self.cli_installs, 1, self.seed, end_day=day, resend_rate=0.0,
                       changed_rate=0.0, missed_rate=0.0, malformed_rate=self.malformed_rate,
                       now_ms=_day_start_ms(day) + DAY_MS - 1)
        return [d.body for d in sim.deliveries]

    def _post(self, client: Any, body: bytes) -> None:
        import httpx

        hdrs = {"Content-Type": "application/json", "User-Agent": user_agent_of(body)}
        backoff = 0.2
        while not self.stop_event.is_set():
            try:
                r = client.post(self.url, content=body, headers=hdrs)
            except httpx.TransportError as exc:
                log.debug("live feed: %r, retrying", exc)
            else:
                if 200 <= r.status_code < 300:
                    self.posted += 1
                    return
                if r.status_code == 400:
                    self.refused += 1
                    return
                if r.status_code != 503:
                    self.failed += 1
                    log.warning("live feed: collector answered %s", r.status_code)
                    return
            if self.stop_event.wait(backoff):
                return
            backoff = min(5.0, backoff * 2)

    def run(self) -> int:
        import httpx

        rng = random.Random(f"simulator:{self.seed}:live")
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self.stop_event.is_set():
                day = _utc_today()
                bodies = self._day_bodies(day)
                for body in bodies:
                    if self.stop_event.is_set() or _utc_today() != day:
                        break
                    self._post(client, body)
                    self.stop_event.wait(1.0 / self.rate_per_s if self.rate_per_s > 0 else 0)
                valid = [b for b in bodies if key_of(b) is not None and not isinstance(judge(b), Rejected)]
                while not self.stop_event.is_set() and _utc_today() == day:
                    if self.stop_event.wait(1.0 / self.idle_rate_per_s if self.idle_rate_per_s > 0 else 3600):
                        break
                    if not valid:
                        continue
                    body = rng.choice(valid)
                    if rng.random() < 0.5:
                        body = build_body(_changed(orjson.loads(body), rng))
                    self._post(client, body)
        return self.posted


def live_feed(collector_url: str, deployments: int, cli_installs: int, seed: int, stop_event: threading.Event,
              rate_per_s: float = 20.0) -> int:
    """Run a LiveFeed until stop_event is set; returns the number of bodies the collector accepted."""
    return LiveFeed(collector_url, deployments, cli_installs, seed, stop_event, rate_per_s=rate_per_s).run()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


class _ProgressLine:
    """A live line on stderr: done/total and rate, at most ~8 redraws per second."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.12 and done < total:
            return
        self.last = now
        rate = done / (now - self.started) if now > self.started else 0.0
        self.stream.write(f"\r{self.label} {done}/{total} ({rate:,.0f}/s)   ")
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def command(
    deployments: Annotated[int, typer.Option("--deployments", min=0, help="Identity Server deployments")] = 300,
    cli_installs: Annotated[int, typer.Option("--cli-installs", min=0, help="CLI installs")] = 100,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of telemetry, ending --end-day")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Same seed + flags = same deliveries")] = 1,
    end_day: Annotated[Optional[str], typer.Option("--end-day", help="Last day, YYYY-MM-DD (UTC); default today (only up to now)")] = None,
    kafka: Annotated[Optional[str], typer.Option("--kafka", help="Produce straight to Kafka at host:port,... (receive times as generated; default: kafka.bootstrap_servers)")] = None,
    collector: Annotated[Optional[str], typer.Option("--collector", help="POST to the collector URL instead (it stamps its own receive time)")] = None,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Kafka topic (default: kafka.raw_topic)")] = None,
    ground_truth_file: Annotated[Optional[Path], typer.Option("--ground-truth", help="Write the expected aggregates of what was sent (JSON)")] = None,
    resend_rate: Annotated[float, typer.Option("--resend-rate", min=0.0, max=1.0, help="Exact re-sends later the same day, per message")] = 0.05,
    changed_rate: Annotated[float, typer.Option("--changed-rate", min=0.0, max=1.0, help="A later, different body the same day, per message")] = 0.03,
    missed_rate: Annotated[float, typer.Option("--missed-rate", min=0.0, max=1.0, help="Deployment-days without a message")] = 0.05,
    malformed_rate: Annotated[float, typer.Option("--malformed-rate", min=0.0, max=1.0, help="Messages replaced by a malformed body")] = 0.01,
    inconsistent_rate: Annotated[float, typer.Option("--inconsistent-rate", min=0.0, max=1.0, help="IS messages with inconsistent active windows")] = 0.02,
    default_uid_rate: Annotated[float, typer.Option("--default-uid-rate", min=0.0, max=1.0, help="Deployments on the shared default-URL UID")] = 0.04,
    jump_rate: Annotated[float, typer.Option("--jump-rate", min=0.0, max=1.0, help="IS messages whose end-device figures jump 20-200 fold for a day")] = 0.001,
    analyst_truth_file: Annotated[Optional[Path], typer.Option("--analyst-ground-truth", help="Write the expected analyst views (producers/fleet_truth.py) of what was sent (JSON)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Parallel HTTP connections (--collector)")] = 8,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Generate (and write --ground-truth) without sending")] = False,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML config file (for the default Kafka and topic)")] = None,
) -> None:
    """Simulate a fleet of TTS deployments and CLI installs; send to Kafka or the collector, write the ground truth."""
    if kafka and collector:
        typer.echo("error: give --kafka or --collector, not both", err=True)
        raise typer.Exit(2)
    try:
        sim = generate(deployments, cli_installs, days, seed, end_day, resend_rate=resend_rate,
                       changed_rate=changed_rate, missed_rate=missed_rate, malformed_rate=malformed_rate,
                       inconsistent_rate=inconsistent_rate, default_uid_rate=default_uid_rate, jump_rate=jump_rate)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    st = sim.stats
    typer.echo(
        f"generated {len(sim.deliveries)} deliveries over {days} day(s) {sim.days[0]}..{sim.days[-1]}: "
        f"{st.get('is_messages', 0)} IS, {st.get('cli_messages', 0)} CLI, {st.get('resend', 0)} re-sends, "
        f"{st.get('changed', 0)} changed, {st.get('malformed', 0)} malformed, {st.get('missed', 0)} missed days",
        err=True,
    )

    def finish(sent: list[Delivery]) -> None:
        if ground_truth_file is not None:
            write_ground_truth(ground_truth(sent), ground_truth_file)
            typer.echo(f"ground truth of {len(sent)} deliveries written to {ground_truth_file}", err=True)
        if analyst_truth_file is not None:
            from producers.fleet_truth import analyst_ground_truth

            write_ground_truth(analyst_ground_truth(sent), analyst_truth_file)
            typer.echo(f"analyst ground truth of {len(sent)} deliveries written to {analyst_truth_file}", err=True)

    if dry_run:
        finish(sim.deliveries)
        return

    if collector:
        if days > 1 or (end_day and date.fromisoformat(end_day) != _utc_today()):
            typer.echo("note: over HTTP the collector stamps its own time: every day's bodies arrive as today's "
                       "(ground truth uses our clock at send time)", err=True)
        line = _ProgressLine(f"POST {collector}")
        try:
            result = send_to_collector(sim.deliveries, collector, concurrency=concurrency, progress=line,
                                       raise_on_failure=False)
        finally:
            line.end()
    else:
        from is_telemetry.config import load_settings
        from is_telemetry.kafka import ensure_topics

        try:
            settings = load_settings(config, kafka={"bootstrap_servers": kafka})
        except Exception as exc:  # noqa: BLE001
            typer.echo(f"error: bad configuration: {exc}", err=True)
            raise typer.Exit(2) from exc
        topic = topic or settings.kafka.raw_topic
        try:
            ensure_topics(settings, timeout_s=15.0)
        except Exception as exc:  # noqa: BLE001
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        line = _ProgressLine(f"kafka {settings.bootstrap_servers} {topic}")
        try:
            result = send_to_kafka(sim.deliveries, settings.bootstrap_servers, topic, progress=line,
                                   raise_on_failure=False)
        finally:
            line.end()
    typer.echo(result.summary(), err=True)
    for e in result.errors[:5]:
        typer.echo(f"  {e}", err=True)
    finish(result.sent_deliveries)
    if result.interrupted:
        raise typer.Exit(130)
    if not result.ok:
        raise typer.Exit(1)
