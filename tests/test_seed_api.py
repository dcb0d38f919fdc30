"""The seed's REST API (issue 16, part 4): every row of the seed README's "API Endpoints" table
answers with the seed's method and body shape, as thin aliases over the studio's own routes.

The walk runs the real ``llamastudio serve`` (its engine the rig's llama-server) against a local
Hub and a local GitHub: search, download, configure with the seed's llama.cpp parameters, Smart
Auto, start, chat through the gateway with the ``openai`` SDK, stop, delete; the llama.cpp
versions (a release installed from the local GitHub, a source build refused or failing for a
stated reason, a delete); status, GPUs and ``/ws``. Bodies with keys the studio does not know are
a 422 naming every one of them. The translations (seed parameters ↔ llama-server flags, the
seed's ``build_config`` → the studio's build request) are checked on their own too.
"""

from __future__ import annotations

import io
import json
import platform
import re
import time
import zipfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

from llamastudio.api.app import create_app
from llamastudio.api.routes.seed_build import SeedBuildConfig, build_in
from llamastudio.api.routes.seed_params import SEED_KEYS, SeedParams, from_args, to_args
from llamastudio.config import Settings
from llamastudio.engines.buildspec import BuildSpec, foreign_code, missing_toolchain
from llamastudio.errors import InvalidInput
from tests.rig.github import GitHubServer, github_server
from tests.rig.hub import Repo, hub_server
from tests.rig.studio import Studio
from tests.test_api import CLIENT, assert_error_shape

# The seed README's "API Endpoints" section, verbatim (seeds/000, the studio's original README).
SEED_TABLE = """
### Models
- `GET /api/models` - List all models
- `POST /api/models/search` - Search HuggingFace
- `POST /api/models/download` - Download model
- `GET /api/models/{id}/config` - Get model configuration
- `PUT /api/models/{id}/config` - Update configuration
- `POST /api/models/{id}/auto-config` - Generate smart configuration
- `POST /api/models/{id}/start` - Start model
- `POST /api/models/{id}/stop` - Stop model
- `DELETE /api/models/{id}` - Delete model
- `GET /api/models/safetensors/{model_id}/lmdeploy/config` - Get LMDeploy config for a safetensors download
- `PUT /api/models/safetensors/{model_id}/lmdeploy/config` - Update LMDeploy config
- `POST /api/models/safetensors/{model_id}/lmdeploy/start` - Start LMDeploy runtime
- `POST /api/models/safetensors/{model_id}/lmdeploy/stop` - Stop LMDeploy runtime
- `GET /api/models/safetensors/lmdeploy/status` - LMDeploy manager status

### llama.cpp Versions
- `GET /api/llama-versions` - List installed versions
- `GET /api/llama-versions/check-updates` - Check for updates
- `GET /api/llama-versions/build-capabilities` - Get build capabilities
- `POST /api/llama-versions/install-release` - Install release
- `POST /api/llama-versions/build-source` - Build from source
- `DELETE /api/llama-versions/{id}` - Delete version

### System
- `GET /api/status` - System status
- `GET /api/gpu-info` - GPU information
- `WebSocket /ws` - Real-time updates
"""
ROWS = re.findall(r"^- `(GET|POST|PUT|DELETE|WebSocket) (\S+)` - ", SEED_TABLE, re.MULTILINE)

