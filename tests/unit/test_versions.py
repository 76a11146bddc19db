"""The major.minor of any binary version: the processors' rule (processors/snapshot.py) equals the oracle's
(producers/truth_rules.py), never raises, and gives only what the analyst views can order ('unknown' or two
numbers below 1000)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.snapshot import major_minor
from producers.truth_rules import version_of

ORDERABLE = re.compile(r"(?:0|[1-9][0-9]{0,2})\.(?:0|[1-9][0-9]{0,2})|unknown")


@pytest.mark.parametrize(
    ("binary_version", "expected"),
    [
        ("3.32.1 (1d218216, 2024-10-24T13:28:12Z)", "3.32"),
        (" v3.27.0-dev", "3.27"),
        ("0003.0032", "3.32"),
        ("3.999", "3.999"),
        ("3.1000", "unknown"),  # the views order major * 1000 + minor
        ("1000.1", "unknown"),
        ("9" * 5000 + ".1", "unknown"),  # int() refuses 4,300 digits: once a poison message for the worker
        ("3." + "0" * 5000 + "1", "3.1"),  # leading zeros: read as a number
        ("٣.٣٢", "unknown"),  # Arabic-Indic digits are not a version
        ("3.", "unknown"),
        ("", "unknown"),
    ],
)
def test_major_minor(binary_version: str, expected: str) -> None:
    assert major_minor(binary_version) == expected == version_of(binary_version)


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(" \t\u2003v.0123456789٣x-"), max_size=30)
    | st.text(max_size=30)
    | st.builds(lambda a, b, rest: f"{a}.{b}{rest}", st.integers(0, 10**6), st.integers(0, 10**6), st.text(max_size=5))
)
def test_both_rules_agree_on_any_text(binary_version: str) -> None:
    got = major_minor(binary_version)
    assert got == version_of(binary_version)
    assert ORDERABLE.fullmatch(got), got
