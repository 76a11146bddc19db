"""Pure rules of erasure (docs/privacy.md): which rows of an erased UID the roll-up drops (processors/erased.py) and
which UIDs `forget` takes (sinks/erasure.py `is_uid`, an allowlist)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from core.rows import PartitionBatch, RejectionRow, ms_to_datetime
from core.uid import erasure_key, uid_from_elements
from dashboard.forget_route import MAX_UIDS
from is_telemetry import apiclient, cli
from processors.erased import drop_erased
from processors.snapshot import snapshot_row
from processors.validate import validate
from sinks.erasure import is_uid
from tests.sink_samples import cli_body

UID = uid_from_elements(["https://a.example.net/api/v3"] * 5)
OTHER = uid_from_elements(["https://b.example.net/api/v3"] * 5)
T = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def body(uid: str) -> bytes:
    if is_uid(uid) and "-" in uid:  # a CLI install's
        return cli_body(uid)
    return orjson.dumps(
        {
            "uid": uid,
            "os": {"operating_system": "linux", "arch": "amd64", "binary_version": "3.33.1", "golang_version": "go1"},
            "cli": None,
            "entities_count": {"gateways": {"total": 1}},
        }
    )


def part(*received: tuple[str, int]) -> PartitionBatch:
    p = PartitionBatch(0, len(received))
    for offset, (uid, ms) in enumerate(received):
        b = body(uid)
        message = validate(b)
        assert not isinstance(message, Exception), message
        p.snapshots.append(snapshot_row(message, b, ms, 0, offset, []))  # type: ignore[arg-type]
        p.bodies.append(b)
    return p


def rejection(text: str, ms: int) -> RejectionRow:
    return RejectionRow(date(2026, 1, 1), ms_to_datetime(ms), "not_json", text, "raw", 0, 1, 0, text)


def test_records_received_up_to_the_erasure_are_dropped_later_ones_count() -> None:
    batch = part((UID, T - 1), (OTHER, T - 1), (UID, T), (UID, T + 1))
    [kept], dropped = drop_erased([batch], {UID: T})
    assert dropped == 2
    assert [(r.uid, r.received_at_ms) for r in kept.snapshots] == [(OTHER, T - 1), (UID, T + 1)]
    assert kept.bodies == [body(OTHER), body(UID)]  # each body stays with its row


def test_no_register_changes_nothing() -> None:
    batch = part((UID, T))
    assert drop_erased([batch], {}) == ([batch], 0)


def test_rejected_records_keep_their_row_and_lose_the_text_naming_an_erased_uid() -> None:
    batch = part()
    batch.rejections = [rejection(f"{{{UID}", T), rejection(f"{{{UID}", T + 1), rejection("{x", T)]
    [kept], _ = drop_erased([batch], {UID: T})
    assert [(r.body, r.message) for r in kept.rejections] == [("", ""), (f"{{{UID}", f"{{{UID}"), ("{x", "{x")]


def test_forget_takes_both_kinds_of_uid_and_nothing_else() -> None:
    assert is_uid(UID) and is_uid("0f8fad5b-d9cb-469f-a165-70867728950e")
    for bad in ("", UID + "\n", UID[:-1], "x' OR 1=1 --", "0f8fad5b-d9cb-469f-a165-70867728950e\n", "%" * 88):
        assert not is_uid(bad)


def test_a_uuid_is_compared_in_any_case_a_deployment_uid_as_written() -> None:
    assert erasure_key("AABBCCDD-1111-4222-8333-0123456789AB") == "aabbccdd-1111-4222-8333-0123456789ab"
    assert erasure_key(UID) == UID and erasure_key(UID.lower()) != UID  # base64: case matters
    upper = "AABBCCDD-1111-4222-8333-0123456789AB"
    batch = part((upper, T), (upper, T + 1))
    [kept], dropped = drop_erased([batch], {erasure_key(upper.lower()): T})
    assert dropped == 1 and [r.received_at_ms for r in kept.snapshots] == [T + 1]


def test_rejected_text_naming_an_erased_uid_with_json_escapes_loses_it() -> None:
    assert "/" in UID
    escaped = '{"uid":"' + UID.replace("/", "\\/") + '"}'
    unicode = '{"uid":"\\u00' + f"{ord(UID[0]):02x}" + UID[1:] + '"}'
    upper = '{"uid":"AABBCCDD-1111-4222-8333-0123456789AB"}'
    batch = part()
    batch.rejections = [rejection(escaped, T), rejection(unicode, T), rejection(upper, T), rejection("{x", T)]
    register = {UID: T, erasure_key("aabbccdd-1111-4222-8333-0123456789ab"): T}
    [kept], _ = drop_erased([batch], register)
    assert [(r.body, r.message) for r in kept.rejections] == [("", ""), ("", ""), ("", ""), ("{x", "{x")]


def _api(answer: Callable[[list[str]], httpx.Response], sent: list[list[str]]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        uids = orjson.loads(request.content)["uids"]
        sent.append(uids)
        return answer(uids)

    return httpx.Client(transport=httpx.MockTransport(handle))


def _erased(uids: list[str]) -> httpx.Response:
    return httpx.Response(200, json={"results": [{"uid": u, "outcome": "erased", "message": u} for u in uids]})


def test_the_cli_sends_at_most_the_apis_limit_per_request() -> None:
    uids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(2 * MAX_UIDS + 1)]
    sent: list[list[str]] = []
    results = apiclient.forget("http://api", uids, client=_api(_erased, sent))
    assert [len(s) for s in sent] == [MAX_UIDS, MAX_UIDS, 1]
    assert [r["uid"] for r in results] == uids


def test_the_cli_refuses_results_that_do_not_match_what_it_asked() -> None:
    asked = ["00000000-0000-4000-8000-000000000000"]
    for wrong in (
        lambda uids: _erased(["x"]),  # another UID
        lambda uids: _erased([]),  # none
        lambda uids: _erased(uids + uids),  # one twice
    ):
        with pytest.raises(apiclient.ApiError, match="bad_response"):
            apiclient.forget("http://api", asked, client=_api(wrong, []))


def test_a_refused_forget_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> list[dict[str, str]]:
        raise apiclient.ApiError(400, "bad_request", "no")

    monkeypatch.setattr(apiclient, "forget", refused)
    result = CliRunner().invoke(
        cli.app, ["forget", "--api", "http://127.0.0.1:9", "00000000-0000-4000-8000-000000000000"]
    )
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1
