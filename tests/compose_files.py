"""compose/ and the migrations as the tests read them: the Grafana dashboard's queries, the views the migrations
create, and `docker-compose config` of the files (run as CI runs it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

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


COMPOSE_FILE = COMPOSE / "compose.yaml"
ENV_EXAMPLE = COMPOSE / ".env.example"


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail(
            "docker-compose is not installed: install Debian's package with "
            "`apt-get install -y docker-compose` (v1.29; `make test-deps` does it)"
        )
    return exe


def compose_config(*files: Path, env_file: Path = ENV_EXAMPLE) -> dict[str, Any]:
    """`docker-compose -f ... --env-file ... config`, run as CI runs it, in a clean environment (no variable of the
    caller's shell may leak into the interpolation)."""
    args = [docker_compose()]
    for f in files:
        args += ["-f", str(f.relative_to(ROOT))]
    args += ["--env-file", str(env_file.relative_to(ROOT) if env_file.is_relative_to(ROOT) else env_file), "config"]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, f"{' '.join(args)} failed:\n{r.stderr}"
    return yaml.safe_load(r.stdout)


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}
