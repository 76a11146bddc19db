"""The pure parts of a long-running embedded stack (issue 28): the loss ledger, the generations of the raw topic, the
control pipe's commands, the status line of a worker that consumes nothing, and static membership's id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from core import control, ledger
from core.config import Settings, group_instance_id, load_settings
from core.generations import generation, number_of
from is_telemetry.status import BEHIND, DOWN, OK, worker_line


def test_the_loss_ledger_counts_acknowledged_bodies_at_or_after_the_stored_position(tmp_path: Path) -> None:
    acked = ledger.AckLedger(tmp_path, "raw")
    for partition, offset, bodies in [(0, 0, 5), (0, 1, 3), (0, 2, 1), (1, 0, 7), (1, 1, 2), (2, 0, 4)]:
        acked.record(partition, offset, bodies)
    acked.close()
    stored = ledger.StoredPositions(tmp_path, "raw")
    stored.record({0: 2, 1: 1})  # partition 0: offsets 0, 1 stored; partition 1: offset 0; partition 2: nothing
    assert ledger.loss(tmp_path, ["raw"]) == ledger.Loss(acknowledged=22, lost=1 + 2 + 4)
    # a restarted worker reads records again from its committed offset: the position never goes back
    again = ledger.StoredPositions(tmp_path, "raw")
    again.record({0: 1, 1: 2, 2: 1})
    assert ledger.read_stored(ledger.stored_path(tmp_path, "raw")) == {0: 2, 1: 2, 2: 1}
    assert ledger.loss(tmp_path, ["raw"]) == ledger.Loss(22, 1)
    # a restarted collector appends to the same ledger
    more = ledger.AckLedger(tmp_path, "raw")
    more.record(0, 3, 10)
    more.close()
    assert ledger.loss(tmp_path, ["raw"]) == ledger.Loss(32, 11)
    ledger.remove(tmp_path, ["raw"])
    assert ledger.loss(tmp_path, ["raw"]) == ledger.Loss(0, 0) and not list(tmp_path.iterdir())


def test_the_ledger_files_are_input(tmp_path: Path) -> None:
    path = ledger.acked_path(tmp_path, "raw")
    acked = ledger.AckLedger(tmp_path, "raw")
    acked.record(0, 0, 2)
    acked.close()
    with open(path, "ab") as f:
        f.write(b"\x01\x02\x03")  # a process killed in the middle of an entry
    assert ledger.read_acked(path) == [(0, 0, 2)]
    stored = ledger.stored_path(tmp_path, "raw")
    for text in [b"not json", b"[1, 2]", b'{"x": 1, "0": -5, "1": true, "2": "7", "3": 4}']:
        stored.write_bytes(text)
        assert ledger.read_stored(stored) == ({3: 4} if b'"3": 4' in text else {})


def test_generations_of_the_raw_topic_and_only_those_are_accepted() -> None:
    s = Settings()
    g0, g3 = generation(s, 0), generation(s, 3)
    assert (g0.raw, g0.deadletter) == ("tts-telemetry-raw", "tts-telemetry-deadletter")
    assert (g3.raw, g3.deadletter) == ("tts-telemetry-raw.3", "tts-telemetry-deadletter.3")
    assert number_of(s, "tts-telemetry-raw") == 0 and number_of(s, "tts-telemetry-raw.12") == 12
    for other in ["tts-telemetry-raw.0", "tts-telemetry-raw.-1", "tts-telemetry-raw.1x", "tts-telemetry-rawx",
                  "tts-telemetry-raw.1.2", "other", "tts-telemetry-deadletter.1", "../tts-telemetry-raw.1", ""]:  # fmt: skip
        assert number_of(s, other) is None, other


def test_topic_names_are_an_allowlist() -> None:
    for bad in ["../x", "a b", "x" * 201, ".", "..", "naïve", ""]:
        with pytest.raises(ValidationError):
            load_settings(kafka={"raw_topic": bad})
    assert load_settings(kafka={"raw_topic": "my.raw_topic-2"}).kafka.raw_topic == "my.raw_topic-2"


def test_control_commands_are_objects_of_strings(tmp_path: Path) -> None:
    assert control.parse(b'{"raw_topic": "tts-telemetry-raw.2"}') == {"raw_topic": "tts-telemetry-raw.2"}
    for bad in [b"", b"[]", b'{"raw_topic": 2}', b"nope", b'{"a": "' + b"x" * 2000 + b'"}']:
        assert control.parse(bad) is None
    pipe = control.ControlPipe()
    got: list[dict[str, str]] = []
    try:
        thread = control.listen(pipe.read_fd, got.append)
        pipe.send({"raw_topic": "tts-telemetry-raw.1"})
        os.write(pipe.write_fd, b"garbage\n")
        pipe.send({"raw_topic": "tts-telemetry-raw.2"})
        os.close(pipe.write_fd)  # end of file: the listener ends
        thread.join(5)
    finally:
        os.close(pipe.read_fd)
    assert got == [{"raw_topic": "tts-telemetry-raw.1"}, {"raw_topic": "tts-telemetry-raw.2"}]
    with pytest.raises(ValueError):
        control.ControlPipe().send({"x": "y" * 2000})


def test_a_worker_that_consumes_nothing_is_down_in_status() -> None:
    assert worker_line(8, 0).state == OK and "consuming 8 partitions" in worker_line(8, 0).detail
    idle = worker_line(0, 0)
    assert (
        idle.state == DOWN and "consuming no partition" in idle.detail and "joining its consumer group" in idle.detail
    )
    paused = worker_line(8, 3)
    assert paused.state == BEHIND and "3 of them paused" in paused.detail


def test_static_membership_ids() -> None:
    assert group_instance_id("", "host") is None
    assert group_instance_id("worker-{hostname}", "ab12cd") == "worker-ab12cd"
    assert group_instance_id("worker-{hostname}", "a b/c") == "worker-a-b-c"
    assert len(group_instance_id("w-{hostname}", "h" * 400) or "") == 249
    with pytest.raises(ValidationError):
        load_settings(processors={"group_instance_id": "worker {hostname}"})
