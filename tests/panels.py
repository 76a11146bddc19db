"""The dashboard's panels as the tests name them, and its CSV downloads read back."""

from __future__ import annotations

import csv
import io

TOPIC = "tts-telemetry-raw"
PANELS = ["summary", "fleet", "gateways-by-frequency-plan", "versions", "os", "rejected", "days"]


#: The panels on the fleet over time (dashboard/analyst_panels.py), over the analyst views of migration 0002.
ANALYST_PANELS = [
    "summary-carried",
    "fleet-carried",
    "lifecycle",
    "retention",
    "fleet-shape",
    "regions",
    "version-adoption",
    "versions-behind",
    "cli",
    "cli-aliases",
    "data-quality",
]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))
