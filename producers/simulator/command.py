"""`is-telemetry simulate` / `python -m producers.simulator`: generate, send, and write the ground truths."""

from __future__ import annotations

import sys
import time
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from producers.simulator.deliveries import (
    DEFAULT_CLI_INSTALLS,
    DEFAULT_DAYS,
    DEFAULT_DEPLOYMENTS,
    DEFAULT_SEED,
    Delivery,
)
from producers.simulator.generation import generate, utc_today
from producers.simulator.senders import send_to_collector, send_to_kafka
from producers.simulator.truth import ground_truth, write_ground_truth


class _ProgressLine:
    """A live line on stderr: done/total and rate, at most ~8 redraws per second."""

    def __init__(self, label: str, stream: Any = None) -> None:
        self.label, self.stream = label, stream or sys.stderr
        self.started = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.12 and done < total:
            return
        self.last = now
        rate = done / (now - self.started) if now > self.started else 0.0
        self.stream.write(f"\r{self.label} {done}/{total} ({rate:,.0f}/s)   ")
        self.stream.flush()

    def end(self) -> None:
        self.stream.write("\n")
        self.stream.flush()


def command(
    deployments: Annotated[
        int, typer.Option("--deployments", min=0, help="Identity Server deployments")
    ] = DEFAULT_DEPLOYMENTS,
    cli_installs: Annotated[int, typer.Option("--cli-installs", min=0, help="CLI installs")] = DEFAULT_CLI_INSTALLS,
    days: Annotated[int, typer.Option("--days", min=1, help="Days of telemetry, ending --end-day")] = DEFAULT_DAYS,
    seed: Annotated[int, typer.Option("--seed", help="Same seed + flags = same deliveries")] = DEFAULT_SEED,
    end_day: Annotated[
        Optional[str], typer.Option("--end-day", help="Last day, YYYY-MM-DD (UTC); default today (only up to now)")
    ] = None,
    kafka: Annotated[
        Optional[str],
        typer.Option(
            "--kafka",
            help="Produce straight to Kafka at host:port,... (receive times as generated; default: the running stack's "
            "Kafka, recorded in the data directory, else kafka.bootstrap_servers)",
        ),
    ] = None,
    collector: Annotated[
        Optional[str],
        typer.Option("--collector", help="POST to the collector URL instead (it stamps its own receive time)"),
    ] = None,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Kafka topic (default: kafka.raw_topic)")] = None,
    ground_truth_file: Annotated[
        Optional[Path], typer.Option("--ground-truth", help="Write the expected aggregates of what was sent (JSON)")
    ] = None,
    resend_rate: Annotated[
        float, typer.Option("--resend-rate", min=0.0, max=1.0, help="Exact re-sends later the same day, per message")
    ] = 0.05,
    changed_rate: Annotated[
        float,
        typer.Option("--changed-rate", min=0.0, max=1.0, help="A later, different body the same day, per message"),
    ] = 0.03,
    missed_rate: Annotated[
        float, typer.Option("--missed-rate", min=0.0, max=1.0, help="Deployment-days without a message")
    ] = 0.05,
    malformed_rate: Annotated[
        float, typer.Option("--malformed-rate", min=0.0, max=1.0, help="Messages replaced by a malformed body")
    ] = 0.01,
    inconsistent_rate: Annotated[
        float,
        typer.Option("--inconsistent-rate", min=0.0, max=1.0, help="IS messages with inconsistent active windows"),
    ] = 0.02,
    default_uid_rate: Annotated[
        float, typer.Option("--default-uid-rate", min=0.0, max=1.0, help="Deployments on the shared default-URL UID")
    ] = 0.04,
    jump_rate: Annotated[
        float,
        typer.Option(
            "--jump-rate", min=0.0, max=1.0, help="IS messages whose end-device figures jump 20-200 fold for a day"
        ),
    ] = 0.001,
    analyst_truth_file: Annotated[
        Optional[Path],
        typer.Option(
            "--analyst-ground-truth",
            help="Write the expected analyst views (producers/fleet_truth.py) of what was sent (JSON)",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, help="Parallel HTTP connections (--collector)")
    ] = 8,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Generate (and write --ground-truth) without sending")
    ] = False,
    config: Annotated[
        Optional[Path], typer.Option("--config", "-c", help="YAML config file (for the default Kafka and topic)")
    ] = None,
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir",
            show_default=False,
            help="Where a running `up` records its Kafka (data_dir/stack.json; default ./data, from data_dir)",
        ),
    ] = None,
) -> None:
    """Simulate a fleet of TTS deployments and CLI installs; send to Kafka or the collector, write the ground truth."""
    if kafka and collector:
        typer.echo("error: give --kafka or --collector, not both", err=True)
        raise typer.Exit(2)
    try:
        sim = generate(
            deployments,
            cli_installs,
            days,
            seed,
            end_day,
            resend_rate=resend_rate,
            changed_rate=changed_rate,
            missed_rate=missed_rate,
            malformed_rate=malformed_rate,
            inconsistent_rate=inconsistent_rate,
            default_uid_rate=default_uid_rate,
            jump_rate=jump_rate,
        )
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    st = sim.stats
    typer.echo(
        f"generated {len(sim.deliveries)} deliveries over {days} day(s) {sim.days[0]}..{sim.days[-1]}: "
        f"{st.get('is_messages', 0)} IS, {st.get('cli_messages', 0)} CLI, {st.get('resend', 0)} re-sends, "
        f"{st.get('changed', 0)} changed, {st.get('malformed', 0)} malformed, {st.get('missed', 0)} missed days",
        err=True,
    )

    def finish(sent: list[Delivery]) -> None:
        if ground_truth_file is not None:
            write_ground_truth(ground_truth(sent), ground_truth_file)
            typer.echo(f"ground truth of {len(sent)} deliveries written to {ground_truth_file}", err=True)
        if analyst_truth_file is not None:
            from producers.fleet_truth import analyst_ground_truth

            write_ground_truth(analyst_ground_truth(sent), analyst_truth_file)
            typer.echo(f"analyst ground truth of {len(sent)} deliveries written to {analyst_truth_file}", err=True)

    if dry_run:
        finish(sim.deliveries)
        return

    if collector:
        if days > 1 or (end_day and date.fromisoformat(end_day) != utc_today()):
            typer.echo(
                "note: over HTTP the collector stamps its own time: every day's bodies arrive as today's "
                "(ground truth uses our clock at send time)",
                err=True,
            )
        line = _ProgressLine(f"POST {collector}")
        try:
            result = send_to_collector(
                sim.deliveries, collector, concurrency=concurrency, progress=line, raise_on_failure=False
            )
        finally:
            line.end()
    else:
        from core.config import load_settings
        from core.generations import generation, number_of
        from core.kafka import ensure_topics
        from core.statefile import read_state

        try:
            settings = load_settings(config, data_dir=data_dir, kafka={"bootstrap_servers": kafka})
            stack = read_state(settings.data_dir.resolve()) if kafka is None else None
            if stack is not None and isinstance(stack.get("kafka"), str):  # the running stack's, wherever it listens
                # and the generation of the raw topic it reads now, if it says one (core/generations.py)
                n = number_of(settings, stack["raw_topic"]) if isinstance(stack.get("raw_topic"), str) else None
                g = generation(settings, n or 0)
                topics = {"raw_topic": g.raw, "deadletter_topic": g.deadletter}
                settings = load_settings(
                    config, data_dir=data_dir, kafka={"bootstrap_servers": stack["kafka"], **topics}
                )
        except Exception as exc:
            typer.echo(f"error: bad configuration: {exc}", err=True)
            raise typer.Exit(2) from exc
        topic = topic or settings.kafka.raw_topic
        try:
            ensure_topics(settings, timeout_s=15.0)
        except Exception as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc
        line = _ProgressLine(f"kafka {settings.bootstrap_servers} {topic}")
        try:
            result = send_to_kafka(
                sim.deliveries, settings.bootstrap_servers, topic, progress=line, raise_on_failure=False
            )
        finally:
            line.end()
    typer.echo(result.summary(), err=True)
    for e in result.errors[:5]:
        typer.echo(f"  {e}", err=True)
    finish(result.sent_deliveries)
    if result.interrupted:
        raise typer.Exit(130)
    if not result.ok:
        raise typer.Exit(1)
