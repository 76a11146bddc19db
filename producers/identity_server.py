"""The Identity Server producer: count entities in a TTS Identity Server database, send telemetry.

`is-telemetry produce --config tts.yml --database postgresql://... [--kafka host:port | --target URL] [--once]`

It reads The Things Stack's own configuration file (the `telemetry.*` and `console.ui.*.base-url` keys,
spelled as TTS spells them), counts entities with the Identity Server's SQL semantics
(`pkg/identityserver/telemetry.go`), builds the one `TelemetryMessage` and either publishes it on Kafka
(keyed by UID, with the collector's record headers) or POSTs it to the telemetry target exactly as TTS does.
See docs/identity-server-producer.md.
"""

from __future__ import annotations

import copy
import logging
import platform
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from is_telemetry import __version__
from is_telemetry.schema import (
    DEFAULT_UID,
    AccountsCount,
    ActiveEndDevices,
    EndDevicesCount,
    EntitiesCount,
    GatewaysCount,
    OSTelemetry,
    TelemetryMessage,
    Total,
    UsersCount,
)
from is_telemetry.uid import CONSOLE_BASE_URL_KEYS, DEFAULT_CONSOLE_BASE_URL, uid_from_config

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

log = logging.getLogger("producers.identity_server")

SOURCE = "identity-server"  # value of the `source` record header
DEFAULT_TARGET = "https://telemetry.thethingsstack.io/collect"
DEFAULT_INTERVAL = "24h"
HTTP_TIMEOUT_S = 10.0  # TTS's IS client timeout
DB_CONNECT_TIMEOUT_S = 10
KAFKA_SEND_TIMEOUT_S = 15.0
KAFKA_CONNECT_TIMEOUT_MS = 10_000  # first broker contact (kafka-python's default is 30 s)
ONCE_DEFAULT_MAX_RETRIES = 5

#: TTS defaults for the keys this producer reads (nested as in a TTS YAML config).
TTS_DEFAULTS: dict[str, Any] = {
    "telemetry": {
        "enable": True,
        "target": DEFAULT_TARGET,
        "uid-elements": [],
        "num-consumers": 1,
        "entity-count-telemetry": {"enable": True, "interval": DEFAULT_INTERVAL},
    },
    "console": {"ui": {k: {"base-url": DEFAULT_CONSOLE_BASE_URL} for k in CONSOLE_BASE_URL_KEYS}},
}


# --------------------------------------------------------------------------------------------- durations

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "\u00b5s": 1e-6,  # micro sign
    "\u03bcs": 1e-6,  # Greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+\.?\d*|\.\d+)([a-zA-Z\u00b5\u03bc]+)")


def parse_go_duration(text: str) -> float:
    """Parse a Go `time.ParseDuration` string ("24h", "30m", "1h30m", "1.5h", "10s", "300ms") into seconds.

    Like Go: an optional sign, then one or more decimal numbers each followed by a unit
    (ns, us/µs, ms, s, m, h); a bare "0" is zero. Anything else raises ValueError.
    """
    orig = text
    if not isinstance(text, str):
        raise ValueError(f"time: invalid duration {orig!r} (a Go duration string like 24h, 30m or 1h30m is required)")
    s = text.strip()
    sign = 1.0
    if s[:1] in ("+", "-"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _GO_PART.match(s, pos)
        if m is None:
            raise ValueError(f'time: invalid duration "{orig}"')
        number, unit = m.groups()
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(number) * _GO_UNITS[unit]
        pos = m.end()
    return sign * total


def format_seconds(seconds: float) -> str:
    """A short human duration: 0.5s, 12s, 1m30s, 24h."""
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{sec}s" if sec or not (h or m) else "")
    return out


# ------------------------------------------------------------------------------------------ configuration


def _expand_dotted(value: Any) -> Any:
    """`{"telemetry.enable": false}` -> `{"telemetry": {"enable": false}}` (at any depth); lists untouched."""
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        v = _expand_dotted(v)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        last = parts[-1]
        if isinstance(v, dict) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], v)
        else:
            node[last] = v
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        elif v is None and k in out:
            continue  # an empty YAML key (`enable:`) keeps the default, as viper does
        else:
            out[k] = copy.deepcopy(v)
    return out


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "t"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", "f", ""):
        return False
    raise ValueError(f"{key} must be true or false, not {value!r}")


