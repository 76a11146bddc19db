"""Bodies at and beyond the plausibility bounds, and the reason the processors give them (checked against the
oracle's)."""

from __future__ import annotations

import json
from typing import Any

from processors.validate import Rejection, validate
from producers.truth_rules import Rejected, judge
from tests.samples import SAMPLES

LIMIT = 10**9
IS = json.loads(SAMPLES["is-3.32.json"])
CLI = json.loads(SAMPLES["cli-3.30.json"])


def is_body(plans: dict[str, Any], total: Any = 0) -> bytes:
    body = json.loads(json.dumps(IS))
    body["entities_count"]["gateways"] = {"total": total, "gateways_by_frequency_plan_id": plans}
    return json.dumps(body, separators=(",", ":")).encode()


def cli_body(cli: Any) -> bytes:
    return json.dumps({**CLI, "cli": cli}, separators=(",", ":")).encode()


def command(path: str = "end-devices list", count: Any = 1, **extra: Any) -> dict[str, Any]:
    return {"command_path": path, "execution_count": count, "last_used_at": 1735700000, **extra}


def alias(count: Any = 1) -> dict[str, Any]:
    return {"command_name": "end-devices", "alias": "dev", "usage_count": count}


def reason_of(body: bytes, limit: int = LIMIT) -> str | None:
    """The processors' reason (None: valid), checked against the oracle's."""
    got = validate(body, limit)
    oracle = judge(body, limit)
    mine = got.reason.value if isinstance(got, Rejection) else None
    theirs = oracle.reason if isinstance(oracle, Rejected) else None
    assert mine == theirs, (mine, theirs, getattr(got, "message", ""), getattr(oracle, "where", ""))
    return mine
