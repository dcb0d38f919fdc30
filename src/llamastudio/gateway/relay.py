"""Relaying one request to an engine, as bytes.

Responses are relayed with no per-chunk parsing or re-encoding (only a substring scan for
llama-server's ``timings``, for metrics). A client that disconnects cancels the upstream request:
its connection is closed, which llama-server notices and stops generating. Hop-by-hop headers and
the client's credentials are never relayed; the engine's per-process key is added instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable

import aiohttp

from llamastudio.errors import UpstreamFailed
from llamastudio.gateway.asgi import Message, Send, send_bytes, send_json
from llamastudio.gateway.cors import is_engine_cors
from llamastudio.gateway.metrics import Metrics
from llamastudio.gateway.shapes import error_json, upstream_body
from llamastudio.runtime.process import EngineProcess

HOP = {
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
# A kill -9 just before a request: the connection is refused (or reset) before any response byte
# while the process's exit is not reaped yet. The relay waits this long for the exit; if the
# process is gone, the caller starts the model again and sends the request once more.
EXIT_WAIT = 1.0
STALE_RETRIES = 3  # sends again of a request that met a keep-alive connection being closed
GONE = -1  # status when the engine died before answering (the request may be retried)
CLIENT_GONE = 499


class Relay:
    def __init__(self, metrics: Metrics, died: Callable[[str], None]) -> None:
        """``died(model)``: tell the runtime an engine's connection broke (it checks the process)."""
        self.metrics = metrics
        self.died = died
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, ttl_dns_cache=None, keepalive_timeout=4
                ),  # < httplib's 5 s
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10, sock_read=None),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def attempt(
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
        """One relay to ``proc``, abandoned when the client goes away (499); ``GONE`` when
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
        return CLIENT_GONE

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
                    if (k.lower() not in HOP or k.lower() == b"content-length")
                    and not is_engine_cors(k.lower())
                ]
                ctype = up.headers.get("content-type", "")
                if up.status >= 400 and not ctype.startswith("text/event-stream"):
                    raw = await up.read()
                    finished()
                    keep = [
                        (k, v)
                        for k, v in out_headers
                        if k not in (b"content-length", b"content-type", b"content-encoding")
                    ]
                    await send_bytes(
                        send, up.status, upstream_body(up.status, raw), b"application/json", keep
                    )
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
                self.died(model)
                return GONE
            self.died(model)
            reason = proc.reason or (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            err = UpstreamFailed(f"{model}: the engine failed during the request: {reason}")
            if not sent_head:
                await send_json(send, 502, error_json(err, "upstream"))
                return 502
            payload = b"data: " + json.dumps(error_json(err, "upstream")).encode() + b"\n\n"
            await send({"type": "http.response.body", "body": payload, "more_body": False})
            return 502

    async def _open(
        self, method: str, url: str, body: bytes, headers: list[tuple[str, str]]
    ) -> aiohttp.ClientResponse:
        """Send upstream. llama-server (cpp-httplib) closes a keep-alive connection after 100
        requests or 5 s idle (the pool drops idle ones after 4 s); a request sent on one it is
        closing fails before it was read ("Server disconnected", "Can not write request") and is
        sent again on another connection, up to ``STALE_RETRIES`` times (under load the next
        pooled one may be closing too). A refused connection (the engine is gone) is not
        retried here."""
        for attempt in range(STALE_RETRIES + 1):
            try:
                return await self.session().request(method, url, data=body, headers=headers)
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == STALE_RETRIES or isinstance(exc, aiohttp.ClientConnectorError):
                    raise
        raise AssertionError("unreachable")


async def _exited(proc: EngineProcess) -> bool:
    """Whether the engine's process has exited. A connection refused right after a kill -9 comes
    before the exit is reaped, so its exit is awaited up to ``EXIT_WAIT`` seconds (a live engine
    that dropped a connection costs that wait before its 502)."""
    return await proc.wait_exit(EXIT_WAIT)
