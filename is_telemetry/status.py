"""`is-telemetry status`: one screen with the health of every stage, the processors' lag and today's counts.

    collector   GET /healthz and /readyz of the collector (readyz = its Kafka producer is connected)
    API         GET /healthz of the HTTP API/dashboard
    worker      what the worker serving the API consumes (its /metrics, present when the API runs inside a worker, as
                with `is-telemetry up`): DOWN when it is up but consumes no partition (it is joining its consumer
                group: nothing is stored meanwhile), BEHIND when some of its partitions are paused (ClickHouse did not
                take their last batch)
    Kafka       the bootstrap servers answer (kafka-python admin client) and the raw topic exists; with `up`'s
                embedded broker, the generations of the raw topic it holds (core/generations.py) and the
                records they hold (their high-water marks)
    lag         records the processors' consumer group (processors.group_id, `is-telemetry-processors`) has
                not committed yet on the raw topic; `sink lag` the same for a separate sink's group
                (processors.sink_group_id) on the snapshots topic, shown when that group has committed offsets
    ClickHouse  the last stored snapshot (max(received_at) of `snapshots`, through the API's POST /api/sql) and
                the sink's `is_telemetry_sink_last_write_timestamp_seconds` from --sink-metrics, by default the
                API's /metrics (present when the API runs inside the writing process, as with `is-telemetry up`;
                a standalone `is-telemetry api` does not write: point --sink-metrics at the sink's /metrics)
    views       the refreshes of the fleet over time (`analyst_daily`, retention), from the API's /api/freshness: a
                refresh whose latest attempt failed is DOWN with its error, the time of its last success and how old
                the figures are; one without a success for 10 minutes is BEHIND
    today       today's row of `fleet_daily` (UTC day)

Lag method: lag = high-water mark - committed offset, per partition of the raw topic, summed. Committed offsets
come from the group coordinator (OffsetFetch through the admin client). High-water marks are NOT taken from
ListOffsets "latest" (`end_offsets()`), which the embedded Tansu broker answers wrongly (it returns the last
batch's start + 1); instead a group-less KafkaConsumer is assigned every partition, positioned at the committed
offset (the log start where nothing is committed) and polled until every partition has answered a fetch: each
fetch response carries the partition's high-water mark, which kafka-python keeps (`KafkaConsumer.highwater()`). A fetch at the committed offset reads at
most one small batch, so this costs little even far behind, and it is right on Tansu and on Apache Kafka alike.
Nothing is committed and no group is joined.

Where: each address given as a flag (--api, --collector, --kafka); else where the `up` recorded in the data
directory (--data-dir, default ./data: data_dir/stack.json, core/statefile.py) runs, with a first line
`up` saying which process that is (or that the file is stale: its `up` was killed); else the configuration.

Exit status: 0 when every component is healthy, 1 otherwise (the last line names what is down). Lag alone is not
unhealthy unless --max-lag is given and exceeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import httpx
import typer
from kafka.errors import KafkaError

from is_telemetry import apiclient
from is_telemetry.apiclient import ApiError

SINK_METRIC = "is_telemetry_sink_last_write_timestamp_seconds"
ASSIGNED_METRIC = "is_telemetry_processor_partitions_assigned"  # processors/metrics.py
PAUSED_METRIC = "is_telemetry_sink_paused_partitions"  # sinks/metrics.py
FRESHNESS_PATH = "/api/freshness"  # dashboard/freshness.py

OK, DOWN, UNKNOWN, BEHIND = "OK", "DOWN", "?", "BEHIND"

TODAY_SQL = (
    "SELECT day, deployments, cli_installs, gateways, end_devices, active_end_devices, active_last_day, "
    "active_last_week, active_last_month, applications, users_standard + users_admin AS users, organizations "
    "FROM fleet_daily WHERE day = toDate(now('UTC')) LIMIT 1"
)
LAST_SNAPSHOT_SQL = "SELECT max(received_at) AS last, count() AS n FROM snapshots WHERE day >= toDate(now('UTC')) - 31"


@dataclass
class Line:
    name: str
    state: str
    detail: str

    @property
    def healthy(self) -> bool:
        return self.state == OK


@dataclass
class Report:
    lines: list[Line] = field(default_factory=list)
    today: str = ""

    def unhealthy(self) -> list[Line]:
        return [line for line in self.lines if not line.healthy]


# ----------------------------------------------------------------------------------------------- HTTP checks


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if "refused" in text.lower() or name == "ConnectError":
        return "connection refused" if "refused" in text.lower() else f"cannot connect ({text or name})"
    if "timeout" in name.lower() or "timed out" in text.lower():
        return f"timed out: {text}"[:200] if text and "timed out" not in text.lower() else "timed out"
    return f"{name}: {text}"[:200] if text else name


def check_collector(client: Any, base: str) -> Line:
    try:
        health = client.get(f"{base}/healthz")
    except httpx.HTTPError as exc:
        return Line("collector", DOWN, f"{base}  {_reason(exc)}")
    if health.status_code != 200:
        return Line("collector", DOWN, f"{base}  /healthz answered {health.status_code}")
    try:
        ready = client.get(f"{base}/readyz")
    except httpx.HTTPError as exc:
        return Line("collector", DOWN, f"{base}  healthz ok, /readyz {_reason(exc)}")
    if ready.status_code != 200:
        message = _json_field(ready, "message") or f"answered {ready.status_code}"
        return Line("collector", DOWN, f"{base}  healthz ok, readyz NOT ready: {message}")
    return Line("collector", OK, f"{base}  healthz ok, readyz ready (Kafka producer connected)")


def _json_field(response: Any, key: str) -> str:
    try:
        return str(response.json().get(key, ""))
    except (ValueError, AttributeError):  # not JSON, or not an object
        return ""


def check_api(client: Any, api: str, token: str, sink_metrics: str) -> tuple[Line, Line, str]:
    """The API's health, then ClickHouse through it (last write) and today's fleet_daily row."""
    try:
        health = client.get(f"{api}/healthz")
        up = health.status_code == 200
        state = "ok" if up else f"answered {health.status_code}"
        api_line = Line("API", OK if up else DOWN, f"{api}  healthz {state}")
    except httpx.HTTPError as exc:
        api_line = Line("API", DOWN, f"{api}  {_reason(exc)}")
        up = False
    if not up:
        return api_line, Line("ClickHouse", UNKNOWN, "not checked: the API (its only route here) is down"), ""

    def sql(query: str) -> list[dict[str, Any]]:
        return apiclient.sql_rows(api, query, token, client=client, timeout_s=client.timeout.read or 10.0)

    try:
        last = sql(LAST_SNAPSHOT_SQL)[0]
    except (ApiError, httpx.HTTPError, IndexError) as exc:
        return api_line, Line("ClickHouse", DOWN, f"query through the API failed: {_reason(exc)}"), ""
    parts = []
    if last.get("n"):
        parts.append(f"last snapshot received {_when(_parse_time(last['last']))}")
    else:
        parts.append("no snapshot in the last 31 days")
    parts.append(_sink_metric(client, sink_metrics))
    ch_line = Line("ClickHouse", OK, "; ".join(parts))

    try:
        rows = sql(TODAY_SQL)
    except (ApiError, httpx.HTTPError) as exc:
        return api_line, ch_line, f"fleet_daily query failed: {_reason(exc)}"
    day = datetime.now(UTC).date().isoformat()
    if not rows:
        return api_line, ch_line, f"{day} (UTC): no data yet"
    r = rows[0]
    return (
        api_line,
        ch_line,
        (
            f"{r['day']} (UTC): deployments {r['deployments']}, CLI installs {r['cli_installs']}, "
            f"gateways {r['gateways']}, end devices {r['end_devices']} (active {r['active_end_devices']}; "
            f"day/week/month {r['active_last_day']}/{r['active_last_week']}/{r['active_last_month']}), "
            f"applications {r['applications']}, users {r['users']}, organizations {r['organizations']}"
        ),
    )


def check_worker(client: Any, url: str) -> Line | None:
    """What the worker serving `url` (its /metrics) consumes; None when that process is not a worker (a standalone
    API) or does not answer (the API line says so)."""
    found = apiclient.metrics(url, client=client)
    if found is None or ASSIGNED_METRIC not in found:
        return None
    return worker_line(int(found[ASSIGNED_METRIC]), int(found.get(PAUSED_METRIC, 0)))


def worker_line(assigned: int, paused: int) -> Line:
    if assigned == 0:
        return Line(
            "worker",
            DOWN,
            "up, but consuming no partition of the raw topic: it is joining its consumer group (seconds after a "
            "restart), or other members of the group hold every partition; nothing is stored meanwhile",
        )
    if paused:
        return Line(
            "worker",
            BEHIND,
            f"consuming {assigned} partitions, {paused} of them paused: ClickHouse did not take their last batch "
            "(they resume after a back-off)",
        )
    return Line("worker", OK, f"consuming {assigned} partitions of the raw topic")


def check_views(client: Any, api: str) -> Line:
    """The analyst views' refreshes, as the dashboard's /api/freshness reports them."""
    url = f"{api}{FRESHNESS_PATH}"
    try:
        r = client.get(url)
    except httpx.HTTPError as exc:
        return Line("views", UNKNOWN, f"not checked: the API does not answer ({_reason(exc)})")
    if r.status_code != 200:
        message = _json_field(r, "message") or r.text[:200]
        return Line("views", UNKNOWN, f"not checked: {url} answered {r.status_code}: {message}")
    try:
        body = r.json()
        rows = [(str(x["view"]), x) for x in body["rows"]]
        stale_after_s = int(body["stale_after_s"])
    except (ValueError, KeyError, TypeError) as exc:
        return Line("views", UNKNOWN, f"not checked: {url} did not answer rows of refreshes ({exc})")
    if not rows:
        return Line("views", UNKNOWN, "not checked: ClickHouse reports no refreshable view (not migrated yet?)")

    def since(x: dict[str, Any]) -> str:
        last = x["last_success_time"]
        text = f"last success {_when(_parse_time(last))}" if last else "no success since ClickHouse started"
        as_of = x["figures_as_of"]
        return text + (f"; figures as of {_when(_parse_time(as_of))}" if as_of else "")

    failing = [f"{view} FAILING: {x['error']} ({since(x)})" for view, x in rows if x["failing"]]
    if failing:
        return Line("views", DOWN, "; ".join(failing))
    stale = [f"{view} has not refreshed for {stale_after_s} s ({since(x)})" for view, x in rows if x["stale"]]
    if stale:
        return Line("views", BEHIND, "; ".join(stale))
    lasts = [_parse_time(x["last_success_time"]) for _view, x in rows if x["last_success_time"]]
    when = f"last success {_when(min(lasts))}" if len(lasts) == len(rows) else "first refresh since start pending"
    return Line("views", OK, f"{', '.join(view for view, _x in rows)} refreshing ({when})")


def _sink_metric(client: Any, url: str) -> str:
    try:
        r = client.get(url)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        return f"sink metric unavailable at {url} ({_reason(exc)})"
    for line in r.text.splitlines():
        if line.startswith(SINK_METRIC + " ") or line.startswith(SINK_METRIC + "{"):
            try:
                value = float(line.rsplit(" ", 1)[1])
            except ValueError:
                break
            if value <= 0:
                return "sink: no write by this process since it started"
            return f"sink last write {_when(datetime.fromtimestamp(value, UTC))}"
    return f"sink metric not exported at {url} (a standalone API does not write: give --sink-metrics)"


def _parse_time(value: Any) -> datetime:
    text = str(value).replace("Z", "+00:00")
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _when(t: datetime) -> str:
    age = (datetime.now(UTC) - t).total_seconds()
    if age < 0:
        ago = "in the future: check clocks"
    elif age < 120:
        ago = f"{age:.0f} s ago"
    elif age < 7200:
        ago = f"{age / 60:.0f} min ago"
    elif age < 172800:
        ago = f"{age / 3600:.1f} h ago"
    else:
        ago = f"{age / 86400:.1f} days ago"
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')}Z ({ago})"


# ---------------------------------------------------------------------------------------------------- Kafka


@dataclass
class Lag:
    partitions: int
    total: int
    highwater: dict[int, int]
    committed: dict[int, int]
    unknown: list[int]


def kafka_lag(bootstrap: str, topic: str, group: str, timeout_s: float) -> Lag:
    """Committed offsets vs fetched high-water marks (see the module docstring). Raises if Kafka is unreachable
    (KafkaTimeoutError etc.) or the topic does not exist (LookupError)."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    ms = max(1000, int(timeout_s * 1000))
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="is-telemetry-status", request_timeout_ms=ms, bootstrap_timeout_ms=ms
    )
    try:
        meta = admin.describe_topics([topic])
        info = meta[0] if meta else {}
        if not info or info.get("error_code") or not info.get("partitions"):
            raise LookupError(f"topic {topic} does not exist")
        partitions = sorted(int(p["partition_index"]) for p in info["partitions"])
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
        except KafkaError:  # an unknown group has no committed offsets
            offsets = {}
    finally:
        admin.close()
    committed = {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic and om.offset >= 0}

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="is-telemetry-status",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1024,
        request_timeout_ms=max(ms, 5000),
    )
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        uncommitted = [tp for tp in tps if tp.partition not in committed]
        start = consumer.beginning_offsets(uncommitted) if uncommitted else {}
        base: dict[int, int] = {}
        for tp in tps:
            base[tp.partition] = committed.get(tp.partition, start.get(tp, 0))
            consumer.seek(tp, base[tp.partition])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            consumer.poll(timeout_ms=200, max_records=1)
        highwater = {tp.partition: hw for tp in tps if (hw := consumer.highwater(tp)) is not None}
    finally:
        consumer.close()
    unknown = [p for p in partitions if p not in highwater]
    total = sum(max(0, hw - base[p]) for p, hw in highwater.items())
    return Lag(len(partitions), total, highwater, committed, unknown)


