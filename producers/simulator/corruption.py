"""Bodies with a problem: malformed ones the pipeline must reject (one reason each, docs/simulator.md "Malformed
kinds"), and windows that cannot hold, which it must keep and flag.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson

from core.schema import PLAUSIBILITY_LIMIT, SUMMED_COUNTS
from producers.truth_rules import REASONS

#: Malformed kinds, by the rejection reason each must get. Which apply to which sender kind: a deployment's body can
#: get every reason a body's content decides (REASONS up to `implausible`; the rest are decided by its delivery).
MALFORMED_KINDS_IS = list(REASONS[: REASONS.index("implausible") + 1])


MALFORMED_KINDS_CLI = ["not_json", "not_object", "missing_field", "wrong_type", "kind_ambiguous", "bad_uid"]


assert set(MALFORMED_KINDS_IS) <= set(REASONS)


#: The counts a corrupted body's bad value goes into (their paths in entities_count): every summed count but
#: active_last_week, left out from the start and kept out so that a seed still makes the same deliveries.
_IS_COUNT_PATHS = [tuple(path.split(".")) for name, path in SUMMED_COUNTS.items() if name != "active_last_week"]


def corrupt(obj: dict[str, Any], kind: str, rng: random.Random) -> bytes:
    """A malformed body the pipeline must reject with reason `kind` (one problem only)."""
    o = copy.deepcopy(obj)
    ec = o.get("entities_count")

    def set_count(value: Any) -> None:
        assert ec is not None
        path = rng.choice(_IS_COUNT_PATHS)
        node = ec
        for p in path[:-1]:
            node = node[p]
        node[path[-1]] = value

    if kind == "not_json":
        good = orjson.dumps(o)
        variant = rng.randrange(3)
        if variant == 0:
            return good[: rng.randint(1, len(good) - 2)]  # truncated
        if variant == 1:
            return b"uid=" + o["uid"].encode() + b"&os=linux"  # form-encoded
        return b"\xff\xfe" + good[1:]  # not UTF-8
    if kind == "not_object":
        return json.dumps(rng.choice([[o], "telemetry", 42, None]), separators=(",", ":")).encode()
    if kind == "missing_field":
        del o["uid"]
    elif kind == "wrong_type":
        if ec is not None:
            set_count(str(rng.randint(0, 500)))
        else:
            o["os"] = o["os"]["operating_system"]
    elif kind == "fractional":
        set_count(rng.randint(0, 500) + 0.5)
    elif kind == "negative":
        set_count(-rng.randint(1, 500))
    elif kind == "out_of_range":
        set_count(2**64 + rng.randint(0, 10**6))
    elif kind == "implausible":
        set_count(PLAUSIBILITY_LIMIT + rng.randint(1, 10**12))
    elif kind == "kind_ambiguous":
        if ec is not None:
            o["cli"] = {}
        else:
            o["entities_count"] = {"gateways": {"total": 1, "gateways_by_frequency_plan_id": {"EU_863_870": 1}}}
    elif kind == "bad_uid":
        uid = o["uid"]
        if ec is not None:  # not 88-char standard base64
            o["uid"] = rng.choice(
                [uid[:43], uid.rstrip("=") + "!!", uid.replace("+", "-").replace("/", "_") + "x", "localhost"]
            )
        else:  # not a UUID
            o["uid"] = rng.choice([uid.replace("-", ""), uid[:23], "not-a-uuid", uid + "-0"])
    else:
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(o, separators=(",", ":"), ensure_ascii=False).encode()


def make_inconsistent(ec: dict[str, Any], rng: random.Random) -> None:
    """One window that cannot hold (the processors keep it and flag it)."""
    ed = ec["end_devices"]
    a = ed["activate_end_devices"]
    which = rng.randrange(4)
    if which == 0:
        a["last_day"] = a["last_week"] + rng.randint(1, 5)
    elif which == 1:
        a["last_week"] = a["last_month"] + rng.randint(1, 5)
    elif which == 2:
        a["last_month"] = a["total"] + rng.randint(1, 5)
    else:
        a["total"] = ed["total"] + rng.randint(1, 5)
