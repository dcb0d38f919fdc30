"""The gateway: every model behind one OpenAI-compatible endpoint (default 127.0.0.1:2000).

A plain ASGI app — no framework routing on the hot path. A request names its model in the JSON
body's ``model`` field (or ``?model=`` for GETs); the runtime resolves names and aliases, starts
the model if needed (the scheduler queues, limits and evicts), and the request is relayed to that
model's llama-server. Responses are relayed as bytes: no per-chunk parsing or re-encoding (only a
substring scan for llama-server's ``timings``, for metrics). A client that disconnects cancels
the upstream request (its connection is closed, which llama-server notices and stops generating).

Errors have the OpenAI shape plus ``source``: ``studio`` when the gateway produced them,
``upstream`` when the engine did (its body is relayed with ``source`` added).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import aiohttp

from llamastudio.config import Settings
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.gateway.metrics import Metrics
from llamastudio.runtime.manager import Runtime

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
    429: "rate_limit_error",
    503: "overloaded_error",
}


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

    def _check_key(self, scope: Scope) -> None:
        if not self._keys:
            return
        for name, value in scope["headers"]:
            if (
                name == b"authorization"
                and value[:7].lower() == b"bearer "
                and value[7:].strip() in self._keys
            ):
                return
            if name == b"x-api-key" and value.strip() in self._keys:
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
        body = await _read_body(receive)
        query = scope.get("query_string", b"")
        name = _model_name(body, query, scope["headers"])
        if name is None:
            names = [m["name"] for m in self.runtime.models()]
            if len(names) != 1:
                raise InvalidInput("request names no model: set `model` in the JSON body (or ?model=)")
            name = names[0]
        status = 500
        path = _path(scope)
        model = name
        try:
            lease, proc = await self.runtime.acquire(name)
        except StudioError as exc:
            self.metrics.requests[(name, path, exc.status_code)] += 1
            raise
        model = lease.model
        try:
            url = proc.url + path + ("?" + query.decode("latin-1") if query else "")
            headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k not in _HOP
            ]
            relay = asyncio.ensure_future(
                self._relay(scope["method"], url, headers, body, model, send, started, lease.release)
            )
            watch = asyncio.ensure_future(_wait_disconnect(receive))
            done, _ = await asyncio.wait((relay, watch), return_when=asyncio.FIRST_COMPLETED)
            if relay in done:
                watch.cancel()
                status = relay.result()
            else:  # the client went away: closing the upstream connection stops llama-server's work
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await relay
                self.metrics.disconnects[model] += 1
                status = 499
        finally:
            lease.release()
            self.metrics.requests[(model, path, status)] += 1
            self.metrics.latency[model].observe(time.perf_counter() - started)

    async def _relay(
        self,
        method: str,
        url: str,
        headers: list[tuple[str, str]],
        body: bytes,
        model: str,
        send: Send,
        started: float,
        finished: Callable[[], None],
    ) -> int:
        """Relay one request; ``finished`` is called once the upstream response has been read,
        before the client sees the end, so a client's next request finds the model free."""
        sent_head = False
        try:
            async with await self._open(method, url, body, headers) as up:
                out_headers = [
                    (k.lower(), v)
                    for k, v in up.raw_headers
                    if k.lower() not in _HOP or k.lower() == b"content-length"
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


def _model_name(body: bytes, query: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    if query and b"model=" in query:
        values = parse_qs(query.decode("latin-1")).get("model")
        if values:
            return values[0]
    if body:
        try:
            data = json.loads(body)
        except ValueError:
            if any(k == b"content-type" and v.startswith(b"application/json") for k, v in headers):
                raise InvalidInput("request body is not valid JSON") from None
            return None
        model = data.get("model") if isinstance(data, dict) else None
        if model is not None and not isinstance(model, str):
            raise InvalidInput("`model` must be a string")
        return model or None
    return None


async def _send(
    send: Send, status: int, body: bytes, ctype: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _json(send: Send, status: int, data: Any, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _send(send, status, json.dumps(data).encode(), b"application/json", extra)
