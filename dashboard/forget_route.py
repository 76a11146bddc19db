"""POST /api/forget: erase deployments or CLI installs through the API (docs/privacy.md, "Erasure").

`{"uids": ["<UID>", ...]}` (application/json, at most MAX_UIDS), with `Authorization: Bearer <api.token>`. Refused
(403) when no token is set: an erasure deletes data, and the API without a token is open to every local process.
The erasure itself is the composition's (sinks/erasure.py, through `install`: this stage does not import the sinks);
it runs on a thread, with the writing ClickHouse user. Answers one object per UID: `uid`, `outcome` (`erased`,
`already_erased`, `unknown`, `not_a_uid`), `message`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.config import Settings
from core.errors import Forbidden, RequestRefused, Unauthorized, Unavailable, UnsupportedMediaType
from core.httpedge import read_body
from dashboard.responses import OrjsonResponse

#: the most UIDs one request may name (each is a few mutations)
MAX_UIDS = 100
#: the erasure: UIDs -> one result object per UID; refuses (RequestRefused) before changing anything
Forget = Callable[[list[str]], list[dict[str, Any]]]

_forget: Forget | None = None


def install(forget: Forget | None) -> None:
    """Set the erasure the route runs (the composition does, before the API starts)."""
    global _forget
    _forget = forget


def route(settings: Settings) -> Route:
    token = settings.api.token.encode()

    async def forget(request: Request) -> Response:
        if not token:
            raise Forbidden(
                "erasure through the API needs api.token (IS_TELEMETRY_API__TOKEN); or run `is-telemetry forget`",
                code="token_required",
            )
        given = request.headers.get("authorization", "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, b"Bearer " + token):
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <api.token>)")
        if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != "application/json":
            raise UnsupportedMediaType('POST /api/forget takes Content-Type: application/json, {"uids": [...]}')
        uids = _uids(await read_body(request, 200 * MAX_UIDS))
        if _forget is None:
            raise Unavailable("this process cannot erase (no writing ClickHouse): use `is-telemetry forget`")
        return OrjsonResponse({"results": await asyncio.to_thread(_forget, uids)})

    return Route("/api/forget", forget, methods=["POST"])


def _uids(raw: bytes) -> list[str]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestRefused(f"the body is not JSON: {exc}") from exc
    uids = body.get("uids") if isinstance(body, dict) else None
    if not isinstance(uids, list) or not uids or not all(isinstance(u, str) for u in uids):
        raise RequestRefused('the body must be {"uids": ["<UID>", ...]}: a non-empty list of strings')
    if len(uids) > MAX_UIDS:
        raise RequestRefused(f"at most {MAX_UIDS} UIDs per request ({len(uids)} given)")
    return uids
