"""Processors throughput: the full worker against the alternatives a user would pick instead, in one run.

    python -m bench.bench_processors [--messages N] [--repeats R] [--take] [--single] [--only V,...] [--smoke]

One embedded broker (Tansu, 8 partitions). N realistic bodies from the fleet simulator
(`producers.simulator.generate`: ~510-byte IS/CLI bodies over 30 days, with its re-sends, changed bodies,
~1% malformed ones and its fleet's lifecycle) are produced once into two topics:
- the raw topic as the project's producers write it: many bodies per Kafka record (`producers/packed.py`, 100 a
  record, JSON lines: core/envelope.py), as the collector batches them under load;
- a single-body topic (`send_to_kafka`, one body a record with the collector's headers), for the references.
Then, R times, each variant reads a whole topic from offset 0 with a consumer group of its own:

1. raw          - aiokafka `getmany()` in this process, bytes only (single-body topic): the floor;
2. bare         - a faust agent in a child (`faust_app()` with the worker's settings, spinner off):
                  `async for value in stream: orjson.loads(value)` (single-body topic): faust's per-record cost;
3. take         - (with --take) the same with the worker's loop shape (`noack_take`, per-event acks);
4. plain        - the floor to chase, not a peer with equal output: an aiokafka consumer with the project's own
                  parsing and validation, latest per (day, UID), one insert per table per batch into `snapshots` and
                  `rejections` only (no day aggregates, no views), commit after insert (bench/peers.py);
5. kafka_engine - peer with equal output: ClickHouse's Kafka table engine in chDB, validation, the re-send rule and
                  the roll-up in SQL materialized views into the project's tables (bench/peer_kafka_engine.py);
6. quixstreams  - peer with equal output: a quixstreams application running the worker's pipeline, roll-up and
                  store (bench/peer_quixstreams.py);
7. plain_same_work - not a peer, a reference: a plain aiokafka loop doing the worker's work in sequence (its
                  pipeline, roll-up and store with every view; no dead letters published): what faust and the
                  worker's pipelined write cost or gain (`full_vs_plain_same_work`);
8. full         - a real `is-telemetry worker` process (validate, re-key check, roll-up, sink to a fresh chDB);
9. full_single  - (with --single) the same worker on the single-body topic.
Peers and the worker read the raw topic; each must end with the exact snapshot count (distinct (day, UID) of the
valid bodies) and rejection count, or the run fails. The peers with equal output (and plain_same_work) must also
store exactly what the worker stores, in every table analysts query (bench/equal_output.py: snapshots, rejections
with their reasons, the day aggregates per partition and per day): each run's tables are compared with the first
worker run's, and the bench fails on any difference; it prints a line saying they match.

Timing starts when the consumer has its partitions (rebalance listener; faust's "Ready"; the Kafka engine's
`system.kafka_consumers` assignment) and ends when everything is stored. CPU seconds of the consuming process over
the same interval are reported per body, and for the worker per thread (its event loop against ClickHouse's
threads). The worker's run ends at its sink's last write once every body is
acknowledged as stored; its final partial batch waits out processors.batch_seconds, so a "steady" rate without it
is reported too. `main()` prints and returns the medians (and every sample); it prints `full_vs_plain=<x>` (the
floor) and, as its last line, `full_vs_best_equal_output_peer=<x>`: the worker's median msgs/s over the best peer
with equal output's (target >= 1.0). `--smoke`: 2,000 bodies, one round of every variant, the equality checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.equal_output import TABLES
from is_telemetry.runtime import stop_process

REPO = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO faust\.worker: \[\^Worker\]: Ready", re.M)


def _loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _child_env() -> dict[str, str]:
    """Children run in the temporary directory (the default data_dir, `data/`, with faust's under it, is relative to
    the cwd) and import from REPO."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def _cpu_s(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process so far, by kind: "event loop" (the main thread), else the thread's
    name (chDB names its own: BgSchPool runs the refreshable views, MergeMutate the merges; the sink's write thread
    shows as chDB names it while it inserts)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip() or "?"
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        kind = "event loop" if task.name == str(pid) else name
        out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


# ---------------------------------------------------------------------------------------------------------------
# The input
# ---------------------------------------------------------------------------------------------------------------


