"""Validate a raw record against the one message definition (core.schema).

`validate(body)` returns the parsed TelemetryMessage or a Rejection with a machine-readable
reason code. Reason codes are a stable contract (rejected_daily.reason, dead-letter records): `Reason` below.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from core.schema import PLAUSIBILITY_LIMIT, TelemetryMessage


class Reason(StrEnum):
    NOT_JSON = "not_json"  # not UTF-8 JSON (includes NaN/Infinity, truncated bodies)
    NOT_OBJECT = "not_object"  # JSON, but not an object at the top
    MISSING_FIELD = "missing_field"  # uid (or another required key) absent
    WRONG_TYPE = "wrong_type"  # a value of the wrong JSON type (string count, list for an object, ...)
    NEGATIVE = "negative"  # a negative count
    FRACTIONAL = "fractional"  # a count written as a float
    OUT_OF_RANGE = "out_of_range"  # a count beyond uint64
    BAD_UID = "bad_uid"  # uid not 88-char base64 (IS) / not a UUID (CLI)
    KIND_AMBIGUOUS = "kind_ambiguous"  # both or neither of cli and entities_count
    IMPLAUSIBLE = "implausible"  # a count above the plausibility limit, or more names (longer) than plausible
    BODY_TOO_LARGE = "body_too_large"  # larger than the collector's limit (only if it got past the edge)
    BAD_BATCH = "bad_batch"  # a many-bodies record whose frames cannot be read (core/envelope.py)
    RATE_LIMITED = "rate_limited"  # marked by the collector: its client was over its new-UID budget for the day


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: Reason
    message: str


# When several problems exist, the first of these in order names the message's reason.
_PRECEDENCE = [
    Reason.NOT_JSON,
    Reason.NOT_OBJECT,
    Reason.MISSING_FIELD,
    Reason.WRONG_TYPE,
    Reason.FRACTIONAL,
    Reason.NEGATIVE,
    Reason.OUT_OF_RANGE,
    Reason.KIND_AMBIGUOUS,
    Reason.BAD_UID,
]


def _reason_of(error: Mapping[str, Any]) -> Reason:
    kind = error["type"]
    value = error.get("input")
    if kind == "json_invalid" or (isinstance(value, float) and not math.isfinite(value)):
        return Reason.NOT_JSON
    if kind in ("model_type", "model_attributes_type", "dict_type") and not error["loc"]:
        return Reason.NOT_OBJECT
    if kind == "missing":
        return Reason.MISSING_FIELD
    if kind == "greater_than_equal":  # below a count's 0, or below a signed 64-bit integer's least value
        return Reason.NEGATIVE if error.get("ctx", {}).get("ge") == 0 else Reason.OUT_OF_RANGE
    if kind == "less_than_equal":
        return Reason.OUT_OF_RANGE
    if kind in ("int_type", "int_from_float", "int_parsing") and isinstance(value, float):
        return Reason.FRACTIONAL
    if kind in ("kind_ambiguous", "bad_uid"):
        return Reason(kind)
    return Reason.WRONG_TYPE


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]) or "body"
    return f"{loc}: {error['msg']}"


def validate(body: bytes, plausibility_limit: int = PLAUSIBILITY_LIMIT) -> TelemetryMessage | Rejection:
    try:
        message = TelemetryMessage.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        reasons = [_reason_of(e) for e in errors]
        best = min(range(len(errors)), key=lambda i: _PRECEDENCE.index(reasons[i]) if reasons[i] in _PRECEDENCE else 99)
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return Rejection(reasons[best], _describe(errors[best])[:500] + more)
    if message.largest() > plausibility_limit:  # the usual case compares one figure, without naming them
        for name, value in message.figures():
            if value > plausibility_limit:
                return Rejection(
                    Reason.IMPLAUSIBLE, f"{name} = {value} is above the plausibility limit {plausibility_limit}"
                )
    beyond = message.beyond_bounds()  # the plausible sizes (core/schema.py): plans, commands, names
    if beyond is not None:
        return Rejection(Reason.IMPLAUSIBLE, beyond)
    return message


def inconsistencies(message: TelemetryMessage) -> list[str]:
    """Windows that cannot hold (kept as sent, flagged): last_day > last_week > last_month > total, active > total."""
    ec = message.entities_count
    if ec is None:
        return []
    a = ec.end_devices.activate_end_devices
    day, week, month, active = a.last_day, a.last_week, a.last_month, a.total
    if day <= week <= month <= active <= ec.end_devices.total:  # the usual case, in one comparison chain
        return []
    found = []
    if day > week:
        found.append("last_day>last_week")
    if week > month:
        found.append("last_week>last_month")
    if month > active:
        found.append("last_month>active_total")
    if active > ec.end_devices.total:
        found.append("active_total>end_devices")
    return found
