"""The ClickHouse sink against a real engine (embedded chDB in a temporary directory).

chDB runs one engine per process and that engine serves ONE data path at a time: opening a second
path while a client on the first is open fails ("EmbeddedServer already initialized with path ...").
Once every client of a path is closed the engine is released and another path can be opened in the
same process, so each test gets its own directory and `opened()` (and the `store` fixture) always
closes its store (checked in `test_chdb_one_path_at_a_time`). No subprocesses are needed.

Covered: migrations (idempotent), idempotent writes (re-sent batches, other batch splits, older
snapshots arriving late), exactness of every analyst view against the simulator's ground truth,
backpressure (retry with backoff while ClickHouse fails, give up on stop), the snapshot TTL, values
never spliced into SQL, read-only analyst access (store.query and POST /api/sql), and every ```sql
query of docs/analysts.md.

"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from core.errors import QueryFailed, RequestRefused
from core.kafka import HEADER_RECEIVED_AT
from core.rows import Batch, RejectionRow, RollupRow, SnapshotRow, columns, values
from dashboard.analyst_sql import AnalystSessions, QueryLimits, SqlSessions
from processors.pipeline import RawRecord, process
from processors.replay import Replayer
from processors.rollup import Rollups, roll_up
from processors.validate import Reason
from processors.worker import partition_batches
from producers.simulator import DAY_MS, Delivery, generate, ground_truth
from sinks.clickhouse import ClickHouseStore, migrations
from tests.chdb_store import (
    DAY0,
    PARTITIONS,
    TOPIC,
    H,
    consume,
    extra_views,
    opened,
    rows,
    split,
    to_records,
    truth_views,
    view,
)
from tests.oracle_views import extra_truth, sorted_truth
from tests.sink_samples import IS_UID_A, is_body, small_deliveries
from tests.store_names import (
    ANALYST_DEPTH_TABLES,
    ANALYST_DEPTH_VIEWS,
    ANALYST_VIEWS,
    ANALYSTS_DOC,
    TABLES,
    doc_queries,
)

pytestmark = pytest.mark.integration


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ClickHouseStore]:
    with opened(tmp_path / "chdb") as s:
        yield s


def rolled_up(store: ClickHouseStore, records: list[RawRecord]) -> Batch:
    """A batch rolled up (by a fresh state) but not written."""
    return roll_up(Rollups(3, PARTITIONS), store, partition_batches(records, process(records, PARTITIONS)))


def everything(store: ClickHouseStore, positions: bool = True) -> dict[str, Any]:
    """Every analyst view in full (for "unchanged" comparisons).

    positions=False leaves out where each snapshot was read from (receive time, partition, offset): the dedup
    drops an exact re-send of the body it last saw, so after a replay in another order the stored copy of a
    (day, UID) snapshot can be an identical body received at another time. Its content, and every aggregate,
    are the same."""
    out: dict[str, Any] = {}
    for name in ANALYST_VIEWS:
        what = "*"
        if name == "snapshots_latest" and not positions:
            what = "* EXCEPT (received_at, source_partition, source_offset)"
        _columns, result = store.query(f"SELECT {what} FROM {name}")
        out[name] = sorted(repr(r) for r in result)
    out["snapshots_rows"] = store.query("SELECT count() FROM snapshots_latest")[1]
    out["rejections_rows"] = store.query("SELECT count() FROM rejections FINAL")[1]
    return out


# ---------------------------------------------------------------------------------------------
# chDB itself
# ---------------------------------------------------------------------------------------------


def test_chdb_one_path_at_a_time(tmp_path: Path):
    """The constraint these tests are built on: a second path needs the first closed."""
    a, b = tmp_path / "a", tmp_path / "b"
    first = ClickHouseStore(f"chdb://{a}").open()
    try:
        with pytest.raises(Exception, match="already initialized with path"):
            ClickHouseStore(f"chdb://{b}", retry_max_s=0.01).client.query("SELECT 1")
    finally:
        first.close()
    with opened(b) as second:  # once the first is closed, another path opens in the same process
        assert second.query("SELECT 1")[1] == [(1,)]
    with opened(a) as again:
        assert again.query("SELECT count() FROM schema_migrations")[1] == [(len(migrations()),)]


# ---------------------------------------------------------------------------------------------
# migrations
# ---------------------------------------------------------------------------------------------


def test_migrations_are_idempotent(tmp_path: Path):
    files = migrations()
    assert files and [v for v, _, _ in files] == sorted({v for v, _, _ in files})
    with opened(tmp_path / "chdb") as s:
        assert s.migrate() == []  # open() applied everything; a second run in the same process applies nothing
        names = {r[0] for r in s.query("SELECT name FROM system.tables WHERE database = currentDatabase()")[1]}
        assert set(TABLES + ANALYST_VIEWS) <= names
        created = s.query("SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()")[1]
    with opened(tmp_path / "chdb") as s:  # a restart
        assert s.migrate() == []
        tables = "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase()"
        # no FINAL: really one row each
        got = s.query("SELECT version, name FROM schema_migrations ORDER BY version")[1]
        assert got == [(v, n) for v, n, _ in files]
        assert s.query(tables)[1] == created


# ---------------------------------------------------------------------------------------------
# idempotent writes
# ---------------------------------------------------------------------------------------------


def test_small_batch_matches_ground_truth(store: ClickHouseStore):
    deliveries = small_deliveries()
    consume(store, [to_records(deliveries)])
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    fleet = {r["day"]: r for r in truth["fleet_daily"]}
    assert fleet["2025-01-01"]["deployments"] == 2 and fleet["2025-01-01"]["end_devices"] == 12 + 7
    assert fleet["2025-01-01"]["cli_installs"] == 1
    assert rows(store, "SELECT day, reason, messages FROM rejected_daily ORDER BY day") == [
        {"day": "2025-01-01", "reason": "not_json", "messages": 1},
        {"day": "2025-01-02", "reason": "bad_uid", "messages": 1},
    ]


def test_batch_written_twice_or_split_differently_counts_once(store: ClickHouseStore):
    deliveries = small_deliveries()
    records = to_records(deliveries)
    consume(store, [records])
    once = everything(store)
    consume(store, [records])  # the same batch again (a worker died before committing its offsets)
    assert everything(store) == once
    consume(store, split(records, [3, 4]))  # re-sent with the rows split differently, fresh dedup state
    consume(store, split(records, [1]))
    assert everything(store) == once
    # the same Batch object written twice, bypassing the roll-up's state
    batch = rolled_up(store, records)
    store.write(batch)
    store.write(batch)
    assert everything(store) == once
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)


def test_older_snapshot_written_later_does_not_win(store: ClickHouseStore):
    newer = Delivery(DAY0 + 5 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=50))
    older = Delivery(DAY0 + 1 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=5))
    [rec_newer] = to_records([newer])
    rec_older = RawRecord(
        TOPIC,
        rec_newer.partition,
        rec_newer.offset + 7,
        older.received_at_ms,
        {HEADER_RECEIVED_AT: str(older.received_at_ms).encode()},
        older.body,
        older.key,
    )
    consume(store, [[rec_newer]])
    consume(store, [[rec_older]])  # a higher offset but an earlier receive time: receive time decides
    assert rows(store, "SELECT deployments, end_devices FROM fleet_daily") == [{"deployments": 1, "end_devices": 50}]
    assert rows(store, "SELECT end_devices, received_at FROM snapshots_latest")[0]["end_devices"] == 50
    # the other order gives the same answer
    assert ground_truth([older, newer])["fleet_daily"][0]["end_devices"] == 50


def test_latest_received_body_of_a_day_is_the_snapshot(store: ClickHouseStore):
    first = Delivery(DAY0 + 1 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=10, gateways={"EU_863_870": 1}))
    second = Delivery(
        DAY0 + 9 * H,
        IS_UID_A.encode(),
        is_body(IS_UID_A, end_devices=11, gateways={"AS_923": 4}, binary_version="3.33.1"),
    )
    consume(store, [to_records([first, second])])  # both in one batch
    assert rows(store, "SELECT deployments, end_devices, gateways FROM fleet_daily") == [
        {"deployments": 1, "end_devices": 11, "gateways": 4}
    ]
    assert view(store, "gateways_by_frequency_plan_daily", ["frequency_plan_id", "gateways"]) == [
        {"frequency_plan_id": "AS_923", "gateways": 4}
    ]
    assert view(store, "deployments_by_version_daily", ["version", "deployments"]) == [
        {"version": "3.33", "deployments": 1}
    ]
    latest = rows(store, "SELECT uid, body, source_offset FROM snapshots_latest")
    assert latest == [{"uid": IS_UID_A, "body": second.body.decode(), "source_offset": 1}]
    # equal receive times: the later offset (later in the partition) wins, as in ground_truth()
    tie = Delivery(DAY0 + 9 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=99))
    consume(store, [to_records([first, second, tie])])
    assert rows(store, "SELECT end_devices FROM fleet_daily") == [{"end_devices": 99}]
    assert ground_truth([first, second, tie])["fleet_daily"][0]["end_devices"] == 99


def test_zero_gateway_plan_is_kept_as_sent(store: ClickHouseStore):
    d = [Delivery(DAY0 + H, IS_UID_A.encode(), is_body(IS_UID_A, gateways={"EU_863_870": 0, "US_902_928_FSB_2": 2}))]
    consume(store, [to_records(d)])
    truth = ground_truth(d)
    assert truth_views(store, truth) == sorted_truth(truth)
    zero = {"day": "2025-01-01", "frequency_plan_id": "EU_863_870", "gateways": 0}
    assert zero in truth["gateways_by_frequency_plan_daily"]


def test_day_with_only_rejections(store: ClickHouseStore):
    consume(store, [[RawRecord(TOPIC, 0, 0, DAY0 + H, {HEADER_RECEIVED_AT: str(DAY0 + H).encode()}, b"{")]])
    assert rows(store, "SELECT day, reason, messages FROM rejected_daily") == [
        {"day": "2025-01-01", "reason": "not_json", "messages": 1}
    ]
    assert rows(store, "SELECT * FROM fleet_daily") == []


# ---------------------------------------------------------------------------------------------
# exactness against the simulator
# ---------------------------------------------------------------------------------------------


def test_views_equal_the_simulator_ground_truth_exactly(store: ClickHouseStore):
    sim = generate(deployments=60, cli_installs=20, days=5, seed=7, end_day="2025-03-05")
    deliveries = sim.deliveries
    assert sim.stats["resend"] and sim.stats["changed"] and sim.stats["malformed"]  # the cases that matter occur
    records = to_records(deliveries)
    truth = ground_truth(deliveries)
    want, want_extra = sorted_truth(truth), extra_truth(deliveries)

    consume(store, split(records, [50, 17, 133, 64]))
    assert truth_views(store, truth) == want
    assert extra_views(store) == want_extra
    assert sum(r["messages"] for r in truth["rejected_daily"]) == sim.stats["malformed"]
    n_latest = sum(r["deployments"] + r["cli_installs"] for r in truth["fleet_daily"])
    assert store.query("SELECT count() FROM snapshots_latest")[1] == [(n_latest,)]
    state = everything(store, positions=False)

    # a replay of everything, split differently, by a restarted worker (state rebuilt from ClickHouse). Days
    # before its state window are written without the exact-re-send check, so a UID's stored copy can be an
    # identical body received later: same content, same aggregates (positions=False).
    consume(store, split(records, [211, 9, 77]))
    assert truth_views(store, truth) == want
    assert everything(store, positions=False) == state
    # and the stream in reverse batch order (an older batch re-delivered after newer ones)
    content = everything(store, positions=False)
    consume(store, list(reversed(split(records, [120]))))
    assert truth_views(store, truth) == want
    assert extra_views(store) == want_extra
    assert everything(store, positions=False) == content
    # merges change nothing either
    for table in ("snapshots", "rejections", "rollup_partitions"):
        store.client.command(f"OPTIMIZE TABLE {table} FINAL")
    assert everything(store, positions=False) == content


# ---------------------------------------------------------------------------------------------
# backpressure while ClickHouse is unavailable
# ---------------------------------------------------------------------------------------------


class RecordingStop(threading.Event):
    """The store's `stopping` event: records each backoff wait instead of sleeping; sets itself after `stop_after`."""

    def __init__(self, stop_after: int | None = None) -> None:
        super().__init__()
        self.waits: list[float] = []
        self.stop_after = stop_after

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(float(timeout or 0))
        if self.stop_after is not None and len(self.waits) >= self.stop_after:
            self.set()
        return self.is_set()


