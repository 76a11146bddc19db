"""Configuration: defaults < YAML file < environment (IS_TELEMETRY_*) < command-line flags.

Every key, its default and its environment variable are listed in docs/configuration.md
(generated from this module: `is-telemetry config --docs`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from core.errors import ConfigError
from core.schema import PLAUSIBILITY_LIMIT

ENV_PREFIX = "IS_TELEMETRY_"


def env_name(section: str, key: str) -> str:
    """The environment variable of a setting, e.g. env_name("kafka", "raw_topic") -> IS_TELEMETRY_KAFKA__RAW_TOPIC."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


CONFIG_ENV = "IS_TELEMETRY_CONFIG"
DEFAULT_CONFIG_FILE = "is-telemetry.yml"


DSN_EXAMPLES = "http://user:password@clickhouse-host:8123/default or chdb:///absolute/path/to/data/chdb"
KAFKA_EXAMPLE = "kafka-1:9092,kafka-2:9092"
_HOSTNAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$")


def check_clickhouse_dsn(dsn: str) -> str:
    """`dsn` if it is a ClickHouse address this tool speaks (empty = the embedded chDB); else ValueError saying what
    is wrong and what a right one looks like. Nothing is contacted."""
    dsn = dsn.strip()
    if not dsn:
        return dsn
    try:
        _check_dsn(dsn)
    except ValueError as exc:
        raise ValueError(str(exc).replace(repr(dsn), repr(_redacted(dsn)))) from None
    return dsn


