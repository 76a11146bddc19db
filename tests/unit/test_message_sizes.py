"""Plausible sizes (the security test's finding 5): one message lists at most so many frequency plans, CLI commands
and aliases, each name at most so long; beyond that it is rejected as `implausible` with a message naming the bound,
and the oracle (producers/truth_rules.py, its own rule) names the same reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from core.schema import (
    MAX_CLI_ALIASES,
    MAX_CLI_COMMANDS,
    MAX_FREQUENCY_PLANS,
    MAX_NAME_LENGTH,
    TelemetryMessage,
    json_schema,
)
from processors.validate import Reason, Rejection, validate
from producers import truth_rules
from tests.plausibility_bodies import alias, cli_body, command, is_body, reason_of


def plans(n: int, prefix: str = "C0_") -> dict[str, int]:
    return {f"{prefix}{j}": 1 for j in range(n)}


def commands(n: int) -> list[dict[str, Any]]:
    return [command(f"k0_{j}") for j in range(n)]


def aliases(n: int) -> list[dict[str, Any]]:
    return [{"command_name": f"c{j}", "alias": f"a{j}", "usage_count": 1} for j in range(n)]


def rejection(body: bytes) -> Rejection:
    result = validate(body)
    assert isinstance(result, Rejection), "accepted"
    assert result.reason == Reason.IMPLAUSIBLE, result
    return result


def test_the_bounds_are_far_above_what_tts_sends_and_below_the_attack() -> None:
    """TTS has about 100 frequency plans (a deployment uses a few), the CLI a few hundred commands; the security test
    sent 4,000 plans and 800 commands per message."""
    assert 150 <= MAX_FREQUENCY_PLANS < 4000
    assert 300 <= MAX_CLI_COMMANDS < 800 and 300 <= MAX_CLI_ALIASES < 800
    assert 100 <= MAX_NAME_LENGTH <= 1000
    # the oracle has its own declaration of the same documented bounds
    assert (truth_rules.MAX_PLANS, truth_rules.MAX_COMMANDS, truth_rules.MAX_ALIASES, truth_rules.MAX_NAME) == (
        MAX_FREQUENCY_PLANS,
        MAX_CLI_COMMANDS,
        MAX_CLI_ALIASES,
        MAX_NAME_LENGTH,
    )


def test_the_security_tests_4000_plans_are_implausible() -> None:
    body = is_body(plans(4000), total=4000)  # every count 1: within the plausibility limit
    assert len(body) < 64 * 1024  # the collector lets it in
    message = rejection(body).message
    assert "4000" in message and str(MAX_FREQUENCY_PLANS) in message and "gateways_by_frequency_plan_id" in message
    assert reason_of(body) == "implausible"


def test_the_security_tests_800_commands_are_implausible() -> None:
    body = cli_body({"commands": commands(800), "aliases": None})
    assert len(body) < 64 * 1024
    message = rejection(body).message
    assert "800" in message and str(MAX_CLI_COMMANDS) in message and "commands" in message
    assert reason_of(body) == "implausible"


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        (is_body(plans(MAX_FREQUENCY_PLANS)), True),
        (is_body(plans(MAX_FREQUENCY_PLANS + 1)), False),
        (is_body({"P" * MAX_NAME_LENGTH: 1}), True),
        (is_body({"P" * (MAX_NAME_LENGTH + 1): 1}), False),
        (is_body({"é" * MAX_NAME_LENGTH: 1}), True),  # characters, not bytes
        (cli_body({"commands": commands(MAX_CLI_COMMANDS)}), True),
        (cli_body({"commands": commands(MAX_CLI_COMMANDS + 1)}), False),
        (cli_body({"aliases": aliases(MAX_CLI_ALIASES)}), True),
        (cli_body({"aliases": aliases(MAX_CLI_ALIASES + 1)}), False),
        (cli_body({"commands": [command("c" * MAX_NAME_LENGTH)]}), True),
        (cli_body({"commands": [command("c" * (MAX_NAME_LENGTH + 1))]}), False),
        (cli_body({"aliases": [{**alias(), "alias": "a" * (MAX_NAME_LENGTH + 1)}]}), False),
        (cli_body({"aliases": [{**alias(), "command_name": "n" * (MAX_NAME_LENGTH + 1)}]}), False),
        (cli_body({"commands": [{"execution_count": 1}] * (MAX_CLI_COMMANDS + 1)}), False),  # entries, path or not
        # a report's lists add up, wherever they sit (inlined and one object down)
        (
            cli_body({"commands": commands(MAX_CLI_COMMANDS // 2), "x": {"commands": commands(MAX_CLI_COMMANDS // 2)}}),
            True,
        ),
        (
            cli_body(
                {"commands": commands(MAX_CLI_COMMANDS // 2), "x": {"commands": commands(MAX_CLI_COMMANDS // 2 + 1)}}
            ),
            False,
        ),
        (cli_body({"a": {"aliases": aliases(MAX_CLI_ALIASES)}, "b": {"aliases": aliases(1)}}), False),
        # deeper lists are unknown fields: not read, not bounded
        (cli_body({"x": {"y": {"commands": commands(MAX_CLI_COMMANDS + 1)}}}), True),
    ],
)
def test_sizes_up_to_their_bound_exactly(body: bytes, valid: bool) -> None:
    assert reason_of(body) == (None if valid else "implausible")
    if not valid:
        assert "bound" in rejection(body).message


def test_an_earlier_reason_still_names_the_message() -> None:
    """Sizes are checked after the other reasons, as the plausibility limit is: a bad UID stays `bad_uid`."""
    doc = json.loads(is_body(plans(MAX_FREQUENCY_PLANS + 1)))
    doc["uid"] = "short"
    assert reason_of(json.dumps(doc).encode()) == "bad_uid"
    doc = json.loads(cli_body({"commands": [*commands(MAX_CLI_COMMANDS), command(count=-1)]}))
    assert reason_of(json.dumps(doc).encode()) == "negative"


def test_the_json_schema_states_the_bounds() -> None:
    text = json.dumps(json_schema())
    schema = json_schema()["$defs"]
    plans_schema = schema["GatewaysCount"]["properties"]["gateways_by_frequency_plan_id"]
    assert plans_schema["maxProperties"] == MAX_FREQUENCY_PLANS
    assert plans_schema["propertyNames"] == {"maxLength": MAX_NAME_LENGTH}
    assert f'"maxItems": {MAX_CLI_COMMANDS}' in text and f'"maxItems": {MAX_CLI_ALIASES}' in text
    assert text.count(f'"maxLength": {MAX_NAME_LENGTH}') >= 4  # plan IDs, command_path, command_name, alias
    assert isinstance(validate(is_body(plans(3))), TelemetryMessage)