def flaky(fn: Callable[..., Any], failures: list[bool]) -> Callable[..., Any]:
    """fn, but the k-th call raises a driver error when failures[k] is True (calls beyond the list pass)."""
    calls = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        k = calls[0]
        calls[0] += 1
        if k < len(failures) and failures[k]:
            raise OperationalError("Error HTTPConnectionPool(host='clickhouse', port=8123): Connection refused")
        return fn(*args, **kwargs)

    return wrapper


def test_write_retries_with_backoff_and_loses_nothing(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    deliveries = small_deliveries()
    batch = rolled_up(store, to_records(deliveries))
    client = store.client
    store.retry_max_s = 1.0
    store.stopping = RecordingStop()
    # inserts: snapshots fail, fail, ok, then rejections fail (after the snapshots went in), then ok, and the
    # aggregate rows fail once after those: every retry re-runs the whole write
    monkeypatch.setattr(client, "raw_insert", flaky(client.raw_insert, [True, True, False, True, False, False, True]))
    with caplog.at_level(logging.WARNING, logger="sinks.clickhouse"):
        store.write(batch)
    assert store.stopping.waits == [0.5, 1.0, 1.0, 1.0]  # exponential, capped at retry_max_s
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "sinks.clickhouse"]
    assert warnings[-1] == f"ClickHouse write of {len(batch)} rows succeeded after 4 failed attempts: recovered"
    warnings = warnings[:-1]
    assert len(warnings) == 4
    assert all(re.match(r"ClickHouse write of \d+ rows failed \(attempt \d, chdb://", w) for w in warnings), warnings
    assert "Connection refused" in warnings[0] and "offsets are held, retrying in 0.5s" in warnings[0]
    assert "attempt 4" in warnings[-1]
    assert store.last_write_at is not None
    monkeypatch.undo()
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)  # nothing lost, nothing twice
    consume(store, [to_records(deliveries)])
    assert truth_views(store, truth) == sorted_truth(truth)


