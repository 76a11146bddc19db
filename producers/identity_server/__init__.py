"""The Identity Server producer: count entities in a TTS Identity Server database, send telemetry.

`is-telemetry produce --config tts.yml --database postgresql://... [--kafka host:port | --target URL] [--once]`

It reads The Things Stack's own configuration file (the `telemetry.*` and `console.ui.*.base-url` keys,
spelled as TTS spells them), counts entities with the Identity Server's SQL semantics
(`pkg/identityserver/telemetry.go`), builds the one `TelemetryMessage` and either publishes it on Kafka
(keyed by UID, with the collector's record headers) or POSTs it to the telemetry target exactly as TTS does.
See docs/identity-server-producer.md.

One module per idea:
- `tts_config`: TTS's configuration file and defaults -> `TelemetryOptions`;
- `durations`: Go durations ("24h", "1h30m") and the short human form of seconds;
- `host`: this host's `os` part of the message and the User-Agent;
- `counting`: the Identity Server's counting SQL, and the message built from the counts;
- `senders`: `HttpSender` (POST as TTS does) and `KafkaSender` (publish as the collector does);
- `running`: the loop (once or every interval), its exit codes, SIGINT/SIGTERM;
- `command`: the typer command (`is-telemetry produce`, `python -m producers.identity_server`);
- `logs`: the producer's logger (`producers.identity_server`); its set-up is every command's (core/logsetup.py).

Retries are the project's one helper (core/retry.py, core/errors.py: `GaveUp`, `Stopped`).

The names below are the producer's API (the CLI, the tests and the docs use them from here).
"""

from core.errors import GaveUp, Stopped
from core.retry import RetryPolicy, with_retries
from producers.identity_server.command import ONCE_DEFAULT_MAX_RETRIES, command
from producers.identity_server.counting import (
    COUNT_QUERIES,
    DB_CONNECT_TIMEOUT_S,
    GATEWAYS_BY_PLAN_QUERY,
    DatabaseSchemaError,
    DatabaseUnreachable,
    build_message,
    count_entities,
    count_entities_at,
    describe_dsn,
    gateways_by_frequency_plan,
    summarize,
)
from producers.identity_server.durations import format_seconds, parse_go_duration
from producers.identity_server.host import goarch, goos, os_telemetry, user_agent
from producers.identity_server.logs import log
from producers.identity_server.running import ProduceOptions, install_stop_handlers, produce_one, run
from producers.identity_server.senders import (
    HTTP_TIMEOUT_S,
    KAFKA_CONNECT_TIMEOUT_MS,
    KAFKA_SEND_TIMEOUT_S,
    SOURCE,
    HttpSender,
    KafkaSender,
    SendFailed,
)
from producers.identity_server.tts_config import (
    DEFAULT_INTERVAL,
    DEFAULT_TARGET,
    TTS_DEFAULTS,
    TelemetryOptions,
    load_tts_config,
    telemetry_options,
    tts_defaults,
)

__all__ = [
    "COUNT_QUERIES",
    "DB_CONNECT_TIMEOUT_S",
    "DEFAULT_INTERVAL",
    "DEFAULT_TARGET",
    "GATEWAYS_BY_PLAN_QUERY",
    "HTTP_TIMEOUT_S",
    "KAFKA_CONNECT_TIMEOUT_MS",
    "KAFKA_SEND_TIMEOUT_S",
    "ONCE_DEFAULT_MAX_RETRIES",
    "SOURCE",
    "TTS_DEFAULTS",
    "DatabaseSchemaError",
    "DatabaseUnreachable",
    "GaveUp",
    "HttpSender",
    "KafkaSender",
    "ProduceOptions",
    "RetryPolicy",
    "SendFailed",
    "Stopped",
    "TelemetryOptions",
    "build_message",
    "command",
    "count_entities",
    "count_entities_at",
    "describe_dsn",
    "format_seconds",
    "gateways_by_frequency_plan",
    "goarch",
    "goos",
    "install_stop_handlers",
    "load_tts_config",
    "log",
    "os_telemetry",
    "parse_go_duration",
    "produce_one",
    "run",
    "summarize",
    "telemetry_options",
    "tts_defaults",
    "user_agent",
    "with_retries",
]
