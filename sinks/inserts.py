"""Inserts of typed rows (core/rows.py), column by column, in one of two encodings: JSON columns (the fast path), or
clickhouse-connect's Native encoding for what JSON cannot hold."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from core.rows import TABLES, columns, getters
from sinks.connection import Connection

log = logging.getLogger("sinks.clickhouse")

# orjson writes a datetime as RFC 3339 ("2025-01-01T12:00:00.123000+00:00"), which ClickHouse reads in best-effort mode
_JSON_INSERT = {"date_time_input_format": "best_effort"}


class Inserter:
    """Inserts rows on the writer's session, with each table's column types read once."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._wire_types: dict[str, list[str]] = {}  # table -> the types its inserts are sent as
        self._native_tables: set[str] = set()  # tables whose rows fell back to the Native encoding (warned once)

    def insert(self, rows: Sequence[Any]) -> None:
        """One insert, column by column, as one JSON object of columns (ClickHouse's `JSONColumns`): orjson writes it
        in C, and ClickHouse parses it in C++, off the GIL. clickhouse-connect's Native encoding is done in Python,
        holding the GIL against the worker's event loop (~6 us a snapshot row against ~2.3). UInt128 columns go as
        strings (JSON numbers stop at 64 bits here). A value orjson cannot write falls back to the Native insert
        (LowCardinality columns sent as plain strings, encoded by ClickHouse)."""
        if not rows:
            return
        client = self.connection.client
        row_type: Any = type(rows[0])
        table, names = TABLES[row_type], columns(row_type)
        types = self._wire_types.get(table)
        if types is None:
            described = {
                str(name): str(type_)
                for name, type_ in client.query(
                    "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
                    parameters={"t": table},
                ).result_rows
            }
            types = self._wire_types[table] = [described[n].replace("LowCardinality(String)", "String") for n in names]
        data = [[get(r) for r in rows] for get in getters(row_type)]
        try:
            body = _json_columns(names, types, data)
        except (TypeError, orjson.JSONEncodeError) as exc:  # e.g. an integer beyond 64 bits where none was expected
            if table not in self._native_tables:
                self._native_tables.add(table)
                log.warning(
                    "rows of %s sent in the Native encoding (slower): JSON could not hold them (%s)", table, exc
                )
            client.insert(table, data, column_names=names, column_type_names=types, column_oriented=True)
            return
        client.raw_insert(table, names, body, settings=_JSON_INSERT, fmt="JSONColumns")


def _json_columns(names: Sequence[str], types: Sequence[str], data: Sequence[list[Any]]) -> bytes:
    """The columns as one JSON object (ClickHouse's `JSONColumns` input); 128-bit integers as strings."""
    by_name = {n: [str(v) for v in col] if "Int128" in t else col for n, t, col in zip(names, types, data)}
    return orjson.dumps(by_name, option=orjson.OPT_NON_STR_KEYS)  # map keys may be str enums (rejection reasons)
