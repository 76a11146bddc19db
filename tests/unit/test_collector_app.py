"""The collector's app object, without a server: apps in one process keep their own metrics."""

from __future__ import annotations

from producers.collector import create_app
from tests.collector_harness import FakeProducer, collector_settings


def test_many_apps_in_one_process() -> None:
    settings = collector_settings("127.0.0.1:1", "t")
    apps = [create_app(settings, producer=FakeProducer("ok")) for _ in range(3)]
    assert len({id(a.state.metrics.registry) for a in apps}) == 3