# the README's example build request, verbatim
README_BUILD: dict[str, Any] = {
    "commit_sha": "master",
    "patches": ["https://github.com/ggerganov/llama.cpp/pull/1234.patch"],
    "build_config": {
        "build_type": "Release",
        "enable_cuda": True,
        "enable_vulkan": False,
        "enable_metal": False,
        "enable_openblas": True,
        "custom_cmake_args": "-DGGML_CUDA_CUBLAS=ON",
        "cflags": "-O3 -march=native",
        "cxxflags": "-O3 -march=native",
    },
}
# what the seed's UI sent to PUT /api/models/{id}/config (its defaults; `host`, `timeout` included),
# made small enough to load fast on this machine's CPU
SEED_UI_CONFIG: dict[str, Any] = {
    "n_gpu_layers": 0,
    "main_gpu": 0,
    "tensor_split": "",
    "ctx_size": 512,
    "batch_size": 256,
    "ubatch_size": 128,
    "no_mmap": False,
    "mlock": False,
    "low_vram": False,
    "logits_all": False,
    "embedding": False,
    "cont_batching": True,
    "no_kv_offload": False,
    "n_predict": -1,
    "temp": 0.8,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repeat_penalty": 1.1,
    "threads": 1,
    "threads_batch": 1,
    "parallel": 1,
    "flash_attn": False,
    "cache_type_k": "f16",
    "cache_type_v": None,
    "moe_offload_pattern": "none",
    "moe_offload_custom": "",
    "rope_freq_base": None,
    "rope_freq_scale": None,
    "yarn_ext_factor": None,
    "yarn_attn_factor": None,
    "rope_scaling": "",
    "yaml": "",
    "customArgs": "",
    "min_p": None,
    "typical_p": None,
    "tfs_z": None,
    "presence_penalty": None,
    "frequency_penalty": None,
    "mirostat": None,
    "mirostat_tau": None,
    "mirostat_eta": None,
    "seed": None,
    "stop": [],
    "grammar": "",
    "json_schema": "",
    "jinja": False,
    "host": "0.0.0.0",
    "timeout": 300,
}
REPO, QUANT_FILE, MODEL_ID = "tiny/llama-GGUF", "tiny-llama-Q8_0.gguf", "tiny/llama-GGUF:Q8_0"
GH_REPO, TAG = "ggml-org/llama.cpp", "b11434"
CPU_ASSET, VULKAN_ASSET = 101, 102


def _spec_path(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_table_has_every_row_of_the_seed_readme() -> None:
    assert len(ROWS) == 23
    seed = Path("/work/shared/seeds")  # the seed itself, where this checkout has it
    for readme in seed.glob("000_*.txt") if seed.is_dir() else []:
        text = readme.read_text()
        section = text[text.index("## API Endpoints") : text.index("## Database Migration")]
        assert re.findall(r"^- `(GET|POST|PUT|DELETE|WebSocket) (\S+)` - ", section, re.MULTILINE) == ROWS


# -- in process: the spec documents every path; unknown keys are refused --------------------------


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=CLIENT
    ) as c:
        yield c


async def test_every_seed_path_is_in_the_openapi_spec_with_a_tag_and_a_summary(
    client: httpx.AsyncClient,
) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = {_spec_path(p): ops for p, ops in spec["paths"].items()}
    for method, path in ROWS:
        if method == "WebSocket":
            continue  # OpenAPI has no WebSockets; /ws is walked below
        op = paths[_spec_path(path)][method.lower()]
        assert op["tags"] and (op.get("summary") or op.get("description")), (method, path)
    put = paths["/api/models/{}/config"]["put"]["requestBody"]["content"]["application/json"]["schema"]
    keys = [set(s["properties"]) for s in put["oneOf"]]
    assert "args" in keys[0] and keys[1] == SEED_KEYS  # the studio's body, or the seed's


def _unknown(resp: httpx.Response, *keys: str) -> None:
    assert_error_shape(resp, 422, "invalid_input")
    err = resp.json()["error"]
    for key in keys:
        assert key in err["message"], err
    assert {tuple(d["loc"]) for d in err["details"]} >= {("body", *k.split(".")) for k in keys}


