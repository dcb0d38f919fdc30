"""The one JSON error shape, rendered by one set of handlers for every route.

    {"error": {"code": "not_found", "message": "...", "source": "studio", "details": {...}}}

``source`` says who produced the error: ``studio`` here; the gateway adds ``upstream`` for errors
relayed from an engine.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llamastudio.errors import StudioError

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "source": "studio"}
    if details:
        err["details"] = details
    return {"error": err}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StudioError)
    async def _studio(_: Request, exc: StudioError) -> JSONResponse:
        return JSONResponse({"error": exc.to_dict()}, status_code=exc.status_code, headers=exc.headers())

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        message = f"invalid request: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        unknown = [
            ".".join(map(str, e.get("loc", ()))) for e in exc.errors() if e.get("type") == "extra_forbidden"
        ]
        if unknown:  # name every key the body should not have, not only the first
            message = f"invalid request: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
        return JSONResponse(error_body("invalid_input", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware sends this response, then re-raises, and uvicorn closes
        # the connection: say so, or a keep-alive client sends its next request into a closed socket
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal_error", f"internal error: {type(exc).__name__}"),
            status_code=500,
            headers={"Connection": "close"},
        )
