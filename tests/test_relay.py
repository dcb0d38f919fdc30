"""The gateway's relay fast path (``gateway/upstream.py``, ``relay.py`` ``_fast``) against an engine
that streams exactly what the test asks for and misbehaves on request (``tests/rig/faulty_engine.py``),
through a real ``llamastudio serve``: bytes relayed exactly whatever the piece sizes, a slow client
pauses the engine without losing a byte, a kept-alive connection closed under a request is
retried on a fresh one, a malformed answer is a 502 in the one error shape."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.rig.faulty_engine import stream_bytes
from tests.rig.studio import Studio

ENGINE = Path(__file__).parent / "rig" / "faulty_engine.py"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path]) -> Iterator[Studio]:
    env = {"LLAMASTUDIO_ALLOW_COMMANDS": "1"}
    with Studio(tmp_path_factory.mktemp("relay"), rig_bin("llama-server"), env=env) as s:
        s.configure("faulty", command=[sys.executable, str(ENGINE), "${PORT}"], reserve={"CPU": 1 << 20})
        yield s


def post(studio: Studio, **body: object) -> httpx.Response:
    payload = {"model": "faulty", "stream": True, **body}
    return httpx.post(f"{studio.gateway_url}/v1/completions", json=payload, timeout=120)


@pytest.mark.parametrize(("n", "size"), [(200, 0), (20, 70_000), (4, 600_000)])
def test_streams_are_relayed_byte_exact_whatever_the_piece_sizes(studio: Studio, n: int, size: int) -> None:
    r = post(studio, max_tokens=n, event_bytes=size)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == stream_bytes(n, size)


def _chunked(raw: bytes) -> bytes:
    """An HTTP/1.1 chunked body decoded (the test reads the socket itself)."""
    out, at = bytearray(), 0
    while True:
        end = raw.index(b"\r\n", at)
        size = int(raw[at:end], 16)
        if size == 0:
            return bytes(out)
        out += raw[end + 2 : end + 2 + size]
        at = end + 2 + size + 2


def test_a_slow_client_pauses_the_engine_and_loses_nothing(studio: Studio) -> None:
    """16 MiB of events to a client that reads nothing for 2 s: far more than the sockets buffer,
    so the gateway must stop reading the engine (back-pressure) and then deliver every byte."""
    n, size = 64, 256 << 10
    body = b'{"model": "faulty", "stream": true, "max_tokens": %d, "event_bytes": %d}' % (n, size)
    with socket.create_connection(("127.0.0.1", studio.gateway_port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
        )
        time.sleep(2)
        raw = bytearray()
        sock.settimeout(60)
        while chunk := sock.recv(1 << 16):
            raw += chunk
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert b"transfer-encoding: chunked" in head.lower()
    assert _chunked(rest) == stream_bytes(n, size)


def test_a_kept_alive_connection_closed_under_a_request_is_sent_again(studio: Studio) -> None:
    """The engine closes a kept-alive connection when the second request arrives on it (what
    llama-server does at its keep-alive limits): the gateway sends it again on a fresh one."""
    for _ in range(3):
        r = post(studio, max_tokens=3, fault="drop-second")
        assert r.status_code == 200, r.text
        assert r.content == stream_bytes(3)


def test_a_malformed_answer_is_a_502_in_the_one_error_shape(studio: Studio) -> None:
    r = post(studio, max_tokens=3, fault="malformed")
    assert r.status_code == 502, r.text
    error = r.json()["error"]
    assert error["source"] == "upstream" and "faulty" in error["message"], error
    assert post(studio, max_tokens=2).content == stream_bytes(2)  # and the model still answers


@pytest.mark.parametrize(
    "path",
    [
        "/v1/completions%0D%0AX-Smuggled:%201",  # CR LF in the decoded path: a header of the caller's
        "/v1/completions%20HTTP/1.1%0D%0A%0D%0AGET%20/slots",  # a second request on the connection
        "/v1/completions/%E2%82%AC",  # not latin-1 once decoded
    ],
)
def test_a_percent_encoded_path_cannot_split_the_request_to_the_engine(studio: Studio, path: str) -> None:
    """uvicorn decodes ``%0D%0A`` in the path; the relay writes the request line itself, so the
    path goes upstream percent-encoded again: one request line, no header of the client's making."""
    r = httpx.post(f"{studio.gateway_url}{path}", json={"model": "faulty", "fault": "echo"}, timeout=60)
    assert r.status_code == 200, r.text
    lines = r.json()["head"].split("\r\n")
    method, target, version = lines[0].split(" ")
    assert (method, version) == ("POST", "HTTP/1.1"), lines[0]
    assert target == path, lines[0]
    assert not any(line.lower().startswith(("x-smuggled", "get ")) for line in lines), lines
    assert post(studio, max_tokens=2).content == stream_bytes(2)  # the pooled connection is sound


@pytest.mark.parametrize("how", ["expect-header", "continue", "extra"])
def test_an_interim_or_unasked_answer_never_reaches_the_next_request(studio: Studio, how: str) -> None:
    """``Expect: 100-continue`` (curl sends it with a large body) was relayed: llama-server then
    answers ``100 Continue`` first, which the relay took for the answer, and the real answer was
    left on the pooled connection for the next client's request. The header is not relayed, a
    1xx answer is skipped, and bytes after an answer drop the connection."""
    headers = {"expect": "100-continue"} if how == "expect-header" else {}
    body = {"model": "faulty", "stream": True, "max_tokens": 3}
    if how != "expect-header":
        body["fault"] = how
    for _ in range(3):
        r = httpx.post(f"{studio.gateway_url}/v1/completions", json=body, headers=headers, timeout=60)
        assert r.status_code == 200 and r.content == stream_bytes(3), r.content[:200]
        time.sleep(0.3)  # the extra answer arrives while the connection is idle in the pool
        nxt = httpx.post(
            f"{studio.gateway_url}/v1/completions", json={"model": "faulty", "fault": "echo"}, timeout=60
        )
        assert nxt.status_code == 200 and "head" in nxt.json(), nxt.text[:200]
        assert "expect" not in nxt.json()["head"].lower()


def test_a_client_gone_before_the_head_closes_the_engines_connection(studio: Studio) -> None:
    """A whole (not streamed) answer's head comes when it is done: a client that gives up before
    then must still get the engine's connection closed (llama-server polls it to stop), not left
    open on a connection nobody reads."""
    before = post(studio, fault="holds").json()["closed"]
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            f"{studio.gateway_url}/v1/completions", json={"model": "faulty", "fault": "hold"}, timeout=1
        )
    deadline = time.monotonic() + 30
    while post(studio, fault="holds").json()["closed"] == before:
        assert time.monotonic() < deadline, "the held request's connection to the engine was never closed"
        time.sleep(0.1)


def test_the_clients_credentials_are_not_relayed(studio: Studio) -> None:
    """An engine (a command of the owner's, or a llama-swap ``proxy`` elsewhere) never gets the
    client's key, the studio owner's key or its cookies; the engine's own key is added."""
    headers = {"authorization": "Bearer sk-client", "x-studio-owner": "owner-secret", "cookie": "s=1"}
    r = httpx.post(
        f"{studio.gateway_url}/v1/completions",
        json={"model": "faulty", "fault": "echo"},
        headers=headers,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    head = r.json()["head"].lower()
    assert "sk-client" not in head and "owner-secret" not in head and "cookie" not in head, head
