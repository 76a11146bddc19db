"""Plausible totals and typed CLI command usage (issue 22): what a message adds up to stays within the plausibility
limit, every count it carries is a count (CLI execution and alias usage counts included), and the oracle
(producers/truth_rules.py, its own rules) names the same reason as the processors (processors/validate.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.schema import TelemetryMessage, command_usage
from processors.validate import Reason, Rejection, validate
from tests.plausibility_bodies import LIMIT, alias, cli_body, command, is_body, reason_of

UINT64_MAX = 2**64 - 1


# -- the sum of the per-plan gateways ----------------------------------------------------------------------------


def test_three_thousand_plans_at_the_limit_each_are_implausible_together() -> None:
    body = is_body({f"P{i}": LIMIT for i in range(3000)})
    assert len(body) < 64 * 1024  # the collector's default body limit lets it in
    result = validate(body)
    assert isinstance(result, Rejection) and result.reason == Reason.IMPLAUSIBLE
    assert "3000000000000" in result.message and "gateways_by_frequency_plan_id" in result.message
    assert reason_of(body) == "implausible"


def test_the_plan_sum_is_accepted_up_to_the_limit_exactly() -> None:
    assert reason_of(is_body({"A": LIMIT // 2, "B": LIMIT - LIMIT // 2})) is None
    assert reason_of(is_body({"A": LIMIT // 2, "B": LIMIT - LIMIT // 2 + 1})) == "implausible"
    assert reason_of(is_body({"A": LIMIT}, total=LIMIT)) is None  # a total and a sum each within the limit


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=8), st.integers(min_value=0, max_value=3 * 10**6), max_size=12),
    st.integers(min_value=0, max_value=10**7),
    st.integers(min_value=120, max_value=10**7),  # the sample's other counts are at most 120
)
def test_the_totals_rule(plans: dict[str, int], total: int, limit: int) -> None:
    """Valid exactly when every count and the plans' sum are within the limit; the oracle agrees."""
    body = is_body(plans, total)
    within = total <= limit and sum(plans.values()) <= limit
    assert (reason_of(body, limit) is None) == within
    if not within:
        assert reason_of(body, limit) == "implausible"


# -- CLI command usage -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cli", "reason"),
    [
        ({}, None),  # CLIs of 2023-2024
        ({"commands": None, "aliases": None}, None),  # Go marshals a nil slice as null
        ({"commands": [], "aliases": []}, None),
        ({"commands": [command()], "aliases": [alias()]}, None),
        ({"commands": [command(extra={"x": [1, {"y": None}]}, later="field")], "new": 1}, None),  # unknown fields
        ({"commands": [command(count=UINT64_MAX)]}, "implausible"),
        ({"commands": [command(count=-7)]}, "negative"),
        ({"commands": [command(count=2**64)]}, "out_of_range"),
        ({"commands": [command(count=1.5)]}, "fractional"),
        ({"commands": [command(count="3")]}, "wrong_type"),
        ({"commands": [command(count=True)]}, "wrong_type"),
        ({"commands": [command(path=7)]}, "wrong_type"),
        ({"commands": [command(last_used_at="yesterday")]}, "wrong_type"),
        ({"commands": [command(last_used_at=-62135596800)]}, None),  # Go's zero time: a time, not a count
        ({"commands": [command(last_used_at=2**63)]}, "out_of_range"),
        ({"commands": [command(last_used_at=-(2**63) - 1)]}, "out_of_range"),
        ({"commands": {"command_path": "x"}}, "wrong_type"),
        ({"commands": ["end-devices list"]}, "wrong_type"),
        ({"aliases": [alias(count=-1)]}, "negative"),
        ({"aliases": [alias(count=LIMIT + 1)]}, "implausible"),
        ({"commands": [command(count=LIMIT)]}, None),
        ({"commands": [command(count=LIMIT // 2), command("login", LIMIT // 2 + 1)]}, "implausible"),  # the sum
        ({"aliases": [alias(LIMIT), alias(1)]}, "implausible"),
        # one object down (a named CmdData field): checked and read there too
        ({"cmd_data": {"commands": [command(count=-7)]}}, "negative"),
        ({"cmd_data": {"commands": [command(count=UINT64_MAX)]}}, "implausible"),
        ({"cmd_data": {"commands": None, "aliases": [alias()]}}, None),
        ({"a": {"commands": [command(count=LIMIT)]}, "b": {"commands": [command(count=1)]}}, "implausible"),
        ({"commands": [command(count=-1)], "cmd_data": {"commands": [command(count="x")]}}, "wrong_type"),
    ],
)
def test_cli_command_usage_is_typed(cli: Any, reason: str | None) -> None:
    assert reason_of(cli_body(cli)) == reason


def test_a_valid_cli_object_is_kept_as_sent() -> None:
    """The stored cli text is the body's cli object (key order too): the views read it with JSON functions."""
    cli = {"z": 1, "aliases": [alias()], "commands": [{"last_used_at": 1, "command_path": "a", "x": 2}]}
    message = validate(cli_body(cli))
    assert isinstance(message, TelemetryMessage)
    assert message.cli == cli and list(message.cli) == list(cli)
    assert list(message.cli["commands"][0]) == ["last_used_at", "command_path", "x"]


def test_command_usage_is_read_inlined_or_one_object_down() -> None:
    """Where the views read command usage (TTS's CLITelemetry{CmdData}: inlined, or a named field)."""
    inner = {"commands": [command("a", 2)], "aliases": [alias(3)]}
    cli = {**inner, "other": {"commands": [command("b", 4)]}, "deep": {"x": inner}, "n": None}
    assert [(path, o.get("commands")) for path, o in command_usage(cli)] == [
        ((), [command("a", 2)]),
        (("other",), [command("b", 4)]),
    ]
    assert command_usage({}) == [] and command_usage({"commands": None}) == [((), {"commands": None})]
