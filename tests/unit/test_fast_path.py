"""The fast path (processors/fastpath.py) takes only what the usual path accepts, and makes of it the same row.

For every body, the simulator's and hostile ones: `fastpath.row` is None (the usual path decides), or `validate`
accepts the body and `snapshot_row` makes the row the fast path made, value for value and type for type, dict order
included. And `process` gives the same outcome (rows, rejections with their reasons and messages, dead letters,
re-keys) with the fast path as without it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.rows import SnapshotRow, values
from core.schema import DEFAULT_UID, MAX_FREQUENCY_PLANS, MAX_NAME_LENGTH, UINT64_MAX
from processors import fastpath, pipeline
from processors.pipeline import RawRecord, process
from processors.snapshot import snapshot_row
from processors.validate import Rejection, inconsistencies, validate
from tests.samples import SAMPLES

MS, LIMIT = 1_772_000_000_000, 10**9
IS_SAMPLE = SAMPLES["is-3.32.json"]
UID = orjson.loads(IS_SAMPLE)["uid"]


def _usual(body: bytes, limit: int) -> SnapshotRow | Rejection:
    message = validate(body, limit)
    if isinstance(message, Rejection):
        return message
    return snapshot_row(message, body, MS, 3, 7, inconsistencies(message), 2)


def _typed(row: SnapshotRow) -> list[Any]:
    """The row's values with their types, a dict's items in order: equal only if stored byte for byte alike."""
    return [(type(v), list(v.items()) if isinstance(v, dict) else v) for v in values(row)]


def check(body: bytes, limit: int = LIMIT) -> bool:
    """The fast path agrees with the usual one on `body`; whether it took the body."""
    fast = fastpath.row(body, MS, 3, 7, 2, limit)
    if fast is None:
        return False
    usual = _usual(body, limit)
    assert not isinstance(usual, Rejection), (body[:300], usual)
    assert _typed(fast) == _typed(usual), body[:300]
    return True


def _is(**changes: Any) -> dict[str, Any]:
    m: dict[str, Any] = orjson.loads(IS_SAMPLE)
    m.update(changes)
    return m


def _set(m: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    *parents, last = path.split(".")
    node = m
    for p in parents:
        node = node[p]
    node[last] = value
    return m


def test_the_usual_bodies_take_the_fast_path_with_the_same_rows() -> None:
    from producers.simulator import generate

    deliveries = generate(60, 10, 10, seed=3, end_day="2025-01-31").deliveries
    taken = [check(d.body) for d in deliveries]
    valid_is = [
        d for d in deliveries if not isinstance(m := validate(d.body), Rejection) and m.entities_count is not None
    ]
    assert sum(taken) == len(valid_is) > 500  # every valid Identity Server body, and only those
    for name, body in SAMPLES.items():
        assert check(body) == name.startswith("is-"), name


def _hostile() -> Iterator[tuple[str, bytes, int]]:
    """(what, body, plausibility limit)."""
    ec = "entities_count"
    plans = f"{ec}.gateways.gateways_by_frequency_plan_id"
    first = b'"total":3,'  # the sample's first count: its gateways
    assert IS_SAMPLE.count(first) == 1
    for n in (UINT64_MAX, UINT64_MAX + 1, 2**70, 10**40):
        for limit in (LIMIT, UINT64_MAX, 2**64, 2**80):
            yield f"count {n}, limit {limit}", IS_SAMPLE.replace(first, f'"total":{n},'.encode()), limit
            yield f"users.total {n}", json.dumps(_set(_is(), f"{ec}.accounts.users.total", n)).encode(), limit
            yield f"plan {n}", json.dumps(_set(_is(), plans, {"A": n})).encode(), limit
    yield (
        "two plans summing above UINT64_MAX",
        json.dumps(_set(_is(), plans, {"A": UINT64_MAX, "B": 1})).encode(),
        2**80,
    )
    yield "5,000 digits", IS_SAMPLE.replace(first, b'"total":' + b"9" * 5000 + b","), LIMIT
    for v in ("-0", "-1", "1.0", "1e2", "1E400", "-1e400", "NaN", "Infinity", "-Infinity", "true", "null", '"1"', "[]"):
        yield (
            f"count {v}",
            IS_SAMPLE.replace(first, f'"total":{v},'.encode()),
            LIMIT,
        )
        yield (
            f"count only {v}",
            json.dumps(_set(_is(), f"{ec}.applications", {"total": 0}))
            .encode()
            .replace(b'"applications": {"total": 0}', f'"applications": {{"total": {v}}}'.encode()),
            LIMIT,
        )
    deep = "[" * 5000 + "]" * 5000
    yield "deep in an unknown field", IS_SAMPLE[:-1] + f',"extra":{deep}}}'.encode(), LIMIT
    yield "deep as an os string", IS_SAMPLE.replace(b'"arch":"amd64"', f'"arch":{deep}'.encode()), LIMIT
    yield (
        "deep as a plan count",
        json.dumps(_set(_is(), plans, {"A": 1})).encode().replace(b'"A": 1', f'"A": {deep}'.encode()),
        LIMIT,
    )
    yield "an unknown field", IS_SAMPLE[:-1] + b',"extra":1}', LIMIT
    yield "escaped field names", IS_SAMPLE.replace(b'"uid"', b'"\\u0075id"').replace(b'"arch"', b'"\\u0061rch"'), LIMIT
    yield "an unknown nested field", IS_SAMPLE.replace(b'"arch":', b'"x":1,"arch":'), LIMIT
    for raw in (b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"):
        yield f"non-UTF-8 {raw!r} in an os string", IS_SAMPLE.replace(b'"amd64"', b'"amd' + raw + b'"'), LIMIT
        yield (
            f"non-UTF-8 {raw!r} in a plan ID",
            json.dumps(_set(_is(), plans, {"A": 1})).encode().replace(b'"A"', b'"A' + raw + b'"'),
            LIMIT,
        )
        yield f"non-UTF-8 {raw!r} in an unknown key", IS_SAMPLE[:-1] + b',"k' + raw + b'":1}', LIMIT
    for esc in ("\\ud800", "\\udc00", "\\ud800x", "\\ud83d\\ude00", "\\u0000", "\\u2028", "\\/", "\\x41", "\\U0041"):
        yield f"escape {esc}", IS_SAMPLE.replace(b'"amd64"', f'"amd{esc}"'.encode()), LIMIT
    for ch in ("\t", "\n", "\x00", "\x1f", "\x7f", "\u2028", "\ufeff"):
        yield f"raw {ch!r} in a string", IS_SAMPLE.replace(b'"amd64"', f'"amd{ch}"'.encode()), LIMIT
    yield "a BOM first", b"\xef\xbb\xbf" + IS_SAMPLE, LIMIT
    yield "whitespace around", b" \r\n\t" + IS_SAMPLE + b" \n", LIMIT
    yield "trailing garbage", IS_SAMPLE + b"x", LIMIT
    yield "a trailing NUL", IS_SAMPLE + b"\x00", LIMIT
    yield "a trailing comma", IS_SAMPLE[:-1] + b",}", LIMIT
    yield "uid twice, the last bad", IS_SAMPLE[:-1] + b',"uid":"x"}', LIMIT
    yield "uid twice, the first bad", b'{"uid":"x",' + IS_SAMPLE[1:], LIMIT
    yield "entities_count twice, the last null", IS_SAMPLE[:-1] + b',"entities_count":null}', LIMIT
    yield "cli twice, the last {}", IS_SAMPLE[:-1] + b',"cli":{}}', LIMIT
    yield "a count twice, the first negative", IS_SAMPLE.replace(first, b'"total":-1,' + first), LIMIT
    yield "a count twice, the last negative", IS_SAMPLE.replace(first, first + b'"total":-1,'), LIMIT
    yield (
        "a plan twice",
        json.dumps(_set(_is(), plans, {"A": 1, "B": 2})).encode().replace(b'"B": 2', b'"B": 2, "A": 5'),
        LIMIT,
    )
    yield (
        "a plan twice, the first negative",
        json.dumps(_set(_is(), plans, {"A": 1})).encode().replace(b'"A": 1', b'"A": -1, "A": 1'),
        LIMIT,
    )
    for uid in (
        "",
        UID[:-1],
        UID + "\n",
        UID[:-2] + "B=",
        UID.lower(),
        DEFAULT_UID,
        "00000000-0000-4000-8000-000000000000",
    ):
        yield f"uid {uid!r}", json.dumps(_is(uid=uid)).encode(), LIMIT
    yield "uid a number", json.dumps(_is(uid=5)).encode(), LIMIT
    yield "uid absent", json.dumps({k: v for k, v in _is().items() if k != "uid"}).encode(), LIMIT
    for cli in (None, {}, {"commands": []}, [], 0):
        yield f"cli {cli!r}", json.dumps(_is(cli=cli)).encode(), LIMIT
        yield f"cli {cli!r}, no entities_count", json.dumps(_is(cli=cli, entities_count=None)).encode(), LIMIT
    yield "cli absent", json.dumps({k: v for k, v in _is().items() if k != "cli"}).encode(), LIMIT
    yield "entities_count absent", json.dumps({k: v for k, v in _is().items() if k != "entities_count"}).encode(), LIMIT
    for os_ in (None, {}, {"arch": None}, {"arch": 5}, [], "linux"):
        yield f"os {os_!r}", json.dumps(_is(os=os_)).encode(), LIMIT
    yield "os absent", json.dumps({k: v for k, v in _is().items() if k != "os"}).encode(), LIMIT
    for obj in ("gateways", "end_devices", "end_devices.activate_end_devices", "accounts.users", "applications"):
        for v in (None, [], {}, 0):
            yield f"{obj} = {v!r}", json.dumps(_set(_is(), f"{ec}.{obj}", v)).encode(), LIMIT
    yield "users.total null", json.dumps(_set(_is(), f"{ec}.accounts.users.total", None)).encode(), LIMIT
    yield (
        f"{MAX_FREQUENCY_PLANS} plans",
        json.dumps(_set(_is(), plans, {f"P{i}": 1 for i in range(MAX_FREQUENCY_PLANS)})).encode(),
        LIMIT,
    )
    yield (
        f"{MAX_FREQUENCY_PLANS + 1} plans",
        json.dumps(_set(_is(), plans, {f"P{i}": 1 for i in range(MAX_FREQUENCY_PLANS + 1)})).encode(),
        LIMIT,
    )
    for n in (MAX_NAME_LENGTH, MAX_NAME_LENGTH + 1):
        yield f"a plan ID of {n}", json.dumps(_set(_is(), plans, {"é" * n: 1})).encode(), LIMIT
    for s in ("", " ", "\x00", "😀🧪", "a=b,c", "\u200f\u202eRTL", "9" * 5000 + ".1", " v03.032.1", "L" * 5000):
        yield (
            f"os strings {s!r}",
            json.dumps(
                _is(os={"operating_system": s, "arch": s, "binary_version": s, "golang_version": f" {s} "})
            ).encode(),
            LIMIT,
        )
        yield f"plan ID {s[:20]!r}", json.dumps(_set(_is(), plans, {s: 3})).encode(), LIMIT
    yield (
        "inconsistent windows",
        json.dumps(
            _set(
                _is(),
                f"{ec}.end_devices.activate_end_devices",
                {"total": 1, "last_day": 5, "last_week": 3, "last_month": 2},
            )
        ).encode(),
        LIMIT,
    )
    yield "implausible", json.dumps(_set(_is(), f"{ec}.end_devices.total", LIMIT + 1)).encode(), LIMIT
    yield "at the limit", json.dumps(_set(_is(), f"{ec}.end_devices.total", LIMIT)).encode(), LIMIT
    yield "plans summing above the limit", json.dumps(_set(_is(), plans, {"A": LIMIT, "B": 1})).encode(), LIMIT
    for top in (b"[]", b'"x"', b"1", b"null", b"", b"{", b"{}"):
        yield f"top {top!r}", top, LIMIT


HOSTILE = list(_hostile())


@pytest.mark.parametrize("what,body,limit", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_body_is_declined_or_taken_exactly(what: str, body: bytes, limit: int) -> None:
    check(body, limit)


def _named(by_name: dict[str, Any], name: str) -> list[str]:
    """The hostile bodies called `name`, or whose names start with it if it ends with `*`."""
    found = [k for k in by_name if k.startswith(name[:-1])] if name.endswith("*") else [name] if name in by_name else []
    assert found, name
    return found


def test_the_fast_path_takes_odd_but_valid_bodies_and_declines_what_it_cannot_take_exactly() -> None:
    by_name = {what: (body, limit) for what, body, limit in HOSTILE}
    for taken in (
        "whitespace around",
        "escaped field names",
        "a plan twice",
        "escape \\ud83d\\ude00",
        "escape \\u0000",
        "os strings '9999*",
        "uid twice, the first bad",
        "users.total null",
        "inconsistent windows",
        "at the limit",
        f"{MAX_FREQUENCY_PLANS} plans",
        f"a plan ID of {MAX_NAME_LENGTH}",
        "count -0",
        f"count {UINT64_MAX}, limit {2**64}",
    ):
        assert all(check(*by_name[k]) for k in _named(by_name, taken)), taken
    for declined in (
        "count 18446744073709551616*",  # above UINT64_MAX, whatever the limit (msgspec reads such an integer)
        "an unknown field",
        "cli {}*",
        "implausible",
        "plans summing above the limit",
        f"{MAX_FREQUENCY_PLANS + 1} plans",
        f"a plan ID of {MAX_NAME_LENGTH + 1}",
        "uid ''",
        "a plan twice, the first negative",  # msgspec checks each occurrence; pydantic only the last: declined
        "a count twice, the first negative",
    ):
        assert not any(fastpath.row(by_name[k][0], MS, 3, 7, 2, by_name[k][1]) for k in _named(by_name, declined))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=12),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
_PATHS = [
    "uid",
    "os",
    "os.arch",
    "os.golang_version",
    "cli",
    "entities_count",
    "entities_count.gateways",
    "entities_count.gateways.total",
    "entities_count.gateways.gateways_by_frequency_plan_id",
    "entities_count.gateways.gateways_by_frequency_plan_id.EU_863_870",
    "entities_count.end_devices.activate_end_devices",
    "entities_count.end_devices.activate_end_devices.last_day",
    "entities_count.accounts.users",
    "entities_count.accounts.users.total",
    "entities_count.accounts.organizations.total",
    "entities_count.extra",
]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(_PATHS), _JSON, st.sampled_from([LIMIT, 2**64, 10]))
def test_any_value_anywhere_is_declined_or_taken_exactly(path: str, value: Any, limit: int) -> None:
    m = _is()
    m["entities_count"]["gateways"]["gateways_by_frequency_plan_id"] = {"EU_863_870": 2}
    body = json.dumps(_set(m, path, value)).encode()  # NaN and Infinity written as Python writes them
    check(body, limit)


@given(st.binary(max_size=120))
def test_any_bytes_are_declined_or_taken_exactly(body: bytes) -> None:
    check(body)


def _records(partitions: int) -> list[RawRecord]:
    bodies = [body for _what, body, _limit in HOSTILE] + list(SAMPLES.values())
    return [
        RawRecord("raw", i % partitions, i, MS, {"received_at_ms": str(MS + i).encode()}, body, None, i % 3, True)
        for i, body in enumerate(bodies)
    ]


@pytest.mark.parametrize("partitions", [1, 4])  # 1: every valid body is in its UID's partition; 4: most re-keyed
def test_process_gives_the_same_outcome_with_the_fast_path_as_without(
    partitions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _records(partitions)
    fast = process(records, partitions)
    monkeypatch.setattr(pipeline, "fast_row", lambda *args: None)
    usual = process(records, partitions)
    assert [_typed(r) for r in fast.snapshots] == [_typed(r) for r in usual.snapshots]
    assert fast.rejections == usual.rejections and fast.rejected == usual.rejected
    assert fast.dead_letters == usual.dead_letters and fast.rekey == usual.rekey
    assert fast.bodies == usual.bodies and fast.valid == usual.valid
    assert len(fast.snapshots) + len(fast.rekey) > 40 and len(fast.rejections) > 40


def test_the_shared_strings_stay_bounded_whatever_the_bodies() -> None:
    """Every body with OS strings never seen (and one far too long to keep): the fast path's shared strings stay
    under their bound, and the rows are the usual path's."""
    for i in range(fastpath.SHARED_MAX + 100):
        os_ = {"operating_system": f"os-{i}", "arch": "a" * (fastpath.SHARED_LENGTH + 1 + i), "golang_version": "go"}
        assert check(json.dumps(_is(os=os_)).encode())
        assert len(fastpath._SHARED) <= fastpath.SHARED_MAX
    assert all(len(s) <= fastpath.SHARED_LENGTH for s in fastpath._SHARED)
