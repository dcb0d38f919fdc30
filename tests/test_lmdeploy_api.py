"""The seed's LMDeploy REST paths (``/api/models/safetensors/{model_id}/lmdeploy/...``) through the
real app in-process: an LMDeploy engine registered from the real ``lmdeploy serve api_server
--help`` (no LMDeploy installed: nothing is started), a safetensors checkpoint directory added to
the library, its configuration stored, shown by the generic config view with the LMDeploy plan,
refused in the project's one error shape when wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from llamastudio.api.app import create_app
from llamastudio.config import Settings
from llamastudio.engines import pyengines
from llamastudio.engines.capabilities import parse_help
from llamastudio.engines.registry import Engine
from tests.rig import checkpoints as rig
from tests.rig.factory import BUILDERS, Vocab
from tests.test_api import CLIENT, assert_error_shape

GIB = 1 << 30
HELP = Path(__file__).parent / "fixtures" / "engines" / "lmdeploy-0.18.0-serve-api_server-help.txt"
ENGINE_ID = "lmdeploy-0.18.0-test"
LISTENER = 23401  # the LMDeploy-only listener's port setting (nothing binds it here)
NAME = "tiny-lm"


def lmdeploy_engine(root: Path, engine_id: str = ENGINE_ID) -> Engine:
    """An LMDeploy engine as ``pyengines.register`` records one, from the real help."""
    text = HELP.read_text()
    cli = root / "bin" / "lmdeploy"  # never run
    return Engine(
        id=engine_id,
        name="lmdeploy 0.18.0",
        kind="external",
        root=str(root),
        binaries={"python": str(root / "bin" / "python"), "entry": str(cli)},
        version="0.18.0",
        validation={
            "ok": True,
            "version": "0.18.0",
            "entry": [str(cli), "serve", "api_server"],
            "defaults": pyengines.help_defaults(text, pyengines.FAMILIES["lmdeploy"].memory_flags),
            "architectures": ["LlamaForCausalLM", "Qwen2ForCausalLM"],
        },
        capabilities=parse_help(text),
        family="lmdeploy",
    )


class Api:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient, root: Path) -> None:
        self.app = app
        self.client = client
        self.root = root

    def path(self, model_id: str, what: str) -> str:
        return f"/api/models/safetensors/{model_id}/lmdeploy/{what}"

    async def add_checkpoint(self, name: str = "llama") -> tuple[str, rig.Expected]:
        directory = self.root / name
        expected = rig.write_checkpoint(directory)
        resp = await self.client.post("/api/models", json={"path": str(directory)})
        assert resp.status_code == 201, resp.text
        (model,) = [m for m in resp.json() if m["path"] == str(directory)]
        assert model["format"] == "safetensors"
        return str(model["id"]), expected


async def _api(tmp_path: Path, hardware: str, engine: bool = True) -> AsyncIterator[Api]:
    settings = Settings(
        data_dir=tmp_path / "data",
        hardware=hardware,
        lmdeploy_port=LISTENER,
        lmdeploy_bin=tmp_path / "no-lmdeploy",  # not an `lmdeploy` found on PATH
    )
    app = create_app(settings)
    if engine:
        app.state.studio.engines.add(lmdeploy_engine(tmp_path / "engine"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=CLIENT
    ) as client:
        yield Api(app, client, tmp_path / "models")
    await app.state.studio.jobs.close()


@pytest.fixture
async def gpu(tmp_path: Path) -> AsyncIterator[Api]:
    async for api in _api(tmp_path, "1x24GiB"):
        yield api


@pytest.fixture
async def cpu(tmp_path: Path) -> AsyncIterator[Api]:
    async for api in _api(tmp_path, "cpu"):
        yield api


def _stored_fields(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("backend", "tp", "session_len", "max_batch_size", "cache_max_entry_count", "quant_policy")
    return {k: body[k] for k in (*keys, "model_format", "dtype", "args", "configured", "engine_id", "name")}


async def test_config_stored_and_shown_by_the_generic_view(gpu: Api) -> None:
    mid, expected = await gpu.add_checkpoint()
    c = gpu.client
    before = await c.get(gpu.path(mid, "config"))
    assert before.status_code == 200, before.text
    body = before.json()
    assert (body["model_id"], body["configured"], body["engine_id"]) == (mid, False, ENGINE_ID)
    assert body["tp"] is None and body["session_len"] is None and body["args"] == []

    put = await c.put(
        gpu.path(mid, "config"),
        json={
            "name": NAME,
            "tp": 1,
            "session_len": 1024,
            "cache_max_entry_count": 0.5,
            "backend": "pytorch",
            "args": ["--log-level", "INFO"],
        },
    )
    assert put.status_code == 200, put.text
    want = {
        "backend": "pytorch",
        "tp": 1,
        "session_len": 1024,
        "max_batch_size": None,
        "cache_max_entry_count": 0.5,
        "quant_policy": None,
        "model_format": None,
        "dtype": None,
        "args": ["--log-level", "INFO"],
        "configured": True,
        "engine_id": ENGINE_ID,
        "name": NAME,
    }
    assert _stored_fields(put.json()) == want
    again = await c.get(gpu.path(mid, "config"))
    assert again.json() == put.json()

    # the same configuration in the generic view, by its name and by the library id
    for ref in (NAME, mid):
        view = (await c.get(f"/api/models/{ref}/config")).json()
        cfg, prepared = view["config"], view["prepared"]
        assert cfg["name"] == NAME and cfg["model"] == mid and cfg["engine_id"] == ENGINE_ID
        assert cfg["auto"] is False and cfg["configured"] is True
        args = cfg["args"]
        for flag, value in (("--tp", "1"), ("--session-len", "1024"), ("--cache-max-entry-count", "0.5")):
            assert args[args.index(flag) + 1] == value
        assert args[args.index("--backend") + 1] == "pytorch" and args[-2:] == ["--log-level", "INFO"]
        assert view["error"] is None and prepared["kind"] == "lmdeploy" and prepared["engine"] == ENGINE_ID
        cli = str(gpu.app.state.studio.engines.get(ENGINE_ID).binaries["entry"])
        assert prepared["argv"] == [
            cli,
            "serve",
            "api_server",
            mid,
            "--model-name",
            NAME,
            "--server-name",
            "127.0.0.1",
            "--server-port",
            "${PORT}",
            *args,
        ]
        # LMDeploy's rule: the weights, then half of the rest of the 24 GiB for the KV cache
        weights = expected.weight_bytes
        assert prepared["reserve"] == {"CUDA0": weights + int(0.5 * (24 * GIB - weights))}
        assert any("--cache-max-entry-count 0.5 reserves" in w for w in prepared["warnings"])
        assert view["status"]["engine"] == ENGINE_ID and view["status"]["state"] == "stopped"

    # a second PUT replaces the fields (left out: LMDeploy's defaults) of the same configuration
    second = await c.put(gpu.path(mid, "config"), json={"tp": 1, "dtype": "bfloat16"})
    assert second.status_code == 200, second.text
    assert _stored_fields(second.json()) == want | {
        "backend": None,
        "session_len": None,
        "cache_max_entry_count": None,
        "dtype": "bfloat16",
        "args": [],
    }
    served = (await c.get("/api/served")).json()
    assert [m["name"] for m in served if m["model"] == mid] == [NAME]  # one configuration, renamed nothing
    view = (await c.get(f"/api/models/{NAME}/config")).json()
    assert view["config"]["args"] == ["--tp", "1", "--dtype", "bfloat16"]
    # no fraction given and not auto: LMDeploy's own default from its help (0.8)
    weights = expected.weight_bytes
    assert view["prepared"]["reserve"] == {"CUDA0": weights + int(0.8 * (24 * GIB - weights))}
    assert view["prepared"]["argv"][-2:] == ["--session-len", "2048"]  # the checkpoint's context


async def test_status_lists_the_model_and_the_listener(gpu: Api) -> None:
    mid, expected = await gpu.add_checkpoint()
    put = await gpu.client.put(gpu.path(mid, "config"), json={"name": NAME, "cache_max_entry_count": 0.25})
    assert put.status_code == 200, put.text
    status = await gpu.client.get("/api/models/safetensors/lmdeploy/status")
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["engine_id"], body["engine_version"], body["port"]) == (ENGINE_ID, "0.18.0", LISTENER)
    mine = [m for m in body["models"] if m["name"] == NAME]
    weights = expected.weight_bytes
    assert mine == [
        {
            "name": NAME,
            "model": mid,
            "state": "stopped",
            "pid": None,
            "port": None,
            "reserve": {"CUDA0": weights + int(0.25 * (24 * GIB - weights))},
        }
    ]
    settings = (await gpu.client.get("/api/settings")).json()
    assert settings["lmdeploy_port"] == LISTENER


async def test_bad_input_answers_in_the_one_error_shape(gpu: Api, tmp_path: Path, vocab: Vocab) -> None:
    mid, _ = await gpu.add_checkpoint()
    c = gpu.client
    url = gpu.path(mid, "config")

    bad = await c.put(url, json={"name": NAME, "backend": "foo"})
    assert_error_shape(bad, 400, "invalid_input")
    assert bad.json()["error"]["message"] == "backend 'foo': turbomind or pytorch"

    for body in ({"tp": 0}, {"session_len": -1}, {"cache_max_entry_count": 1.5}, {"unknown": 1}):
        refused = await c.put(url, json={"name": NAME, **body})
        assert_error_shape(refused, 422, "invalid_input")
        (field,) = body
        assert field in refused.json()["error"]["message"]

    for args in (["--tp", "2"], ["--session-len=4096"], ["--log-level", "INFO", "--backend", "turbomind"]):
        twice = await c.put(url, json={"name": NAME, "tp": 1, "args": args})
        assert_error_shape(twice, 400, "invalid_input")
        assert "as fields, not again in args" in twice.json()["error"]["message"]

    for method, path in (("GET", "config"), ("PUT", "config")):
        unknown = await c.request(
            method, gpu.path("no/such-model", path), json={} if method == "PUT" else None
        )
        assert_error_shape(unknown, 404, "not_found")
        assert "no/such-model" in unknown.json()["error"]["message"]

    other = await c.put(url, json={"name": NAME, "engine_id": "no-such-engine"})
    assert_error_shape(other, 404, "not_found")

    # a GGUF in the library: LMDeploy runs checkpoints only
    gguf = tmp_path / "gguf" / "tiny-llama.gguf"
    gguf.parent.mkdir()
    BUILDERS["llama"](gguf, vocab)
    added = await c.post("/api/models", json={"path": str(gguf)})
    assert added.status_code == 201, added.text
    (model,) = [m for m in added.json() if m["path"] == str(gguf)]
    for method in ("GET", "PUT"):
        refused = await c.request(
            method, gpu.path(model["id"], "config"), json={} if method == "PUT" else None
        )
        assert_error_shape(refused, 400, "invalid_input")
        assert "is a GGUF model: LMDeploy runs safetensors checkpoints" in refused.json()["error"]["message"]

    # nothing of the refused ones was stored
    after = (await c.get(url)).json()
    assert after["configured"] is False


async def test_start_and_stop_need_a_config(gpu: Api) -> None:
    mid, _ = await gpu.add_checkpoint()
    for action in ("start", "stop"):
        resp = await gpu.client.post(gpu.path(mid, action))
        assert_error_shape(resp, 404, "not_found")
        assert resp.json()["error"]["message"] == (
            f"{mid} has no LMDeploy configuration yet: PUT its lmdeploy/config first"
        )


async def test_an_engine_of_another_family_is_refused(gpu: Api) -> None:
    mid, _ = await gpu.add_checkpoint()
    vllm = lmdeploy_engine(gpu.root.parent / "vllm", "vllm-test")
    vllm.family = "vllm"
    gpu.app.state.studio.engines.add(vllm)
    resp = await gpu.client.put(gpu.path(mid, "config"), json={"name": NAME, "engine_id": "vllm-test"})
    assert_error_shape(resp, 400, "invalid_input")
    assert resp.json()["error"]["message"] == "engine vllm-test is vllm, not LMDeploy"


async def test_without_an_lmdeploy_engine(tmp_path: Path) -> None:
    async for api in _api(tmp_path, "1x24GiB", engine=False):
        mid, _ = await api.add_checkpoint()
        got = (await api.client.get(api.path(mid, "config"))).json()
        assert got["configured"] is False and got["engine_id"] is None
        put = await api.client.put(api.path(mid, "config"), json={"name": NAME})
        assert_error_shape(put, 404, "not_found")
        assert "no LMDeploy engine registered" in put.json()["error"]["message"]
        status = (await api.client.get("/api/models/safetensors/lmdeploy/status")).json()
        assert status == {"engine_id": None, "engine_version": None, "port": LISTENER, "models": []}


async def test_on_cpu_the_view_says_lmdeploy_needs_a_gpu(cpu: Api) -> None:
    mid, _ = await cpu.add_checkpoint()
    put = await cpu.client.put(cpu.path(mid, "config"), json={"name": NAME, "session_len": 512})
    assert put.status_code == 200, put.text  # stored: the config is right, this machine is not
    view = (await cpu.client.get(f"/api/models/{NAME}/config")).json()
    assert view["prepared"] is None
    assert view["error"].startswith("LMDeploy needs a GPU and this machine has none")
    assert view["config"]["args"] == ["--session-len", "512"]
    start = await cpu.client.post(cpu.path(mid, "start"))
    assert_error_shape(start, 400, "invalid_input")  # refused before anything is run
    assert start.json()["error"]["message"].startswith("LMDeploy needs a GPU")


async def test_the_default_name_of_an_added_directory(gpu: Api) -> None:
    mid, _ = await gpu.add_checkpoint("my-ckpt")
    generic = (await gpu.client.get(f"/api/models/{mid}/config")).json()["config"]["name"]
    assert generic == "my-ckpt"
    before = (await gpu.client.get(gpu.path(mid, "config"))).json()
    put = await gpu.client.put(gpu.path(mid, "config"), json={"tp": 1})
    assert put.status_code == 200, put.text
    assert before["name"] == put.json()["name"] == generic
