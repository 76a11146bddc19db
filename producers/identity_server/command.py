"""`is-telemetry produce` / `python -m producers.identity_server`: the options, the checks, and the run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from core.logsetup import setup_logging
from core.retry import RetryPolicy
from core.schema import DEFAULT_UID
from core.uid import DEFAULT_CONSOLE_BASE_URL
from producers.identity_server.counting import describe_dsn
from producers.identity_server.durations import format_seconds
from producers.identity_server.logs import log
from producers.identity_server.running import ProduceOptions, install_stop_handlers, now_iso, run
from producers.identity_server.senders import HttpSender, KafkaSender
from producers.identity_server.tts_config import load_tts_config, telemetry_options, tts_defaults

ONCE_DEFAULT_MAX_RETRIES = 5
LOG_LEVEL = "info"  # the default: its progress lines are worth seeing; the libraries' only at debug


def command(
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config",
            "-c",
            help="The Things Stack config file (tts.yml): telemetry.* and console.ui.*.base-url; absent = TTS defaults",
        ),
    ] = None,
    database: Annotated[
        Optional[str],
        typer.Option(
            "--database",
            envvar="TTN_LW_IS_DATABASE_URI",
            help="Identity Server PostgreSQL URI (default: is.database-uri of --config)",
        ),
    ] = None,
    kafka: Annotated[
        Optional[str],
        typer.Option("--kafka", help="Publish to Kafka (bootstrap host:port,...) instead of POSTing to the target"),
    ] = None,
    target: Annotated[
        Optional[str], typer.Option("--target", help="POST to this URL (default: telemetry.target)")
    ] = None,
    topic: Annotated[
        Optional[str], typer.Option("--topic", help="Kafka topic (default: kafka.raw_topic, tts-telemetry-raw)")
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Send one message and exit (for cron); exit 1 if it could not be sent")
    ] = False,
    interval: Annotated[
        Optional[str],
        typer.Option(
            "--interval", help="Override telemetry.entity-count-telemetry.interval (Go duration: 24h, 30m, 10s)"
        ),
    ] = None,
    max_retries: Annotated[
        Optional[int],
        typer.Option(
            "--max-retries",
            help=f"Retries per message before giving up (default: {ONCE_DEFAULT_MAX_RETRIES} with --once, unlimited otherwise; <0 = unlimited)",
        ),
    ] = None,
    retry_initial_seconds: Annotated[
        float, typer.Option("--retry-initial-seconds", help="First backoff wait; doubles per failure")
    ] = 1.0,
    retry_max_seconds: Annotated[float, typer.Option("--retry-max-seconds", help="Longest backoff wait")] = 60.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug|info|warning|error")] = LOG_LEVEL,
) -> None:
    """Count an Identity Server's entities and send TTS telemetry (Kafka or HTTP), once or every interval."""
    setup_logging(log_level, default=LOG_LEVEL)
    try:
        tts = load_tts_config(config) if config is not None else tts_defaults()
        if interval is not None:
            tts["telemetry"]["entity-count-telemetry"]["interval"] = interval
        options = telemetry_options(tts)
    except Exception as exc:
        typer.echo(f"error: bad The Things Stack config{f' {config}' if config else ''}: {exc}", err=True)
        raise typer.Exit(2) from exc
    if retry_initial_seconds <= 0 or retry_max_seconds <= 0:
        typer.echo("error: --retry-initial-seconds and --retry-max-seconds must be positive", err=True)
        raise typer.Exit(2)

    if not options.enabled:
        typer.echo(f"telemetry disabled ({options.disabled_reason} in {config}): nothing sent")
        return

    dsn = database or options.database_uri
    if not dsn:
        typer.echo(
            "error: give --database postgresql://... (or set is.database-uri in --config, or TTN_LW_IS_DATABASE_URI)",
            err=True,
        )
        raise typer.Exit(2)

    if max_retries is None:
        retries: int | None = ONCE_DEFAULT_MAX_RETRIES if once else None
    else:
        retries = None if max_retries < 0 else max_retries
    policy = RetryPolicy(initial_s=retry_initial_seconds, maximum_s=retry_max_seconds, max_retries=retries)

    if kafka:
        if topic is None:
            from core.config import KafkaSettings

            topic = KafkaSettings().raw_topic
        sender: Any = KafkaSender(kafka, topic)
    else:
        sender = HttpSender(target or options.target)

    if options.uid == DEFAULT_UID:
        log.warning(
            "the UID is TTS's default (console base URLs left at %s): every such deployment shares it; "
            "set telemetry.uid-elements or console.ui.*.base-url",
            DEFAULT_CONSOLE_BASE_URL,
        )
    mode = "once" if once else f"every {format_seconds(options.interval_s)}, first send now"
    typer.echo(
        f"{now_iso()} producing uid={options.uid[:12]}… from {describe_dsn(dsn)} to {sender.description} ({mode})"
    )

    stop = threading.Event()
    restore = install_stop_handlers(stop)
    try:
        code = run(
            ProduceOptions(
                database=dsn,
                uid=options.uid,
                interval_s=options.interval_s,
                once=once,
                sender=sender,
                retry=policy,
                echo=lambda s: typer.echo(s),
                echo_err=lambda s: typer.echo(s, err=True),
            ),
            stop,
        )
    finally:
        restore()
    if code:
        raise typer.Exit(code)
