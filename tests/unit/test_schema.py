"""The one message definition: samples, variants, the committed JSON Schema, and bad input."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.schema import DEFAULT_UID, TelemetryMessage, json_schema
from core.uid import uid_from_config, uid_from_elements
from processors.validate import Reason, Rejection, inconsistencies, validate
from producers.truth_rules import Rejected, judge
from tests.paths import ROOT
from tests.samples import SAMPLES

IS_SAMPLE = SAMPLES["is-3.32.json"]


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "docs" / "telemetry-message.schema.json").read_text())
    assert committed == json_schema(), "docs/telemetry-message.schema.json is stale: run `make schema`"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_sample_validates_and_reencodes_byte_for_byte(name: str) -> None:
    body = SAMPLES[name]
    message = validate(body)
    assert isinstance(message, TelemetryMessage)
    assert message.to_json() == body


def test_uid_vectors() -> None:
    assert uid_from_config({}) == DEFAULT_UID
    assert uid_from_elements(["foo", "bar"]) == (
        "wBs9NNSlIoSm2v/pcVCrI1j1UuOMFF36AFsiKszEq2r33ghp6MjSyxRci9Wqs5t3JkyLEUaouYHEO5gdyRFh3Q=="
    )


def _mutate(path: list[str], value: object) -> bytes:
    body = orjson.loads(IS_SAMPLE)
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return json.dumps(body, separators=(",", ":")).encode()


EC = ["entities_count"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", Reason.NOT_JSON),
        (b"{", Reason.NOT_JSON),
        (b"\xff\xfe", Reason.NOT_JSON),
        (IS_SAMPLE.replace(b'"total":120', b'"total":NaN'), Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b'"uid"', Reason.NOT_OBJECT),
        (b"{}", Reason.MISSING_FIELD),
        (_mutate(["uid"], 5), Reason.WRONG_TYPE),
        (_mutate([*EC, "applications", "total"], "7"), Reason.WRONG_TYPE),
        (_mutate([*EC, "gateways"], [1]), Reason.WRONG_TYPE),
        (_mutate([*EC, "applications", "total"], -1), Reason.NEGATIVE),
        (_mutate([*EC, "applications", "total"], 1.5), Reason.FRACTIONAL),
        (IS_SAMPLE.replace(b'"total":120', b'"total":18446744073709551616'), Reason.OUT_OF_RANGE),
        (_mutate(["uid"], "short"), Reason.BAD_UID),
        (_mutate(["uid"], DEFAULT_UID[:85] + "B=="), Reason.BAD_UID),  # 88 chars, but not 64 canonical bytes
        (_mutate(["uid"], DEFAULT_UID[:86] + "A="), Reason.BAD_UID),
        (_mutate(["uid"], "3f6c2a8e-5b1d-4c7e-9a0f-2d8b7e6c1a94"), Reason.BAD_UID),
        (_mutate(["cli"], {}), Reason.KIND_AMBIGUOUS),
        (_mutate(["entities_count"], None), Reason.KIND_AMBIGUOUS),
        (_mutate([*EC, "gateways", "gateways_by_frequency_plan_id", "EU"], 10**9 + 1), Reason.IMPLAUSIBLE),
    ],
)
def test_rejections_name_their_reason(body: bytes, reason: Reason) -> None:
    result = validate(body)
    assert isinstance(result, Rejection), result
    assert result.reason == reason, result.message
    assert result.message


def test_uint64_max_is_valid_when_the_plausibility_limit_allows_it() -> None:
    body = IS_SAMPLE.replace(b'"total":120', b'"total":18446744073709551615')
    assert isinstance(validate(body, plausibility_limit=2**64), TelemetryMessage)
    assert validate(body).reason == Reason.IMPLAUSIBLE  # type: ignore[union-attr]


def test_unknown_fields_are_accepted_and_old_senders_too() -> None:
    body = orjson.loads(IS_SAMPLE)
    body["new_field"] = {"x": 1}
    body["entities_count"]["gateways"]["new"] = 3
    assert isinstance(validate(orjson.dumps(body)), TelemetryMessage)
    cli = {
        "uid": "3f6c2a8e-5b1d-4c7e-9a0f-2d8b7e6c1a94",
        "cli": {"commands": [{"command_path": "a b", "execution_count": 2, "last_used_at": 1700000000}], "aliases": []},
        "entities_count": None,
    }
    assert validate(orjson.dumps(cli)).kind == "cli"  # type: ignore[union-attr]


def test_inconsistent_windows_are_kept_and_flagged() -> None:
    body = _mutate([*EC, "end_devices", "activate_end_devices", "last_day"], 1000)
    message = validate(body)
    assert isinstance(message, TelemetryMessage)
    assert "last_day>last_week" in inconsistencies(message)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(body: bytes) -> None:
    assert isinstance(validate(body), (Rejection, TelemetryMessage))


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json_is_rejected_with_a_known_reason(value: object) -> None:
    result = validate(json.dumps(value).encode())
    assert isinstance(result, Rejection) and result.reason in set(Reason)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["applications", "gateways", "end_devices"]), json_values)
def test_any_value_in_a_count_slot_is_valid_only_if_a_plausible_uint64(slot: str, value: object) -> None:
    result = validate(_mutate([*EC, slot, "total"], value))
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 10**9
    assert isinstance(result, TelemetryMessage) == ok, (value, result)


@pytest.mark.parametrize("depth", [198, 199, 200, 201, 202, 600])
@pytest.mark.parametrize("shape", ["arrays", "objects", "at the root"])
def test_the_oracle_and_the_processors_agree_on_nesting(shape: str, depth: int) -> None:
    """A value inside more than 200 arrays and objects is `not_json` (the parser's recursion limit,
    docs/processing.md): the oracle states the same bound (before, it judged 600 levels inside `cli` valid)."""
    sample = SAMPLES["cli-3.30.json"][:-1]  # the object without its closing brace
    opening, closing = {"arrays": (b"[", b"]"), "objects": (b'{"a":', b"1}"), "at the root": (b"[", b"]")}[shape]
    nested = opening * depth + closing + closing[-1:] * (depth - 1)
    body = nested if shape == "at the root" else sample + b',"x":' + nested + b"}"
    pipeline, oracle = validate(body), judge(body)
    mine = pipeline.reason.value if isinstance(pipeline, Rejection) else None
    theirs = oracle.reason if isinstance(oracle, Rejected) else None
    assert mine == theirs, (shape, depth, mine, theirs)
    assert (theirs == "not_json") == (depth > {"arrays": 200, "objects": 199, "at the root": 201}[shape])
