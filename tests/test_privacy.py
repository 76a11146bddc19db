"""Retention and erasure (docs/privacy.md), against a real engine (embedded chDB in a temporary directory) and the
pipeline's own code path (processors/replay.py: validate, re-key, roll up, write), as tests/test_sink.py does.

Covered: `forget` removes a deployment and a CLI install everywhere and every view equals the ground truth of the
fleet without them (the day aggregates of tests/test_sink.py and every analyst view of producers/fleet_truth.py);
a replay of the raw topic from offset 0 after it, and a late re-send received before the erasure, do not bring
them back; a report received after the erasure counts; forgetting twice and forgetting an unknown UID change
nothing; records that keep flowing around an erasure are neither lost nor counted twice (a restarted writer, a
running worker with a batch in flight, and `is-telemetry up` erasing through POST /api/forget); the API refuses
without its token; the retention TTLs remove what they say and keep every day aggregate.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.rows import ms_to_datetime
from processors.pipeline import process
from processors.replay import Replayer
from processors.rollup import roll_up
from processors.worker import partition_batches
from producers import fleet_truth, truth_rules
from producers.simulator import DAY_MS, Delivery, ground_truth
from sinks.erasure import Outcome, erase
from sinks.retention import Retention
from tests.analyst_checks import differences
from tests.chdb_store import PARTITIONS, consume, opened, refresh, split, store_reader, to_records, truth_views
from tests.oracle_views import sorted_truth
from tests.sink_samples import CLI_UID, IS_UID_A, fleet, small_deliveries

pytestmark = pytest.mark.integration  # chDB, and `is-telemetry up`

ROOT = Path(__file__).resolve().parent.parent


def of_uid(delivery: Sequence[Any], uid: str) -> bool:
    """A valid report of `uid` (what an erasure removes; a rejected record of it stays counted as rejected), as the
    oracle judges it."""
    message = truth_rules.judge(delivery[2])
    return getattr(message, "uid", None) == uid


def without(deliveries: Sequence[Delivery], uids: Sequence[str]) -> list[Delivery]:
    return [d for d in deliveries if not any(of_uid(d, u) for u in uids)]


def busiest(deliveries: Sequence[Delivery], cli: bool) -> str:
    """The UID (a deployment's, or a CLI install's) with the most valid reports: the hardest to erase."""
    counts: dict[str, int] = {}
    for d in deliveries:
        m = truth_rules.judge(d[2])
        if not isinstance(m, truth_rules.Rejected) and (m.cli is not None) == cli:
            counts[m.uid] = counts.get(m.uid, 0) + 1
    return max(sorted(counts), key=lambda u: counts[u])


def traces(store: Any, uid: str) -> dict[str, int]:
    """Where a UID is still stored: every table that holds per-UID data."""
    p = {"u": uid}
    checks = {
        "snapshots": "SELECT count() FROM snapshots WHERE uid = {u:String}",
        "cli_reports": "SELECT count() FROM cli_reports WHERE uid = {u:String}",
        "uid_activity": "SELECT count() FROM uid_activity WHERE uid = {u:String}",
        "rejections": "SELECT count() FROM rejections WHERE position(body, {u:String}) > 0",
        "analyst_daily": "SELECT count() FROM analyst_daily WHERE position(toString((behind_top, jumps)), {u:String}) > 0",
    }
    return {name: int(store.query(sql, p)[1][0][0]) for name, sql in checks.items()}


def worker_store(store: Any) -> Any:
    """What a worker does when it opens the store: record the raw topic's partition count."""
    store.check_partitions(PARTITIONS, "tts-telemetry-raw")
    return store


def assert_fleet_is(store: Any, deliveries: Sequence[Delivery]) -> None:
    """The day aggregates and every analyst view equal the ground truth of exactly these deliveries."""
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    refresh(store)
    assert differences(store_reader(store), fleet_truth.analyst_ground_truth(deliveries)) == {}


