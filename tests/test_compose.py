"""compose/: the production-shaped stack validates with docker-compose 1.29 (Debian's `docker-compose` package,
what CI has) and has the shape docs/operations.md describes. No container engine is needed: `config` only
parses, interpolates and validates. The Grafana dashboard's SQL is run against the real schema (chDB).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.dom import minidom

import pytest
import yaml

from tests.compose_files import (
    COMPOSE,
    COMPOSE_FILE,
    DASHBOARD,
    ENV_EXAMPLE,
    compose_config,
    dashboard_queries,
    docker_compose,
    env_of,
)
from tests.paths import ROOT

pytestmark = pytest.mark.integration


APP_SERVICES = ("worker", "sink", "collector", "api", "status")


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    return compose_config(COMPOSE_FILE)


def test_validates_with_docker_compose_v1(config: dict[str, Any]) -> None:
    out = subprocess.run([docker_compose(), "version", "--short"], capture_output=True, text=True).stdout.strip()
    assert out.startswith("1."), f"CI validates with docker-compose 1.29 (Debian's package); this is {out!r}"
    assert {
        "kafka-1",
        "kafka-2",
        "kafka-3",
        "clickhouse",
        "worker",
        "sink",
        "collector",
        "api",
        "proxy",
        "grafana",
    } <= set(config["services"])


def test_kafka_is_three_kraft_brokers_with_rf3_min_isr2(config: dict[str, Any]) -> None:
    brokers = {name: s for name, s in config["services"].items() if name.startswith("kafka-")}
    assert sorted(brokers) == ["kafka-1", "kafka-2", "kafka-3"]
    voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"
    ids, cluster_ids = set(), set()
    for name, s in brokers.items():
        e = env_of(s)
        assert "zookeeper" not in json.dumps(e).lower()
        assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        assert e["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert e["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
        assert e["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert e["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert e["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert e["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert e["KAFKA_NUM_PARTITIONS"] == "8"
        assert e["KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE"] == "false"
        assert e["KAFKA_LOG_DIRS"] and any(e["KAFKA_LOG_DIRS"] in v for v in s["volumes"])
        assert "healthcheck" in s
        ids.add(e["KAFKA_NODE_ID"])
        cluster_ids.add(e["CLUSTER_ID"])
    assert ids == {"1", "2", "3"} and len(cluster_ids) == 1 and cluster_ids.pop()


def test_project_processes_are_configured_by_environment(config: dict[str, Any]) -> None:
    from core.config import ENV_PREFIX, load_settings

    services = config["services"]
    for name in APP_SERVICES:
        s = services[name]
        assert s["build"]["dockerfile"] == "compose/Dockerfile" and Path(s["build"]["context"]) == ROOT
        e = env_of(s)
        assert e["IS_TELEMETRY_KAFKA__BOOTSTRAP_SERVERS"] == "kafka-1:9092,kafka-2:9092,kafka-3:9092"
        assert e["IS_TELEMETRY_KAFKA__REPLICATION_FACTOR"] == "3"
        assert e["IS_TELEMETRY_KAFKA__PARTITIONS"] == "8"
        dsn = e["IS_TELEMETRY_CLICKHOUSE__DSN"]
        assert dsn.startswith("http://") and "@clickhouse:8123/" in dsn
        # Every IS_TELEMETRY_* variable is a real setting (Settings forbids unknown keys): load them as a process does.
        ours = {k: v for k, v in e.items() if k.startswith(ENV_PREFIX)}
        saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(ENV_PREFIX)}
        try:
            os.environ.update(ours)
            s_ = load_settings(None)
        finally:
            for k in ours:
                os.environ.pop(k, None)
            os.environ.update(saved)
        assert s_.kafka.replication_factor == 3 and s_.kafka.partitions == 8
        assert s_.clickhouse.dsn == e["IS_TELEMETRY_CLICKHOUSE__DSN"]
        # No password on a command line (it would show in `ps` and `docker inspect`).
        assert not any("@clickhouse" in str(arg) for arg in s.get("command", [])), name


def test_workers_scale_and_the_sink_is_one_process(config: dict[str, Any]) -> None:
    worker, sink = config["services"]["worker"], config["services"]["sink"]
    assert worker["command"][:2] == ["worker", "--no-sink"]
    assert worker["deploy"]["replicas"] == 2
    assert worker["deploy"]["replicas"] <= int(env_of(worker)["IS_TELEMETRY_KAFKA__PARTITIONS"])
    assert sink["command"][0] == "sink" and sink["deploy"]["replicas"] == 1
    for s in (worker, sink):
        assert {"kafka-1", "kafka-2", "kafka-3", "clickhouse"} <= set(s["depends_on"])
        assert all(d["condition"] == "service_healthy" for d in s["depends_on"].values())
        assert "healthcheck" in s


def test_direct_write_variant(config: dict[str, Any]) -> None:
    direct = compose_config(COMPOSE_FILE, COMPOSE / "compose.direct.yaml")
    assert direct["services"]["worker"]["command"][0] == "worker"
    assert "--no-sink" not in direct["services"]["worker"]["command"]
    assert direct["services"]["sink"]["deploy"]["replicas"] == 0


def test_collector_sits_behind_the_tls_proxy_with_limits(config: dict[str, Any]) -> None:
    services = config["services"]
    collector, proxy = services["collector"], services["proxy"]
    assert collector["command"][:3] == ["collect", "--host", "0.0.0.0"]
    assert "ports" not in collector, "the collector is reached through the proxy only"
    assert env_of(collector)["IS_TELEMETRY_COLLECTOR__MAX_BODY_BYTES"] == "65536"
    assert {p["target"] for p in proxy["ports"]} == {80, 443}
    assert proxy["depends_on"]["collector"]["condition"] == "service_healthy"
    e = env_of(proxy)
    assert e["COLLECTOR_BODY_LIMIT"] == "64k"
    assert re.fullmatch(r"\d+r/[sm]", e["COLLECTOR_RATE_LIMIT"])

    template = (COMPOSE / "nginx" / "templates" / "default.conf.template").read_text()
    mounted = [v for v in proxy["volumes"] if v.endswith(":/etc/nginx/templates:ro")]
    assert mounted and Path(mounted[0].split(":")[0]) == template_dir()
    assert "client_max_body_size ${COLLECTOR_BODY_LIMIT};" in template
    zone = r"limit_req_zone \$binary_remote_addr zone=collect_per_client:\S+ rate=\$\{COLLECTOR_RATE_LIMIT\};"
    assert re.search(zone, template)
    collect = template[template.index("location = /collect") :]
    collect = collect[: collect.index("}\n    location")]
    assert "limit_req zone=collect_per_client" in collect and "proxy_pass http://collector;" in collect
    assert "listen 443 ssl" in template and "ssl_certificate     ${TLS_CERTIFICATE};" in template
    # Every ${VAR} of the template is one the proxy's environment sets (others would reach nginx verbatim).
    used = set(re.findall(r"\$\{([A-Z_]+)\}", template))
    assert used <= set(e), used - set(e)
    assert all(re.match(e["NGINX_ENVSUBST_FILTER"], v) for v in used)


def template_dir() -> Path:
    return COMPOSE / "nginx" / "templates"


def test_clickhouse_server_and_grafana_provisioning(config: dict[str, Any]) -> None:
    services = config["services"]
    ch = services["clickhouse"]
    assert ch["image"].startswith("clickhouse/clickhouse-server:")
    assert "healthcheck" in ch
    for volume in ch["volumes"]:
        src = volume.split(":")[0]
        if src.startswith("/"):
            assert Path(src).is_file(), src
    xml_files = sorted((COMPOSE / "clickhouse").rglob("*.xml"))
    assert len(xml_files) == 3
    for path in xml_files:
        minidom.parse(str(path))  # well-formed
    mounted = {v.split(":")[1] for v in ch["volumes"]}
    assert "/etc/clickhouse-server/users.d/analyst.xml" in mounted
    # the API's analysts' user: read-only, with limits, and the API points at it
    analyst = minidom.parse(str(COMPOSE / "clickhouse" / "users.d" / "analyst.xml"))
    profile = analyst.getElementsByTagName("analyst_readonly")[0]
    assert profile.getElementsByTagName("readonly")[0].firstChild.data == "1"  # type: ignore[union-attr]
    for limit in ("max_execution_time", "max_memory_usage", "max_result_rows", "max_result_bytes"):
        assert profile.getElementsByTagName(limit), limit
    # grants are the server's wall: SELECT on the telemetry database, temporary tables for generators, no source
    user = analyst.getElementsByTagName("users")[0].getElementsByTagName("analyst")[0]
    grants = [q.getAttribute("from_env") or q.firstChild.data for q in user.getElementsByTagName("query")]  # type: ignore[union-attr]
    assert grants == ["ANALYST_GRANT_SELECT", "ANALYST_REVOKE_REGISTER", "GRANT CREATE TEMPORARY TABLE ON *.*"], grants
    assert not user.getElementsByTagName("allow_databases")  # grants replace it (ClickHouse takes one or the other)
    db = env_of(ch).get("CLICKHOUSE_DB")
    assert env_of(ch)["ANALYST_GRANT_SELECT"] == f"GRANT SELECT ON {db}.*"
    assert env_of(ch)["ANALYST_REVOKE_REGISTER"] == f"REVOKE SELECT ON {db}.erasures"  # docs/privacy.md
    image = ch["image"].split(":")[-1]
    assert tuple(int(x) for x in image.split(".")[:2]) >= (26, 8), image  # parseQueryToJSON
    assert env_of(services["api"])["IS_TELEMETRY_API__CLICKHOUSE_DSN"].startswith("http://analyst:")

    grafana = services["grafana"]
    assert "grafana-clickhouse-datasource" in env_of(grafana)["GF_PLUGINS_PREINSTALL_SYNC"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in grafana["volumes"] if v.startswith("/")}
    provisioning = mounts["/etc/grafana/provisioning"]
    ds = yaml.safe_load((provisioning / "datasources" / "clickhouse.yaml").read_text())["datasources"]
    assert [d["type"] for d in ds] == ["grafana-clickhouse-datasource"]
    assert ds[0]["jsonData"]["host"] == "clickhouse" and ds[0]["jsonData"]["username"] == "grafana"
    providers = yaml.safe_load((provisioning / "dashboards" / "tts-telemetry.yaml").read_text())["providers"]
    dash_dir = providers[0]["options"]["path"]
    assert mounts[dash_dir] == DASHBOARD.parent
    assert env_of(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == f"{dash_dir}/{DASHBOARD.name}"
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]}
    assert uids == {ds[0]["uid"]}


DASHBOARD_SQL_CHECK = r"""
import json, sys, time
from pathlib import Path
from core.kafka import HEADER_RECEIVED_AT
from core.partitioning import partition_of
from processors.pipeline import RawRecord
from processors.replay import Replayer
from sinks.clickhouse import ClickHouseStore

