"""The one definition of The Things Stack telemetry message.

Shapes follow TTS's `pkg/telemetry/exporter/models` (see docs/telemetry-message.md):
an Identity Server sends `entities_count` and `"cli": null`; the CLI sends `cli` and
`"entities_count": null`, from 2025 with its command usage (`commands`, `aliases`) in `cli`. Unknown extra
fields are accepted everywhere: newer senders add fields. Every count is an unsigned 64-bit integer (strict:
no floats, no strings); what the processors accept of them (the plausibility limit, on each count and on
what a message's counts add up to) is `TelemetryMessage.figures()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from operator import attrgetter
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from typing_extensions import TypedDict

UINT64_MAX = 2**64 - 1

#: The plausibility limit's default (processors.plausibility_limit): a count, or what one of a message's count lists
#: adds up to, above it rejects the message as `implausible` (docs/processing.md, "Validation").
PLAUSIBILITY_LIMIT = 10**9

#: The counts of an Identity Server's message that the fleet's figures sum, declared once: the name of each (the
#: column of the rows, the roll-up, the views and the panels, in their order) and where it is in `entities_count`.
#: Every list of these names derives from this one.
SUMMED_COUNTS: dict[str, str] = {
    "gateways": "gateways.total",
    "end_devices": "end_devices.total",
    "active_end_devices": "end_devices.activate_end_devices.total",
    "active_last_day": "end_devices.activate_end_devices.last_day",
    "active_last_week": "end_devices.activate_end_devices.last_week",
    "active_last_month": "end_devices.activate_end_devices.last_month",
    "applications": "applications.total",
    "users_standard": "accounts.users.standard",
    "users_admin": "accounts.users.admin",
    "organizations": "accounts.organizations.total",
}

#: Plausible sizes (docs/telemetry-message.md, "Plausible sizes"): how many names one message may list and how long
#: each may be. Far above what TTS sends (it has about 100 frequency plans and a deployment uses a few; the CLI has a
#: few hundred commands), they bound how many distinct keys one message adds to the fleet's tables: beyond them the
#: processors reject the message as `implausible` (`TelemetryMessage.beyond_bounds()`); the JSON Schema states them.
MAX_FREQUENCY_PLANS = 256  # plan IDs in gateways_by_frequency_plan_id
MAX_CLI_COMMANDS = 512  # entries of a CLI report's `commands` lists, all of them together
MAX_CLI_ALIASES = 512  # entries of a CLI report's `aliases` lists, all of them together
MAX_NAME_LENGTH = 256  # characters of a plan ID, a command_path, an alias's command_name and alias

#: Every deployment left on TTS's default console URLs shares this UID.
DEFAULT_UID = "m64Jv5T3Bqnxz3tSgOAYD0w25UqWwP5DgIsuKbS0g5dBQkA8ZEHwlV1iDoKgjeF7uE3dt+3SDMdANJ41xDZqag=="

# Anchored at both ends; checked with fullmatch (a `$` alone would also match before a trailing newline), and
# in the JSON Schema with an exact length, so that no validator's `$` can let a trailing newline through.
IS_UID_PATTERN = r"^[A-Za-z0-9+/]{85}[AQgw]==$"
CLI_UID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_IS_UID = re.compile(IS_UID_PATTERN.strip("^$"))
_CLI_UID = re.compile(CLI_UID_PATTERN.strip("^$"))


def _valid_is_uid(uid: str) -> bool:
    """Canonical standard base64 of exactly 64 bytes (a SHA-512 digest): 86 symbols + "==", and the last
    symbol carries 2 data bits and 4 zero bits, so it is one of A, Q, g, w."""
    return _IS_UID.fullmatch(uid) is not None


def _valid_cli_uid(uid: str) -> bool:
    return _CLI_UID.fullmatch(uid) is not None


_UID_JSON_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"pattern": IS_UID_PATTERN, "minLength": 88, "maxLength": 88},
        {"pattern": CLI_UID_PATTERN, "minLength": 36, "maxLength": 36},
    ]
}


Count = Annotated[int, Field(ge=0, le=UINT64_MAX, strict=True)]
Int64 = Annotated[int, Field(ge=-(2**63), le=2**63 - 1, strict=True)]
Text = Annotated[str, Field(strict=True)]
# A name a message lists (a plan ID, a command path, an alias): its bound is stated in the JSON Schema and checked by
# beyond_bounds() after every other check, like the plausibility limit, so that an earlier reason names the message.
Name = Annotated[str, Field(strict=True, json_schema_extra={"maxLength": MAX_NAME_LENGTH})]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class OSTelemetry(_Model):
    operating_system: Annotated[str, Field(strict=True)] = ""
    arch: Annotated[str, Field(strict=True)] = ""
    binary_version: Annotated[str, Field(strict=True)] = ""
    golang_version: Annotated[str, Field(strict=True)] = ""


class Total(_Model):
    total: Count = 0


class GatewaysCount(_Model):
    total: Count = 0
    gateways_by_frequency_plan_id: dict[str, Count] = Field(
        default_factory=dict,
        json_schema_extra={"maxProperties": MAX_FREQUENCY_PLANS, "propertyNames": {"maxLength": MAX_NAME_LENGTH}},
    )


class ActiveEndDevices(_Model):
    total: Count = 0
    last_day: Count = 0
    last_week: Count = 0
    last_month: Count = 0


class EndDevicesCount(_Model):
    total: Count = 0
    activate_end_devices: ActiveEndDevices = Field(default_factory=ActiveEndDevices)


class UsersCount(_Model):
    total: Count | None = None  # older senders (around 3.27) also send a total of all users, first
    standard: Count = 0
    admin: Count = 0


class AccountsCount(_Model):
    users: UsersCount = Field(default_factory=UsersCount)
    organizations: Total = Field(default_factory=Total)


class EntitiesCount(_Model):
    gateways: GatewaysCount = Field(default_factory=GatewaysCount)
    end_devices: EndDevicesCount = Field(default_factory=EndDevicesCount)
    applications: Total = Field(default_factory=Total)
    accounts: AccountsCount = Field(default_factory=AccountsCount)

    def summed(self) -> tuple[int, ...]:
        """The values of SUMMED_COUNTS, in its order."""
        return _summed_counts(self)  # type: ignore[no-any-return]

    def largest(self) -> int:
        """The largest of the message's figures (what the plausibility check compares first, without naming them
        all): its counts and the plans' sum (which is at least each plan's count)."""
        largest = max(max(self.summed()), self.accounts.users.total or 0)
        return max(largest, sum(self.gateways.gateways_by_frequency_plan_id.values()))

    def counts(self) -> dict[str, int]:
        """Every count of the message by a flat name (per-plan gateway counts as `gateways_by_frequency_plan_id.<plan>`)."""
        out = dict(zip(SUMMED_COUNTS, self.summed()))
        if self.accounts.users.total is not None:
            out["users_total"] = self.accounts.users.total
        for plan, n in self.gateways.gateways_by_frequency_plan_id.items():
            out[f"gateways_by_frequency_plan_id.{plan}"] = n
        return out


_summed_counts = attrgetter(*SUMMED_COUNTS.values())


class CommandUsageData(TypedDict, total=False):
    """One command's use since the CLI's previous report (TTS `models.CommandUsageData`)."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    command_path: Name
    execution_count: Count
    last_used_at: Int64  # unix seconds: a time, not a count


