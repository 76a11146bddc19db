"""An operator's first hour (issue 17): every mistake answered at once, clearly. Each test runs the real CLI in a
subprocess and checks what the user sees (the message, and how long it took: bounds generous for a shared
2-core machine). README "Troubleshooting" lists the same mistakes.

1. configuration validated before anything starts; unreachable servers waited for, aloud;
2. `up` starts idempotently (three starts, same rejections; two senders' identical bad bodies count twice);
3. a quiet, true console;
4. `make run ARGS="..."`;
5. `is-telemetry sql` finds the running stack by itself, else reads chDB read-only;
6. a refused write says so.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from is_telemetry.broker import free_ports
from tests.paths import ROOT
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


CLI = [sys.executable, "-m", "is_telemetry"]
FLEET = ["--deployments", "60", "--cli-installs", "5", "--days", "4", "--seed", "1"]  # 4 rejected bodies in history
PAST_REJECTIONS = (
    "SELECT toString(day) AS d, count() AS n, uniqExact(body) AS bodies FROM rejections FINAL "
    "WHERE day < today() GROUP BY d ORDER BY d"
)
PAST_SNAPSHOTS = "SELECT count() AS n FROM snapshots FINAL WHERE day < today()"
BAD_BODY = b'{"uid": 42, "note": "first-hour"}'  # JSON (the collector takes it), not telemetry (the worker rejects it)


def run_cli(*args: str, timeout_s: float = 60, cwd: Path | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    p = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout_s, cwd=cwd or ROOT)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - started


def interrupted_after(args: list[str], until: str, within_s: float, cwd: Path) -> tuple[str, float, float]:
    """Start `is-telemetry ARGS`, wait for `until` in its output (within `within_s`), Ctrl-C it; returns (output,
    seconds until the text appeared, seconds the stop took)."""
    log = cwd / "out.log"
    proc = subprocess.Popen(
        [*CLI, *args], stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
    )
    started = time.monotonic()
    try:
        while until not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() - started < within_s, f"no {until!r} within {within_s}s:\n{log.read_text()}"
            time.sleep(0.1)
        seen = time.monotonic() - started
        proc.send_signal(signal.SIGINT)
        stop_started = time.monotonic()
        proc.wait(30)
        return log.read_text(errors="replace"), seen, time.monotonic() - stop_started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- 1. configuration validated before anything starts ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (
            ["--clickhouse", "localhost:8123"],
            "has no scheme: a ClickHouse DSN is a URL, e.g. http://localhost:8123/default",
        ),
        (
            ["--clickhouse", "clickhouse://127.0.0.1:9000/default"],
            "native protocol (clickhouse://, port 9000) is not "
            "supported; use its HTTP interface, e.g. http://127.0.0.1:8123/default",
        ),
        (["--clickhouse", "chdb://data/chdb"], "chDB needs an absolute path"),
        (["--kafka", "http://localhost:9092"], "without a scheme, e.g. localhost:9092"),
        (["--kafka", "localhost:abc"], "the port must be a number from 1 to 65535"),
        (["--collector-port", "70000"], "collector.port = 70000: input should be less than or equal to 65535"),
        (["--collector-host", "0.0.0.0:8480"], "give the address alone (e.g. 0.0.0.0)"),
        (["--data-dir", "/etc/hostname"], "is a file, not a directory"),
        (["--kafka", "no-such-host.invalid:9092"], "cannot resolve no-such-host.invalid"),
    ],
)
def test_a_wrong_setting_fails_at_once_with_an_example(tmp_path: Path, flags: list[str], said: str) -> None:
    code, out, took = run_cli("up", "--no-simulate", "--data-dir", str(tmp_path / "d"), *flags)
    assert code == 2, out
    assert said in out, out
    assert len([line for line in out.splitlines() if line.startswith("error:")]) == 1, out  # one line per problem
    assert "Traceback" not in out and "stopping:" not in out, out
    assert took < 8, f"took {took:.1f}s"


def test_every_mistake_is_reported_in_one_run(tmp_path: Path) -> None:
    """Values that are not numbers, out of range or unknown, and ports in use: all in one run, one line each (the
    port of a wrong value is not checked: its default is not what was asked for)."""
    held = [socket.socket() for _ in range(2)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
            sock.listen()
        api, broker = (sock.getsockname()[1] for sock in held)
        code, out, took = run_cli(
            "up",
            "--data-dir",
            str(tmp_path / "d"),
            "--collector-port",
            "notaport",
            "--api-port",
            str(api),
            "--broker-port",
            str(broker),
            "--deployments",
            "many",
            "--days",
            "-1",
            "--log-level",
            "loud",
        )
    finally:
        for sock in held:
            sock.close()
    assert code == 2 and took < 8, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert len(errors) == 6 and len(out.splitlines()) == 6, out  # nothing else: no box, no usage, no traceback
    for said in (
        "collector.port = 'notaport': input should be a valid integer",
        f"port {api} for the API is already in use",
        f"port {broker} for the embedded broker is already in use",
        "--deployments = 'many': input should be a valid integer",
        "--days = -1: input should be greater than or equal to 0",
        "--log-level = 'loud': input should be 'debug', 'info', 'warning' or 'error'",
    ):
        assert sum(said in line for line in errors) == 1, (said, out)


def test_a_mistake_in_any_command_is_one_error_line() -> None:
    for args, said in (
        (["status", "--timeout", "soon"], "error: Invalid value for '--timeout': Input should be a valid number"),
        (["collect", "--port", "http"], "error: Invalid value for '--port': Input should be a valid integer"),
        (["nosuch"], "error: No such command 'nosuch'. (see: is-telemetry --help)"),
    ):
        code, out, _ = run_cli(*args)
        assert code == 2 and out.strip().startswith(said) and len(out.strip().splitlines()) == 1, out


def test_help_has_no_type_noise() -> None:
    for command in ("up", "sql", "status", "worker", "simulate"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0, out
        for noise in ("<bool>", "<str>", "<int>", "<float>", "<path>"):
            assert noise not in out, (command, noise, out)
    code, out, _ = run_cli("sql", "--help")
    text = " ".join(out.replace("│", " ").split())  # rich's box, wrapped to the terminal's width
    assert (
        "--api URL The API to ask, e.g. http://127.0.0.1:8481. Default: the API of the stack running on the data "
        "directory; with none running, the data directory's chDB, read-only" in text
    ), out
    code, out, _ = run_cli("up", "--help")
    text = " ".join(out.replace("│", " ").split())
    assert "--collector-port PORT Collector port" in text and "--simulate --no-simulate Feed" in text, out


def test_an_unreachable_clickhouse_is_reported_and_waited_for_aloud(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    out, seen, stop = interrupted_after(
        ["up", "--no-simulate", "--data-dir", str(tmp_path / "d"), "--clickhouse", f"http://127.0.0.1:{port}/default"],
        "waiting: ClickHouse",
        15,
        tmp_path,
    )
    assert f"ClickHouse at http://127.0.0.1:{port}/default does not answer: [Errno 111] Connection refused" in out
    assert "trying again every 2s until it answers (Ctrl-C stops)" in out
    assert seen < 10 and stop < 10, (seen, stop)
    assert "WARNING" not in out and "urllib3" not in out, out  # one line, not the driver's retries
    assert "stopping: simulator" not in out and "stopping: broker" not in out, out  # nothing had started


def test_an_unreachable_kafka_is_reported_and_waited_for_aloud(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    out, seen, stop = interrupted_after(
        ["up", "--no-simulate", "--data-dir", str(tmp_path / "d"), "--kafka", f"127.0.0.1:{port}"],
        "waiting: Kafka",
        15,
        tmp_path,
    )
    assert f"Kafka at 127.0.0.1:{port} does not answer (127.0.0.1:{port}: Connection refused)" in out, out
    assert seen < 10 and stop < 10, (seen, stop)
    assert "kafka." not in out and "WARNING" not in out, out  # no kafka-python flood


def test_help_shows_the_real_defaults() -> None:
    code, out, _ = run_cli("up", "--help")
    assert code == 0, out
    text = " ".join(out.replace("│", " ").split())  # rich's box, wrapped to the terminal's width
    assert "[default: 0]" not in text, out
    for default in (
        "(default 19092, from broker.port)",
        "(default 8480, from collector.port)",
        "(default 8481, from api.port)",
    ):
        assert default in text, out


# -- 4. make run ARGS="..." -------------------------------------------------------------------------------------


def test_make_run_passes_args_to_up() -> None:
    p = subprocess.run(
        ["make", "-n", "run", "ARGS=--collector-port 8490 --no-simulate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    assert ".venv/bin/is-telemetry up --collector-port 8490 --no-simulate" in p.stdout, p.stdout
    if subprocess.run(["make", "-q", "install"], cwd=ROOT, timeout=30).returncode != 0:
        return  # the venv would be installed again first: the dry run above is the check
    p = subprocess.run(
        ["make", "run", "ARGS=--collector-port 70000 --no-simulate"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode != 0
    assert "collector.port = 70000" in p.stderr, p.stderr


# -- 2, 3, 5, 6: one data directory, three starts ----------------------------------------------------------------


def _post_bad_body(collector_url: str, sender: str) -> None:
    r = httpx.post(
        collector_url, content=BAD_BODY, headers={"content-type": "application/json", "user-agent": sender}, timeout=10
    )
    assert r.status_code == 202, r.text


def _wait_backfill_recorded(stack: RunningStack, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not (stack.data_dir / "simulator-backfill.json").exists():
        assert stack.process.poll() is None and time.monotonic() < deadline, stack.log()
        time.sleep(0.5)


def _progress_counts(log: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"ClickHouse: (\d+) snapshots \(UID-days\), (\d+) rejected", log)]


def test_three_starts_store_the_same_history_and_the_console_stays_quiet_and_true(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = start_stack(data, *FLEET)
    try:
        # 5: `sql` finds the running stack's API by itself (no --api); 6: a refused write says so
        _wait_backfill_recorded(first)
        code, out, took = run_cli("sql", "--data-dir", str(data), PAST_SNAPSHOTS)
        assert code == 0 and took < 15, out
        code, out, _ = run_cli("sql", "--data-dir", str(data), "DROP TABLE snapshots")
        assert code == 1, out
        assert "refused (read-only): writes are not allowed" in out and "max_result_rows" not in out, out
        assert f"asked the running stack's API at {first.api_url}" in out, out
        # a second `up` on the same data directory: refused at once, saying who holds it
        code, out, took = run_cli("up", "--no-simulate", "--data-dir", str(data), *_other_ports())
        assert code == 2 and took < 10, out
        assert f"another `is-telemetry up` (pid {first.process.pid}, API {first.api_url}) is running on" in out, out
        # 2: two senders' identical bad bodies count twice
        _post_bad_body(first.collector_url, "sender-a/1.0")
        _post_bad_body(first.collector_url, "sender-b/1.0")
        first.wait_for(
            f"SELECT count() AS n FROM rejections FINAL WHERE body = '{BAD_BODY.decode()}'",
            lambda rows: rows[0]["n"] == 2,
            timeout_s=60,
        )
        history = first.sql(PAST_REJECTIONS)
        snapshots = first.sql(PAST_SNAPSHOTS)
        assert sum(r["n"] for r in history) >= 1, history
        deadline = time.monotonic() + 30
        while not _progress_counts(first.log()):  # the first progress line (5 s after start-up)
            assert time.monotonic() < deadline, first.log()
            time.sleep(0.5)
    finally:
        assert first.stop() == 0
    _check_console(first.log(), simulated=True)

    for _ in range(2):  # starts 2 and 3: the history is not sent again, nothing is counted twice
        again = start_stack(data, *FLEET)
        try:
            assert "history already stored from this data directory" in again.log(), again.log()
            again.wait_for("SELECT count() AS n FROM snapshots FINAL WHERE day = today()", lambda r: r[0]["n"] > 0)
            assert again.sql(PAST_REJECTIONS) == history
            assert again.sql(PAST_SNAPSHOTS) == snapshots
            assert again.sql(f"SELECT count() AS n FROM rejections FINAL WHERE body = '{BAD_BODY.decode()}'") == [
                {"n": 2}
            ]
        finally:
            assert again.stop() == 0
    _check_console(first.log(), simulated=True)  # the three starts' progress counts, in order: they only go up

    # 5: no stack running: `sql` reads the data directory's chDB directly, read-only, and says what it tried
    code, out, took = run_cli("sql", "--data-dir", str(data), "--format", "json", PAST_REJECTIONS, timeout_s=90)
    assert code == 0 and took < 30, out
    code, out, _ = run_cli("sql", "--data-dir", str(data), "DROP TABLE snapshots", timeout_s=90)
    assert code == 1 and "refused (read-only): writes are not allowed" in out, out
    assert "chDB at" in out and "read-only, no stack running" in out, out
    code, out, took = run_cli("sql", "--data-dir", str(tmp_path / "empty"), "SELECT 1")
    assert code == 1 and took < 10, out
    assert "no stack is running" in out and "no chDB data at" in out, out


def _other_ports() -> list[str]:
    broker, collector, api = free_ports(3)
    return ["--broker-port", str(broker), "--collector-port", str(collector), "--api-port", str(api)]


def _check_console(log: str, simulated: bool) -> None:
    """3: one line per problem, no library logs, progress counts that only go up, nothing about parts not started."""
    assert "blocking the event loop" not in log, log
    assert not re.search(r"^\S+ \S+ (WARNING|ERROR) kafka", log, re.M), log
    assert "Traceback" not in log, log
    counts = _progress_counts(log)
    assert counts, log
    assert counts == sorted(counts), counts
    assert ("stopping: simulator" in log) == simulated, log


def test_no_simulator_no_word_about_it(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "d", "--no-simulate")
    try:
        _post_bad_body(stack.collector_url, "only-sender/1.0")
        stack.wait_for("SELECT count() AS n FROM rejections FINAL", lambda r: r[0]["n"] == 1, timeout_s=60)
    finally:
        assert stack.stop() == 0
    log = stack.log()
    assert "stopping: simulator" not in log and "  simulator  " not in log and "backfill" not in log, log
    assert "stopping: collector" in log and "stopped" in log, log


def test_json_logs_on_request(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "IS_TELEMETRY_LOG_FORMAT": "json"}
    # An API pointed at a ClickHouse server where nothing listens says so at start-up; stop it after that line.
    proc = subprocess.Popen(
        [sys.executable, "-m", "is_telemetry", "api", "--clickhouse", "http://127.0.0.1:9/db", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    entries = []
    try:
        while not any(e["logger"] == "dashboard.analyst_sql" for e in entries):
            line = proc.stderr.readline()  # type: ignore[union-attr]
            assert line, entries
            entries.append(json.loads(line))  # every line is one JSON object
    finally:
        proc.kill()
        proc.wait()
    entry = entries[-1]
    assert entry["level"] == "WARNING"
    assert "is not usable yet" in entry["message"] and "127.0.0.1:9" in entry["message"]
