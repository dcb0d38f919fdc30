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
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

import aiohttp

from llamastudio.errors import UpstreamFailed
from llamastudio.gateway.asgi import Message, Send, send_bytes, send_json
from llamastudio.gateway.cors import is_engine_cors
from llamastudio.gateway.metrics import Metrics
from llamastudio.gateway.shapes import error_json, upstream_body
from llamastudio.gateway.upstream import Conn, Pool, StaleConnection, request_bytes
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
    b"expect",  # uvicorn answered the client's 100-continue; the engine's 100 is not relayed
    b"host",
    b"content-length",
    b"authorization",
    b"x-api-key",
    b"x-studio-owner",  # the owner's key (guard.OWNER_HEADER): commands through the API
    b"cookie",
}
# A kill -9 just before a request: the connection is refused (or reset) before any response byte
# while the process's exit is not reaped yet. The relay waits this long for the exit; if the
# process is gone, the caller starts the model again and sends the request once more.
EXIT_WAIT = 1.0
STALE_RETRIES = 3  # sends again of a request that met a keep-alive connection being closed
GONE = -1  # status when the engine died before answering (the request may be retried)
CLIENT_GONE = 499
_PATH_SAFE = "/:@!$&'()*+,;=~"  # RFC 3986 pchar (with unreserved): kept as they are in a path


