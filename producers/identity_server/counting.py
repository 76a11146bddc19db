"""Counting an Identity Server database's entities with TTS's SQL semantics (`pkg/identityserver/telemetry.go`),
and the message built from the counts."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from core.errors import DependencyUnavailable, TelemetryError
from core.schema import (
    AccountsCount,
    ActiveEndDevices,
    EndDevicesCount,
    EntitiesCount,
    GatewaysCount,
    OSTelemetry,
    TelemetryMessage,
    Total,
    UsersCount,
)
from producers.identity_server.host import os_telemetry
from producers.identity_server.logs import one_line

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

DB_CONNECT_TIMEOUT_S = 10

#: The Identity Server's queries (newer senders: activity from last_seen_at; soft-deleted rows excluded).
COUNT_QUERIES: dict[str, str] = {
    "applications": "SELECT COUNT(*) FROM applications WHERE deleted_at IS NULL",
    "end_devices": "SELECT COUNT(*) FROM end_devices",
    "gateways": "SELECT COUNT(*) FROM gateways WHERE deleted_at IS NULL",
    "organizations": "SELECT COUNT(*) FROM organizations WHERE deleted_at IS NULL",
    "users_admin": "SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND admin IS TRUE",
    "users_standard": "SELECT COUNT(*) FROM users WHERE deleted_at IS NULL AND admin IS FALSE",
    "active_total": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at IS NOT NULL",
    "active_last_day": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 DAY'",
    "active_last_week": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 WEEK'",
    "active_last_month": "SELECT COUNT(*) FROM end_devices WHERE last_seen_at > NOW() - INTERVAL '1 MONTH'",
}
GATEWAYS_BY_PLAN_QUERY = (
    "SELECT frequency_plan_id, COUNT(frequency_plan_id) FROM gateways WHERE deleted_at IS NULL "
    "GROUP BY frequency_plan_id ORDER BY frequency_plan_id"
)


def gateways_by_frequency_plan(groups: Iterable[tuple[str | None, int]]) -> dict[str, int]:
    """TTS's map: each space-separated plan ID of a group gets the group's count (summed over groups).

    NULL and empty plan IDs are left out (TTS would emit an empty key for '' rows; the reference says
    they are not in the map).
    """
    out: dict[str, int] = {}
    for plan_ids, count in groups:
        if not plan_ids or not count:
            continue
        for plan in plan_ids.split(" "):
            if plan:
                out[plan] = out.get(plan, 0) + int(count)
    return dict(sorted(out.items()))


def count_entities(conn: psycopg.Connection[Any]) -> EntitiesCount:
    """Count the IS database's entities (one read-only snapshot) into the message's `entities_count`."""
    with conn.transaction():
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            n: dict[str, int] = {}
            for name, sql in COUNT_QUERIES.items():
                cur.execute(sql)
                row = cur.fetchone()
                n[name] = int(row[0]) if row else 0
            cur.execute(GATEWAYS_BY_PLAN_QUERY)
            plans = gateways_by_frequency_plan((r[0], int(r[1])) for r in cur.fetchall())
    return EntitiesCount(
        gateways=GatewaysCount(total=n["gateways"], gateways_by_frequency_plan_id=plans),
        end_devices=EndDevicesCount(
            total=n["end_devices"],
            activate_end_devices=ActiveEndDevices(
                total=n["active_total"],
                last_day=n["active_last_day"],
                last_week=n["active_last_week"],
                last_month=n["active_last_month"],
            ),
        ),
        applications=Total(total=n["applications"]),
        accounts=AccountsCount(
            users=UsersCount(standard=n["users_standard"], admin=n["users_admin"]),
            organizations=Total(total=n["organizations"]),
        ),
    )


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a PostgreSQL DSN (URI or key=value), never the password."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        d = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparsable DSN is reported by connect() itself
        return "<unparsable database URI>"
    host = str(d.get("host") or d.get("hostaddr") or "localhost")
    port = str(d.get("port") or 5432)
    return f"{host}:{port}/{d.get('dbname') or d.get('user') or ''}"


class DatabaseUnreachable(DependencyUnavailable):
    """The database could not be reached or the connection broke (retried)."""


class DatabaseSchemaError(TelemetryError):
    """The database answered but is not an Identity Server database (not retried)."""


def count_entities_at(dsn: str, connect_timeout_s: int = DB_CONNECT_TIMEOUT_S) -> EntitiesCount:
    """Connect, count, disconnect. Raises DatabaseUnreachable or DatabaseSchemaError."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=connect_timeout_s, application_name="is-telemetry-produce") as conn:
            return count_entities(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(one_line(exc)) from exc
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:
        raise DatabaseSchemaError(one_line(exc)) from exc
    except psycopg.Error as exc:  # anything else from the server: treat as transient
        raise DatabaseUnreachable(one_line(exc)) from exc


def build_message(uid: str, entities: EntitiesCount, os_info: OSTelemetry | None = None) -> TelemetryMessage:
    """An Identity Server message: cli null, entities_count set."""
    return TelemetryMessage(uid=uid, os=os_info or os_telemetry(), cli=None, entities_count=entities)


def summarize(entities: EntitiesCount) -> str:
    """One-line counts summary for the progress line."""
    g, ed, acc = entities.gateways, entities.end_devices, entities.accounts
    a = ed.activate_end_devices
    plans = " ".join(f"{k}={v}" for k, v in g.gateways_by_frequency_plan_id.items())
    return (
        f"gateways={g.total}"
        + (f" [{plans}]" if plans else "")
        + f" end_devices={ed.total} active={a.total} (day {a.last_day}, week {a.last_week}, month {a.last_month})"
        + f" applications={entities.applications.total}"
        + f" users={acc.users.standard}+{acc.users.admin} admin organizations={acc.organizations.total}"
    )
