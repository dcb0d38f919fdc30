"""The seeds' environment names, ``.env`` and ``.env.example`` (issue 16, J.2).

Every seed name is read into its setting; the ``LLAMASTUDIO_`` name wins over it, a CLI flag over
both, the real environment over ``.env``. A real ``llamastudio serve`` started from a directory
holding a ``.env`` honours them: the port, the Hub endpoint and token, the llama-server path, the
LMDeploy port, and ``CUDA_VISIBLE_DEVICES`` in the engine processes it starts.

``python -m tests.test_env`` rewrites ``.env.example`` from ``Settings``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamastudio.config import SEED_NAMES, Settings
from llamastudio.hardware.nvidia import _filter_visible
from llamastudio.runtime.process import free_port
from llamastudio.server import apply_environment
from tests.rig.hub import Repo, hub_server
from tests.rig.server import wait_healthy

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / ".env.example"
# every environment name a setting reads, besides LLAMASTUDIO_*; the seeds' names per issue 16
SEED_ENV = {name for names in SEED_NAMES.values() for name in names}
_DEFAULTS = {"data_dir": "~/.local/share/llamastudio"}  # the user data directory, on Linux


def _default(name: str) -> str:
    field = Settings.model_fields[name]
    if name in _DEFAULTS:
        return _DEFAULTS[name]
    value: Any = field.get_default(call_default_factory=True)
    if value is None or value == []:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render() -> str:
    """``.env.example`` as it must read: every setting, commented out at its default, its help
    above it and the seeds' names it also reads."""
    out = [
        "# llama.cpp Studio settings. Copy this file to `.env` in the directory `llamastudio serve`",
        "# starts in (docker compose: `env_file: .env`) and uncomment what you change. The real",
        "# environment wins over this file; a LLAMASTUDIO_ name wins over the seeds' name for the",
        "# same setting; CLI flags win over both. An empty value means unset.",
        "# Generated from src/llamastudio/config.py by `python -m tests.test_env`.",
    ]
    for name, field in Settings.model_fields.items():
        help_ = field.description or ""
        seeds = SEED_NAMES.get(name, ())
        if seeds:
            help_ += f" [also read: {', '.join(seeds)}]"
        out.append("")
        out += textwrap.wrap(help_, 98, initial_indent="# ", subsequent_indent="# ")
        out.append(f"# LLAMASTUDIO_{name.upper()}={_default(name)}")
    return "\n".join(out) + "\n"


def test_env_example_lists_every_setting_with_default_and_help() -> None:
    text = EXAMPLE.read_text()
    for name in Settings.model_fields:
        assert f"\n# LLAMASTUDIO_{name.upper()}=" in text, f"{name}: run `python -m tests.test_env`"
    for seed in SEED_ENV:
        assert seed in text, seed
    assert text == render(), "`.env.example` is stale: run `.venv/bin/python -m tests.test_env`"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    """No setting from the outer environment, and a working directory without a ``.env``."""
    own = {f"LLAMASTUDIO_{name.upper()}" for name in Settings.model_fields}
    for key in {k for k in os.environ if k.startswith("LLAMASTUDIO_")} | own | SEED_ENV:
        monkeypatch.setenv(key, "")  # recorded, so what a test (or apply_environment) sets is undone
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    yield monkeypatch


