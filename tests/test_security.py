"""Issue 18, items 1, 3 and 5 (the :8080 ``/gateway`` mount): nobody but the studio's owner can
drive it. DNS rebinding (Host), cross-site requests (Origin, Sec-Fetch-Site, bodyless POSTs), the
WebSocket's Origin, keys checked before the body is read, the body size limit, and the permission
to store anything that runs a command of the caller's choosing."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient, WebSocketDenialResponse
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect
from websockets.typing import Origin

from llamastudio.api.app import create_app
from llamastudio.config import Settings
from llamastudio.engines.buildspec import BuildSpec, foreign_code
from llamastudio.errors import InvalidInput
from llamastudio.gateway.app import error_json
from llamastudio.guard import HostRule, Message, guard_gateway, key_ok, same_origin
from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port
from llamastudio.serving.configs import ModelConfig, runs_command, validate
from tests.rig.server import wait_healthy

CLIENT = {"X-Studio-Client": "tests"}
EVIL = "http://evil.example"
OWN = "http://127.0.0.1:8080"
WS = "ws://127.0.0.1:8080"  # TestClient sends Host: testserver for a relative WebSocket URL
SH_IMPORT = (
    "models:\n  pwn:\n    cmd: \"/bin/sh -c 'id > /tmp/pwned; exec sleep 1000' ${PORT}\"\n"
    "    metadata: {llamastudio: {reserve: {CPU: 1000000}}}\n"
)


def _app(tmp_path: Path, **settings: Any) -> FastAPI:
    return create_app(Settings(data_dir=tmp_path / "data", **settings))


@contextlib.asynccontextmanager
async def _client(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=OWN, headers=headers) as c:
        yield c


def _studio_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["source"] == "studio" and err["message"]


def _openai_error(resp: httpx.Response, status: int, code: str, type_: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert (err["code"], err["type"], err["source"]) == (code, type_, "studio") and err["message"]


# -- keys ------------------------------------------------------------------------------------------
def test_key_ok_reads_bearer_and_x_api_key() -> None:
    keys = ["s3cret", None, ""]
    assert key_ok([(b"authorization", b"Bearer s3cret")], keys)
    assert key_ok([(b"authorization", b"bearer  s3cret ")], keys)
    assert key_ok([(b"x-api-key", b"s3cret")], keys)
    assert key_ok([(b"authorization", b"Bearer nope"), (b"x-api-key", b"s3cret")], keys)
    assert not key_ok([(b"authorization", b"Bearer s3cre")], keys)
    assert not key_ok([(b"authorization", b"Basic s3cret")], keys)
    assert not key_ok([(b"cookie", b"s3cret")], keys)
    assert not key_ok([(b"authorization", b"Bearer ")], [None, ""])  # no key configured: no match
    assert key_ok([(b"x-api-key", "clé".encode())], ["clé"])


def test_keys_are_compared_with_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug: keys were compared with ``==``/``in`` (time depends on the common prefix)."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # guard.py calls hmac.compare_digest
    assert key_ok([(b"authorization", b"Bearer two")], ["one", "two"])
    assert calls == [(b"two", b"one"), (b"two", b"two")]  # every key compared, no early exit


# -- Host (DNS rebinding) --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "settings", "allowed"),
    [
        ("localhost:8080", {}, True),
        ("LOCALHOST.", {}, True),
        ("127.0.0.1", {}, True),
        ("[::1]:8080", {}, True),
        ("192.168.1.20:8080", {}, True),  # an address typed by a person, never a rebinding
        ("evil.example", {}, False),
        ("evil.example:8080", {}, False),
        ("127.0.0.1.evil.example", {}, False),
        ("localhost.evil.example", {}, False),
        ("", {}, False),
        ("::1", {}, False),  # not a valid Host (brackets missing)
        ("studio.lan:8080", {"allowed_hosts": ["studio.lan"]}, True),
        ("studio.lan:8080", {"allowed_hosts": ["studio.lan:9000"]}, False),
        ("a.studio.lan", {"allowed_hosts": [".studio.lan"]}, True),
        ("studio.lan", {"allowed_hosts": [".studio.lan"]}, True),
        ("evilstudio.lan", {"allowed_hosts": [".studio.lan"]}, False),
        ("anything", {"allowed_hosts": ["*"]}, True),
        ("myhost:8080", {"host": "myhost"}, True),  # the name the studio binds
        ("myhost:8080", {"host": "0.0.0.0"}, False),
    ],
)
def test_host_rule(host: str, settings: dict[str, Any], allowed: bool) -> None:
    rule = HostRule(Settings(**settings))
    assert rule.allows(host) is allowed
    assert rule.allows(host) is allowed  # remembered: the same answer


def test_host_answers_are_remembered_within_a_bound() -> None:
    rule = HostRule(Settings())
    for i in range(1000):  # a caller cycling names cannot grow the memory
        assert rule.allows(f"evil{i}.example") is False
        assert len(rule._seen) <= 256
    assert rule.allows("localhost:2000") and not rule.allows("evil1.example")


def test_same_origin() -> None:
    assert same_origin("http://127.0.0.1:8080", "http", "127.0.0.1:8080")
    assert same_origin("https://studio.lan", "https", "studio.lan:443")
    assert same_origin("http://127.0.0.1:8080", "ws", "127.0.0.1:8080")
    assert not same_origin("http://127.0.0.1:2000", "http", "127.0.0.1:8080")
    assert not same_origin("https://127.0.0.1:8080", "http", "127.0.0.1:8080")
    assert not same_origin("null", "http", "127.0.0.1:8080")
    assert not same_origin(EVIL, "http", "127.0.0.1:8080")


async def test_rebinding_host_is_refused_on_api_ui_and_gateway(tmp_path: Path) -> None:
    """Issue 18 item 1: a DNS-rebinding page (Host: evil.example) drove the keyless API."""
    app = _app(tmp_path)
    async with _client(app, Host="evil.example:8080", **CLIENT) as c:
        _studio_error(await c.get("/api/status"), 403, "forbidden_host")
        _studio_error(await c.post("/api/running/unload-all"), 403, "forbidden_host")
        _studio_error(await c.get("/"), 403, "forbidden_host")
        gw = await c.post("/gateway/v1/chat/completions", json={"model": "x", "messages": []})
        _openai_error(gw, 403, "forbidden_host", "permission_error")
        assert "LLAMASTUDIO_ALLOWED_HOSTS" in gw.json()["error"]["message"]
    async with _client(app, **CLIENT) as c:
        assert (await c.get("/api/status")).status_code == 200
    app = _app(tmp_path, allowed_hosts=["studio.lan"])
    async with _client(app, Host="studio.lan:8080") as c:
        assert (await c.get("/api/status")).status_code == 200


def test_rebinding_websocket_is_refused(tmp_path: Path) -> None:
    """Issue 18 item 1: ``/ws`` answered a rebinding page (Host: evil.example)."""
    client = TestClient(_app(tmp_path))
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("ws://evil.example:8080/ws"),
    ):
        pass
    assert denied.value.status_code == 403
    assert denied.value.json()["error"]["code"] == "forbidden_host"


# -- cross-site requests ---------------------------------------------------------------------------
async def test_cross_site_state_changing_requests_are_refused(tmp_path: Path) -> None:
    """Issue 18 item 1: POSTs from another site (Origin, Sec-Fetch-Site) reached the API."""
    app = _app(tmp_path)
    async with _client(app, **CLIENT) as c:
        for headers in (
            {"Origin": EVIL},
            {"Origin": "null"},
            {"Origin": "http://127.0.0.1:2000"},  # another port is another origin
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
            {"Origin": OWN, "Sec-Fetch-Site": "cross-site"},
        ):
            _studio_error(await c.post("/api/running/unload-all", headers=headers), 403, "cross_site")
            _studio_error(await c.delete("/api/models/m/config", headers=headers), 403, "cross_site")
        gw = await c.post("/gateway/v1/chat/completions", json={"model": "m"}, headers={"Origin": EVIL})
        _openai_error(gw, 403, "cross_site", "permission_error")
        same = await c.post(
            "/api/running/unload-all", headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"}
        )
        assert same.status_code == 200 and same.json() == {"unloaded": []}
        typed = await c.post("/api/running/unload-all", headers={"Sec-Fetch-Site": "none"})
        assert typed.status_code == 200  # typed in the address bar / a bookmark
        read = await c.get("/api/status", headers={"Origin": EVIL})  # reads: the page cannot see them
        assert read.status_code == 200 and "access-control-allow-origin" not in read.headers


async def test_bodyless_post_needs_json_or_the_client_header(tmp_path: Path) -> None:
    """Issue 18 item 1: bodyless POSTs (unload-all, start/stop, download cancel) worked
    cross-site: an old browser or a form sends them without a preflight and without Origin."""
    app = _app(tmp_path)
    async with _client(app) as c:
        for path in ("/api/running/unload-all", "/api/models/m/start", "/api/models/m/stop"):
            _studio_error(await c.post(path), 403, "csrf_header_required")
        _studio_error(await c.delete("/api/models/m/config"), 403, "csrf_header_required")
        form = await c.post(
            "/api/served/import",
            content=json.dumps({"format": "llama-swap", "text": "models: {}"}),
            headers={"Content-Type": "text/plain"},  # what a cross-site form may send
        )
        _studio_error(form, 403, "csrf_header_required")
        ok = await c.post("/api/running/unload-all", headers=CLIENT)
        assert ok.status_code == 200 and ok.json() == {"unloaded": []}
        as_json = await c.put("/api/settings", json={"default_ttl": 60})
        assert as_json.status_code == 200 and as_json.json()["default_ttl"] == 60
        assert (await c.get("/api/status")).status_code == 200  # reads need nothing


# -- WebSocket -------------------------------------------------------------------------------------
def _ws_refused(client: TestClient, url: str, headers: dict[str, str], status: int, code: str) -> None:
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(WS + url, headers=headers),
    ):
        pass
    assert denied.value.status_code == status
    assert denied.value.json()["error"]["code"] == code


def test_websocket_refuses_a_foreign_origin_even_with_the_key(tmp_path: Path) -> None:
    """Issue 18 item 1: ``/ws`` accepted any Origin, and ``?key=`` from any origin."""
    client = TestClient(_app(tmp_path, api_key="k"), base_url=OWN)
    _ws_refused(client, "/ws?key=k", {"Origin": EVIL}, 403, "cross_site")
    _ws_refused(client, "/ws", {"Origin": EVIL, "Authorization": "Bearer k"}, 403, "cross_site")
    _ws_refused(client, "/ws", {"Origin": OWN}, 401, "unauthorized")
    _ws_refused(client, "/ws?key=nope", {"Origin": OWN}, 401, "unauthorized")
    _ws_refused(client, "/ws?key=k", {}, 401, "unauthorized")  # ?key= only from the UI's origin
    for url, headers in (("/ws?key=k", {"Origin": OWN}), ("/ws", {"Authorization": "Bearer k"})):
        with client.websocket_connect(WS + url, headers=headers) as ws:
            assert ws.receive_json()["type"] == "hello"
    keyless = TestClient(_app(tmp_path / "keyless"), base_url=OWN)
    _ws_refused(keyless, "/ws", {"Origin": EVIL}, 403, "cross_site")
    with keyless.websocket_connect(WS + "/ws", headers={"Origin": OWN}) as ws:
        assert ws.receive_json()["type"] == "hello"


# -- keys before the body, body size ---------------------------------------------------------------
class _Upload:
    """An ASGI ``receive`` offering ``total`` body bytes in chunks; counts what the app read."""

    def __init__(self, total: int, chunk: int = 1 << 20) -> None:
        self.total, self.chunk, self.read = total, chunk, 0

    async def __call__(self) -> Message:
        if self.read >= self.total:
            await asyncio.sleep(3600)  # a client still connected, sending nothing more
        n = min(self.chunk, self.total - self.read)
        self.read += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.read < self.total}


async def _call(
    app: FastAPI, path: str, body: _Upload, length: bool, **headers: str
) -> tuple[int, dict[str, Any]]:
    raw = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")]
    if length:
        raw.append((b"content-length", str(body.total).encode()))
    raw += [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, body, send), 30)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(payload)


async def test_a_huge_body_with_a_wrong_key_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """Issue 18 item 3: the management API read a whole body (400 MiB) before checking the key."""
    app = _app(tmp_path, api_key="k", gateway_api_key="g")
    for path in ("/api/served/import", "/gateway/v1/chat/completions"):
        for length in (True, False):  # Content-Length, and chunked
            for headers in ({}, {"authorization": "Bearer wrong"}):
                upload = _Upload(400 << 20)
                status, body = await _call(app, path, upload, length, **headers)
                assert status == 401 and body["error"]["code"] == "unauthorized"
                assert upload.read == 0


async def test_a_body_over_the_limit_is_refused_with_413(tmp_path: Path) -> None:
    """Issue 18 item 3: no size limit on request bodies."""
    app = _app(tmp_path, api_key="k", max_body_mb=1)
    upload = _Upload(400 << 20)
    status, body = await _call(app, "/api/served/import", upload, True, authorization="Bearer k")
    assert status == 413 and body["error"]["code"] == "too_large" and upload.read == 0
    upload = _Upload(400 << 20, chunk=256 << 10)  # chunked: cut once past the limit
    status, body = await _call(app, "/api/served/import", upload, False, authorization="Bearer k")
    assert status == 413 and body["error"] == {**body["error"], "code": "too_large", "source": "studio"}
    assert (1 << 20) < upload.read <= (1 << 20) + (256 << 10)
    upload = _Upload(400 << 20, chunk=256 << 10)
    status, body = await _call(app, "/gateway/v1/chat/completions", upload, False, authorization="Bearer k")
    assert status == 413 and body["error"]["type"] == "invalid_request_error"  # the OpenAI shape
    assert upload.read <= (1 << 20) + (256 << 10)
    async with _client(app, Authorization="Bearer k") as c:  # and through a real client
        big = await c.put("/api/models/m/config", json={"args": ["-c", "1" * (2 << 20)]})
        _studio_error(big, 413, "too_large")
        assert "LLAMASTUDIO_MAX_BODY_MB" in big.json()["error"]["message"]


# -- the :8080 /gateway mount's key ----------------------------------------------------------------
async def test_gateway_mount_needs_the_gateway_key_when_only_it_is_set(tmp_path: Path) -> None:
    """Issue 18 item 5: with only LLAMASTUDIO_GATEWAY_API_KEY set, :8080/gateway/v1/* served
    without any key."""
    app = _app(tmp_path, gateway_api_key="g")
    async with _client(app) as c:
        _openai_error(await c.get("/gateway/v1/models"), 401, "unauthorized", "authentication_error")
        wrong = await c.get("/gateway/v1/models", headers={"Authorization": "Bearer nope"})
        _openai_error(wrong, 401, "unauthorized", "authentication_error")
        assert (await c.get("/gateway/v1/models", headers={"Authorization": "Bearer g"})).status_code == 200
        assert (await c.get("/gateway/v1/models", headers={"x-api-key": "g"})).status_code == 200
        assert (await c.get("/api/status")).status_code == 200  # no management key: the API is open


async def test_gateway_mount_takes_either_key_and_the_api_only_its_own(tmp_path: Path) -> None:
    app = _app(tmp_path, api_key="k", gateway_api_key="g")
    async with _client(app) as c:
        for key in ("k", "g"):
            r = await c.get("/gateway/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200, r.text
        _studio_error(await c.get("/api/status", headers={"Authorization": "Bearer g"}), 401, "unauthorized")
        assert (await c.get("/api/status", headers={"Authorization": "Bearer k"})).status_code == 200
        assert (await c.get("/")).status_code == 200  # the UI's page stays public


async def test_the_2000_gateway_guard_checks_host_and_size_but_not_the_client_header() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guarded = guard_gateway(app, Settings(max_body_mb=1), error_json)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guarded), base_url="http://127.0.0.1:2000"
    ) as c:
        r = await c.get("/v1/models", headers={"Host": "evil.example:2000"})
        _openai_error(r, 403, "forbidden_host", "permission_error")
        assert (await c.post("/v1/chat/completions")).status_code == 200  # the gateway's own policy
        big = await c.post("/v1/chat/completions", content=b"x" * (2 << 20))
        _openai_error(big, 413, "too_large", "invalid_request_error")
    assert seen == ["/v1/chat/completions"]


# -- the command permission ------------------------------------------------------------------------
def test_runs_command_names_commands_and_code_loading_environment() -> None:
    assert runs_command(ModelConfig("a", "m.gguf")) is None
    assert runs_command(ModelConfig("a", "", command=["vllm", "--port", "${PORT}"]))
    safe = {
        "CUDA_VISIBLE_DEVICES": "0",
        "GGML_CUDA_NO_PINNED": "1",
        "LLAMA_ARG_CTX_SIZE": "8",
        "OMP_NUM_THREADS": "4",
    }
    assert runs_command(ModelConfig("a", "m.gguf", env=safe)) is None
    for name in ("LD_PRELOAD", "GGML_BACKEND_PATH", "VK_ICD_FILENAMES", "OMP_TOOL_LIBRARIES", "PATH"):
        why = runs_command(ModelConfig("a", "m.gguf", env={name: "/tmp/x.so"}))
        assert why is not None and name in why


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--tools", "exec_shell_command"], {}),
        (["--tools=all"], {}),
        (["-ag"], {}),
        (["--agent"], {}),
        (["--mcp-servers-json", '{"mcpServers": {"x": {"command": "sh"}}}'], {}),
        (["--mcp-servers-config", "/tmp/mcp.json"], {}),
        (["--tools-runtime", "ssh:host"], {}),
        (["--webui-mcp-proxy"], {}),
        ([], {"LLAMA_ARG_TOOLS": "all"}),
        ([], {"LLAMA_ARG_AGENT": "1"}),
        ([], {"LLAMA_ARG_MCP_SERVERS_JSON": "{}"}),
    ],
)
def test_llama_servers_agent_tools_need_the_permission(args: list[str], env: dict[str, str]) -> None:
    """Regression (review of K's flag catalog): ``--tools exec_shell_command`` (or ``--agent``,
    MCP servers, their env names) makes llama-server run commands on ``POST /tools``, which the
    gateway relays: a configuration saved through the API without the permission ran them."""
    why = runs_command(ModelConfig("a", "m.gguf", args=args, env=env))
    assert why is not None
    assert runs_command(ModelConfig("a", "m.gguf", args=["--no-agent", "-c", "512"])) is None


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--chat-template-file", "/root/.ssh/id_rsa"], {}),  # /props would return it
        (["--path", "/"], {}),  # llama-server would serve the whole disk through the gateway
        (["--media-path=/home"], {}),
        (["--log-file", "/etc/cron.d/x"], {}),
        (["-lcd", "/tmp/cache"], {}),
        (["--slot-save-path", "/var/tmp"], {}),
        (["--grammar-file", "/etc/shadow"], {}),
        (["--lora", "/tmp/adapter.gguf"], {}),
        ([], {"LLAMA_ARG_CHAT_TEMPLATE_FILE": "/root/.ssh/id_rsa"}),
        ([], {"LLAMA_ARG_LOG_FILE": "/etc/x"}),
        ([], {"LLAMA_ARG_HF_REPO": "someone/model"}),
        ([], {"LLAMA_ARG_MODEL": "/etc/passwd"}),
        ([], {"LLAMA_ARG_SPEC_DRAFT_MODEL": "/tmp/x.gguf"}),
    ],
)
def test_files_of_the_configurations_choice_need_the_permission(args: list[str], env: dict[str, str]) -> None:
    """Review: a file a configuration names is read or written by the engine, and what it reads
    comes back through the gateway (``/props`` returns a template file; ``--path`` serves a
    directory). Saved through the API, that needs the command permission, as commands do."""
    why = runs_command(ModelConfig("a", "m.gguf", args=args, env=env))
    assert why is not None
    safe = {"LLAMA_ARG_CTX_SIZE": "8", "LLAMA_ARG_N_GPU_LAYERS": "all", "LLAMA_ARG_FLASH_ATTN": "on"}
    assert runs_command(ModelConfig("a", "m.gguf", args=["--chat-template", "chatml"], env=safe)) is None


@pytest.mark.parametrize(
    "flag",
    ["-hfr", "--hf-file", "-hft", "-dr", "-hfd", "-mmu", "--api-key", "--api-key-file", "--models-dir"],
)
def test_what_the_studio_owns_cannot_be_configured(flag: str) -> None:
    """The studio downloads models itself (an engine never sees the Hub token), and the keys,
    TLS and router mode are the gateway's."""
    with pytest.raises(InvalidInput, match="set by the studio"):
        validate(ModelConfig("a", "m.gguf", args=[flag, "x"]))


async def test_agent_tools_through_the_api_and_the_seeds_custom_args(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with _client(app, **CLIENT) as c:
        studio_body = {"model": "m.gguf", "args": ["--tools", "exec_shell_command"]}
        _studio_error(await c.put("/api/models/pwn/config", json=studio_body), 403, "commands_not_allowed")
        seed_body = {"ctx_size": 512, "customArgs": "--tools exec_shell_command"}
        _studio_error(await c.put("/api/models/pwn/config", json=seed_body), 403, "commands_not_allowed")
        patch = {"env": {"LLAMA_ARG_TOOLS": "all"}}
        _studio_error(await c.patch("/api/models/pwn/config", json=patch), 403, "commands_not_allowed")


@pytest.mark.parametrize(
    ("spec", "foreign"),
    [
        (BuildSpec(), False),
        (BuildSpec(source="https://github.com/ggml-org/llama.cpp.git", ref="b5000"), False),
        (BuildSpec(cmake_args=("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86;89")), False),
        (BuildSpec(cflags="-O3 -march=native -fno-fast-math -Wno-unused", cxxflags="-g"), False),
        (BuildSpec(source="/home/me/llama.cpp"), True),
        (BuildSpec(source="/tmp/src.tar.gz"), True),
        (BuildSpec(source="https://github.com/someone/llama.cpp"), True),
        (BuildSpec(source="file:///tmp/repo"), True),
        (BuildSpec(patches=("https://github.com/ggml-org/llama.cpp/pull/1",)), True),
        (BuildSpec(cmake_args=("-DCMAKE_C_COMPILER_LAUNCHER=/bin/sh",)), True),
        (BuildSpec(cmake_args=("-DGGML_VULKAN_SHADERS_GEN_TOOLCHAIN=x.cmake",)), True),
        (BuildSpec(cmake_args=("-DGGML_CPU_ARM_ARCH=armv8;-fplugin=x",)), True),
        (BuildSpec(cflags="-O2; touch /tmp/pwned"), True),
        (BuildSpec(cflags="-fplugin=/tmp/x.so"), True),
        (BuildSpec(cxxflags="-Wl,--plugin=/tmp/x.so"), True),
        (BuildSpec(cflags="-Dfopen=popen"), True),
        (BuildSpec(cflags="-B/tmp/evil"), True),
    ],
)
def test_foreign_code_in_builds(spec: BuildSpec, foreign: bool) -> None:
    assert (foreign_code(spec, "ggml-org/llama.cpp") is not None) is foreign


async def test_commands_need_the_permission(tmp_path: Path) -> None:
    """Issue 18 item 1: a llama-swap import with ``cmd: /bin/sh -c …`` and a build from a local
    source with an ``execute_process`` both ran code as the studio's user, through the API."""
    app = _app(tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    async with _client(app, **CLIENT) as c:
        cmd = {"command": ["/bin/sh", "-c", "id # ${PORT}"]}
        refused = await c.put("/api/models/pwn/config", json=cmd)
        _studio_error(refused, 403, "commands_not_allowed")
        assert "LLAMASTUDIO_ALLOW_COMMANDS=1" in refused.json()["error"]["message"]
        env = {"model": "m.gguf", "env": {"LD_PRELOAD": "/tmp/x.so"}}
        _studio_error(await c.put("/api/models/pwn/config", json=env), 403, "commands_not_allowed")
        imported = await c.post("/api/served/import", json={"format": "llama-swap", "text": SH_IMPORT})
        _studio_error(imported, 403, "commands_not_allowed")
        assert "pwn" not in {m["name"] for m in (await c.get("/api/served")).json()}
        _studio_error(await c.get("/api/models/pwn/config"), 404, "not_found")
        for build in (
            {"source": str(src)},
            {"source": "https://github.com/attacker/llama.cpp"},
            {"patches": ["https://github.com/ggml-org/llama.cpp/pull/1"]},
            {"cmake_args": ["-DCMAKE_C_COMPILER_LAUNCHER=/bin/sh"]},
            {"cflags": "-O2 -fplugin=/tmp/x.so"},
        ):
            _studio_error(await c.post("/api/engines/build", json=build), 403, "commands_not_allowed")
        assert (await c.get("/api/engines/jobs")).json() == []  # nothing was started
        safe = await c.put(
            "/api/models/ok/config", json={"model": "m.gguf", "env": {"CUDA_VISIBLE_DEVICES": "0"}}
        )
        assert safe.status_code != 403  # (no such model file: 4xx, but not refused for commands)


async def test_allow_commands_lets_them_through(tmp_path: Path) -> None:
    app = _app(tmp_path, allow_commands=True)
    async with _client(app, **CLIENT) as c:
        put = await c.put(
            "/api/models/cmd/config", json={"command": ["/bin/true", "${PORT}"], "reserve": {"CPU": 1 << 20}}
        )
        assert put.status_code == 200 and put.json()["config"]["command"] == ["/bin/true", "${PORT}"]
        imported = await c.post("/api/served/import", json={"format": "llama-swap", "text": SH_IMPORT})
        assert imported.status_code == 200 and imported.json()["imported"] == ["pwn"]
        job = (await c.post("/api/engines/build", json={"source": str(tmp_path / "missing")})).json()
        deadline = time.monotonic() + 30
        while job["state"] == "running" and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            job = (await c.get(f"/api/engines/jobs/{job['id']}")).json()
        assert job["state"] == "failed"  # submitted, and failed on its missing source


# -- a real server: the socket level ---------------------------------------------------------------
class _Served:
    def __init__(self, root: Path) -> None:
        self.port, self.gateway_port = free_port(), free_port()
        self.log = root / "studio.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMASTUDIO_")}
        self.env |= {
            "LLAMASTUDIO_DATA_DIR": str(root / "data"),
            "LLAMASTUDIO_API_KEY": "k",
            "LLAMASTUDIO_GATEWAY_API_KEY": "g",
            "LLAMASTUDIO_LOG_LEVEL": "warning",
            "LLAMASTUDIO_PORT": str(self.port),
            "LLAMASTUDIO_GATEWAY_PORT": str(self.gateway_port),
            "LLAMASTUDIO_LMDEPLOY_PORT": str(free_port()),
            "HF_HOME": str(root / "hf"),
        }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    s = _Served(tmp_path_factory.mktemp("security"))
    with open(s.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llamastudio", "serve"], stdout=log, stderr=log, env=s.env
        )
    try:
        urls = [f"http://127.0.0.1:{s.gateway_port}/health", f"http://127.0.0.1:{s.port}/"]
        wait_healthy(proc, urls, 60, s.log.read_text, "studio")
        yield s
    finally:
        stop_process(proc, grace=20)


def _status_line(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[0]


@pytest.mark.parametrize("chunked", [False, True])
def test_real_server_answers_401_before_a_400_mib_body_is_sent(served: _Served, chunked: bool) -> None:
    """Issue 18 item 3, at the socket: the 401 comes back while the client has sent 1 MiB of a
    400 MiB body (the server did not wait for, nor read, the rest)."""
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % (400 << 20)
    head = (
        b"POST /api/served/import HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        % served.port
        + framing
        + b"\r\n\r\n"
    )
    piece = b"x" * (1 << 20)
    if chunked:
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head + piece)
        assert _status_line(sock).startswith(b"HTTP/1.1 401")


def test_real_server_refuses_rebinding_on_both_ports_and_foreign_websockets(served: _Served) -> None:
    """Issue 18 item 1 against ``llamastudio serve``: Host on :8080 and :2000, Origin on /ws."""
    evil = {"Host": "evil.example", "Authorization": "Bearer k"}
    api = httpx.get(f"http://127.0.0.1:{served.port}/api/status", headers=evil)
    assert api.status_code == 403 and api.json()["error"]["code"] == "forbidden_host"
    gw = httpx.get(f"http://127.0.0.1:{served.gateway_port}/health", headers=evil)
    assert gw.status_code == 403 and gw.json()["error"]["type"] == "permission_error"
    url = f"ws://127.0.0.1:{served.port}/ws?key=k"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, origin=Origin(EVIL), open_timeout=10).close()
    assert refused.value.response.status_code == 403
    with ws_connect(url, origin=Origin(f"http://127.0.0.1:{served.port}"), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"


def test_the_cli_sends_the_client_header(served: _Served) -> None:
    """The CLI's bodyless POSTs (``stop --all``) pass the CSRF-header check."""
    done = subprocess.run(
        [sys.executable, "-m", "llamastudio", "stop", "--all"],
        capture_output=True,
        text=True,
        env=served.env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