def test_forget_then_replay_from_offset_0_equals_the_fleet_without_it(tmp_path: Path):
    deliveries = fleet()
    gone = [busiest(deliveries, cli=False), busiest(deliveries, cli=True)]
    kept = without(deliveries, gone)
    records = to_records(deliveries)
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, split(records, [97]))
        refresh(store)
        assert all(sum(traces(store, u).values()) for u in gone)
        done = erase(store, gone)
        assert [e.outcome for e in done] == [Outcome.ERASED, Outcome.ERASED], [e.message() for e in done]
        assert all(e.days > 0 for e in done)
        assert_fleet_is(store, kept)
        assert [traces(store, u) for u in gone] == [dict.fromkeys(traces(store, gone[0]), 0)] * 2
        # a replay of the raw topic from offset 0 (a new consumer group: a fresh roll-up state), in other batches
        consume(store, split(records, [61]))
        assert [traces(store, u) for u in gone] == [dict.fromkeys(traces(store, gone[0]), 0)] * 2
        assert_fleet_is(store, kept)
        register = store.query("SELECT uid, days FROM erasures ORDER BY uid")[1]
        assert sorted(u for u, _ in register) == sorted(gone)  # the proof


def test_report_after_erasure_counts_and_a_late_resend_does_not(tmp_path: Path):
    deliveries = small_deliveries()
    last = max(d[0] for d in deliveries)
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(deliveries)])
        erased_at = ms_to_datetime(last + 1000)
        [done] = erase(store, [IS_UID_A], now=erased_at)
        assert done.outcome is Outcome.ERASED and done.days == 2
        kept = without(deliveries, [IS_UID_A])
        assert_fleet_is(store, kept)
        a_reports = [d for d in deliveries if of_uid(d, IS_UID_A)]
        late = Delivery(last + 500, IS_UID_A.encode(), a_reports[-1][2])  # received before the erasure, sent late
        new = Delivery(last + 2000, IS_UID_A.encode(), a_reports[0][2])  # received after it: a new report
        consume(store, [to_records([*deliveries, late])])  # a replay with the late re-send
        assert_fleet_is(store, kept)
        consume(store, [to_records([*deliveries, late, new])])
        assert_fleet_is(store, [*kept, new])
        # forgetting again now removes the new report too; a third time is a no-op
        [again] = erase(store, [IS_UID_A], now=ms_to_datetime(last + 3000))
        assert again.outcome is Outcome.ERASED and again.days == 1
        assert_fleet_is(store, kept)


def test_forget_twice_or_an_unknown_uid_changes_nothing(tmp_path: Path):
    deliveries = small_deliveries()
    unknown = "0f8fad5b-d9cb-469f-a165-000000000000"
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(deliveries)])
        refresh(store)
        [first] = erase(store, [CLI_UID])
        assert first.outcome is Outcome.ERASED
        refresh(store)

        def state() -> list[Any]:
            tables = ("snapshots", "cli_reports", "rejections", "rollup_partitions", "snapshot_changes")
            activity = "SELECT kind, uid, first_day, last_day, bitmapToArray(days) FROM uid_activity ORDER BY ALL"
            return [store.query(f"SELECT * FROM {t} ORDER BY ALL")[1] for t in tables] + [store.query(activity)[1]]

        def register() -> list[Any]:
            return store.query("SELECT uid FROM erasures ORDER BY uid")[1]

        before, registered = state(), register()
        done = erase(store, [CLI_UID, unknown, "not a uid'; DROP TABLE snapshots"])
        assert [e.outcome for e in done] == [Outcome.ALREADY_ERASED, Outcome.UNKNOWN, Outcome.NOT_A_UID]
        assert "already erased at" in done[0].message() and "nothing stored since" in done[0].message()
        assert "nothing is stored" in done[1].message() and "nothing changed" in done[2].message()
        assert state() == before  # no data changes
        # each forget records its cut, so a report received before it but stored later does not count
        assert register() == sorted([*registered, (CLI_UID,), (unknown,)])