store = ClickHouseStore("chdb://" + sys.argv[1]).open()
now = int(time.time() * 1000)
records = []
for i, body in enumerate(json.loads(sys.argv[2])):
    for days_ago in (0, 1, 2):  # today (incomplete) and two complete days
        at = now - days_ago * 86_400_000
        key = json.loads(body)["uid"].encode()
        records.append(RawRecord("raw", partition_of(key, 8), len(records), at, {HEADER_RECEIVED_AT: str(at).encode()},
                                 body.encode(), key))
records.append(RawRecord("raw", 0, len(records), now, {HEADER_RECEIVED_AT: str(now).encode()}, b"not json"))
Replayer(store, 8).feed(records)
out = {}
for title, sql in json.loads(sys.argv[3]):
    sql = sql.replace("$__dateFilter(day)", "day >= toDate(now('UTC')) - 90 AND day <= toDate(now('UTC'))")
    columns, rows = store.query(sql)
    out[title] = [dict(zip(columns, [str(v) for v in r])) for r in rows]
store.close()
print(json.dumps(out))
"""


def test_dashboard_sql_runs_on_the_real_schema(tmp_path: Path) -> None:
    from tests.samples import SAMPLES

    bodies = [b.decode() for b in SAMPLES.values()]
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            DASHBOARD_SQL_CHECK,
            str(tmp_path / "chdb"),
            json.dumps(bodies),
            json.dumps(dashboard_queries()),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    fleet = out["Fleet (latest complete day)"]
    assert len(fleet) == 1 and fleet[0]["Deployments"] == "3" and fleet[0]["CLI installs"] == "3"
    assert fleet[0]["Gateways"] == "5"
    by_plan = out["Gateways per frequency plan (latest complete day)"]
    plans = {row["frequency_plan_id"]: row["gateways"] for row in by_plan}
    assert plans == {"EU_863_870": "2", "EU_863_870_TTN": "3", "US_902_928_FSB_1": "1", "US_902_928_FSB_2": "2"}
    assert len(out["Deployments and CLI installs"]) == 3  # three days
    assert {row["reason"] for row in out["Rejected messages per reason"]} and all(
        row["messages"] == "1" for row in out["Rejected messages per reason"]
    )
    assert {row["version"] for row in out["Versions (latest complete day)"]} == {"3.27", "3.32", "3.33"}


def test_env_example_covers_every_variable_and_secrets_are_required(tmp_path: Path) -> None:
    text = COMPOSE_FILE.read_text() + (COMPOSE / "compose.direct.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = {
        line.split("=", 1)[0]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#") and "=" in line
    }
    assert used <= example, f"variables without an entry in compose/.env.example: {sorted(used - example)}"
    # A secret missing from the env file stops `config` with a message naming it.
    lines = [line for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith("CLICKHOUSE_PASSWORD=")]
    bad = tmp_path / "no-password.env"
    bad.write_text("\n".join(lines) + "\n")
    args = [docker_compose(), "-f", str(COMPOSE_FILE), "--env-file", str(bad), "config"]
    r = subprocess.run(
        args,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")},
    )
    assert r.returncode != 0 and "set CLICKHOUSE_PASSWORD in the env file" in r.stderr