SEEDS: list[tuple[str, str, str, object]] = [
    ("PORT", "9123", "port", 9123),
    ("HOST", "0.0.0.0", "host", "0.0.0.0"),
    ("HUGGINGFACE_API_KEY", "hf_seed", "hf_token", "hf_seed"),
    ("HF_TOKEN", "hf_other", "hf_token", "hf_other"),
    ("HF_ENDPOINT", "http://127.0.0.1:9", "hf_endpoint", "http://127.0.0.1:9"),
    ("LMDEPLOY_BIN", "/opt/lmdeploy", "lmdeploy_bin", Path("/opt/lmdeploy")),
    ("LMDEPLOY_PORT", "3001", "lmdeploy_port", 3001),
    ("LLAMA_SERVER_PATH", "/opt/llama-server", "llama_server", Path("/opt/llama-server")),
    ("CUDA_VISIBLE_DEVICES", "1,0", "cuda_visible_devices", "1,0"),
    ("GITHUB_TOKEN", "ghp_x", "github_token", "ghp_x"),
    ("MODEL", "org/repo:Q4_K_M", "model", "org/repo:Q4_K_M"),
    ("MODEL_PATH", "/models/m.gguf", "model_path", Path("/models/m.gguf")),
    ("CTX_SIZE", "8192", "ctx_size", 8192),
    ("CONTEXT_SIZE", "16384", "ctx_size", 16384),
    ("N_GPU_LAYERS", "99", "n_gpu_layers", "99"),
    ("PARALLEL", "16", "parallel", 16),
    ("BATCH_SIZE", "2048", "batch_size", 2048),
    ("UBATCH_SIZE", "512", "ubatch_size", 512),
    ("MAX_TOKENS", "2048", "max_tokens", 2048),
]


def test_the_table_covers_every_seed_name() -> None:
    assert {env for env, *_ in SEEDS} == SEED_ENV


@pytest.mark.parametrize(("env", "value", "field", "expected"), SEEDS)
def test_seed_name_is_read(
    clean_env: pytest.MonkeyPatch, env: str, value: str, field: str, expected: object
) -> None:
    clean_env.setenv(env, value)
    assert getattr(Settings(), field) == expected


@pytest.mark.parametrize(("env", "value", "field", "expected"), SEEDS)
def test_llamastudio_name_wins_over_the_seed_name(
    clean_env: pytest.MonkeyPatch, env: str, value: str, field: str, expected: object
) -> None:
    clean_env.setenv(env, value)
    numbers = {"port", "lmdeploy_port", "ctx_size", "parallel", "batch_size", "ubatch_size", "max_tokens"}
    own = "99" if field in numbers else "all" if field == "n_gpu_layers" else "/own"
    clean_env.setenv(f"LLAMASTUDIO_{field.upper()}", own)
    got = getattr(Settings(), field)
    assert str(got) == own


def test_dotenv_is_read_and_the_real_environment_wins(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "PORT=9001\nMODEL=org/repo\nLLAMASTUDIO_GATEWAY_PORT=3000\nCTX_SIZE=\n# a comment\n"
    )
    s = Settings()
    assert (s.port, s.model, s.gateway_port, s.ctx_size, s.one_model) == (9001, "org/repo", 3000, None, True)
    clean_env.setenv("PORT", "9002")
    clean_env.setenv("LLAMASTUDIO_GATEWAY_PORT", "3001")
    s = Settings()
    assert (s.port, s.gateway_port) == (9002, 3001)
    assert Settings(port=9003).port == 9003  # a CLI flag (keyword) wins over both


def test_empty_values_mean_unset(clean_env: pytest.MonkeyPatch) -> None:
    for env in ("MODEL", "CTX_SIZE", "N_GPU_LAYERS", "HF_TOKEN", "LLAMASTUDIO_PORT"):
        clean_env.setenv(env, "")
    clean_env.setenv("CONTEXT_SIZE", "4096")  # an empty CTX_SIZE does not hide it
    s = Settings()
    assert (s.model, s.ctx_size, s.n_gpu_layers, s.hf_token, s.port, s.one_model) == (
        None,
        4096,
        None,
        None,
        8080,
        False,
    )


@pytest.mark.parametrize("bad", [("N_GPU_LAYERS", "lots"), ("CTX_SIZE", "0"), ("PARALLEL", "-1")])
def test_bad_seed_values_are_refused(clean_env: pytest.MonkeyPatch, bad: tuple[str, str]) -> None:
    clean_env.setenv(*bad)
    with pytest.raises(ValueError):
        Settings()


