"""The page under load: when every analyst slot stays busy for `api.query_queue_s`, a panel answers 503 with
Retry-After, and the page asks again after that delay instead of showing the panel as failed (docs/dashboard.md)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from is_telemetry.apiclient import ApiError
from tests.browser import Dom, run_chromium
from tests.conftest import RunningStack, start_stack

pytestmark = pytest.mark.integration

PANELS = ["summary", "fleet", "versions", "os", "gateways-by-frequency-plan", "lifecycle", "regions", "cli"]


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """A short queue for the analyst sessions (the panels have 2, dashboard/api.py): the page's panels, asked for at
    once, cannot all get one in time."""
    env = {"IS_TELEMETRY_API__QUERY_CONCURRENCY": "1", "IS_TELEMETRY_API__QUERY_QUEUE_S": "0.5"}
    stack = start_stack(tmp_path_factory.mktemp("busy") / "stack", "--deployments", "200", env=env)
    try:
        deadline = time.monotonic() + 120
        while not analyst_days(stack) >= 25:  # the backfill's days, each with its analyst row
            assert time.monotonic() < deadline, "the simulated backfill never reached the analyst views"
            time.sleep(1)
        yield stack
    finally:
        stack.stop()


def analyst_days(stack: RunningStack) -> int:
    try:
        return int(stack.sql("SELECT count() AS days FROM analyst_daily FINAL")[0]["days"])
    except ApiError:  # busy: its one slot is taken (the console's readings use it too)
        return 0


def test_the_page_waits_for_a_busy_api_instead_of_failing(busy: RunningStack, tmp_path: Path) -> None:
    burst = PANELS * 12  # 96 at once: more than the panels' 2 sessions answer within the queue's 0.5 s
    with ThreadPoolExecutor(len(burst)) as pool:
        statuses = list(pool.map(lambda p: httpx.get(f"{busy.api_url}/api/{p}", timeout=30), burst))
    busy_answers = [r for r in statuses if r.status_code == 503]
    assert busy_answers, "this stack must be too busy for the panels at once, or the test proves nothing"
    assert all(r.headers.get("Retry-After") for r in busy_answers), [r.text for r in busy_answers]

    result = run_chromium(tmp_path / "profile", busy.api_url + "/", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    body = next(n for n in Dom(result.stdout).nodes if n["tag"] == "body")
    failed = re.findall(r"Some panels failed: [^<]*|Cannot load: [^<]*", result.stdout)
    assert body["attrs"].get("data-state") == "ready", (body["attrs"], failed)
