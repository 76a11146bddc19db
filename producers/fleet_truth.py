"""Ground truth of the analyst views of the fleet over time (sinks/migrations/0002_analyst_depth.sql, and the CLI
usage of 0006_cli_reports.sql), computed from the deliveries.

Independent of the pipeline's code on purpose: its own UTC day bucketing, version parsing and validity rules
(producers/truth_rules.py), inconsistency flags, size buckets, frequency-plan regions, look-backs, lifecycle rules
and CLI usage rules (every distinct report of a UID and day counts: the 2025 CLI resets its counts after each
report; the usage lists are read in the cli object and one object down), all from the semantics documented in
docs/analysts.md, docs/processing.md and docs/telemetry-message.md, so that a bug on either side shows up as a
difference. What it shares with the pipeline is the message definition (core/schema.py: the fields of a
valid body, the names and paths of the summed counts, the default UID, the plausibility limit's default).

`analyst_ground_truth(deliveries)` returns {view name: rows}, each row a dict with exactly the view's columns
(days as ISO strings); `lifecycle()`, `carried_fleet()`, `jumps()` and `cli_usage()` take other gaps, look-backs
and factors, as the parameterized views do.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from core.schema import DEFAULT_UID, PLAUSIBILITY_LIMIT, SUMMED_COUNTS
from producers.truth_rules import Rejected, judge, utc_day, version_of

LOOKBACK = 7  # days a deployment's latest report is carried forward (fleet_daily_carried)
CLI_LOOKBACK = 30  # days a CLI install counts as active after a report
GAP = 7  # silent days that make a UID churned / returning
FACTOR = 10  # day-over-day jump factor
JUMP_FLOOR = 100  # a jump needs the larger of the two figures to be at least this
#: docs/analysts.md, "Regions": plan ID prefix -> region; other plans are in "other".
REGION_PREFIXES = [
    ("EU_863_870", "EU868"),
    ("EU_433", "EU433"),
    ("US_902_928", "US915"),
    ("AU_915_928", "AU915"),
    ("AS_923", "AS923"),
    ("AS_920_923", "AS923"),
    ("CN_470_510", "CN470"),
    ("CN_779_787", "CN779"),
    ("IN_865_867", "IN865"),
    ("KR_920_923", "KR920"),
    ("RU_864_870", "RU864"),
    ("ISM_2400", "ISM2400"),
]
#: docs/analysts.md, "The newest version": a version is established on a day when at least NEWEST_MIN deployments and
#: at least NEWEST_MIN_PERCENT % of the day's carried-forward deployments run a release build of it (not -dev).
NEWEST_MIN = 3
NEWEST_MIN_PERCENT = 1
BUCKETS = [0, 1, 10, 100, 1000, 10000]
JUMP_METRICS = ["end_devices", "gateways", "applications", "users", "organizations"]


def ordinal(version: str) -> int:
    """major * 1000 + minor, 0 for 'unknown'."""
    if version == "unknown":
        return 0
    major, minor = version.split(".")
    return int(major) * 1000 + int(minor)


def region_of(plan: str) -> str:
    return next((region for prefix, region in REGION_PREFIXES if plan.startswith(prefix)), "other")


def bucket_of(n: int) -> int:
    return max(b for b in BUCKETS if b <= n) if n else 0


def bucket_label(b: int) -> str:
    return "0" if b == 0 else "10000+" if b == 10000 else f"{b}-{b * 10 - 1}"


def usage_holders(cli: Any) -> list[dict[str, Any]]:
    """The objects of a CLI message's `cli` whose `commands` and `aliases` lists count (docs/telemetry-message.md: TTS's
    CmdData, inlined in the cli object or in an object one level down; lists deeper down are unknown fields)."""
    if not isinstance(cli, dict):
        return []
    return [cli, *(v for v in cli.values() if isinstance(v, dict))]


def reports_usage(cli: Any) -> bool:
    """A 2025 CLI's report: it carries command usage (`commands` or `aliases`, even null) where it is read."""
    return any("commands" in h or "aliases" in h for h in usage_holders(cli))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def commands_of(cli: Any) -> list[tuple[str, int]]:
    """(command_path, execution_count) of every command of a report, where it is read; one without a path is left
    out, a missing count is 0."""
    return [
        (c["command_path"], _count(c.get("execution_count")))
        for h in usage_holders(cli)
        for c in h.get("commands") or ()
        if isinstance(c, dict) and isinstance(c.get("command_path"), str)
    ]


