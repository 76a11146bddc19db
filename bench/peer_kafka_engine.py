"""A peer with the worker's output: ClickHouse's own Kafka table engine inside chDB, every step in SQL.

The store is the project's (every migration applied: `snapshots`, `rejections`, `rollup_partitions`, the views over
them and the analysts' materialized and refreshable views), so what the dashboard reads is there as the worker
leaves it. Into it, a chain of materialized views:

    peer_kq (Kafka, RawBLOB: one row a Kafka record)
      -> peer_bodies   (Null) the bodies: a many-bodies record split into its frames (core/envelope.py), its
                              `rate_limited` mark, a frame that cannot be read making the record one `bad_batch`
      -> peer_reads    (Null) each read of a body's JSON the next step makes, once (see `_reads_once`)
      -> peer_checked  (Null) validated (the reason code, or '') and the snapshot row's columns extracted
      -> rejections           the rejected bodies, with their reason codes
      -> snapshots            the valid ones, less exact re-sends of the snapshot a UID already has that day (the
                              worker keeps the first of identical bodies: its receive time and position); only
                              bodies in their UID's partition (the worker re-keys the others; the bench has none)
           -> peer_latest     (day, uid, partition, version, body hash) of what was written: the stored side of the
                              re-send rule, read within each partition's state window (processors.state_days)
      -> peer_touched         the (day, partition) pairs written to, from `snapshots` and `rejections`, with when
    peer_rollup_refresh (a refreshable view, every second) -> rollup_partitions: each (day, partition) written to
                              in the last 5 s recomputed from `snapshots` FINAL and `rejections` FINAL: the same
                              figures as the worker's incremental roll-up

The Kafka table and its view are created last: the engine reads as soon as a view is attached to it, and a block
that finds the views below missing is lost, yet committed (a first version lost half its rows now and then so). A
view reads the block that triggers it once (a second read, an IN subquery over the same block, made ClickHouse log
"Cannot clone ReadFromStorage plan step"), and the roll-up reads only what is committed, every second (a roll-up
triggered by the write was the first version; whether it sees the write's own rows was not settled).

Validation follows processors/validate.py and the message definition (core/schema.py: the UID patterns,
the count fields, which of them may be null, read from the pydantic model): the same reason codes, in the same
precedence; the messages are shorter. Where SQL cannot follow pydantic (a key given twice in one object: ClickHouse
reads the first, pydantic the last; NaN or Infinity in a field the schema does not know; Unicode digits and spaces
in a version), a body may be judged otherwise: none of these is in the bench's input, and the bench checks that
the stored tables equal the worker's. Not done: the worker's dead-letter and re-key records (Kafka writes). A record
older than its partition's state window is written whatever it repeats, as the worker writes a late record.

librdkafka's session timeout is set to 10 s through a server config file (with its 45 s default it waits ~25 s for
partitions on the embedded broker). Blocks of 200 records (RECORDS_PER_BLOCK) measured best.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from core.schema import CLI_UID_PATTERN, DEFAULT_UID, IS_UID_PATTERN, EntitiesCount, OSTelemetry

REPLACEMENT = "'\\xEF\\xBF\\xBD'"  # U+FFFD, as Python's decode(errors="replace") writes it
WHITESPACE = "' \\t\\n\\r\\x0B\\x0C'"  # what str.strip() removes, in ASCII


def _path(*keys: str) -> str:
    return ", ".join(f"'{k}'" for k in keys)


def _schema_nodes(
    model: type[BaseModel], prefix: tuple[str, ...]
) -> tuple[list[tuple[str, ...]], list[tuple[tuple[str, ...], bool]], list[tuple[str, ...]]]:
    """The entities_count part of the schema: (object paths, (count path, may be null), per-plan map paths)."""
    objects: list[tuple[str, ...]] = []
    counts: list[tuple[tuple[str, ...], bool]] = []
    maps: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        path, annotation = (*prefix, name), field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            objects.append(path)
            sub = _schema_nodes(annotation, path)
            objects, counts, maps = objects + sub[0], counts + sub[1], maps + sub[2]
        elif typing.get_origin(annotation) is dict:
            maps.append(path)
        else:
            counts.append((path, type(None) in typing.get_args(annotation)))
    return objects, counts, maps


EC = ("entities_count",)
EC_OBJECTS, EC_COUNTS, EC_MAPS = _schema_nodes(EntitiesCount, EC)
OS_FIELDS = list(OSTelemetry.model_fields)
INTEGER = "('Int64', 'UInt64')"


def _big(raw: str) -> str:
    """A JSON integer beyond 64 bits: simdjson hands it to ClickHouse as a string (its raw text quoted), while the
    body holds it unquoted."""
    digits = f"substring({raw}, 2, length({raw}) - 2)"
    return (
        f"(match({raw}, '^\"-?[0-9]{{19,}}\"$') AND "
        f"(position(b, concat(':', {digits})) > 0 OR position(b, concat(': ', {digits})) > 0))"
    )


def _count_checks(path: tuple[str, ...], nullable: bool) -> dict[str, str]:
    """One count's problems, from two reads of the body: its JSON type and its raw text ('' when absent, the same
    expressions as the column's value, which ClickHouse computes once)."""
    p = _path(*path)
    t, r = f"JSONType(b, {p})", f"JSONExtractRaw(b, {p})"
    allowed = f"{t} IN {INTEGER} OR {t} = 'Double'" + (f" OR {r} = 'null'" if nullable else "")
    big = f"({t} = 'String' AND {_big(r)})"
    return {
        "wrong_type": f"({r} != '' AND NOT ({allowed}) AND NOT {big})",
        "fractional": f"({t} = 'Double')",
        "negative": f"(({t} = 'Int64' AND startsWith({r}, '-')) OR ({big} AND startsWith({r}, '\"-')))",
        "out_of_range": f"({big} AND NOT startsWith({r}, '\"-'))",
        "implausible": f"({t} IN {INTEGER} AND toUInt64OrZero({r}) > {{limit}})",
    }


