"""Telemetry bodies as TTS sends them, built from the fleet (IS and CLI objects, a changed re-send), and read back:
the Kafka key and the sender's User-Agent of a body.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from is_telemetry.schema import TelemetryMessage
from producers.simulator.fleet import (
    CLI_USAGE_MIN_MINOR,
    OLD_SENDER_MAX_MINOR,
    CliInstall,
    Deployment,
    go_version,
    version_string,
)

FALLBACK_USER_AGENT = "TheThingsStack/3.32.1 (linux/amd64)"


def user_agent(binary_version: str, operating_system: str, arch: str) -> str:
    """`TheThingsStack/<version> (<os>/<arch>)` as the TTS HTTP client sends it (version without build info)."""
    return f"TheThingsStack/{binary_version.split(' ')[0] or 'unknown'} ({operating_system}/{arch})"


def user_agent_of(body: bytes) -> str:
    """The User-Agent of the sender of `body` (from its os object; a fixed one for unreadable bodies)."""
    try:
        o = json.loads(body)["os"]
        return user_agent(str(o["binary_version"]), str(o["operating_system"]), str(o["arch"]))
    except (ValueError, TypeError, KeyError):  # not JSON, not an object, no os: the simulator's malformed bodies
        return FALLBACK_USER_AGENT


def key_of(body: bytes) -> bytes | None:
    """The Kafka key: the body's uid as bytes when the body is a JSON object with a string uid, else None."""
    try:
        obj = json.loads(body)
    except ValueError:  # not JSON (json's errors and UnicodeDecodeError are ValueErrors)
        return None
    uid = obj.get("uid") if isinstance(obj, dict) else None
    return uid.encode() if isinstance(uid, str) else None


def is_object(dep: Deployment, minor: int, patch: int, counts: dict[str, int]) -> dict[str, Any]:
    """The JSON object a deployment sends, as plain data (counts already per day)."""
    old = minor <= OLD_SENDER_MAX_MINOR
    plans: dict[str, int] = {}
    g = counts["gateways"]
    if g:
        alloc = [int(g * frac) for _, frac in dep.plan_combos]
        alloc[0] += g - sum(alloc)
        for (combo, _), n in zip(dep.plan_combos, alloc):
            if n:
                for plan in combo:
                    plans[plan] = plans.get(plan, 0) + n
    users: dict[str, int] = {}
    if old:
        users["total"] = counts["users_standard"] + counts["users_admin"]
    users.update(standard=counts["users_standard"], admin=counts["users_admin"])
    return {
        "uid": dep.uid,
        "os": {
            "operating_system": dep.operating_system,
            "arch": dep.arch,
            "binary_version": version_string(minor, patch, dep.dev, dep.commit_suffix),
            "golang_version": go_version(minor, patch, dep.go_quirk),
        },
        "cli": None,
        "entities_count": {
            "gateways": {"total": 0 if old else g, "gateways_by_frequency_plan_id": dict(sorted(plans.items()))},
            "end_devices": {
                "total": counts["end_devices"],
                "activate_end_devices": {
                    "total": counts["active_end_devices"],
                    "last_day": counts["active_last_day"],
                    "last_week": counts["active_last_week"],
                    "last_month": counts["active_last_month"],
                },
            },
            "applications": {"total": counts["applications"]},
            "accounts": {"users": users, "organizations": {"total": counts["organizations"]}},
        },
    }


def cli_object(ci: CliInstall, back: int, received_at_ms: int, rng: random.Random) -> dict[str, Any]:
    cli: dict[str, Any] = {}
    minor, patch = ci.life.version((ci.minor, ci.patch), back)
    if minor >= CLI_USAGE_MIN_MINOR:
        now_s = received_at_ms // 1000
        cmds = []
        for j, (path, count, per_day) in enumerate(ci.commands):
            n = max(1, count - int(back * per_day * ci.use_probability))
            last = now_s - (rng.randint(0, 60) if j == 0 else rng.randint(60, 20 * 86400))
            cmds.append({"command_path": path, "execution_count": n, "last_used_at": last})
        aliases = [
            {"command_name": name, "alias": alias, "usage_count": max(1, n - back // 3)}
            for name, alias, n in ci.aliases
        ]
        cli = {"commands": cmds, "aliases": aliases}
    return {
        "uid": ci.uid,
        "os": {
            "operating_system": ci.operating_system,
            "arch": ci.arch,
            "binary_version": version_string(minor, patch),
            "golang_version": go_version(minor, patch),
        },
        "cli": cli,
        "entities_count": None,
    }


def build_body(obj: dict[str, Any]) -> bytes:
    """A valid body: through the one message definition, serialised as TTS does."""
    return TelemetryMessage.model_validate(obj).to_json()


def changed_object(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A later, different body of the same sender on the same day (a few more devices, a gateway, a command)."""
    new = copy.deepcopy(obj)
    ec = new.get("entities_count")
    if ec is not None:
        k = rng.randint(1, 5)
        ed = ec["end_devices"]
        ed["total"] += k
        a = ed["activate_end_devices"]
        if a["total"] + k <= ed["total"]:
            a["total"] += k
            a["last_month"] = min(a["total"], a["last_month"] + k)
            a["last_week"] = min(a["last_month"], a["last_week"] + k)
            a["last_day"] = min(a["last_week"], a["last_day"] + k)
        if rng.random() < 0.3:
            gw = ec["gateways"]
            plans = gw["gateways_by_frequency_plan_id"]
            plan = next(iter(plans), "EU_863_870_TTN")
            plans[plan] = plans.get(plan, 0) + 1
            gw["gateways_by_frequency_plan_id"] = dict(sorted(plans.items()))
            if "total" not in ec["accounts"]["users"]:  # older senders (users.total) leave gateways.total at 0
                gw["total"] += 1
    elif new["cli"].get("commands"):
        c = new["cli"]["commands"][0]
        c["execution_count"] += rng.randint(1, 3)
        c["last_used_at"] += rng.randint(1, 600)
    else:  # "cli": {} -- the user upgraded the CLI and ran it again
        o = new["os"]
        parts = o["binary_version"].split(".")
        o["binary_version"] = f"{parts[0]}.{parts[1]}.{int(parts[2].split('-')[0]) + 1}"
    return new
