"""compose/ and docs/operations.md as files: the Grafana dashboard queries only analyst views, the Dockerfile
installs the project, the cluster DDL matches the migrations (no docker-compose, no engine)."""

from __future__ import annotations

import re

from tests.compose_files import COMPOSE, MIGRATIONS, dashboard_queries, views_in_migrations
from tests.paths import ROOT


def test_dashboard_has_our_panels_and_queries_only_analyst_views() -> None:
    views = views_in_migrations()
    assert {
        "fleet_daily",
        "gateways_by_frequency_plan_daily",
        "deployments_by_version_daily",
        "deployments_by_os_daily",
        "rejected_daily",
        "cli_installs_by_version_daily",
    } <= views
    queried: set[str] = set()
    for title, sql in dashboard_queries():
        names = set(re.findall(r"\b(?:FROM|JOIN)\s+([A-Za-z_][\w.]*)", sql, re.IGNORECASE))
        assert names, (title, sql)
        assert names <= views, f"panel {title!r} reads {names - views}, not an analyst view of sinks/migrations"
        queried |= names
    assert {
        "fleet_daily",
        "gateways_by_frequency_plan_daily",
        "deployments_by_version_daily",
        "deployments_by_os_daily",
        "rejected_daily",
        "cli_installs_by_version_daily",
    } <= queried
    titles = " | ".join(t for t, _ in dashboard_queries()).lower()
    for words in (
        "fleet",
        "frequency plan",
        "active end devices",
        "deployments and cli installs",
        "version",
        "operating system",
        "rejected",
    ):
        assert words in titles, words


def test_dockerfile_installs_the_project_from_the_repository_root() -> None:
    dockerfile = (COMPOSE / "Dockerfile").read_text()
    assert re.search(r"pip install \.(\s|$)", dockerfile)
    assert 'ENTRYPOINT ["is-telemetry"]' in dockerfile
    for src in re.findall(r"^COPY (?!--from)(.+?) \./", dockerfile, re.MULTILINE):
        for part in src.split():
            if "*" not in part:
                assert (ROOT / part).exists(), f"compose/Dockerfile copies {part}, which is not in the repository"
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert f"COPY {pattern.rstrip('*')} " in dockerfile, f"the image misses the {pattern} package"


def test_operations_cluster_ddl_matches_the_schema() -> None:
    """docs/operations.md gives the ClickHouse-cluster DDL by hand: its columns must stay those of the migrations."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    schema = "\n".join(p.read_text() for p in MIGRATIONS)

    def create(text: str, name: str) -> str:
        m = re.search(rf"CREATE TABLE IF NOT EXISTS (?:telemetry\.)?{name}\b[^\n]*\n\(", text)
        assert m, name
        return text[m.start() :]

    def migrated(table: str) -> list[str]:
        """The table's columns after every migration: its CREATE, then each ADD COLUMN ... AFTER in order."""
        cols = _columns(create(schema, table))
        for m in re.finditer(rf"ALTER TABLE {table}\b(.*?);", schema, re.S):
            for add in re.finditer(r"ADD COLUMN IF NOT EXISTS (\w+) (\w+) AFTER (\w+)", m.group(1)):
                after = next(i for i, c in enumerate(cols) if c.split()[0] == add.group(3))
                cols.insert(after + 1, f"{add.group(1)} {add.group(2)}")
        return cols

    for local, table in (
        ("snapshots_local", "snapshots"),
        ("rejections", "rejections"),
        ("rollup_partitions", "rollup_partitions"),
        ("pipeline_settings", "pipeline_settings"),
    ):
        assert _columns(create(docs, local)) == migrated(table), table
    assert "ORDER BY (day, source_topic, source_partition, source_offset, received_at, source_index);" in docs
    engine = "ReplicatedReplacingMergeTree('/clickhouse/tables/{}/telemetry/{}', '{{replica}}'{})"
    assert engine.format("{shard}", "snapshots_local", ", version") in docs
    assert "Distributed(telemetry, telemetry, snapshots_local, cityHash64(uid))" in docs
    assert engine.format("all", "rollup_partitions", ", version") in docs


def _columns(create_sql: str) -> list[str]:
    body = create_sql[create_sql.index("(") + 1 :]
    depth, end = 1, 0
    for i, ch in enumerate(body):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            end = i
            break
    cols = []
    for part in re.split(r",\s*\n", body[:end]):
        part = part.strip()
        if part and not part.startswith("--"):
            cols.append(" ".join(part.split()))
    return cols