def _map_checks(path: tuple[str, ...]) -> dict[str, str]:
    p = _path(*path)
    t, r = f"JSONType(b, {p}, k)", f"JSONExtractRaw(b, {p}, k)"
    keys = f"JSONExtractKeys(b, {p})"
    big = f"({t} = 'String' AND {_big(r)})"
    return {
        "wrong_type": f"arrayExists(k -> NOT ({t} IN {INTEGER} OR {t} = 'Double') AND NOT {big}, {keys})",
        "fractional": f"arrayExists(k -> {t} = 'Double', {keys})",
        "negative": f"arrayExists(k -> ({t} = 'Int64' AND startsWith({r}, '-')) OR ({big} AND startsWith({r}, '\"-')), {keys})",
        "out_of_range": f"arrayExists(k -> {big} AND NOT startsWith({r}, '\"-'), {keys})",
        "implausible": f"arrayExists(k -> {t} IN {INTEGER} AND toUInt64OrZero({r}) > {{limit}}, {keys})",
    }


def reason_sql(limit: int) -> str:
    """The reason code of body `b` ('' if valid), in processors/validate.py's precedence."""
    checks: dict[str, list[str]] = {
        k: [] for k in ("wrong_type", "fractional", "negative", "out_of_range", "implausible")
    }
    for path, nullable in EC_COUNTS:
        for k, v in _count_checks(path, nullable).items():
            checks[k].append(v)
    for path in EC_MAPS:
        for k, v in _map_checks(path).items():
            checks[k].append(v)
    checks["wrong_type"] += [
        "(JSONHas(b, 'uid') AND JSONType(b, 'uid') != 'String')",
        "(JSONType(b, 'os') NOT IN ('Null', 'Object'))",
        *(f"(JSONHas(b, 'os', '{k}') AND JSONType(b, 'os', '{k}') != 'String')" for k in OS_FIELDS),
        "(JSONType(b, 'cli') NOT IN ('Null', 'Object'))",
        "(JSONType(b, 'entities_count') NOT IN ('Null', 'Object'))",
        *(f"(JSONHas(b, {_path(*p)}) AND JSONType(b, {_path(*p)}) != 'Object')" for p in EC_OBJECTS + EC_MAPS),
    ]
    any_of = {k: " OR ".join(v).replace("{limit}", str(int(limit))) for k, v in checks.items()}
    uid = "JSONExtractString(b, 'uid')"
    return (
        "multiIf(NOT isValidJSON(b), 'not_json', JSONType(b) != 'Object', 'not_object', "
        "NOT JSONHas(b, 'uid'), 'missing_field', "
        f"{any_of['wrong_type']}, 'wrong_type', {any_of['fractional']}, 'fractional', "
        f"{any_of['negative']}, 'negative', {any_of['out_of_range']}, 'out_of_range', "
        "(JSONType(b, 'cli') = 'Object') = (JSONType(b, 'entities_count') = 'Object'), 'kind_ambiguous', "
        f"if(JSONType(b, 'cli') = 'Object', NOT match({uid}, '{CLI_UID_PATTERN}'), NOT match({uid}, '{IS_UID_PATTERN}')), "
        "'bad_uid', "
        f"{any_of['implausible']}, 'implausible', '')"
    )


