"""Telemetry bodies as TTS sends them, built from the fleet (IS and CLI objects, a changed re-send), and read back:
the Kafka key and the sender's User-Agent of a body.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

from core.schema import TelemetryMessage
from producers.simulator.fleet import (
    CLI_USAGE_MIN_MINOR,
    OLD_SENDER_MAX_MINOR,
    CliInstall,
    Deployment,
    go_version,
    version_string,
)

FALLBACK_USER_AGENT = "TheThingsStack/3.32.1 (linux/amd64)"
#: Every TTS CLI posts with Go's `http.DefaultClient`: Go's own User-Agent, not the TTS one.
CLI_USER_AGENT = "Go-http-client/1.1"


def user_agent(binary_version: str, operating_system: str, arch: str) -> str:
    """`TheThingsStack/<version> (<os>/<arch>)` as the TTS HTTP client sends it (version without build info)."""
    return f"TheThingsStack/{binary_version.split(' ')[0] or 'unknown'} ({operating_system}/{arch})"


def user_agent_of(body: bytes) -> str:
    """The User-Agent of the sender of `body`: Go's for a CLI body, the TTS one (from its os object) for an Identity
    Server's; a fixed one for unreadable bodies."""
    try:
        obj = json.loads(body)
        if obj.get("cli") is not None:
            return CLI_USER_AGENT
        o = obj["os"]
        return user_agent(str(o["binary_version"]), str(o["operating_system"]), str(o["arch"]))
    except (ValueError, TypeError, KeyError, AttributeError):  # not JSON, not an object, no os: malformed bodies
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


def usage_report(ci: CliInstall, received_at_ms: int, rng: random.Random, first: bool) -> dict[str, Any]:
    """TTS's CmdData as the 2025 CLI sends it: each command (and alias) used since its previous report with its count
    since then (the CLI empties both lists after each report; one it did not use is not listed), cobra's paths
    without the binary name. A UID's first report has nothing yet: the CLI sends as it starts, before it counts the
    command it runs. Go writes an empty list as null."""
    now_s = received_at_ms // 1000
    commands: list[dict[str, Any]] = []
    aliases: list[dict[str, Any]] = []
    if not first:
        for path, mean in ci.commands:
            n = int(rng.expovariate(1 / mean))
            if n:
                commands.append(
                    {"command_path": path, "execution_count": n, "last_used_at": now_s - rng.randint(60, 86400)}
                )
        for name, alias, mean in ci.aliases:
            n = int(rng.expovariate(1 / mean))
            if n:
                aliases.append({"command_name": name, "alias": alias, "usage_count": n})
    return {"commands": commands or None, "aliases": aliases or None}


def cli_object(
    ci: CliInstall, back: int, received_at_ms: int, rng: random.Random, first: bool = False
) -> dict[str, Any]:
    """A CLI install's message `back` days before the end day: a 2025 CLI (CLI_USAGE_MIN_MINOR and newer) reports its
    command usage under the UID of its telemetry.json (`first`: the first report of that UID), an older one `{}`."""
    minor, patch = ci.life.version((ci.minor, ci.patch), back)
    usage = minor >= CLI_USAGE_MIN_MINOR
    return {
        "uid": ci.uid_on(minor),
        "os": {
            "operating_system": ci.operating_system,
            "arch": ci.arch,
            "binary_version": version_string(minor, patch),
            "golang_version": go_version(minor, patch),
        },
        "cli": usage_report(ci, received_at_ms, rng, first) if usage else {},
        "entities_count": None,
    }


def build_body(obj: dict[str, Any]) -> bytes:
    """A valid body: through the one message definition, serialised as TTS does."""
    return TelemetryMessage.model_validate(obj).to_json()


def changed_object(obj: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A later, different body of the same sender on the same day (a few more devices, a gateway; a 2025 CLI's next
    report; an older CLI's patch upgrade)."""
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
    elif (
        "commands" in new["cli"]
    ):  # a 2025 CLI's later report (a cache directory shared by two machines): the uses since
        used = new["cli"]["commands"] or [{"command_path": "end-devices list", "last_used_at": 1735689600}]
        last = max(c["last_used_at"] for c in used) + rng.randint(1, 600)
        new["cli"] = {
            "commands": [
                {"command_path": used[0]["command_path"], "execution_count": rng.randint(1, 3), "last_used_at": last}
            ],
            "aliases": None,
        }
    else:  # "cli": {} -- the user upgraded the CLI and ran it again
        o = new["os"]
        parts = o["binary_version"].split(".")
        o["binary_version"] = f"{parts[0]}.{parts[1]}.{int(parts[2].split('-')[0]) + 1}"
    return new