def _lag_line(name: str, lag: Lag, topic: str, group: str, max_lag: int | None) -> Line:
    detail = f"{lag.total} records behind on {topic} (group {group}; "
    detail += f"{len(lag.committed)}/{lag.partitions} partitions committed)"
    if lag.unknown:
        return Line(name, DOWN, detail + f"; no high-water mark for partitions {lag.unknown} (leader down?)")
    if max_lag is not None and lag.total > max_lag:
        return Line(name, BEHIND, detail + f"; over --max-lag {max_lag}")
    return Line(name, OK, detail)


def check_kafka(
    bootstrap: str, topics: list[str], group: str, timeout_s: float, max_lag: int | None
) -> tuple[Line, Line]:
    """The Kafka and lag lines, over `topics` (the raw topic; with `up`'s embedded broker, the generations of it that
    exist: the lag is summed over them)."""
    lags: list[Lag] = []
    try:
        for topic in topics:
            lags.append(kafka_lag(bootstrap, topic, group, timeout_s))
    except LookupError as exc:
        return (
            Line("Kafka", OK, f"{bootstrap}  reachable"),
            Line("lag", DOWN, f"{exc} (created by the first worker or collector to start)"),
        )
    except Exception as exc:  # noqa: BLE001 - whatever kafka-python raises, the line says Kafka is not reachable
        return (
            Line("Kafka", DOWN, f"{bootstrap}  not reachable ({_reason(exc)})"),
            Line("lag", UNKNOWN, "not computed: Kafka is not reachable"),
        )
    held = ", ".join(
        f"topic {t}: {lag.partitions} partitions, high-water marks sum to {sum(lag.highwater.values())}"
        for t, lag in zip(topics, lags)
    )
    kafka = Line("Kafka", OK, f"{bootstrap}  reachable; {held}")
    total = Lag(
        lags[-1].partitions,
        sum(lag.total for lag in lags),
        lags[-1].highwater,
        lags[-1].committed,
        sorted({p for lag in lags for p in lag.unknown}),
    )
    return kafka, _lag_line("lag", total, " + ".join(topics), group, max_lag)