def load_tts_config(path: str | Path) -> dict[str, Any]:
    """Read a The Things Stack YAML config file; keys TTS spells them, missing ones take TTS's defaults.

    Returns the whole file as nested dicts with `telemetry.*` and `console.ui.<x>.base-url` filled in
    (`TTS_DEFAULTS`), `telemetry.uid-elements` as a list of strings, `telemetry.enable` and
    `telemetry.entity-count-telemetry.enable` as booleans. Dotted keys (`telemetry.enable: false`)
    are accepted as well as nested maps. Other keys of the file (e.g. `is.database-uri`) are kept as is.
    """
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a TTS config must be a YAML map, not {type(data).__name__}")
    config = _merge(TTS_DEFAULTS, _expand_dotted(data))
    tel = config["telemetry"]
    tel["enable"] = _as_bool(tel.get("enable"), "telemetry.enable")
    ect = tel.get("entity-count-telemetry")
    if not isinstance(ect, dict):
        raise ValueError("telemetry.entity-count-telemetry must be a map")
    ect["enable"] = _as_bool(ect.get("enable"), "telemetry.entity-count-telemetry.enable")
    elements = tel.get("uid-elements") or []
    if isinstance(elements, str):  # viper/cast turns a string into a slice by whitespace
        elements = elements.split()
    if not isinstance(elements, list):
        raise ValueError(f"telemetry.uid-elements must be a list of strings, not {elements!r}")
    tel["uid-elements"] = [str(e) for e in elements]
    return config


@dataclass(frozen=True)
class TelemetryOptions:
    """What the producer needs from a TTS config."""

    enabled: bool
    disabled_reason: str  # empty when enabled
    target: str
    interval_s: float
    uid: str
    database_uri: str | None  # `is.database-uri` when the file sets it


def telemetry_options(config: Mapping[str, Any]) -> TelemetryOptions:
    """Extract and validate the producer's settings from `load_tts_config()`'s result."""
    tel = config.get("telemetry") or {}
    ect = tel.get("entity-count-telemetry") or {}
    raw_interval = ect.get("interval", DEFAULT_INTERVAL)
    if isinstance(raw_interval, bool) or not isinstance(raw_interval, str):
        raise ValueError(
            f"telemetry.entity-count-telemetry.interval must be a Go duration with a unit (24h, 30m, 1h30m), "
            f"not {raw_interval!r}"
        )
    interval = parse_go_duration(raw_interval)
    if interval <= 0:
        raise ValueError(f"telemetry.entity-count-telemetry.interval must be positive, not {raw_interval!r}")
    reason = ""
    if not tel.get("enable", True):
        reason = "telemetry.enable is false"
    elif not ect.get("enable", True):
        reason = "telemetry.entity-count-telemetry.enable is false"
    target = str(tel.get("target") or DEFAULT_TARGET)
    db = (config.get("is") or {}).get("database-uri") if isinstance(config.get("is"), Mapping) else None
    return TelemetryOptions(
        enabled=not reason,
        disabled_reason=reason,
        target=target,
        interval_s=interval,
        uid=uid_from_config(config),
        database_uri=str(db) if db else None,
    )


# ------------------------------------------------------------------------------------------ OS / version

_GOARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv8l": "arm64",
    "i386": "386",
    "i486": "386",
    "i586": "386",
    "i686": "386",
    "x86": "386",
    "armv6l": "arm",
    "armv7l": "arm",
    "arm": "arm",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loong64",
}


def goos() -> str:
    """GOOS-like name of this OS: linux, darwin, windows, freebsd, ..."""
    name = platform.system().lower()
    if name.startswith(("cygwin", "msys", "mingw")):
        return "windows"
    return name or sys.platform


def goarch() -> str:
    """GOARCH-like name of this machine: amd64, arm64, 386, arm, ..."""
    machine = platform.machine().lower()
    return _GOARCH.get(machine, machine)


def os_telemetry() -> OSTelemetry:
    """The message's `os` object. binary_version is this package's version; golang_version is "" (no Go
    runtime here; TTS's own senders put `go1.x.y` there, so an empty value also tells our producer apart)."""
    return OSTelemetry(operating_system=goos(), arch=goarch(), binary_version=__version__, golang_version="")


def user_agent() -> str:
    """`TheThingsStack/<version> (<os>/<arch>)` as TTS's sender spells it."""
    return f"TheThingsStack/{__version__} ({goos()}/{goarch()})"


# -------------------------------------------------------------------------------------------- counting

