"""One client for the project's own HTTP API: SQL, metrics, health. Used by `up`, `status`, `sql` and the tests."""

from __future__ import annotations

import io
from typing import Any, BinaryIO

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from core.errors import TelemetryError
from core.uid import erasure_key
from dashboard.forget_route import MAX_UIDS


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
    """(columns, rows) of a read-only query through POST /api/sql (its JSON format)."""
    out = io.BytesIO()
    sql_to(out, base_url, query, "json", token, timeout_s, client)
    try:
        body = orjson.loads(out.getvalue())
    except orjson.JSONDecodeError as exc:
        raise ApiError(
            200, "bad_response", f"the API at {base_url} answered something that is not JSON: {exc}"
        ) from exc
    if not isinstance(body, dict) or not isinstance(body.get("rows"), list):
        raise ApiError(200, "bad_response", f"the API at {base_url} answered JSON without rows")
    if isinstance(body.get("error"), dict):  # a result cut short: it ends with its error
        raise ApiError(200, str(body["error"].get("error", "")), str(body["error"].get("message", "")))
    return list(body["columns"]), list(body["rows"])


def sql_to(
    out: BinaryIO,
    base_url: str,
    query: str,
    fmt: str = "json",
    token: str = "",
    timeout_s: float = 30.0,
    client: httpx.Client | None = None,
) -> None:
    """Write the result of a read-only query in `fmt` (json, csv, tsv, parquet, arrow) to `out` as it arrives.
    ApiError if it is refused, or cut short (a body that does not end as HTTP says it must)."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    url = base_url.rstrip("/") + "/api/sql"
    owned = client is None
    http = client if client is not None else httpx.Client()
    try:
        with http.stream("POST", url, json={"query": query, "format": fmt}, headers=headers, timeout=timeout_s) as r:
            if r.status_code != 200:
                r.read()
                raise _error_of(r)
            for chunk in r.iter_bytes():
                out.write(chunk)
    except httpx.RemoteProtocolError as exc:  # the server closed a result it had to cut short
        raise ApiError(200, "result_cut", f"the result from {base_url} was cut short: {_last_line(out)}") from exc
    except httpx.HTTPError as exc:
        raise ApiError(0, "unreachable", f"cannot reach the API at {base_url}: {exc}") from exc
    finally:
        if owned:
            http.close()


def _last_line(out: BinaryIO) -> str:
    """The `#error ...` line a cut-short text result ends with, if `out` can be read back."""
    if not isinstance(out, io.BytesIO):
        return "see the end of the output"
    tail = out.getvalue()[-1000:].rstrip(b"\n").rsplit(b"\n", 1)[-1]
    return tail.decode("utf-8", "replace").removeprefix("#error ") if tail.startswith(b"#error ") else "no reason given"


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


def forget(
    base_url: str,
    uids: list[str],
    token: str = "",
    timeout_s: float = 300.0,
    client: httpx.Client | None = None,
    batch: int = MAX_UIDS,
) -> list[dict[str, Any]]:
    """POST /api/forget (docs/privacy.md) in requests of at most `batch` UIDs (the API's limit): one result object
    per UID (`uid`, `outcome`, `message`), in order. ApiError if a request is refused (the batches before it were
    done), or if the results do not name exactly the UIDs asked for."""
    owned = client is None
    http = client if client is not None else httpx.Client()
    out: list[dict[str, Any]] = []
    try:
        for start in range(0, len(uids), batch):
            out.extend(_forget_batch(http, base_url, uids[start : start + batch], token, timeout_s))
    finally:
        if owned:
            http.close()
    return out


def _forget_batch(
    http: httpx.Client, base_url: str, uids: list[str], token: str, timeout_s: float
) -> list[dict[str, Any]]:
    try:
        r = http.post(
            base_url.rstrip("/") + "/api/forget",
            json={"uids": uids},
            headers={"authorization": f"Bearer {token}"} if token else {},
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        raise ApiError(0, "unreachable", f"the API at {base_url} did not answer: {exc}") from exc
    if r.status_code != 200:
        raise _error_of(r)
    try:
        body = r.json()
    except ValueError:
        body = None
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list) or not all(isinstance(x, dict) for x in results):
        raise ApiError(200, "bad_response", f"the API at {base_url} answered without results")
    # one result per UID asked (the API answers each UID once, a UUID in any case once)
    asked = {erasure_key(u) for u in uids}
    named = [erasure_key(str(x.get("uid", ""))) for x in results]
    if len(named) != len(set(named)) or set(named) != asked:
        raise ApiError(
            200,
            "bad_response",
            f"the API at {base_url} answered for other UIDs than those asked for: nothing is known of their erasure; "
            "check the API's address, and ask it again",
        )
    return results
