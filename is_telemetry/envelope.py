"""Many telemetry bodies in one Kafka record: the collector's batches (and the simulator's backfill).

A Kafka record with the header `format: telemetry-batch/1` holds bodies of one partition's UIDs, each framed with
what the collector stamps on a single-body record:

    u32 body length | u64 receive time (Unix ms) | u16 User-Agent length | User-Agent bytes | body bytes

repeated, little-endian. A record without that header is one body, with the receive time in its
`received_at_ms` header (or its timestamp): what every other producer writes, always accepted. A body's identity
is (partition, offset, index in the record): unique, and ordered like the bodies arrived.

Why: faust's per-record machinery costs several times the work on a body (docs/benchmarks.md); a record of 100
bodies pays it once.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

HEADER_FORMAT = "format"
BATCH_FORMAT = b"telemetry-batch/1"
_FRAME = struct.Struct("<IQH")
MAX_USER_AGENT = 0xFFFF


class EnvelopeError(ValueError):
    """A batch record that cannot be read (truncated or corrupt): its bodies cannot be separated."""


@dataclass(frozen=True, slots=True)
class Frame:
    received_at_ms: int
    user_agent: bytes
    body: bytes


def pack(frames: Sequence[Frame]) -> bytes:
    out = bytearray()
    for f in frames:
        ua = f.user_agent[:MAX_USER_AGENT]
        out += _FRAME.pack(len(f.body), f.received_at_ms, len(ua))
        out += ua
        out += f.body
    return bytes(out)


def unpack(value: bytes) -> Iterator[Frame]:
    view = memoryview(value)
    pos, end, head = 0, len(value), _FRAME.size
    while pos < end:
        if pos + head > end:
            raise EnvelopeError(f"truncated frame header at byte {pos}")
        length, received, ua_len = _FRAME.unpack_from(view, pos)
        pos += head
        if pos + ua_len + length > end:
            raise EnvelopeError(f"frame at byte {pos - head} runs past the end of the record")
        ua = bytes(view[pos:pos + ua_len])
        pos += ua_len
        yield Frame(received, ua, bytes(view[pos:pos + length]))
        pos += length


def is_batch(headers: dict[str, bytes]) -> bool:
    return headers.get(HEADER_FORMAT) == BATCH_FORMAT


def frame_size(body: bytes, user_agent: bytes) -> int:
    return _FRAME.size + min(len(user_agent), MAX_USER_AGENT) + len(body)