def check_sink_lag(bootstrap: str, topic: str, group: str, timeout_s: float, max_lag: int | None) -> Line | None:
    """The separate sink's lag on the snapshots topic; None when no sink group ever committed (workers write
    ClickHouse themselves) or Kafka is down (the Kafka line says so)."""
    try:
        lag = kafka_lag(bootstrap, topic, group, timeout_s)
    except Exception:  # noqa: BLE001 - Kafka down or no such group: the Kafka line reports it
        return None
    return _lag_line("sink lag", lag, topic, group, max_lag) if lag.committed else None


# ------------------------------------------------------------------------------------------------- command


@dataclass
class Targets:
    api: str
    collector: str
    bootstrap: str
    raw_topics: list[str]
    group: str
    snapshots_topic: str
    sink_group: str
    token: str = ""
    sink_metrics: str = ""


def collect(t: Targets, timeout_s: float, max_lag: int | None) -> Report:
    with httpx.Client(timeout=timeout_s) as client, ThreadPoolExecutor(4) as pool:
        f_collector = pool.submit(check_collector, client, t.collector)
        f_api = pool.submit(check_api, client, t.api, t.token, t.sink_metrics or f"{t.api}/metrics")
        f_kafka = pool.submit(check_kafka, t.bootstrap, t.raw_topics, t.group, timeout_s, max_lag)
        f_worker = pool.submit(check_worker, client, t.sink_metrics or f"{t.api}/metrics")
        f_sink = pool.submit(check_sink_lag, t.bootstrap, t.snapshots_topic, t.sink_group, timeout_s, max_lag)
        collector_line = f_collector.result()
        api_line, ch_line, today = f_api.result()
        kafka_line, lag_line = f_kafka.result()
        sink_line = f_sink.result()
        worker = f_worker.result()
        views_line = (
            check_views(client, t.api) if api_line.healthy else Line("views", UNKNOWN, "not checked: the API is down")
        )
    lines = [collector_line, api_line, *([worker] if worker is not None else []), kafka_line, lag_line]
    if sink_line is not None:
        lines.append(sink_line)
    return Report([*lines, ch_line, views_line], today)


