"""llama.cpp router mode's model API on the gateway (issue M #3): ``GET /models``, ``POST
/models/load``, ``POST /models/unload`` answered as a real ``llama-server --models-preset``
(router mode, the rig's b11434) answers them — both started by this test, the same calls made to
each, the shapes and the status progression compared."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port
from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab
from tests.rig.server import wait_healthy
from tests.rig.studio import Studio

# what llama-server's router gives every model (it adds args/preset/source/can_remove of its own
# process model, which the studio has no counterpart for)
ROUTER_KEYS = {"id", "object", "owned_by", "created", "aliases", "tags", "status", "architecture"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("router-model") / "tiny.gguf"
    BUILDERS["llama"](path, Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf"))
    return path


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Iterator[httpx.Client]:
    root = tmp_path_factory.mktemp("router")
    preset = root / "models.ini"
    preset.write_text(f"[tiny]\nmodel = {tiny}\nctx-size = 256\nthreads = 1\n")
    port = free_port()
    log = root / "router.log"
    argv = [str(binaries.binary("llama-server")), "--models-preset", str(preset)]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(proc, [f"{url}/health"], 60, lambda: log.read_text(errors="replace"), "router")
        with httpx.Client(base_url=url, timeout=60) as c:
            yield c
    finally:
        stop_process(proc, grace=10)


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Iterator[httpx.Client]:
    with Studio(tmp_path_factory.mktemp("router-studio"), binaries.binary("llama-server")) as s:
        s.configure("tiny", model=str(tiny), args=["-c", "256", "-t", "1"])
        s.configure("tiny-2", model=str(tiny), args=["-c", "256", "-t", "1"])  # several: a router
        with s.gateway() as g:
            yield g


def _entry(c: httpx.Client, path: str = "/models") -> dict[str, Any]:
    r = c.get(path)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list"
    found: dict[str, Any] = next(m for m in body["data"] if m["id"] == "tiny")
    return found


def _until(c: httpx.Client, done: Callable[[str], bool], timeout: float = 60) -> list[str]:
    """Each distinct ``status.value`` seen until ``done(value)``."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = _entry(c)["status"]["value"]
        if not seen or seen[-1] != value:
            seen.append(value)
        if done(value):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"status values seen: {seen}")


@pytest.mark.parametrize("which", ["router", "studio"])
def test_list_load_unload_as_the_router(which: str, request: pytest.FixtureRequest) -> None:
    c: httpx.Client = request.getfixturevalue(which)
    entry = _entry(c)
    assert entry.keys() >= ROUTER_KEYS, entry.keys()
    assert (
        entry["object"] == "model" and isinstance(entry["aliases"], list) and isinstance(entry["tags"], list)
    )
    assert entry["architecture"] == {"input_modalities": ["text"], "output_modalities": ["text"]}
    assert entry["status"]["value"] == "unloaded"
    # the router answers /v1/models with the same list (the OpenAI shape plus the status)
    assert {k: v for k, v in _entry(c, "/v1/models").items() if k != "created"} == {
        k: v for k, v in entry.items() if k != "created"
    }

    r = c.post("/models/load", json={"model": "tiny"})
    assert (r.status_code, r.json()) == (200, {"success": True})
    seen = _until(c, lambda v: v == "loaded")
    assert set(seen) <= {"unloaded", "loading", "loaded"} and seen[-1] == "loaded", seen
    r = c.post("/models/load", json={"model": "tiny"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "model is already running"
    assert r.json()["error"]["type"] == "invalid_request_error"

    done = c.post(
        "/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert done.status_code == 200, done.text

    r = c.post("/models/unload", json={"model": "tiny"})
    assert (r.status_code, r.json()) == (200, {"success": True})
    assert _until(c, lambda v: v == "unloaded")[-1] == "unloaded"
    r = c.post("/models/unload", json={"model": "tiny"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "model is not running"

    # an unknown model and a body that is not JSON: 4xx in the error shape on both
    r = c.post("/models/load", json={"model": "nope"})
    assert r.status_code in (400, 404) and r.json()["error"]["message"]
    r = c.post("/models/load", content=b"xx", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"]


def test_props_naming_no_model_are_the_routers(router: httpx.Client, studio: httpx.Client) -> None:
    """llama.cpp's web UI shows its model picker when ``GET /props`` says ``role: router``."""
    theirs, ours = router.get("/props").json(), studio.get("/props").json()
    assert ours.keys() == theirs.keys(), (sorted(ours), sorted(theirs))
    for props in (theirs, ours):
        assert (
            props["role"] == "router" and props["model_path"] == "none" and props["models_autoload"] is True
        )
    # naming a model still reaches that model's engine (it is started for it, as the router does)
    one = studio.get("/props", params={"model": "tiny"})
    assert one.status_code == 200 and one.json()["model_alias"] == "tiny"


@pytest.mark.parametrize("path", ["/models/load", "/models/unload"])
def test_a_web_page_cannot_load_or_unload_without_a_preflight(studio: httpx.Client, path: str) -> None:
    """A page on another site can POST ``text/plain`` (or a form) with no preflight: as every body
    the gateway takes, load/unload bodies must be JSON (415), or any page could load models (and
    evict others) or stop them."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": ctype} if ctype else {}
        r = studio.post(path, content=b'{"model": "tiny-2"}', headers=headers)
        assert r.status_code == 415, (ctype, r.text)
        assert r.json()["error"]["message"].startswith("the request body must be JSON"), r.text
    assert (
        next(m for m in studio.get("/models").json()["data"] if m["id"] == "tiny-2")["status"]["value"]
        == "unloaded"
    )
