"""Erased UIDs never come back from a replay (docs/privacy.md, "Erasure").

The roll-up (processors/rollup.py `roll_up`) reads the erasure register (uid -> the ms it was erased at) before it
counts a batch, and passes the batch through `drop_erased`: a snapshot of an erased UID received at or before its
erasure (a replay of the raw topic from offset 0, a late re-send) is dropped before it is counted or written; one
received after the erasure is a new report and counts. A rejected record keeps its row (its reason is counted), but
loses its body and message if they name an erased UID and it was received at or before the erasure.

A UID is compared by its erasure key (core/uid.py `erasure_key`: a UUID in any case); a rejected text names it when
it holds it as written or JSON-escaped (`\\/`), or its body's parsed `uid` is it (any JSON escape).

Pure logic: the register is read by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol, runtime_checkable

import orjson

from core.rows import PartitionBatch, RejectionRow, datetime_to_ms
from core.schema import _valid_cli_uid
from core.uid import erasure_key, json_escaped


@runtime_checkable
class ErasureRegister(Protocol):
    """A state source that keeps the erasure register (sinks/clickhouse.py `ClickHouseStore.erased`)."""

    def erased(self) -> dict[str, int]:
        """erasure key of the uid -> when it was last erased (ms since the epoch, UTC)."""
        ...

    def erase_in_write(self, uid: str, until_ms: int, partitions_total: int, version: int) -> None:
        """Erase the UID's rows received up to `until_ms` again in the next write, after its inserts, and recompute
        its days' aggregates under `version`: a batch prepared before the erasure may have written them again."""
        ...


def drop_erased(parts: list[PartitionBatch], register: Mapping[str, int]) -> tuple[list[PartitionBatch], int]:
    """`parts` without the rows of erased UIDs received at or before their erasure; and how many were dropped."""
    if not register:
        return parts, 0
    dropped = 0
    out = []
    for part in parts:
        keep = [
            i
            for i, row in enumerate(part.snapshots)
            if (key := erasure_key(row.uid)) not in register or row.received_at_ms > register[key]
        ]
        dropped += len(part.snapshots) - len(keep)
        if len(keep) != len(part.snapshots):
            part = replace(part, snapshots=[part.snapshots[i] for i in keep], bodies=[part.bodies[i] for i in keep])
        rejections = [_without_erased_text(r, register) for r in part.rejections]
        out.append(replace(part, rejections=rejections))
    return out, dropped


def _without_erased_text(row: RejectionRow, register: Mapping[str, int]) -> RejectionRow:
    received = datetime_to_ms(row.received_at)
    parsed = erasure_key(_parsed_uid(row.body))
    for key, erased_at in register.items():
        if received <= erased_at and (key == parsed or _names(row.body, key) or _names(row.message, key)):
            return replace(row, body="", message="")
    return row


def _names(text: str, key: str) -> bool:
    """`text` holds the UID of erasure key `key`: a UUID in any case, a deployment's as written or JSON-escaped."""
    if _valid_cli_uid(key):
        return key in text.lower()
    return key in text or json_escaped(key) in text


def _parsed_uid(body: str) -> str:
    """The `uid` of a rejected body that is a JSON object (its escapes decoded), else ""."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    uid = value.get("uid") if isinstance(value, dict) else None
    return uid if isinstance(uid, str) else ""