def _redacted(dsn: str) -> str:
    """The DSN with its password, if any, replaced by ***."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)([^@/]*)(@.*)$", dsn)
    return f"{m.group(1)}***{m.group(3)}" if m and m.group(2) else dsn


def _check_dsn(dsn: str) -> None:
    if "://" not in dsn:
        guess = f"http://{dsn}/default" if re.fullmatch(r"[^/\s]+:\d+", dsn) else DSN_EXAMPLES
        raise ValueError(
            f"{dsn!r} has no scheme: a ClickHouse DSN is a URL, e.g. {guess} "
            "(or chdb:///absolute/path for the embedded engine)"
        )
    url = urlparse(dsn)
    scheme = url.scheme.lower()
    if scheme == "chdb":
        if url.netloc or not url.path.startswith("/"):
            relative = (url.netloc + url.path).strip("/") or "data/chdb"
            raise ValueError(
                f"{dsn!r}: chDB needs an absolute path, chdb:// then the path from / (three slashes), "
                f"e.g. chdb://{Path(relative).resolve()}"
            )
        return
    if scheme in ("clickhouse", "tcp", "native", "clickhouses"):
        host = url.hostname or "clickhouse-host"
        raise ValueError(
            f"{dsn!r}: ClickHouse's native protocol ({scheme}://, port 9000) is not supported; use its "
            f"HTTP interface, e.g. http://{host}:8123{url.path or '/default'}"
        )
    if scheme not in ("http", "https"):
        raise ValueError(f"{dsn!r}: unsupported scheme {scheme}://; use {DSN_EXAMPLES}")
    try:
        port = url.port
    except ValueError:
        raise ValueError(
            f"{dsn!r}: the port is not a number from 1 to 65535 (ClickHouse's HTTP port is 8123, 8443 with TLS)"
        ) from None
    if not url.hostname:
        raise ValueError(f"{dsn!r}: no host name; e.g. http://clickhouse-host:8123/default")
    if port == 0:
        raise ValueError(f"{dsn!r}: port 0 cannot be reached (ClickHouse's HTTP port is 8123, 8443 with TLS)")
    if "/" in url.path.strip("/"):
        raise ValueError(f"{dsn!r}: the path is the database name, one word (e.g. /default), not {url.path!r}")


def check_bootstrap_servers(servers: str) -> str:
    """`servers` if it is a list of host[:port] (empty = the embedded broker); else ValueError with an example."""
    servers = servers.strip()
    if not servers:
        return servers
    for item in servers.split(","):
        item = item.strip()
        if not item:
            raise ValueError(
                f"{servers!r}: an empty entry between commas; write host:port,host:port, e.g. {KAFKA_EXAMPLE}"
            )
        if "://" in item:
            bare = item.split("://", 1)[1].rstrip("/")
            raise ValueError(
                f"{item!r}: Kafka bootstrap servers are host:port without a scheme, e.g. {bare or KAFKA_EXAMPLE}"
            )
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, "9092"
        if host.startswith("[") and host.endswith("]"):
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                raise ValueError(f"{item!r}: {host} is not an IPv6 address") from None
        elif ":" in host or not _HOSTNAME.match(host):
            raise ValueError(f"{item!r} is not host:port (e.g. {KAFKA_EXAMPLE}; IPv6 as [::1]:9092)")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(
                f"{item!r}: the port must be a number from 1 to 65535 (Kafka's is usually 9092), e.g. {KAFKA_EXAMPLE}"
            )
    return servers


def check_host(host: str) -> str:
    """A listen address: an IP address or a host name, without a port or scheme."""
    if host == "" or host == "localhost":
        return host
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    if "://" in host or ":" in host or not _HOSTNAME.match(host):
        bare = host.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0].strip("[]") or "127.0.0.1"
        example = bare if bare == "0.0.0.0" else f"{bare}, or 0.0.0.0 for every interface"
        raise ValueError(
            f"{host!r} is not an address to listen on: give the address alone (e.g. {example}) and the "
            "port with its own setting"
        )
    return host


_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,200}$")  # Kafka's legal characters; room left for a generation suffix


def check_topic(name: str) -> str:
    """A Kafka topic name: letters, digits, '.', '_', '-' (Kafka's own rule), not '.' or '..', at most 200."""
    if not _TOPIC.match(name) or name in (".", ".."):
        raise ValueError(
            f"{name!r} is not a Kafka topic name: use letters, digits, '.', '_' and '-', at most 200 (e.g. "
            "tts-telemetry-raw)"
        )
    return name


_INSTANCE_ID = re.compile(r"^[A-Za-z0-9._-]+$")  # Kafka's legal characters for a group.instance.id
INSTANCE_ID_MAX = 249
HOSTNAME_PLACEHOLDER = "{hostname}"


def check_group_instance_id(template: str) -> str:
    """A static-membership id: Kafka's legal characters, and `{hostname}` (replaced per host)."""
    if template and not _INSTANCE_ID.match(template.replace(HOSTNAME_PLACEHOLDER, "h")):
        raise ValueError(
            f"{template!r} is not a group instance id: use letters, digits, '.', '_', '-' and {HOSTNAME_PLACEHOLDER} "
            f"(e.g. worker-{HOSTNAME_PLACEHOLDER})"
        )
    return template


def group_instance_id(template: str, hostname: str) -> str | None:
    """The static-membership id of this process (`{hostname}` replaced, characters outside Kafka's allowed set of
    the host name turned into '-', cut to Kafka's 249), or None for dynamic membership."""
    if not template:
        return None
    host = re.sub(r"[^A-Za-z0-9._-]", "-", hostname) or "host"
    return template.replace(HOSTNAME_PLACEHOLDER, host)[:INSTANCE_ID_MAX]


def check_networks(items: list[str]) -> list[str]:
    """Each item as a canonical network (an address alone is its /32 or /128; host bits are cleared); else
    ValueError naming the item and what a right one looks like. Names are not resolved."""
    out = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_network(item.strip().strip("[]"), strict=False)))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network; write addresses, not names, "
                "e.g. 172.30.64.2, 10.0.0.0/8 or 2001:db8::/32"
            ) from None
    return out


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "", description="Kafka bootstrap servers, host:port,...; empty = the embedded broker"
    )
    raw_topic: str = Field("tts-telemetry-raw", description="Topic the collector and producers write, keyed by UID")
    deadletter_topic: str = Field("tts-telemetry-deadletter", description="Rejected messages with their reason")
    snapshots_topic: str = Field(
        "tts-telemetry-snapshots", description="Validated snapshots for a separate sink process"
    )
    partitions: int = Field(8, ge=1, description="Partitions of every topic created by this tool")
    replication_factor: int = Field(1, ge=1, description="Replication factor of topics created by this tool")
    session_timeout_s: float = Field(10.0, description="Consumer group session timeout (seconds)")

    _servers = field_validator("bootstrap_servers")(classmethod(lambda cls, v: check_bootstrap_servers(v)))
    _topics = field_validator("raw_topic", "deadletter_topic", "snapshots_topic")(
        classmethod(lambda cls, v: check_topic(v))
    )