def test_a_report_received_before_the_forget_but_stored_after_it_does_not_count(tmp_path: Path):
    """The collector answered 202 for a UID's first report, the forget ran before the worker stored it: the forget
    records its cut all the same, and the report is dropped when it is stored (and on a replay)."""
    deliveries = small_deliveries()
    last = max(d[0] for d in deliveries)
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        first = [d for d in deliveries if d[0] < last]
        consume(store, [to_records([d for d in first if not of_uid(d, IS_UID_A)])])
        [done] = erase(store, [IS_UID_A], now=ms_to_datetime(last + 1000))  # nothing of it stored yet
        assert done.outcome is Outcome.UNKNOWN and "nothing is stored" in done.message(), done.message()
        consume(store, [to_records(deliveries)])  # the reports in flight land after the forget
        assert traces(store, IS_UID_A)["snapshots"] == 0
        assert_fleet_is(store, without(deliveries, [IS_UID_A]))


def test_forget_finds_a_uid_written_with_json_escapes_or_a_uuid_in_upper_case(tmp_path: Path):
    """A rejected body naming a deployment's UID with JSON escapes (`\\/`, `\\uXXXX`), and a CLI install whose UUID
    was sent in upper case: `forget` with the UID as computed (a UUID in lower case) finds and erases them, and a
    replay does not bring them back."""
    from core.uid import uid_from_elements
    from tests.sink_samples import cli_body, is_body

    deliveries = small_deliveries()
    last = max(d[0] for d in deliveries)
    uid = next(u for u in (uid_from_elements([f"https://e{i}.example.net"] * 5) for i in range(99)) if "/" in u)
    implausible = is_body(uid, end_devices=2 * 10**9)
    slash = implausible.replace(uid.encode(), uid.replace("/", "\\/").encode())
    unicode = implausible.replace(uid.encode(), (f"\\u00{ord(uid[0]):02x}" + uid[1:]).encode())
    cli = "aabbccdd-1111-4222-8333-0123456789ab"
    extra = [
        Delivery(last + 1, uid.encode(), slash),
        Delivery(last + 2, uid.encode(), unicode),
        Delivery(last + 3, cli.upper().encode(), cli_body(cli.upper())),
    ]
    everything = [*deliveries, *extra]
    named = "SELECT count() FROM rejections WHERE JSONExtractString(body, 'uid') = {u:String}"
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(everything)])
        assert store.query(named, {"u": uid})[1] == [(2,)]
        rejected = store.query("SELECT count() FROM rejections")[1]
        done = erase(store, [uid, cli], now=ms_to_datetime(last + 1000))
        assert [(e.outcome, e.rejections, e.reports) for e in done] == [
            (Outcome.ERASED, 2, 0),
            (Outcome.ERASED, 0, 1),
        ], [e.message() for e in done]
        for _ in range(2):  # after the erasure, and after a replay from offset 0
            assert store.query(named, {"u": uid})[1] == [(0,)]
            assert store.query("SELECT count() FROM rejections")[1] == rejected  # the rows (the counts) stay
            for table in ("snapshots", "cli_reports", "uid_activity"):
                assert store.query(f"SELECT count() FROM {table} WHERE lower(uid) = {{u:String}}", {"u": cli})[1] == [
                    (0,)
                ], table
            assert_fleet_is(store, without(everything, [cli.upper()]))
            consume(store, [to_records(everything)])


def test_records_flowing_around_an_erasure_are_not_lost_or_counted_twice(tmp_path: Path):
    """An erasure between batches of a stream (the writer stopped for it, then restarted: a fresh roll-up state
    rebuilt from ClickHouse), with records of the erased UID received before it (a late re-send) and after it in the
    rest of the stream: the others are counted once each, the erased UID's only from the erasure on."""
    deliveries = fleet(deployments=40, cli_installs=15, seed=5)
    uid = busiest(deliveries, cli=False)
    records = to_records(deliveries)
    half = len(records) // 2
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, split(records[:half], [53]))
        at = max(r.received_at_ms for r in records[:half])
        erase(store, [uid], now=ms_to_datetime(at))
        consume(store, split(records, [53])[::-1])  # the whole topic again, newest batches first, then the rest
        rest = deliveries[half:]
        expected = [d for d in deliveries if not of_uid(d, uid) or d[0] > at]
        assert any(of_uid(d, uid) for d in rest)
        assert_fleet_is(store, expected)


