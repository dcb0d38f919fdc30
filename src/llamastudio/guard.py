"""Who may talk to the studio: checks that run before a request reaches a route or the gateway.

:class:`Guard` is a plain ASGI middleware (HTTP and WebSocket) used by both faces. In order:

1. **Host** (both faces). A DNS-rebinding page reaches ``127.0.0.1`` under its own host name, so
   the ``Host`` header must name us: ``localhost``, an IP address (a literal address is never
   the result of rebinding: a page that targets one is cross-origin, checked below), the bound
   ``host`` when it is a name, or one of ``allowed_hosts`` (``*``: any; ``.example.com``: the
   domain and its subdomains; ``name:port``: that port only). Otherwise 403 ``forbidden_host``.
2. **Cross-site** (API face). A state-changing request (POST/PUT/PATCH/DELETE) and every
   WebSocket handshake is refused (403 ``cross_site``) when ``Sec-Fetch-Site`` says another site
   or a present ``Origin`` is not the request's own origin (scheme + Host).
3. **Key** (API face), before a byte of the body is read: ``/api``, ``/ws`` and every
   state-changing request need the management key when it is set; ``/gateway/*`` needs the
   management *or* the gateway key when either is set. ``/ws`` also takes ``?key=`` when the
   request comes from the UI's own origin (browsers cannot set headers on WebSockets). The UI's
   pages stay public. 401 ``unauthorized``. (The :2000 gateway checks its key itself, with
   :func:`key_ok`.)
4. **CSRF header** (API face). A state-changing request needs ``Content-Type: application/json``
   or an ``X-Studio-Client`` header: either makes a browser ask first (CORS preflight), which the
   studio never grants, so a bodyless cross-site POST cannot slip through. 403
   ``csrf_header_required``.
5. **Body size** (both faces): a ``Content-Length`` over ``max_body_mb`` is refused at once (413);
   a chunked body is counted while the app reads it and cut at the limit (413).

Errors are rendered by a parametrised renderer: the studio's shape on the API, the OpenAI shape
on the gateway.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from llamastudio.config import Settings
from llamastudio.errors import (
    ClientHeaderRequired,
    CrossSite,
    ForbiddenHost,
    StudioError,
    TooLarge,
    Unauthorized,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Render = Callable[[StudioError], dict[str, Any]]

CLIENT_HEADER = "X-Studio-Client"
# the data directory's owner key (``<data>/run/owner.key``, 0600): the CLI on the studio's machine
# sends it so that the owner at the keyboard may run commands through the API
OWNER_HEADER = "X-Studio-Owner"
LOCAL_NAMES = frozenset({"localhost"})
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_ANY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})
_SAME_SITE = frozenset({b"same-origin", b"none"})
_DEFAULT_PORT = {"http": "80", "https": "443"}


def studio_error(exc: StudioError) -> dict[str, Any]:
    """The studio's one error shape (``api/errors.py``)."""
    return {"error": exc.to_dict()}


# -- keys ------------------------------------------------------------------------------------------
def _bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()


def key_matches(candidate: bytes, keys: Iterable[str | bytes | None]) -> bool:
    """Whether ``candidate`` equals one of ``keys``, compared in constant time (every key is
    compared, so the time taken does not tell which one matched)."""
    found = False
    for key in keys:
        if key:
            found |= hmac.compare_digest(candidate, _bytes(key))
    return found


def key_ok(headers: Iterable[tuple[bytes, bytes]], keys: Iterable[str | bytes | None]) -> bool:
    """Whether the request names one of ``keys`` in ``Authorization: Bearer <key>`` or
    ``x-api-key: <key>`` (ASGI raw headers, lower-case names). Empty keys are skipped; with none
    left nothing matches: callers decide first whether a key is required."""
    wanted = [_bytes(k) for k in keys if k]
    if not wanted:
        return False
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            candidate = value[7:].strip()
        elif name == b"x-api-key":
            candidate = value.strip()
        else:
            continue
        if key_matches(candidate, wanted):
            return True
    return False


