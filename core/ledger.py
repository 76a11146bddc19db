"""The loss ledger of the embedded broker: durable facts from which `up` tells what a broker crash took with it.

The embedded broker keeps everything in memory. When it dies, what it had acknowledged but the worker had not stored
yet is gone, and the processes' counters cannot tell how much (they start again at 0 when a process restarts, and a
restarted worker stores again what its predecessor had stored but not committed). So the processes write what they
know, as they learn it, into files of the data directory (`up` gives their directory in LEDGER_ENV, only with the
embedded broker), one pair per topic:

- `acked.<topic>`: the collector appends one entry per record Kafka acknowledged (partition, offset, bodies), before
  the senders get their 202 (so a collector killed right after has written it; a restarted one appends to it);
- `stored.<topic>.json`: the worker replaces it after each batch ClickHouse took: per partition, the first offset
  not yet stored (it never goes back: a restarted worker that reads records again does not lower it).

Lost = the bodies of acknowledged records at or after their partition's stored position (`loss`). The files of a
topic are removed with the topic (a new broker, a generation deleted), so they stay as small as the topic.

Entries of a record acknowledged after its sender was answered 503 (it waited too long) count as acknowledged: Kafka
did acknowledge them. A worker killed between its ClickHouse write and the file's replacement leaves the position of
its previous batch: the report then counts that batch as lost although it is stored (the window is the time of one
small file write).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import orjson

LEDGER_ENV = "IS_TELEMETRY_LEDGER_DIR"  # in the environment of `up`'s collector and worker on the embedded broker
_ENTRY = struct.Struct("<iqi")  # partition, offset, bodies


def acked_path(directory: Path, topic: str) -> Path:
    return directory / f"acked.{topic}"


def stored_path(directory: Path, topic: str) -> Path:
    return directory / f"stored.{topic}.json"


def from_env() -> Path | None:
    """The ledger directory `up` gave this process (taken out of the environment), else None."""
    value = os.environ.pop(LEDGER_ENV, "")
    return Path(value) if value else None


class AckLedger:
    """The collector's side: one entry per acknowledged record, appended (a write is atomic and reaches the page cache
    at once: a process killed afterwards has written it). Thread-safe: called from the Kafka client's I/O thread."""

    def __init__(self, directory: Path, topic: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.topic = topic
        self.fd = os.open(acked_path(directory, topic), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def record(self, partition: int, offset: int, bodies: int) -> None:
        os.write(self.fd, _ENTRY.pack(partition, offset, bodies))

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class StoredPositions:
    """The worker's side: per partition, the first offset not yet stored, replaced in one step after each write."""

    def __init__(self, directory: Path, topic: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = stored_path(directory, topic)
        self.positions = read_stored(self.path)

    def record(self, written: dict[int, int]) -> None:
        changed = False
        for partition, position in written.items():
            if position > self.positions.get(partition, 0):
                self.positions[partition] = position
                changed = True
        if not changed:
            return
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_bytes(orjson.dumps({str(p): o for p, o in sorted(self.positions.items())}))
        tmp.replace(self.path)


def read_acked(path: Path) -> list[tuple[int, int, int]]:
    """The entries of an ack ledger (a partial last entry, from a process killed while writing, is left out)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    whole = len(data) - len(data) % _ENTRY.size
    return [e for e in _ENTRY.iter_unpack(data[:whole]) if e[0] >= 0 and e[1] >= 0 and e[2] > 0]


def read_stored(path: Path) -> dict[int, int]:
    """The stored positions of a topic ({} if none were written, or the file is not what the worker writes)."""
    try:
        value = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    if not isinstance(value, dict):
        return {}
    out: dict[int, int] = {}
    for p, o in value.items():
        if isinstance(p, str) and p.isdigit() and isinstance(o, int) and not isinstance(o, bool) and o >= 0:
            out[int(p)] = o
    return out


@dataclass(frozen=True)
class Loss:
    acknowledged: int  # bodies the collector got acknowledged, in the topics counted
    lost: int  # of those, in records not stored

    @property
    def stored(self) -> int:
        return self.acknowledged - self.lost


def loss(directory: Path, topics: list[str]) -> Loss:
    """What the ledger says of `topics`: bodies acknowledged, and of those, bodies not stored."""
    acknowledged = lost = 0
    for topic in topics:
        stored = read_stored(stored_path(directory, topic))
        for partition, offset, bodies in read_acked(acked_path(directory, topic)):
            acknowledged += bodies
            if offset >= stored.get(partition, 0):
                lost += bodies
    return Loss(acknowledged, lost)


def remove(directory: Path, topics: list[str] | None = None) -> None:
    """Remove the ledger of `topics` (all of it when None): their topics are gone."""
    if topics is None:
        paths = list(directory.glob("acked.*")) + list(directory.glob("stored.*")) if directory.is_dir() else []
    else:
        paths = [p for t in topics for p in (acked_path(directory, t), stored_path(directory, t))]
    for path in paths:
        path.unlink(missing_ok=True)
