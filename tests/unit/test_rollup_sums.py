"""The roll-up's sums (processors/rollup.py) against the plainest reading of them: per day, the latest message of each
UID summed. Counts and plan counts beyond 32 bits (the entry packed wide), replacements, exact re-sends, older
messages, CLI installs, erasure taken out: pure logic, no processes."""

from __future__ import annotations

from collections import Counter
from datetime import date
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core.rows import COUNT_COLUMNS, MAP_COLUMNS, PartitionBatch, SnapshotRow, position
from core.schema import SUMMED_COUNTS
from processors.rollup import Rollups, roll_up
from tests.unit.test_processing import NoState

DAY = date(2026, 3, 1)
T0 = 1_772_323_200_000  # 2026-03-01T00:00Z
_COUNT = st.sampled_from([0, 1, 7, 2**32 - 1, 2**32, 2**40, 2**64 - 1])


@st.composite
def _message(draw: Any, offset: int) -> tuple[SnapshotRow, bytes]:
    kind = draw(st.sampled_from(["is", "is", "cli"]))
    # a deployment's UID and a CLI install's never coincide (a SHA-512 in base64 against a UUID: core/schema.py)
    uid = f"{kind}-{draw(st.sampled_from(['u1', 'u2', 'u3']))}"
    counts = {name: draw(_COUNT) if kind == "is" else 0 for name in SUMMED_COUNTS}
    plans = draw(st.dictionaries(st.sampled_from(["EU", "US", "AS"]), _COUNT, max_size=3)) if kind == "is" else {}
    strings = draw(st.tuples(*[st.sampled_from(["a", "b", "é😀", ""])] * 4))
    ms = T0 + draw(st.integers(0, 5))
    row = SnapshotRow(
        day=DAY,
        uid=uid,
        kind=kind,
        received_at=None,  # type: ignore[arg-type]  # not read by the roll-up
        version=(ms << 64) | position(offset, 0),
        source_partition=0,
        source_offset=offset,
        source_index=0,
        default_uid=draw(st.booleans()),
        flags=draw(st.sampled_from([[], ["last_day>last_week"]])),
        operating_system=strings[1],
        arch=strings[2],
        binary_version="",
        version_major_minor=strings[0],
        golang_version=strings[3] if kind == "is" else "",
        gateways_by_frequency_plan=plans,
        **counts,
    )
    body = repr((row.uid, row.kind, counts, plans, strings, row.default_uid, row.flags)).encode()
    return row, body


def _expected(messages: list[tuple[SnapshotRow, bytes]]) -> dict[str, Any]:
    """The sums over the latest message of each UID (greatest receive time, then position)."""
    latest: dict[str, SnapshotRow] = {}
    for row, _body in messages:
        held = latest.get(row.uid)
        if held is None or (row.received_at_ms, row.position) > (held.received_at_ms, held.position):
            latest[row.uid] = row
    out: dict[str, Any] = dict.fromkeys(COUNT_COLUMNS, 0)
    maps: dict[str, Counter[str]] = {name: Counter() for name in MAP_COLUMNS}
    for row in latest.values():
        if row.kind == "is":
            out["deployments"] += 1
            out["default_uid_deployments"] += row.default_uid
            out["inconsistent_deployments"] += bool(row.flags)
            for name in SUMMED_COUNTS:
                out[name] += getattr(row, name)
            maps["gateways_by_frequency_plan"].update(row.gateways_by_frequency_plan)
            for column, value in (
                ("deployments_by_version", row.version_major_minor),
                ("deployments_by_os", row.operating_system),
                ("deployments_by_arch", row.arch),
                ("deployments_by_go_version", row.golang_version),
            ):
                maps[column][value] += 1
        else:
            out["cli_installs"] += 1
            for column, value in (
                ("cli_by_version", row.version_major_minor),
                ("cli_by_os", row.operating_system),
                ("cli_by_arch", row.arch),
            ):
                maps[column][value] += 1
    # a plan listed with 0 gateways is kept with 0 (Counter.update keeps it), as the roll-up keeps it
    return {**out, **{name: dict(c) for name, c in maps.items()}}


def _figures(rollups: Rollups) -> dict[str, Any]:
    row = rollups.parts[0].row(DAY)
    return {name: getattr(row, name) for name in (*COUNT_COLUMNS, *MAP_COLUMNS)}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 10**6), min_size=1, max_size=12).flatmap(
        lambda seeds: st.tuples(*[_message(i) for i in range(len(seeds))])
    )
)
def test_the_sums_are_those_of_the_latest_message_of_each_uid(messages: tuple[tuple[SnapshotRow, bytes], ...]) -> None:
    rollups = Rollups(3, 1)
    for row, body in messages:  # one batch a message: each is applied to the state the previous ones left
        roll_up(rollups, NoState(), [PartitionBatch(0, row.source_offset, [row], [body])])
    assert _figures(rollups) == _expected(list(messages))
    for uid in {row.uid for row, _body in messages}:  # taking every UID out leaves nothing: each entry unpacks to
        rollups.parts[0].take_out(uid, T0 + 10)  # what it added
    empty = _figures(rollups)
    assert all(empty[name] == 0 for name in COUNT_COLUMNS) and all(empty[name] == {} for name in MAP_COLUMNS)
