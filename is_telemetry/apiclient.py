"""One client for the project's own HTTP API: SQL, metrics, health. Used by `up`, `status`, `sql` and the tests."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from is_telemetry.errors import TelemetryError


class ApiError(TelemetryError):
    """The API answered with an error (`status`, its `code` and `message`), or could not be reached (status 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}" if status else message)
        self.status, self.code, self.message = status, code, message


def _error_of(r: httpx.Response) -> ApiError:
    try:
        body = r.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    return ApiError(r.status_code, str(body.get("error", "")), str(body.get("message", r.text[:500])))


def sql(
    base_url: str, query: str, token: str = "", timeout_s: float = 30.0, client: httpx.Client | None = None
) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a read-only query through POST /api/sql."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = base_url.rstrip("/") + "/api/sql"
    try:
        if client is not None:
            r = client.post(url, json={"query": query}, headers=headers, timeout=timeout_s)
        else:
            r = httpx.post(url, json={"query": query}, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise ApiError(0, "unreachable", f"cannot reach the API at {base_url}: {exc}") from exc
    if r.status_code != 200:
        raise _error_of(r)
    body = r.json()
    return list(body["columns"]), list(body["rows"])


def sql_rows(
    base_url: str, query: str, token: str = "", timeout_s: float = 30.0, client: httpx.Client | None = None
) -> list[dict[str, Any]]:
    columns, rows = sql(base_url, query, token, timeout_s, client)
    return [dict(zip(columns, row)) for row in rows]


def parse_samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Prometheus text as (sample name, labels, value) triples (prometheus_client's parser)."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {series: value}, a series written as `name{label="v",...}` (labels sorted)."""
    out: dict[str, float] = {}
    for name, labels, value in parse_samples(text):
        label_text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        out[f"{name}{{{label_text}}}" if label_text else name] = value
    return out


def sample(text: str, name: str, **labels: str) -> float:
    """The value of the first sample `name` whose labels include `labels` (0 when there is none)."""
    for found, have, value in parse_samples(text):
        if found == name and all(have.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def metrics(url: str, timeout_s: float = 2.0, client: httpx.Client | None = None) -> dict[str, float] | None:
    """The series of a /metrics URL, or None if it does not answer."""
    try:
        r = client.get(url, timeout=timeout_s) if client is not None else httpx.get(url, timeout=timeout_s)
        r.raise_for_status()
    except httpx.HTTPError:
        return None
    return parse_metrics(r.text)
