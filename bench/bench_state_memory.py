"""Memory of the processors' per-UID state: RSS growth while it holds N UIDs a day.

    python -m bench.bench_state_memory [--state rollup|dedup] [--uids N] [--batch B] [--days D] [--smoke]

In a fresh child process (so nothing else's memory is counted), N distinct realistic Identity Server UIDs
(88-char base64 of a SHA-512 digest, as TTS sends them) each send one realistic ~600-byte body on one day.
`--state rollup` (the default): their snapshot rows go through the roll-up as a worker with its sink drives it
(`processors.rollup.PartitionRollup.apply_snapshot`, 8 partitions): per UID-day a key and a packed contribution.
`--state dedup`: through `processors.dedup.Deduplicator` as a `--no-sink` worker drives it (`is_duplicate` per
record, `commit()` after every batch of B). The UIDs and bodies are made on the fly and dropped, as in the
worker (the state keeps keys and hashes, not the strings). RSS (VmRSS of /proc/self/status) is read after a warm-up
batch and after the last commit (after gc); the growth divided by N is the cost per UID. A second pass sends
every body again (all duplicates) to check that the state does not grow with re-sends. With --days D the same
UIDs report on D consecutive days (the worker keeps `processors.state_days`, default 3, days of state: D=3 is its
steady state for a fleet reporting daily); bytes per UID are then per UID-day held.

`main()` prints and returns the figures as a dict; the target is <= 300 bytes per UID. The last line is
`bytes_per_uid_day=<x>`. `--smoke`: 5,000 UIDs (too few for a meaningful figure: RSS moves in pages).
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import json
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_BYTES_PER_UID = 300

# A realistic IS body (is-3.32.json's shape, ~600 bytes): uid and counts vary per deployment.
_BODY = (
    '{{"uid":"{uid}","os":{{"operating_system":"linux","arch":"amd64","binary_version":"3.32.1 (1d218216, '
    '2024-10-24T13:28:12Z)","golang_version":"go1.22.5"}},"cli":null,"entities_count":{{"gateways":{{"total":{g},'
    '"gateways_by_frequency_plan_id":{{"EU_863_870_TTN":{g1},"US_902_928_FSB_2":{g2},"AU_915_928_FSB_2":{g3}}}}},'
    '"end_devices":{{"total":{d},"activate_end_devices":{{"total":{a},"last_day":{a1},"last_week":{a2},'
    '"last_month":{a3}}}}},"applications":{{"total":{apps}}},"accounts":{{"users":{{"standard":{us},"admin":{ua}}},'
    '"organizations":{{"total":{orgs}}}}}}}}}\n'
)


def vm_rss() -> int:
    """Resident set size of this process, bytes (VmRSS of /proc/self/status)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def uid_of(i: int) -> str:
    return base64.b64encode(hashlib.sha512(b"bench-deployment-%d" % i).digest()).decode()


def body_of(i: int, uid: str) -> bytes:
    g = i % 97
    d = (i * 7919) % 100_000
    a = d * 3 // 4
    return _BODY.format(
        uid=uid,
        g=g,
        g1=g // 2,
        g2=g // 3,
        g3=g - g // 2 - g // 3,
        d=d,
        a=a,
        a1=a // 3,
        a2=a // 2,
        a3=a * 2 // 3,
        apps=i % 300,
        us=i % 50,
        ua=i % 5,
        orgs=i % 20,
    ).encode()


