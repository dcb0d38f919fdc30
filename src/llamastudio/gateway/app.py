"""The gateway: every model behind one OpenAI-compatible endpoint (default 127.0.0.1:2000).

A plain ASGI app — no framework routing on the hot path. A request names its model in the JSON
body's ``model`` field (or ``?model=`` for GETs); the runtime resolves names and aliases, starts
the model if needed (the scheduler queues, limits and evicts), and the request is relayed to that
model's llama-server. Responses are relayed as bytes: no per-chunk parsing or re-encoding (only a
substring scan for llama-server's ``timings``, for metrics). A client that disconnects cancels
the upstream request (its connection is closed, which llama-server notices and stops generating).

Errors have the OpenAI shape plus ``source``: ``studio`` when the gateway produced them,
``upstream`` when the engine did (its body is relayed with ``source`` added).

Browsers: the gateway sets its own CORS policy (``cors_origins``, empty = no web page may call
it) and strips whatever the engine sends (llama-server reflects any Origin, with credentials).
A request carrying another Origin is refused before anything is started, and a body must be
JSON: ``text/plain``, form and multipart bodies are what a page can send without a preflight.
Each engine answers only requests bearing its per-process key (``engines/keys.py``), which the
gateway adds upstream; the client's own credentials are never relayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import aiohttp

from llamastudio.config import Settings
from llamastudio.errors import CrossOrigin, InvalidInput, NotFound, StudioError, UnsupportedMediaType
from llamastudio.gateway.metrics import UNKNOWN, Metrics, path_label
from llamastudio.guard import key_ok, same_origin
from llamastudio.runtime.manager import Runtime
from llamastudio.runtime.process import EngineProcess

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)
MAX_BODY = 64 << 20
_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"te",
    b"trailers",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
    b"authorization",
    b"x-api-key",
}
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


# CORS: what a preflight from an allowed origin may use (requested header names are added).
_CORS_METHODS = b"GET, POST, PUT, DELETE, OPTIONS"
_CORS_HEADERS = ("authorization", "content-type", "x-api-key")
_CORS_MAX_AGE = b"600"
_TOKEN = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]{1,64}$")

# Request bodies: JSON only. The llama-server build the rig pins (b11434) parses a
# multipart/form-data body on *every* POST route into its JSON body, and its one route that
# needs it is OpenAI's audio transcription (a file upload); on every other route JSON is the only
# type it documents. Those two paths alone take multipart here; a cross-site page sending one
# carries an Origin, refused above unless listed.
_JSON = b"application/json"
_MULTIPART = b"multipart/form-data"
_MULTIPART_PATHS = frozenset({"/v1/audio/transcriptions", "/audio/transcriptions"})
_FORM_MODEL = re.compile(
    rb'content-disposition:[^\r\n]*\bname="model"[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n([^\r\n]{1,512})\r\n',
    re.IGNORECASE,
)

# A kill -9 just before a request: the connection is refused (or reset) before any response byte
# while the process's exit is not reaped yet. The gateway waits this long for the exit; if the
# process is gone, the model is started again and the request sent once more.
EXIT_WAIT = 1.0
_GONE = -1  # _relay's status when the engine died before answering (the request may be retried)


class GatewayUnauthorized(StudioError):
    status_code = 401
    code = "invalid_api_key"


class UpstreamFailed(StudioError):
    status_code = 502
    code = "upstream_failed"


def error_json(exc: StudioError, source: str = "studio") -> dict[str, Any]:
    err: dict[str, Any] = {
        "message": exc.message,
        "type": _TYPES.get(exc.status_code, "server_error"),
        "code": exc.code,
        "param": None,
        "source": source,
    }
    return {"error": err}


class _Disconnected(Exception):
    pass


class Gateway:
    def __init__(
        self,
        runtime: Runtime,
        settings: Settings,
        metrics: Metrics | None = None,
        keys: list[str | None] | None = None,
    ) -> None:
        """``keys``: accepted API keys (default: the gateway key, when set)."""
        self.runtime = runtime
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._session: aiohttp.ClientSession | None = None
        self._keys = {k.encode() for k in (keys if keys is not None else [settings.gateway_api_key]) if k}
        self._origins = {o.strip().lower().rstrip("/") for o in settings.cors_origins if o.strip()}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=None, keepalive_timeout=30),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    # -- ASGI ----------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = _path(scope)
        method: str = scope["method"]
        try:
            if path == "/health":
                await _json(send, 200, {"status": "ok"})
                return
            origin = self._allowed_origin(scope)
            if origin is not None:  # every answer to it, errors included, names it
                send = _with_cors(send, origin)
            if method == "OPTIONS":  # preflights carry no key; never relayed
                await _preflight(send, scope["headers"], origin)
                return
            self._check_key(scope)
            if path == "/metrics":
                await _send(send, 200, self._render_metrics().encode(), b"text/plain; version=0.0.4")
            elif path in ("/v1/models", "/models") and method == "GET":
                await _json(send, 200, self._models())
            elif path.startswith("/v1/models/") and method == "GET":
                await _json(send, 200, self._model(path.removeprefix("/v1/models/")))
            else:
                await self._proxy(scope, receive, send)
        except StudioError as exc:
            headers = []
            retry = exc.details.get("retry_after") if exc.details else None
            if retry is not None:
                headers.append((b"retry-after", str(int(retry)).encode()))
            await _json(send, exc.status_code, error_json(exc), headers)
        except _Disconnected:
            return
        except Exception:  # a bug: logged, and still the one error shape
            log.exception("gateway error on %s %s", method, path)
            with contextlib.suppress(Exception):
                await _json(send, 500, error_json(StudioError("internal gateway error (see the studio log)")))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _allowed_origin(self, scope: Scope) -> bytes | None:
        """The request's ``Origin`` when it is on the CORS list (the response then names it), else
        None for a request without one (SDKs, curl) or from the gateway's own origin. A request
        from any other web origin, or a cross-site one without an Origin (an ``<img>``, a
        navigation), is refused: the gateway's answers are not for other pages."""
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
        if text.lower().rstrip("/") in self._origins:
            return origin
        if host is not None and same_origin(text, scope.get("scheme", "http"), host.decode("latin-1")):
            return None
        raise CrossOrigin(
            f"requests from the web origin {text[:200]!r} are not allowed: "
            "add it to LLAMASTUDIO_CORS_ORIGINS to let that page use the gateway"
        )

    def _check_key(self, scope: Scope) -> None:
        if not self._keys or key_ok(scope["headers"], self._keys):  # constant-time (guard.py)
            return
        raise GatewayUnauthorized("missing or wrong API key (send `Authorization: Bearer <key>`)")

    # -- own endpoints -------------------------------------------------------------------------
    def _models(self) -> dict[str, Any]:
        return {"object": "list", "data": [self._model_entry(m) for m in self.runtime.models()]}

    def _model(self, name: str) -> dict[str, Any]:
        for m in self.runtime.models():
            if m["name"] == name or name in m["aliases"]:
                return self._model_entry(m)
        raise NotFound(f"model {name!r} not found")

    @staticmethod
    def _model_entry(m: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": m["name"],
            "object": "model",
            "created": 0,
            "owned_by": "llamastudio",
            "aliases": m["aliases"],
            "status": {k: m[k] for k in ("state", "reason", "in_flight", "queued", "idle_s", "memory")},
        }

    def _render_metrics(self) -> str:
        sched = self.runtime.scheduler
        in_flight = {n: float(e.in_flight) for n, e in sched.entries.items()}
        loaded = {n: float(e.state == "ready") for n, e in sched.entries.items()}
        queue = {n: float(v) for n, v in sched.queue_depth().items()}
        return self.metrics.render(
            {
                "llamastudio_in_flight_requests": in_flight,
                "llamastudio_queue_depth": queue,
                "llamastudio_model_loaded": loaded,
            },
            {
                "llamastudio_loads_total": sched.loads,
                "llamastudio_evictions_total": sched.evictions,
                "llamastudio_ttl_unloads_total": sched.unloads,
            },
        )

    # -- the relay -----------------------------------------------------------------------------
    async def _proxy(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path = _path(scope)
        label = path_label(path)
        headers_in: list[tuple[bytes, bytes]] = scope["headers"]
        media = _media_type(headers_in, path, _declares_body(headers_in))
        body = await _read_body(receive)
        if body and media is None:
            media = _media_type(headers_in, path, True)
        query = scope.get("query_string", b"")
        name = _model_name(body, query, media)
        if name is None:
            names = [m["name"] for m in self.runtime.models()]
            if len(names) != 1:
                raise InvalidInput("request names no model: set `model` in the JSON body (or ?model=)")
            name = names[0]
        try:
            lease, proc = await self.runtime.acquire(name)
        except StudioError as exc:  # the client's name is no label unless it is configured
            self.metrics.requests[(self.runtime.names.get(name, UNKNOWN), label, exc.status_code)] += 1
            raise
        model = lease.model
        upstream = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers_in if k not in _HOP]
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        status = 500
        try:
            args = (scope["method"], path, query, upstream, body, model, send, started, watch)
            status = await self._attempt(lease.release, proc, *args, retry=True)
            if status == _GONE:  # killed just before: start it again (the engine never answered)
                lease.release()
                status = 502  # what it would have been, until the retry says otherwise
                log.warning("%s: the engine was gone before answering; starting it again", model)
                try:
                    lease, proc = await self.runtime.acquire(name)
                except StudioError as exc:
                    status = exc.status_code
                    raise
                status = await self._attempt(lease.release, proc, *args, retry=False)
        finally:
            watch.cancel()
            lease.release()
            self.metrics.requests[(model, label, status)] += 1
            self.metrics.latency[model].observe(time.perf_counter() - started)

    async def _attempt(
        self,
        finished: Callable[[], None],
        proc: EngineProcess,
        method: str,
        path: str,
        query: bytes,
        headers: list[tuple[str, str]],
        body: bytes,
        model: str,
        send: Send,
        started: float,
        watch: asyncio.Future[None],
        *,
        retry: bool,
    ) -> int:
        """One relay to ``proc``, abandoned when the client goes away (499); ``_GONE`` when
        ``retry`` and the engine died before answering."""
        url = proc.url + path + ("?" + query.decode("latin-1") if query else "")
        if proc.api_key:
            headers = [*headers, ("Authorization", f"Bearer {proc.api_key}")]
        sent: dict[str, int] = {}  # the response's status, and 1 once its last part is handed over

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif not message.get("more_body", False):
                sent["complete"] = 1  # before the await: a client may close as soon as it has it
            await send(message)

        relay = asyncio.ensure_future(
            self._relay(method, url, headers, body, model, proc, tracked, started, finished, retry)
        )
        done, _ = await asyncio.wait((relay, watch), return_when=asyncio.FIRST_COMPLETED)
        if relay in done:
            return relay.result()
        if sent.get("complete"):  # the whole response went out; the client then closed: not a 499
            with contextlib.suppress(asyncio.CancelledError, Exception):
                return await relay
            return sent.get("status", 200)
        # the client went away: closing the upstream connection stops llama-server's work
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await relay
        self.metrics.disconnects[model] += 1
        return 499

    async def _relay(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        model: str,
        proc: EngineProcess,
        send: Send,
        started: float,
        finished: Callable[[], None],
        retry: bool,
    ) -> int:
        """Relay one request; ``finished`` is called once the upstream response has been read,
        before the client sees the end, so a client's next request finds the model free."""
        sent_head = answered = False
        try:
            async with await self._open(method, url, body, headers) as up:
                answered = True
                out_headers = [
                    (k.lower(), v)
                    for k, v in up.raw_headers
                    if (k.lower() not in _HOP or k.lower() == b"content-length")
                    and not k.lower().startswith(b"access-control-")  # the gateway's CORS, not the engine's
                ]
                ctype = up.headers.get("content-type", "")
                if up.status >= 400 and not ctype.startswith("text/event-stream"):
                    raw = await up.read()
                    finished()
                    await self._upstream_error(send, up.status, raw, out_headers)
                    return up.status
                streaming = ctype.startswith("text/event-stream")
                if streaming and b"x-accel-buffering" not in {k for k, _ in out_headers}:
                    out_headers.append((b"x-accel-buffering", b"no"))
                await send({"type": "http.response.start", "status": up.status, "headers": out_headers})
                sent_head = True
                self.metrics.ttfb[model].observe(time.perf_counter() - started)
                tail = b""
                async for chunk in up.content.iter_any():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    if b"predicted_per_second" in chunk or b"predicted_per_second" in tail + chunk[:64]:
                        self.metrics.timings(model, tail + chunk)
                    tail = chunk[-256:]
                finished()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return up.status
        except (aiohttp.ClientError, ConnectionError) as exc:
            self.metrics.upstream_errors[model] += 1
            if retry and not answered and await _exited(proc):
                self.runtime.died(model)
                return _GONE
            self.runtime.died(model)
            reason = self._why(model, exc)
            err = UpstreamFailed(f"{model}: the engine failed during the request: {reason}")
            if not sent_head:
                await _json(send, 502, error_json(err, "upstream"))
                return 502
            payload = b"data: " + json.dumps(error_json(err, "upstream")).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": payload, "more_body": False})
            return 502

    async def _open(
        self, method: str, url: str, body: bytes, headers: list[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """Send upstream; a pooled keep-alive connection the engine had just closed is retried once
        on a new connection (the engine never saw that request)."""
        try:
            return await self.session().request(method, url, data=body, headers=headers)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            return await self.session().request(method, url, data=body, headers=headers)

    def _why(self, model: str, exc: BaseException) -> str:
        proc = self.runtime.procs.get(model)
        if proc is not None and proc.reason:
            return proc.reason
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__

    async def _upstream_error(
        self, send: Send, status: int, raw: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        keep = [
            (k, v) for k, v in headers if k not in (b"content-length", b"content-type", b"content-encoding")
        ]
        await _send(send, status, _upstream_body(status, raw), b"application/json", keep)


def _upstream_body(status: int, raw: bytes) -> bytes:
    """The engine's error body with ``source: upstream`` added (wrapped when it is not JSON)."""
    with contextlib.suppress(ValueError):
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            err["source"] = "upstream"
            err.setdefault("type", _TYPES.get(status, "server_error"))
            return json.dumps(data).encode()
    message = raw.decode(errors="replace")[:2000]
    err = {"message": message, "type": _TYPES.get(status, "server_error"), "code": status, "param": None}
    return json.dumps({"error": {**err, "source": "upstream"}}).encode()


# -- helpers ---------------------------------------------------------------------------------------
def _path(scope: Scope) -> str:
    """The path below a mount point (Starlette keeps the full path and sets ``root_path``)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] or "/" if root and path.startswith(root) else path


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            raise _TooLarge(f"request body over {MAX_BODY >> 20} MiB")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _TooLarge(StudioError):
    status_code = 413
    code = "too_large"


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether ``Content-Length`` announces a body (a chunked one is checked once read)."""
    return any(k == b"content-length" and v.strip() not in (b"", b"0") for k, v in headers)


def _media_type(headers: list[tuple[bytes, bytes]], path: str, has_body: bool) -> bytes | None:
    """The body's media type: JSON (multipart on the transcription routes); None without a body.
    Anything else is refused (415) before the body is read or a model is started."""
    if not has_body:
        return None
    ctype = next((v for k, v in headers if k == b"content-type"), b"")
    media = ctype.split(b";", 1)[0].strip().lower()
    if media == _JSON or (media == _MULTIPART and path in _MULTIPART_PATHS):
        return media
    shown = media.decode("latin-1")[:100] or "no Content-Type"
    raise UnsupportedMediaType(
        f"the request body must be JSON (`Content-Type: application/json`), not {shown}"
    )


def _model_name(body: bytes, query: bytes, media: bytes | None) -> str | None:
    if query and b"model=" in query:
        values = parse_qs(query.decode("latin-1")).get("model")
        if values:
            return values[0]
    if not body:
        return None
    if media == _MULTIPART:
        found = _FORM_MODEL.search(body)
        return found.group(1).decode(errors="replace").strip() or None if found else None
    try:
        data = json.loads(body)
    except RecursionError:  # e.g. 100,000 `[`: Python's parser recurses per level
        raise InvalidInput("request body is not valid JSON: nested too deeply") from None
    except ValueError:
        raise InvalidInput("request body is not valid JSON") from None
    model = data.get("model") if isinstance(data, dict) else None
    if model is not None and not isinstance(model, str):
        raise InvalidInput("`model` must be a string")
    return model or None


async def _exited(proc: EngineProcess) -> bool:
    """Whether the engine's process has exited. A connection refused right after a kill -9 comes
    before the exit is reaped, so its exit is awaited up to ``EXIT_WAIT`` seconds (a live engine
    that dropped a connection costs that wait before its 502)."""
    if proc.proc is None:
        return False
    if proc.proc.returncode is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.proc.wait(), EXIT_WAIT)
    return proc.proc.returncode is not None


def _with_cors(send: Send, origin: bytes) -> Send:
    """``send`` that grants ``origin`` on the response (no credentials: keys are headers)."""

    async def send_(message: Message) -> None:
        if message["type"] == "http.response.start":
            grant = [(b"access-control-allow-origin", origin), (b"vary", b"origin")]
            message = {**message, "headers": [*message.get("headers", ()), *grant]}
        await send(message)

    return send_


async def _preflight(send: Send, headers: list[tuple[bytes, bytes]], origin: bytes | None) -> None:
    """Answer ``OPTIONS``: the methods, and for a listed origin the CORS grants (the requested
    header names are granted too: browser SDKs send their own, e.g. ``x-stainless-*``)."""
    out = [(b"allow", _CORS_METHODS)]
    if origin is not None:
        names = dict.fromkeys(_CORS_HEADERS)
        requested = next((v for k, v in headers if k == b"access-control-request-headers"), b"")
        for name in requested.decode("latin-1").lower().split(",")[:64]:
            if _TOKEN.match(name.strip()):
                names[name.strip()] = None
        out += [
            (b"access-control-allow-methods", _CORS_METHODS),
            (b"access-control-allow-headers", ", ".join(names).encode()),
            (b"access-control-max-age", _CORS_MAX_AGE),
        ]
    await send({"type": "http.response.start", "status": 204, "headers": out})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send(
    send: Send, status: int, body: bytes, ctype: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(data).encode(), b"application/json", extra)
