"""uvicorn's httptools protocol with the timeouts it lacks (slowloris).

uvicorn times out an idle keep-alive connection, but never a connection whose request headers are
incomplete (one that connects and sends nothing, or half a request line, and waits), nor a request
body that stops arriving: 2000 such connections stay open for ever. Here:

- **headers**: from the connection's start (or a new request's first byte) to the end of its
  headers, at most ``header_timeout`` seconds in all (not per byte: trickling does not extend it).
  Then ``408`` and the connection is closed.
- **body**: while a request body is being received, at most ``body_timeout`` seconds without a
  byte; not counted while the server itself has paused reading (the app is slow, not the client).
  Then the connection is closed (the app sees ``http.disconnect``).

A response, however long it streams, is never timed out here; nor is a WebSocket once upgraded.

Each request's scope also carries its uvicorn response cycle (extension ``CYCLE``): the gateway's
relay writes a stream's body pieces straight to its socket (``gateway/relay.py``, ``_fast``).
No cap on the number of connections: uvicorn's ``limit_concurrency`` answers 503 to *requests*
beyond it (idle keep-alive connections count), which would fail legitimate streams under load,
while half-open connections — the actual attack — are reclaimed by these timeouts.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

CYCLE = "llamastudio.cycle"  # scope extension: this request's uvicorn RequestResponseCycle
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 30.0
_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class TimeoutHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT
    body_timeout = BODY_TIMEOUT

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Literal["headers", "body", "idle"] = "idle"
        self._timer: asyncio.TimerHandle | None = None

    def _arm(self, phase: Literal["headers", "body"], seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._phase == "body" and self.flow is not None and self.flow.read_paused:
            self._arm("body", self.body_timeout)  # we stopped reading, not the client
            return
        if self._phase == "headers" and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(_408)
        self.logger.info("closing a connection: request %s timed out", self._phase)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm("headers", self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._phase == "body" and not self.transport.is_closing():
            self._arm("body", self.body_timeout)  # bytes arrived: the idle clock restarts

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._phase != "headers":  # already counting since the connection opened: keep that
            self._arm("headers", self.header_timeout)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.parser.should_upgrade() and self._should_upgrade():
            self._disarm()  # a WebSocket: its own protocol takes the connection over
            self._phase = "idle"
        else:
            self._arm("body", self.body_timeout)
            # the gateway's relay writes a stream's pieces to the socket itself (gateway/relay.py)
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})
            extensions[CYCLE] = self.cycle

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        self._phase = "idle"


def with_timeouts(
    header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT
) -> type[TimeoutHttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(http=...)``, with these timeouts."""
    attrs = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    return type("TimeoutHttpToolsProtocol", (TimeoutHttpToolsProtocol,), attrs)
