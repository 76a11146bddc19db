"""The ground truth's own rules: the day of a delivery, the major.minor of a version, and which bodies are valid
and, if not, the reason they are rejected for.

Written from the documented semantics (docs/processing.md "Validation" and "The day", docs/telemetry-message.md),
not from the processors' code (processors/validate.py, processors/snapshot.py): the simulator's ground truth
(producers/simulator/truth.py `ground_truth`, producers/fleet_truth.py) is the oracle the pipeline is checked against,
so a bug in the pipeline's day bucketing, version parsing or validation shows as a difference instead of being
repeated here. Only the message definition is shared: a body these rules accept is read into
`core.schema.TelemetryMessage` for its fields, and the plausibility limit's default is core/schema.py's.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from core.schema import PLAUSIBILITY_LIMIT, TelemetryMessage

#: docs/processing.md, "Validation": the reasons, in the order that names a body with several problems.
REASONS = (
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "fractional",
    "negative",
    "out_of_range",
    "kind_ambiguous",
    "bad_uid",
    "implausible",
    "body_too_large",
    "bad_batch",
    "rate_limited",  # decided by the delivery, not the body: a body the collector marked is this whatever it holds
)
#: docs/telemetry-message.md, "Plausible sizes": what one message may list, and how long each name may be.
MAX_PLANS = 256  # frequency plan IDs of a deployment's gateways_by_frequency_plan_id
MAX_COMMANDS = 512  # command usage entries of one CLI report, every list of it together
MAX_ALIASES = 512  # alias usage entries of one CLI report, every list of it together
MAX_NAME = 256  # characters of a plan ID, a command path, an alias and the command name it stands for
MAX_DEPTH = 200  # arrays and objects a value may be inside (docs/processing.md, not_json)
UINT64_MAX = 18_446_744_073_709_551_615  # 2^64 - 1: the largest count
INT64_MIN, INT64_MAX = -9_223_372_036_854_775_808, 9_223_372_036_854_775_807  # a CLI's last_used_at (unix seconds)

_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000


def utc_day(received_at_ms: int) -> date:
    """The UTC day of a receive time in milliseconds since the epoch (docs/processing.md, "The day")."""
    return _EPOCH + timedelta(days=received_at_ms // _DAY_MS)


def version_of(binary_version: str) -> str:
    """major.minor of a binary version ('3.32.1 (1d218216, ...)', ' v3.27.0-dev' -> '3.32', '3.27': leading blanks
    and a 'v' allowed, each part read as a number), or 'unknown' when it does not start with two dotted numbers
    (ASCII digits) each below 1000."""
    rest = binary_version.lstrip()
    if rest[:1] == "v":
        rest = rest[1:]
    numbers = []
    for _ in range(2):
        digits = ""
        while rest[:1].isascii() and rest[:1].isdigit():
            digits, rest = digits + rest[0], rest[1:]
        significant = digits.lstrip("0") or "0"
        if not digits or len(significant) > 3:
            return "unknown"
        numbers.append(int(significant))
        if len(numbers) == 1:
            if rest[:1] != ".":
                return "unknown"
            rest = rest[1:]
    return f"{numbers[0]}.{numbers[1]}"


@dataclass(frozen=True)
class Rejected:
    """A body the pipeline must reject: its reason (one of REASONS) and where the deciding problem is."""

    reason: str
    where: str


# The message, as docs/telemetry-message.md's table describes it. An object's keys are optional unless listed in
# _REQUIRED; unknown keys are accepted everywhere.
_COUNT, _COUNT_OR_NULL, _STRING, _COUNT_MAP, _ANY_OBJECT = "count", "count or null", "string", "count map", "object"
_INT64 = "signed 64-bit integer"
_OS = {"operating_system": _STRING, "arch": _STRING, "binary_version": _STRING, "golang_version": _STRING}
_ENTITIES = {
    "gateways": {"total": _COUNT, "gateways_by_frequency_plan_id": _COUNT_MAP},
    "end_devices": {
        "total": _COUNT,
        "activate_end_devices": {"total": _COUNT, "last_day": _COUNT, "last_week": _COUNT, "last_month": _COUNT},
    },
    "applications": {"total": _COUNT},
    "accounts": {
        "users": {"total": _COUNT_OR_NULL, "standard": _COUNT, "admin": _COUNT},
        "organizations": {"total": _COUNT},
    },
}
_REQUIRED = ("uid",)
# A CLI's command usage: lists (or null) of these objects under `commands` and `aliases`, in the cli object itself
# or in an object one level down; each list's counts are summed for the plausibility limit under its name.
_USAGE_LISTS = {
    "commands": ({"command_path": _STRING, "execution_count": _COUNT, "last_used_at": _INT64}, "execution_count"),
    "aliases": ({"command_name": _STRING, "alias": _STRING, "usage_count": _COUNT}, "usage_count"),
}
#: The bounded sizes: how many entries each kind of list may hold in one message, and which strings are names.
_ENTRY_BOUNDS = {"plans": MAX_PLANS, "commands": MAX_COMMANDS, "aliases": MAX_ALIASES}
_NAMES = ("command_path", "command_name", "alias")


class _NotJson(ValueError):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: a number no JSON sender means
        raise _NotJson(f"number {text} is not finite")
    return value


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def _depth(doc: Any) -> int:
    """The most arrays and objects any value of the document is inside (a scalar document: 0)."""
    deepest, todo = 0, [(doc, 0)]
    while todo:
        value, inside = todo.pop()
        deepest = max(deepest, inside)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        todo.extend((child, inside + 1) for child in children)
    return deepest


def _parse(body: bytes) -> Any:
    """The JSON document of a body: UTF-8 only, no NaN/Infinity, no value inside more than MAX_DEPTH arrays and
    objects."""
    try:
        doc = json.loads(body.decode("utf-8"), parse_float=_finite, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # JSONDecodeError and _NotJson are ValueErrors
        raise _NotJson(str(exc)[:200]) from exc
    if _depth(doc) > MAX_DEPTH:
        raise _NotJson(f"a value inside more than {MAX_DEPTH} arrays and objects")
    return doc


class _Problems:
    def __init__(self) -> None:
        self.found: list[tuple[int, str, str]] = []  # (rank, reason, where)
        self.counts: list[tuple[str, int]] = []  # (where, value) of every well-formed count
        self.sums: dict[str, int] = {}  # what each kind of count list adds up to (plans, executions, usages)
        self.entries: dict[str, int] = {}  # how many names each kind of list holds (plans, commands, aliases)
        self.names: list[str] = []  # every name a list holds (plan IDs, command paths, command names, aliases)

    def add(self, reason: str, where: str) -> None:
        self.found.append((REASONS.index(reason), reason, where))

    def first(self) -> Rejected | None:
        if not self.found:
            return None
        _rank, reason, where = min(self.found, key=lambda f: f[0])
        return Rejected(reason, where)


def _count(value: Any, where: str, problems: _Problems) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add("wrong_type", where)
    elif isinstance(value, float):
        problems.add("fractional", where)
    elif value < 0:
        problems.add("negative", where)
    elif value > UINT64_MAX:
        problems.add("out_of_range", where)
    else:
        problems.counts.append((where, value))


def _int64(value: Any, where: str, problems: _Problems) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.add("wrong_type", where)
    elif isinstance(value, float):
        problems.add("fractional", where)
    elif not INT64_MIN <= value <= INT64_MAX:
        problems.add("out_of_range", where)


def _summed(problems: _Problems, name: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= UINT64_MAX:
        problems.sums[name] = problems.sums.get(name, 0) + value


def _object(value: Any, shape: dict[str, Any], where: str, problems: _Problems) -> None:
    if not isinstance(value, dict):
        problems.add("wrong_type", where)
        return
    for key, kind in shape.items():
        if key not in value:
            continue
        item, at = value[key], f"{where}.{key}"
        if kind == _COUNT_OR_NULL:
            if item is not None:
                _count(item, at, problems)
        elif kind == _COUNT:
            _count(item, at, problems)
        elif kind == _INT64:
            _int64(item, at, problems)
        elif kind == _STRING:
            if not isinstance(item, str):
                problems.add("wrong_type", at)
        elif kind == _COUNT_MAP:
            if not isinstance(item, dict):
                problems.add("wrong_type", at)
            else:
                for plan, n in item.items():
                    _count(n, f"{at}.{plan}", problems)
                    _summed(problems, at, n)
                problems.entries["plans"] = problems.entries.get("plans", 0) + len(item)
                problems.names.extend(item)
        else:
            _object(item, kind, at, problems)


def _usage(cli: dict[str, Any], where: str, problems: _Problems) -> None:
    """The command-usage lists of one object of the cli object."""
    for key, (shape, counted) in _USAGE_LISTS.items():
        items = cli.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            problems.add("wrong_type", f"{where}.{key}")
            continue
        problems.entries[key] = problems.entries.get(key, 0) + len(items)
        for i, item in enumerate(items):
            _object(item, shape, f"{where}.{key}.{i}", problems)
            if isinstance(item, dict):
                _summed(problems, f"cli {key}: the sum of {counted}", item.get(counted, 0))
                problems.names.extend(v for k, v in item.items() if k in _NAMES and isinstance(v, str))


def _cli(cli: Any, problems: _Problems) -> None:
    if not isinstance(cli, dict):
        problems.add("wrong_type", "cli")
        return
    _usage(cli, "cli", problems)
    for key, value in cli.items():
        if isinstance(value, dict) and ("commands" in value or "aliases" in value):
            _usage(value, f"cli.{key}", problems)


def _is_uid_ok(uid: str) -> bool:
    """An Identity Server's UID: the canonical standard base64 of a 64-byte SHA-512 digest."""
    try:
        digest = base64.b64decode(uid, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(digest) == 64 and base64.b64encode(digest).decode() == uid


_HEX = frozenset("0123456789abcdefABCDEF")


def _cli_uid_ok(uid: str) -> bool:
    """A CLI's UID: a UUID written 8-4-4-4-12 hex digits."""
    groups = uid.split("-")
    return [len(g) for g in groups] == [8, 4, 4, 4, 12] and all(c in _HEX for g in groups for c in g)


def judge(
    body: bytes, plausibility_limit: int = PLAUSIBILITY_LIMIT, rate_limited: bool = False
) -> TelemetryMessage | Rejected:
    """The message of a valid body, or why the pipeline must reject it. `rate_limited`: the collector marked the body
    (its client was over its new-UIDs budget, docs/collector.md): rejected as such, its content unread."""
    if rate_limited:
        return Rejected("rate_limited", "client")
    try:
        doc = _parse(body)
    except _NotJson as exc:
        return Rejected("not_json", str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejected("not_object", type(doc).__name__)
    problems = _Problems()
    for key in _REQUIRED:
        if key not in doc:
            problems.add("missing_field", key)
    if "uid" in doc and not isinstance(doc["uid"], str):
        problems.add("wrong_type", "uid")
    if doc.get("os") is not None:
        _object(doc["os"], _OS, "os", problems)
    if doc.get("cli") is not None:
        _cli(doc["cli"], problems)
    if doc.get("entities_count") is not None:
        _object(doc["entities_count"], _ENTITIES, "entities_count", problems)
    if problems.found:
        return problems.first()  # type: ignore[return-value]
    is_cli, is_is = doc.get("cli") is not None, doc.get("entities_count") is not None
    if is_cli == is_is:
        return Rejected("kind_ambiguous", "cli, entities_count")
    if not (_cli_uid_ok(doc["uid"]) if is_cli else _is_uid_ok(doc["uid"])):
        return Rejected("bad_uid", "uid")
    for where, n in [*problems.counts, *problems.sums.items()]:  # each count, then each list's sum
        if n > plausibility_limit:
            return Rejected("implausible", where)
    for kind, n in problems.entries.items():  # then the sizes: entries of each kind, the length of each name
        if n > _ENTRY_BOUNDS[kind]:
            return Rejected("implausible", f"{n} {kind}")
    if any(len(name) > MAX_NAME for name in problems.names):
        return Rejected("implausible", "a name too long")
    return TelemetryMessage.model_validate(doc)
