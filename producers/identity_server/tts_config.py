"""The Things Stack's own configuration file (tts.yml), read as TTS reads it: the `telemetry.*`, `is.database-uri`
and `console.ui.*.base-url` keys (dotted or nested), with TTS's defaults, into the producer's options."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.uid import CONSOLE_BASE_URL_KEYS, DEFAULT_CONSOLE_BASE_URL, uid_from_config
from producers.identity_server.durations import parse_go_duration

DEFAULT_TARGET = "https://telemetry.thethingsstack.io/collect"
DEFAULT_INTERVAL = "24h"

#: TTS defaults for the keys this producer reads (nested as in a TTS YAML config).
TTS_DEFAULTS: dict[str, Any] = {
    "telemetry": {
        "enable": True,
        "target": DEFAULT_TARGET,
        "uid-elements": [],
        "num-consumers": 1,
        "entity-count-telemetry": {"enable": True, "interval": DEFAULT_INTERVAL},
    },
    "console": {"ui": {k: {"base-url": DEFAULT_CONSOLE_BASE_URL} for k in CONSOLE_BASE_URL_KEYS}},
}


def _expand_dotted(value: Any) -> Any:
    """`{"telemetry.enable": false}` -> `{"telemetry": {"enable": false}}` (at any depth); lists untouched."""
    if not isinstance(value, Mapping):
        return value
    out: dict[str, Any] = {}
    for key, v in value.items():
        v = _expand_dotted(v)
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = node[p] = {}
            node = nxt
        last = parts[-1]
        if isinstance(v, dict) and isinstance(node.get(last), dict):
            node[last] = _merge(node[last], v)
        else:
            node[last] = v
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        elif v is None and k in out:
            continue  # an empty YAML key (`enable:`) keeps the default, as viper does
        else:
            out[k] = copy.deepcopy(v)
    return out


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "t"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off", "f", ""):
        return False
    raise ValueError(f"{key} must be true or false, not {value!r}")


def tts_defaults() -> dict[str, Any]:
    """A fresh copy of TTS's defaults (`TTS_DEFAULTS`): the configuration without a file."""
    return _merge(TTS_DEFAULTS, {})


def load_tts_config(path: str | Path) -> dict[str, Any]:
    """Read a The Things Stack YAML config file; keys TTS spells them, missing ones take TTS's defaults.

    Returns the whole file as nested dicts with `telemetry.*` and `console.ui.<x>.base-url` filled in
    (`TTS_DEFAULTS`), `telemetry.uid-elements` as a list of strings, `telemetry.enable` and
    `telemetry.entity-count-telemetry.enable` as booleans. Dotted keys (`telemetry.enable: false`)
    are accepted as well as nested maps. Other keys of the file (e.g. `is.database-uri`) are kept as is.
    """
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    data = yaml.safe_load(text) if text.strip() else {}
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: a TTS config must be a YAML map, not {type(data).__name__}")
    config = _merge(TTS_DEFAULTS, _expand_dotted(data))
    tel = config["telemetry"]
    tel["enable"] = _as_bool(tel.get("enable"), "telemetry.enable")
    ect = tel.get("entity-count-telemetry")
    if not isinstance(ect, dict):
        raise ValueError("telemetry.entity-count-telemetry must be a map")
    ect["enable"] = _as_bool(ect.get("enable"), "telemetry.entity-count-telemetry.enable")
    elements = tel.get("uid-elements") or []
    if isinstance(elements, str):  # viper/cast turns a string into a slice by whitespace
        elements = elements.split()
    if not isinstance(elements, list):
        raise ValueError(f"telemetry.uid-elements must be a list of strings, not {elements!r}")
    tel["uid-elements"] = [str(e) for e in elements]
    return config


@dataclass(frozen=True)
class TelemetryOptions:
    """What the producer needs from a TTS config."""

    enabled: bool
    disabled_reason: str  # empty when enabled
    target: str
    interval_s: float
    uid: str
    database_uri: str | None  # `is.database-uri` when the file sets it


def telemetry_options(config: Mapping[str, Any]) -> TelemetryOptions:
    """Extract and validate the producer's settings from `load_tts_config()`'s result."""
    tel = config.get("telemetry") or {}
    ect = tel.get("entity-count-telemetry") or {}
    raw_interval = ect.get("interval", DEFAULT_INTERVAL)
    if isinstance(raw_interval, bool) or not isinstance(raw_interval, str):
        raise ValueError(
            f"telemetry.entity-count-telemetry.interval must be a Go duration with a unit (24h, 30m, 1h30m), "
            f"not {raw_interval!r}"
        )
    interval = parse_go_duration(raw_interval)
    if interval <= 0:
        raise ValueError(f"telemetry.entity-count-telemetry.interval must be positive, not {raw_interval!r}")
    reason = ""
    if not tel.get("enable", True):
        reason = "telemetry.enable is false"
    elif not ect.get("enable", True):
        reason = "telemetry.entity-count-telemetry.enable is false"
    target = str(tel.get("target") or DEFAULT_TARGET)
    db = (config.get("is") or {}).get("database-uri") if isinstance(config.get("is"), Mapping) else None
    return TelemetryOptions(
        enabled=not reason,
        disabled_reason=reason,
        target=target,
        interval_s=interval,
        uid=uid_from_config(config),
        database_uri=str(db) if db else None,
    )