class ClickHouseSettings(_Section):
    dsn: str = Field(
        "", description="chdb:///abs/path or http(s)://user:pass@host:8123/db; empty = chdb under data_dir"
    )
    snapshot_ttl_days: int = Field(
        396,
        ge=0,
        description="Delete per-UID snapshot rows and CLI reports after N days (0 = keep; 396: 13 months, docs/privacy.md)",
    )
    retry_s: float = Field(
        30.0,
        gt=0,
        description="How long a write retries while ClickHouse is unavailable before its partitions are paused and rewound (and the longest a stop or rebalance waits for it)",
    )
    rejection_body_ttl_days: int = Field(
        90,
        ge=0,
        description="Empty the body and message of rejected records after N days; the rows stay, so rejected counts stay exact (0 = keep)",
    )
    uid_state_ttl_days: int = Field(
        396,
        ge=0,
        description="Forget a UID's analyst state (uid_activity: first and last day, days seen) N days after its last day (0 = keep)",
    )

    _dsn = field_validator("dsn")(classmethod(lambda cls, v: check_clickhouse_dsn(v)))


class BrokerSettings(_Section):
    host: str = Field("127.0.0.1", description="Embedded broker listen address")
    port: int = Field(19092, ge=0, le=65535, description="Embedded broker port")
    session_timeout_s: float = Field(
        2.0,
        ge=1.0,
        le=60.0,
        description="Consumer-group session timeout of the worker `up` runs on the embedded broker: Tansu completes a join after about half of it, so a restarted worker consumes again that much sooner (its heartbeats go 4 times as often; a worker that misses them all is taken out of its group and joins again)",
    )
    max_records: int = Field(
        10_000,
        ge=100,
        description="Records the embedded broker may hold in the current generation of the raw topic: past it, `up` moves the stack to a new generation and deletes the old one once it is stored (Tansu keeps every record in memory, and costs more CPU per request the more it holds)",
    )

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))


_MAX_CONNECTIONS_DOC = (
    "Open connections per process; past it idle and slow ones are closed to make room, then new ones get 503 "
    "(also capped below the file-descriptor limit)"
)


class _HttpEdge(_Section):
    """Bounds every HTTP server of this project applies before a request reaches the application."""

    header_timeout_s: float = Field(
        10.0, gt=0, description="A request's line and headers must arrive within this (else 408 and close)"
    )
    max_header_bytes: int = Field(
        16 * 1024,
        ge=1024,
        description="Larger request line + headers, or a longer run of chunked framing (chunk-size lines, extensions, trailers), are refused with 431",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="A request (line, headers and body, read by the application or not) must arrive within this of its first byte; else 408, or the connection is closed if it was answered already",
    )
    max_connections: int = Field(1024, ge=1, description=_MAX_CONNECTIONS_DOC)