async def test_unknown_body_keys_are_a_422_naming_every_one(client: httpx.AsyncClient) -> None:
    c = client
    _unknown(await c.post("/api/models/search", json={"query": "x", "q": "y", "sort": "likes"}), "q", "sort")
    body = {"huggingface_id": "a/b", "filename": "f.gguf", "quant": "Q8_0"}
    _unknown(await c.post("/api/models/download", json=body), "quant")
    _unknown(await c.put("/api/models/m/config", json={"ctx_size": 512, "ctx": 1, "gpu": 2}), "ctx", "gpu")
    _unknown(await c.put("/api/models/m/config", json={"model": "x", "modle": "y"}), "modle")
    _unknown(await c.post("/api/llama-versions/install-release", json={"tag_name": "b1", "tag": "b1"}), "tag")
    build = {"commit_sha": "master", "ref": "x", "build_config": {"enable_cuda": True, "enable_cuda12": True}}
    _unknown(
        await c.post("/api/llama-versions/build-source", json=build), "ref", "build_config.enable_cuda12"
    )
    # the studio's fields and the seed's parameters in one body: refused, the studio's named
    mixed = await c.put("/api/models/m/config", json={"args": ["-c", "512"], "ctx_size": 512})
    assert_error_shape(mixed, 422, "invalid_input")
    assert "args" in mixed.json()["error"]["message"] and "ctx_size" in mixed.json()["error"]["message"]
    # required keys are named too
    missing = await c.post("/api/llama-versions/build-source", json={"build_config": {}})
    assert_error_shape(missing, 422, "invalid_input")
    assert "commit_sha" in missing.json()["error"]["message"]


async def test_builds_need_the_studios_permission_and_refuse_what_they_cannot_honour(
    client: httpx.AsyncClient,
) -> None:
    """Patches run code of the caller's choosing: the same 403 as POST /api/engines/build."""
    resp = await client.post("/api/llama-versions/build-source", json=README_BUILD)
    assert_error_shape(resp, 403, "commands_not_allowed")
    for bad, words in (
        ({"build_server": False}, "build_server"),
        ({"build_tools": False}, "build_tools"),
        ({"env_vars": {"CC": "/tmp/evil"}}, "env_vars"),
        ({"enable_backend_dl": True}, "shared libraries"),
        ({"enable_flash_attention": True}, "needs enable_cuda"),
        ({"custom_cmake_args": "-DX='unterminated"}, "custom_cmake_args"),
    ):
        r = await client.post(
            "/api/llama-versions/build-source", json={"commit_sha": "b1", "build_config": bad}
        )
        assert_error_shape(r, 400, "invalid_input")
        assert words in r.json()["error"]["message"]


# -- the translations ---------------------------------------------------------------------------


def test_seed_parameters_become_flags_and_flags_read_back_as_them() -> None:
    seed = {k: v for k, v in SEED_UI_CONFIG.items() if k not in ("host",)}
    args = to_args(SeedParams(**seed))
    assert args == [
        *("-c", "512", "-n", "-1", "-t", "1", "-tb", "1", "-ngl", "0", "-b", "256", "-ub", "128"),
        *("-np", "1", "-mg", "0", "--top-k", "40", "-to", "300", "--temp", "0.8", "--top-p", "0.9"),
        *("--repeat-penalty", "1.1", "-ctk", "f16", "-cb"),
    ]
    back = from_args(args)
    assert back["ctx_size"] == 512 and back["temp"] == back["temperature"] == 0.8
    assert back["cont_batching"] is True and back["customArgs"] is None
    assert to_args(SeedParams(**back)) == args  # a round trip keeps every flag

    # flags the seed has no key for, values not of the key's type, repeats: kept in customArgs
    studio = ["-c", "8192", "-ngl", "all", "-fa", "on", "--jinja", "--n-cpu-moe", "4", "--seed=-1"]
    studio += ["--mirostat-ent", "5.5", "--pooling", "mean", "-fa", "off", "--stop", "</s>"]
    back = from_args(studio)
    assert back["ctx_size"] == 8192 and back["n_gpu_layers"] is None and back["flash_attn"] is True
    assert back["jinja"] is True and back["moe_offload_pattern"] == 4 and back["seed"] == -1
    assert back["mirostat_tau"] == 5.5 and back["stop"] == ["</s>"]
    assert back["customArgs"] == "-ngl all --pooling mean -fa off"
    again = to_args(SeedParams(**back))
    assert from_args(again) == back

    # the seed's MoE choices, and its temp / temperature pair (`temperature` wins, as it did)
    assert to_args(SeedParams(moe_offload_pattern="cpu")) == ["--cpu-moe"]
    assert to_args(SeedParams(moe_offload_pattern="2")) == ["--n-cpu-moe", "2"]
    custom = SeedParams(moe_offload_pattern="custom", moe_offload_custom=".ffn_.*_exps.=CPU")
    assert to_args(custom) == ["-ot", ".ffn_.*_exps.=CPU"]
    assert to_args(SeedParams(temp=0.2, temperature=0.9)) == ["--temp", "0.9"]
    assert to_args(SeedParams(mirostat_tau=5.0, mirostat_eta=0.1)) == [
        "--mirostat-ent",
        "5.0",
        "--mirostat-lr",
        "0.1",
    ]
    for bad in (SeedParams(moe_offload_pattern="gpu"), SeedParams(moe_offload_pattern="custom")):
        with pytest.raises(InvalidInput, match="moe_offload"):
            to_args(bad)


