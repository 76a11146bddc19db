"""The wall in front of analysts' SQL: ClickHouse's own parse of the statement, checked against allowlists.

`check(ast, catalog)` takes the statement as ClickHouse parsed it (`parseQueryToJSON` of the canonical text, a JSON
tree) and refuses it (raising NotAllowed / WriteRefused, 403) unless every part of it is on a list:
- every node kind, and every field of each kind (NODE_FIELDS): a kind or field this module does not know, such as
  SETTINGS, FORMAT, INTO OUTFILE or query parameters, is refused, whatever a newer ClickHouse adds;
- every function, wherever it appears (calls, higher-order arguments, lambdas, `APPLY`), and every identifier that
  names a function: on dashboard/sql_allowlist.py's FUNCTIONS once aliases and aggregate combinators are resolved;
- every table function: on the generators-only TABLE_FUNCTIONS, or a parameterized view of the current database;
- every table, after FROM or JOIN and after IN (`x IN t` reads a table): one of the current database's tables, a CTE
  in scope, a view of `information_schema`, or one of a few `system` tables that show no host path and no other
  session's queries (chDB's default database also reads host files named as tables: `FROM '/etc/passwd'`);
- the statement kinds: SELECT (with WITH, UNION, INTERSECT, EXCEPT) and EXPLAIN of one.

Nothing here is a list of what is forbidden: a name is allowed because it is listed, never because it is not known
to be dangerous. `Catalog` (what the functions' aliases resolve to, which tables exist) comes from the same ClickHouse
that runs the statement; an unknown name is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import NotAllowed, WriteRefused
from dashboard.sql_allowlist import COMBINATORS, FUNCTIONS, TABLE_FUNCTIONS

#: Every node kind a statement may contain, with the fields it may have. Fields holding nodes are walked; the others
#: are flags, names and literals read where this module needs them.
NODE_FIELDS: Mapping[str, frozenset[str]] = {
    kind: frozenset(fields.split())
    for kind, fields in {
        "SelectWithUnionQuery": "union_mode list_of_modes list_of_selects"
        " is_outfile_append is_outfile_truncate is_into_outfile_with_stdout",
        "SelectIntersectExceptQuery": "children final_operator",
        "SelectQuery": "with select tables prewhere where group_by having window qualify order_by limit_by_offset"
        " limit_by_length limit_by limit_offset limit_length interpolate distinct group_by_with_totals"
        " group_by_with_rollup group_by_with_cube group_by_with_grouping_sets group_by_all order_by_all"
        " limit_with_ties",
        "ExplainQuery": "kind query is_outfile_append is_outfile_truncate is_into_outfile_with_stdout",
        "ExpressionList": "children",
        "Subquery": "children alias",
        "WithElement": "name subquery",
        "TablesInSelectQuery": "children",
        "TablesInSelectQueryElement": "table_expression table_join array_join",
        "TableExpression": "database_and_table_name table_function subquery final sample_size sample_offset",
        "TableIdentifier": "name name_parts alias",
        "TableJoin": "kind strictness locality on_expression using_expression_list",
        "ArrayJoin": "kind expression_list",
        "SampleRatio": "numerator denominator",
        "Function": "name arguments parameters window_definition window_name alias is_operator is_lambda_function"
        " is_window_function kind nulls_action",
        "Identifier": "name name_parts alias",
        "Literal": "value alias",
        "Asterisk": "transformers",
        "QualifiedAsterisk": "qualifier transformers",
        "ColumnsRegexpMatcher": "pattern transformers",
        "ColumnsListMatcher": "column_list transformers",
        "QualifiedColumnsRegexpMatcher": "qualifier pattern transformers",
        "QualifiedColumnsListMatcher": "qualifier column_list transformers",
        "ColumnsTransformerList": "children",
        "ColumnsApplyTransformer": "func_name parameters lambda lambda_arg column_name_prefix",
        "ColumnsExceptTransformer": "children pattern is_strict",
        "ColumnsReplaceTransformer": "children is_strict",
        "ColumnsReplaceTransformerReplacement": "name children",
        "OrderByElement": "expression direction nulls_direction collation with_fill fill_from fill_to fill_step"
        " fill_staleness",
        "InterpolateElement": "column expr",
        "WindowDefinition": "parent_window_name partition_by order_by frame_is_default frame_type frame_begin_type"
        " frame_begin_offset frame_begin_preceding frame_end_type frame_end_offset frame_end_preceding",
        "WindowListElement": "name definition",
    }.items()
}
#: Statement kinds, by the root node.
ROOTS = frozenset({"SelectWithUnionQuery", "ExplainQuery"})
#: EXPLAIN kinds: each shows how a query would run without running anything but the checked query's analysis.
EXPLAIN_KINDS = frozenset(
    {"EXPLAIN", "EXPLAIN AST", "EXPLAIN SYNTAX", "EXPLAIN QUERY TREE", "EXPLAIN PIPELINE", "EXPLAIN ESTIMATE"}
)
#: Flags that must be false: they write the result somewhere.
MUST_BE_FALSE = frozenset({"is_outfile_append", "is_outfile_truncate", "is_into_outfile_with_stdout"})
#: Function names that are syntax, not functions (`x -> x + 1` parses as Function lambda).
SYNTAX_FUNCTIONS = frozenset({"lambda"})
#: Metadata analysts may read besides the current database: information_schema's views (names, types, comments), and
#: the system tables that show no host path, no other session's query text or error and no code address (so not
#: system.tables, system.databases, system.parts: their paths; not processes, query_log, errors...).
METADATA_DATABASES = frozenset({"information_schema", "INFORMATION_SCHEMA"})
SYSTEM_TABLES = frozenset(
    {
        "one", "numbers", "numbers_mt", "zeros", "zeros_mt", "columns", "functions", "table_functions",
        "aggregate_function_combinators", "data_type_families", "time_zones", "view_refreshes",
    }
)  # fmt: skip
#: Functions whose right-hand argument, when a bare name, is read as a table (`x IN t`).
TABLE_ARGUMENT = frozenset(
    {
        "in", "notIn", "globalIn", "globalNotIn", "nullIn", "notNullIn", "globalNullIn", "globalNotNullIn",
        "inIgnoreSet", "notInIgnoreSet", "globalInIgnoreSet", "globalNotInIgnoreSet", "nullInIgnoreSet",
        "notNullInIgnoreSet", "globalNullInIgnoreSet", "globalNotNullInIgnoreSet",
    }
)  # fmt: skip

MAX_DEPTH = 256  # ClickHouse's own parser stops at max_parser_depth (1000); a deeper tree is refused here first


@dataclass(frozen=True)
class Catalog:
    """What names mean on the ClickHouse that runs the statement (from its system tables)."""

    database: str
    tables: frozenset[tuple[str, str]]  # (database, table)
    exact: Mapping[str, str]  # function name or alias -> canonical name
    folded: Mapping[str, str]  # lower-cased name of a case-insensitive function or alias -> canonical name
    aggregates: frozenset[str]  # canonical names of aggregate functions

    def resolve(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        """(canonical function, combinators) that `name` calls, or None if it names no function."""
        canonical = self.exact.get(name) or self.folded.get(name.lower())
        if canonical is not None:
            return canonical, ()
        for combinator in sorted(COMBINATORS, key=len, reverse=True):
            if len(name) > len(combinator) and name.endswith(combinator):
                base = self.resolve(name[: -len(combinator)])
                if base is not None and base[0] in self.aggregates:
                    return base[0], (*base[1], combinator)
        return None

    def allows(self, name: str) -> bool:
        resolved = self.resolve(name)
        return resolved is not None and resolved[0] in FUNCTIONS and all(c in COMBINATORS for c in resolved[1])


def check(ast: Any, catalog: Catalog) -> None:
    """Raise NotAllowed / WriteRefused unless every part of the parsed statement `ast` is allowed."""
    if not isinstance(ast, dict) or ast.get("type") not in ROOTS:
        kind = ast.get("type") if isinstance(ast, dict) else type(ast).__name__
        raise WriteRefused(
            f"only SELECT, WITH and EXPLAIN statements run here (got {str(kind)[:40]}); for the tables, "
            "SELECT table_name FROM information_schema.tables WHERE table_schema = currentDatabase()"
        )
    _Walk(catalog).node(ast, "", 0, frozenset())


def _cte_names(select: Mapping[str, Any]) -> Iterator[str]:
    """The names a SelectQuery's WITH clause gives its subqueries (`WITH x AS (SELECT ...)`)."""
    with_list = select.get("with")
    children = with_list.get("children") if isinstance(with_list, dict) else None
    for item in children if isinstance(children, list) else []:
        if isinstance(item, dict) and item.get("type") == "WithElement" and isinstance(item.get("name"), str):
            yield item["name"]


