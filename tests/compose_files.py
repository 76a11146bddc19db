"""compose/ and the migrations as the tests read them: the Grafana dashboard's queries, the views the migrations
create."""

from __future__ import annotations

import json
import re

from tests.paths import ROOT

COMPOSE = ROOT / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "tts-telemetry.json"
MIGRATIONS = sorted((ROOT / "sinks" / "migrations").glob("*.sql"))


def views_in_migrations() -> set[str]:
    sql = "\n".join(p.read_text() for p in MIGRATIONS)
    return set(re.findall(r"CREATE VIEW IF NOT EXISTS (\w+)", sql))


def dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["rawSql"]) for p in dashboard["panels"] for t in p["targets"]]