class AliasUsageData(TypedDict, total=False):
    """One alias's use (TTS `models.AliasUsageData`)."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    command_name: Name
    alias: Name
    usage_count: Count


class CmdData(TypedDict, total=False):
    """The CLI's command usage (TTS `models.CmdData`): what was used since its previous report (the 2025 CLI empties
    both lists after each report); Go writes a nil list as null."""

    __pydantic_config__ = ConfigDict(extra="allow")  # type: ignore[misc]
    # the entries of every list of a report together are bounded (beyond_bounds()); the schema states it per list
    commands: Annotated[list[CommandUsageData] | None, Field(json_schema_extra={"maxItems": MAX_CLI_COMMANDS})]
    aliases: Annotated[list[AliasUsageData] | None, Field(json_schema_extra={"maxItems": MAX_CLI_ALIASES})]


_CMD_DATA = TypeAdapter(CmdData)


def command_usage(cli: Mapping[str, Any]) -> list[tuple[tuple[str, ...], Mapping[str, Any]]]:
    """(path, object) of each object of a CLI message's `cli` that holds command usage (CmdData): the cli object
    itself (path `()`) when it has `commands` or `aliases` (TTS's `CLITelemetry{CmdData}`, inlined), then each
    object one level down that has them (path `(key,)`: a named field). These are checked as CmdData and read by
    the analyst views (sinks/migrations/0006_cli_reports.sql, cli_usage_compute: every report summed, since the
    2025 CLI reports the uses since its previous report); usage lists deeper down are unknown fields."""
    found: list[tuple[tuple[str, ...], Mapping[str, Any]]] = []
    if "commands" in cli or "aliases" in cli:
        found.append(((), cli))
    for key, value in cli.items():
        if isinstance(value, dict) and ("commands" in value or "aliases" in value):
            found.append(((key,), value))
    return found


def _usage_sums(cli: Mapping[str, Any]) -> tuple[int, int]:
    """What the execution counts and the alias usage counts of a cli object add up to."""
    executions = usages = 0
    for _path, holder in command_usage(cli):
        executions += sum(command.get("execution_count", 0) for command in holder.get("commands") or ())
        usages += sum(alias.get("usage_count", 0) for alias in holder.get("aliases") or ())
    return executions, usages


def _too_long(names: Iterator[Any], what: str) -> str | None:
    """What is wrong with the first of `names` that is a string longer than MAX_NAME_LENGTH, or None."""
    for name in names:
        if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
            return f"{what} of {len(name)} characters is above the bound of {MAX_NAME_LENGTH}"
    return None


def _beyond_usage_bounds(cli: Mapping[str, Any]) -> str | None:
    """What exceeds the plausible sizes in a CLI report's command usage (every list command_usage() finds), or None."""
    holders = [holder for _path, holder in command_usage(cli)]
    commands = [c for holder in holders for c in holder.get("commands") or ()]
    aliases = [a for holder in holders for a in holder.get("aliases") or ()]
    if len(commands) > MAX_CLI_COMMANDS:
        return f"cli commands: {len(commands)} entries, above the bound of {MAX_CLI_COMMANDS} per report"
    if len(aliases) > MAX_CLI_ALIASES:
        return f"cli aliases: {len(aliases)} entries, above the bound of {MAX_CLI_ALIASES} per report"
    return (
        _too_long((c.get("command_path") for c in commands), "a cli command_path")
        or _too_long((a.get("command_name") for a in aliases), "a cli alias's command_name")
        or _too_long((a.get("alias") for a in aliases), "a cli alias")
    )


def _line_errors(exc: ValidationError, prefix: tuple[str, ...]) -> list[InitErrorDetails]:
    out: list[InitErrorDetails] = []
    for e in exc.errors(include_url=False):
        detail: InitErrorDetails = {"type": e["type"], "loc": prefix + tuple(e["loc"]), "input": e["input"]}
        if "ctx" in e:
            detail["ctx"] = e["ctx"]
        out.append(detail)
    return out


def _cli_as_sent(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """The cli object checked as CmdData wherever command_usage() finds it, and kept as sent (its key order too:
    the snapshot stores it as JSON text). Every problem is reported: the first reason in order names the message."""
    errors: list[InitErrorDetails] = []
    try:
        handler(value)  # the cli object itself, as CmdData (inlined)
    except ValidationError as exc:
        errors += _line_errors(exc, ())
    if isinstance(value, dict):
        for path, holder in command_usage(value):
            if path:
                try:
                    _CMD_DATA.validate_python(holder, strict=True)
                except ValidationError as exc:
                    errors += _line_errors(exc, path)
    if errors:
        raise ValidationError.from_exception_data("cli", errors)
    return value


class TelemetryMessage(_Model):
    """A telemetry body as TTS posts it to `telemetry.target`."""

    uid: Annotated[
        str,
        Field(
            strict=True, description="IS: base64 SHA-512 (88 chars); CLI: UUID v4", json_schema_extra=_UID_JSON_SCHEMA
        ),
    ]
    os: OSTelemetry | None = None
    cli: Annotated[CmdData, WrapValidator(_cli_as_sent)] | None = Field(
        default=None,
        description="CLI messages: {} (2023-2024) or command usage: `commands` and `aliases` lists, inlined or in an "
        "object one level down (each such object is checked as this one); null for an IS",
    )
    entities_count: EntitiesCount | None = Field(default=None, description="IS messages; null for the CLI")

    @model_validator(mode="after")
    def _one_kind(self) -> TelemetryMessage:
        if (self.cli is None) == (self.entities_count is None):
            raise PydanticCustomError("kind_ambiguous", "exactly one of 'cli' and 'entities_count' must be non-null")
        if not (_valid_cli_uid(self.uid) if self.cli is not None else _valid_is_uid(self.uid)):
            kind = "a UUID (CLI)" if self.cli is not None else "88-char base64 of a SHA-512 digest (Identity Server)"
            raise PydanticCustomError("bad_uid", "uid must be {kind}", {"kind": kind})
        return self

    def largest(self) -> int:
        """The largest of figures() (what the plausibility check compares first, without naming them all): counts
        are never negative, so a sum is at least each of its counts."""
        if self.entities_count is not None:
            return self.entities_count.largest()
        return max(_usage_sums(self.cli)) if self.cli else 0

    def figures(self) -> Iterator[tuple[str, int]]:
        """Every count the message carries and what each of its count lists adds up to, by name: what the
        plausibility limit bounds (processors/validate.py), so that no message moves a fleet sum by more."""
        if self.entities_count is not None:
            yield from self.entities_count.counts().items()
            plans = self.entities_count.gateways.gateways_by_frequency_plan_id
            yield "gateways_by_frequency_plan_id (the plans' sum)", sum(plans.values())
        elif self.cli:
            for path, holder in command_usage(self.cli):
                where = ".".join(("cli", *path))
                for i, command in enumerate(holder.get("commands") or ()):
                    yield f"{where}.commands.{i}.execution_count", command.get("execution_count", 0)
                for i, alias in enumerate(holder.get("aliases") or ()):
                    yield f"{where}.aliases.{i}.usage_count", alias.get("usage_count", 0)
            executions, usages = _usage_sums(self.cli)
            yield "cli execution_count (the commands' sum)", executions
            yield "cli usage_count (the aliases' sum)", usages

    def beyond_bounds(self) -> str | None:
        """What exceeds the plausible sizes (MAX_FREQUENCY_PLANS, MAX_CLI_COMMANDS, MAX_CLI_ALIASES, MAX_NAME_LENGTH),
        said with the bound, or None: one message may add only so many distinct keys to the fleet's tables."""
        if self.entities_count is not None:
            plans = self.entities_count.gateways.gateways_by_frequency_plan_id
            if len(plans) > MAX_FREQUENCY_PLANS:
                return (
                    f"entities_count.gateways.gateways_by_frequency_plan_id: {len(plans)} plan IDs, above the "
                    f"bound of {MAX_FREQUENCY_PLANS} per message"
                )
            return _too_long(iter(plans), "a frequency plan ID")
        return _beyond_usage_bounds(self.cli) if self.cli else None

    @property
    def kind(self) -> Literal["is", "cli"]:
        return "cli" if self.cli is not None else "is"

    @property
    def is_default_uid(self) -> bool:
        return self.uid == DEFAULT_UID

    def to_json(self) -> bytes:
        """Compact JSON as Go's encoding/json writes it: declaration order, sorted map keys."""
        body = self.model_dump(mode="json")
        if self.entities_count is not None:
            ec = body["entities_count"]
            if self.entities_count.accounts.users.total is None:
                del ec["accounts"]["users"]["total"]
            plans = ec["gateways"]["gateways_by_frequency_plan_id"]
            ec["gateways"]["gateways_by_frequency_plan_id"] = dict(sorted(plans.items()))
        if self.os is None:
            del body["os"]
        return orjson.dumps(body)


def json_schema() -> dict[str, Any]:
    schema = TelemetryMessage.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/is-telemetry/is-telemetry/docs/telemetry-message.schema.json"
    return schema