def test_retention_ttls_remove_rows_and_keep_the_day_aggregates(tmp_path: Path):
    path = tmp_path / "chdb"
    deliveries = small_deliveries()  # 2025-01: older than every TTL below
    truth = ground_truth(deliveries)
    with opened(path) as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(deliveries)])
        rejected = store.query("SELECT count() FROM rejections WHERE body != ''")[1]
        assert rejected == [(2,)]
    with opened(
        path, snapshot_ttl_days=30, retention=Retention(rejection_body_days=30, uid_state_days=30)
    ) as opened_store:
        store = worker_store(opened_store)
        for table in ("snapshots", "cli_reports", "rejections", "uid_activity"):
            store.client.command(f"OPTIMIZE TABLE {table} FINAL")  # TTLs are applied when parts merge
        assert store.query("SELECT count() FROM snapshots")[1] == [(0,)]
        assert store.query("SELECT count() FROM uid_activity")[1] == [(0,)]
        assert store.query("SELECT count(), countIf(body = '' AND message = '') FROM rejections FINAL")[1] == [(2, 2)]
        assert truth_views(store, truth) == sorted_truth(truth)  # day aggregates, rejected counts included, are kept
    recent = (int(datetime.now(UTC).timestamp() * 1000) // DAY_MS - 2) * DAY_MS
    with opened(tmp_path / "recent", snapshot_ttl_days=30, retention=Retention(30, 30)) as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(small_deliveries(recent))])
        for table in ("snapshots", "rejections", "uid_activity"):
            store.client.command(f"OPTIMIZE TABLE {table} FINAL")
        assert store.query("SELECT count() FROM rejections WHERE body != ''")[1] == [(2,)]  # within: kept
        assert store.query("SELECT count() FROM uid_activity")[1] == [(3,)]
    with opened(path) as opened_store:
        store = worker_store(opened_store)  # set back to 0: the TTLs are removed
        for table in ("rejections", "uid_activity"):
            assert "TTL" not in str(store.client.command(f"SHOW CREATE TABLE {table}"))


def test_forget_command_on_a_stopped_embedded_stack(tmp_path: Path):
    data = tmp_path / "data"
    with opened(data / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(small_deliveries())])
    env = {**os.environ, "IS_TELEMETRY_DATA_DIR": str(data)}

    def forget(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "is_telemetry", "forget", *args, "--data-dir", str(data)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)

    done = forget(IS_UID_A)
    assert done.returncode == 0, done.stderr
    assert "erased at" in done.stdout and "2 days of snapshots" in done.stdout
    again = forget(IS_UID_A)
    assert again.returncode == 0 and "already erased" in again.stdout
    unknown = forget("0f8fad5b-d9cb-469f-a165-000000000000")
    assert unknown.returncode == 1 and "nothing is stored" in unknown.stdout
    bad = forget("x' OR 1=1")
    assert bad.returncode == 2 and "is not a UID" in bad.stderr
    with opened(data / "chdb") as opened_store:
        store = worker_store(opened_store)
        assert store.query("SELECT count() FROM snapshots WHERE uid = {u:String}", {"u": IS_UID_A})[1] == [(0,)]
        assert store.query("SELECT count() FROM erasures")[1] == [(3,)]  # each forget records its cut


