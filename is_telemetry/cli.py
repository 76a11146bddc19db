"""`is-telemetry`: one command line for every stage. `produce`, `simulate` and `status` are their modules' own
commands (imported at start); every other command imports its stage when it runs."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional
from urllib.parse import urlparse

import typer
from typer._click import Command, Context  # typer 0.29 (pinned) parses with a copy of click of its own
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperArgument, TyperOption

from core.config import Settings, check_api_exposure, describe_validation_errors, dotted, is_loopback, load_settings
from core.errors import ConfigError
from core.logsetup import setup_logging
from core.preflight import check_data_dir
from is_telemetry import status
from is_telemetry.stack.options import StackOptions
from is_telemetry.termsafe import printable
from producers import identity_server, simulator

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="The Things Stack Identity Server telemetry pipeline."
)

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", "-c", help="YAML config file (else $IS_TELEMETRY_CONFIG, else ./is-telemetry.yml if present)"
    ),
]
KafkaOpt = Annotated[
    Optional[str],
    typer.Option("--kafka", help="External Kafka bootstrap servers host:port,... (skips the embedded broker)"),
]
ClickHouseOpt = Annotated[
    Optional[str],
    typer.Option("--clickhouse", help="ClickHouse DSN: http(s)://user:pass@host:8123/db or chdb:///abs/path"),
]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", show_default=False, help="Embedded state directory (default ./data, from data_dir)"),
]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="debug|info|warning|error")]
OPTIONS = StackOptions()  # `up`'s defaults, for its help


def settings_from(config: Path | None, serves_api: bool = False, **flags: Any) -> Settings:
    """Settings from defaults < file < environment < flags; a bad configuration ends the command with one line per
    mistake (exit code 2)."""
    settings, problems, _ = checked_settings(config, serves_api, flags)
    if settings is None or problems:
        refuse(problems)
    assert settings is not None
    return settings


def checked_settings(
    config: Path | None, serves_api: bool, flags: dict[str, Any]
) -> tuple[Settings | None, list[str], set[str]]:
    """(settings, every mistake found, the flags that were wrong). With wrong flags, the settings are those without
    them (if the rest is right: the caller may check more, e.g. ports, and report it all in one go); None if even
    those cannot be loaded."""
    from pydantic import ValidationError

    problems: list[str] = []
    wrong: set[str] = set()
    while True:
        try:
            settings = load_settings(config, **flags)
        except ValidationError as exc:
            if not problems:
                problems = [f"bad configuration: {line}" for line in describe_validation_errors(exc)]
            dropped = {key for e in exc.errors() if (key := _drop_flag(flags, tuple(e["loc"])))}
            if not dropped:
                return None, problems, wrong
            wrong |= dropped
            continue
        except (ConfigError, ValueError, OSError) as exc:
            return None, [*problems, f"bad configuration: {exc}"], wrong
        break
    if serves_api:
        try:
            check_api_exposure(settings)
        except ConfigError as exc:
            problems.append(f"bad configuration: {exc}")
    return settings, problems, wrong


def _drop_flag(flags: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """Remove the flag a validation error points at (its settings key), if a flag gave that value; "" if none did."""
    if len(loc) == 1 and flags.get(str(loc[0])) is not None:
        flags[str(loc[0])] = None
        return str(loc[0])
    section = flags.get(str(loc[0])) if loc else None
    if len(loc) == 2 and isinstance(section, dict) and section.get(str(loc[1])) is not None:
        section[str(loc[1])] = None
        return f"{loc[0]}.{loc[1]}"
    return ""


def refuse(problems: list[str]) -> None:
    """End the command: one `error:` line per problem, exit code 2."""
    for problem in problems:
        typer.echo(f"error: {printable(str(problem))}", err=True)
    raise typer.Exit(2)


def follow_lifeline(settings: Settings, drain: bool = False) -> None:
    """A child of `up` stops by itself once `up` is gone (is_telemetry/lifeline.py); a worker on `up`'s embedded
    broker first stores what the broker holds (is_telemetry/stack/drain.py). Nothing, when started by hand."""
    import os

    from is_telemetry import lifeline
    from is_telemetry.stack.drain import DRAIN_ENV, wait_stored

    def store_first() -> None:
        wait_stored(settings)

    drain = drain and os.environ.pop(DRAIN_ENV, "") == "1"
    lifeline.follow(before_stop=store_first if drain else None)


def _port(value: int | None) -> int | None:
    return value or None  # 0 or absent = the configured default


@app.command()
def broker(
    port: Annotated[
        Optional[int], typer.Option("--port", show_default=False, help="Port (default 19092, from broker.port)")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", show_default=False, help="Listen address (default 127.0.0.1, from broker.host)")
    ] = "",
    config: ConfigOpt = None,
) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, memory storage) until stopped."""
    from is_telemetry.broker import EmbeddedBroker
    from is_telemetry.runtime import wait_for_stop_signal

    s = settings_from(config, broker={"port": _port(port), "host": host or None})
    b = EmbeddedBroker(s.broker.host, s.broker.port).start()
    typer.echo(
        f"broker listening on {b.bootstrap_servers} (memory storage: a restart loses all topics); Ctrl-C stops it"
    )
    try:
        wait_for_stop_signal(lambda: b.process is not None and b.process.poll() is None)
    finally:
        b.stop()
        typer.echo("broker stopped")


