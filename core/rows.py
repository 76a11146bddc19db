"""The rows the pipeline writes to ClickHouse, each declared once: a dataclass whose fields are the table's columns,
in the table's order (tests/test_rollup.py checks each against `DESCRIBE` of its table).

    columns(SnapshotRow)      -> the column names, for inserts
    values(row)               -> the row's values in that order
    encode_payload(s) / decode_payload  -> rows on the snapshots topic (workers with --no-sink -> `is-telemetry sink`),
                                       with a format version

`SnapshotRow` is the unit of truth (one per UID and day, latest wins); `RejectionRow` one per rejected record;
`RollupRow` the day aggregate of one source partition, written by the roll-up (processors/rollup.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from functools import cache
from operator import attrgetter
from typing import Any

import orjson

from core.errors import TelemetryError
from core.schema import SUMMED_COUNTS

#: Version of the snapshots-topic payload. A sink refuses payloads of another format (it says which).
PAYLOAD_FORMAT = 2


def ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def datetime_to_ms(t: datetime) -> int:
    return int(t.timestamp() * 1000 + (0.5 if t.timestamp() >= 0 else -0.5))


@dataclass(slots=True)
class SnapshotRow:
    """The latest message of one UID on one UTC day (table `snapshots`)."""

    day: date
    uid: str
    kind: str  # "is" | "cli"
    received_at: datetime
    version: int  # received_at ms << 64 | position: the latest received wins
    source_partition: int
    source_offset: int
    source_index: int  # the body's index in its Kafka record (0 for a single-body record)
    default_uid: bool
    flags: list[str]
    operating_system: str
    arch: str
    binary_version: str
    version_major_minor: str
    golang_version: str
    gateways: int = 0
    gateways_by_frequency_plan: dict[str, int] = field(default_factory=dict)
    end_devices: int = 0
    active_end_devices: int = 0
    active_last_day: int = 0
    active_last_week: int = 0
    active_last_month: int = 0
    applications: int = 0
    users_standard: int = 0
    users_admin: int = 0
    users_total: int | None = None
    organizations: int = 0
    cli: str = ""
    body: str = ""

    @property
    def received_at_ms(self) -> int:
        return self.version >> 64

    @property
    def position(self) -> int:
        return position(self.source_offset, self.source_index)


def position(offset: int, index: int) -> int:
    """A body's place in its partition: offset << 16 | index in the record (a record holds fewer than 65,536)."""
    return (offset << 16) | index


@dataclass(slots=True)
class RejectionRow:
    """A rejected record with its reason (table `rejections`); a record processed twice is one row."""

    day: date
    received_at: datetime
    reason: str
    message: str
    source_topic: str
    source_partition: int
    source_offset: int
    source_index: int
    body: str


#: The count columns of a `RollupRow`, in its order: how many deployments and CLI installs, then the message's
#: summed counts (core/schema.py SUMMED_COUNTS; both row types hold them in that order).
COUNT_COLUMNS = ("deployments", "default_uid_deployments", "inconsistent_deployments", "cli_installs", *SUMMED_COUNTS)
MAP_COLUMNS = (
    "gateways_by_frequency_plan",
    "deployments_by_version",
    "deployments_by_os",
    "deployments_by_arch",
    "deployments_by_go_version",
    "cli_by_version",
    "cli_by_os",
    "cli_by_arch",
    "rejected_by_reason",
)


@dataclass(slots=True)
class RollupRow:
    """One day's aggregates over the UIDs one source partition owns (table `rollup_partitions`); the views sum the
    partitions. `version` = roll-up generation << 64 | sequence: the newest owner's latest row wins."""

    day: date
    source_partition: int
    version: int
    computed_at: datetime
    deployments: int = 0
    default_uid_deployments: int = 0
    inconsistent_deployments: int = 0
    cli_installs: int = 0
    gateways: int = 0
    end_devices: int = 0
    active_end_devices: int = 0
    active_last_day: int = 0
    active_last_week: int = 0
    active_last_month: int = 0
    applications: int = 0
    users_standard: int = 0
    users_admin: int = 0
    organizations: int = 0
    gateways_by_frequency_plan: dict[str, int] = field(default_factory=dict)
    deployments_by_version: dict[str, int] = field(default_factory=dict)
    deployments_by_os: dict[str, int] = field(default_factory=dict)
    deployments_by_arch: dict[str, int] = field(default_factory=dict)
    deployments_by_go_version: dict[str, int] = field(default_factory=dict)
    cli_by_version: dict[str, int] = field(default_factory=dict)
    cli_by_os: dict[str, int] = field(default_factory=dict)
    cli_by_arch: dict[str, int] = field(default_factory=dict)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class PartitionBatch:
    """What one take of the stream produced for one source partition: rows to roll up and write, and the last
    position consumed (the offset of the last record, whatever became of it)."""

    partition: int
    position: int
    snapshots: list[SnapshotRow] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # each snapshot's raw body (the roll-up hashes it)
    rejections: list[RejectionRow] = field(default_factory=list)