def aliases_of(cli: Any) -> list[tuple[str, str, int]]:
    """(command_name, alias, usage_count) of every alias of a report, where it is read; one without a command name
    or an alias is left out."""
    return [
        (a["command_name"], a["alias"], _count(a.get("usage_count")))
        for h in usage_holders(cli)
        for a in h.get("aliases") or ()
        if isinstance(a, dict) and isinstance(a.get("command_name"), str) and isinstance(a.get("alias"), str)
    ]


@dataclass(frozen=True)
class Snap:
    """The fields of one (day, UID) snapshot the analyst views use."""

    day: date
    uid: str
    kind: str
    version: str
    dev: bool
    operating_system: str
    arch: str
    counts: Mapping[str, int]
    plans: Mapping[str, int]
    inconsistent: bool
    reports_usage: bool = False  # a CLI report with command usage: a 2025 CLI

    @property
    def gateways_effective(self) -> int:
        return self.counts["gateways"] or sum(self.plans.values())

    @property
    def default_uid(self) -> bool:
        return self.uid == DEFAULT_UID

    def jump_figures(self) -> dict[str, int]:
        c = self.counts
        return {
            "end_devices": c["end_devices"],
            "gateways": self.gateways_effective,
            "applications": c["applications"],
            "users": c["users_standard"] + c["users_admin"],
            "organizations": c["organizations"],
        }


def _snap(day: date, m: Any) -> Snap:
    os_ = m.os
    ec = m.entities_count
    counts = dict.fromkeys(SUMMED_COUNTS, 0)
    plans: dict[str, int] = {}
    inconsistent = False
    if ec is not None:
        a = ec.end_devices.activate_end_devices
        counts.update(zip(SUMMED_COUNTS, ec.summed()))
        plans = dict(ec.gateways.gateways_by_frequency_plan_id)
        inconsistent = (
            a.last_day > a.last_week
            or a.last_week > a.last_month
            or a.last_month > a.total
            or a.total > ec.end_devices.total
        )
    binary_version = os_.binary_version if os_ else ""
    return Snap(
        day=day,
        uid=m.uid,
        kind="is" if ec is not None else "cli",
        version=version_of(binary_version) if os_ else "unknown",
        dev="-dev" in binary_version,
        operating_system=os_.operating_system if os_ else "",
        arch=os_.arch if os_ else "",
        counts=counts,
        plans=plans,
        inconsistent=inconsistent,
        reports_usage=reports_usage(m.cli),
    )


