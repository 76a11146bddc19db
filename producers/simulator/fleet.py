"""The simulated fleet: Identity Server deployments and CLI installs with their sizes, versions, platforms, regions
and lives (producers/fleet_lifecycle.py), drawn from the distributions documented in docs/simulator.md.
"""

from __future__ import annotations

import hashlib
import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from core.schema import DEFAULT_UID
from core.uid import uid_from_elements
from producers.fleet_lifecycle import Lifecycle, cli_lifecycle, deployment_lifecycle
from producers.simulator.deliveries import DAY_MS

#: IS minor versions (3.x) and their weight in the fleet.
_IS_MINORS = {
    21: 2,
    22: 2,
    23: 3,
    24: 3,
    25: 4,
    26: 4,
    27: 6,
    28: 5,
    29: 6,
    30: 8,
    31: 9,
    32: 12,
    33: 13,
    34: 12,
    35: 8,
}


_CLI_MINORS = {26: 2, 27: 3, 28: 3, 29: 4, 30: 6, 31: 7, 32: 9, 33: 10, 34: 10, 35: 8}


_PATCH_WEIGHTS = [5, 4, 3, 2, 1]  # x.y.0 .. x.y.4


#: Older senders (<= 3.27) send users.total and leave gateways.total at 0.
OLD_SENDER_MAX_MINOR = 27


#: CLI versions from this minor are the 2025 CLI: they send command usage in "cli" (before: {}), each report counting
#: the uses since the previous one, and keep their state in telemetry.json (3.32 and older: telemetry.yml), so an
#: install that upgrades to one starts a new UID.
CLI_USAGE_MIN_MINOR = 34


#: Go release by TTS minor version.
_GO_BY_MINOR = [(22, "1.18"), (25, "1.19"), (28, "1.20"), (30, "1.21"), (32, "1.22"), (34, "1.23"), (99, "1.24")]


_IS_PLATFORMS = [
    (("linux", "amd64"), 78),
    (("linux", "arm64"), 14),
    (("linux", "arm"), 2),
    (("darwin", "arm64"), 3),
    (("darwin", "amd64"), 1),
    (("windows", "amd64"), 2),
]


_CLI_PLATFORMS = [
    (("darwin", "arm64"), 30),
    (("darwin", "amd64"), 8),
    (("linux", "amd64"), 35),
    (("linux", "arm64"), 5),
    (("windows", "amd64"), 20),
    (("windows", "arm64"), 2),
]


#: Region -> weight, and the frequency-plan combinations its gateways use (a combination of several
#: IDs is a gateway configured with several plans: each ID gets the gateway's count).
_REGIONS: dict[str, tuple[int, list[tuple[tuple[str, ...], int]]]] = {
    "EU": (
        45,
        [
            (("EU_863_870_TTN",), 6),
            (("EU_863_870",), 4),
            (("EU_863_870", "EU_863_870_TTN"), 1),
            (("EU_863_870_ROAMING_DRAFT",), 1),
        ],
    ),
    "US": (20, [(("US_902_928_FSB_2",), 7), (("US_902_928_FSB_1",), 3), (("US_902_928_FSB_1", "US_902_928_FSB_2"), 1)]),
    "AU": (7, [(("AU_915_928_FSB_2",), 5), (("AU_915_928_FSB_1",), 1)]),
    "AS": (
        10,
        [
            (("AS_923",), 5),
            (("AS_923_2",), 2),
            (("AS_923_3",), 2),
            (("AS_920_923_LBT",), 1),
            (("AS_923", "AS_923_2"), 1),
        ],
    ),
    "IN": (5, [(("IN_865_867",), 1)]),
    "KR": (3, [(("KR_920_923_TTN",), 1)]),
    "RU": (3, [(("RU_864_870_TTN",), 1)]),
    "CN": (2, [(("CN_470_510_FSB_11",), 1)]),
    "ISM": (1, [(("ISM_2400_3CH_DRAFT2",), 1)]),
    "MA": (1, [(("MA_869_870_DRAFT",), 1)]),  # a plan no region rule of the analyst views knows: region "other"
}


#: cobra's command paths, as the 2025 CLI reports them: without the binary name.
_CLI_COMMANDS = [
    "end-devices list",
    "end-devices get",
    "end-devices create",
    "end-devices set",
    "gateways list",
    "gateways get",
    "applications list",
    "applications create",
    "login",
    "users get",
    "organizations list",
    "simulate uplink",
    "end-devices templates extend",
    "applications link get",
]


_CLI_ALIASES = [
    ("end-devices", "dev"),
    ("end-devices", "devices"),
    ("end-devices", "ed"),
    ("applications", "apps"),
    ("applications", "app"),
    ("gateways", "gtw"),
    ("gateways", "gw"),
    ("organizations", "orgs"),
    ("users", "user"),
]


