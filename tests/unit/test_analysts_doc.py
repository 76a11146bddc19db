"""docs/analysts.md documents every table and view and has ready queries (that they run: tests/test_sink.py)."""

from __future__ import annotations

import re

from tests.store_names import (
    ANALYST_DEPTH_PARAMETERIZED,
    ANALYST_DEPTH_TABLES,
    ANALYST_DEPTH_VIEWS,
    ANALYST_VIEWS,
    ANALYSTS_DOC,
    TABLES,
    doc_queries,
)


def test_analysts_doc_has_ready_queries():
    queries = doc_queries()
    assert len(queries) >= 10
    depth = [
        title
        for title, sql in queries
        if any(re.search(rf"\b{v}\b", sql) for v in ANALYST_DEPTH_VIEWS + ANALYST_DEPTH_PARAMETERIZED)
    ]
    assert len(depth) >= 10, depth  # the fleet over time has its own ready queries
    text = ANALYSTS_DOC.read_text()
    for name in TABLES + ANALYST_VIEWS + ANALYST_DEPTH_TABLES + ANALYST_DEPTH_VIEWS + ANALYST_DEPTH_PARAMETERIZED:
        assert f"`{name}`" in text, name  # every table and view is documented