def python_replace_decode(x: str) -> str:
    """`x` (bytes) as Python's `bytes.decode("utf-8", "replace")` reads it: each maximal ill-formed subsequence one
    U+FFFD (ClickHouse's toValidUTF8 makes one of a whole run), by a fold over the bytes for the rare invalid ones."""

    def start(out: str, byte: str) -> str:
        states = [
            (f"{byte} < 0x80", f"(concat({out}, char({byte})), 0, 0, 0, '')"),
            (f"{byte} BETWEEN 0xC2 AND 0xDF", f"({out}, 1, 0x80, 0xBF, char({byte}))"),
            (f"{byte} = 0xE0", f"({out}, 2, 0xA0, 0xBF, char({byte}))"),
            (f"{byte} BETWEEN 0xE1 AND 0xEC OR {byte} IN (0xEE, 0xEF)", f"({out}, 2, 0x80, 0xBF, char({byte}))"),
            (f"{byte} = 0xED", f"({out}, 2, 0x80, 0x9F, char({byte}))"),
            (f"{byte} = 0xF0", f"({out}, 3, 0x90, 0xBF, char({byte}))"),
            (f"{byte} BETWEEN 0xF1 AND 0xF3", f"({out}, 3, 0x80, 0xBF, char({byte}))"),
            (f"{byte} = 0xF4", f"({out}, 3, 0x80, 0x8F, char({byte}))"),
        ]
        cases = ", ".join(f"{cond}, {state}" for cond, state in states)
        return f"CAST(multiIf({cases}, (concat({out}, {REPLACEMENT}), 0, 0, 0, '')), 'Tuple(String, UInt8, UInt8, UInt8, String)')"

    step = (
        "if(acc.2 = 0, " + start("acc.1", "x") + ", if(x BETWEEN acc.3 AND acc.4, if(acc.2 = 1, "
        "CAST((concat(acc.1, acc.5, char(x)), 0, 0, 0, ''), 'Tuple(String, UInt8, UInt8, UInt8, String)'), "
        "CAST((acc.1, acc.2 - 1, 0x80, 0xBF, concat(acc.5, char(x))), 'Tuple(String, UInt8, UInt8, UInt8, String)')), "
        + start(f"concat(acc.1, {REPLACEMENT})", "x")
        + "))"
    )
    folded = (
        f"arrayFold((acc, x) -> {step}, arrayMap(i -> reinterpretAsUInt8(substring({x}, i, 1)), range(1, length({x}) + 1)), "
        "CAST(('', 0, 0, 0, ''), 'Tuple(String, UInt8, UInt8, UInt8, String)'))"
    )
    return f"if(isValidUTF8({x}), {x}, concat(tupleElement({folded} AS f, 1), if(tupleElement(f, 2) > 0, {REPLACEMENT}, '')))"


_READ = re.compile(r"(?:JSON\w+|isValidJSON)\(b(?:, '[^']*')*\)")


