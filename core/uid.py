"""The telemetry UID exactly as The Things Stack computes it (pkg/telemetry/exporter)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from core.schema import _valid_cli_uid

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


def erasure_key(uid: str) -> str:
    """The one key erasure compares a UID by (sinks/erasure.py, processors/erased.py): a CLI install's UUID in lower
    case (a UUID is case-insensitive, and the collector stores it as it was sent), a deployment's UID (base64 of a
    digest: case matters) as written."""
    return uid.lower() if _valid_cli_uid(uid) else uid


def json_escaped(uid: str) -> str:
    """The UID as many JSON encoders write it: `/` escaped as `\\/` (a deployment's base64 often holds one)."""
    return uid.replace("/", "\\/")