def test_the_readme_build_config_becomes_the_studios_build_request() -> None:
    cfg = SeedBuildConfig(**README_BUILD["build_config"])
    req = build_in("https://github.com/ggml-org/llama.cpp", "master", README_BUILD["patches"], cfg)
    assert req.ref == "master" and req.backends == ["cuda", "openblas"] and req.build_type == "Release"
    assert req.cmake_args == ["-DGGML_CUDA_CUBLAS=ON"] and req.cflags == req.cxxflags == "-O3 -march=native"
    assert req.patches == README_BUILD["patches"] and req.cuda_architectures is None
    # without patches it is the official code with plain switches: no permission needed
    spec = BuildSpec(
        source=req.source, ref=req.ref, backends=tuple(req.backends), cmake_args=tuple(req.cmake_args)
    )
    assert foreign_code(spec, "ggml-org/llama.cpp") is None
    # the seed UI's other settings, when given
    full = SeedBuildConfig(
        enable_cuda=True,
        enable_flash_attention=True,
        build_tests=True,
        build_examples=False,
        enable_lto=True,
        enable_native=False,
        enable_rocm=True,
        cuda_architectures="86;89",
    )
    req = build_in("src", "b1", [], full)
    assert req.backends == ["cuda", "hip"] and req.cuda_architectures == "86;89"
    assert req.cmake_args == [
        "-DGGML_CUDA_FA_ALL_QUANTS=ON",
        "-DLLAMA_BUILD_TESTS=ON",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DGGML_LTO=ON",
        "-DGGML_NATIVE=OFF",
    ]
    assert build_in("src", "b1", [], SeedBuildConfig()).backends == ["cpu"]


# -- the walk: the real studio, a local Hub and a local GitHub -----------------------------------


