"""The one error answer of every HTTP server here (the collector, the API, the edge's own): a one-line JSON body
`{"error": code, "message": message, ...}` with the refusal's status and headers (core/errors.py: `RequestRefused`;
its class, never its words, decides the status)."""

from __future__ import annotations

import orjson
from starlette.responses import Response

from core.errors import RequestRefused

JSON = "application/json"


def error_body(exc: RequestRefused) -> bytes:
    return orjson.dumps(exc.body())


def refusal(exc: RequestRefused) -> Response:
    return Response(error_body(exc), status_code=exc.status, media_type=JSON, headers=exc.headers or None)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return refusal(RequestRefused(message, status=status, code=code, headers=headers))
