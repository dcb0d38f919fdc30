"""The relay's hot path to a local engine: HTTP/1.1 over a pooled loopback connection, the
response parsed by httptools (C), each body piece handed to a plain callback as it is parsed.

Why not aiohttp here (it is still used for everything else): at 64 concurrent token streams a
chunk arrives per token per stream, and aiohttp's path for each one — ``StreamReader.feed_data``,
a future woken, a task step through ``iter_any`` and the ASGI ``send`` coroutines — cost the
gateway ~30 % more CPU per token than llama-server's own router (``bench/gateway.py``). Here a
chunk is parsed and written to the client inside the one ``data_received`` call that read it;
the relay's task only wakes when the response ends, the client pushes back, or the connection
breaks.

Connections are kept alive and reused (llama-server closes one after 100 requests or 5 s idle:
the pool retires them before that). A request that meets a connection the engine is closing —
the connection drops before any response byte — is sent again on a fresh one by the caller
(``StaleConnection``); a refused connection is not (the engine is gone).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import httptools

IDLE = 4.0  # seconds a pooled connection may sit idle (cpp-httplib closes after 5)
MAX_USES = 99  # requests per connection (cpp-httplib closes after 100)
MAX_BUFFERED = 256 << 20  # an answer that is not a stream is read in full: at most this
Sink = Callable[[bytes], bool]  # takes a body piece; False: the client is not taking more now


class StaleConnection(ConnectionError):
    """The connection closed before any byte of the answer: the request may be sent again."""


class UpstreamError(ConnectionError):
    pass


class Conn(asyncio.Protocol):
    """One HTTP/1.1 connection to an engine, one request at a time."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.uses = 0
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head: asyncio.Future[None] = self.pool.loop.create_future()
        self.done: asyncio.Future[None] = self.pool.loop.create_future()
        self.paused: asyncio.Future[None] | None = None
        self.sink: Sink | None = None
        self.early: list[bytes] = []  # body parsed before a sink was attached
        self.answered = False  # a byte of the response arrived
        self.complete = False
        self.keep_alive = False
        self.interim = False  # parsing a 1xx answer (100 Continue): not the request's answer
        self.extra = False  # parsing an answer after the answer: ignored, never reused
        self.error: Exception | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.complete or self.uses == 0 or self.sink is self._idle:
            # bytes after the answer, or on an idle pooled connection: the next request would
            # read them as its answer (another client's): the connection is dropped instead
            self.keep_alive = False
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamError(f"malformed answer from the engine: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.complete:
            if not self.answered:
                self._fail(StaleConnection("the engine closed the connection before answering"))
            else:
                self._fail(
                    UpstreamError(f"the engine closed the connection mid-answer{f': {exc}' if exc else ''}")
                )

    # -- httptools callbacks --------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.extra:  # an unasked second answer's are not the answer's
            self.headers.append((name, value))

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer in the same read: never reused (see data_received)
            self.extra, self.keep_alive = True, False

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if self.extra:
            return
        if 100 <= status < 200 and status != 101:  # 100 Continue …: the answer follows
            self.interim = True
            self.headers = []
            return
        self.status = status
        self.keep_alive = self.parser.should_keep_alive()  # read now: false once the message ends
        if not self.head.done():
            self.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if not self.extra:
            self._piece(body)

    def _piece(self, body: bytes) -> None:
        if self.sink is None:
            self.early.append(body)
        elif not self.sink(body) and self.transport is not None and self.paused is None:
            self.transport.pause_reading()  # the client is slow: stop reading the engine
            self.paused = self.pool.loop.create_future()
            if not self.done.done():
                self.done.set_result(None)  # wake the relay: it waits for the client, then resumes

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        if self.extra:
            return
        self.complete = True
        if not self.head.done():
            self.head.set_result(None)
        if not self.done.done():
            self.done.set_result(None)

    # -- the request -------------------------------------------------------------------------
    def _fail(self, exc: Exception) -> None:
        self.error = exc
        for fut in (self.head, self.done):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: the other one is what the relay awaits

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.sink = None
        self.uses += 1
        self.transport.write(request)

    def attach(self, sink: Sink) -> None:
        """From now on each body piece goes to ``sink`` (those parsed already first)."""
        self.sink = sink
        early, self.early = self.early, []
        for piece in early:
            self._piece(piece)

    async def stream(self, drain: Callable[[], object]) -> None:
        """Until the answer's last byte went to the sink; ``drain()`` (awaitable) waits for a
        paused client, after which reading resumes."""
        while True:
            await self.done  # raises what broke the connection
            if self.paused is None:
                return  # complete
            await drain()  # type: ignore[misc]
            self.paused = None
            if self.complete:
                return
            if self.error is not None:  # broke while the client was catching up
                raise self.error
            self.done = self.pool.loop.create_future()
            assert self.transport is not None
            self.transport.resume_reading()

    async def read_all(self, limit: int = MAX_BUFFERED) -> bytes:
        """The whole body, at most ``limit`` bytes (more: ``UpstreamError``)."""
        parts: list[bytes] = []
        size = 0

        def keep(piece: bytes) -> bool:
            nonlocal size
            size += len(piece)
            if size <= limit:
                parts.append(piece)
            return True

        self.attach(keep)
        await self.stream(_nothing)
        if size > limit:
            raise UpstreamError(f"the engine's answer is over {limit >> 20} MiB")
        return b"".join(parts)

    def release(self) -> None:
        """Back to the pool if the answer was read to its end and the engine keeps the connection."""
        reusable = (
            self.complete
            and self.transport is not None
            and not self.transport.is_closing()
            and self.keep_alive
            and self.uses < MAX_USES
        )
        if not reusable:
            self.close()
            return
        self._reset()
        self.sink = self._idle  # until the next request: any byte that arrives drops it
        self.idle_since = time.monotonic()
        self.pool.put(self)

    @staticmethod
    def _idle(piece: bytes) -> bool:  # the sink of a pooled connection (never called)
        return True

    def close(self) -> None:
        """Drop the connection (an answer cut short: the engine notices and stops generating)."""
        if self.transport is not None:
            self.transport.abort()
            self.transport = None


async def _nothing() -> None:
    return None


class Pool:
    """Idle keep-alive connections per engine address (host, port)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._idle: dict[tuple[str, int], deque[Conn]] = {}

    def put(self, conn: Conn) -> None:
        assert conn.transport is not None
        peer = conn.transport.get_extra_info("peername")
        self._idle.setdefault((peer[0], peer[1]), deque()).append(conn)

    async def get(self, host: str, port: int, fresh: bool = False) -> Conn:
        idle = self._idle.get((host, port))
        now = time.monotonic()
        while idle and not fresh:
            conn = idle.pop()  # the most recently used: least likely to be closing
            if (
                conn.transport is not None
                and not conn.transport.is_closing()
                and now - conn.idle_since < IDLE
            ):
                return conn
            conn.close()
        _, conn = await self.loop.create_connection(lambda: Conn(self), host, port)
        return conn

    def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


def request_bytes(
    method: str, host: str, port: int, target: str, headers: list[tuple[str, str]], body: bytes
) -> bytes:
    """The request as written: headers come from the client through uvicorn's parser (no CR/LF
    can be in them), minus hop-by-hop ones, plus the engine's key."""
    lines = [f"{method} {target} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-length: {len(body)}\r\n"]
    lines.extend(f"{k}: {v}\r\n" for k, v in headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body