@dataclass
class Batch:
    """What one flush writes: typed rows, and the late (day, partition) pairs to recompute from ClickHouse after
    the snapshots are in."""

    snapshots: list[SnapshotRow] = field(default_factory=list)
    rejections: list[RejectionRow] = field(default_factory=list)
    rollups: list[RollupRow] = field(default_factory=list)
    recompute: list[tuple[date, int, int]] = field(default_factory=list)  # (day, partition, version)
    partitions_total: int = 0
    duplicates: int = 0  # exact re-sends the roll-up dropped (nothing to write)

    def __len__(self) -> int:
        return len(self.snapshots) + len(self.rejections) + len(self.rollups) + len(self.recompute)


Row = SnapshotRow | RejectionRow | RollupRow
TABLES: dict[type[Any], str] = {SnapshotRow: "snapshots", RejectionRow: "rejections", RollupRow: "rollup_partitions"}


@cache
def columns(row_type: Any) -> list[str]:  # a row dataclass (Any: @cache wants it hashable)
    return [f.name for f in fields(row_type)]


@cache
def _getter(row_type: Any) -> attrgetter[Any]:
    return attrgetter(*columns(row_type))


@cache
def getters(row_type: Any) -> list[attrgetter[Any]]:
    """One getter a column, for column-oriented inserts."""
    return [attrgetter(name) for name in columns(row_type)]


def values(row: Any) -> list[Any]:
    row_type: Any = type(row)
    return list(_getter(row_type)(row))


# -- the snapshots topic ------------------------------------------------------------------------------------------


def _to_json(row: Any) -> list[Any]:
    out = values(row)
    for i, v in enumerate(out):
        if isinstance(v, datetime):
            out[i] = datetime_to_ms(v)
        elif isinstance(v, date):
            out[i] = v.toordinal()
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFFFFFFFFFFFFFF:
            out[i] = str(v)  # a UInt128 version: JSON numbers stop at 64 bits here
    return out


def _from_json(row_type: type[Any], data: list[Any]) -> Any:
    args = list(data)
    for i, f in enumerate(fields(row_type)):
        if f.type == "date":
            args[i] = date.fromordinal(args[i])
        elif f.type == "datetime":
            args[i] = ms_to_datetime(args[i])
        elif f.type == "int" and isinstance(args[i], str):
            args[i] = int(args[i])
    return row_type(*args)


class PayloadError(TelemetryError, ValueError):
    """A snapshots-topic record this version cannot read."""


def encode_payload(snapshots: list[SnapshotRow], rejections: list[RejectionRow]) -> bytes:
    """One snapshots-topic record: a batch's rows of one source partition, as column-ordered lists."""
    return orjson.dumps(
        {
            "format": PAYLOAD_FORMAT,
            "snapshots": [_to_json(r) for r in snapshots],
            "rejections": [_to_json(r) for r in rejections],
        },
        option=orjson.OPT_PASSTHROUGH_DATETIME,
    )


def encode_payloads(snapshots: list[SnapshotRow], rejections: list[RejectionRow], max_bytes: int) -> list[bytes]:
    """The rows as snapshots-topic records of at most `max_bytes` each (a Kafka producer refuses a larger record):
    one if they fit, else the rows halved until each part fits (a single row larger than that is left whole: the
    broker then refuses it, with the reason)."""
    payload = encode_payload(snapshots, rejections)
    if len(payload) <= max_bytes or len(snapshots) + len(rejections) <= 1:
        return [payload]
    s, r = len(snapshots) // 2, len(rejections) // 2
    if s + r == 0:  # one snapshot and one rejection: one each
        s = len(snapshots)
    return encode_payloads(snapshots[:s], rejections[:r], max_bytes) + encode_payloads(
        snapshots[s:], rejections[r:], max_bytes
    )


def decode_payload(raw: bytes) -> tuple[list[SnapshotRow], list[RejectionRow]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PayloadError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != PAYLOAD_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise PayloadError(
            f"snapshots-topic payload format {found!r}, this version reads format {PAYLOAD_FORMAT}: "
            "run workers and sink of the same version"
        )
    return (
        [_from_json(SnapshotRow, r) for r in data["snapshots"]],
        [_from_json(RejectionRow, r) for r in data["rejections"]],
    )
