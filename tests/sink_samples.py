"""The deliveries the sink tests feed a store with: a small hand-made pair of days (two deployments, a CLI install,
two rejects) and a simulated fleet (tests/test_sink.py, tests/test_analyst_views.py, tests/test_privacy.py)."""

from __future__ import annotations

import json
from datetime import date

from core.uid import uid_from_elements
from producers.simulator import Delivery, generate
from tests.chdb_store import DAY0, H

END = date(2025, 3, 31)  # the simulated fleet's last day
DAYS = 45

IS_UID_A = uid_from_elements(["https://a.example.net/api/v3"] * 5)
IS_UID_B = uid_from_elements(["https://b.example.net/api/v3"] * 5)
CLI_UID = "0f8fad5b-d9cb-469f-a165-70867728950e"


def is_body(
    uid: str,
    *,
    end_devices: int = 10,
    gateways: dict[str, int] | None = None,
    binary_version: str = "3.32.1",
    operating_system: str = "linux",
    arch: str = "amd64",
    golang_version: str = "go1.22.5",
    last_day: int = 1,
) -> bytes:
    plans = gateways if gateways is not None else {"EU_863_870_TTN": 2}
    obj = {
        "uid": uid,
        "os": {
            "operating_system": operating_system,
            "arch": arch,
            "binary_version": binary_version,
            "golang_version": golang_version,
        },
        "cli": None,
        "entities_count": {
            "gateways": {"total": sum(plans.values()), "gateways_by_frequency_plan_id": plans},
            "end_devices": {
                "total": end_devices,
                "activate_end_devices": {"total": end_devices, "last_day": last_day, "last_week": 2, "last_month": 3},
            },
            "applications": {"total": 1},
            "accounts": {"users": {"standard": 4, "admin": 1}, "organizations": {"total": 2}},
        },
    }
    return json.dumps(obj, ensure_ascii=False).encode()


def cli_body(uid: str = CLI_UID, binary_version: str = "3.34.2") -> bytes:
    os_ = {
        "operating_system": "darwin",
        "arch": "arm64",
        "binary_version": binary_version,
        "golang_version": "go1.23.1",
    }
    return json.dumps({"uid": uid, "os": os_, "cli": {}, "entities_count": None}).encode()


def small_deliveries(day0: int = DAY0) -> list[Delivery]:
    """Two days from day0 (ms): two deployments (one sending twice on day 1), a CLI install, two rejects."""
    return [
        Delivery(day0 + 1 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=10)),
        Delivery(day0 + 2 * H, IS_UID_B.encode(), is_body(IS_UID_B, end_devices=7, gateways={"US_902_928_FSB_2": 3})),
        Delivery(day0 + 3 * H, CLI_UID.encode(), cli_body()),
        Delivery(day0 + 4 * H, None, b"{not json"),
        Delivery(day0 + 5 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=12, binary_version="3.33.0")),
        Delivery(day0 + 26 * H, IS_UID_A.encode(), is_body(IS_UID_A, end_devices=13)),
        Delivery(day0 + 27 * H, b"x", b'{"uid":"x","os":null,"cli":{},"entities_count":null}'),
    ]


def fleet(deployments: int = 80, cli_installs: int = 30, seed: int = 21) -> list[Delivery]:
    sim = generate(deployments, cli_installs, DAYS, seed=seed, end_day=END, malformed_rate=0.02)
    return sim.deliveries