def render(report: Report, echo: Callable[[str], None]) -> None:
    echo(f"is-telemetry status  {datetime.now(UTC).strftime('%Y-%m-%d %H:%M:%S')} UTC")
    for line in report.lines:
        echo(f"  {line.name:<11} {line.state:<6} {line.detail}")
    echo(f"  {'today':<11} {'':<6} {report.today or 'unknown (the API is down)'}")
    bad = report.unhealthy()
    if not bad:
        echo("all healthy")
        return
    down = [line.name for line in bad if line.state in (DOWN, BEHIND)]
    unknown = [line.name for line in bad if line.state == UNKNOWN]
    text = "unhealthy: " + (", ".join(down) + " down" if down else "")
    if unknown:
        text += ("; " if down else "") + ", ".join(unknown) + " not checked"
    echo(text)


def _text(state: dict[str, Any], key: str) -> str:
    """A string the state file holds (anything else reads as absent)."""
    value = state.get(key)
    return value if isinstance(value, str) else ""


def _raw_topics(state: dict[str, Any], settings: Any) -> list[str]:
    """The generations of the raw topic the state file names (each must be one: the file is input), else the
    configured raw topic."""
    from core.generations import number_of

    named = state.get("raw_topics")
    if (
        isinstance(named, list)
        and named
        and all(isinstance(t, str) and number_of(settings, t) is not None for t in named)
    ):
        return list(named)
    return [settings.kafka.raw_topic]


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    if url.endswith("/collect"):
        url = url[: -len("/collect")]
    if "://" not in url:
        url = "http://" + url
    return url


