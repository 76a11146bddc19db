"""`is-telemetry status`: how a report is written (the checks against a stack: tests/test_status.py)."""

from __future__ import annotations

from is_telemetry.status import Line, Report, render


def test_render_names_what_is_behind() -> None:
    report = Report(
        [Line("collector", "OK", "x"), Line("lag", "BEHIND", "12 records behind; over --max-lag 5")],
        "2026-01-01 (UTC): no data yet",
    )
    out: list[str] = []
    render(report, out.append)
    assert out[-1] == "unhealthy: lag down"
    assert any(x.strip().startswith("today") and "no data yet" in x for x in out)
