"""A static check over the source: SQL text is never built from values."""

from __future__ import annotations

import ast
import re

from tests.paths import ROOT

SQL_KEYWORDS = re.compile(r"\b(SELECT|INSERT|ALTER|CREATE|DROP|DELETE|UPDATE|WHERE|FROM|OPTIMIZE|TRUNCATE)\b")


# Every interpolation into SQL text in the source, and why it is safe: code constants or int() of configuration.
ALLOWED_SQL_INTERPOLATIONS = {
    ("sinks/migrate.py", "int(self.snapshot_ttl_days)"),  # an int from the configuration
    ("sinks/migrate.py", "table"),  # _apply_ttl: a name from the module constant TTL_TABLES
    (
        "sinks/rollup_state.py",
        "OWNER",
    ),  # a module constant: the owner-partition expression with an {n:UInt32} parameter
    ("sinks/rollup_state.py", "_SUMS"),  # module constants: the column names of core.schema.SUMMED_COUNTS
    ("sinks/rollup_state.py", "_SUMMED"),
    ("sinks/rollup_state.py", "partition"),  # _aggregates_sql: callers pass OWNER or a column name
    (
        "sinks/rollup_state.py",
        "where",
    ),  # _aggregates_sql: callers pass literal WHERE clauses with {name:Type} parameters
    ("dashboard/panels.py", "', '.join(FLEET_COLUMNS)"),  # a module constant
    ("dashboard/panels.py", "where"),  # _fleet_rows: callers pass literal WHERE clauses with {name:Type} parameters
    ("dashboard/panels.py", "dimension"),  # from a literal tuple in panel_os
    ("dashboard/panels.py", "view"),  # from the same literal tuple
    # an analyst's statement is the query itself: ClickHouse's canonical text of it, checked against the allowlists
    # (dashboard/sql_check.py); wrapped in SELECT * FROM (...) LIMIT 0 for its header, and that text checked again
    ("dashboard/analyst_sql.py", "canonical"),
    ("dashboard/sql_check.py", "str(kind)[:40]"),  # an error message that shows a query to use, not SQL
    ("sinks/retention.py", "days"),  # int() of the configuration's retention days
    ("sinks/retention.py", "table"),  # a name from the module constant UID_STATE_TABLES
    # module constants: the apply's keys by {token:UInt64}, the first day an apply changes, the anonymous key
    ("sinks/analysts.py", "_KEYS"),
    ("sinks/analysts.py", "_SINCE"),
    ("sinks/analysts.py", "ANONYMOUS"),
    ("sinks/analysts.py", "table"),  # from a literal tuple of the apply's two tables
}


def test_no_value_is_spliced_into_sql() -> None:
    """Static check over the source: SQL text is never built from values (f-strings, %, .format, +) except the
    listed constants; values travel as query parameters ({name:Type}) or in inserts (Native format)."""
    found: set[tuple[str, str]] = set()
    bad: list[str] = []
    for path in sorted(
        p for d in ("sinks", "dashboard", "processors", "producers", "is_telemetry") for p in (ROOT / d).rglob("*.py")
    ):
        rel = str(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), rel)
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
                if SQL_KEYWORDS.search(text) and re.search(r"\b(FROM|TABLE|INTO|SET)\b", text):
                    for v in node.values:
                        if isinstance(v, ast.FormattedValue):
                            found.add((rel, ast.unparse(v.value)))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
                for side in (node.left, node.right):
                    if (
                        isinstance(side, ast.Constant)
                        and isinstance(side.value, str)
                        and SQL_KEYWORDS.search(side.value)
                        and re.search(r"\b(FROM|TABLE|INTO)\b", side.value)
                    ):
                        other = node.right if side is node.left else node.left
                        if not isinstance(other, ast.Constant):
                            bad.append(f"{rel}:{node.lineno}: SQL built with {type(node.op).__name__}")
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "format"
                and isinstance(node.func.value, ast.Constant)
                and isinstance(node.func.value.value, str)
                and SQL_KEYWORDS.search(node.func.value.value)
            ):
                bad.append(f"{rel}:{node.lineno}: SQL built with .format()")
    unexpected = {f for f in found if f not in ALLOWED_SQL_INTERPOLATIONS and not f[0].startswith("is_telemetry/stack")}
    assert not bad and not unexpected, (bad, unexpected)
    # and the sink's inserts never carry values in SQL: clickhouse-connect sends them as Native data
    assert "parameters=params" in (ROOT / "sinks/rollup_state.py").read_text()
    assert "column_oriented=True" in (ROOT / "sinks/inserts.py").read_text()
