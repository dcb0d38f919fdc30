"""An OpenAI-style engine that streams exactly what a test asks for and misbehaves on request, to
test the gateway's relay where llama-server cannot be made to: run as a command config,
``python -m tests.rig.faulty_engine PORT``.

``POST /v1/completions`` with ``{"max_tokens": N, "stream": true}`` streams N events (chunked SSE)
then ``[DONE]``; ``"event_bytes"`` pads each event to that size; ``"gap"`` seconds between events.
Faults (``"fault"``): ``"drop-second"`` — the second request on a kept-alive connection is read
and the connection closed without an answer (the race of a keep-alive connection being closed);
``"malformed"`` — a status line that is not HTTP; ``"echo"`` — a JSON answer ``{"head": …}``, the
request's head as received (what the gateway wrote upstream); ``"continue"`` — ``100 Continue``
before the answer (what llama-server's cpp-httplib sends to a request with ``Expect: 100-continue``,
as it is honoured here too); ``"extra"`` — a second, unasked answer after the stream (a broken
engine); ``"hold"`` — no answer until the gateway closes the connection (a whole answer still
being generated: its head comes at the end), counted; ``"holds"`` — ``{"closed": n}``, how many
held requests saw their connection closed. ``GET /health`` answers ok. The events are
deterministic (``event(i, size)``), so a test can rebuild the exact bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys


def event(i: int, size: int = 0) -> bytes:
    data = {"choices": [{"text": f"t{i}", "index": 0, "finish_reason": None}], "object": "text_completion"}
    raw = json.dumps(data)
    if size > len(raw) + 20:
        data["pad"] = "x" * (size - len(raw) - 20)
        raw = json.dumps(data)
    return b"data: " + raw.encode() + b"\n\n"


def stream_bytes(n: int, size: int = 0) -> bytes:
    """The body the engine streams for ``max_tokens=n`` (the test's expected relay)."""
    return b"".join(event(i, size) for i in range(n)) + b"data: [DONE]\n\n"


CLOSED = [0]  # held requests whose connection the gateway closed


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    served = 0
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length)) if length else {}
            served += 1
            if head.startswith(b"GET /health"):
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                )
                await writer.drain()
                continue
            fault = body.get("fault")
            if fault == "continue" or b"\r\nexpect: 100-continue" in head.lower():
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            if fault == "drop-second" and served == 2:
                writer.close()
                return
            if fault == "hold":
                with contextlib.suppress(TimeoutError, ConnectionError):
                    if await asyncio.wait_for(reader.read(1), 60) == b"":
                        CLOSED[0] += 1
                writer.close()
                return
            if fault in ("echo", "holds"):
                answer = {"head": head.decode("latin-1")} if fault == "echo" else {"closed": CLOSED[0]}
                raw = json.dumps(answer).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%b"
                    % (len(raw), raw)
                )
                await writer.drain()
                continue
            if fault == "malformed":
                writer.write(b"NOT-HTTP garbage\r\n\r\n")
                await writer.drain()
                writer.close()
                return
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for i in range(int(body.get("max_tokens", 4))):
                piece = event(i, int(body.get("event_bytes", 0)))
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(float(body.get("gap", 0)))
            done = b"data: [DONE]\n\n"
            writer.write(b"%x\r\n%b\r\n0\r\n\r\n" % (len(done), done))
            if fault == "extra":
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n"
                )
                await writer.drain()
                await asyncio.sleep(0.2)  # in a read of its own, after the stream's end
                writer.write(b'"stale!!"')
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
