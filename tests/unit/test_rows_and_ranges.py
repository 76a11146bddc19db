"""Row types and their snapshots-topic payload (core/rows.py); the dashboard's date ranges (panels.py)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.rows import (
    PayloadError,
    SnapshotRow,
    datetime_to_ms,
    decode_payload,
    encode_payload,
    encode_payloads,
    ms_to_datetime,
)
from dashboard.panels import MAX_DAYS, BadRequest, resolve_range
from processors.pipeline import RawRecord, process
from tests.samples import SAMPLES

TODAY = date(2026, 3, 10)


def _rows() -> tuple[list[SnapshotRow], list]:  # type: ignore[type-arg]
    records = [
        RawRecord("raw", 0, i, 1_772_000_000_000 + i, {}, body, None, index=0, batched=True)
        for i, body in enumerate([*SAMPLES.values(), b"{nope"])
    ]
    out = process(records, 1)
    return out.snapshots, out.rejections


def test_payload_round_trip_keeps_every_row_exactly() -> None:
    snapshots, rejections = _rows()
    assert snapshots and rejections
    assert decode_payload(encode_payload(snapshots, rejections)) == (snapshots, rejections)


@pytest.mark.parametrize("copies", [1, 7, 60])
def test_rows_too_many_for_one_record_go_as_several_under_the_limit(copies: int) -> None:
    """A worker with --no-sink publishes a batch's rows of one partition; a Kafka producer refuses a record above
    its max_request_size (the agent crashed and restarted for ever on 5,000 bodies of one partition)."""
    snapshots, rejections = _rows()
    snapshots, rejections = snapshots * copies, rejections * copies
    limit = 20_000
    payloads = encode_payloads(snapshots, rejections, limit)
    assert all(len(p) <= limit for p in payloads)
    assert (len(payloads) == 1) == (len(encode_payload(snapshots, rejections)) <= limit)  # split only if needed
    decoded = [decode_payload(p) for p in payloads]
    assert [r for s, _ in decoded for r in s] == snapshots  # every row once, in order
    assert [r for _, j in decoded for r in j] == rejections


@pytest.mark.parametrize("raw", [b"{", b"[]", b'{"format": 0}', b'{"format": "v0", "snapshots": []}'])
def test_a_payload_of_another_format_is_refused(raw: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_payload(raw)


@given(st.integers(0, 2**42))
def test_ms_and_datetime_round_trip(ms: int) -> None:
    assert datetime_to_ms(ms_to_datetime(ms)) == ms


def _no_data(sql: str, params: object) -> list[dict[str, object]]:
    return [{"n": 0, "first": None, "last": None}]


def _data_until(last: date):  # type: ignore[no-untyped-def]
    return lambda sql, params: [{"n": 5, "first": last - timedelta(days=4), "last": last}]


def test_the_default_range_ends_yesterday_or_at_the_last_day_with_data() -> None:
    r = resolve_range({}, _no_data, TODAY)
    assert r.end == TODAY - timedelta(days=1) and r.start <= r.end and r.complete_until == r.end
    r = resolve_range({}, _data_until(date(2026, 3, 1)), TODAY)
    assert r.end == date(2026, 3, 1)


def test_from_alone_after_the_default_end_extends_the_end() -> None:
    r = resolve_range({"from": "2026-03-20"}, _no_data, TODAY)
    assert (r.start, r.end) == (date(2026, 3, 20), date(2026, 3, 20))


@pytest.mark.parametrize(
    "params",
    [
        {"from": "2026-3-1"},
        {"to": "yesterday"},
        {"from": "2026-02-30"},
        {"from": "2026-03-05", "to": "2026-03-01"},
        {"from": "2000-01-01", "to": "2026-03-01"},
    ],
)
def test_bad_ranges_are_refused(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        resolve_range(params, _no_data, TODAY)


def test_the_longest_range_is_accepted() -> None:
    end = date(2026, 3, 1)
    start = end - timedelta(days=MAX_DAYS - 1)
    r = resolve_range({"from": start.isoformat(), "to": end.isoformat()}, _no_data, TODAY)
    assert (r.end - r.start).days + 1 == MAX_DAYS


@given(st.text(max_size=30))
def test_any_text_as_a_day_is_a_day_or_a_bad_request(raw: str) -> None:
    try:
        r = resolve_range({"from": raw, "to": "2026-03-01"}, _no_data, TODAY)
    except BadRequest:
        return
    assert r.start <= r.end


def test_the_rows_hold_the_summed_counts_as_declared() -> None:
    """The message's summed counts are declared once (core/schema.py SUMMED_COUNTS): the row types hold each, the
    roll-up's row in the declared order (its counts are written positionally), and each path reads its count."""
    from core.rows import COUNT_COLUMNS, RollupRow, columns
    from core.schema import SUMMED_COUNTS, TelemetryMessage

    names = list(SUMMED_COUNTS)
    rollup = columns(RollupRow)
    first = rollup.index(names[0])
    assert rollup[first : first + len(names)] == names == list(COUNT_COLUMNS[-len(names) :])
    assert set(names) <= set(columns(SnapshotRow))
    ec = {
        "gateways": {"total": 1},
        "end_devices": {
            "total": 2,
            "activate_end_devices": {"total": 3, "last_day": 4, "last_week": 5, "last_month": 6},
        },
        "applications": {"total": 7},
        "accounts": {"users": {"standard": 8, "admin": 9}, "organizations": {"total": 10}},
    }
    message = TelemetryMessage.model_validate({"uid": "A" * 85 + "Q==", "entities_count": ec})
    assert message.entities_count is not None
    assert list(message.entities_count.summed()) == list(range(1, 11))