class CollectorSettings(_HttpEdge):
    host: str = Field("127.0.0.1", description="Collector listen address")
    port: int = Field(8480, ge=0, le=65535, description="Collector port (POST /collect)")
    max_connections: int = Field(4096, ge=1, description=_MAX_CONNECTIONS_DOC)
    max_body_bytes: int = Field(64 * 1024, ge=1, description="Larger bodies are refused with 413")
    publish_timeout_s: float = Field(
        8.0, description="Kafka acknowledgement wait before answering 503 (below TTS's 10 s client timeout)"
    )
    batch_linger_ms: float = Field(
        5.0,
        ge=0,
        description="Bodies of one partition that arrive within this share one Kafka record (0 = one record per body)",
    )
    batch_max_bodies: int = Field(500, ge=1, le=65535, description="Most bodies in one Kafka record")
    batch_max_bytes: int = Field(
        512 * 1024, ge=1024, description="Most bytes in one Kafka record (below the brokers' message.max.bytes)"
    )
    max_new_uids_per_client_per_day: int = Field(
        200,
        ge=1,
        description="New UIDs one client (an IPv4 address, an IPv6 /64, all of loopback) may send per UTC day and collector process (a body without a string uid is one each time); the excess is stored and rejected as 'rate_limited'",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses/networks of proxies whose X-Forwarded-For names the client (its right-most untrusted hop); from anyone else the header is ignored",
    )
    unlimited_clients: list[str] = Field(
        default_factory=list,
        description="Addresses/networks of clients that are not limited (neither requests, body bytes nor new UIDs), matched on the client's own address",
    )
    max_tracked_clients: int = Field(
        100_000,
        ge=1,
        description="Clients whose UIDs are remembered per UTC day and process; past it, new clients' UIDs are rate-limited until the day ends",
    )
    max_tracked_uids: int = Field(
        1_000_000,
        ge=1,
        description="UIDs remembered per UTC day and process, all clients together (8 bytes each); past it, new UIDs are rate-limited until the day ends",
    )
    client_requests_per_s: float = Field(
        1.0,
        gt=0,
        description="Requests to /collect one client (an IPv4 address, an IPv6 /64, all of loopback) may make per second, sustained: its request bucket's refill; past its bucket, answered 429 and not stored",
    )
    client_request_burst: int = Field(
        2000, ge=1, description="Requests to /collect one client may make at once: the size of its request bucket"
    )
    client_body_bytes_per_s: int = Field(
        2048,
        ge=1,
        description="Body bytes one client may send to /collect per second, sustained: its byte bucket's refill; past its bucket, answered 429 and not stored",
    )
    client_body_bytes_burst: int = Field(
        8 * 1024 * 1024,
        ge=1,
        description="Body bytes one client may send at once: the size of its byte bucket (at least max_body_bytes)",
    )
    max_request_clients: int = Field(
        100_000,
        ge=1,
        description="Clients whose request and byte buckets are held at once per process (a bucket is dropped once it is full again); past it, requests of other clients are answered 429",
    )

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))
    _networks = field_validator("trusted_proxies", "unlimited_clients")(classmethod(lambda cls, v: check_networks(v)))

    @model_validator(mode="after")
    def _a_largest_body_fits_a_byte_bucket(self) -> CollectorSettings:
        if self.client_body_bytes_burst < self.max_body_bytes:
            raise ValueError(
                f"client_body_bytes_burst ({self.client_body_bytes_burst}) is below max_body_bytes "
                f"({self.max_body_bytes}): a body of the largest size allowed could never be accepted; raise "
                f"client_body_bytes_burst to at least {self.max_body_bytes}"
            )
        return self


