"""The telemetry UID exactly as The Things Stack computes it (pkg/telemetry/exporter)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_CONSOLE_BASE_URL = "http://localhost:1885/api/v3"
CONSOLE_BASE_URL_KEYS = ("is", "gs", "ns", "as", "js")


def uid_from_elements(elements: Sequence[str]) -> str:
    """base64(SHA-512(e1 + ":" + e2 + ":" + ... + en + ":"))."""
    digest = hashlib.sha512("".join(f"{e}:" for e in elements).encode()).digest()
    return base64.b64encode(digest).decode("ascii")


def uid_elements_from_config(config: Mapping[str, Any]) -> list[str]:
    """`telemetry.uid-elements` if set, else the five `console.ui.<x>.base-url` values (TTS's defaults)."""
    elements = (config.get("telemetry") or {}).get("uid-elements") or []
    if elements:
        return [str(e) for e in elements]
    ui = ((config.get("console") or {}).get("ui")) or {}
    return [str((ui.get(k) or {}).get("base-url") or DEFAULT_CONSOLE_BASE_URL) for k in CONSOLE_BASE_URL_KEYS]


def uid_from_config(config: Mapping[str, Any]) -> str:
    return uid_from_elements(uid_elements_from_config(config))
