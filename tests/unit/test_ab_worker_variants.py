"""bench.ab_worker's variants: NAME[@TREE][:VAR=VALUE,...] (pure parsing, no broker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.ab_worker import parse_variant

REPO = Path(__file__).resolve().parents[2]


def test_a_variant_names_its_settings_and_the_checkout_it_runs() -> None:
    assert parse_variant("base") == ("base", {}, None)
    assert parse_variant("big:A=1,B=x=y") == ("big", {"A": "1", "B": "x=y"}, None)
    assert parse_variant(f"before@{REPO}:A=1") == ("before", {"A": "1"}, REPO)


@pytest.mark.parametrize("spec", ["x:A", "x:=1", f"before@{REPO / 'docs'}", "before@/nonexistent/tree"])
def test_a_bad_variant_is_refused_with_what_is_wrong(spec: str) -> None:
    with pytest.raises(SystemExit, match="is not"):
        parse_variant(spec)
