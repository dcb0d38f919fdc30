"""Issue 18, the gateway's items: its own CORS policy, JSON-only bodies, deeply nested JSON, a
per-process key on every engine, engines without the studio's secrets, bounded metrics labels and
the kill -9 race — against the real ``llamastudio serve`` and the rig's real llama-server."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from llamastudio.engines import keys
from llamastudio.engines.registry import Engine
from llamastudio.engines.validate import engine_env
from tests.rig.pids import alive
from tests.rig.studio import Studio

KEY = "gw-secret"
API_KEY = "api-secret"
ALLOWED = "https://chat.example.com"
SMALL = ["-c", "512", "-np", "2", "-t", "2"]
SECRETS = {
    "HF_TOKEN": "hf_studio_token",
    "HUGGING_FACE_HUB_TOKEN": "hf_studio_token_2",
    "HUGGINGFACE_API_KEY": "hf_studio_token_3",
    "GITHUB_TOKEN": "ghp_studio_token",
    "LLAMASTUDIO_GITHUB_TOKEN": "ghp_studio_token_2",
}
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def test_engine_env_withholds_the_studios_secrets() -> None:
    base = {
        **SECRETS,
        "LLAMASTUDIO_API_KEY": "k",
        "LLAMA_API_KEY": "k",
        "PATH": "/bin",
        "LLAMA_ARG_CTX_SIZE": "8",
    }
    assert engine_env(base) == {"PATH": "/bin", "LLAMA_ARG_CTX_SIZE": "8"}


def test_engine_keys_are_fresh_private_files(tmp_path: Path) -> None:
    def engine(*flags: str) -> Engine:
        return Engine("e", "e", "external", str(tmp_path), {}, capabilities=list(flags))

    assert keys.issue(None, tmp_path, "cmd") is None  # `command` configurations
    assert keys.issue(engine("--api-key"), tmp_path, "old") is None  # only in argv: not used
    a = keys.issue(engine("--api-key", "--api-key-file"), tmp_path / "run", "m")
    b = keys.issue(engine("--api-key-file"), tmp_path / "run", "m")
    assert a is not None and b is not None and a.key != b.key and a.file != b.file
    assert a.file.read_text() == a.key + "\n" and (a.file.stat().st_mode & 0o777) == 0o600
    assert a.args == ["--api-key-file", str(a.file)] and len(a.key) >= 32
    a.remove()
    assert not a.file.exists() and b.file.exists()


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path]) -> Iterator[Studio]:
    env = {**SECRETS, "LLAMASTUDIO_CORS_ORIGINS": ALLOWED}
    root = tmp_path_factory.mktemp("studio")
    with Studio(root, rig_bin("llama-server"), gateway_key=KEY, api_key=API_KEY, env=env) as s:
        yield s


def state(studio: Studio, name: str) -> str:
    return str(studio.status(name)["state"])


def test_cors_is_the_gateways_own_policy(studio: Studio, tiny_models: dict[str, Path]) -> None:
    """Issue 18 item 4: llama-server reflected any Origin with credentials, and the gateway
    relayed that to every web page."""
    studio.configure("cors-a", model=str(tiny_models["llama"]), args=SMALL)
    gw = studio.gateway()
    body = {"model": "cors-a", **CHAT}

    # another web page: refused before the model is started
    evil = gw.post("/v1/chat/completions", json=body, headers={"Origin": "https://evil.example"})
    assert evil.status_code == 403, evil.text
    err = evil.json()["error"]
    assert err["code"] == "cross_origin" and err["source"] == "studio"
    assert "access-control-allow-origin" not in evil.headers
    assert state(studio, "cors-a") == "stopped"
    assert gw.options("/v1/chat/completions", headers={"Origin": "https://evil.example"}).status_code == 403
    # a cross-site request without an Origin (an <img>, a link) is refused too
    img = gw.get("/v1/models", headers={"Sec-Fetch-Site": "cross-site"})
    assert img.status_code == 403 and img.json()["error"]["code"] == "cross_origin"

    # no Origin (SDKs, curl): nothing CORS in the answer, though llama-server sends its own
    plain = gw.post("/v1/chat/completions", json=body)
    assert plain.status_code == 200, plain.text
    assert not [h for h in plain.headers if h.startswith("access-control-")], plain.headers

    # the listed origin: named exactly once, never with credentials, on relayed answers,
    # the gateway's own and its errors alike
    listed = gw.post("/v1/chat/completions", json=body, headers={"Origin": ALLOWED})
    assert listed.status_code == 200, listed.text
    assert listed.headers.get_list("access-control-allow-origin") == [ALLOWED]
    assert "access-control-allow-credentials" not in listed.headers
    assert "origin" in listed.headers["vary"].lower()
    models = gw.get("/v1/models", headers={"Origin": ALLOWED})
    assert models.headers["access-control-allow-origin"] == ALLOWED
    missing = gw.post("/v1/chat/completions", json={**body, "model": "nope"}, headers={"Origin": ALLOWED})
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == ALLOWED

    # its preflight, answered by the gateway without a key (browsers send none)
    pre = httpx.options(
        f"{studio.gateway_url}/v1/chat/completions",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
        },
    )
    assert pre.status_code == 204, pre.text
    assert pre.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in pre.headers["access-control-allow-methods"]
    allowed_headers = {h.strip() for h in pre.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-api-key", "x-stainless-os"} <= allowed_headers
    assert int(pre.headers["access-control-max-age"]) > 0

    # the gateway's own origin is not cross-origin
    own = gw.get("/v1/models", headers={"Origin": studio.gateway_url})
    assert own.status_code == 200 and "access-control-allow-origin" not in own.headers


def test_bodies_must_be_json(studio: Studio, tiny_models: dict[str, Path]) -> None:
    """Issue 18 item 4: ``text/plain`` bodies were parsed as JSON, so any page could post to a
    keyless gateway without a preflight."""
    studio.configure("ctype-a", model=str(tiny_models["llama"]), args=SMALL)
    gw = studio.gateway()
    raw = b'{"model": "ctype-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'
    for ctype in (
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ):
        headers = {"content-type": ctype} if ctype else {}
        r = gw.post("/v1/chat/completions", content=raw, headers=headers)
        assert r.status_code == 415, (ctype, r.text)
        assert r.json()["error"]["code"] == "unsupported_media_type"
        assert r.json()["error"]["source"] == "studio"
    assert state(studio, "ctype-a") == "stopped"  # nothing was started
    ok = gw.post(
        "/v1/chat/completions", content=raw, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 200, ok.text
    # a GET names its model in the query and has no body to check
    assert gw.get("/props", params={"model": "ctype-a"}).status_code == 200


def _http(sock: socket.socket, request: bytes) -> tuple[int, bytes]:
    """Send one HTTP/1.1 request on ``sock`` and read one response (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(
        int(v) for k, _, v in (h.partition(b":") for h in lines[1:]) if k.lower() == b"content-length"
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(lines[0].split()[1]), rest[:length]


def test_deeply_nested_json_is_a_clean_400(studio: Studio) -> None:
    """Issue 18 (Low): 100,000 ``[`` made a 500 RecursionError on the gateway."""
    host = f"127.0.0.1:{studio.gateway_port}"
    with socket.create_connection(("127.0.0.1", studio.gateway_port), timeout=30) as sock:
        for body in (b"[" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            status, out = _http(
                sock,
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
                b"Authorization: Bearer " + KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
            )
            assert status == 400, out[:300]
            assert b'"invalid_input"' in out and b"nested too deeply" in out
        # the same connection still serves
        status, out = _http(
            sock,
            b"GET /v1/models HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Authorization: Bearer " + KEY.encode() + b"\r\n\r\n",
        )
        assert status == 200 and b'"object": "list"' in out


def test_engine_ports_need_the_engine_key(studio: Studio, tiny_models: dict[str, Path]) -> None:
    """Issue 18 item 5: an engine's port answered anyone on the machine without a key."""
    studio.configure("keyed", model=str(tiny_models["llama"]), args=SMALL)
    gw = studio.gateway()
    assert gw.post("/v1/chat/completions", json={"model": "keyed", **CHAT}).status_code == 200
    st = studio.status("keyed")
    engine = f"http://127.0.0.1:{st['port']}"
    assert httpx.get(f"{engine}/health").status_code == 200  # readiness needs no key
    for method, path in (
        ("GET", "/props"),
        ("GET", "/slots"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ):
        r = httpx.request(method, engine + path, json=CHAT if method == "POST" else None)
        assert r.status_code == 401, (path, r.status_code)
        # the gateway's key (or any the client sends) is not the engine's
        r = httpx.request(method, engine + path, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 401, (path, r.status_code)
    assert gw.get("/props", params={"model": "keyed"}).status_code == 200
    assert gw.get("/slots", params={"model": "keyed"}).status_code == 200
    # the key was never in argv (world-readable) and its file is gone once the engine is ready
    cmdline = Path(f"/proc/{st['pid']}/cmdline").read_bytes().split(b"\0")
    key_file = Path(cmdline[cmdline.index(b"--api-key-file") + 1].decode())
    assert b"--api-key" not in cmdline and not key_file.exists()
    engine_keys = [k for k in key_file.parent.glob("*.key") if k.name != "owner.key"]  # the CLI's, 0600
    assert key_file.parent == studio.data_dir / "run" and not engine_keys


def test_engines_do_not_inherit_the_studios_secrets(studio: Studio, tiny_models: dict[str, Path]) -> None:
    """Issue 18 (Low): engines inherited the studio's API keys and HF token in their environment."""
    studio.configure("env-a", model=str(tiny_models["llama"]), args=SMALL, env={"OMP_NUM_THREADS": "2"})
    assert studio.gateway().post("/v1/chat/completions", json={"model": "env-a", **CHAT}).status_code == 200
    pid = studio.status("env-a")["pid"]
    environ = dict(
        entry.split("=", 1) for entry in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in entry
    )
    leaked = {k for k in environ if k in SECRETS or k.startswith("LLAMASTUDIO_")}
    assert not leaked, leaked
    assert KEY not in environ.values() and API_KEY not in environ.values()
    assert not any(v in environ.values() for v in SECRETS.values())
    assert environ["OMP_NUM_THREADS"] == "2"  # the configuration's own env still applies
    assert "PATH" in environ  # the rest of the environment is passed on
    # the studio itself had them
    studio_env = Path(f"/proc/{studio.proc.pid}/environ").read_text() if studio.proc else ""
    assert "HF_TOKEN=hf_studio_token" in studio_env and "LLAMASTUDIO_API_KEY=" in studio_env


def _series(text: str, name: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(name + "{")]


def test_metrics_labels_are_bounded(studio: Studio) -> None:
    """Issue 18 (Low): 20k random model names made 20k ``/metrics`` series."""
    gw = studio.gateway()
    before = len(_series(gw.get("/metrics").text, "llamastudio_requests_total"))
    names = [secrets.token_hex(8) for _ in range(2000)]

    def ask(i: int) -> int:
        path = "/v1/chat/completions" if i % 2 else f"/v1/{names[i]}"
        with httpx.Client(base_url=studio.gateway_url, headers={"Authorization": f"Bearer {KEY}"}) as c:
            return c.post(path, json={"model": names[i], **CHAT}).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(ask, range(len(names))))
    assert set(codes) == {404}
    text = gw.get("/metrics").text
    series = _series(text, "llamastudio_requests_total")
    assert len(series) <= before + 2, series[-10:]  # _unknown × (a known path, _other)
    assert not any(n in text for n in names[:50])
    unknown = sum(float(s.rsplit(" ", 1)[1]) for s in series if 'model="_unknown"' in s)
    assert unknown >= 2000


def test_a_request_right_after_kill_9_restarts_the_engine(
    studio: Studio, tiny_models: dict[str, Path]
) -> None:
    """Issue 18 (Low): a request 0 ms after an engine's kill -9 got 502 instead of a restart."""
    studio.configure("k9", model=str(tiny_models["llama"]), args=SMALL)
    studio.configure("k9-bystander", model=str(tiny_models["qwen3"]), args=SMALL)
    gw = studio.gateway()
    by = {"model": "k9-bystander", **CHAT}
    assert gw.post("/v1/chat/completions", json=by).status_code == 200
    bystander_pid = studio.status("k9-bystander")["pid"]
    stop = threading.Event()
    bystander_codes: list[int] = []

    def bystander() -> None:
        with studio.gateway() as c:
            while not stop.is_set():
                bystander_codes.append(c.post("/v1/chat/completions", json=by).status_code)

    worker = threading.Thread(target=bystander)
    worker.start()
    try:
        for _ in range(5):
            assert gw.post("/v1/chat/completions", json={"model": "k9", **CHAT}).status_code == 200
            pid = studio.status("k9")["pid"]
            os.kill(pid, signal.SIGKILL)
            r = gw.post("/v1/chat/completions", json={"model": "k9", **CHAT})  # at once
            assert r.status_code == 200, r.text
            assert not alive(pid) and studio.status("k9")["pid"] not in (None, pid)
    finally:
        stop.set()
        worker.join(30)
    assert bystander_codes and set(bystander_codes) == {200}
    assert studio.status("k9-bystander")["pid"] == bystander_pid
