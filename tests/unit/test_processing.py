"""Pure logic of the processors: deduplication state, validate() edge cases, process(), the UID, what the roll-up
writes. No processes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.partitioning import partition_of
from core.rows import PartitionBatch, RejectionRow
from core.uid import DEFAULT_CONSOLE_BASE_URL, uid_from_config, uid_from_elements
from processors.dedup import Deduplicator
from processors.pipeline import RawRecord, process
from processors.rollup import Rollups, roll_up
from processors.snapshot import snapshot_row
from processors.validate import Reason, Rejection, inconsistencies, validate
from tests.samples import SAMPLES

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


# ------------------------------------------------------------------------------------------- Deduplicator


def test_a_resend_is_a_duplicate_only_once_committed_or_in_the_same_batch() -> None:
    d = Deduplicator()
    assert not d.is_duplicate(D1, "u", b"a")
    assert d.is_duplicate(D1, "u", b"a")  # pending in the same batch counts
    d.commit()
    assert d.is_duplicate(D1, "u", b"a") and d.hits == 2
    assert not d.is_duplicate(D1, "u", b"b")  # a changed body passes and becomes the last one
    assert not d.is_duplicate(D2, "u", b"a")  # another day is another key
    assert not d.is_duplicate(D1, "v", b"a")


def test_rollback_forgets_the_pending_batch() -> None:
    d = Deduplicator()
    d.is_duplicate(D1, "u", b"a")
    d.rollback()
    assert len(d) == 0
    assert not d.is_duplicate(D1, "u", b"a")  # the failed batch's body is not hidden when re-delivered


def test_days_beyond_keep_days_behind_the_newest_are_evicted() -> None:
    d = Deduplicator(keep_days=2)
    for day in (date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)):
        d.is_duplicate(day, "u", b"a")
    d.commit()
    assert len(d) == 2  # 3-1 is two days behind 3-3: gone
    assert not d.is_duplicate(date(2026, 3, 1), "u", b"a")
    assert d.is_duplicate(date(2026, 3, 2), "u", b"a")


# ----------------------------------------------------------------------------------------------- validate


def _edit(sample: str, **changes: object) -> bytes:
    message = orjson.loads(SAMPLES[sample])
    message.update(changes)
    return orjson.dumps(message)


@pytest.mark.parametrize(
    "body,reason",
    [
        (b"", Reason.NOT_JSON),
        (b"{", Reason.NOT_JSON),
        (b'{"uid": NaN}', Reason.NOT_JSON),
        (b"[]", Reason.NOT_OBJECT),
        (b'"x"', Reason.NOT_OBJECT),
        (b"{}", Reason.MISSING_FIELD),
    ],
)
def test_bodies_that_are_not_messages(body: bytes, reason: Reason) -> None:
    result = validate(body)
    assert isinstance(result, Rejection) and result.reason == reason, result


def test_every_sample_is_valid() -> None:
    for name, body in SAMPLES.items():
        assert not isinstance(validate(body), Rejection), name


def test_a_bad_uid_and_an_implausible_count() -> None:
    bad = validate(_edit("cli-3.30.json", uid="not-a-uuid"))
    assert isinstance(bad, Rejection) and bad.reason == Reason.BAD_UID
    is_message = orjson.loads(SAMPLES["is-3.32.json"])
    is_message["entities_count"]["gateways"]["total"] = 10**9 + 1
    implausible = validate(orjson.dumps(is_message))
    assert isinstance(implausible, Rejection) and implausible.reason == Reason.IMPLAUSIBLE
    assert not isinstance(validate(orjson.dumps(is_message), plausibility_limit=10**10), Rejection)


_COUNT_PATHS = [
    ("gateways", "total"),
    ("gateways", "gateways_by_frequency_plan_id", "EU_863_870"),
    ("end_devices", "total"),
    ("end_devices", "activate_end_devices", "total"),
    ("end_devices", "activate_end_devices", "last_day"),
    ("end_devices", "activate_end_devices", "last_week"),
    ("end_devices", "activate_end_devices", "last_month"),
    ("applications", "total"),
    ("accounts", "users", "total"),
    ("accounts", "users", "standard"),
    ("accounts", "users", "admin"),
    ("accounts", "organizations", "total"),
]


@given(st.sampled_from(_COUNT_PATHS), st.integers(0, 2**64 - 1), st.integers(0, 2**40))
def test_the_plausibility_check_sees_every_count(path: tuple[str, ...], value: int, limit: int) -> None:
    """The quick check (the largest count) rejects exactly when some count is above the limit, and names it."""
    m = orjson.loads(SAMPLES["is-3.32.json"])
    ec = m["entities_count"]
    ec["gateways"]["gateways_by_frequency_plan_id"] = {}
    for p in _COUNT_PATHS:  # every other count 0
        node = ec
        for key in p[:-1]:
            node = node.setdefault(key, {})
        node[p[-1]] = 0
    node = ec
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = validate(orjson.dumps(m), plausibility_limit=limit)
    if value > limit:
        assert isinstance(result, Rejection) and result.reason == Reason.IMPLAUSIBLE, result
        assert f"= {value} is above" in result.message
    else:
        assert not isinstance(result, Rejection), result


@given(st.lists(st.integers(0, 5), min_size=5, max_size=5))
def test_inconsistencies_name_every_window_that_cannot_hold(counts: list[int]) -> None:
    day, week, month, active, total = counts
    m = orjson.loads(SAMPLES["is-3.32.json"])
    ed = m["entities_count"]["end_devices"]
    ed["total"] = total
    ed["activate_end_devices"] = {"total": active, "last_day": day, "last_week": week, "last_month": month}
    message = validate(orjson.dumps(m))
    assert not isinstance(message, Rejection)
    expected = [
        name
        for name, broken in (
            ("last_day>last_week", day > week),
            ("last_week>last_month", week > month),
            ("last_month>active_total", month > active),
            ("active_total>end_devices", active > total),
        )
        if broken
    ]
    assert inconsistencies(message) == expected


def test_negative_and_fractional_counts() -> None:
    for value, reason in ((-1, Reason.NEGATIVE), (1.5, Reason.FRACTIONAL), (2**64, Reason.OUT_OF_RANGE)):
        m = orjson.loads(SAMPLES["is-3.32.json"])
        m["entities_count"]["gateways"]["total"] = value
        result = validate(_dumps(m))
        assert isinstance(result, Rejection) and result.reason == reason, (value, result)


def _dumps(m: object) -> bytes:
    import json

    return json.dumps(m).encode()


@given(st.binary(max_size=200))
def test_any_bytes_give_a_message_or_a_rejection_never_an_exception(body: bytes) -> None:
    result = validate(body)
    assert isinstance(result, Rejection) or result.uid


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    )
)
def test_any_json_gives_a_message_or_a_rejection(value: object) -> None:
    result = validate(_dumps(value))
    assert isinstance(result, Rejection) or result.uid


# ------------------------------------------------------------------------------------------------ process()


def _record(body: bytes, partition: int, offset: int, key: bytes | None) -> RawRecord:
    return RawRecord("raw", partition, offset, 1_772_000_000_000, {"received_at_ms": b"1772000000000"}, body, key)


def test_process_sorts_valid_rejected_rekeyed_and_duplicates() -> None:
    body = SAMPLES["cli-3.30.json"]
    uid = orjson.loads(body)["uid"].encode()
    home = partition_of(uid, 8)
    records = [
        _record(body, home, 0, uid),
        _record(body, home, 1, uid),  # an exact re-send
        _record(b"{nope", home, 2, uid),
        _record(body, (home + 1) % 8, 3, uid),  # in another partition than its UID's: published again
        _record(body, home, 4, None),  # not keyed by its UID: published again
    ]
    out = process(records, 8, Deduplicator())
    assert [r.source_offset for r in out.snapshots] == [0]
    assert out.valid == 2 and out.duplicates == 1
    assert dict(out.rejected) == {"not_json": 1}
    assert [d.value for d in out.dead_letters] == [b"{nope"]
    assert [r.key for r in out.rekey] == [uid, uid]
    assert all(dict(r.headers)["received_at_ms"] == b"1772000000000" for r in out.rekey)


def test_a_bad_batch_record_is_rejected_whole() -> None:
    r = RawRecord("raw", 0, 7, 1, {}, b"garbage", None, batched=True, error="truncated frame")
    out = process([r], 8)
    assert dict(out.rejected) == {"bad_batch": 1} and not out.snapshots


# ---------------------------------------------------------------------------------------------------- UID


def test_uid_is_base64_sha512_of_the_elements_each_followed_by_a_colon() -> None:
    import base64
    import hashlib

    assert uid_from_elements(["a", "b"]) == base64.b64encode(hashlib.sha512(b"a:b:").digest()).decode()
    assert len(uid_from_elements([])) == 88


def test_uid_from_config_defaults_to_five_console_urls_and_prefers_uid_elements() -> None:
    assert uid_from_config({}) == uid_from_elements([DEFAULT_CONSOLE_BASE_URL] * 5)
    assert uid_from_config({"telemetry": {"uid-elements": ["x", 1]}}) == uid_from_elements(["x", "1"])
    ui = {k: {"base-url": f"https://{k}.example"} for k in ("is", "gs", "ns", "as", "js")}
    assert uid_from_config({"console": {"ui": ui}}) == uid_from_elements([f"https://{k}.example" for k in ui])


# ------------------------------------------------------------------------------------------- roll_up


class NoState:
    """A StateSource with nothing stored yet (processors/rollup.py)."""

    def newest_days(self, partitions: list[int]) -> dict[int, date]:
        return {}

    def allocate_generation(self) -> int:
        return 1

    def latest_snapshots(self, partitions: list[int], partitions_total: int, since: date) -> Iterator[Any]:
        return iter(())

    def rejections_since(self, partitions: list[int], since: date) -> Iterator[RejectionRow]:
        return iter(())


def test_an_older_cli_report_is_written_an_older_deployment_message_is_not() -> None:
    """The 2025 CLI's reports each count the uses since the previous one: an older report of the day (arrived later)
    is written for cli_reports, though the newer stays the snapshot; an exact re-send of the counted one is not."""
    cli_uid, t = "0f8fad5b-d9cb-469f-a165-70867728950e", 1_772_323_200_000  # 2026-03-01T00:00Z

    def cli(n: int) -> bytes:
        usage = {"commands": [{"command_path": "end-devices list", "execution_count": n, "last_used_at": 1}]}
        return orjson.dumps({"uid": cli_uid, "os": None, "cli": usage, "entities_count": None})

    is_body = SAMPLES["is-3.32.json"]
    older_is = is_body.replace(b'"total":120', b'"total":110')
    bodies = [(cli(5), t + 10), (cli(3), t + 9), (cli(5), t + 11), (is_body, t + 10), (older_is, t + 9)]
    rows, raw = [], []
    for offset, (body, ms) in enumerate(bodies):
        message = validate(body)
        assert not isinstance(message, Rejection), message
        rows.append(snapshot_row(message, body, ms, 0, offset, inconsistencies(message)))
        raw.append(body)
    batch = roll_up(Rollups(3, 8), NoState(), [PartitionBatch(0, len(bodies) - 1, rows, raw)])
    assert [(r.kind, r.received_at_ms) for r in batch.snapshots] == [("cli", t + 10), ("cli", t + 9), ("is", t + 10)]
    assert batch.duplicates == 1  # the re-sent CLI report
    (rollup,) = batch.rollups
    assert (rollup.cli_installs, rollup.deployments, rollup.end_devices) == (1, 1, 120)  # the newer ones count