def test_write_gives_up_when_stopping(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    batch = rolled_up(store, to_records(small_deliveries()))
    client = store.client
    monkeypatch.setattr(client, "raw_insert", flaky(client.raw_insert, [True] * 1000))
    store.stopping = RecordingStop(stop_after=3)
    store.last_write_at = None
    with caplog.at_level(logging.WARNING, logger="sinks.clickhouse"), pytest.raises(OperationalError):
        store.write(batch)
    assert store.stopping.waits == [0.5, 1.0, 2.0]  # three backoffs, then the stop is seen at the next failure
    assert store.last_write_at is None
    store.stopping = RecordingStop()
    store.stopping.set()
    with pytest.raises(OperationalError):
        store.write(batch)  # already stopping: the first failure is raised, no wait
    assert store.stopping.waits == []
    monkeypatch.undo()
    assert store.query("SELECT count() FROM snapshots")[1] == [(0,)]


def test_write_does_not_retry_our_own_bugs(store: ClickHouseStore):
    bad = Batch(snapshots=[{"day": "2025-01-01"}])  # type: ignore[list-item]  # not a row: our bug, not an outage
    store.stopping = RecordingStop()
    with pytest.raises((KeyError, AttributeError)):
        store.write(bad)
    assert store.stopping.waits == []


def test_server_unreachable_retries_and_redacts_password(caplog: pytest.LogCaptureFixture):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = ClickHouseStore(f"http://default:s3cret@127.0.0.1:{port}/default", retry_max_s=1.0)
    s.stopping = RecordingStop(stop_after=2)
    with caplog.at_level(logging.WARNING, logger="sinks.clickhouse"), pytest.raises(Exception):  # noqa: B017 - whatever the driver raises once the stop is set
        s.open()
    s.close()
    assert not any("s3cret" in r.getMessage() for r in caplog.records)  # nor in the driver's own logs
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "sinks.clickhouse"]
    assert len(warnings) == 2 and s.stopping.waits == [0.5, 1.0]
    assert all("connect and migrate failed" in w for w in warnings)
    assert f"http://default:***@127.0.0.1:{port}/default" in warnings[0]
    assert not any("s3cret" in w for w in warnings)