def snapshot_of(i: int, uid: str, day: date, body: bytes) -> Any:
    """The snapshot row `body_of(i, uid)` validates to (made directly: this bench measures the state)."""
    from core.rows import SnapshotRow, ms_to_datetime

    g = i % 97
    d = (i * 7919) % 100_000
    a = d * 3 // 4
    ms = day.toordinal() * 86_400_000 + i  # any time of the day, increasing
    return SnapshotRow(
        day,
        uid,
        "is",
        ms_to_datetime(1_700_000_000_000),
        (ms << 64) | i,
        0,
        i,
        0,
        False,
        [],
        "linux",
        "amd64",
        "3.32.1 (1d218216, 2024-10-24T13:28:12Z)",
        "3.32",
        "go1.22.5",
        g,
        {"EU_863_870_TTN": g // 2, "US_902_928_FSB_2": g // 3, "AU_915_928_FSB_2": g - g // 2 - g // 3},
        d,
        a,
        a // 3,
        a // 2,
        a * 2 // 3,
        i % 300,
        i % 50,
        i % 5,
        None,
        i % 20,
        "",
        "",
    )


class _RollupState:
    """The roll-up as a worker with its sink holds it: one PartitionRollup per partition."""

    def __init__(self) -> None:
        from core.partitioning import partition_of
        from processors.rollup import Interner, PartitionRollup

        strings = Interner()
        self.partition_of = partition_of
        self.parts = [PartitionRollup(p, 1, 3, strings) for p in range(8)]

    def feed(self, i: int, uid: str, day: date) -> bool:
        body = body_of(i, uid)
        part = self.parts[self.partition_of(uid.encode(), 8)]
        return part.apply_snapshot(snapshot_of(i, uid, day, body), body).value == "duplicate"

    def commit(self) -> None:
        pass

    def __len__(self) -> int:
        return sum(p.uid_days() for p in self.parts)


class _DedupState:
    def __init__(self) -> None:
        from processors.dedup import Deduplicator

        self.dedup = Deduplicator(keep_days=3)

    def feed(self, i: int, uid: str, day: date) -> bool:
        return self.dedup.is_duplicate(day, uid, body_of(i, uid))

    def commit(self) -> None:
        self.dedup.commit()

    def __len__(self) -> int:
        return len(self.dedup)


def _child(n: int, batch: int, days: int, kind: str) -> dict[str, Any]:
    make = _RollupState if kind == "rollup" else _DedupState
    first_day = date(2025, 1, 31)
    state = make()

    def feed(start: int, stop: int, day: date) -> int:
        dups = 0
        for lo in range(start, stop, batch):
            for i in range(lo, min(stop, lo + batch)):
                dups += state.feed(i, uid_of(i), day)
            state.commit()
        return dups

    body_bytes = len(body_of(1, uid_of(1)))
    # Warm-up: imports, allocator arenas, the first dict resizes; then the baseline.
    warm = make()
    for i in range(batch):
        warm.feed(i, uid_of(-1 - i), first_day)
    warm.commit()
    del warm
    gc.collect()
    before = vm_rss()
    started = time.perf_counter()
    for k in range(days):
        feed(0, n, date.fromordinal(first_day.toordinal() + k))
    seconds = time.perf_counter() - started
    held = len(state)
    gc.collect()
    after = vm_rss()
    last = date.fromordinal(first_day.toordinal() + days - 1)
    resend_dups = feed(0, n, last) if kind == "dedup" else 0  # the same bodies again: duplicates, no growth
    gc.collect()
    after_resend = vm_rss()
    return {
        "state": kind,
        "uids": n,
        "days": days,
        "entries": held,
        "batch": batch,
        "body_bytes": body_bytes,
        "uid_chars": len(uid_of(1)),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "rss_growth_mb": round((after - before) / 2**20, 1),
        "bytes_per_uid": round((after - before) / held, 1),
        "resend_duplicates": resend_dups,
        "rss_growth_on_resend_mb": round((after_resend - after) / 2**20, 1),
        "us_per_record": round(seconds / (n * days) * 1e6, 2),  # includes making the uid and body
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_state_memory", description="per-UID state memory")
    ap.add_argument("--state", choices=("rollup", "dedup"), default="rollup", help="which state to measure")
    ap.add_argument("--uids", type=int, default=1_000_000, help="distinct UIDs on one day")
    ap.add_argument("--batch", type=int, default=5000, help="records per commit (the worker's batch size)")
    ap.add_argument("--days", type=int, default=1, help="consecutive days the same UIDs report (state keeps 3)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the bench runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.uids = 5000
    if args.child:
        print(json.dumps(_child(args.uids, args.batch, args.days, args.state)))
        return {}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.bench_state_memory",
            "--child",
            "--uids",
            str(args.uids),
            "--batch",
            str(args.batch),
            "--days",
            str(args.days),
            "--state",
            args.state,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["target_bytes_per_uid"] = TARGET_BYTES_PER_UID
    result["target_met"] = result["bytes_per_uid"] <= TARGET_BYTES_PER_UID
    print(
        f"{'Roll-up' if result['state'] == 'rollup' else 'Deduplicator'} with {result['uids']:,} UIDs x {result['days']} day(s) = {result['entries']:,} entries held ({result['uid_chars']}-char uids, {result['body_bytes']}-byte "
        f"bodies, commit every {result['batch']}): RSS {result['rss_before_mb']} -> {result['rss_after_mb']} MB, "
        f"+{result['rss_growth_mb']} MB = {result['bytes_per_uid']} bytes per UID-day (target <= {TARGET_BYTES_PER_UID}: "
        f"{'met' if result['target_met'] else 'MISSED'}); re-sending every body: {result['resend_duplicates']:,} "
        f"duplicates, RSS +{result['rss_growth_on_resend_mb']} MB"
    )
    result["last_line"] = f"bytes_per_uid_day={result['bytes_per_uid']}"
    print(result["last_line"])
    return result


if __name__ == "__main__":
    main()
