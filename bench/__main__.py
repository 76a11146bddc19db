"""Run the benchmarks: `python -m bench` runs every bench/bench_*.py, `python -m bench sink collector` only those.

    python -m bench [--smoke] [NAME ...]

Each module's `main(argv)` (which prints its figures and returns them as a dict) runs in its own subprocess:
chDB serves one data path per process, and some benches start brokers and servers of their own. The
benches run one after the other (never side by side: they would measure each other). A summary table
follows, then each bench's verdict line (its result's `last_line`, e.g. `full_vs_best_equal_output_peer=<ratio>`
of the processors bench) as the run's last lines. The exit status is 1 if any bench failed.

`--smoke` runs every bench at a tiny size (`main(["--smoke"])`: each bench's own smoke size), and the tools that
are not benches (TOOLS: `soak_collector`, `ab_worker`, `stage_costs`) the same way: that each runs end to end and prints its
verdict line, not its figures (`make test` runs it). A bench fails its smoke if it raises, exits non-zero or
returns no `last_line`. A new bench needs a `bench/bench_<name>.py` whose `main(argv)` accepts `--smoke`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MARKER = "@@bench-result@@ "
# main(argv) with the given command line: [] (its defaults) or ["--smoke"]
RUNNER = (
    "import importlib, json, sys\n"
    "module, argv = sys.argv[1], json.loads(sys.argv[2])\n"
    "sys.argv = ['python -m ' + module, *argv]\n"
    "result = importlib.import_module(module).main(argv)\n"
    f"print({MARKER!r} + json.dumps(result, default=str), flush=True)\n"
)
#: Tools that are not benches (not run by `python -m bench`), run by `python -m bench --smoke` at their smoke size.
TOOLS = ("soak_collector", "ab_worker", "stage_costs")


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def module_of(name: str) -> str:
    return f"bench.{name}" if name in TOOLS else f"bench.bench_{name}"


def run_one(name: str, argv: list[str] | None = None) -> tuple[dict[str, Any] | None, float, int]:
    """Run the bench's (or tool's) main(argv) in a subprocess, echoing its output; returns (its dict, seconds, exit
    code)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    started = time.monotonic()
    result: dict[str, Any] | None = None
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, module_of(name), json.dumps(argv or [])],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if line.startswith(MARKER):
                result = json.loads(line[len(MARKER) :])
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        code = proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait()
        raise
    return result, time.monotonic() - started, code


def _is_figure(key: str) -> bool:
    return "per_" in key or "ratio" in key or "_over_" in key


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def headline(result: dict[str, Any] | None) -> str:
    """The figures worth a summary line: top-level rates and ratios (keys with per_, ratio, _over_; one level
    of dicts of them, e.g. msgs_per_s.full) and whether targets were met (*_met)."""
    if not result:
        return ""
    parts = []
    for key, value in result.items():
        if isinstance(value, bool):
            if key.endswith("_met"):
                parts.append(f"{key}={value}")
        elif isinstance(value, (int, float)) and _is_figure(key):
            parts.append(f"{key}={_fmt(value)}")
        elif isinstance(value, dict) and _is_figure(key):
            parts.extend(
                f"{key}.{k}={_fmt(v)}"
                for k, v in value.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            )
    return "  ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    smoke = "--smoke" in args
    args = [a for a in args if a != "--smoke"]
    names = available()
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        print(f"\navailable: {' '.join(names)}; tools (with --smoke): {' '.join(TOOLS)}")
        return 0
    known = names + list(TOOLS) if smoke else names
    wanted = [a.removeprefix("bench_").removesuffix(".py") for a in args] or known
    unknown = [w for w in wanted if w not in known]
    if unknown:
        print(f"unknown bench(es): {' '.join(unknown)}; available: {' '.join(known)}", file=sys.stderr)
        return 2
    rows, last_lines = [], []
    started = time.monotonic()
    for name in wanted:
        print(f"=== {'smoke of ' if smoke else ''}{'tool' if name in TOOLS else 'bench'} {name} ===", flush=True)
        result, seconds, code = run_one(name, ["--smoke"] if smoke else [])
        verdict = result.get("last_line") if result else None
        if code != 0 or result is None:
            status = f"FAILED (exit {code})"
        elif not isinstance(verdict, str):
            status = "FAILED (no verdict line: main() must return its last_line)"
        else:
            status = "ok"
            last_lines.append(verdict)
        rows.append((name, status, f"{seconds:.0f}s", "" if smoke else headline(result)))
        print(flush=True)
    widths = [max(len(r[i]) for r in [("bench", "status", "time", "figures"), *rows]) for i in range(4)]
    print("=== summary ===")
    for r in [("bench", "status", "time", "figures"), *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    if smoke:
        print(f"smoke: {len(rows)} benches and tools in {time.monotonic() - started:.0f}s, load {_loadavg()}")
    for line in last_lines:  # a bench's verdict line (e.g. processors: full_vs_best_equal_output_peer=<ratio>)
        print(line)
    return 0 if all(r[1] == "ok" for r in rows) else 1


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
