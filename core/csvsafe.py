"""CSV cells a spreadsheet shows as text and never runs (OWASP "CSV injection").

A cell whose text starts with `=`, `+`, `-`, `@`, a tab or a carriage return is read as a formula by Excel,
LibreOffice and Google Sheets; such text gets a leading apostrophe. Numbers, negative ones included, stay
numbers.
"""

from __future__ import annotations

from typing import Any

import orjson

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, (dict, list, tuple)):
        text = orjson.dumps(value, default=str).decode()
    else:
        text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