def produce(bootstrap: str, topic: str, single_topic: str, n: int) -> dict[str, Any]:
    """Generate at least n simulator deliveries, send the first n to both topics; return what ClickHouse must end up
    with."""
    from processors.snapshot import day_of
    from processors.validate import Rejection, validate
    from producers.packed import send_packed
    from producers.simulator import generate, send_to_kafka

    deployments = max(10, n * 1300 // 36_000 + 10)  # 1300 deployments + 200 CLIs over 30 days ~ 36k deliveries
    while True:
        sim = generate(deployments, max(2, deployments // 6), 30, seed=1, end_day="2025-01-31")
        if len(sim.deliveries) >= n:
            break
        deployments = deployments * 11 // 10 + 1
    deliveries = sim.deliveries[:n]
    keys: set[tuple[Any, str]] = set()
    rejected = 0
    for d in deliveries:
        r = validate(d.body)
        if isinstance(r, Rejection):
            rejected += 1
        else:
            keys.add((day_of(d.received_at_ms), r.uid))
    started = time.perf_counter()
    # Order within a partition is kept (one request in flight); bigger batches only make the setup quicker.
    send_packed(
        deliveries, bootstrap, topic, bodies_per_record=100, pack_keyless=True, linger_ms=20, batch_size=512 * 1024
    )
    send_to_kafka(deliveries, bootstrap, single_topic, linger_ms=20, batch_size=512 * 1024)
    return {
        "messages": n,
        "mean_body_bytes": round(sum(len(d.body) for d in deliveries) / n),
        "rejected": rejected,
        "distinct_day_uid": len(keys),
        "produce_s": round(time.perf_counter() - started, 2),
    }


@contextmanager
def input_topics(workdir: Path, n: int) -> Iterator[tuple[str, str, str, dict[str, Any], int]]:
    """An embedded broker with the input produced once: (bootstrap, raw topic, single-body topic, what ClickHouse must
    end up with, partitions)."""
    from core.config import load_settings
    from core.kafka import ensure_topics
    from is_telemetry.broker import EmbeddedBroker, free_port

    with EmbeddedBroker(port=free_port(), log_file=workdir / "broker.log") as broker:
        bootstrap = broker.bootstrap_servers
        settings = load_settings(None, kafka={"bootstrap_servers": bootstrap})
        topic, single = settings.kafka.raw_topic, settings.kafka.raw_topic + "-single"
        ensure_topics(settings)
        ensure_topics(load_settings(None, kafka={"bootstrap_servers": bootstrap, "raw_topic": single}))
        yield bootstrap, topic, single, produce(bootstrap, topic, single, n), settings.kafka.partitions


# ---------------------------------------------------------------------------------------------------------------
# 1. raw aiokafka
# ---------------------------------------------------------------------------------------------------------------


async def _raw(bootstrap: str, topic: str, n: int, group: str) -> dict[str, Any]:
    from bench.peers import timed_consumer

    consumer, marks = await timed_consumer(bootstrap, topic, group, 4 * 1024 * 1024)
    try:
        count = 0
        total_bytes = 0
        while count < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                count += len(records)
                for r in records:
                    total_bytes += len(r.value)
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        await consumer.stop()
    return _figures(count, t1 - marks["t0"], cpu1 - marks["cpu0"])


def run_raw(bootstrap: str, topic: str, n: int) -> dict[str, Any]:
    return asyncio.run(_raw(bootstrap, topic, n, f"bench-raw-{uuid.uuid4().hex[:8]}"))


def _figures(count: int, seconds: float, cpu_s: float) -> dict[str, Any]:
    return {
        "messages": count,
        "seconds": round(seconds, 3),
        "msgs_per_s": round(count / seconds),
        "cpu_s": round(cpu_s, 2),
        "cpu_us_per_msg": round(cpu_s / count * 1e6, 1),
    }


# ---------------------------------------------------------------------------------------------------------------
# 2./3. faust agents (child processes)
# ---------------------------------------------------------------------------------------------------------------


def _faust_child(mode: str, bootstrap: str, topic_name: str, group: str, n: int, out: str) -> None:
    """A faust worker with one agent over `topic_name`: `bare` iteration or the worker's `take` loop shape."""
    import logging

    import faust
    import orjson

    from core.config import load_settings
    from core.streaming import faust_app

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    settings = load_settings(None, kafka={"bootstrap_servers": bootstrap})
    app = faust_app(group, settings)  # the worker's settings: buffer sizes, linger, timeouts, no web
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    state: dict[str, Any] = {"count": 0}

    def finish() -> None:
        t1, cpu1 = time.perf_counter(), time.process_time()
        Path(out).write_text(json.dumps(_figures(state["count"], t1 - state["t0"], cpu1 - state["cpu0"])))
        os.kill(os.getpid(), signal.SIGTERM)

    def parse(value: bytes) -> None:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            pass

    async def bare(stream: Any) -> None:
        async for value in stream:
            parse(value)
            state["count"] += 1
            if state["count"] == n:
                finish()

    async def take(stream: Any) -> None:
        p = settings.processors
        async for events in stream.noack_take(settings.sink.batch_size, within=p.batch_seconds):
            for event in events:
                parse(event.value)
            for event in events:
                await stream.ack(event)
            state["count"] += len(events)
            if state["count"] >= n:
                finish()

    app.agent(topic, name=f"bench_{mode}")(bare if mode == "bare" else take)

    class Worker(faust.Worker):
        async def on_startup_finished(self) -> None:  # faust: first assignment done, streams flowing
            state.setdefault("t0", time.perf_counter())
            state.setdefault("cpu0", time.process_time())
            await super().on_startup_finished()

    worker = Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    worker.spinner = None  # the spinner sets the root logger to DEBUG (see core.streaming.run_faust)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass


#: The variants that store what the worker stores (their tables are compared with the worker's); the first two are
#: the peers the verdict is measured against, plain_same_work a reference.
EQUAL_OUTPUT_PEERS = ("kafka_engine", "quixstreams")
EQUAL_OUTPUT = (*EQUAL_OUTPUT_PEERS, "plain_same_work")


def run_child(
    mode: str, bootstrap: str, topic: str, n: int, expect: dict[str, Any], workdir: Path, timeout_s: float = 300
) -> dict[str, Any]:
    """One measurement in a child process of its own: `bare`/`take` faust agents, the peers. The peers with equal
    output export their tables; the figures then say where (`export`)."""
    tag = uuid.uuid4().hex[:8]
    export_dir = workdir / f"export-{mode}-{tag}"
    out = workdir / f"{mode}-{tag}.json"
    group = f"bench-{mode}-{tag}"
    log = workdir / f"{mode}.log"
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bench_processors",
                "--child",
                mode,
                "--bootstrap",
                bootstrap,
                "--topic",
                topic,
                "--group",
                group,
                "--messages",
                str(n),
                "--out",
                str(out),
                "--chdb",
                str(workdir / f"chdb-{tag}"),
                "--expect",
                json.dumps(expect),
                *(["--export", str(export_dir)] if mode in EQUAL_OUTPUT else []),
            ],
            cwd=workdir,
            env=_child_env(),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if not out.exists():
        raise RuntimeError(f"the {mode} child gave no result (exit {proc.returncode}):\n{log.read_text()[-3000:]}")
    fig: dict[str, Any] = json.loads(out.read_text())
    shutil.rmtree(workdir / f"chdb-{tag}", ignore_errors=True)
    if "snapshots" in fig and (fig["snapshots"], fig["rejections"]) != (expect["distinct_day_uid"], expect["rejected"]):
        raise RuntimeError(
            f"{mode} stored {fig['snapshots']} snapshots and {fig['rejections']} rejections, expected "
            f"{expect['distinct_day_uid']} and {expect['rejected']}"
        )
    if mode in EQUAL_OUTPUT:
        fig["export"] = str(export_dir)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# 4. the full worker
# ---------------------------------------------------------------------------------------------------------------


def _metrics(api: str) -> dict[str, float]:
    from is_telemetry import apiclient

    return apiclient.metrics(api + "/metrics", timeout_s=10) or {}


def _sum(m: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in m.items() if k == prefix or k.startswith(prefix + "{"))


def run_full(
    bootstrap: str,
    topic: str,
    n: int,
    expect: dict[str, Any],
    workdir: Path,
    timeout_s: float = 600,
    export: bool = True,
) -> dict[str, Any]:
    """A real worker, timed; with `export`, its tables exported once it has stopped (the figures say where)."""
    import httpx

    from is_telemetry.broker import free_port

    data = workdir / f"worker-{uuid.uuid4().hex[:8]}"
    data.mkdir(parents=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    log = data / "worker.log"
    # --log-level info only adds faust's start/assignment lines (the "Ready" we time from); spinner is off
    args = [
        "worker",
        "--kafka",
        bootstrap,
        "--data-dir",
        str(data),
        "--group-id",
        f"bench-full-{uuid.uuid4().hex[:8]}",
        "--api-port",
        str(port),
        "--log-level",
        "info",
    ]
    with open(log, "ab") as logf:
        env = {**_child_env(), "IS_TELEMETRY_KAFKA__RAW_TOPIC": topic}
        proc = subprocess.Popen(
            [sys.executable, "-m", "is_telemetry", *args],
            cwd=data,
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        t0: float | None = None
        cpu0 = 0.0
        while t0 is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not become ready:\n{log.read_text()[-3000:]}")
            ready = READY_LINE.search(log.read_text(errors="replace"))
            if ready:
                cpu0 = _cpu_s(proc.pid)  # read within one poll (<= 50 ms) of the Ready line
                threads0 = _thread_cpu_s(proc.pid)
                t0 = datetime.strptime(ready.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            else:
                time.sleep(0.05)
        writes: dict[float, float] = {}  # sink write end time -> records done by then (same event-loop step)
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not finish:\n{log.read_text()[-3000:]}")
            try:
                m = _metrics(api)
            except httpx.HTTPError:
                m = {}
            done = m.get("is_telemetry_processor_stored_total", 0)  # acknowledged once their batch was written
            if m.get("is_telemetry_sink_last_write_timestamp_seconds"):
                writes[m["is_telemetry_sink_last_write_timestamp_seconds"]] = done
            if done >= n:
                cpu1 = _cpu_s(proc.pid)
                threads1 = _thread_cpu_s(proc.pid)
                peak_rss_mb = _peak_rss_mb(proc.pid)
                break
            time.sleep(0.1)
        t1 = m["is_telemetry_sink_last_write_timestamp_seconds"]
        # Without the final partial batch, which waits up to processors.batch_seconds for records that never come:
        # records stored by the write before the last one, over the time to that write.
        before_last = max((t for t, d in writes.items() if d < n), default=None)
        body = httpx.post(api + "/api/sql", json={"query": "SELECT count() FROM snapshots FINAL"}, timeout=60).json()
        in_clickhouse = int(body["rows"][0][0])
    finally:
        stop_process(proc, 60)
    export_dir = data.parent / f"export-full-{data.name}"
    exported = (
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.bench_processors",
                "--child",
                "export",
                "--chdb",
                str((data / "chdb").resolve()),
                "--export",
                str(export_dir),
            ],
            cwd=workdir,
            env=_child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if export
        else None
    )
    if exported is not None and exported.returncode != 0:
        raise RuntimeError(f"exporting the worker's tables failed: {exported.stderr[-3000:]}")
    if in_clickhouse != expect["distinct_day_uid"]:
        raise RuntimeError(f"ClickHouse has {in_clickhouse} snapshots, expected {expect['distinct_day_uid']}")
    if int(_sum(m, "is_telemetry_processor_rejected_total")) != expect["rejected"]:
        raise RuntimeError(
            f"the worker rejected {_sum(m, 'is_telemetry_processor_rejected_total')} bodies, expected "
            f"{expect['rejected']}"
        )
    thread_cpu = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}  # seconds while it ran
    fig = _figures(int(m["is_telemetry_processor_records_total"]), t1 - t0, cpu1 - cpu0)
    if before_last is not None and before_last > t0:
        fig["steady_msgs_per_s"] = round(writes[before_last] / (before_last - t0))
    batches = m.get("is_telemetry_processor_batch_size_count", 0)
    n_writes = m.get("is_telemetry_sink_write_seconds_count", 0)
    fig.update(
        snapshots_final=in_clickhouse,
        snapshot_rows_written=int(m.get('is_telemetry_sink_rows_total{table="snapshots"}', 0)),
        duplicates=int(m.get("is_telemetry_processor_duplicates_total", 0)),
        rejected=int(_sum(m, "is_telemetry_processor_rejected_total")),
        batches=int(batches),
        mean_batch=round(m.get("is_telemetry_processor_batch_size_sum", 0) / batches) if batches else 0,
        sink_write_s_total=round(m.get("is_telemetry_sink_write_seconds_sum", 0), 2),
        sink_write_ms_mean=round(m.get("is_telemetry_sink_write_seconds_sum", 0) / n_writes * 1000) if n_writes else 0,
        peak_rss_mb=peak_rss_mb,
        # where the CPU went while it ran, us per body: the event loop (faust, validation, the roll-up) and ClickHouse's
        # threads (the inserts, the materialized and refreshable views, the merges)
        thread_cpu_us_per_msg={
            k: round(v / n * 1e6, 1) for k, v in sorted(thread_cpu.items(), key=lambda kv: -kv[1]) if v >= 0.01
        },
    )
    if export:
        fig["export"] = str(export_dir)
    if os.environ.get("BENCH_KEEP_LOG"):
        shutil.copy(log, os.environ["BENCH_KEEP_LOG"])
    shutil.rmtree(data, ignore_errors=True)
    return fig


# ---------------------------------------------------------------------------------------------------------------


def _check_equal(reference: Path | None, pending: list[tuple[str, Path]], equal: dict[str, int]) -> None:
    """Compare each pending export with the worker's (`reference`), then delete it; raise on any difference."""
    from bench.equal_output import differences

    if reference is None:
        return
    while pending:
        name, export = pending.pop(0)
        if export == reference:
            continue
        found = differences(reference, export)
        if found:
            raise RuntimeError(f"{name} does not store what the worker stores:\n  " + "\n  ".join(found))
        equal[name] = equal.get(name, 0) + 1
        shutil.rmtree(export, ignore_errors=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_processors", description="processors throughput")
    ap.add_argument("--messages", type=int, default=40_000, help="simulator bodies sent once to each topic")
    ap.add_argument("--repeats", type=int, default=3, help="measurements of each variant (medians are reported)")
    ap.add_argument("--take", action="store_true", help="also measure a faust agent with the worker's noack_take loop")
    ap.add_argument("--single", action="store_true", help="also measure the worker on the single-body topic")
    ap.add_argument("--only", help="comma-separated variants to measure (default: all)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    ap.add_argument(
        "--child",
        choices=["bare", "take", "plain", "plain_same_work", "kafka_engine", "quixstreams", "export"],
        help=argparse.SUPPRESS,
    )
    for hidden in ("--bootstrap", "--topic", "--group", "--out", "--chdb", "--expect", "--export"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.messages, args.repeats = 2000, 1
    if args.child in ("bare", "take"):
        _faust_child(args.child, args.bootstrap, args.topic, args.group, args.messages, args.out)
        return {}
    if args.child == "export":
        from bench.equal_output import export_store

        export_store(f"chdb://{args.chdb}", Path(args.export))
        return {}
    if args.child:
        from bench import peer_kafka_engine, peer_quixstreams, peers

        run = {
            "plain": peers.run_plain,
            "plain_same_work": peers.run_plain_same_work,
            "kafka_engine": peer_kafka_engine.run,
            "quixstreams": peer_quixstreams.run,
        }[args.child]
        run(
            args.bootstrap,
            args.topic,
            args.group,
            args.messages,
            json.loads(args.expect),
            args.chdb,
            args.out,
            args.export,
        )
        return {}

    n = args.messages
    variants = [
        "raw",
        "bare",
        *(["take"] if args.take else []),
        "plain",
        *EQUAL_OUTPUT_PEERS,
        "plain_same_work",
        "full",
        *(["full_single"] if args.single else []),
    ]
    if args.only:
        variants = [v for v in variants if v in args.only.split(",")]
    samples: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    load = {"before": _loadavg()}
    reference: Path | None = None  # the first worker run's tables: every equal-output run must match them
    pending: list[tuple[str, Path]] = []
    equal: dict[str, int] = {}  # runs found equal to the worker's, by variant
    with tempfile.TemporaryDirectory(prefix="bench-processors-") as tmp:
        workdir = Path(tmp)
        with input_topics(workdir, n) as (bootstrap, topic, single, expect, partitions):
            print(
                f"produced {n} bodies ({expect['mean_body_bytes']} bytes mean, {expect['rejected']} malformed, "
                f"{expect['distinct_day_uid']} distinct (day, UID)) to {partitions} partitions, packed "
                f"and single, in {expect['produce_s']}s; load {_loadavg()}",
                flush=True,
            )
            for i in range(args.repeats):
                for v in variants:
                    if v == "raw":
                        fig = run_raw(bootstrap, single, n)
                    elif v in ("full", "full_single"):
                        fig = run_full(bootstrap, topic if v == "full" else single, n, expect, workdir)
                    else:
                        fig = run_child(v, bootstrap, single if v in ("bare", "take") else topic, n, expect, workdir)
                    export = Path(fig.pop("export")) if "export" in fig else None
                    if v == "full" and reference is None:
                        reference = export
                    elif export is not None and v in (*EQUAL_OUTPUT, "full"):
                        pending.append((v, export))
                    elif export is not None:
                        shutil.rmtree(export, ignore_errors=True)
                    _check_equal(reference, pending, equal)
                    samples[v].append(fig)
                    extra = ""
                    if v.startswith("full"):
                        extra = (
                            f"  (without the last batch {fig.get('steady_msgs_per_s', 0):,}/s; {fig['batches']} "
                            f"batches of ~{fig['mean_batch']}, sink {fig['sink_write_ms_mean']} ms/batch, "
                            f"{fig['sink_write_s_total']}s in all, peak RSS {fig['peak_rss_mb']} MB)\n"
                            "                  us CPU/msg by thread: "
                            + ", ".join(f"{k} {v}" for k, v in fig["thread_cpu_us_per_msg"].items())
                        )
                    print(
                        f"  run {i + 1} {v:15s} {fig['msgs_per_s']:>8,} msgs/s  {fig['seconds']:7.2f}s  "
                        f"{fig['cpu_us_per_msg']:6.1f} us CPU/msg{extra}  load {_loadavg()}",
                        flush=True,
                    )
    if pending:  # --only without full: measured, not compared
        print(f"not compared with the worker's tables (no worker run): {', '.join(sorted({n for n, _ in pending}))}")
    load["after"] = _loadavg()
    med = {v: round(statistics.median(s["msgs_per_s"] for s in samples[v])) for v in variants}
    cpu = {v: round(statistics.median(s["cpu_us_per_msg"] for s in samples[v]), 1) for v in variants}
    result: dict[str, Any] = {
        "messages": n,
        "mean_body_bytes": expect["mean_body_bytes"],
        "partitions": partitions,
        "repeats": args.repeats,
        "msgs_per_s": med,
        "cpu_us_per_msg": cpu,
        "cpus": os.cpu_count(),
        "loadavg": load,
        "samples": samples,
        "equal_output_runs": equal,
    }
    ratios = {f"full_vs_{p}": round(med["full"] / med[p], 3) for p in variants if p != "full" and "full" in med}
    result["ratios"] = ratios
    steady = [s["steady_msgs_per_s"] for s in samples.get("full", []) if "steady_msgs_per_s" in s]
    if steady:
        result["full_steady_msgs_per_s"] = round(statistics.median(steady))
    print(
        f"medians of {args.repeats} ({n} bodies, {partitions} partitions, {os.cpu_count()} CPUs, load "
        f"{load['before']} -> {load['after']}):"
    )
    for v in variants:
        print(f"  {v:15s} {med[v]:>8,} msgs/s  {cpu[v]:6.1f} us CPU/msg")
    for k, r in ratios.items():
        print(f"  {k} {r:.2f}")
    if steady:
        print(f"  full without its last (partial, timer-flushed) batch: {result['full_steady_msgs_per_s']:,} msgs/s")
    if equal:
        runs = ", ".join(f"{name} ({k} run{'s' if k > 1 else ''})" for name, k in equal.items())
        print(f"equal output: {runs} stored exactly what the worker stored: {TABLES}")
    peers = [p for p in EQUAL_OUTPUT_PEERS if p in med]
    if "full" in med and "plain" in med:
        result["full_vs_plain"] = ratios["full_vs_plain"]
        print(f"full_vs_plain={result['full_vs_plain']:.2f}")
    if "full" in med and peers:
        best = max(peers, key=lambda p: med[p])
        result["best_equal_output_peer"] = best
        result["full_vs_best_equal_output_peer"] = round(med["full"] / med[best], 3)
        print(f"best peer with equal output: {best}")
        # `python -m bench` prints a bench's last_line after its summary table: the run's very last line
        result["last_line"] = f"full_vs_best_equal_output_peer={result['full_vs_best_equal_output_peer']:.2f}"
        print(result["last_line"])
    return result


if __name__ == "__main__":
    main()