def _reads_once(select: str) -> tuple[str, str]:
    """`select` (SELECT ... FROM (subquery)) split in two stages: (the reads of the body `b` it makes, each once, as
    columns of `source`'s rows; `select` on those columns, from `peer_reads`). Within one expression ClickHouse
    shares a repeated read, but its short-circuit evaluation of if/multiIf/and/or computes a branch's reads again for
    the rows that reach it: 4 times the CPU here. A subquery does not stop it (its expressions are merged into the
    query's) and a setting in the view's query is not applied when the view runs: a table between the two does."""
    head, _, source = select.rpartition(" FROM (")  # the source: a subquery
    source = "(" + source
    names: dict[str, str] = {}

    def name(m: re.Match[str]) -> str:
        return names.setdefault(m.group(0), f"read_{len(names)}")

    head = _READ.sub(name, head)
    reads = ", ".join(f"{read} AS {column}" for read, column in names.items())
    return f"SELECT *, {reads} FROM {source}", f"{head} FROM peer_reads"


#: processors/snapshot.py `major_minor` of the SQL expression {version}: '3.32.1 (...)' -> '3.32', else 'unknown'
MAJOR_MINOR = (
    "if(empty(extractGroups({version}, '^[ \\t\\n\\r\\x0B\\x0C\\x1C-\\x1F]*v?([0-9]+)\\\\.([0-9]+)') AS g), 'unknown', "
    "concat(replaceRegexpOne(g[1], '^0+([0-9])', '\\\\1'), '.', replaceRegexpOne(g[2], '^0+([0-9])', '\\\\1')))"
)


def _header(name: str) -> str:
    return f"arrayElement(_headers.value, indexOf(_headers.name, '{name}'))"


_FRAME_OK = (
    "isValidJSON(l) AND JSONType(l) = 'Object' AND JSONType(l, 'received_at_ms') IN ('Int64', 'UInt64') AND "
    "if(JSONHas(l, 'body'), JSONType(l, 'body') = 'String', JSONType(l, 'body_base64') = 'String' AND "
    "match(JSONExtractString(l, 'body_base64'), '^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$'))"
)

CHECKED_COLUMNS = (
    "topic String, partition UInt32, offset UInt64, idx UInt32, received_at_ms Int64, reason String, "
    "day Date, uid String, kind String, received_at DateTime64(3, 'UTC'), version UInt128, default_uid Bool, "
    "flags Array(String), operating_system String, arch String, binary_version String, version_major_minor String, "
    "golang_version String, gateways UInt64, gateways_by_frequency_plan Map(String, UInt64), end_devices UInt64, "
    "active_end_devices UInt64, active_last_day UInt64, active_last_week UInt64, active_last_month UInt64, "
    "applications UInt64, users_standard UInt64, users_admin UInt64, users_total Nullable(UInt64), "
    "organizations UInt64, cli String, body String, body_hash UInt64, home UInt32"
)


#: Kafka records per block through the views (each block is flushed after 250 ms at most): 200 records of 100
#: bodies. The views cost much per block (the re-send lookup, each touched day recomputed): 40,000 bodies took 269 us
#: of CPU a body in blocks of 20 records, 110-153 in 50-100, 88 in 200 and 135 in one block of all (2026-12-07).
RECORDS_PER_BLOCK = 200


