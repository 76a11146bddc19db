"""Many telemetry bodies in one Kafka record: the collector's batches (and the backfills of producers/packed.py).

A Kafka record with the header `format: telemetry-batch/1` holds bodies of one partition's UIDs, one JSON object
per line (newline-separated, as ClickHouse's `JSONEachRow` reads them), with what the collector stamps on a
single-body record:

    {"received_at_ms":1735689600000,"user_agent":"TheThingsStack/3.32.1 (linux/amd64)","body":"{\\"uid\\":...}"}

`body` is the body's text, byte for byte once encoded as UTF-8; a body that is not UTF-8 goes in `body_base64`
instead. A record without that header is one body, with the receive time in its `received_at_ms` header (or its
timestamp): what every other producer writes, always accepted. A body's identity is (partition, offset, index of
its line): unique, and ordered as the bodies arrived.

A record with the header `rate_limited: 1` holds bodies of a client that had used up its new UIDs for the day
(producers/client_limits.py): every body in it, alone or in a batch, is stored but rejected as `rate_limited`, never
counted. The collector never puts marked and unmarked bodies in one record. The mark names no client.

Why: faust's per-record machinery costs several times the work on a body (docs/benchmarks.md); a record of 100
bodies pays it once. Why JSON lines: any Kafka consumer can read them, ClickHouse's Kafka engine included.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import orjson

from core.errors import TelemetryError

HEADER_FORMAT = "format"
BATCH_FORMAT = b"telemetry-batch/1"
HEADER_RATE_LIMITED = "rate_limited"
RATE_LIMITED = b"1"  # the one value that marks a record; any other value is no mark
MAX_USER_AGENT = 512


class EnvelopeError(TelemetryError, ValueError):
    """A batch record that cannot be read (not JSON lines of frames): its bodies cannot be separated."""


@dataclass(slots=True)  # not frozen: one per body, and a frozen constructor costs four times as much
class Frame:
    received_at_ms: int
    user_agent: bytes
    body: bytes


def encode_frame(frame: Frame) -> bytes:
    ua = frame.user_agent[:MAX_USER_AGENT].decode("utf-8", "replace")
    try:
        return orjson.dumps({"received_at_ms": frame.received_at_ms, "user_agent": ua, "body": frame.body.decode()})
    except UnicodeDecodeError:
        return orjson.dumps(
            {
                "received_at_ms": frame.received_at_ms,
                "user_agent": ua,
                "body_base64": base64.b64encode(frame.body).decode(),
            }
        )


def bodies_in(headers: Mapping[str, bytes], value: bytes | None) -> int:
    """How many bodies a raw-topic record carries (one line a frame; a record of another producer: 1)."""
    return (value or b"").count(b"\n") + 1 if is_batch(headers) else 1


def pack(frames: Sequence[Frame]) -> bytes:
    return b"\n".join(encode_frame(f) for f in frames)


def unpack(value: bytes) -> Iterator[Frame]:
    for i, line in enumerate(value.split(b"\n")):
        try:
            d = orjson.loads(line)
            ms = d["received_at_ms"]
            if not isinstance(ms, int) or isinstance(ms, bool):
                raise TypeError("received_at_ms is not an integer")
            ua = str(d.get("user_agent", "")).encode("utf-8", "replace")
            body = d["body"].encode() if "body" in d else base64.b64decode(d["body_base64"], validate=True)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, UnicodeEncodeError, binascii.Error) as exc:
            raise EnvelopeError(f"line {i} is not a frame: {exc}") from None
        yield Frame(ms, ua, body)


def is_batch(headers: Mapping[str, bytes]) -> bool:
    return headers.get(HEADER_FORMAT) == BATCH_FORMAT


def is_rate_limited(headers: Mapping[str, bytes]) -> bool:
    """The record's bodies come from a client over its new-UID budget: rejected as `rate_limited`."""
    return headers.get(HEADER_RATE_LIMITED) == RATE_LIMITED


def frame_size(body: bytes, user_agent: bytes) -> int:
    """About the bytes a frame takes (JSON escaping adds a little)."""
    return len(body) + min(len(user_agent), MAX_USER_AGENT) + 64