def test_forget_on_a_chdb_another_process_takes_meanwhile_is_one_error_line(tmp_path: Path):
    """Another process takes the chDB directory between `forget`'s check that it is free and its opening of it (a
    concurrent `is-telemetry sql`): one `error:` line saying what is wrong and what to do, exit 2, no traceback."""
    data = tmp_path / "data"
    with opened(data / "chdb") as opened_store:
        worker_store(opened_store)
    hold = "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
    hold += "print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(data / "chdb" / "status")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        # the check found it free: the other process took it right after
        race = (
            "import sys\nimport core.preflight as p\nfrom is_telemetry.cli import main\nreal, calls = p.chdb_holder, []\n"
            "def first_free(path):\n    calls.append(path)\n    return None if len(calls) == 1 else real(path)\n"
            "p.chdb_holder = first_free\nmain(sys.argv[1:])\n"
        )
        cmd = [sys.executable, "-c", race, "forget", IS_UID_A, "--data-dir", str(data)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and lines[0].startswith("error:") and "is in use by" in lines[0], lines
    finally:
        holder.kill()
        holder.wait()


def test_forget_while_a_worker_runs_and_a_batch_is_in_flight(tmp_path: Path):
    """A running worker (its roll-up state lives across the erasure) whose next batch was prepared before the
    erasure and is written after it: the worker takes the UID out of its state with its next batch and erases its
    rows again in that write; nothing else is lost or counted twice."""
    deliveries = fleet(deployments=40, cli_installs=15, seed=7)
    uid = busiest(deliveries, cli=False)
    records = to_records(deliveries)
    chunks = split(records, [41])
    half = len(chunks) // 2
    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        worker = Replayer(store, PARTITIONS)
        for chunk in chunks[:half]:
            worker.feed(chunk)
        in_flight = chunks[half]
        outcome = process(in_flight, PARTITIONS)
        assert not outcome.rekey
        prepared = roll_up(worker.rollups, store, partition_batches(in_flight, outcome))
        at = max(r.received_at_ms for r in in_flight)
        [done] = erase(store, [uid], now=ms_to_datetime(at))
        assert done.outcome is Outcome.ERASED
        store.write(prepared)  # the batch in flight lands after the erasure
        for chunk in chunks[half + 1 :]:
            worker.feed(chunk)
        assert any(of_uid(d, uid) and d[0] > at for d in deliveries)  # it reported again: those count
        assert_fleet_is(store, [d for d in deliveries if not of_uid(d, uid) or d[0] > at])
        left = store.query(
            "SELECT count() FROM snapshots WHERE uid = {u:String} AND toUnixTimestamp64Milli(received_at) <= {t:Int64}",
            {"u": uid, "t": at},
        )[1]
        assert left == [(0,)]


def test_forget_through_the_api_behind_the_token(tmp_path: Path):
    """POST /api/forget: refused without a configured token (403) and with a wrong one (401); a list with one
    non-UID changes nothing (400); otherwise one result per UID, as the command prints them."""
    from starlette.testclient import TestClient

    from core.config import load_settings
    from dashboard import forget_route
    from dashboard.analyst_sql import AnalystSessions, SqlSessions
    from dashboard.api import create_app
    from is_telemetry.worker_app import forgetter

    def app_with(token: str) -> tuple[Any, Any, Any]:
        settings = load_settings(None, api={"token": token}, clickhouse={"dsn": store.dsn})
        forget_route.install(forgetter(settings))
        sessions, panels = SqlSessions.from_settings(settings), AnalystSessions.from_settings(settings, size=1)
        return create_app(settings, sessions, panels), sessions, panels

    with opened(tmp_path / "chdb") as opened_store:
        store = worker_store(opened_store)
        consume(store, [to_records(small_deliveries())])
        app, sessions, panels = app_with("")
        try:
            with TestClient(app, base_url="http://127.0.0.1:8481") as http:
                r = http.post("/api/forget", json={"uids": [IS_UID_A]})
                assert r.status_code == 403 and r.json()["error"] == "token_required", r.text
        finally:
            app.state.endpoint.close()
            panels.close()
        app, sessions, panels = app_with("s3cret")
        auth = {"authorization": "Bearer s3cret"}
        try:
            with TestClient(app, base_url="http://127.0.0.1:8481") as http:
                assert http.post("/api/forget", json={"uids": [IS_UID_A]}).status_code == 401
                r = http.post("/api/forget", json={"uids": [IS_UID_A, "x' OR 1=1"]}, headers=auth)
                assert r.status_code == 400 and "is not a UID" in r.json()["message"], r.text
                assert traces(store, IS_UID_A)["snapshots"] == 2  # nothing changed
                for bad in ({"uids": []}, {"uids": [1]}, {"uid": IS_UID_A}, [IS_UID_A]):
                    assert http.post("/api/forget", json=bad, headers=auth).status_code == 400, bad
                r = http.post("/api/forget", json={"uids": [IS_UID_A, CLI_UID]}, headers=auth)
                assert r.status_code == 200, r.text
                assert [x["outcome"] for x in r.json()["results"]] == ["erased", "erased"]
                r = http.post("/api/forget", json={"uids": [IS_UID_A]}, headers=auth)
                assert [x["outcome"] for x in r.json()["results"]] == ["already_erased"]
        finally:
            app.state.endpoint.close()
            panels.close()
            forget_route.install(None)
        assert_fleet_is(store, without(small_deliveries(), [IS_UID_A, CLI_UID]))


def test_forget_on_a_running_embedded_stack_while_records_flow(tmp_path: Path):
    """`is-telemetry up` (collector, broker, worker with its sink and API): records flow through the collector,
    a deployment is erased by `is-telemetry forget` through the stack's API, more records flow (its own new report among them): the erased
    report never comes back, the others are counted once, the new report counts."""
    import time

    import httpx

    from core.partitioning import partition_of
    from core.uid import uid_from_elements
    from tests.conftest import start_stack
    from tests.sink_samples import IS_UID_B, is_body

    uid_c = "0f8fad5b-d9cb-469f-a165-70867728950f"
    neighbour = next(  # a deployment whose records go to A's partition (8 partitions, `up`'s default)
        u
        for u in (uid_from_elements([f"https://n{i}.example.net/api/v3"] * 5) for i in range(1000))
        if partition_of(u.encode(), 8) == partition_of(IS_UID_A.encode(), 8)
    )
    token = "privacy-test-token"
    auth = {"authorization": f"Bearer {token}"}
    stack = start_stack(tmp_path / "stack", "--no-simulate", env={"IS_TELEMETRY_API__TOKEN": token})

    def sql(query: str) -> list[list[Any]]:
        r = httpx.post(stack.api_url + "/api/sql", json={"query": query}, headers=auth, timeout=30)
        r.raise_for_status()
        return list(r.json()["rows"])

    def send(body: bytes) -> None:
        r = httpx.post(
            stack.collector_url,
            content=body,
            headers={"content-type": "application/json", "user-agent": "TheThingsStack/3.32.1 (linux/amd64)"},
            timeout=30,
        )
        assert r.status_code in (200, 202, 204), r.text

    def until(query: str, want: list[list[Any]], timeout_s: float = 90) -> None:
        deadline, got = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            got = sql(query)
            if got == want:
                return
            time.sleep(0.5)
        raise AssertionError(f"{query}: {got}, wanted {want}\n{stack.log()}")

    per_uid = "SELECT uid, end_devices FROM snapshots FINAL ORDER BY uid"
    try:
        send(is_body(IS_UID_A, end_devices=10))
        send(is_body(IS_UID_B, end_devices=7))
        until("SELECT sum(deployments), sum(end_devices) FROM fleet_daily", [[2, 17]])
        # `forget` finds the running stack's API in the data directory, as `sql` does, and sends the token there
        cmd = [sys.executable, "-m", "is_telemetry", "forget", IS_UID_A, uid_c, "--data-dir", str(stack.data_dir)]
        env = {**os.environ, "IS_TELEMETRY_API__TOKEN": token}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 1, done.stderr  # uid_c is unknown
        assert "erased at" in done.stdout and "nothing is stored" in done.stdout, done.stdout
        until("SELECT sum(deployments), sum(end_devices) FROM fleet_daily", [[1, 7]])
        send(is_body(IS_UID_B, end_devices=8))  # records keep flowing: B's newer report replaces its first
        send(is_body(neighbour, end_devices=5))  # a deployment in A's partition: its day row is written again
        until(per_uid, sorted([[IS_UID_B, 8], [neighbour, 5]]))
        until("SELECT sum(deployments), sum(end_devices) FROM fleet_daily", [[2, 13]])
        send(is_body(IS_UID_A, end_devices=11))  # A's new report, received after the erasure: it counts
        until(per_uid, sorted([[IS_UID_A, 11], [IS_UID_B, 8], [neighbour, 5]]))
        until("SELECT sum(deployments), sum(end_devices) FROM fleet_daily", [[3, 24]])
        assert sql("SELECT count() FROM snapshots WHERE uid = '" + IS_UID_A + "' AND end_devices = 10") == [[0]]
    finally:
        stack.stop()
