"""A/B of worker settings, interleaved on one broker: what a lever is worth, measured side by side.

    python -m bench.ab_worker [--rounds 3] [--messages 40000] [--smoke] NAME[@TREE][:VAR=VALUE,...] ...

Each NAME is a variant: `plain` runs the plain-consumer peer (bench/peers.py), `plain_same_work` the plain loop
doing the worker's work (its pipeline, roll-up and store, in sequence: not a peer, a reference); any other name
runs a real `is-telemetry worker` (bench/bench_processors.py `run_full`) with the given environment variables, e.g.
`IS_TELEMETRY_SINK__BATCH_SIZE=10000`. `@TREE` runs the variant's processes on the code of another checkout (a
directory holding the project, e.g. `git worktree add /tmp/before main`): a change against the code before it, on
one broker and one input. The input is produced once; then, round after round, every variant reads
it from offset 0 in turn, so all of them see the same machine load. Prints each run (for a worker, also its CPU per body
by thread), then the median per variant.

    python -m bench.ab_worker plain base big:IS_TELEMETRY_SINK__BATCH_SIZE=10000
    python -m bench.ab_worker plain base before@/tmp/before

Not one of `python -m bench`'s benches (its name does not start with bench_): a tool for trying levers. Its last
line is `fastest=<name>`. `--smoke`: one round of 2,000 bodies, `plain` and `base` unless variants are given
(`python -m bench --smoke`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import bench_processors as bp

_VARIANT = tuple[str, dict[str, str], Path | None]

#: Variant names that run a peer (bench/peers.py) rather than a worker.
PEERS = ("plain", "plain_same_work")
REPO = bp.REPO


def parse_variant(spec: str) -> _VARIANT:
    """'name@/tree:A=1,B=2' -> ('name', {'A': '1', 'B': '2'}, Path('/tree')); without '@': this checkout (None)."""
    head, _, assignments = spec.partition(":")
    name, at, tree_text = head.partition("@")
    env: dict[str, str] = {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(
                f"error: {item!r} in {spec!r} is not VAR=VALUE (example: big:IS_TELEMETRY_SINK__BATCH_SIZE=10000)"
            )
        env[key] = value
    tree = Path(tree_text).resolve() if at else None
    if tree is not None and not (tree / "is_telemetry").is_dir():
        raise SystemExit(f"error: {tree_text!r} in {spec!r} is not a checkout of the project (no is_telemetry/ in it)")
    return name, env, tree


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(prog="python -m bench.ab_worker", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "variants",
        nargs="*",
        help="NAME[@TREE][:VAR=VALUE,...]; the names plain and plain_same_work run those peers; names must differ",
    )
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=40_000)
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size: that the tool runs end to end and prints its verdict line (python -m bench --smoke)",
    )
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.messages, args.variants = 1, 2000, args.variants or ["plain", "base"]
    if not args.variants:
        ap.error("name at least one variant (example: plain base big:IS_TELEMETRY_SINK__BATCH_SIZE=10000)")
    variants = [parse_variant(v) for v in args.variants]

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _env, _tree in variants}
    with tempfile.TemporaryDirectory(prefix="bench-ab-worker-") as tmp:
        workdir = Path(tmp)
        with bp.input_topics(workdir, args.messages) as (bootstrap, topic, _single, expect, _partitions):
            for r in range(args.rounds):
                for name, env, tree in variants:
                    saved = dict(os.environ)
                    os.environ.update(env)  # the worker (a child process) inherits them
                    bp.REPO = tree or REPO  # where the children import the project from
                    try:
                        if name in PEERS:
                            fig = bp.run_child(name, bootstrap, topic, args.messages, expect, workdir)
                        else:
                            fig = bp.run_full(bootstrap, topic, args.messages, expect, workdir, export=False)
                    finally:
                        os.environ.clear()
                        os.environ.update(saved)
                        bp.REPO = REPO
                    runs[name].append(fig)
                    print(
                        f"round {r + 1} {name:14s} {fig['msgs_per_s']:>8,} msgs/s {fig['cpu_us_per_msg']:6.1f} us CPU/msg"
                        f"  load {bp._loadavg()}",
                        flush=True,
                    )
                    if "thread_cpu_us_per_msg" in fig:  # a worker: where its CPU went, us per body by thread
                        print(f"    threads {fig['thread_cpu_us_per_msg']}", flush=True)
    medians = {name: round(statistics.median(f["msgs_per_s"] for f in figs)) for name, figs in runs.items()}
    for name, figs in runs.items():
        cpu = statistics.median(f["cpu_us_per_msg"] for f in figs)
        print(
            f"{name:14s} median {medians[name]:>8,} msgs/s  {cpu:6.1f} us CPU/msg  runs {[f['msgs_per_s'] for f in figs]}"
        )
    fastest = max(medians, key=lambda name: medians[name])
    last_line = f"fastest={fastest}"
    print(last_line)
    return {"msgs_per_s": medians, "runs": runs, "last_line": last_line}


if __name__ == "__main__":
    main()