class ApiSettings(_HttpEdge):
    host: str = Field(
        "127.0.0.1", description="HTTP API / dashboard listen address (beyond loopback only with a token)"
    )
    port: int = Field(8481, ge=0, le=65535, description="HTTP API / dashboard port")
    token: str = Field(
        "", description="Bearer token required by /api/sql (required when the API listens beyond loopback)"
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted in the Host header besides loopback ones, when no token is set (DNS-rebinding guard)",
    )
    clickhouse_dsn: str = Field(
        "",
        description="DSN of a read-only ClickHouse user for analysts' queries; empty = clickhouse.dsn in read-only sessions",
    )
    max_connections: int = Field(256, ge=1, description=_MAX_CONNECTIONS_DOC)
    max_sql_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="POST /api/sql bodies larger than this are refused with 413 (checked while reading)",
    )
    query_timeout_s: float = Field(
        30.0, gt=0, description="An analyst query running longer is stopped by ClickHouse (400 TIMEOUT_EXCEEDED)"
    )
    query_max_memory_bytes: int = Field(
        1_000_000_000, ge=10_000_000, description="Memory one analyst query may use (ClickHouse max_memory_usage)"
    )
    query_max_result_rows: int = Field(100_000, ge=1, description="Rows one analyst query may return")
    query_max_result_bytes: int = Field(
        32 * 1024 * 1024, ge=1024, description="Uncompressed bytes one analyst query may return"
    )
    query_max_threads: int = Field(
        1, ge=1, description="ClickHouse threads per analyst query (the rest of the cores stay with ingestion)"
    )
    query_concurrency: int = Field(
        4,
        ge=1,
        description="Analyst queries (SQL and dashboard) running at once per process; others wait up to query_queue_s",
    )
    query_queue_s: float = Field(5.0, ge=0, description="How long a query waits for a free slot before 503")

    _host = field_validator("host")(classmethod(lambda cls, v: check_host(v)))
    _dsn = field_validator("clickhouse_dsn")(classmethod(lambda cls, v: check_clickhouse_dsn(v)))


class ProcessorSettings(_Section):
    group_id: str = Field(
        "is-telemetry-processors",
        description="Consumer group of the processors (a new one replays the topic from offset 0)",
    )
    sink_group_id: str = Field("is-telemetry-sink", description="Consumer group of a separate sink process")
    batch_seconds: float = Field(1.0, gt=0, description="Longest a body waits in an unfinished batch (seconds)")
    batch_idle_seconds: float = Field(
        0.05,
        gt=0,
        description="A batch is handled once no record came for this long (seconds): the end of a backlog, or a trickle, is written at once",
    )
    fetch_bytes_per_partition: int = Field(
        8 * 1024 * 1024,
        ge=64 * 1024,
        description="Most bytes fetched from one partition in one fetch request (a backlog is read in fewer round trips; faust's default, 1 MiB, is 20 records of 100 bodies)",
    )
    stop_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGTERM/SIGINT, longest wait for the batch in flight and the commits; then the process exits (what was not stored is read again)",
    )
    plausibility_limit: int = Field(
        PLAUSIBILITY_LIMIT, ge=0, description="A count above this rejects the message as 'implausible'"
    )
    state_days: int = Field(
        3,
        ge=1,
        description="Days of per-UID state (roll-up, dedup) kept in memory; a record for an older day recomputes that day and partition from ClickHouse",
    )
    web_port: int = Field(0, ge=0, le=65535, description="faust's own web port (0 = off)")
    group_instance_id: str = Field(
        "",
        description="Static consumer-group membership (Kafka's group.instance.id): a restarted worker gets its partitions back at once, without a rebalance; `{hostname}` is replaced by the host's name (one id per process, e.g. `worker-{hostname}` in compose); empty = dynamic membership",
    )

    _instance = field_validator("group_instance_id")(classmethod(lambda cls, v: check_group_instance_id(v)))