@dataclass
class Snapshots:
    """The latest valid message per (UTC day, UID), as the pipeline keeps it."""

    by_key: dict[tuple[date, str], Snap] = field(default_factory=dict)
    days_of: dict[str, list[date]] = field(default_factory=dict)  # uid -> sorted days seen
    kind_of: dict[str, str] = field(default_factory=dict)
    #: every CLI report, not only the latest: (day, uid) -> {body: its cli object}; an exact re-send is one body
    reports: dict[tuple[date, str], dict[bytes, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, deliveries: Iterable[Sequence[Any]], plausibility_limit: int = PLAUSIBILITY_LIMIT) -> Snapshots:
        latest: dict[tuple[date, str], tuple[int, Any]] = {}
        out = cls()
        for received_at_ms, _key, body in deliveries:
            m = judge(body, plausibility_limit)
            if isinstance(m, Rejected):
                continue
            k = (utc_day(received_at_ms), m.uid)
            if k not in latest or received_at_ms >= latest[k][0]:
                latest[k] = (received_at_ms, m)
            if m.cli is not None:
                out.reports.setdefault(k, {})[bytes(body)] = m.cli
        days: dict[str, set[date]] = defaultdict(set)
        for (day, uid), (_t, m) in latest.items():
            out.by_key[(day, uid)] = snap = _snap(day, m)
            days[uid].add(day)
            out.kind_of[uid] = snap.kind
        out.days_of = {uid: sorted(ds) for uid, ds in days.items()}
        return out

    @property
    def days(self) -> list[date]:
        """Days with at least one valid message."""
        return sorted({d for d, _ in self.by_key})

    def latest(self, uid: str, first: date, last: date) -> Snap | None:
        """The UID's latest snapshot of [first, last]."""
        best = None
        for d in self.days_of[uid]:
            if first <= d <= last:
                best = d
        return self.by_key[(best, uid)] if best is not None else None

    def carried(self, day: date, kind: str, lookback: int) -> list[Snap]:
        """Each UID of `kind` with its latest snapshot of [day - lookback + 1, day]."""
        out = []
        for uid, k in self.kind_of.items():
            if k == kind:
                s = self.latest(uid, day - timedelta(days=lookback - 1), day)
                if s is not None:
                    out.append(s)
        return out

    def reported(self, day: date, kind: str) -> list[Snap]:
        return [s for (d, _u), s in self.by_key.items() if d == day and s.kind == kind]


def _share(part: int, total: int) -> float:
    return round(part / total, 6) if total else float("nan")


# -- the carried-forward fleet ---------------------------------------------------------------------------------


def carried_fleet(snaps: Snapshots, lookback: int = LOOKBACK) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        is_ = snaps.carried(day, "is", lookback)
        row: dict[str, Any] = {
            "day": day.isoformat(),
            "deployments": len(is_),
            "cli_installs": len(snaps.carried(day, "cli", lookback)),
        }
        for name in SUMMED_COUNTS:
            row[name] = sum(s.counts[name] for s in is_)
        row["default_uid_deployments"] = sum(s.default_uid for s in is_)
        row["inconsistent_deployments"] = sum(s.inconsistent for s in is_)
        rows.append(row)
    return rows


def fleet_size(snaps: Snapshots) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        for dimension, size in (
            ("gateways", lambda s: s.gateways_effective),
            ("end_devices", lambda s: s.counts["end_devices"]),
        ):
            carried = Counter(bucket_of(size(s)) for s in snaps.carried(day, "is", LOOKBACK))
            reported = Counter(bucket_of(size(s)) for s in snaps.reported(day, "is"))
            rows += [
                {
                    "day": day.isoformat(),
                    "dimension": dimension,
                    "bucket_min": b,
                    "bucket": bucket_label(b),
                    "deployments": reported[b],
                    "deployments_carried": n,
                }
                for b, n in carried.items()
            ]
    return rows


def regions(snaps: Snapshots) -> list[dict[str, Any]]:
    def tally(ss: list[Snap]) -> tuple[Counter[str], Counter[str]]:
        deployments: Counter[str] = Counter()
        gateways: Counter[str] = Counter()
        for s in ss:
            deployments.update({region_of(p) for p, g in s.plans.items() if g > 0})
            for p, g in s.plans.items():
                gateways[region_of(p)] += g
        return deployments, gateways

    rows = []
    for day in snaps.days:
        dep, gw = tally(snaps.reported(day, "is"))
        dep_c, gw_c = tally(snaps.carried(day, "is", LOOKBACK))
        rows += [
            {
                "day": day.isoformat(),
                "region": r,
                "deployments": dep[r],
                "gateways": gw[r],
                "deployments_carried": dep_c[r],
                "gateways_carried": gw_c[r],
            }
            for r in gw_c
            if gw_c[r] > 0
        ]
    return rows


# -- versions --------------------------------------------------------------------------------------------------


def established(carried: list[Snap]) -> set[str]:
    """The versions that pass the bar among one day's carried-forward deployments: run (a release build, not -dev)
    by at least NEWEST_MIN of them and by at least NEWEST_MIN_PERCENT % of them."""
    releases = Counter(s.version for s in carried if not s.dev and s.version != "unknown")
    return {v for v, n in releases.items() if n >= NEWEST_MIN and n * 100 >= NEWEST_MIN_PERCENT * len(carried)}


def version_adoption(snaps: Snapshots) -> list[dict[str, Any]]:
    """Per day, the established versions only (the others still show in the version shares)."""
    rows = []
    for day in snaps.days:
        carried = snaps.carried(day, "is", LOOKBACK)
        per = Counter(s.version for s in carried)
        bar = established(carried)
        for v, n in per.items():
            if v not in bar:
                continue
            above = sum(c for w, c in per.items() if ordinal(w) >= ordinal(v) > 0) if v != "unknown" else 0
            rows.append(
                {
                    "day": day.isoformat(),
                    "version": v,
                    "deployments": n,
                    "deployments_at_or_above": above,
                    "active_deployments": len(carried),
                    "share": _share(n, len(carried)),
                    "share_at_or_above": _share(above, len(carried)),
                }
            )
    return rows


def version_adoption_speed(adoption: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first_day = min((r["day"] for r in adoption), default=None)
    out = []
    for v in sorted({r["version"] for r in adoption if r["version"] != "unknown"}):
        rows = sorted((r for r in adoption if r["version"] == v and r["deployments"] > 0), key=lambda r: r["day"])
        first = rows[0]["day"]
        half = next((r["day"] for r in rows if r["deployments_at_or_above"] * 2 >= r["active_deployments"]), None)
        out.append(
            {
                "version": v,
                "first_seen": first,
                "half_on": half,
                "days_to_half": (date.fromisoformat(half) - date.fromisoformat(first)).days if half else None,
                "seen_on_first_day": first == first_day,
            }
        )
    return out


def newest(carried: list[Snap]) -> int:
    """The newest established version (0: none): one deployment alone cannot set it."""
    return max((ordinal(v) for v in established(carried)), default=0)


def versions_behind(snaps: Snapshots) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        carried = snaps.carried(day, "is", LOOKBACK)
        top = newest(carried)
        label = f"{top // 1000}.{top % 1000}" if top else ""
        per = Counter(max(top - ordinal(s.version), 0) for s in carried if s.version != "unknown")
        rows += [
            {"day": day.isoformat(), "newest_version": label, "behind": b, "deployments": n} for b, n in per.items()
        ]
    return rows


BEHIND_TOP = 25  # deployments_behind_daily: the largest this many
BEHIND_MIN = 3  # ... of those at least this many minor versions behind


def deployments_behind_top(snaps: Snapshots) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        carried = snaps.carried(day, "is", LOOKBACK)
        top = newest(carried)
        behind = [s for s in carried if s.version != "unknown" and top - ordinal(s.version) >= BEHIND_MIN]
        behind.sort(key=lambda s: (-s.counts["end_devices"], s.uid))
        rows += [
            {
                "day": day.isoformat(),
                "uid": s.uid,
                "version": s.version,
                "behind": top - ordinal(s.version),
                "end_devices": s.counts["end_devices"],
                "gateways": s.gateways_effective,
            }
            for s in behind[:BEHIND_TOP]
        ]
    return rows


def deployments_behind(snaps: Snapshots, day: date, min_behind: int) -> list[dict[str, Any]]:
    carried = snaps.carried(day, "is", LOOKBACK)
    top = newest(carried)
    if not top:
        return []
    return [
        {
            "day": day.isoformat(),
            "uid": s.uid,
            "source_day": s.day.isoformat(),
            "version": s.version,
            "newest_version": f"{top // 1000}.{top % 1000}",
            "behind": max(top - ordinal(s.version), 0),
        }
        for s in carried
        if s.version != "unknown" and max(top - ordinal(s.version), 0) >= min_behind
    ]


# -- CLI -------------------------------------------------------------------------------------------------------


def cli_active(snaps: Snapshots) -> list[dict[str, Any]]:
    """cli_installs_active_daily: the installs with a report of the last 30 days, each by its latest report."""
    active_rows = []
    for day in snaps.days:
        active = snaps.carried(day, "cli", CLI_LOOKBACK)
        for dimension, value in (
            ("version", lambda s: s.version),
            ("operating_system", lambda s: s.operating_system),
            ("arch", lambda s: s.arch),
        ):
            per = Counter(value(s) for s in active)
            active_rows += [
                {"day": day.isoformat(), "dimension": dimension, "value": k, "installs": n} for k, n in per.items()
            ]
    return active_rows


def cli_usage(
    snaps: Snapshots, lookback: int = CLI_LOOKBACK, first: date | None = None, last: date | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(cli_command_usage_daily, cli_alias_usage_daily), or their parameterized views: per day with data, over every
    distinct report of [D - lookback + 1, D] (a 2025 CLI's report counts the uses since its previous one):
    executions / uses are the sums of the reports' counts, installs the UIDs with a report naming the command
    (alias), active_installs the UIDs with any report."""
    command_rows, alias_rows = [], []
    for day in snaps.days:
        if (first and day < first) or (last and day > last):
            continue
        start = day - timedelta(days=lookback - 1)
        executions: Counter[str] = Counter()
        uses: Counter[tuple[str, str]] = Counter()
        command_installs: dict[str, set[str]] = defaultdict(set)
        alias_installs: dict[tuple[str, str], set[str]] = defaultdict(set)
        for (d, uid), bodies in snaps.reports.items():
            if not start <= d <= day:
                continue
            for cli in bodies.values():
                for path, n in commands_of(cli):
                    executions[path] += n
                    command_installs[path].add(uid)
                for name, short, n in aliases_of(cli):
                    uses[(name, short)] += n
                    alias_installs[(name, short)].add(uid)
        active = len(snaps.carried(day, "cli", lookback))
        command_rows += [
            {
                "day": day.isoformat(),
                "command_path": path,
                "installs": len(uids),
                "executions": executions[path],
                "active_installs": active,
            }
            for path, uids in command_installs.items()
        ]
        alias_rows += [
            {
                "day": day.isoformat(),
                "command_name": name,
                "alias": short,
                "installs": len(uids),
                "uses": uses[(name, short)],
            }
            for (name, short), uids in alias_installs.items()
        ]
    return command_rows, alias_rows


# -- data quality ----------------------------------------------------------------------------------------------


def jumps(snaps: Snapshots, factor: int = FACTOR, lookback: int = LOOKBACK) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        for cur in snaps.reported(day, "is"):
            prev = snaps.latest(cur.uid, day - timedelta(days=lookback), day - timedelta(days=1))
            if prev is None:
                continue
            before, now = prev.jump_figures(), cur.jump_figures()
            for metric in JUMP_METRICS:
                p, c = before[metric], now[metric]
                if max(p, c) >= JUMP_FLOOR and max(p, c) > factor * max(min(p, c), 1):
                    rows.append(
                        {
                            "day": day.isoformat(),
                            "uid": cur.uid,
                            "metric": metric,
                            "previous_day": prev.day.isoformat(),
                            "previous": p,
                            "current": c,
                            "factor": round(max(p, c) / max(min(p, c), 1), 2),
                        }
                    )
    return rows


def data_quality(snaps: Snapshots, jump_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for day in snaps.days:
        reported = snaps.reported(day, "is")
        mine = [j for j in jump_rows if j["day"] == day.isoformat()]
        rows.append(
            {
                "day": day.isoformat(),
                "deployments": len(reported),
                "default_uid_deployments": sum(s.default_uid for s in reported),
                "inconsistent_deployments": sum(s.inconsistent for s in reported),
                "jumping_deployments": len({j["uid"] for j in mine}),
                "jumps": len(mine),
            }
        )
    return rows


# -- lifecycle -------------------------------------------------------------------------------------------------


def lifespans(snaps: Snapshots) -> list[dict[str, Any]]:
    return [
        {
            "kind": snaps.kind_of[uid],
            "uid": uid,
            "first_seen": ds[0].isoformat(),
            "last_seen": ds[-1].isoformat(),
            "days_seen": len(ds),
        }
        for uid, ds in snaps.days_of.items()
    ]


def lifecycle(
    snaps: Snapshots, kind: str, gap: int = GAP, first: date | None = None, last: date | None = None
) -> list[dict[str, Any]]:
    """Per day with data in [first, last]: the definitions of docs/analysts.md, applied literally."""
    seen = {uid: set(ds) for uid, ds in snaps.days_of.items() if snaps.kind_of[uid] == kind}
    first_day = {uid: min(ds) for uid, ds in seen.items()}

    def any_in(ds: set[date], a: date, b: date) -> bool:
        return any(a <= d <= b for d in ds)

    rows = []
    for day in snaps.days:
        if (first and day < first) or (last and day > last):
            continue
        one = timedelta(days=1)
        g = timedelta(days=gap)
        rows.append(
            {
                "day": day.isoformat(),
                "active_1d": sum(day in ds for ds in seen.values()),
                "active_7d": sum(any_in(ds, day - 6 * one, day) for ds in seen.values()),
                "active_30d": sum(any_in(ds, day - 29 * one, day) for ds in seen.values()),
                "new": sum(first_day[u] == day for u in seen),
                "returning": sum(
                    day in ds and not any_in(ds, day - g, day - one) and first_day[u] < day - g
                    for u, ds in seen.items()
                ),
                "churned": sum((day - g) in ds and not any_in(ds, day - g + one, day) for ds in seen.values()),
            }
        )
    return rows


def cli_lifecycle(snaps: Snapshots) -> list[dict[str, Any]]:
    """cli_lifecycle_daily: the lifecycle of CLI installs, their new installs split by the report of their first day:
    on a 2025 CLI (it reports command usage; an install upgraded from 3.32 or older makes a new UID) or an older one."""
    rows = lifecycle(snaps, "cli")
    for row in rows:
        day = date.fromisoformat(row["day"])
        new = [uid for uid, ds in snaps.days_of.items() if snaps.kind_of[uid] == "cli" and ds[0] == day]
        row["new_2025_cli"] = sum(snaps.by_key[(day, uid)].reports_usage for uid in new)
        row["new_older_cli"] = len(new) - row["new_2025_cli"]
    return rows


def retention(snaps: Snapshots, period: str) -> list[dict[str, Any]]:
    """Cohorts by the Monday (period 'week') or first of the month ('month') of each UID's first day."""

    def start(d: date) -> date:
        return d - timedelta(days=d.weekday()) if period == "week" else d.replace(day=1)

    def since(cohort: date, p: date) -> int:
        return (p - cohort).days // 7 if period == "week" else (p.year - cohort.year) * 12 + p.month - cohort.month

    active: Counter[tuple[str, date, int]] = Counter()
    size: Counter[tuple[str, date]] = Counter()
    for uid, ds in snaps.days_of.items():
        kind, cohort = snaps.kind_of[uid], start(ds[0])
        size[(kind, cohort)] += 1
        for p in {start(d) for d in ds}:
            active[(kind, cohort, since(cohort, p))] += 1
    name = "weeks_since" if period == "week" else "months_since"
    return [
        {
            "kind": k,
            "cohort": c.isoformat(),
            name: n,
            "cohort_size": size[(k, c)],
            "active": a,
            "retention": round(a / size[(k, c)], 6),
        }
        for (k, c, n), a in active.items()
    ]


# -- everything ------------------------------------------------------------------------------------------------


def analyst_ground_truth(
    deliveries: Iterable[Sequence[Any]], plausibility_limit: int = PLAUSIBILITY_LIMIT
) -> dict[str, list[dict[str, Any]]]:
    """Every named analyst view of the fleet over time, as rows with the view's columns (sorted by the tests)."""
    snaps = Snapshots.of(deliveries, plausibility_limit)
    adoption = version_adoption(snaps)
    commands, aliases = cli_usage(snaps)
    jump_rows = jumps(snaps)
    return {
        "fleet_daily_carried": carried_fleet(snaps),
        "fleet_size_daily": fleet_size(snaps),
        "regions_daily": regions(snaps),
        "version_adoption_daily": adoption,
        "version_adoption_speed": version_adoption_speed(adoption),
        "versions_behind_daily": versions_behind(snaps),
        "deployments_behind_daily": deployments_behind_top(snaps),
        "cli_installs_active_daily": cli_active(snaps),
        "cli_command_usage_daily": commands,
        "cli_alias_usage_daily": aliases,
        "data_quality_daily": data_quality(snaps, jump_rows),
        "sender_jumps_daily": jump_rows,
        "sender_lifespans": lifespans(snaps),
        "deployment_lifecycle_daily": lifecycle(snaps, "is"),
        "cli_lifecycle_daily": cli_lifecycle(snaps),
        "retention_weekly": retention(snaps, "week"),
        "retention_monthly": retention(snaps, "month"),
    }