class _Walk:
    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def node(self, node: Any, context: str, depth: int, ctes: frozenset[str]) -> None:
        """Check `node` and what it holds; `ctes` are the CTE names in scope (a CTE is seen only inside the SELECT
        that defines it: a name defined elsewhere would be read as a table, or as a host file by chDB)."""
        if depth > MAX_DEPTH:
            raise NotAllowed(f"the statement nests deeper than {MAX_DEPTH} levels")
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            raise NotAllowed(f"unexpected part of the parsed statement: {str(node)[:80]!r}")
        kind = node["type"]
        fields = NODE_FIELDS.get(kind)
        if fields is None:
            raise NotAllowed(f"not allowed here: {_describe(kind)}")
        for key, value in node.items():
            if key == "type":
                continue
            if key not in fields:
                raise NotAllowed(f"not allowed here: {_describe(kind, key)}")
            if key in MUST_BE_FALSE and value is not False:
                raise WriteRefused("writes are not allowed: INTO OUTFILE writes a file")
        if kind == "SelectQuery":
            ctes = ctes | frozenset(_cte_names(node))
        self._own(kind, node, context, ctes)
        for key, value in node.items():
            if key in ("type", "value"):
                continue  # a Literal's value is data
            child_context = f"{kind}.{key}"
            if isinstance(value, dict):
                self.node(value, child_context, depth + 1, ctes)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        self.node(item, child_context, depth + 1, ctes)

    def _own(self, kind: str, node: Mapping[str, Any], context: str, ctes: frozenset[str]) -> None:
        """The checks of one node's own names."""
        if kind == "Function":
            name = str(node.get("name", ""))
            if context == "TableExpression.table_function":
                if name not in TABLE_FUNCTIONS and (self.catalog.database, name) not in self.catalog.tables:
                    raise NotAllowed(
                        f"not allowed: table function {name[:80]}() (only the database's parameterized views and "
                        f"generators run here: {', '.join(sorted(TABLE_FUNCTIONS))})",
                        function=name,
                    )
            elif name not in SYNTAX_FUNCTIONS and not self.catalog.allows(name):
                raise NotAllowed(_function_refusal(name), function=name)
            resolved = self.catalog.resolve(name)
            if resolved is not None and resolved[0] in TABLE_ARGUMENT:
                arguments = node.get("arguments")
                children = arguments.get("children") if isinstance(arguments, dict) else None
                if isinstance(children, list) and len(children) == 2 and isinstance(children[1], dict):
                    if children[1].get("type") == "Identifier":  # `x IN name`: ClickHouse reads a table there
                        self._table(_parts(children[1]), ctes)
        elif kind == "ColumnsApplyTransformer":
            applied = node.get("func_name")
            if isinstance(applied, str) and applied and not self.catalog.allows(applied):
                raise NotAllowed(_function_refusal(applied), function=applied)
        elif kind == "Identifier":
            parts = _parts(node)
            if len(parts) == 1 and self.catalog.resolve(parts[0]) is not None and not self.catalog.allows(parts[0]):
                raise NotAllowed(_function_refusal(parts[0]), function=parts[0])
        elif kind == "TableIdentifier":
            self._table(_parts(node), ctes)
        elif kind == "ExplainQuery" and node.get("kind") not in EXPLAIN_KINDS:
            raise NotAllowed(f"not allowed here: {str(node.get('kind'))[:40]}")

    def _table(self, parts: list[str], ctes: frozenset[str]) -> None:
        tables, database = self.catalog.tables, self.catalog.database
        if len(parts) == 1:
            name = parts[0]
            if name in ctes or (database, name) in tables:
                return
        elif len(parts) == 2:
            db, name = parts
            allowed = db == database or db in METADATA_DATABASES or (db == "system" and name in SYSTEM_TABLES)
            if allowed and (db, name) in tables:
                return
        shown = ".".join(parts)[:120]
        raise NotAllowed(
            f"no table {shown!r} to read here: tables are the database's own ({database}), a CTE of the query, "
            f"information_schema.*, or system.{{{','.join(sorted(SYSTEM_TABLES))}}}",
            table=shown,
        )


def _parts(node: Mapping[str, Any]) -> list[str]:
    parts = node.get("name_parts")
    if isinstance(parts, list) and parts and all(isinstance(p, str) for p in parts):
        return list(parts)
    return [str(node.get("name", ""))]


def _function_refusal(name: str) -> str:
    return (
        f"not allowed: {name[:80]} is not on the list of functions analysts' SQL may call (pure arithmetic, "
        "comparison, logic, string, date, array, map, tuple, JSON, conversion, aggregate and window functions; "
        "docs/reliability.md)"
    )


_READABLE = {
    "SetQuery": "SETTINGS (the limits are fixed by the server)",
    "SelectQuery.settings": "SETTINGS (the limits are fixed by the server)",
    "SelectWithUnionQuery.format_ast": 'FORMAT (ask for a format with the request\'s "format" field)',
    "SelectWithUnionQuery.out_file": "INTO OUTFILE",
    "QueryParameter": "query parameters ({name:Type}): write the value into the query",
}


def _describe(kind: str, key: str = "") -> str:
    name = f"{kind}.{key}" if key else kind
    return _READABLE.get(name) or name[:80]
