"""The store's tables and views as the tests name them, and the ready queries of docs/analysts.md."""

from __future__ import annotations

import re

from tests.paths import ROOT

ANALYSTS_DOC = ROOT / "docs" / "analysts.md"
ANALYST_VIEWS = [
    "fleet_daily",
    "gateways_by_frequency_plan_daily",
    "deployments_by_version_daily",
    "deployments_by_os_daily",
    "deployments_by_arch_daily",
    "deployments_by_go_version_daily",
    "cli_installs_by_version_daily",
    "cli_installs_by_arch_daily",
    "cli_installs_by_os_daily",
    "rejected_daily",
    "snapshots_latest",
]


TABLES = ["schema_migrations", "snapshots", "rejections", "rollup_partitions", "pipeline_settings"]


#: Migration 0002 (the fleet over time): its tables and named views (documented column by column) and its
#: parameterized views (documented, called with arguments).
ANALYST_DEPTH_TABLES = [
    "uid_activity",
    "snapshot_changes",
    "analyst_daily",
    "retention_cohorts",
    "cli_reports",
    # migration 0009: the kept figures
    "analyst_history",
    "analyst_first_seen",
    "analyst_events",
    "analyst_jumps",
    "analyst_dirty",
    "analyst_apply_keys",
]
ANALYST_DEPTH_VIEWS = [
    "fleet_daily_carried",
    "deployment_lifecycle_daily",
    "cli_lifecycle_daily",
    "sender_lifespans",
    "retention_weekly",
    "retention_monthly",
    "fleet_size_daily",
    "regions_daily",
    "frequency_plan_regions",
    "version_adoption_daily",
    "version_adoption_speed",
    "versions_behind_daily",
    "deployments_behind_daily",
    "cli_installs_active_daily",
    "cli_command_usage_daily",
    "cli_alias_usage_daily",  # migration 0006
    "data_quality_daily",
    "sender_jumps_daily",
    "analyst_daily_pending",
    "analyst_refreshes",  # migration 0005
]


ANALYST_DEPTH_PARAMETERIZED = [
    "fleet_daily_carried_lookback",
    "lifecycle_daily",
    "sender_jumps",
    "deployments_behind",
    "carried_snapshots",
    "analyst_compute",
    "cli_usage_compute",  # migration 0006
    "cli_command_usage",
    "cli_alias_usage",
    "analyst_uid_events",  # migration 0009
    "analyst_uid_jumps",
    "analyst_totals",
    "analyst_behind_floors",
    "analyst_assemble",
]


def doc_queries() -> list[tuple[str, str]]:
    """(title, sql) of every ```sql block of docs/analysts.md; the title is the nearest heading above it."""
    text = ANALYSTS_DOC.read_text()
    out, heading = [], ""
    for m in re.finditer(r"^(#{2,4} [^\n]+)$|^```sql\n(.*?)^```", text, re.M | re.S):
        if m.group(1):
            heading = m.group(1).lstrip("#").strip()
        else:
            out.append((heading, m.group(2).strip()))
    return out


#: the views ground_truth() does not cover: name -> (key column, count column)
EXTRA_VIEWS = {
    "deployments_by_os_daily": ("operating_system", "deployments"),
    "deployments_by_arch_daily": ("arch", "deployments"),
    "deployments_by_go_version_daily": ("golang_version", "deployments"),
    "cli_installs_by_version_daily": ("version", "installs"),
    "cli_installs_by_os_daily": ("operating_system", "installs"),
    "cli_installs_by_arch_daily": ("arch", "installs"),
}