def pipeline_sql(
    bootstrap: str,
    topic: str,
    group: str,
    partitions: int,
    limit: int,
    state_days: int,
    records_per_block: int = RECORDS_PER_BLOCK,
) -> list[str]:
    """The peer's tables and materialized views, to run after the project's migrations."""
    recent = "touched_at >= now64(3, 'UTC') - INTERVAL 5 SECOND"  # each touch recomputed by the refreshes of 5 s

    def ec(*keys: str) -> str:  # the raw text the validation read: one read of the body a count
        return f"if(is_is, toUInt64OrZero(JSONExtractRaw(b, {_path(*EC, *keys)})), 0)"

    day, week, month = (ec("end_devices", "activate_end_devices", w) for w in ("last_day", "last_week", "last_month"))
    active, total = ec("end_devices", "activate_end_devices", "total"), ec("end_devices", "total")
    flags = (
        f"arrayFilter(f -> f != '', [if({day} > {week}, 'last_day>last_week', ''), "
        f"if({week} > {month}, 'last_week>last_month', ''), if({month} > {active}, 'last_month>active_total', ''), "
        f"if({active} > {total}, 'active_total>end_devices', '')])"
    )
    users_total = _path(*EC, "accounts", "users", "total")
    rollup_sums = ", ".join(
        f"sum({c}) AS {c}"
        for c in (
            "gateways",
            "end_devices",
            "active_end_devices",
            "active_last_day",
            "active_last_week",
            "active_last_month",
            "applications",
            "users_standard",
            "users_admin",
            "organizations",
        )
    )
    reads, checked = _reads_once(
        "SELECT topic, partition, offset, idx, "
        f"received_at_ms, multiIf(bad_batch, 'bad_batch', rate_limited, 'rate_limited', {reason_sql(limit)}) AS reason, "
        "toDate(received_at) AS day, JSONExtractString(b, 'uid') AS uid, "
        "if(is_is, 'is', 'cli') AS kind, "
        "fromUnixTimestamp64Milli(received_at_ms, 'UTC') AS received_at, "
        "bitShiftLeft(toUInt128(received_at_ms), 64) + bitShiftLeft(toUInt128(offset), 16) + idx AS version, "
        f"is_is AND uid = '{DEFAULT_UID}' AS default_uid, if(is_is, {flags}, []) AS flags, "
        "JSONExtractString(b, 'os', 'operating_system') AS operating_system, JSONExtractString(b, 'os', 'arch') AS arch, "
        "JSONExtractString(b, 'os', 'binary_version') AS binary_version, "
        f"{MAJOR_MINOR.format(version='binary_version')} AS version_major_minor, "
        f"trim(BOTH {WHITESPACE} FROM JSONExtractString(b, 'os', 'golang_version')) AS golang_version, "
        f"{ec('gateways', 'total')} AS gateways, "
        f"if(is_is, JSONExtract(b, {_path(*EC, 'gateways', 'gateways_by_frequency_plan_id')}, 'Map(String, UInt64)'), "
        "map()) AS gateways_by_frequency_plan, "
        f"{total} AS end_devices, {active} AS active_end_devices, {day} AS active_last_day, {week} AS active_last_week, "
        f"{month} AS active_last_month, {ec('applications', 'total')} AS applications, "
        f"{ec('accounts', 'users', 'standard')} AS users_standard, {ec('accounts', 'users', 'admin')} AS users_admin, "
        f"if(is_is AND JSONType(b, {users_total}) IN {INTEGER}, toNullable(toUInt64OrZero(JSONExtractRaw(b, {users_total}))), NULL) "
        f"AS users_total, {ec('accounts', 'organizations', 'total')} AS organizations, "
        "if(is_is, '', JSONExtractRaw(b, 'cli')) AS cli, body, reinterpretAsUInt64(MD5(body)) AS body_hash, "
        f"toUInt32(kafkaMurmurHash(uid) % {int(partitions)}) AS home "
        "FROM (SELECT *, body AS b, JSONType(b, 'entities_count') = 'Object' AS is_is FROM peer_bodies)"
    )
    return [
        "CREATE TABLE peer_bodies (topic String, partition UInt32, offset UInt64, idx UInt32, received_at_ms Int64, "
        "rate_limited Bool, bad_batch Bool, body String) ENGINE = Null",
        f"CREATE TABLE peer_reads ENGINE = Null AS {reads}",
        f"CREATE MATERIALIZED VIEW peer_reads_mv TO peer_reads AS {reads}",
        f"CREATE TABLE peer_checked ({CHECKED_COLUMNS}) ENGINE = Null",
        f"CREATE MATERIALIZED VIEW peer_checked_mv TO peer_checked AS {checked}",
        "CREATE MATERIALIZED VIEW peer_rejections_mv TO rejections AS SELECT day, received_at, reason, "
        "concat('rejected in SQL: ', reason) AS message, topic AS source_topic, partition AS source_partition, "
        f"offset AS source_offset, idx AS source_index, {python_replace_decode('substring(body, 1, 4096)')} AS body "
        "FROM peer_checked WHERE reason != ''",
        # the worker keeps the first of identical bodies of a UID and day, and never an older one: each body is
        # compared with the one before it (in this block, else the stored one of its partition's state window, as the
        # worker's roll-up holds them: processors.state_days days back from the partition's newest). A view
        # reads the block that triggers it once: a second read of it (an IN subquery) loses rows now and then
        "CREATE TABLE peer_latest (day Date, uid String, source_partition UInt32, version UInt128, body_hash UInt64) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY (day, uid)",
        "CREATE MATERIALIZED VIEW peer_latest_mv TO peer_latest AS "
        "SELECT day, uid, source_partition, version, reinterpretAsUInt64(MD5(body)) AS body_hash FROM snapshots",
        "CREATE MATERIALIZED VIEW peer_snapshots_mv TO snapshots AS SELECT day, uid, kind, received_at, version, "
        "partition AS source_partition, offset AS source_offset, idx AS source_index, default_uid, flags, "
        "operating_system, arch, binary_version, version_major_minor, golang_version, gateways, "
        "gateways_by_frequency_plan, end_devices, active_end_devices, active_last_day, active_last_week, "
        "active_last_month, applications, users_standard, users_admin, users_total, organizations, cli, body "
        "FROM (SELECT *, lagInFrame(body_hash, 1, toUInt64(0)) OVER w AS prev_hash, lagInFrame(version, 1, toUInt128(0)) OVER w "
        "AS prev_version FROM peer_checked WHERE reason = '' AND partition = home "
        "WINDOW w AS (PARTITION BY day, uid ORDER BY version ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)) AS c "
        "LEFT JOIN (SELECT day, uid, argMax(body_hash, version) AS stored_hash, max(version) AS stored_version "
        "FROM peer_latest INNER JOIN (SELECT source_partition, max(day) AS newest FROM peer_latest "
        f"GROUP BY source_partition) AS w USING (source_partition) WHERE day > newest - {int(state_days)} "
        "GROUP BY day, uid) AS s USING (day, uid) "
        "WHERE if(prev_version > stored_version, body_hash != prev_hash, "
        "stored_version = 0 OR (body_hash != stored_hash AND version > stored_version))",
        # the roll-up: each (day, partition) written to recomputed from the tables, every second, by a refreshable
        # view (it reads what is committed; a view triggered by the write may not see the write's own rows)
        "CREATE TABLE peer_touched (day Date, source_partition UInt32, touched_at DateTime64(3, 'UTC') "
        "DEFAULT now64(3, 'UTC')) ENGINE = MergeTree ORDER BY touched_at",
        "CREATE MATERIALIZED VIEW peer_touched_snapshots_mv TO peer_touched AS "
        "SELECT DISTINCT day, source_partition FROM snapshots",
        "CREATE MATERIALIZED VIEW peer_touched_rejections_mv TO peer_touched AS "
        "SELECT DISTINCT day, source_partition FROM rejections",
        "CREATE MATERIALIZED VIEW peer_rollup_refresh REFRESH EVERY 1 SECOND APPEND TO rollup_partitions AS "
        "SELECT day, source_partition, "
        "bitShiftLeft(toUInt128(1), 64) + toUInt128(toUnixTimestamp64Nano(now64(9))) AS version, "
        "now64(6, 'UTC') AS computed_at, deployments, default_uid_deployments, inconsistent_deployments, cli_installs, "
        "gateways, end_devices, active_end_devices, active_last_day, active_last_week, active_last_month, applications, "
        "users_standard, users_admin, organizations, gateways_by_frequency_plan, deployments_by_version, "
        "deployments_by_os, deployments_by_arch, deployments_by_go_version, cli_by_version, cli_by_os, cli_by_arch, "
        "rejected_by_reason "
        f"FROM (SELECT DISTINCT day, source_partition FROM peer_touched WHERE {recent}) AS t "
        "LEFT JOIN (SELECT day, source_partition, countIf(kind = 'is') AS deployments, "
        "countIf(kind = 'is' AND default_uid) AS default_uid_deployments, "
        "countIf(kind = 'is' AND notEmpty(flags)) AS inconsistent_deployments, countIf(kind = 'cli') AS cli_installs, "
        f"{rollup_sums}, sumMap(gateways_by_frequency_plan) AS gateways_by_frequency_plan, "
        "sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'is') AS deployments_by_version, "
        "sumMapIf(map(operating_system, toUInt64(1)), kind = 'is') AS deployments_by_os, "
        "sumMapIf(map(arch, toUInt64(1)), kind = 'is') AS deployments_by_arch, "
        "sumMapIf(map(golang_version, toUInt64(1)), kind = 'is') AS deployments_by_go_version, "
        "sumMapIf(map(version_major_minor, toUInt64(1)), kind = 'cli') AS cli_by_version, "
        "sumMapIf(map(operating_system, toUInt64(1)), kind = 'cli') AS cli_by_os, "
        "sumMapIf(map(arch, toUInt64(1)), kind = 'cli') AS cli_by_arch "
        f"FROM snapshots FINAL WHERE (day, source_partition) IN (SELECT day, source_partition FROM peer_touched WHERE {recent}) "
        "GROUP BY day, source_partition) AS s USING (day, source_partition) "
        "LEFT JOIN (SELECT day, source_partition, sumMap(map(reason, toUInt64(1))) AS rejected_by_reason "
        f"FROM rejections FINAL WHERE (day, source_partition) IN (SELECT day, source_partition FROM peer_touched WHERE {recent}) "
        "GROUP BY day, source_partition) AS r USING (day, source_partition)",
        # the Kafka table and its view last: the engine reads as soon as a view is attached, and a block that finds
        # the next views missing is lost (and committed)
        f"CREATE TABLE peer_kq (raw String) ENGINE = Kafka SETTINGS kafka_broker_list = '{bootstrap}', "
        f"kafka_topic_list = '{topic}', kafka_group_name = '{group}', kafka_format = 'RawBLOB', "
        f"kafka_max_block_size = {int(records_per_block)}, kafka_flush_interval_ms = 250, kafka_num_consumers = 1, "
        "kafka_thread_per_consumer = 1",
        # a record's bodies: its frames (or itself); a frame that cannot be read makes the record one bad_batch body
        "CREATE MATERIALIZED VIEW peer_bodies_mv TO peer_bodies AS "
        "SELECT topic, partition, offset, toUInt32(i - 1) AS idx, ms AS received_at_ms, rate_limited, "
        "batched AND NOT frames AS bad_batch, body "
        "FROM (SELECT _topic AS topic, toUInt32(_partition) AS partition, _offset AS offset, "
        f"{_header('format')} = 'telemetry-batch/1' AS batched, {_header('rate_limited')} = '1' AS rate_limited, "
        "if(batched, splitByChar('\\n', raw), []) AS lines, "
        f"batched AND arrayAll(l -> {_FRAME_OK}, lines) AS frames, "
        "if(frames, arrayMap(l -> if(JSONHas(l, 'body'), JSONExtractString(l, 'body'), "
        "base64Decode(JSONExtractString(l, 'body_base64'))), lines), "
        "[if(batched, substring(raw, 1, 4096), raw)]) AS bodies, "
        "if(frames, arrayMap(l -> JSONExtractInt(l, 'received_at_ms'), lines), "
        f"[ifNull(toInt64OrNull({_header('received_at_ms')}), ifNull(toUnixTimestamp64Milli(_timestamp_ms), 0))]) "
        "AS times FROM peer_kq) "
        "ARRAY JOIN bodies AS body, times AS ms, arrayEnumerate(bodies) AS i",
    ]