def _release_zip(llama_server: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.write(llama_server, "build/bin/llama-server")  # zips carry no exec bit: install fixes it
    return buf.getvalue()


def _github(gh: GitHubServer, llama_server: Path) -> None:
    """A release with a CPU build that runs here and a Vulkan one, and the default branch's head."""
    assets = []
    for asset_id, name, data in (
        (CPU_ASSET, f"llama-{TAG}-bin-ubuntu-x64.zip", _release_zip(llama_server)),
        (VULKAN_ASSET, f"llama-{TAG}-bin-ubuntu-vulkan-x64.zip", b"not a build"),
    ):
        path = f"/{GH_REPO}/releases/download/{TAG}/{name}"
        gh.add(path, data)
        assets.append(
            {"id": asset_id, "name": name, "size": len(data), "browser_download_url": gh.url + path}
        )
    release = {
        "tag_name": TAG,
        "name": TAG,
        "draft": False,
        "published_at": "2026-11-20T00:00:00Z",
        "html_url": f"https://github.com/{GH_REPO}/releases/tag/{TAG}",
        "assets": assets,
    }
    gh.add(f"/repos/{GH_REPO}/releases/tags/{TAG}", release)
    gh.add(f"/repos/{GH_REPO}/releases/latest", release)
    commit = {"sha": "a" * 40, "commit": {"committer": {"date": "2026-11-21T00:00:00Z"}, "message": "fix x"}}
    gh.add(f"/repos/{GH_REPO}/commits", [commit])


def _job(api: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = api.get(f"/api/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def _ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


class Walk:
    """One check per row of the seed's table, each asserting the seed's status and shape."""

    def __init__(self, studio: Studio, api: httpx.Client) -> None:
        self.studio, self.api = studio, api
        self.walked: list[tuple[str, str]] = []
        self.release: str | None = None

    def row(self, method: str, path: str) -> None:
        self.walked.append((method, path))

    # models
    def search(self) -> None:
        self.row("POST", "/api/models/search")
        hits = _ok(self.api.post("/api/models/search", json={"query": "tiny", "limit": 5}))
        (hit,) = hits
        assert hit["id"] == hit["name"] == REPO and hit["author"] == "tiny" and hit["model_format"] == "gguf"
        for key in (
            "downloads",
            "likes",
            "tags",
            "license",
            "pipeline_tag",
            "safetensors_files",
            "repo_files",
        ):
            assert key in hit
        assert hit["quantizations"]["Q8_0"]["filename"] == QUANT_FILE
        assert set(hit["quantizations"]) == {"Q8_0", "F16"}

    def download(self) -> None:
        self.row("POST", "/api/models/download")
        body = {"huggingface_id": REPO, "filename": QUANT_FILE, "total_bytes": 1, "model_format": "gguf"}
        started = _ok(self.api.post("/api/models/download", json=body))
        assert started["message"] == "Download started" and started["huggingface_id"] == REPO
        assert _job(self.api, started["task_id"])["state"] == "done"
        bad = self.api.post("/api/models/download", json={"huggingface_id": REPO, "filename": "x.bin"})
        assert_error_shape(bad, 400, "invalid_input")

    def models(self) -> dict[str, Any]:
        self.row("GET", "/api/models")
        listed = _ok(self.api.get("/api/models"))
        (entry,) = [m for m in listed if m["id"] == MODEL_ID]
        assert (
            entry["huggingface_id"] == REPO and entry["author"] == "tiny" and entry["model_type"] == "llama"
        )
        assert entry["base_model_name"] == "tiny-llama"
        (q,) = entry["quantizations"]
        assert q["id"] == MODEL_ID and q["quantization"] == "Q8_0" and q["name"] == "tiny-llama-Q8_0"
        assert Path(q["file_path"]).is_file() and q["file_size"] == Path(q["file_path"]).stat().st_size
        assert isinstance(q["downloaded_at"], str) and q["proxy_name"] == MODEL_ID
        assert {
            "is_active",
            "has_config",
            "config",
            "huggingface_id",
            "base_model_name",
            "model_type",
        } <= set(q)
        assert entry["path"] == q["file_path"] and entry["source"] == "hf-cache"  # the studio's fields
        return q

    def config(self) -> None:
        path = f"/api/models/{MODEL_ID}/config"
        self.row("PUT", "/api/models/{id}/config")
        saved = _ok(self.api.put(path, json=SEED_UI_CONFIG))
        assert saved["message"] == "Configuration updated" and set(saved["ignored"]) == {"host"}
        assert saved["error"] is None and saved["config"]["auto"] is False
        self.row("GET", "/api/models/{id}/config")
        view = _ok(self.api.get(path))
        assert set(view) >= SEED_KEYS
        for key in ("ctx_size", "parallel", "threads", "temp", "top_k", "cont_batching", "timeout"):
            assert view[key] == SEED_UI_CONFIG[key], key
        argv = view["prepared"]["argv"]
        assert argv[argv.index("-c") + 1] == "512" and argv[argv.index("-to") + 1] == "300"
        assert "--host" in argv and argv[argv.index("--host") + 1] == "127.0.0.1"  # host: the studio's
        # a round trip of what GET answered keeps the flags (the view's own keys are read-only)
        again = _ok(self.api.put(path, json=view))
        assert again["config"]["args"] == view["config"]["args"] and "prepared" in again["ignored"]
        q = next(m for m in _ok(self.api.get("/api/models")) if m["id"] == MODEL_ID)["quantizations"][0]
        assert q["has_config"] is True and q["config"]["ctx_size"] == 512

    def auto_config(self) -> None:
        self.row("POST", "/api/models/{id}/auto-config")
        auto = _ok(self.api.post(f"/api/models/{MODEL_ID}/auto-config"))
        assert set(auto) >= SEED_KEYS and auto["args"] and auto["reasons"]
        assert {k: auto[k] for k in SEED_KEYS} == from_args(auto["args"])
        assert auto["ctx_size"] is not None
        view = _ok(self.api.get(f"/api/models/{MODEL_ID}/config"))
        assert view["ctx_size"] == 512  # not saved (the seed saved it: PUT it to keep it)

    def start_chat_stop(self) -> None:
        self.row("POST", "/api/models/{id}/start")
        started = _ok(self.api.post(f"/api/models/{MODEL_ID}/start"))
        assert started["model_id"] == MODEL_ID and started["proxy_model_name"] == MODEL_ID
        assert started["api_endpoint"] == f"{self.studio.gateway_url}/v1/chat/completions"
        assert started["state"] == "ready"
        client = openai.OpenAI(
            base_url=started["api_endpoint"].removesuffix("/chat/completions"), api_key="x"
        )
        reply = client.chat.completions.create(
            model=started["proxy_model_name"], messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content is not None and reply.usage and reply.usage.completion_tokens
        self.status(running=True)
        self.row("POST", "/api/models/{id}/stop")
        stopped = _ok(self.api.post(f"/api/models/{MODEL_ID}/stop"))
        assert stopped["message"] == "Model stopped" and stopped["state"] == "stopped"

    def delete_model(self, file_path: str) -> None:
        self.row("DELETE", "/api/models/{id}")
        gone = _ok(self.api.delete(f"/api/models/{MODEL_ID}"))
        assert gone["message"] == "Model quantization deleted" and gone["configuration_deleted"] is True
        assert not Path(file_path).exists()
        assert all(m["id"] != MODEL_ID for m in _ok(self.api.get("/api/models")))
        assert_error_shape(self.api.get(f"/api/models/{MODEL_ID}/config"), 404, "not_found")
        assert_error_shape(self.api.delete(f"/api/models/{MODEL_ID}"), 404, "not_found")

    def lmdeploy(self) -> None:
        """The seed's LMDeploy rows are the studio's (``test_lmdeploy_api.py`` walks them with a
        checkpoint): here, its status, and a GGUF model refused in the project's shape."""
        self.row("GET", "/api/models/safetensors/lmdeploy/status")
        status = _ok(self.api.get("/api/models/safetensors/lmdeploy/status"))
        assert status["port"] == self.studio.lmdeploy_port and status["models"] == []
        base = f"/api/models/safetensors/{MODEL_ID}/lmdeploy"
        for method, what in (("GET", "config"), ("PUT", "config")):
            self.row(method, f"/api/models/safetensors/{{model_id}}/lmdeploy/{what}")
            r = self.api.request(method, f"{base}/{what}", json={} if method == "PUT" else None)
            assert_error_shape(r, 400, "invalid_input")
            assert "LMDeploy runs safetensors checkpoints" in r.json()["error"]["message"]
        for what in ("start", "stop"):
            self.row("POST", f"/api/models/safetensors/{{model_id}}/lmdeploy/{what}")
            r = self.api.post(f"{base}/{what}")
            assert_error_shape(r, 404, "not_found")
            assert "has no LMDeploy configuration" in r.json()["error"]["message"]

    # llama.cpp versions
    def versions(self) -> list[dict[str, Any]]:
        self.row("GET", "/api/llama-versions")
        listed: list[dict[str, Any]] = _ok(self.api.get("/api/llama-versions"))
        keys = {"id", "version", "install_type", "binary_path", "source_commit", "patches", "installed_at"}
        for v in listed:
            assert keys | {"is_active", "build_config"} <= set(v) and isinstance(v["patches"], list)
        assert sum(v["is_active"] for v in listed) == 1
        return listed

    def check_updates(self) -> None:
        self.row("GET", "/api/llama-versions/check-updates")
        found = _ok(self.api.get("/api/llama-versions/check-updates"))
        assert found["latest_release"] == {
            "tag_name": TAG,
            "published_at": "2026-11-20T00:00:00Z",
            "html_url": f"https://github.com/{GH_REPO}/releases/tag/{TAG}",
        }
        assert found["latest_commit"] == {
            "sha": "a" * 40,
            "commit_date": "2026-11-21T00:00:00Z",
            "message": "fix x",
        }

    def build_capabilities(self) -> None:
        self.row("GET", "/api/llama-versions/build-capabilities")
        caps = _ok(self.api.get("/api/llama-versions/build-capabilities"))
        studio = {"cpu": "cpu", "cuda": "cuda", "vulkan": "vulkan", "metal": "metal", "openblas": "openblas"}
        assert set(caps) == {*studio, "rocm"}
        for name, backend in {**studio, "rocm": "hip"}.items():
            cap = caps[name]
            assert cap["missing"] == missing_toolchain((backend,)) and cap["available"] is not cap["missing"]
            assert isinstance(cap["recommended"], bool) and isinstance(cap["reason"], str) and cap["reason"]
        if platform.system() != "Darwin":
            assert "Metal needs macOS" in caps["metal"]["missing"] and not caps["metal"]["recommended"]
        assert sum(c["recommended"] for c in caps.values()) >= caps["cpu"]["available"]

    def install_release(self) -> None:
        self.row("POST", "/api/llama-versions/install-release")
        body = {"tag_name": TAG, "asset_id": CPU_ASSET}
        started = _ok(self.api.post("/api/llama-versions/install-release", json=body))
        assert (
            started["status"] == "started" and started["progress"] == 0 and started["asset_id"] == CPU_ASSET
        )
        assert started["message"] == f"Installing release {TAG}"
        self.release = started["version_name"]
        job = _job(self.api, started["task_id"])
        assert job["state"] == "done", job
        (v,) = [v for v in self.versions() if v["id"] == self.release]
        assert v["install_type"] == "release" and v["version"] == TAG and Path(v["binary_path"]).is_file()
        # the asset of another backend is not the build for this machine's CPU: said so
        wrong = {"tag_name": TAG, "asset_id": VULKAN_ASSET, "backend": "cpu"}
        r = self.api.post("/api/llama-versions/install-release", json=wrong)
        assert_error_shape(r, 400, "invalid_input")
        assert "vulkan" in r.json()["error"]["message"]
        assert_error_shape(
            self.api.post("/api/llama-versions/install-release", json={"tag_name": TAG, "asset_id": 9}),
            404,
            "not_found",
        )

    def build_source(self) -> None:
        self.row("POST", "/api/llama-versions/build-source")
        refused = self.api.post("/api/llama-versions/build-source", json=README_BUILD)
        assert_error_shape(refused, 403, "commands_not_allowed")
        body = {"commit_sha": "master", "build_config": {"build_type": "Release", "enable_metal": True}}
        started = _ok(self.api.post("/api/llama-versions/build-source", json=body))
        assert started["message"] == "Building from source master" and started["status"] == "started"
        assert started["progress"] == 0
        job = _job(self.api, started["task_id"])
        if platform.system() != "Darwin":  # the seed's enable_metal became the studio's metal backend
            assert job["state"] == "failed" and "Metal needs macOS" in job["error"]

    def delete_version(self) -> None:
        self.row("DELETE", "/api/llama-versions/{id}")
        assert self.release is not None
        gone = _ok(self.api.delete(f"/api/llama-versions/{self.release}"))
        assert gone == {"message": f"Deleted llama-cpp version {TAG}"}
        assert all(v["id"] != self.release for v in self.versions())
        assert_error_shape(self.api.delete(f"/api/llama-versions/{self.release}"), 404, "not_found")

    # system
    def status(self, running: bool = False) -> None:
        self.row("GET", "/api/status")
        st = _ok(self.api.get("/api/status"))
        system = st["system"]
        assert 0 <= system["cpu_percent"] <= 100
        assert (
            system["memory"]["total"] >= system["memory"]["available"] > 0
            and 0 <= system["memory"]["percent"] <= 100
        )
        disk = system["disk"]
        assert disk["total"] >= disk["used"] and disk["free"] > 0 and 0 <= disk["percent"] <= 100
        gw = self.studio.gateway_port
        assert st["proxy_status"] == {
            "enabled": True,
            "port": gw,
            "endpoint": f"{self.studio.gateway_url}/v1/chat/completions",
        }
        lm = st["lmdeploy_status"]
        assert (
            lm["port"] == self.studio.lmdeploy_port
            and lm["running"] is False
            and lm["current_instance"] is None
        )
        assert st["db_ok"] is True and st["gateway_port"] == gw  # the studio's fields stay
        names = [i["proxy_model_name"] for i in st["running_instances"]]
        assert names == ([MODEL_ID] if running else [])
        for inst in st["running_instances"]:
            assert inst["model_id"] == MODEL_ID and inst["port"] == gw and inst["runtime_type"] == "llama_cpp"
            assert {"id", "started_at"} <= set(inst)

    def gpu_info(self) -> None:
        self.row("GET", "/api/gpu-info")
        info = _ok(self.api.get("/api/gpu-info"))
        assert info["device_count"] == len(info["gpus"]) and info["cpu_only_mode"] is (not info["gpus"])
        assert info["total_vram"] == sum(g["memory"]["total"] for g in info["gpus"])
        assert info["available_vram"] == sum(g["memory"]["free"] for g in info["gpus"])
        assert info["cpu_threads"] >= 1 and "cuda_version" in info and "vendor" in info
        assert "topology" in info and "ram_total" in info  # the studio's fields stay

    def ws(self) -> None:
        self.row("WebSocket", "/ws")
        with connect(f"ws://127.0.0.1:{self.studio.port}/ws", open_timeout=30) as sock:
            hello = json.loads(sock.recv(timeout=30))
        assert hello["type"] == "hello" and {"models", "jobs", "stats"} <= set(hello)


def test_the_seed_api_walked_on_the_real_studio(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    files = {"tiny-llama-F16.gguf": tiny_models["llama"], QUANT_FILE: tiny_models["llama-Q8_0"]}
    with hub_server() as hub, github_server() as gh:
        hub.add_repo(Repo(REPO, files))
        _github(gh, rig_bin("llama-server"))
        env = {"HF_ENDPOINT": hub.url, "LLAMASTUDIO_GITHUB_API": gh.url, "LLAMASTUDIO_GITHUB_REPO": GH_REPO}
        with Studio(tmp_path / "s", rig_bin("llama-server"), env=env) as studio, studio.api() as api:
            walk = Walk(studio, api)
            walk.status()
            walk.gpu_info()
            walk.ws()
            walk.search()
            walk.download()
            q = walk.models()
            walk.config()
            walk.auto_config()
            walk.start_chat_stop()
            walk.lmdeploy()
            walk.delete_model(q["file_path"])
            walk.versions()
            walk.check_updates()
            walk.build_capabilities()
            walk.install_release()
            walk.build_source()
            walk.delete_version()
    assert set(walk.walked) == set(ROWS)
