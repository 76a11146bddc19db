"""The many-bodies record format (core/envelope.py): pure logic."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.envelope import EnvelopeError, Frame, pack, unpack

frames = st.lists(
    st.builds(Frame, st.integers(0, 2**63 - 1), st.binary(max_size=40), st.binary(max_size=300)),
    min_size=1,
    max_size=20,
)


@given(frames)
def test_every_body_comes_back_byte_for_byte(fs: list[Frame]) -> None:
    back = list(unpack(pack(fs)))
    assert [(f.received_at_ms, f.body) for f in back] == [(f.received_at_ms, f.body) for f in fs]
    assert [f.user_agent for f in back] == [f.user_agent.decode("utf-8", "replace").encode() for f in fs]


def test_lines_are_json_objects_a_clickhouse_kafka_table_reads() -> None:
    value = pack([Frame(1, b"TheThingsStack/3.32.1 (linux/amd64)", b'{"uid":"x"}'), Frame(2, b"", b"\xff\xfe{")])
    first, second = (orjson.loads(line) for line in value.split(b"\n"))
    assert first == {"received_at_ms": 1, "user_agent": "TheThingsStack/3.32.1 (linux/amd64)", "body": '{"uid":"x"}'}
    assert second == {"received_at_ms": 2, "user_agent": "", "body_base64": "//57"}  # not UTF-8: base64


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x05\x00\x00\x00truncated",
        b'{"received_at_ms":"1","body":"x"}',
        b'{"received_at_ms":1}',
        b"[1,2]",
        b'{"received_at_ms":1,"body_base64":"***"}',
        b'{"received_at_ms":1,"body":"\\ud800"}',
    ],
)
def test_a_record_that_is_not_frames_is_refused(value: bytes) -> None:
    with pytest.raises(EnvelopeError):
        list(unpack(value))