def recorded_stack(data_dir: Path) -> tuple[dict[str, Any], Line] | None:
    """The stack the data directory's state file names, and the `up` line saying whether it still runs."""
    from core.statefile import STATE_FILE, is_running, read_state_file

    state = read_state_file(data_dir)
    if state is None:
        return None
    where = data_dir / STATE_FILE
    pid = state.get("pid")
    if is_running(state):
        return state, Line("up", OK, f"pid {pid} on {data_dir} (from {where})")
    return state, Line(
        "up",
        DOWN,
        f"{where} names pid {pid}, which is not running: that `up` was killed (the next `up` on {data_dir} "
        "replaces the file)",
    )


def command(
    api: Annotated[
        Optional[str],
        typer.Option("--api", help="API/dashboard URL (default: the running stack's, else from api.host/api.port)"),
    ] = None,
    collector: Annotated[
        Optional[str],
        typer.Option(
            "--collector",
            help="Collector URL, with or without /collect (default: the running stack's, else collector.host/port)",
        ),
    ] = None,
    kafka: Annotated[
        Optional[str],
        typer.Option(
            "--kafka",
            help="Kafka bootstrap servers host:port,... (default: the running stack's, else kafka.bootstrap_servers, "
            "else the embedded broker)",
        ),
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir",
            show_default=False,
            help="Where `up` records its stack (data_dir/stack.json; default ./data, from data_dir)",
        ),
    ] = None,
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config", "-c", help="YAML config file (else $IS_TELEMETRY_CONFIG, else ./is-telemetry.yml if present)"
        ),
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=0.5, help="Seconds each check may take")] = 5.0,
    max_lag: Annotated[
        Optional[int], typer.Option("--max-lag", min=0, help="Count a lag above this many records as unhealthy")
    ] = None,
    sink_metrics: Annotated[
        Optional[str],
        typer.Option("--sink-metrics", help="/metrics URL of the process that writes ClickHouse (default: the API's)"),
    ] = None,
) -> None:
    """One screen: each component's health, the processors' lag, the last ClickHouse write and today's counts."""
    from urllib.parse import urlparse

    from core.config import client_host, is_loopback, load_settings

    try:
        s = load_settings(config, data_dir=data_dir)
    except Exception as exc:
        typer.echo(f"error: bad configuration: {exc}", err=True)
        raise typer.Exit(2) from exc
    recorded = recorded_stack(s.data_dir.resolve()) if not (api and collector and kafka) else None
    state, up_line = recorded if recorded is not None else ({}, None)
    api_url = _base_url(api or _text(state, "api_url") or f"http://{client_host(s.api.host)}:{s.api.port}")
    collector_url = _base_url(
        collector or _text(state, "collector_url") or f"http://{client_host(s.collector.host)}:{s.collector.port}"
    )
    targets = Targets(
        api=api_url,
        collector=collector_url,
        bootstrap=kafka or _text(state, "kafka") or s.bootstrap_servers,
        raw_topics=_raw_topics(state, s),
        group=s.processors.group_id,
        snapshots_topic=s.kafka.snapshots_topic,
        sink_group=s.processors.sink_group_id,
        # the token goes to an API named by a flag or the configuration, or to a loopback one the state file names
        token=s.api.token
        if api or not _text(state, "api_url") or is_loopback(urlparse(api_url).hostname or "")
        else "",
        sink_metrics=sink_metrics or "",
    )
    report = collect(targets, timeout, max_lag)
    if up_line is not None:
        report.lines.insert(0, up_line)
    render(report, typer.echo)
    raise typer.Exit(0 if not report.unhealthy() else 1)