class SinkSettings(_Section):
    batch_size: int = Field(
        5000,
        ge=1,
        le=1_000_000,
        description="Most bodies handled and written per batch, by a processors worker (each body of a many-bodies record counts) and by `is-telemetry sink` (each row of a snapshots-topic record counts)",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Field(Path("data"), description="Embedded state: chDB data, logs")
    kafka: KafkaSettings = KafkaSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    broker: BrokerSettings = BrokerSettings()
    collector: CollectorSettings = CollectorSettings()
    api: ApiSettings = ApiSettings()
    processors: ProcessorSettings = ProcessorSettings()
    sink: SinkSettings = SinkSettings()

    @property
    def embedded_kafka(self) -> bool:
        return not self.kafka.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers or f"{self.broker.host}:{self.broker.port}"

    @property
    def clickhouse_dsn(self) -> str:
        return self.clickhouse.dsn or f"chdb://{(self.data_dir / 'chdb').resolve()}"

    @property
    def analyst_dsn(self) -> str:
        """Where analysts' queries go: a dedicated read-only user if configured, else the store itself."""
        return self.api.clickhouse_dsn or self.clickhouse_dsn


def client_host(bind: str) -> str:
    """The address a client on this machine uses to reach a server listening on `bind` (any address: loopback)."""
    return "127.0.0.1" if bind in ("0.0.0.0", "", "::") else bind


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_api_exposure(settings: Settings) -> None:
    """The API must not listen beyond loopback without a token: raise ConfigError saying what to do."""
    if not is_loopback(settings.api.host) and not settings.api.token:
        raise ConfigError(
            f"the API would listen on {settings.api.host or 'every address'} without a token: anyone who can reach it "
            "could query ClickHouse. Set api.token (IS_TELEMETRY_API__TOKEN=<random secret>) or keep api.host on 127.0.0.1"
        )


def describe_validation_error(exc: ValidationError) -> str:
    """Every wrong setting in one line (describe_validation_errors, joined)."""
    return "; ".join(describe_validation_errors(exc))


def dotted(loc: tuple[Any, ...]) -> str:
    """A setting's key from its location in the settings: collector.port."""
    return ".".join(map(str, loc))


def describe_validation_errors(exc: ValidationError, name: Callable[[tuple[Any, ...]], str] = dotted) -> list[str]:
    """One line per wrong setting: its key (`name` of its location), the value given and what is wrong (pydantic's
    noise left out)."""
    lines = []
    for e in exc.errors(include_url=False):
        key = name(tuple(e["loc"]))
        msg = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown setting{_known_keys(e['loc'])}")
        elif e["type"] == "value_error":
            lines.append(f"{key}: {msg}")
        else:
            value = e.get("input")
            shown = f" = {value!r}" if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
            hint = " (a TCP port: 1 to 65535, e.g. 8490)" if key.endswith("port") else ""
            lines.append(f"{key}{shown}: {msg[:1].lower() + msg[1:]}{hint}")
    return lines


def _known_keys(loc: tuple[Any, ...]) -> str:
    model: Any = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        model = field.annotation if field is not None else None
        if model is None:
            return ""
    if not hasattr(model, "model_fields"):
        return ""
    return f" (known here: {', '.join(model.model_fields)}; see docs/configuration.md)"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build settings; `overrides` are flags as nested dicts (None values are ignored)."""
    path = (
        config_file
        or os.environ.get(CONFIG_ENV)
        or (DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).exists() else None)
    )
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"config file {path} does not exist")

    class _Settings(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if path is not None:
                sources.append(YamlConfigSettingsSource(settings_cls))
            return tuple(sources)

    return _Settings(**_drop_none(overrides))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if v:
                out[k] = v
        elif v is not None:
            out[k] = v
    return out


def reference_markdown() -> str:
    """The configuration reference table (docs/configuration.md)."""
    rows = ["| key | environment variable | default | meaning |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                walk(ann, f"{prefix}{name}.")
                continue
            key = f"{prefix}{name}"
            env = ENV_PREFIX + key.replace(".", "__").upper()
            default = field.get_default(call_default_factory=True)
            rows.append(f"| `{key}` | `{env}` | `{default!s}` | {field.description or ''} |")

    walk(Settings, "")
    return "\n".join(rows) + "\n"