def test_settings_reach_the_environment_the_hub_and_engines_read(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("LLAMASTUDIO_HF_TOKEN", "hf_own")
    clean_env.setenv("HF_TOKEN", "hf_seed")
    clean_env.setenv("LLAMASTUDIO_HF_ENDPOINT", "http://127.0.0.1:9/")
    clean_env.setenv("LLAMASTUDIO_CUDA_VISIBLE_DEVICES", "1")
    apply_environment(Settings())
    assert (os.environ["HF_TOKEN"], os.environ["HF_ENDPOINT"], os.environ["CUDA_VISIBLE_DEVICES"]) == (
        "hf_own",
        "http://127.0.0.1:9",
        "1",
    )
    clean_env.setenv("CUDA_VISIBLE_DEVICES", "all")  # the seed's default: every GPU
    clean_env.delenv("LLAMASTUDIO_CUDA_VISIBLE_DEVICES")
    apply_environment(Settings())
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    clean_env.setenv("LLAMASTUDIO_CUDA_VISIBLE_DEVICES", "none")
    apply_environment(Settings())
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_cuda_visible_devices_all_means_every_gpu() -> None:
    raw = [{"uuid": "GPU-a", "bus": "0000:01:00.0"}, {"uuid": "GPU-b", "bus": "0000:02:00.0"}]
    assert _filter_visible(raw, "all") == raw
    assert _filter_visible(raw, "") == []
    assert _filter_visible(raw, "1") == [raw[1]]


def test_serve_honours_dotenv_and_the_seed_names(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    """A real studio, started from a directory holding a ``.env`` written with the seeds' names."""
    port, gateway, lmdeploy = free_port(), free_port(), free_port()
    with hub_server() as hub:
        hub.add_repo(Repo("tiny/llama-GGUF", {"tiny-llama-Q8_0.gguf": tiny_models["llama-Q8_0"]}))
        (tmp_path / ".env").write_text(
            f"PORT={port}\nHF_ENDPOINT={hub.url}\nHUGGINGFACE_API_KEY=hf_good\n"
            f"LLAMA_SERVER_PATH={rig_bin('llama-server')}\nLMDEPLOY_PORT={lmdeploy}\nCUDA_VISIBLE_DEVICES=0\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMASTUDIO_") and k not in SEED_ENV}
        env |= {
            "LLAMASTUDIO_DATA_DIR": str(tmp_path / "data"),
            "HF_HOME": str(tmp_path / "hf"),
            "HOST": "127.0.0.1",  # the seed's name, in the real environment
            "LLAMASTUDIO_GATEWAY_PORT": "1",  # the CLI flag wins over it
        }
        argv = [sys.executable, "-m", "llamastudio", "serve", "--gateway-port", str(gateway)]
        log_path = tmp_path / "studio.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
        try:
            api = f"http://127.0.0.1:{port}"
            urls = [
                f"{api}/api/status",
                f"http://127.0.0.1:{gateway}/health",
                f"http://127.0.0.1:{lmdeploy}/health",
            ]
            wait_healthy(proc, urls, 60, log_path.read_text, "studio")
            headers = {"X-Studio-Client": "tests"}
            with httpx.Client(base_url=api, headers=headers, timeout=60) as c:
                assert c.get("/api/settings/hf-token").json() == {
                    "set": True,
                    "source": "env",
                    "read_only": True,
                }
                found = c.get("/api/hub/search", params={"q": "llama"}).json()  # asked of the local Hub
                assert [r["id"] for r in found] == ["tiny/llama-GGUF"], found
                engines = c.get("/api/engines").json()
                assert [e["family"] for e in engines if e["family"] == "llama.cpp"] == ["llama.cpp"], engines
                r = c.put(
                    "/api/models/tiny/config",
                    json={"model": str(tiny_models["llama"]), "args": ["-c", "512", "-t", "1"]},
                )
                assert r.status_code == 200, r.text
                assert c.post("/api/models/tiny/start").status_code == 200
                pid = next(m for m in c.get("/api/served").json() if m["name"] == "tiny")["pid"]
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            assert b"CUDA_VISIBLE_DEVICES=0" in environ  # the engine sees only the GPUs the studio plans for
            assert not [
                v for v in environ if v.startswith((b"HF_TOKEN=", b"HUGGINGFACE_API_KEY="))
            ]  # secrets withheld
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert hub.requests["/api/models"] >= 1


if __name__ == "__main__":  # regenerate .env.example
    EXAMPLE.write_text(render())
    print(f"wrote {EXAMPLE}")