#: The Identity Server's queries (newer senders: activity from last_seen_at; soft-deleted rows excluded).
COUNT_QUERIES: dict[str, str] = {
    "applications": "SELECT COUNT(*) FROM applications WHERE deleted_at IS NULL",
    "end_devices": "SELECT COUNT(*) FROM end_devices",
    "gateways": "SELECT COUNT(*) FROM gateways WHERE deleted_at IS NULL",
    "organizations": "SELECT COUNT(*) FROM organizations WHERE deleted_at IS NULL",
    "users_admin": "SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND admin IS TRUE",
    "users_standard": "SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND admin IS FALSE",
    "active_total": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at IS NOT NULL",
    "active_last_day": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 DAY'",
    "active_last_week": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 WEEK'",
    "active_last_month": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 MONTH'",
}
GATEWAYS_BY_PLAN_QUERY = (
    "SELECT frequency_plan_id, COUNT(frequency_plan_id) FROM gateways WHERE deleted_at IS NULL "
    "GROUP BY frequency_plan_id ORDER BY frequency_plan_id"
)


def gateways_by_frequency_plan(groups: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    """TTS's map: each space-separated plan ID of a group gets the group's count (summed over groups).

    NULL and empty plan IDs are left out (TTS would emit an empty key for '' rows; the reference says
    they are not in the map).
    """
    out: dict[str, int] = {}
    for plan_ids, count in groups:
        if not plan_ids or not count:
            continue
        for plan in plan_ids.split(" "):
            if plan:
                out[plan] = out.get(plan, 0) + int(count)
    return dict(sorted(out.items()))


def count_entities(conn: psycopg.Connection[Any]) -> EntitiesCount:
    """Count the IS database's entities (one read-only snapshot) into the message's `entities_count`."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            n: dict[str, int] = {}
            for name, sql in COUNT_QUERIES.items():
                cur.execute(sql)
                row = cur.fetchone()
                n[name] = int(row[0]) if row else 0
            cur.execute(GATEWAYS_BY_PLAN_QUERY)
            plans = gateways_by_frequency_plan((r[0], int(r[1])) for r in cur.fetchall())
    return EntitiesCount(
        gateways=GatewaysCount(total=n["gateways"], gateways_by_frequency_plan_id=plans),
        end_devices=EndDevicesCount(
            total=n["end_devices"],
            activate_end_devices=ActiveEndDevices(
                total=n["active_total"],
                last_day=n["active_last_day"],
                last_week=n["active_last_week"],
                last_month=n["active_last_month"],
            ),
        ),
        applications=Total(total=n["applications"]),
        accounts=AccountsCount(
            users=UsersCount(standard=n["users_standard"], admin=n["users_admin"]),
            organizations=Total(total=n["organizations"]),
        ),
    )


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a PostgreSQL DSN (URI or key=value), never the password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is reported by connect() itself
        return "<unparsable database URI>"
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    port = str(d.get("port") or 5432)
    return f"{host}:{port}/{d.get('dbname') or d.get('user') or ''}"


class DatabaseUnreachable(Exception):
    """The database could not be reached or the connection broke (retried)."""


class DatabaseSchemaError(Exception):
    """The database answered but is not an Identity Server database (not retried)."""


def count_entities_at(dsn: str, connect_timeout_s: int = DB_CONNECT_TIMEOUT_S) -> EntitiesCount:
    """Connect, count, disconnect. Raises DatabaseUnreachable or DatabaseSchemaError."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=connect_timeout_s, application_name="is-telemetry-produce") as conn:
            return count_entities(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(_one_line(exc)) from exc
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:
        raise DatabaseSchemaError(_one_line(exc)) from exc
    except psycopg.Error as exc:  # anything else from the server: treat as transient
        raise DatabaseUnreachable(_one_line(exc)) from exc


def build_message(uid: str, entities: EntitiesCount, os_info: OSTelemetry | None = None) -> TelemetryMessage:
    """An Identity Server message: cli null, entities_count set."""
    return TelemetryMessage(uid=uid, os=os_info or os_telemetry(), cli=None, entities_count=entities)


def summarize(entities: EntitiesCount) -> str:
    """One-line counts summary for the progress line."""
    g, ed, acc = entities.gateways, entities.end_devices, entities.accounts
    a = ed.activate_end_devices
    plans = " ".join(f"{k}={v}" for k, v in g.gateways_by_frequency_plan_id.items())
    return (
        f"gateways={g.total}" + (f" [{plans}]" if plans else "")
        + f" end_devices={ed.total} active={a.total} (day {a.last_day}, week {a.last_week}, month {a.last_month})"
        + f" applications={entities.applications.total}"
        + f" users={acc.users.standard}+{acc.users.admin} admin organizations={acc.organizations.total}"
    )


# ---------------------------------------------------------------------------------------------- senders


class SendFailed(Exception):
    """A send attempt failed; `retry` says whether trying again can help."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class HttpSender:
    """POST the body to the telemetry target as TTS does (no path appended)."""

    def __init__(self, target: str, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        import httpx

        self.target = target
        self.description = target
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=True)

    def send(self, uid: str, body: bytes) -> str:
        import httpx

        try:
            resp = self._client.post(
                self.target,
                content=body,
                headers={"Content-Type": "application/json", "User-Agent": user_agent()},
            )
        except httpx.HTTPError as exc:
            raise SendFailed(f"target unreachable at {self.target}: {_one_line(exc) or type(exc).__name__}") from exc
        status = resp.status_code
        if 200 <= status < 300:
            return f"HTTP {status}"
        detail = _one_line(resp.text)[:200]
        if status >= 500 or status in (408, 425, 429):
            raise SendFailed(f"target at {self.target} answered HTTP {status}: {detail}")
        raise SendFailed(f"target at {self.target} refused the message with HTTP {status}: {detail}", retry=False)

    def close(self) -> None:
        self._client.close()


class KafkaSender:
    """Publish on Kafka like the collector: key = UID, acks=all, record headers, timestamp = received_at_ms."""

    def __init__(self, bootstrap_servers: str, topic: str, connect_timeout_ms: int = KAFKA_CONNECT_TIMEOUT_MS) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.connect_timeout_ms = connect_timeout_ms
        self.topic = topic
        self.description = f"kafka {bootstrap_servers} topic {topic}"
        self._producer: Any = None
        self._topic_checked = False

    def _connect(self) -> Any:
        if self._producer is None:
            from kafka.errors import KafkaError

            from is_telemetry.kafka import make_producer

            try:
                self._producer = make_producer(
                    self.bootstrap_servers, acks="all", client_id="is-telemetry-produce",
                    bootstrap_timeout_ms=self.connect_timeout_ms,
                )
            except (KafkaError, OSError, ValueError) as exc:
                raise SendFailed(f"kafka unreachable at {self.bootstrap_servers}: {_one_line(exc) or type(exc).__name__}") from exc
        if not self._topic_checked:
            self._ensure_topic()
        return self._producer

    def _ensure_topic(self) -> None:
        """Create the pipeline's topics if missing (best effort: a producer may lack the rights)."""
        from is_telemetry.config import KafkaSettings, Settings, load_settings
        from is_telemetry.kafka import ensure_topics

        try:
            settings = load_settings(kafka={"bootstrap_servers": self.bootstrap_servers, "raw_topic": self.topic})
        except Exception:  # noqa: BLE001 - the pipeline's config is optional here
            settings = Settings(kafka=KafkaSettings(bootstrap_servers=self.bootstrap_servers, raw_topic=self.topic))
        try:
            ensure_topics(settings, timeout_s=5.0)
        except Exception as exc:  # noqa: BLE001
            log.warning("could not check/create topic %s on %s (%s); sending anyway", self.topic,
                        self.bootstrap_servers, _one_line(exc))
        self._topic_checked = True

    def send(self, uid: str, body: bytes) -> str:
        from kafka.errors import KafkaError

        from is_telemetry.kafka import headers

        producer = self._connect()
        received_at_ms = int(time.time() * 1000)
        try:
            future = producer.send(
                self.topic,
                value=body,
                key=uid.encode("ascii"),
                headers=headers(received_at_ms=received_at_ms, source=SOURCE, user_agent=user_agent(),
                                body_length=len(body)),
                timestamp_ms=received_at_ms,
            )
            meta = future.get(timeout=KAFKA_SEND_TIMEOUT_S)
        except (KafkaError, OSError) as exc:
            self._drop_producer()
            raise SendFailed(f"kafka unreachable at {self.bootstrap_servers}: {_one_line(exc) or type(exc).__name__}") from exc
        return f"partition {meta.partition} offset {meta.offset}"

    def _drop_producer(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p.close(timeout=1)
            except Exception:  # noqa: BLE001
                pass

    def close(self) -> None:
        p, self._producer = self._producer, None
        if p is not None:
            try:
                p.flush(timeout=10)
            finally:
                p.close(timeout=5)


# ---------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff: initial, 2x, 4x, ... capped at maximum. max_retries None = keep trying."""

    initial_s: float = 1.0
    maximum_s: float = 60.0
    max_retries: int | None = None

    def delay(self, failures: int) -> float:
        return min(self.maximum_s, self.initial_s * (2 ** max(0, failures - 1)))


class Stopped(Exception):
    """A stop was requested (Ctrl-C / SIGTERM)."""


class GaveUp(Exception):
    """The retries were exhausted, or the failure cannot be retried."""


T = TypeVar("T")


def with_retries(
    what: Callable[[], T],
    policy: RetryPolicy,
    stop: threading.Event,
    retriable: Callable[[BaseException], str | None],
) -> T:
    """Run `what` until it succeeds. `retriable(exc)` returns the failure line for a retriable error, else
    None (the error propagates). Each failure is logged with the wait; raises GaveUp or Stopped."""
    failures = 0
    while True:
        if stop.is_set():
            raise Stopped()
        try:
            return what()
        except Exception as exc:  # noqa: BLE001
            line = retriable(exc)
            if line is None:
                raise
            failures += 1
            if policy.max_retries is not None and failures > policy.max_retries:
                tries = failures
                log.error("%s; giving up after %d %s", line, tries, "try" if tries == 1 else "tries")
                raise GaveUp(line) from exc
            wait = policy.delay(failures)
            left = "" if policy.max_retries is None else f" (retry {failures} of {policy.max_retries})"
            log.warning("%s; retrying in %s%s", line, format_seconds(wait), left)
            if stop.wait(wait):
                raise Stopped() from exc


# ---------------------------------------------------------------------------------------------- running


@dataclass
class ProduceOptions:
    database: str
    uid: str
    interval_s: float
    once: bool
    sender: Any  # HttpSender | KafkaSender
    retry: RetryPolicy
    echo: Callable[[str], None] = print  # progress lines (stdout)
    echo_err: Callable[[str], None] = lambda line: print(line, file=sys.stderr)  # final error lines


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def produce_one(opts: ProduceOptions, stop: threading.Event) -> TelemetryMessage:
    """Count (with retries), build, send (with retries); print the progress line. Raises GaveUp/Stopped/
    DatabaseSchemaError."""
    where = describe_dsn(opts.database)

    def db_failure(exc: BaseException) -> str | None:
        return f"database unreachable at {where}: {exc}" if isinstance(exc, DatabaseUnreachable) else None

    entities = with_retries(lambda: count_entities_at(opts.database), opts.retry, stop, db_failure)
    message = build_message(opts.uid, entities)
    body = message.to_json()

    def send_failure(exc: BaseException) -> str | None:
        if isinstance(exc, SendFailed):
            if not exc.retry:
                log.error("%s; not retrying (the receiver rejected this message)", exc)
                raise GaveUp(str(exc)) from exc
            return str(exc)
        return None

    started = time.monotonic()
    result = with_retries(lambda: opts.sender.send(opts.uid, body), opts.retry, stop, send_failure)
    ms = (time.monotonic() - started) * 1000
    opts.echo(
        f"{_now_iso()} sent uid={opts.uid[:12]}… {summarize(entities)} ({len(body)} bytes) -> "
        f"{opts.sender.description}: ok, {result} ({ms:.0f} ms)"
    )
    return message


def run(opts: ProduceOptions, stop: threading.Event | None = None) -> int:
    """The producer loop. Returns the process exit code: 0 sent (or stopped between sends), 1 a message
    could not be sent (gave up or stopped while retrying), 2 the database is not an IS database."""
    stop = stop or threading.Event()
    try:
        while True:
            due = time.monotonic() + opts.interval_s
            try:
                produce_one(opts, stop)
            except GaveUp as exc:
                if opts.once:
                    opts.echo_err(f"{_now_iso()} error: message NOT sent: {exc}")
                    return 1
                opts.echo_err(f"{_now_iso()} error: this interval's message was NOT sent ({exc}); "
                          f"next try at the next interval")
            except Stopped:
                opts.echo_err(f"{_now_iso()} stopped before the message was sent: it was NOT sent")
                return 1
            except DatabaseSchemaError as exc:
                opts.echo_err(f"{_now_iso()} error: the database at {describe_dsn(opts.database)} does not look like "
                          f"a The Things Stack Identity Server database: {exc}")
                return 2
            if opts.once:
                return 0
            wait = max(0.0, due - time.monotonic())
            next_at = datetime.fromtimestamp(time.time() + wait, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            opts.echo(f"{_now_iso()} next send at {next_at} (every {format_seconds(opts.interval_s)})")
            if stop.wait(wait):
                opts.echo(f"{_now_iso()} stopped")
                return 0
    finally:
        try:
            opts.sender.close()
        except Exception as exc:  # noqa: BLE001
            log.warning("closing %s failed: %s", opts.sender.description, _one_line(exc))


def install_stop_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGINT/SIGTERM set `stop` (a second Ctrl-C interrupts at once). Returns a function restoring them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.info("stop requested (%s); finishing", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


def _one_line(exc: BaseException | str) -> str:
    return " ".join(str(exc).split())


# -------------------------------------------------------------------------------------------------- CLI


def command(
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="The Things Stack config file (tts.yml): telemetry.* and console.ui.*.base-url; absent = TTS defaults")] = None,
    database: Annotated[Optional[str], typer.Option("--database", envvar="TTN_LW_IS_DATABASE_URI", help="Identity Server PostgreSQL URI (default: is.database-uri of --config)")] = None,
    kafka: Annotated[Optional[str], typer.Option("--kafka", help="Publish to Kafka (bootstrap host:port,...) instead of POSTing to the target")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="POST to this URL (default: telemetry.target)")] = None,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Kafka topic (default: kafka.raw_topic, tts-telemetry-raw)")] = None,
    once: Annotated[bool, typer.Option("--once", help="Send one message and exit (for cron); exit 1 if it could not be sent")] = False,
    interval: Annotated[Optional[str], typer.Option("--interval", help="Override telemetry.entity-count-telemetry.interval (Go duration: 24h, 30m, 10s)")] = None,
    max_retries: Annotated[Optional[int], typer.Option("--max-retries", help=f"Retries per message before giving up (default: {ONCE_DEFAULT_MAX_RETRIES} with --once, unlimited otherwise; <0 = unlimited)")] = None,
    retry_initial_seconds: Annotated[float, typer.Option("--retry-initial-seconds", help="First backoff wait; doubles per failure")] = 1.0,
    retry_max_seconds: Annotated[float, typer.Option("--retry-max-seconds", help="Longest backoff wait")] = 60.0,
    log_level: Annotated[str, typer.Option("--log-level", help="debug|info|warning|error")] = "info",
) -> None:
    """Count an Identity Server's entities and send TTS telemetry (Kafka or HTTP), once or every interval."""
    _setup_logging(log_level)
    try:
        tts = load_tts_config(config) if config is not None else _merge(TTS_DEFAULTS, {})
        if interval is not None:
            tts["telemetry"]["entity-count-telemetry"]["interval"] = interval
        options = telemetry_options(tts)
    except Exception as exc:  # noqa: BLE001 - bad config ends with one clear line
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
        typer.echo("error: give --database postgresql://... (or set is.database-uri in --config, "
                   "or TTN_LW_IS_DATABASE_URI)", err=True)
        raise typer.Exit(2)

    if max_retries is None:
        retries: int | None = ONCE_DEFAULT_MAX_RETRIES if once else None
    else:
        retries = None if max_retries < 0 else max_retries
    policy = RetryPolicy(initial_s=retry_initial_seconds, maximum_s=retry_max_seconds, max_retries=retries)

    if kafka:
        if topic is None:
            from is_telemetry.config import KafkaSettings

            topic = KafkaSettings().raw_topic
        sender: Any = KafkaSender(kafka, topic)
    else:
        sender = HttpSender(target or options.target)

    if options.uid == DEFAULT_UID:
        log.warning("the UID is TTS's default (console base URLs left at %s): every such deployment shares it; "
                    "set telemetry.uid-elements or console.ui.*.base-url", DEFAULT_CONSOLE_BASE_URL)
    mode = "once" if once else f"every {format_seconds(options.interval_s)}, first send now"
    typer.echo(f"{_now_iso()} producing uid={options.uid[:12]}… from {describe_dsn(dsn)} to {sender.description} ({mode})")

    stop = threading.Event()
    restore = install_stop_handlers(stop)
    try:
        code = run(
            ProduceOptions(database=dsn, uid=options.uid, interval_s=options.interval_s, once=once,
                           sender=sender, retry=policy, echo=lambda s: typer.echo(s),
                           echo_err=lambda s: typer.echo(s, err=True)),
            stop,
        )
    finally:
        restore()
    if code:
        raise typer.Exit(code)


def _setup_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level.upper(), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(level.upper())
    if level.lower() != "debug":
        # kafka-python logs every refused connection itself; our own line says it once, with the retry.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)


if __name__ == "__main__":  # python -m producers.identity_server ... (same options as `is-telemetry produce`)
    typer.run(command)
