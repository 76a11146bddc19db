"""The parts of `is-telemetry up` (is_telemetry/stack/) that need no process: which ports are checked where, the
loss account, the console's lines, the state file, the restart budget."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from is_telemetry.config import Settings
from is_telemetry.stack.broker_recovery import LossAccount, start_broker_again
from is_telemetry.stack.console import progress_line, summary_line
from is_telemetry.stack.preflight import PreflightFailed, ports, preflight
from is_telemetry.stack.state import STATE_FILE, other_owner, read_state, remove_state, write_state
from is_telemetry.stack.supervisor import RestartWindow, exit_status


def settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    return Settings(data_dir=tmp_path, **sections)  # type: ignore[arg-type]


def test_each_port_is_checked_on_its_own_components_host(tmp_path: Path) -> None:
    s = settings(tmp_path, api={"host": "127.0.0.1", "port": 8480}, collector={"host": "127.0.0.2", "port": 8490})
    by_name = {p.name: p for p in ports(s)}
    assert (by_name["API"].host, by_name["API"].port) == ("127.0.0.1", 8480)
    assert (by_name["collector"].host, by_name["collector"].port) == ("127.0.0.2", 8490)
    assert "embedded broker" in by_name  # no --kafka: the embedded broker's port too


def test_a_collector_port_taken_on_the_collectors_host_is_refused(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.listen()
        port = held.getsockname()[1]
        # the API's host (127.0.0.1) has that port free: only a check on the collector's own host sees it taken
        s = settings(tmp_path, api={"host": "127.0.0.1", "port": 1}, collector={"host": "127.0.0.2", "port": port})
        with pytest.raises(PreflightFailed, match=f"port {port} for the collector is already in use"):
            preflight(s, tmp_path, threading.Event())


def test_the_loss_report_counts_acknowledged_minus_stored() -> None:
    losses = LossAccount()
    losses.collector_published, losses.worker_stored = 9.0, 4.0
    s = Settings()
    text = losses.report("the broker exited", 0, "4 snapshot rows over 1 day", s, "127.0.0.1:9092")
    assert "!! Lost: about 5 records" in text
    assert "(the collector acknowledged 9 since the broker started; the worker stored 4)" in text
    assert "4 snapshot rows over 1 day" in text
    with_backfill = losses.report("x", 100, "", s, "127.0.0.1:9092")
    assert "about 105 records" in with_backfill and "the simulator backfilled 100" in with_backfill
    losses.worker_stored = 50.0
    assert "about 0 records" in losses.report("x", 0, "", s, "b")  # never negative
    losses.reset()
    assert (losses.collector_published, losses.worker_stored) == (0.0, 0.0)


def test_console_lines() -> None:
    assert progress_line((3, 1, 2), False, 0, None) == "ClickHouse: 3 snapshots (UID-days), 1 rejected, 2 days"
    assert progress_line((3, 1, 2), True, 10, None).startswith("backfill 10  live -  | ClickHouse: 3 snapshots")
    assert progress_line((3, 1, 2), True, 10, 7).startswith("backfill 10  live 7  | ")
    assert summary_line(None) == "today: no data yet"
    day = ["2024-05-01", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert summary_line(day) == (
        "2024-05-01: 1 deployments, 2 CLI installs, 3 gateways, 4 end devices (active day/week/month 5/6/7), "
        "8 applications, 9 users, 10 organizations"
    )


def test_the_state_file_is_this_process_s_until_removed(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    write_state(tmp_path, {"pid": os.getpid(), "api_url": "http://127.0.0.1:1"})
    assert read_state(tmp_path) == {"pid": os.getpid(), "api_url": "http://127.0.0.1:1"}
    assert other_owner(tmp_path) is None  # this process's own
    remove_state(tmp_path)
    assert not (tmp_path / STATE_FILE).exists()
    write_state(tmp_path, {"pid": 2**22 + 12345})  # above pid_max on Linux: no such process
    assert other_owner(tmp_path) is None
    remove_state(tmp_path)  # not this process's: left alone
    assert (tmp_path / STATE_FILE).exists()
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    assert read_state(tmp_path) is None


def test_restarts_are_counted_within_the_window() -> None:
    window = RestartWindow(600)
    assert [window.note() for _ in range(3)] == [1, 2, 3]
    window.times = [0.0]  # long ago: out of the window
    assert window.note() == 1


def test_exit_statuses() -> None:
    assert exit_status(None) == "no exit status"
    assert exit_status(-9) == "signal SIGKILL"
    assert exit_status(3) == "code 3"


def test_a_broker_restart_asked_to_stop_starts_nothing(tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    assert start_broker_again(Settings(), tmp_path / "broker.log", stop) is None
    assert not (tmp_path / "broker.log").exists()