# `up`'s values are taken as text and checked with the settings and StackOptions (pydantic): every wrong one is
# reported in the same run, one line each, a value that is not a number included (click stops at the first).


@app.command()
def up(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kafka: KafkaOpt = None,
    clickhouse: ClickHouseOpt = None,
    broker_port: Annotated[
        Optional[str],
        typer.Option(
            "--broker-port", show_default=False, help="Embedded broker port (default 19092, from broker.port)"
        ),
    ] = None,
    collector_port: Annotated[
        Optional[str],
        typer.Option("--collector-port", show_default=False, help="Collector port (default 8480, from collector.port)"),
    ] = None,
    api_port: Annotated[
        Optional[str],
        typer.Option("--api-port", show_default=False, help="API/dashboard port (default 8481, from api.port)"),
    ] = None,
    collector_host: Annotated[
        str,
        typer.Option(
            "--collector-host",
            show_default=False,
            help="Collector bind address; 0.0.0.0 = every interface (default 127.0.0.1, from collector.host)",
        ),
    ] = "",
    api_host: Annotated[
        str,
        typer.Option(
            "--api-host",
            show_default=False,
            help="API/dashboard bind address; beyond loopback only with api.token (default 127.0.0.1, from api.host)",
        ),
    ] = "",
    simulate: Annotated[bool, typer.Option("--simulate/--no-simulate", help="Feed simulated deployments")] = True,
    deployments: Annotated[
        Optional[str],
        typer.Option(
            "--deployments", show_default=False, help=f"Simulated deployments (default {OPTIONS.deployments})"
        ),
    ] = None,
    cli_installs: Annotated[
        Optional[str],
        typer.Option(
            "--cli-installs", show_default=False, help=f"Simulated CLI installs (default {OPTIONS.cli_installs})"
        ),
    ] = None,
    days: Annotated[
        Optional[str],
        typer.Option(
            "--days", show_default=False, help=f"Days of simulated history to backfill (default {OPTIONS.days})"
        ),
    ] = None,
    seed: Annotated[
        Optional[str],
        typer.Option(
            "--seed", show_default=False, help=f"Simulation seed: same seed, same fleet (default {OPTIONS.seed})"
        ),
    ] = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Start the whole pipeline: broker, processors worker + sink + API, collector, simulator."""
    from pydantic import ValidationError

    from is_telemetry.stack import Stack, StackOptions
    from is_telemetry.stack.preflight import port_clashes

    flags: dict[str, Any] = {
        "data_dir": data_dir,
        "kafka": {"bootstrap_servers": kafka},
        "clickhouse": {"dsn": clickhouse},
        "broker": {"port": _port_text(broker_port)},
        "collector": {"port": _port_text(collector_port), "host": collector_host or None},
        "api": {"port": _port_text(api_port), "host": api_host or None},
    }
    s, problems, wrong = checked_settings(config, True, flags)
    given = {"deployments": deployments, "cli_installs": cli_installs, "days": days, "seed": seed}
    try:
        opts = StackOptions(
            config=config,
            simulate=simulate,
            log_level=log_level.lower(),  # type: ignore[arg-type]  # checked by StackOptions
            **{k: _number(v) for k, v in given.items() if v is not None},  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        problems += describe_validation_errors(exc, lambda loc: "--" + dotted(loc).replace("_", "-"))  # its flag
    if s is not None:
        data_ok = check_data_dir(s.data_dir.resolve())
        if not data_ok.ok:
            problems.append(data_ok.message)
        elif problems:  # the rest is checked before anything starts; here, everything wrong is said at once
            skip = {f"--{key.replace('.', '-')}" for key in wrong}  # e.g. --collector-port: not what was asked for
            if "kafka.bootstrap_servers" in wrong:
                skip.add("--broker-port")  # a Kafka was asked for, not the embedded broker
            problems += port_clashes(s, skip)
    if problems:
        refuse(problems)
    assert s is not None
    setup_logging(opts.log_level)
    raise typer.Exit(Stack(s, opts).run())


def _port_text(value: str | None) -> int | str | None:
    """A port flag's text for the settings to check: None (0 or absent: the configured default), else _number."""
    return None if value is None or value.strip() in ("", "0") else _number(value)


def _number(value: str) -> int | str:
    """An integer if the text is one (so that a message shows -1, not '-1'), else the text (refused as it is)."""
    import re

    return int(value) if re.fullmatch(r"\s*-?[0-9]+\s*", value) else value


ConsumerApiPortOpt = Annotated[
    Optional[int],
    typer.Option(
        "--api-port", help="Serve the HTTP API/dashboard from this process (needed for embedded chDB); -1 = off"
    ),
]


def _consumer_settings(
    config: Path | None,
    data_dir: Path | None,
    kafka: str | None,
    clickhouse: str | None,
    api_port: int | None,
    log_level: str,
    **flags: Any,
) -> Settings:
    """The settings of a consumer process (`worker`, `sink`: is_telemetry/worker_app.py), its logging set up."""
    s = settings_from(
        config,
        serves_api=_serves_api(api_port),
        data_dir=data_dir,
        kafka={"bootstrap_servers": kafka},
        clickhouse={"dsn": clickhouse},
        api={"port": api_port if api_port and api_port > 0 else None},
        **flags,
    )
    setup_logging(log_level)
    return s


def _serves_api(api_port: int | None) -> bool:
    return api_port is not None and api_port >= 0


def _run_consumer(run: Callable[[], int]) -> None:
    """Run a consumer process until it stops; a refusal (e.g. the raw topic's partition count changed) is exit 2."""
    try:
        code = run()
    except ConfigError as exc:
        typer.echo(f"error: {printable(str(exc))}", err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kafka: KafkaOpt = None,
    clickhouse: ClickHouseOpt = None,
    api_port: ConsumerApiPortOpt = None,
    group_id: Annotated[
        Optional[str],
        typer.Option("--group-id", help="Consumer group (a new group replays the raw topic from offset 0)"),
    ] = None,
    sink: Annotated[
        bool,
        typer.Option(
            "--sink/--no-sink",
            help="Write to ClickHouse in this process; --no-sink publishes snapshots to Kafka for `is-telemetry sink`",
        ),
    ] = True,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Run a processors worker (faust): validate -> dedup -> roll up -> sink."""
    from core import ledger
    from is_telemetry.worker_app import run_worker

    s = _consumer_settings(config, data_dir, kafka, clickhouse, api_port, log_level, processors={"group_id": group_id})
    follow_lifeline(s, drain=True)
    ledger_dir = ledger.from_env()  # `up` gives it, if any
    _run_consumer(lambda: run_worker(s, sink, _serves_api(api_port), log_level, ledger_dir=ledger_dir))


@app.command()
def sink(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kafka: KafkaOpt = None,
    clickhouse: ClickHouseOpt = None,
    api_port: ConsumerApiPortOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Run the sink as its own process: snapshots topic -> ClickHouse (for workers started with --no-sink)."""
    from is_telemetry.worker_app import run_sink

    s = _consumer_settings(config, data_dir, kafka, clickhouse, api_port, log_level)
    _run_consumer(lambda: run_sink(s, serve_api=_serves_api(api_port), log_level=log_level))


@app.command()
def collect(
    config: ConfigOpt = None,
    kafka: KafkaOpt = None,
    port: Annotated[
        Optional[int], typer.Option("--port", show_default=False, help="Port (default 8480, from collector.port)")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", show_default=False, help="Listen address (default 127.0.0.1, from collector.host)")
    ] = "",
    log_level: LogLevelOpt = "warning",
) -> None:
    """Run the HTTP collector: POST /collect (what TTS's telemetry.target points at)."""
    from core import control, ledger
    from producers.collector import serve

    s = settings_from(config, kafka={"bootstrap_servers": kafka}, collector={"port": _port(port), "host": host or None})
    setup_logging(log_level)
    follow_lifeline(s)
    serve(s, log_level=log_level, ledger_dir=ledger.from_env(), control_fd=control.from_env())  # from `up`, if any


@app.command()
def api(
    config: ConfigOpt = None,
    clickhouse: ClickHouseOpt = None,
    port: Annotated[
        Optional[int], typer.Option("--port", show_default=False, help="Port (default 8481, from api.port)")
    ] = None,
    host: Annotated[
        str, typer.Option("--host", show_default=False, help="Listen address (default 127.0.0.1, from api.host)")
    ] = "",
    log_level: LogLevelOpt = "warning",
) -> None:
    """Serve the HTTP API and dashboard standalone (against a ClickHouse server)."""
    from dashboard import forget_route
    from dashboard.server import serve
    from is_telemetry.worker_app import forgetter

    s = settings_from(
        config, serves_api=True, clickhouse={"dsn": clickhouse}, api={"port": _port(port), "host": host or None}
    )
    setup_logging(log_level)
    forget_route.install(forgetter(s))  # POST /api/forget, with the writing user (clickhouse.dsn)
    serve(s, log_level=log_level)


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="A read-only SQL statement (SELECT, WITH or EXPLAIN)")],
    api: Annotated[
        Optional[str],
        typer.Option(
            "--api",
            show_default=False,
            help="The API to ask, e.g. http://127.0.0.1:8481. Default: the API of the stack running on the data "
            "directory; with none running, the data directory's chDB, read-only",
        ),
    ] = None,
    clickhouse: ClickHouseOpt = None,
    data_dir: DataDirOpt = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv or json (printed); parquet, arrow or tsv (--output)")
    ] = "table",
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the result to this file, as ClickHouse wrote it")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="On an error, ClickHouse's whole message")] = False,
    token: Annotated[
        Optional[str], typer.Option("--token", envvar="IS_TELEMETRY_API__TOKEN", help="Bearer token of the API")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a read-only query: through the running stack's API (found in the data directory), else on the data
    directory's chDB (read-only), or directly against a ClickHouse server (--clickhouse)."""
    from is_telemetry.sqlcli import EXPORTED, PRINTED, SqlError, fetch, format_result, run_query

    if fmt not in PRINTED + EXPORTED:
        typer.echo(f"error: --format must be one of {', '.join(PRINTED + EXPORTED)}", err=True)
        raise typer.Exit(2)
    if fmt in EXPORTED and output is None:
        typer.echo(f"error: --format {fmt} writes a file: add --output FILE", err=True)
        raise typer.Exit(2)
    s = settings_from(config, data_dir=data_dir, clickhouse={"dsn": clickhouse}, api={"clickhouse_dsn": clickhouse})
    direct = clickhouse is not None
    try:
        if output is not None:
            with output.open("wb") as out:
                fetch(s, query, api, token, direct, "json" if fmt == "table" else fmt, out)
            typer.echo(f"wrote {output} ({output.stat().st_size} bytes)", err=True)
            return
        columns, rows = run_query(s, query, api=api, token=token, direct=direct)
    except SqlError as exc:
        typer.echo(f"error: {printable(str(exc))}", err=True)
        if verbose and exc.detail:
            typer.echo(printable(exc.detail), err=True)
        raise typer.Exit(1) from exc
    sys.stdout.write(format_result(columns, rows, fmt))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
def uid(
    ctx: typer.Context,
    elements: Annotated[
        Optional[list[str]],
        typer.Option("--elements", help="UID elements (as telemetry.uid-elements): --elements A B ..."),
    ] = None,
    tts_config: Annotated[
        Optional[Path], typer.Option("--config", help="A The Things Stack config file (tts.yml)")
    ] = None,
) -> None:
    """Print the telemetry UID exactly as The Things Stack computes it."""
    from core.uid import uid_from_config, uid_from_elements

    elements = [*(elements or []), *ctx.args]
    if elements:
        typer.echo(uid_from_elements(elements))
        return
    if tts_config is None:
        typer.echo("error: give --elements A B ... or --config tts.yml", err=True)
        raise typer.Exit(2)
    from producers.identity_server import load_tts_config

    typer.echo(uid_from_config(load_tts_config(tts_config)))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the telemetry message (docs/telemetry-message.schema.json)."""
    import json

    from core.schema import json_schema

    typer.echo(json.dumps(json_schema(), indent=2, sort_keys=True))


@app.command("config")
def config_cmd(
    config: ConfigOpt = None,
    docs: Annotated[bool, typer.Option("--docs", help="Print the configuration reference (markdown)")] = False,
) -> None:
    """Print the effective configuration (or its reference with --docs)."""
    from core.config import reference_markdown

    if docs:
        typer.echo(reference_markdown(), nl=False)
        return
    import yaml

    typer.echo(yaml.safe_dump(settings_from(config).model_dump(mode="json"), sort_keys=False), nl=False)


@app.command()
def forget(
    uids: Annotated[list[str], typer.Argument(help="UIDs of deployments (88-character base64) or CLI installs (UUID)")],
    api: Annotated[
        Optional[str],
        typer.Option(
            "--api",
            show_default=False,
            help="The API to ask (POST /api/forget, behind its token). Default: the API of the stack running on the "
            "data directory; with none running, the data directory's chDB",
        ),
    ] = None,
    token: Annotated[
        Optional[str], typer.Option("--token", envvar="IS_TELEMETRY_API__TOKEN", help="Bearer token of the API")
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    clickhouse: ClickHouseOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Erase deployments or CLI installs everywhere, and record it in the erasure register (docs/privacy.md): through
    a running stack's API, on the data directory's chDB, or on a ClickHouse server (--clickhouse, the writing user)."""
    from core.preflight import chdb_holder
    from is_telemetry import apiclient
    from is_telemetry.stack.state import read_state
    from sinks.clickhouse import ClickHouseStore
    from sinks.erasure import Outcome, erase, is_uid
    from sinks.retention import Retention

    bad = [u for u in uids if not is_uid(u)]
    if bad:
        typer.echo(
            f"error: {printable(bad[0][:100])!r} is not a UID (88-character base64 for a deployment, a UUID for a CLI "
            "install; `is-telemetry uid` computes a deployment's): nothing changed",
            err=True,
        )
        raise typer.Exit(2)
    s = settings_from(config, data_dir=data_dir, clickhouse={"dsn": clickhouse})
    setup_logging(log_level)
    if api is None and clickhouse is None and s.clickhouse_dsn.startswith("chdb:"):
        path = Path(s.clickhouse_dsn.removeprefix("chdb://"))
        holder = chdb_holder(path)
        if holder is not None:
            state = read_state(s.data_dir.resolve()) or {}
            api = str(state.get("api_url", "")) or None
            if api is None or not is_loopback(urlparse(api).hostname or ""):
                typer.echo(
                    f"error: the chDB at {path} is in use by {f'pid {holder}' if holder else 'another process'} and "
                    "no loopback API of it is recorded: pass its API (--api http://127.0.0.1:PORT), or stop it",
                    err=True,
                )
                raise typer.Exit(2)
        elif not (path / "metadata").is_dir():
            typer.echo(f"error: there is no chDB data at {path}: pass --data-dir, --api or --clickhouse", err=True)
            raise typer.Exit(2)
    if api is not None:
        try:
            results = apiclient.forget(api, uids, token or s.api.token)
        except apiclient.ApiError as exc:
            typer.echo(f"error: {printable(str(exc))} (asked the API at {api})", err=True)
            raise typer.Exit(2 if 400 <= exc.status < 500 else 1) from exc  # refused: 2, as a refused UID
        lines = [(str(r.get("outcome", "")), str(r.get("message", ""))) for r in results]
    else:
        store = ClickHouseStore(s.clickhouse_dsn, s.clickhouse.snapshot_ttl_days, retention=Retention.of(s.clickhouse))
        try:
            with _native_stderr_held():  # chDB writes its own refusal there; ours says what to do
                store = store.open()
        except ConfigError as exc:  # StoreRefused: e.g. another process took the chDB directory meanwhile
            holder = chdb_holder(Path(s.clickhouse_dsn.removeprefix("chdb://"))) if api is None else None
            if holder is not None:
                who = f"pid {holder}" if holder else "another process"
                typer.echo(
                    f"error: the chDB at {s.data_dir} is in use by {who} (an `is-telemetry sql` or a starting stack): "
                    "run forget again when it is done, or through the stack's API; nothing changed",
                    err=True,
                )
            else:
                typer.echo(f"error: {printable(str(exc))}; nothing changed", err=True)
            raise typer.Exit(2) from exc
        try:
            lines = [(str(e.outcome), e.message()) for e in erase(store, uids)]
        except ConfigError as exc:  # ErasureRefused: nothing changed
            typer.echo(f"error: {printable(str(exc))}", err=True)
            raise typer.Exit(2) from exc
        finally:
            store.close()
    for _, message in lines:
        typer.echo(printable(message))
    if any(outcome == Outcome.UNKNOWN for outcome, _ in lines):
        raise typer.Exit(1)


@contextlib.contextmanager
def _native_stderr_held() -> Iterator[None]:
    """Hold what native code (chDB) writes to file descriptor 2 meanwhile: written out after a success, dropped after
    a failure (the caller prints one `error:` line instead)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        sys.stderr.buffer.write(held.read(1_000_000))
        sys.stderr.flush()


rollup_app = typer.Typer(
    no_args_is_help=True, help="The roll-up's day aggregates in ClickHouse (per source partition)."
)


@rollup_app.command("repartition")
def rollup_repartition(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kafka: KafkaOpt = None,
    clickhouse: ClickHouseOpt = None,
    partitions: Annotated[
        Optional[int],
        typer.Option("--partitions", min=1, help="The raw topic's partition count (default: read from Kafka)"),
    ] = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """After adding partitions to the raw topic: rewrite the day aggregates for the new count. Stop every worker and
    sink first (docs/operations.md, "Adding partitions")."""
    from core.kafka import topic_partitions
    from sinks.clickhouse import ClickHouseStore
    from sinks.retention import Retention

    s = settings_from(config, data_dir=data_dir, kafka={"bootstrap_servers": kafka}, clickhouse={"dsn": clickhouse})
    setup_logging(log_level)
    n = partitions or topic_partitions(s, s.kafka.raw_topic)
    store = ClickHouseStore(s.clickhouse_dsn, s.clickhouse.snapshot_ttl_days, retention=Retention.of(s.clickhouse))
    store = store.open()
    try:
        before = store.recorded_partitions()
        rows = store.repartition(n)
    finally:
        store.close()
    typer.echo(f"day aggregates rewritten for {n} partitions (were {before}): {rows} rows; workers may start")


app.add_typer(rollup_app, name="rollup")
app.command("produce")(identity_server.command)
app.command("simulate")(simulator.command)
app.command("status")(status.command)


#: A value's name in the help, where the option's own last word would say less (argparse's convention otherwise:
#: --collector-port PORT, --data-dir DIR).
METAVARS = {"config": "FILE", "output": "FILE", "kafka": "HOST:PORT,...", "clickhouse": "DSN", "api": "URL"}


def plain_help(command: Command) -> None:
    """No type noise in the help: typer writes each option's type beside it (`<bool>` on every flag, `<str>`,
    `<int>`, `<path>`), where the help texts say what a value is. A flag gets no value name; an option or argument
    that takes a value gets its name in capitals (METAVARS, else the option's last word)."""
    help_option = command.get_help_option(Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.metavar is not None:
            continue
        if isinstance(param, TyperOption) and (param.is_flag or param.count or param.secondary_opts):
            param.metavar = ""
            continue
        longest = max(param.opts, key=len).lstrip("-") if param.opts else (param.name or "value")
        param.metavar = METAVARS.get(longest, longest.rsplit("-", 1)[-1].rsplit("_", 1)[-1].upper())
        if isinstance(param, TyperArgument):  # its name is the value's: no type beside it
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010 - an instance's own, not the class's
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


def main(args: list[str] | None = None) -> None:
    """The command line: a mistake in it is one `error:` line (with where to look), never a box; exit code 2."""
    command = typer.main.get_command(app)
    plain_help(command)
    try:
        code = command.main(args=args, prog_name="is-telemetry", standalone_mode=False)
    except NoArgsIsHelpError as exc:
        typer.echo(exc.format_message(), err=True)
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # click's usage errors (an unknown option, a value that is not a number)
        ctx = exc.ctx if isinstance(exc, UsageError) else None
        where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {printable(exc.format_message())}{where}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
