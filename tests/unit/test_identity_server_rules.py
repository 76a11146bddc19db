"""The Identity Server producer's pure rules: Go durations, the TTS configuration it reads, the UID, the counts'
meaning, the OS and User-Agent (the database, Kafka and HTTP: tests/test_identity_server.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from core import __version__
from core.schema import DEFAULT_UID
from core.uid import uid_from_elements
from producers import identity_server as isp
from tests.tts_config import FOO_BAR_UID, write_config


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("24h", 86400),
        ("30m", 1800),
        ("1h30m", 5400),
        ("10s", 10),
        ("1.5h", 5400),
        ("300ms", 0.3),
        ("0", 0),
        ("2h45m30s", 9930),
        ("1.h.5m", 3630),
        ("-1m", -60),
        ("1m0.5s", 60.5),
        ("100us", 1e-4),
        ("5µs", 5e-6),
        ("1000000ns", 1e-3),
    ],
)
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert isp.parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "24", "1d", "h", "1h 30m", "1hh", "abc", ".h", "1.5.5h", "+", "1w"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        isp.parse_go_duration(text)


def test_load_tts_config_defaults(tmp_path: Path) -> None:
    cfg = isp.load_tts_config(write_config(tmp_path, ""))
    tel = cfg["telemetry"]
    assert tel["enable"] is True
    assert tel["target"] == "https://telemetry.thethingsstack.io/collect"
    assert tel["uid-elements"] == []
    assert tel["entity-count-telemetry"] == {"enable": True, "interval": "24h"}
    assert [cfg["console"]["ui"][k]["base-url"] for k in ("is", "gs", "ns", "as", "js")] == [
        "http://localhost:1885/api/v3"
    ] * 5
    opts = isp.telemetry_options(cfg)
    assert (
        opts.uid
        == DEFAULT_UID
        == "m64Jv5T3Bqnxz3tSgOAYD0w25UqWwP5DgIsuKbS0g5dBQkA8ZEHwlV1iDoKgjeF7uE3dt+3SDMdANJ41xDZqag=="
    )
    assert opts.interval_s == 86400 and opts.enabled and opts.database_uri is None
    # the defaults are not shared mutable state
    tel["entity-count-telemetry"]["interval"] = "1s"
    assert (
        isp.load_tts_config(write_config(tmp_path, "", "b.yml"))["telemetry"]["entity-count-telemetry"]["interval"]
        == "24h"
    )


def test_load_tts_config_nested_keys(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
is:
  database-uri: postgresql://root@db:5432/ttn_lorawan?sslmode=disable
telemetry:
  target: http://collector.example:8480/collect
  uid-elements: [foo, bar]
  entity-count-telemetry:
    interval: 1h30m
console:
  ui:
    is:
      base-url: https://eu1.example.com/api/v3
""",
    )
    cfg = isp.load_tts_config(path)
    assert cfg["telemetry"]["enable"] is True  # missing key: TTS default
    assert cfg["telemetry"]["entity-count-telemetry"]["enable"] is True
    assert cfg["console"]["ui"]["gs"]["base-url"] == "http://localhost:1885/api/v3"
    opts = isp.telemetry_options(cfg)
    assert opts.uid == FOO_BAR_UID
    assert opts.interval_s == 5400
    assert opts.target == "http://collector.example:8480/collect"
    assert opts.database_uri == "postgresql://root@db:5432/ttn_lorawan?sslmode=disable"


def test_uid_from_console_urls_and_dotted_keys(tmp_path: Path) -> None:
    urls = [f"https://{k}.example.com/api/v3" for k in ("is", "gs", "ns", "as", "js")]
    text = "console:\n  ui:\n" + "".join(
        f"    {k}:\n      base-url: {u}\n" for k, u in zip(("is", "gs", "ns", "as", "js"), urls)
    )
    text += "telemetry.entity-count-telemetry.enable: false\n"
    opts = isp.telemetry_options(isp.load_tts_config(write_config(tmp_path, text)))
    assert opts.uid == uid_from_elements(urls) != DEFAULT_UID
    assert not opts.enabled and "entity-count-telemetry.enable" in opts.disabled_reason


@pytest.mark.parametrize("interval", ["24", "1d", "0", "-1h", "3600"])
def test_bad_interval_is_a_config_error(tmp_path: Path, interval: str) -> None:
    cfg = isp.load_tts_config(
        write_config(tmp_path, f"telemetry:\n  entity-count-telemetry:\n    interval: {interval}\n")
    )
    with pytest.raises(ValueError, match="interval|duration"):
        isp.telemetry_options(cfg)


def test_gateways_by_frequency_plan_semantics() -> None:
    groups = [
        ("EU_863_870", 1),
        ("EU_863_870 EU_863_870_TTN", 2),
        (None, 0),
        ("", 3),
        ("US_902_928_FSB_2", 1),
        ("EU_863_870_TTN  AS_923", 4),
    ]
    assert isp.gateways_by_frequency_plan(groups) == {
        "AS_923": 4,
        "EU_863_870": 3,
        "EU_863_870_TTN": 6,
        "US_902_928_FSB_2": 1,
    }


def test_os_and_user_agent() -> None:
    o = isp.os_telemetry()
    assert o.operating_system in ("linux", "darwin", "windows", "freebsd")
    expected_arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
    assert o.arch == expected_arch.get(platform.machine().lower(), o.arch) and o.arch not in ("x86_64", "aarch64")
    assert o.binary_version == __version__ and o.golang_version == ""
    assert isp.user_agent() == f"TheThingsStack/{__version__} ({o.operating_system}/{o.arch})"