#: Seconds without a new row, once it has partitions, before a run fails as stalled (rather than at its timeout):
#: records committed whose rows never arrive (as when the Kafka table was created before the views below it).
STALL_S = 30.0


class Stalled(RuntimeError):
    """The Kafka engine committed records whose rows never arrived."""


def run(
    bootstrap: str,
    topic: str,
    group: str,
    n: int,
    expect: dict[str, Any],
    chdb_dir: str,
    out: str,
    export_dir: str | None = None,
    timeout_s: float = 240,
) -> None:
    """Store the topic's bodies through the pipeline's SQL; write the figures to `out`, the tables to `export_dir`."""
    import chdb

    from bench.equal_output import export
    from bench.peers import _figures
    from core.config import load_settings
    from sinks.clickhouse import migrations

    settings = load_settings()
    os.makedirs(chdb_dir, exist_ok=True)
    cfg = Path(chdb_dir).parent / f"{Path(chdb_dir).name}-kafka.xml"
    cfg.write_text(
        "<clickhouse><kafka><session_timeout_ms>10000</session_timeout_ms>"
        "<heartbeat_interval_ms>1000</heartbeat_interval_ms></kafka></clickhouse>"
    )
    conn = chdb.connect(f"{chdb_dir}?config-file={cfg}")

    def q(sql: str) -> str:
        return str(conn.query(sql, "TabSeparated")).strip()

    for _version, _name, statements in migrations():  # the project's schema, every view included
        for statement in statements:
            q(statement)
    statements = pipeline_sql(
        bootstrap,
        topic,
        group,
        settings.kafka.partitions,
        settings.processors.plausibility_limit,
        settings.processors.state_days,
    )
    for statement in statements:
        try:
            q(statement)
        except RuntimeError as exc:  # "Shutdown was called (LOGICAL_ERROR)" on CREATE of the Kafka table: it works
            if "Shutdown was called" not in str(exc):
                raise
    deadline = time.monotonic() + timeout_s
    t0 = cpu0 = None
    # done when the day aggregates count every snapshot and rejection: the last step has run. The polls are cheap
    # (counts from the parts) until the counts are reached, and 0.1 s apart: their CPU counts as the peer's
    counts = "SELECT (SELECT count() FROM snapshots), (SELECT count() FROM rejections)"
    done = (
        "SELECT (SELECT count() FROM snapshots FINAL), (SELECT count() FROM rejections FINAL), "
        "(SELECT sum(deployments + cli_installs) FROM daily_rollup), "
        "(SELECT sum(arraySum(mapValues(rejected_by_reason))) FROM daily_rollup)"
    )
    want = [expect["distinct_day_uid"], expect["rejected"]] * 2
    consumers = (
        "SELECT num_messages_read, num_commits, assignments.partition_id, exceptions.text, (SELECT groupArray((name, "
        "value, last_error_message)) FROM system.errors WHERE last_error_time > now() - 600) FROM system.kafka_consumers"
    )
    said = progressed = time.monotonic()
    last: tuple[int, ...] = ()
    while True:
        if t0 is not None and time.monotonic() - progressed > STALL_S:
            raise Stalled(
                f"the Kafka engine peer stalled: nothing new stored for {STALL_S:.0f}s; stored {q(done)}, expected "
                f"{want}; its consumer (messages read, commits): {q(consumers)}"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the Kafka engine peer did not store everything within {timeout_s}s: stored {q(done)}, expected "
                f"{want}; its consumer: {q(consumers)}"
            )
        if time.monotonic() - said > 10:  # a line in the child's log every 10 s while it waits
            said = time.monotonic()
            print(f"waiting: stored {q(done)}; consumer {q(consumers)[:1000]}", flush=True)
        if t0 is None and q("SELECT count() FROM system.kafka_consumers WHERE notEmpty(assignments.topic)") != "0":
            t0, cpu0 = time.perf_counter(), time.process_time()
        snapshots, rejections = (int(x) for x in q(counts).split("\t"))
        if (snapshots, rejections) != last:
            last, progressed = (snapshots, rejections), time.monotonic()
        if snapshots >= want[0] and rejections >= want[1]:
            stored = [int(x) for x in q(done).split("\t")]
            if stored == want:
                t1, cpu1 = time.perf_counter(), time.process_time()
                break
        time.sleep(0.1)
    if t0 is None:
        raise RuntimeError("the Kafka engine stored everything before its assignment was seen")
    fig = _figures(n, t1 - t0, cpu1 - cpu0, snapshots=stored[0], rejections=stored[1])
    if export_dir:
        export(lambda sql: conn.query(sql).bytes(), Path(export_dir))
    Path(out).write_text(json.dumps(fig))
    conn.close()
    os.kill(os.getpid(), signal.SIGKILL)  # chDB's Kafka threads do not stop on their own; nothing is left to keep