class Relay:
    def __init__(self, metrics: Metrics, died: Callable[[str], None]) -> None:
        """``died(model)``: tell the runtime an engine's connection broke (it checks the process)."""
        self.metrics = metrics
        self.died = died
        self._session: aiohttp.ClientSession | None = None
        self._pool: Pool | None = None

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
        if self._pool is not None:
            self._pool.close()

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
        cycle: Any = None,
    ) -> int:
        """One relay to ``proc``, abandoned when the client goes away (499); ``GONE`` when
        ``retry`` and the engine died before answering. ``cycle``: uvicorn's response cycle of
        the client's request (``http_protocol.py``): with it, a local engine's answer takes the
        fast path (``upstream.py``, ``_fast``)."""
        # uvicorn decoded the path (%0D%0A is CR LF, %20 a space): encoded again, or a caller's path
        # would write its own header lines — or a second request, with the engine's key — upstream
        target = quote(path, safe=_PATH_SAFE) + ("?" + query.decode("latin-1") if query else "")
        if proc.api_key:
            headers = [*headers, ("Authorization", f"Bearer {proc.api_key}")]
        sent: dict[str, int] = {}  # the response's status, and 1 once its last part is handed over

        async def tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif not message.get("more_body", False):
                sent["complete"] = 1  # before the await: a client may close as soon as it has it
            await send(message)

        address = _local_address(proc.url) if cycle is not None and method != "HEAD" else None
        if address is not None:
            request = request_bytes(method, *address, target, headers, body)
            relay = asyncio.ensure_future(
                self._fast(address, request, model, proc, tracked, started, finished, retry, cycle)
            )
        else:
            relay = asyncio.ensure_future(
                self._relay(
                    method, proc.url + target, headers, body, model, proc, tracked, started, finished, retry
                )
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
                out_headers, streaming = _out_headers(up.raw_headers)
                if up.status >= 400 and not streaming:
                    raw = await _read_error(up)
                    finished()
                    await _send_error(send, up.status, raw, out_headers)
                    return up.status
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
            return await self._failed(exc, model, proc, send, retry and not answered, sent_head)

    async def _failed(
        self, exc: Exception, model: str, proc: EngineProcess, send: Send, may_retry: bool, sent_head: bool
    ) -> int:
        """The engine's connection broke: ``GONE`` when it died before answering (and the request
        may be sent again), else a 502 — a JSON error, or an error event ending a started stream."""
        self.metrics.upstream_errors[model] += 1
        if may_retry and await _exited(proc):
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

    async def _fast(
        self,
        address: tuple[str, int],
        request: bytes,
        model: str,
        proc: EngineProcess,
        send: Send,
        started: float,
        finished: Callable[[], None],
        retry: bool,
        cycle: Any,
    ) -> int:
        """``_relay`` over ``upstream.py``: a stream's pieces are written to the client's socket,
        framed as uvicorn frames them, from the callback that parsed them (no task step, no ASGI
        message per piece); the response's start and end still go through ``send`` (CORS,
        tracking, uvicorn's own bookkeeping). The client's back-pressure pauses reading the engine."""
        sent_head = answered = False
        conn: Conn | None = None
        try:
            conn = await self._open_fast(*address, request)
            answered = True
            status = conn.status
            out_headers, streaming = _out_headers(conn.headers)
            if not streaming:  # an error, or a whole answer: read in full, sent at once
                raw = await conn.read_all()
                conn.release()  # back to the pool: another request may take it from here on
                conn = None
                finished()
                if status >= 400:
                    await _send_error(send, status, raw, out_headers)
                    return status
                if b"predicted_per_second" in raw:
                    self.metrics.timings(model, raw)
                await send({"type": "http.response.start", "status": status, "headers": out_headers})
                sent_head = True
                self.metrics.ttfb[model].observe(time.perf_counter() - started)
                await send({"type": "http.response.body", "body": raw, "more_body": False})
                return status
            await send({"type": "http.response.start", "status": status, "headers": out_headers})
            sent_head = True
            self.metrics.ttfb[model].observe(time.perf_counter() - started)
            ring: list[bytes] = [b""] * _RING  # the last pieces: llama-server's timings end the stream
            n = 0
            if cycle.chunked_encoding and not cycle.disconnected:
                write, flow = cycle.transport.write, cycle.flow

                def sink(piece: bytes) -> bool:
                    nonlocal n
                    ring[n % _RING] = piece
                    n += 1
                    if cycle.disconnected:
                        return True  # dropped: the disconnect watcher cancels this relay
                    write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    return not flow.write_paused

                conn.attach(sink)
                await conn.stream(flow.drain)
            else:  # not chunked (HEAD-like answers): whatever came, at once
                ring[0] = await conn.read_all()
                n = 1
                await send({"type": "http.response.body", "body": ring[0], "more_body": True})
            conn.release()
            conn = None
            finished()
            tail = b"".join(ring[n % _RING :] + ring[: n % _RING] if n > _RING else ring[:n])
            at = tail.rfind(b'"timings"')
            if at >= 0:
                self.metrics.timings(model, tail[at:])
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return status
        except (ConnectionError, OSError) as exc:
            return await self._failed(exc, model, proc, send, retry and not answered, sent_head)
        finally:
            if conn is not None:  # not given back: cut short (client gone, engine broke), and
                conn.close()  # closing the connection makes the engine stop generating

    async def _open_fast(self, host: str, port: int, request: bytes) -> Conn:
        """Send on a pooled connection; one the engine was closing (it drops before answering) is
        replaced by a fresh one, up to ``STALE_RETRIES`` times. A fresh one that drops is an error."""
        if self._pool is None:
            self._pool = Pool()
        fresh = False
        for _ in range(STALE_RETRIES + 1):
            conn = await self._pool.get(host, port, fresh=fresh)
            reused = conn.uses > 0
            conn.send(request)
            try:
                await conn.head  # a whole (not streamed) answer's head comes when it is done
            except StaleConnection:
                conn.close()
                if not reused:
                    raise
                fresh = True
            except BaseException:  # the client went away (cancelled): closing stops the engine
                conn.close()
                raise
            else:
                return conn
        raise StaleConnection("the engine kept closing connections before answering")

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
                # a redirect is relayed, never followed (it could name any host: SSRF)
                return await self.session().request(
                    method, url, data=body, headers=headers, allow_redirects=False
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if attempt == STALE_RETRIES or isinstance(exc, aiohttp.ClientConnectorError):
                    raise
        raise AssertionError("unreachable")


MAX_ERROR = 64 << 10  # bytes of an error answer read (over: cut, and the connection dropped)
_RING = 16  # pieces kept to find llama-server's final ``timings`` in (it is one write, at the end)


def _local_address(url: str) -> tuple[str, int] | None:
    """``http://127.0.0.1:PORT`` (an engine the studio started) → its address; else None."""
    rest = url.removeprefix("http://")
    if rest == url or "/" in rest:
        return None
    host, _, port = rest.rpartition(":")
    return (host, int(port)) if port.isdigit() and host else None


def _out_headers(raw: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The engine's headers as relayed (no hop-by-hop, no engine CORS), and whether it streams."""
    out = [
        (k.lower(), v)
        for k, v in raw
        if (k.lower() not in HOP or k.lower() == b"content-length") and not is_engine_cors(k.lower())
    ]
    ctype = next((v for k, v in out if k == b"content-type"), b"")
    streaming = ctype.startswith(b"text/event-stream")
    if streaming and b"x-accel-buffering" not in {k for k, _ in out}:
        out.append((b"x-accel-buffering", b"no"))
    return out, streaming


async def _send_error(send: Send, status: int, raw: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """An engine's error answer, in the gateway's one error shape."""
    keep = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type", b"content-encoding")]
    await send_bytes(send, status, upstream_body(status, raw), b"application/json", keep)


async def _read_error(up: aiohttp.ClientResponse) -> bytes:
    """An error answer's first ``MAX_ERROR`` bytes (a peer's error is not held whole in memory:
    a 20 MiB one was read, re-encoded and sent on; only its start is shown, ``shapes.py``)."""
    raw = bytearray()
    async for chunk in up.content.iter_any():
        raw += chunk
        if len(raw) > MAX_ERROR:
            return bytes(raw[:MAX_ERROR])
    return bytes(raw)


async def _exited(proc: EngineProcess) -> bool:
    """Whether the engine's process has exited. A connection refused right after a kill -9 comes
    before the exit is reaped, so its exit is awaited up to ``EXIT_WAIT`` seconds (a live engine
    that dropped a connection costs that wait before its 502)."""
    return await proc.wait_exit(EXIT_WAIT)