# ---------------------------------------------------------------------------------------------
# snapshot TTL
# ---------------------------------------------------------------------------------------------


def test_snapshot_ttl_setting_adds_and_removes_the_ttl(tmp_path: Path):
    path = tmp_path / "chdb"
    recent = (int(time.time() * 1000) // DAY_MS - 3) * DAY_MS  # three days ago, 00:00 UTC: well within the TTL

    def create(s: ClickHouseStore) -> str:
        """SHOW CREATE of the snapshots; the CLI reports (migration 0006) have the same TTL."""
        snapshots, reports = (str(s.client.command(f"SHOW CREATE TABLE {t}")) for t in ("snapshots", "cli_reports"))
        assert re.findall(r"TTL [^\n]*", snapshots) == re.findall(r"TTL [^\n]*", reports), reports
        return snapshots

    with opened(path) as s:
        assert "TTL" not in create(s)
    with opened(path, snapshot_ttl_days=30) as s:
        assert "TTL day + toIntervalDay(30)" in create(s)
        consume(s, [to_records(small_deliveries(recent))])
        assert "TTL" not in str(s.client.command("SHOW CREATE TABLE daily_rollup"))  # aggregates are kept
        assert s.query("SELECT count() FROM fleet_daily")[1] == [(2,)]
    with opened(path, snapshot_ttl_days=90) as s:
        assert "toIntervalDay(90)" in create(s) and "toIntervalDay(30)" not in create(s)
    with opened(path) as s:
        assert "TTL" not in create(s)
        assert s.query("SELECT count() FROM snapshots_latest")[1] == [(4,)]
        truth = ground_truth(small_deliveries(recent))
        assert truth_views(s, truth) == sorted_truth(truth)


def test_replay_older_than_the_ttl_keeps_the_aggregates(tmp_path: Path):
    path = tmp_path / "chdb"
    deliveries = small_deliveries()  # 2025-01: older than any TTL below
    truth = ground_truth(deliveries)
    with opened(path) as s:
        consume(s, [to_records(deliveries)])
        assert truth_views(s, truth) == sorted_truth(truth)
    with opened(path, snapshot_ttl_days=30) as s:
        s.client.command("OPTIMIZE TABLE snapshots FINAL")  # the TTL deletes the old snapshots
        assert s.query("SELECT count() FROM snapshots")[1] == [(0,)]
        assert truth_views(s, truth) == sorted_truth(truth)  # the day aggregates outlive the snapshots
        consume(s, [to_records(deliveries)])  # a replay of the whole topic
        assert truth_views(s, truth) == sorted_truth(truth)


# ---------------------------------------------------------------------------------------------
# values are never spliced into SQL
# ---------------------------------------------------------------------------------------------

NASTY = [
    "EU'); DROP TABLE snapshots; --",
    "US_902\"928\\FSB_2\\'",
    "ünïcødé_€_😀_计划",
    "{days:Array(Date)} %s %(x)s ?",
    "tab\there\nnewline\r\x00nul",
    "' OR 1=1 UNION SELECT * FROM system.tables --",
    "\\",
]


def test_values_round_trip_exactly_and_are_never_spliced(store: ClickHouseStore):
    plans = {p: i + 1 for i, p in enumerate(NASTY)}
    binary_version = "3.32.1 ('); DROP TABLE daily_rollup; -- \\ \" ü 😀)"
    os_name = "lin'ux\"\\ ☃"
    arch = "x' || '1"
    deliveries = [
        Delivery(
            DAY0 + H,
            IS_UID_A.encode(),
            is_body(
                IS_UID_A,
                gateways=plans,
                binary_version=binary_version,
                operating_system=os_name,
                arch=arch,
                golang_version=" go1.22'",
            ),
        ),
        Delivery(DAY0 + 2 * H, None, '{"uid": "\'); DROP TABLE rejections; -- ü\\\\"'.encode()),
    ]
    _outcome, batch = Replayer(store, PARTITIONS).feed(to_records(deliveries))
    assert len(batch.snapshots) == 1 and len(batch.rejections) == 1
    truth = ground_truth(deliveries)
    assert truth_views(store, truth) == sorted_truth(truth)
    got = {r["frequency_plan_id"]: r["gateways"] for r in rows(store, "SELECT * FROM gateways_by_frequency_plan_daily")}
    assert got == plans
    assert rows(store, "SELECT operating_system, deployments FROM deployments_by_os_daily") == [
        {"operating_system": os_name, "deployments": 1}
    ]
    assert rows(store, "SELECT arch FROM deployments_by_arch_daily") == [{"arch": arch}]
    assert rows(store, "SELECT golang_version FROM deployments_by_go_version_daily") == [{"golang_version": "go1.22'"}]
    assert rows(store, "SELECT version FROM deployments_by_version_daily") == [{"version": "3.32"}]  # major.minor
    latest = rows(store, "SELECT binary_version, gateways_by_frequency_plan, body FROM snapshots_latest")
    assert latest == [
        {"binary_version": binary_version, "gateways_by_frequency_plan": plans, "body": deliveries[0].body.decode()}
    ]
    rej = rows(store, "SELECT reason, body FROM rejections")
    assert rej == [{"reason": "not_json", "body": deliveries[1].body.decode()}]
    # query parameters are bound by ClickHouse, not formatted into the text
    for plan in NASTY:
        sql = "SELECT gateways FROM gateways_by_frequency_plan_daily WHERE frequency_plan_id = {p:String}"
        found = rows(store, sql, {"p": plan})
        assert found == [{"gateways": plans[plan]}], plan
    # every table is still there
    names = {r[0] for r in store.query("SELECT name FROM system.tables WHERE database = currentDatabase()")[1]}
    assert set(TABLES + ANALYST_VIEWS) <= names


@pytest.mark.parametrize("encoding", ["json", "native"])
def test_every_column_round_trips_through_the_insert(
    store: ClickHouseStore, encoding: str, monkeypatch: pytest.MonkeyPatch
):
    """The sink sends rows as one JSON object of columns (orjson, parsed by ClickHouse); a value orjson cannot write
    falls back to clickhouse-connect's Native encoding. Either way each column stores exactly the row's value:
    64-bit extremes, 128-bit versions, milliseconds, nulls, maps, arrays, any text."""
    import orjson

    if encoding == "native":
        monkeypatch.setattr("sinks.inserts._json_columns", lambda *a: (_ for _ in ()).throw(TypeError("refused")))
    else:  # the JSON path only: the Native one is not reached
        monkeypatch.setattr(store.client, "insert", lambda *a, **k: pytest.fail("the Native fallback was used"))
    received = datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    top, nasty = 2**64 - 1, "x' \" ü 😀 \\n\u2028"
    snapshot = SnapshotRow(
        received.date(),
        IS_UID_A,
        "is",
        received,
        2**128 - 1,
        7,
        2**63 + 1,
        65535,
        True,
        ["last_day>last_week"],
        nasty,
        "arm64",
        "3.32.1 (x)",
        "3.32",
        "go1.22",
        top,
        {nasty: top, "EU_863_870": 0},
        top,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        None,
        8,
        "",
        nasty,
    )
    cli = SnapshotRow(
        received.date(),
        "0b2e9a2c-8f3d-4a8e-9a4c-2b1c9d8e7f60",
        "cli",
        received,
        1 << 64,
        0,
        0,
        0,
        False,
        [],
        "",
        "",
        "",
        "unknown",
        "",
        users_total=top,
        cli=orjson.dumps({"commands": [nasty]}).decode(),
        body="{}",
    )
    rejection = RejectionRow(received.date(), received, "not_json", nasty, "raw", 3, top, 2, nasty)
    rollup = RollupRow(
        received.date(), 5, (3 << 64) | 9, received, deployments=top, rejected_by_reason={nasty: 1, Reason.NOT_JSON: 2}
    )
    store.write(Batch(snapshots=[snapshot, cli], rejections=[rejection], rollups=[rollup], partitions_total=8))
    for table, row_type, written in (
        ("snapshots", SnapshotRow, [cli, snapshot]),
        ("rejections", RejectionRow, [rejection]),
        ("rollup_partitions", RollupRow, [rollup]),
    ):
        names = columns(row_type)
        got = store.client.query(f"SELECT {', '.join(names)} FROM {table} ORDER BY {names[1]}").result_rows
        naive = [[v.replace(tzinfo=None) if isinstance(v, datetime) else v for v in values(r)] for r in written]
        want = sorted((tuple(v) for v in naive), key=lambda v: v[1])  # ClickHouse answers UTC times without a zone
        assert [tuple(r) for r in got] == want, table


# ---------------------------------------------------------------------------------------------
# read-only analyst access
# ---------------------------------------------------------------------------------------------

WRITES = [
    "INSERT INTO rejections (day, reason) VALUES ('2025-01-01', 'forged')",
    "DROP TABLE snapshots",
    "TRUNCATE TABLE daily_rollup",
    "ALTER TABLE snapshots DELETE WHERE 1",
    "CREATE TABLE intruder (a UInt8) ENGINE = Memory",
    "OPTIMIZE TABLE snapshots FINAL",
    "SET max_threads = 1",
    "\ufeffDROP TABLE snapshots; SELECT 1",  # a byte-order mark and a second statement
    "SELECT 1; DROP TABLE snapshots",
    "SELECT 1 SETTINGS readonly = 0",
    "KILL QUERY WHERE 1",
]


def analyst_sessions(store: ClickHouseStore, **limits: Any) -> SqlSessions:
    return SqlSessions(store.dsn, QueryLimits(**limits), size=2, queue_s=1)


def test_analyst_queries_cannot_write(store: ClickHouseStore):
    consume(store, [to_records(small_deliveries())])
    before = everything(store)
    sessions = analyst_sessions(store)
    try:
        for sql in WRITES:
            with pytest.raises(RequestRefused) as refused:
                sessions.run(sql)
            assert refused.value.status in (400, 403), sql
        assert sessions.run("SELECT count() FROM information_schema.tables WHERE table_name = 'intruder'").rows == [
            (0,)
        ]
        with pytest.raises(QueryFailed) as too_many:
            SqlSessions(store.dsn, QueryLimits(max_result_rows=10)).run("SELECT number FROM numbers(1000)")
        assert too_many.value.extra["clickhouse_error"] == "TOO_MANY_ROWS_OR_BYTES"
    finally:
        sessions.close()
    assert everything(store) == before


def test_refused_analyst_statements_do_not_break_the_writer(store: ClickHouseStore):
    sessions = analyst_sessions(store)
    try:
        for sql in WRITES:
            with pytest.raises(RequestRefused):
                sessions.run(sql)
        with pytest.raises(QueryFailed):
            sessions.run("SELECT number FROM numbers(300000)")  # over the 100k result limit
        assert sessions.run("SELECT 42").rows == [(42,)]  # the next query gets its own answer
    finally:
        sessions.close()
    consume(store, [to_records(small_deliveries())])  # and the writer still writes
    truth = ground_truth(small_deliveries())
    assert truth_views(store, truth) == sorted_truth(truth)


# ---------------------------------------------------------------------------------------------
# the ready queries of docs/analysts.md
# ---------------------------------------------------------------------------------------------


def test_analysts_doc_queries_run(tmp_path: Path):
    # jumps at 2% (not the default 0.1%): the jump queries need a few on any calendar
    sim = generate(
        deployments=60, cli_installs=20, days=15, seed=7, default_uid_rate=0.1, malformed_rate=0.03, jump_rate=0.02
    )
    with opened(tmp_path / "chdb") as s:
        consume(s, split(to_records(sim.deliveries), [400]))
        from tests.chdb_store import refresh

        refresh(s)  # the analyst rows, as the 10 s schedule would
        # the doc names every column of every table and view
        text = ANALYSTS_DOC.read_text()
        for name in TABLES + ANALYST_VIEWS + ANALYST_DEPTH_TABLES + ANALYST_DEPTH_VIEWS:
            for (column,) in s.query(
                f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = '{name}'"
            )[1]:
                assert f"`{column}`" in text, f"{name}.{column} is not documented in docs/analysts.md"
        empty, queries = [], doc_queries()
        assert len(queries) >= 10
        sessions = analyst_sessions(s)
        try:
            for title, sql in queries:
                try:  # exactly as /api/sql and `is-telemetry sql` run it: checked, read-only, limited
                    result_ = sessions.run(sql)
                except RequestRefused as exc:
                    pytest.fail(f"docs/analysts.md query {title!r} failed: {exc.status} {exc.message}\n{sql}")
                if not result_.rows:
                    empty.append(title)
                else:
                    assert result_.columns, title
                if title == "Older senders without a gateway total":  # deployments, not UID-days (issue 23)
                    deployments = sum(dict(zip(result_.columns, row))["deployments"] for row in result_.rows)
                    older = s.query(
                        "SELECT uniqExact(uid) FROM (SELECT uid, argMax(gateways, day) AS total, "
                        "argMax(gateways_by_frequency_plan, day) AS plans FROM snapshots_latest WHERE kind = 'is' "
                        "GROUP BY uid) WHERE total = 0 AND arraySum(mapValues(plans)) > 0"
                    )[1][0][0]
                    assert deployments == older > 0, (deployments, older)
        finally:
            sessions.close()  # the next test opens chDB at another path: nothing of this one may stay open
        assert not empty, f"queries without rows on simulated data: {empty}"


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_api_sql_endpoint_as_documented(store: ClickHouseStore):
    """docs/analysts.md: POST /api/sql with JSON {"query": ...}, bearer token, 401/403/400/415 errors."""
    from starlette.testclient import TestClient

    from core.config import load_settings
    from dashboard.api import create_app

    consume(store, [to_records(small_deliveries())])
    settings = load_settings(None, api={"token": "s3cret"}, clickhouse={"dsn": store.dsn})
    sessions = SqlSessions.from_settings(settings)
    panel_sessions = AnalystSessions.from_settings(settings, size=1)
    app = create_app(settings, sessions, panel_sessions)
    auth = {"authorization": "Bearer s3cret"}
    with TestClient(app, base_url="http://127.0.0.1:8481") as http:
        assert http.post("/api/sql", json={"query": "SELECT 1"}).status_code == 401
        assert (
            http.post("/api/sql", json={"query": "SELECT 1"}, headers={"authorization": "Bearer nope"}).status_code
            == 401
        )
        r = http.post("/api/sql", json={"query": "SELECT day, deployments FROM fleet_daily ORDER BY day"}, headers=auth)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "columns": ["day", "deployments"],
            "types": ["Date", "UInt64"],
            "rows": [["2025-01-01", 2], ["2025-01-02", 1]],
        }
        r = http.post("/api/sql", json={"query": "SELECT count() AS n FROM snapshots_latest"}, headers=auth)
        assert r.json() == {"columns": ["n"], "types": ["UInt64"], "rows": [[4]]}
        r = http.post("/api/sql", json={"query": "SELEC nonsense"}, headers=auth)
        assert (
            r.status_code == 400
            and r.json()["error"] == "query_failed"
            and isinstance(r.json()["clickhouse_code"], int)
        )
        r = http.post("/api/sql", json={"query": "DROP TABLE snapshots"}, headers=auth)
        assert r.status_code == 403 and r.json()["error"] == "writes_not_allowed", r.text
        r = http.post("/api/sql", content=b"SELECT 1", headers={**auth, "content-type": "text/plain"})
        assert r.status_code == 415, r.text
    app.state.endpoint.close()
    panel_sessions.close()
