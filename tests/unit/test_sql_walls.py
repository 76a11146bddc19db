"""The pure parts of the analysts' SQL wall: the allowlist check over a parsed statement, the framing of results,
and the escaping of what the command line prints. ClickHouse's own parse and the whole path are tested in
tests/test_hostile_clients.py."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import NotAllowed, RequestRefused, WriteRefused
from dashboard.sql_allowlist import FUNCTIONS, TABLE_FUNCTIONS
from dashboard.sql_check import Catalog, check
from dashboard.sql_formats import FORMATS, ResultCut, frame
from is_telemetry.termsafe import UNSAFE_CLASSES, json_printable, printable

# -- the check ---------------------------------------------------------------------------------------------------

CATALOG = Catalog(
    database="default",
    tables=frozenset({("default", "snapshots"), ("default", "fleet_daily"), ("system", "tables")}),
    exact={
        "plus": "plus",
        "sum": "sum",
        "count": "count",
        "arrayMap": "arrayMap",
        "file": "file",
        "toDate": "toDate",
        "DATE": "toDate",
        "fileNew": "fileNew",  # what a newer ClickHouse might add: not on the list, so refused
        "day": "toDayOfMonth",
        "toDayOfMonth": "toDayOfMonth",
    },
    folded={"date": "toDate", "day": "toDayOfMonth"},
    aggregates=frozenset({"sum", "count"}),
)


def select(*items: dict[str, Any], tables: list[dict[str, Any]] | None = None, **more: Any) -> dict[str, Any]:
    query: dict[str, Any] = {"type": "SelectQuery", "select": {"type": "ExpressionList", "children": list(items)}}
    if tables is not None:
        query["tables"] = {
            "type": "TablesInSelectQuery",
            "children": [{"type": "TablesInSelectQueryElement", "table_expression": t} for t in tables],
        }
    query.update(more)
    return {
        "type": "SelectWithUnionQuery",
        "union_mode": "UNION_DEFAULT",
        "list_of_selects": {"type": "ExpressionList", "children": [query]},
        "is_outfile_append": False,
        "is_outfile_truncate": False,
        "is_into_outfile_with_stdout": False,
    }


def fn(name: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Function", "name": name, "arguments": {"type": "ExpressionList", "children": list(args)}}


def ident(name: str) -> dict[str, Any]:
    return {"type": "Identifier", "name": name}


def lit(value: Any) -> dict[str, Any]:
    return {"type": "Literal", "value": {"field_type": "String", "value": value}}


def table(name: str) -> dict[str, Any]:
    return {"type": "TableExpression", "database_and_table_name": {"type": "TableIdentifier", "name": name}}


def table_function(name: str, *args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "TableExpression", "table_function": fn(name, *args)}


def test_allowed_statements_pass() -> None:
    check(select(fn("plus", ident("day"), lit(1)), tables=[table("snapshots")]), CATALOG)
    check(select(fn("sumIf", ident("x"), ident("y")), tables=[table("fleet_daily")]), CATALOG)  # a combinator
    check(select(fn("DATE", lit("2025-01-01"))), CATALOG)  # an alias of an allowed function
    check(select(fn("date", lit("2025-01-01"))), CATALOG)  # case-insensitive
    check(select(ident("x"), tables=[table_function("numbers", lit(3))]), CATALOG)


@pytest.mark.parametrize(
    ("tree", "named"),
    [
        (select(fn("file", lit("/etc/passwd"))), "file"),
        (select(fn("FiLe", lit("/etc/passwd"))), "FiLe"),  # not case-insensitive: unknown, refused all the same
        (select(fn("fileNew", lit("/etc/passwd"))), "fileNew"),  # a function a newer ClickHouse adds
        (select(fn("arrayMap", ident("file"), lit("/etc/passwd"))), "file"),  # an identifier naming a function
        (select(fn("fileNewIf", ident("x"), ident("y"))), "fileNewIf"),  # no combinator makes it an aggregate
        (select(ident("x"), tables=[table_function("file", lit("/etc/passwd"))]), "file"),
        (select(ident("x"), tables=[table_function("url", lit("http://x/"))]), "url"),
        (select(ident("x"), tables=[table("/etc/passwd")]), "/etc/passwd"),  # chDB reads a path named as a table
        (select(ident("x"), tables=[table("nope")]), "nope"),
    ],
)
def test_functions_tables_and_names_off_the_lists_are_refused(tree: dict[str, Any], named: str) -> None:
    with pytest.raises(NotAllowed) as refused:
        check(tree, CATALOG)
    assert named in refused.value.message


def test_apply_names_its_function_and_is_checked() -> None:
    apply = {
        "type": "Asterisk",
        "transformers": {
            "type": "ColumnsTransformerList",
            "children": [{"type": "ColumnsApplyTransformer", "func_name": "file"}],
        },
    }
    with pytest.raises(NotAllowed):
        check(select(apply, tables=[table("snapshots")]), CATALOG)


@pytest.mark.parametrize(
    "tree",
    [
        {**select(lit(1)), "format_ast": ident("JSON")},  # FORMAT
        {**select(lit(1)), "out_file": lit("/tmp/x")},  # INTO OUTFILE
        select(lit(1), settings={"type": "SetQuery", "changes": []}),  # SETTINGS
        select({"type": "QueryParameter", "name": "x", "param_type": "UInt8"}),
        select({"type": "SomeNodeANewerClickHouseAdds", "children": []}),  # an unknown kind
        select({"type": "Literal", "value": {}, "something_new": 1}),  # an unknown field of a known kind
    ],
)
def test_unknown_kinds_and_fields_are_refused(tree: dict[str, Any]) -> None:
    with pytest.raises(NotAllowed):
        check(tree, CATALOG)


def test_writes_and_other_statements_are_refused() -> None:
    with pytest.raises(WriteRefused):
        check({"type": "InsertQuery"}, CATALOG)
    with pytest.raises(WriteRefused):
        check({**select(lit(1)), "is_outfile_truncate": True}, CATALOG)


def test_a_cte_is_seen_only_inside_the_select_that_defines_it() -> None:
    cte = {"type": "WithElement", "name": "/etc/passwd", "subquery": {"type": "Subquery", "children": [select(lit(1))]}}
    with_list = {"type": "ExpressionList", "children": [cte]}
    check(select(ident("x"), tables=[table("/etc/passwd")], **{"with": with_list}), CATALOG)  # the CTE, in scope
    # defined in a subquery, used outside it: ClickHouse would read it as a table (chDB: as a host file)
    inner = select(lit(1), **{"with": with_list})
    sub = {"type": "TableExpression", "subquery": {"type": "Subquery", "children": [inner]}}
    with pytest.raises(NotAllowed):
        check(select(ident("x"), tables=[sub, table("/etc/passwd")]), CATALOG)


def test_the_lists_hold_nothing_that_reaches_the_host() -> None:
    reaching = {
        "file",
        "url",
        "s3",
        "remote",
        "executable",
        "python",
        "dictGet",
        "hostName",
        "sleep",
        "getMacro",
        "filesystemAvailable",
        "aiGenerate",
        "joinGet",
        "getServerSetting",
        "regionToName",
        "sleepEachRow",
    }
    assert not reaching & FUNCTIONS
    assert not reaching & TABLE_FUNCTIONS


# -- framing ------------------------------------------------------------------------------------------------------

ROWS = st.lists(st.lists(st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(), st.none()), max_size=4), max_size=30)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]


@given(ROWS, st.lists(st.integers(min_value=0), max_size=10))
def test_json_framing_is_valid_json_however_the_chunks_are_cut(rows: list[list[Any]], cuts: list[int]) -> None:
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    header = b'["a"]\n["String"]\n'
    out = b"".join(frame(FORMATS["json"], header, _split(body, cuts), 10**9))
    assert orjson.loads(out) == {"columns": ["a"], "types": ["String"], "rows": rows}


@given(ROWS.filter(lambda r: len(r) > 3), st.lists(st.integers(min_value=0), max_size=10), st.integers(60, 300))
def test_a_cut_json_result_is_valid_json_ending_in_its_error(rows: list[list[Any]], cuts: list[int], cap: int) -> None:
    body = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    fmt = FORMATS["json"]
    sent: list[bytes] = []
    try:
        for piece in frame(fmt, b'["a"]\n["String"]\n', _split(body, cuts), cap):
            sent.append(piece)
    except ResultCut as exc:
        sent.append(exc.tail)
        out = orjson.loads(b"".join(sent))
        assert out["error"]["error"] == "result_too_large"
        assert out["rows"] == rows[: len(out["rows"])]  # whole rows only, in order
        assert sum(len(p) for p in sent[:-1]) <= cap
    else:
        assert len(b"".join(sent)) <= cap + len(b"\n]}\n")


def test_a_cut_text_result_ends_with_a_line_naming_the_error() -> None:
    fmt = FORMATS["csv"]
    with pytest.raises(ResultCut) as cut:
        for _ in frame(fmt, b'"a"\n', [b"1\n" * 1000], 100):
            pass
    assert cut.value.tail.startswith(b"\n#error result_too_large: ")
    assert isinstance(cut.value, Exception) and not isinstance(cut.value, RequestRefused)


# -- what the command line prints ---------------------------------------------------------------------------------


@given(st.text())
def test_printed_text_holds_no_control_format_or_separator_character(text: str) -> None:
    for out in (printable(text), printable(text, backslash=True)):
        assert not any(unicodedata.category(ch) in UNSAFE_CLASSES for ch in out)


@given(st.recursive(st.text() | st.integers(-(2**63), 2**63 - 1), lambda c: st.lists(c, max_size=3), max_leaves=6))
def test_printed_json_is_the_same_value_and_safe(value: Any) -> None:
    text = json_printable(orjson.dumps(value).decode())
    assert orjson.loads(text) == value
    assert not any(unicodedata.category(ch) in UNSAFE_CLASSES for ch in text)


def test_escape_sequences_are_shown_not_run() -> None:
    assert json_printable('"a\x7fb"') == '"a\\u007fb"'  # DEL: JSON leaves it raw, a terminal control all the same
    assert printable("\x1b[31mred\x1b]0;title\x07") == "\\x1b[31mred\\x1b]0;title\\x07"
    assert printable("a\u202eb\u009bc") == "a\\u202eb\\x9bc"
