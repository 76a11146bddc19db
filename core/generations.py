"""Generations of the raw and dead-letter topics on the embedded broker.

Tansu keeps every record of a topic in memory for as long as the topic exists (it ignores retention, and drops the
connection on DeleteRecords), and its CPU per request grows with the records it holds; deleting a topic frees them.
So `up` moves the stack to a new generation of both topics once the current one holds more than
`broker.max_records`, and deletes the old one once everything in it is stored (is_telemetry/stack/rotation.py).

Generation 0 has the configured names (`kafka.raw_topic`, `kafka.deadletter_topic`); generation n > 0 the same with
`.n` appended (`tts-telemetry-raw.3`). With an external Kafka nothing rotates: retention bounds its topics.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.config import Settings


@dataclass(frozen=True)
class Generation:
    number: int
    raw: str
    deadletter: str

    def topics(self) -> list[str]:
        return [self.raw, self.deadletter]


def generation(settings: Settings, number: int) -> Generation:
    k = settings.kafka
    if number == 0:
        return Generation(0, k.raw_topic, k.deadletter_topic)
    return Generation(number, f"{k.raw_topic}.{number}", f"{k.deadletter_topic}.{number}")


def number_of(settings: Settings, raw_topic: str) -> int | None:
    """The generation a raw topic name is (an allowlist: the configured name, or it with `.<n>`), else None."""
    base = settings.kafka.raw_topic
    if raw_topic == base:
        return 0
    m = re.fullmatch(re.escape(base) + r"\.([1-9][0-9]{0,8})", raw_topic)
    return int(m.group(1)) if m else None