#: Upper bound of any generated valid count (far below the plausibility limit).
COUNT_CAP = 5_000_000


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
        released = datetime(2022, 8, 1, tzinfo=UTC) + timedelta(
            days=(minor - 21) * 50 + patch * 9, seconds=int(commit, 16) % 86400
        )
        return f"{v} ({commit}, {released.strftime('%Y-%m-%dT%H:%M:%SZ')})"
    return v


def go_version(minor: int, patch: int, quirk: bool = False) -> str:
    """The Go release TTS 3.<minor>.<patch> was built with; `quirk` adds the documented leading space."""
    go = next(g for m, g in _GO_BY_MINOR if minor <= m)
    s = f"go{go}.{(minor * 7 + patch * 3) % 10}"
    return " " + s if quirk else s


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
    commands: list[tuple[str, float]]  # (command_path, mean executions between two reports)
    aliases: list[tuple[str, str, float]]  # (command_name, alias, mean uses between two reports)
    life: Lifecycle = field(default_factory=Lifecycle)  # upgrades, churn
    uid_2025: str = ""  # the UID its 2025 CLI makes (no telemetry.json yet): what it reports under from then on

    def uid_on(self, minor: int) -> str:
        """The UID it reports under on CLI 3.<minor>: a 2025 CLI's own, else the one of telemetry.yml."""
        return self.uid_2025 if minor >= CLI_USAGE_MIN_MINOR else self.uid


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
    devices = 0 if rng.random() < 0.18 else min(COUNT_CAP, int(size * rng.lognormvariate(1.2, 0.9)))
    gateways = min(COUNT_CAP, int(devices / rng.lognormvariate(3.0, 0.8)) + (1 if rng.random() < 0.7 else 0))
    applications = min(
        COUNT_CAP, (1 if devices else int(rng.random() < 0.5)) + int(devices / rng.lognormvariate(3.3, 1.0))
    )
    users_standard = min(COUNT_CAP, max(0, int(size * rng.lognormvariate(0.2, 1.0)) - 1))
    users_admin = 1 + int(rng.paretovariate(2.5)) - 1 + (users_standard // 200)
    organizations = min(COUNT_CAP, int(users_standard / rng.lognormvariate(1.9, 0.7)))
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
        index=i,
        uid=uid,
        operating_system=os_,
        arch=arch,
        minor=minor,
        patch=patch,
        dev=dev,
        commit_suffix=not dev and rng.random() < 0.35,
        go_quirk=rng.random() < (0.5 if dev else 0.04),
        age_days=age,
        time_of_day_ms=rng.randrange(DAY_MS),
        end_devices=devices,
        gateways=gateways,
        applications=applications,
        users_standard=users_standard,
        users_admin=users_admin,
        organizations=organizations,
        ratio_active=rng.uniform(0.35, 1.0),
        ratio_month=rng.uniform(0.6, 1.0),
        ratio_week=rng.uniform(0.65, 1.0),
        ratio_day=rng.uniform(0.5, 1.0),
        device_growth=rng.uniform(-0.001, 0.006),
        plan_combos=[(c, w / total_w) for c, w in combos.items()],
    )


def _make_cli(rng: random.Random, i: int) -> CliInstall:
    os_, arch = _weighted(rng, _CLI_PLATFORMS)
    minor = _weighted(rng, _CLI_MINORS)
    patch = _weighted(rng, list(enumerate(_PATCH_WEIGHTS)))
    uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    commands = [(path, rng.uniform(1, 12)) for path in rng.sample(_CLI_COMMANDS, rng.randint(1, 6))]
    aliases = [(name, alias, rng.uniform(0.5, 5)) for name, alias in rng.sample(_CLI_ALIASES, rng.randint(0, 3))]
    return CliInstall(
        index=i,
        uid=uid,
        operating_system=os_,
        arch=arch,
        minor=minor,
        patch=patch,
        use_probability=min(1.0, rng.betavariate(0.8, 1.6) + 0.05),
        age_days=rng.randint(1, 60) if rng.random() < 0.3 else 10_000,
        commands=commands,
        aliases=aliases,
        uid_2025=str(uuid.UUID(int=random.Random(f"{uid}:telemetry.json").getrandbits(128), version=4)),
    )


def build_fleet(deployments: int, cli_installs: int, seed: int, default_uid_rate: float = 0.04) -> Fleet:
    """The same fleet for the same arguments (independent of days and rates)."""
    rng_is = random.Random(f"simulator:{seed}:deployments")
    rng_cli = random.Random(f"simulator:{seed}:cli")
    fleet = Fleet(
        [_make_deployment(rng_is, i, default_uid_rate) for i in range(deployments)],
        [_make_cli(rng_cli, i) for i in range(cli_installs)],
    )
    rng_life = random.Random(f"simulator:{seed}:lifecycle")
    for dep in fleet.deployments:  # -dev builds and the tiny default-UID setups never upgrade
        dep.life = deployment_lifecycle(rng_life, frozen=dep.dev or dep.default_uid, dev=dep.dev)
    for ci in fleet.cli_installs:
        ci.life = cli_lifecycle(rng_life)
    return fleet
