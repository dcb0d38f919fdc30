"""Peers (issue M #1 ``peers``, issue O.3): a second studio and a plain llama-server as peers of a
studio — listed in its /v1/models, a streaming chat routed with the real ``openai`` SDK, the
peer's own key sent (never the client's), unavailable within seconds of the peer's shutdown, a
peer that is the studio itself refused as a loop, bad URLs refused with the one error shape."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest

from llamastudio.errors import PeerUnavailable
from llamastudio.services.peers import PeerState, choose
from llamastudio.serving.peers import PeerSpec
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.server import LlamaServer
from tests.rig.studio import Studio

A_KEY, B_KEY = "key-of-a", "key-of-b"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("peers-model") / "tiny.gguf"
    BUILDERS["llama"](path, Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf"))
    return path


@pytest.fixture
def studio_a(tmp_path: Path) -> Iterator[Studio]:
    with Studio(tmp_path / "a", binaries.binary("llama-server"), gateway_key=A_KEY) as s:
        yield s


def _wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` held (polled every 0.2 s)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - start


def _peer(studio: Studio, name: str) -> dict[str, object]:
    with studio.owner() as c:
        peers = c.get("/api/peers").json()
    return next(p for p in peers if p["name"] == name)


def test_second_studio_as_peer(studio_a: Studio, tiny: Path, tmp_path: Path) -> None:
    b = Studio(tmp_path / "b", binaries.binary("llama-server"), gateway_key=B_KEY).start()
    try:
        b.configure("tiny-b", model=str(tiny), args=["-c", "256", "-t", "1"])
        with studio_a.owner() as c:
            r = c.post("/api/peers", json={"name": "b", "url": b.gateway_url + "/v1/", "api_key": B_KEY})
            assert r.status_code == 201, r.text
            view = r.json()
            assert view["available"] is True, view
            assert "api_key" not in view and view["has_key"] is True
            assert view["url"] == b.gateway_url  # the /v1 suffix is the gateway's to add
            assert "tiny-b" in view["models"]
            assert B_KEY not in c.get("/api/peers").text

        with studio_a.gateway() as g:
            listed = {m["id"]: m for m in g.get("/v1/models").json()["data"]}
        assert listed["tiny-b"]["owned_by"] == "b" and listed["tiny-b"]["peer"] == "b"

        # streamed through A with A's key: B only accepts its own key, which A sends
        client = openai.OpenAI(base_url=f"{studio_a.gateway_url}/v1", api_key=A_KEY, max_retries=0)
        stream = client.chat.completions.create(
            model="tiny-b", messages=[{"role": "user", "content": "hi"}], max_tokens=8, stream=True
        )
        chunks = list(stream)
        assert len(chunks) >= 2 and chunks[0].model
        assert b.status("tiny-b")["state"] == "ready"  # it ran on B
        # counted when the relay is done, just after the client has read the stream's end
        counted = studio_a.wait_metric(
            "llamastudio_requests_total", 1, model="tiny-b", path="/v1/chat/completions", status="200"
        )
        assert counted == 1

        # B asked with A's key directly is refused: the key A sent upstream was B's own
        with b.gateway() as direct:
            direct.headers["Authorization"] = f"Bearer {A_KEY}"
            assert direct.get("/v1/models").status_code == 401
    finally:
        b.stop()

    waited = _wait(lambda: _peer(studio_a, "b")["available"] is False, 10, "peer b marked unavailable")
    assert waited < 10
    with studio_a.gateway() as g:
        r = g.post(
            "/v1/chat/completions", json={"model": "tiny-b", "messages": [{"role": "user", "content": "x"}]}
        )
        listed = {m["id"]: m for m in g.get("/v1/models").json()["data"]}
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "peer_unavailable" and "peer b" in err["message"] and err["source"] == "studio"
    assert listed["tiny-b"]["status"]["state"] == "unavailable"


def test_llama_server_as_peer_and_loops(studio_a: Studio, tiny: Path, tmp_path: Path) -> None:
    srv = LlamaServer(
        binaries.binary("llama-server"), tiny, tmp_path / "plain.log", "-c", "256", "--alias", "plain"
    ).__enter__()
    try:
        added = studio_a.cli("peers", "add", "plain", srv.url, "--models", "plain")
        assert f"peer plain ({srv.url}) is available; models: plain" in added.stdout, added.stdout
        listed = studio_a.cli("peers", "ls", "--json")
        assert '"available": true' in listed.stdout and '"api_key"' not in listed.stdout
        client = openai.OpenAI(base_url=f"{studio_a.gateway_url}/v1", api_key=A_KEY, max_retries=0)
        done = client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}], max_tokens=4, seed=3
        )
        assert done.choices[0].message is not None and done.usage is not None
        # the peer's set_params / strip_params reach it: max_tokens forced to 1
        with studio_a.owner() as c:
            body = {
                "name": "plain",
                "url": srv.url,
                "set_params": {"max_tokens": 1},
                "strip_params": ["seed"],
            }
            assert c.post("/api/peers", json=body).status_code == 201
        one = client.chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "hi"}], max_tokens=4, seed=3
        )
        assert one.usage is not None and one.usage.completion_tokens == 1
        assert "removed peer plain" in studio_a.cli("peers", "rm", "plain").stdout
        gone = studio_a.cli("peers", "rm", "plain", check=False)
        assert gone.returncode == 2 and "no peer named 'plain'" in gone.stderr
    finally:
        srv.stop()

    with studio_a.api() as c:  # an API caller without the command permission (not the owner)
        r = c.post("/api/peers", json={"name": "x", "url": "http://10.9.9.9:2000"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "commands_not_allowed", r.text
        r = c.post("/api/workers", json={"endpoint": "10.9.9.9:50052", "key": "k"})
        assert r.status_code == 403 and "receives model weights" in r.json()["error"]["message"], r.text
        r = c.put("/api/models/r/config", json={"model": "m.gguf", "args": ["--rpc", "10.9.9.9:50052"]})
        assert r.status_code == 403 and "RPC servers" in r.json()["error"]["message"], r.text
        assert all(p["name"] != "x" for p in c.get("/api/peers").json())

    with studio_a.owner() as c:
        # the studio itself as its own peer: its gateway sees its own id come back (508)
        r = c.post("/api/peers", json={"name": "me", "url": studio_a.gateway_url, "api_key": A_KEY})
        assert r.status_code == 201
        assert r.json()["available"] is False and "loop" in r.json()["reason"], r.json()
        assert c.delete("/api/peers/me").status_code == 204
        assert all(p["name"] != "me" for p in c.get("/api/peers").json())
        assert c.delete("/api/peers/me").status_code == 404

        for bad in ("ftp://host/", "http://", "http://user:pw@host/", "not a url", "http://h:99999"):
            r = c.post("/api/peers", json={"name": "bad", "url": bad})
            assert r.status_code == 400, (bad, r.text)
            assert "url" in r.json()["error"]["message"]
        r = c.post("/api/peers", json={"name": "../x", "url": "http://127.0.0.1:1"})
        assert r.status_code == 400 and "peer name" in r.json()["error"]["message"]


def _state(name: str, listed: dict[str, dict[str, object]], available: bool = True) -> PeerState:
    return PeerState(PeerSpec(name, f"http://{name}"), available=available, reason=None, listed=listed)


def test_placement_prefers_loaded_then_loading_then_least_busy() -> None:
    def entry(state: str, in_flight: int = 0) -> dict[str, object]:
        return {"id": "m", "status": {"state": state, "in_flight": in_flight, "queued": 0}}

    idle, busy = _state("idle", {"m": entry("stopped")}), _state("busy", {"m": entry("ready", 3)})
    calm, loading = _state("calm", {"m": entry("ready", 1)}), _state("loading", {"m": entry("starting")})
    router = _state("router", {"m": {"id": "m", "status": {"value": "loaded"}}})
    assert choose([idle, busy], "m") is busy  # loaded beats can-load
    assert choose([idle, busy, calm], "m") is calm  # of the loaded, the least busy
    assert choose([idle, loading], "m") is loading
    assert choose([idle, router], "m") is router  # llama-server router's status.value
    assert choose([idle], "other") is None
    down = _state("down", {"m": entry("ready")}, available=False)
    assert choose([down, idle], "m") is idle
    with pytest.raises(PeerUnavailable, match="peer down"):
        choose([down], "m")


class _Redirect(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_disconnect_cancels_upstream_and_redirects_are_not_followed(
    studio_a: Studio, tiny: Path, tmp_path: Path
) -> None:
    srv = LlamaServer(
        binaries.binary("llama-server"),
        tiny,
        tmp_path / "long.log",
        "-c",
        "4096",
        "--alias",
        "long",
        "--metrics",
    ).__enter__()
    try:
        with studio_a.owner() as c:
            assert c.post("/api/peers", json={"name": "long", "url": srv.url}).json()["available"] is True
        body = {
            "model": "long",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4000,
            "ignore_eos": True,
            "stream": True,
        }
        with studio_a.gateway() as g, g.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            chunks = r.iter_bytes()
            for _ in range(3):
                next(chunks)
        # the client went away: the relay closed its connection to the peer, which stopped
        _wait(
            lambda: not any(s["is_processing"] for s in httpx.get(f"{srv.url}/slots").json()), 20, "peer idle"
        )
        metrics = httpx.get(f"{srv.url}/metrics").text
        predicted = next(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("llamacpp:tokens_predicted_total")
        )
        assert predicted < 4000, predicted
    finally:
        srv.stop()

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    thread = threading.Thread(target=redirector.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{redirector.server_address[1]}"
        with studio_a.owner() as c:
            r = c.post("/api/peers", json={"name": "redir", "url": url, "models": ["m"]})
        assert r.json()["available"] is False and "redirects are not followed" in r.json()["reason"], r.json()
        with studio_a.gateway() as g:
            r = g.post(
                "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "x"}]}
            )
        assert r.status_code == 503 and "peer redir" in r.json()["error"]["message"]
    finally:
        redirector.shutdown()
