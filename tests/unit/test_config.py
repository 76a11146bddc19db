"""Configuration precedence (defaults < YAML < environment < flags) and the reference doc."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import load_settings, reference_markdown
from tests.paths import ROOT


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yml"
    cfg.write_text("kafka:\n  partitions: 4\n  raw_topic: from-yaml\ncollector:\n  port: 9000\n")
    s = load_settings(cfg)
    assert (s.kafka.partitions, s.kafka.raw_topic, s.collector.port, s.api.port) == (4, "from-yaml", 9000, 8481)
    monkeypatch.setenv("IS_TELEMETRY_KAFKA__PARTITIONS", "6")
    s = load_settings(cfg)
    assert (s.kafka.partitions, s.kafka.raw_topic) == (6, "from-yaml")
    s = load_settings(cfg, kafka={"partitions": 12, "raw_topic": None}, collector={"port": None})
    assert (s.kafka.partitions, s.kafka.raw_topic, s.collector.port) == (12, "from-yaml", 9000)


def test_defaults_are_embedded() -> None:
    s = load_settings()
    assert s.embedded_kafka and s.bootstrap_servers == "127.0.0.1:19092"
    assert s.clickhouse_dsn.startswith("chdb:///") and s.kafka.partitions == 8
    assert load_settings(clickhouse={"dsn": "http://h:8123/db"}).clickhouse_dsn == "http://h:8123/db"


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings(tmp_path / "missing.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("kafka:\n  partitionz: 3\n")
    with pytest.raises(Exception, match="partitionz"):
        load_settings(bad)


def test_configuration_doc_is_current() -> None:
    assert reference_markdown() in (ROOT / "docs" / "configuration.md").read_text(), "run: is-telemetry config --docs"