# -- hosts and origins -----------------------------------------------------------------------------
def split_host(value: str) -> tuple[str, str] | None:
    """``Host`` header → (lower-case host, port or ""); None when it is malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        host, rest = value[: end + 1], value[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        port = rest[1:]
    else:
        host, _, port = value.partition(":")
        if ":" in port:  # an IPv6 address without brackets is not a valid Host
            return None
    if not host or (port and not port.isdigit()):
        return None
    return host.removesuffix("."), port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    return True


class HostRule:
    """The allowed ``Host`` names (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        entries = [h.strip().lower() for h in settings.allowed_hosts if h.strip()]
        if settings.host.strip().lower() not in _ANY_ADDRESS:
            entries.append(settings.host.strip().lower())
        self.any = "*" in entries
        self.names: set[str] = set(LOCAL_NAMES)
        self.with_port: set[tuple[str, str]] = set()
        self.suffixes: list[str] = []
        self._seen: dict[str, bool] = {}
        for entry in entries:
            if entry.startswith("."):
                self.suffixes.append(entry)
                continue
            if _is_ip(entry) and ":" in entry and not entry.startswith("["):
                entry = f"[{entry}]"  # a bare IPv6 address
            parsed = split_host(entry)
            if parsed is None:
                continue
            host, port = parsed
            if port:
                self.with_port.add((host, port))
            else:
                self.names.add(host)

    def allows(self, header: str) -> bool:
        """Whether a ``Host`` header names this machine (remembered: a client sends the same one
        on every request; the memory is bounded by forgetting all of it when full)."""
        known = self._seen.get(header)
        if known is None:
            if len(self._seen) >= 256:
                self._seen.clear()
            known = self._seen[header] = self._allows(header)
        return known

    def _allows(self, header: str) -> bool:
        parsed = split_host(header)
        if parsed is None:
            return False
        host, port = parsed
        return (
            self.any
            or host in self.names
            or _is_ip(host)
            or (host, port) in self.with_port
            or any(host == s[1:] or host.endswith(s) for s in self.suffixes)
        )


def _netloc(value: str, scheme: str) -> str:
    """``host[:port]``, lower-case, without the scheme's default port."""
    value = value.strip().lower()
    default = _DEFAULT_PORT.get(scheme)
    if default and value.endswith(":" + default):
        value = value[: -len(default) - 1]
    return value


def same_origin(origin: str, scheme: str, host: str) -> bool:
    """Whether ``Origin`` is the origin the request was sent to (``scheme://Host``)."""
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    o_scheme, sep, o_netloc = origin.strip().lower().partition("://")
    if not sep or o_scheme != scheme:
        return False
    return _netloc(o_netloc, scheme) == _netloc(host, scheme)


# -- the middleware --------------------------------------------------------------------------------
class _Limited:
    """One request's ``receive`` and ``send``, wrapped. Body bytes are counted as the app reads
    them; past the limit the 413 goes out at once (unless the app has answered already), that read
    raises :class:`TooLarge`, later reads see a disconnect (nothing more is read), and what the app
    sends after the 413 is dropped (FastAPI turns a failed body read into its own 400)."""

    def __init__(
        self, receive: Receive, send: Send, limit: int, refuse: Callable[[StudioError], Awaitable[None]]
    ) -> None:
        self._receive, self._send, self._refuse = receive, send, refuse
        self.limit = limit
        self.size = 0
        self.started = self.cut = self.answered = False

    async def receive(self) -> Message:
        if self.cut:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.cut = True
                exc = TooLarge(f"request body over {self.limit >> 20} MiB (LLAMASTUDIO_MAX_BODY_MB)")
                if not self.started:
                    self.started = self.answered = True
                    await self._refuse(exc)
                raise exc
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


class Guard:
    """The checks above around one ASGI app. ``api=True``: the UI + management face (all five
    checks); ``api=False``: the :2000 gateway (Host and body size; it checks its key itself)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: Settings,
        *,
        api: bool = True,
        render: Render = studio_error,
        gateway_render: Render | None = None,
    ) -> None:
        self.app = app
        self.hosts = HostRule(settings)
        self.api = api
        self.render = render
        self.gateway_render = gateway_render or render
        self.api_keys = [k for k in (settings.api_key,) if k]
        self.gateway_keys = [k for k in (settings.api_key, settings.gateway_api_key) if k]
        self.max_body = settings.max_body_mb << 20

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            self.check(scope)
        except StudioError as exc:
            await self._refuse(scope, send, exc)
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        # a copy: routing rewrites the scope in place (a mount sets root_path) while the body is read
        where = dict(scope)
        limited = _Limited(receive, send, self.max_body, lambda exc: self._refuse(where, send, exc))
        try:
            await self.app(scope, limited.receive, limited.send)
        except TooLarge:
            if not limited.answered:  # cut after the app had started its answer
                raise

    def check(self, scope: Scope) -> None:
        """Raise the first refusal for this request, if any (nothing is read from it)."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        host = _header(headers, b"host")
        if host is None or not self.hosts.allows(host):
            raise ForbiddenHost(
                f"Host {(host or '')[:200]!r} is not allowed (DNS rebinding protection): reach the studio by "
                "localhost or its IP address, or add the name to LLAMASTUDIO_ALLOWED_HOSTS"
            )
        is_ws = scope["type"] == "websocket"
        method = "GET" if is_ws else scope["method"]
        changing = is_ws or method in _STATE_CHANGING
        origin = _header(headers, b"origin")
        if self.api and changing:
            fetch_site = _header(headers, b"sec-fetch-site")
            if fetch_site is not None and fetch_site.encode() not in _SAME_SITE:
                raise CrossSite(f"cross-site request refused (Sec-Fetch-Site: {fetch_site})")
            if origin is not None and not same_origin(origin, scope["scheme"], host):
                raise CrossSite(f"request from another origin ({origin}) refused")
        if self.api:
            self._check_key(scope, headers, method, origin)
        if self.api and changing and not is_ws and not _client_marked(headers):
            raise ClientHeaderRequired(
                f"send `Content-Type: application/json` or an `{CLIENT_HEADER}` header "
                "(protection against cross-site requests)"
            )
        length = _header(headers, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_body:
            raise TooLarge(f"request body over {self.max_body >> 20} MiB (LLAMASTUDIO_MAX_BODY_MB)")

    def _check_key(
        self, scope: Scope, headers: list[tuple[bytes, bytes]], method: str, origin: str | None
    ) -> None:
        path = _local_path(scope)
        if _under(path, "/gateway"):
            keys = [] if path == "/gateway/health" else self.gateway_keys
        elif scope["type"] == "websocket" or _under(path, "/api") or method not in ("GET", "HEAD"):
            keys = self.api_keys
        else:
            return  # the UI's pages and assets
        if not keys or key_ok(headers, keys):
            return
        if scope["type"] == "websocket" and origin is not None:  # same-origin: checked above
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [])
            if any(key_matches(v.encode(), keys) for v in values):
                return
        which = "the management or the gateway key" if keys is self.gateway_keys else "the API key"
        raise Unauthorized(f"missing or wrong API key: send `Authorization: Bearer <key>` ({which})")

    async def _refuse(self, scope: Scope, send: Send, exc: StudioError) -> None:
        render = self.gateway_render if _under(_local_path(scope), "/gateway") else self.render
        body = json.dumps(render(exc)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if exc.status_code == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if scope["type"] == "http":
            headers.append((b"connection", b"close"))  # a body may still be coming: not read
            await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif "websocket.http.response" in scope.get("extensions", {}):  # denial with a body
            start = {"type": "websocket.http.response.start", "status": exc.status_code, "headers": headers}
            await send(start)
            await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
        else:  # the server answers the handshake with 403
            await send({"type": "websocket.close", "code": 4000 + exc.status_code, "reason": exc.code})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _local_path(scope: Scope) -> str:
    """The path below ``root_path`` (Starlette keeps the full path in ``path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _client_marked(headers: list[tuple[bytes, bytes]]) -> bool:
    """A JSON body or the studio's client header: both make a cross-origin browser preflight."""
    ctype = (_header(headers, b"content-type") or "").split(";")[0].strip().lower()
    if ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json")):
        return True
    return bool((_header(headers, CLIENT_HEADER.lower().encode()) or "").strip())


def guard_api(app: ASGIApp, settings: Settings, gateway_render: Render | None = None) -> Guard:
    """The UI + management face (:8080), its ``/gateway`` mount's errors in ``gateway_render``."""
    return Guard(app, settings, api=True, gateway_render=gateway_render)


def guard_gateway(app: ASGIApp, settings: Settings, render: Render) -> Guard:
    """The :2000 gateway: Host check and body limit, errors in ``render`` (the OpenAI shape)."""
    return Guard(app, settings, api=False, render=render)
