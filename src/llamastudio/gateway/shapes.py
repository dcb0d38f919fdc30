"""The gateway's error shape: OpenAI's, plus ``source`` — ``studio`` when the gateway produced the
error, ``upstream`` when the engine did (its body is relayed with ``source`` added)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from llamastudio.errors import StudioError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_json(exc: StudioError, source: str = "studio") -> dict[str, Any]:
    err: dict[str, Any] = {
        "message": exc.message,
        "type": _TYPES.get(exc.status_code, "server_error"),
        "code": exc.code,
        "param": None,
        "source": source,
    }
    return {"error": err}


def retry_after(exc: StudioError) -> list[tuple[bytes, bytes]]:
    """``Retry-After`` for an error that says when to come back (queue full, backoff, busy)."""
    return [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]


def upstream_body(status: int, raw: bytes) -> bytes:
    """The engine's error body with ``source: upstream`` added (wrapped when it is not JSON)."""
    with contextlib.suppress(ValueError, RecursionError):
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            err["source"] = "upstream"
            err.setdefault("type", _TYPES.get(status, "server_error"))
            return json.dumps(data).encode()
    message = raw.decode(errors="replace")[:2000]
    err = {"message": message, "type": _TYPES.get(status, "server_error"), "code": status, "param": None}
    return json.dumps({"error": {**err, "source": "upstream"}}).encode()
