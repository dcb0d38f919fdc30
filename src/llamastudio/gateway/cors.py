"""The gateway's browser policy: its own CORS (``cors_origins``; empty = no web page may call it),
never the engine's (llama-server reflects any Origin, with credentials, so those headers are
stripped from relayed responses). A request carrying another Origin — or a cross-site one without
an Origin (an ``<img>``, a navigation) — is refused before anything is started."""

from __future__ import annotations

import re

from llamastudio.config import Settings
from llamastudio.errors import CrossOrigin
from llamastudio.gateway.asgi import Message, Scope, Send
from llamastudio.guard import same_origin

# what a preflight from an allowed origin may use (requested header names are added)
METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
_HEADERS = ("authorization", "content-type", "x-api-key")
_MAX_AGE = b"600"
_TOKEN = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")


class CorsPolicy:
    def __init__(self, settings: Settings) -> None:
        self.origins = {o.strip().lower().rstrip("/") for o in settings.cors_origins if o.strip()}

    def allowed_origin(self, scope: Scope) -> bytes | None:
        """The request's ``Origin`` when it is on the list (the response then names it); None for a
        request without one (SDKs, curl) or from the gateway's own origin; else refused."""
        origin: bytes | None = None
        host: bytes | None = None
        site: bytes | None = None
        for k, v in scope["headers"]:
            if k == b"origin":
                origin = v
            elif k == b"host":
                host = v
            elif k == b"sec-fetch-site":
                site = v
        if origin is None:
            if site == b"cross-site":
                raise CrossOrigin("cross-site request refused (Sec-Fetch-Site: cross-site)")
            return None
        text = origin.decode("latin-1").strip()
        if text.lower().rstrip("/") in self.origins:
            return origin
        if host is not None and same_origin(text, scope.get("scheme", "http"), host.decode("latin-1")):
            return None
        raise CrossOrigin(
            f"requests from the web origin {text[:200]!r} are not allowed: "
            "add it to LLAMASTUDIO_CORS_ORIGINS to let that page use the gateway"
        )


def is_engine_cors(name: bytes) -> bool:
    """A relayed header that is the engine's CORS policy (the gateway sets its own)."""
    return name.startswith(b"access-control-")


def with_cors(send: Send, origin: bytes) -> Send:
    """``send`` that grants ``origin`` on the response (no credentials: keys are headers)."""

    async def send_(message: Message) -> None:
        if message["type"] == "http.response.start":
            grant = [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
            message = {**message, "headers": [*message.get("headers", ()), *grant]}
        await send(message)

    return send_


async def preflight(send: Send, headers: list[tuple[bytes, bytes]], origin: bytes | None) -> None:
    """Answer ``OPTIONS``: the methods, and for a listed origin the CORS grants (the requested
    header names are granted too: browser SDKs send their own, e.g. ``x-stainless-*``)."""
    out = [(b"allow", METHODS)]
    if origin is not None:
        names = dict.fromkeys(_HEADERS)
        requested = next((v for k, v in headers if k == b"access-control-request-headers"), b"")
        for name in requested.decode("latin-1").lower().split(",")[:64]:
            if _TOKEN.match(name.strip()):
                names[name.strip()] = None
        out += [
            (b"access-control-allow-methods", METHODS),
            (b"access-control-allow-headers", ", ".join(names).encode()),
            (b"access-control-max-age", _MAX_AGE),
        ]
    await send({"type": "http.response.start", "status": 204, "headers": out})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
