"""llama-swap config.yaml and llama-server --models-preset INI: import/export round trips, and the
exported preset run by the real llama-server in router mode."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import yaml

from llamastudio.engines.registry import Engine
from llamastudio.engines.validate import probe
from llamastudio.errors import InvalidInput
from llamastudio.procs import stop_process
from llamastudio.runtime.process import free_port
from llamastudio.serving.configs import ModelConfig, validate
from llamastudio.serving.interop import export_llama_swap, export_preset, import_llama_swap, import_preset


@pytest.fixture(scope="module")
def engine(rig_bin: Callable[[str], Path]) -> Engine:
    server = rig_bin("llama-server")
    return Engine(
        id="rig",
        name="rig",
        kind="external",
        root=str(server.parent),
        binaries={"llama-server": str(server)},
        capabilities=probe(server)["flags"],
    )


def _configs(tiny_models: dict[str, Path], engine: Engine) -> list[ModelConfig]:
    return [
        ModelConfig(
            name="llama",
            model=str(tiny_models["llama"]),
            engine_id=engine.id,
            args=["-c", "2048", "-np", "2", "-fa", "on", "--jinja", "-ngl", "0"],
            aliases=["l", "small"],
            ttl=120,
            group="tiny",
            max_concurrency=4,
        ),
        ModelConfig(
            name="qwen3",
            model=str(tiny_models["qwen3"]),
            engine_id=engine.id,
            args=["--ctx-size", "1024", "-kvu", "--temp", "0.5"],
            ttl=0,
            pinned=True,
            group="tiny",
            env={"OMP_NUM_THREADS": "1"},
        ),
    ]


def _argv(c: ModelConfig, engine: Engine) -> list[str]:
    return [str(engine.server), "-m", c.model, "--host", "127.0.0.1", "--port", "${PORT}", *c.args]


def test_llama_swap_round_trip(tiny_models: dict[str, Path], engine: Engine) -> None:
    configs = _configs(tiny_models, engine)
    text = export_llama_swap(configs, {c.name: _argv(c, engine) for c in configs})
    data = yaml.safe_load(text)
    assert "${PORT}" in data["models"]["llama"]["cmd"]  # what llama-swap itself needs
    assert data["models"]["llama"]["aliases"] == ["l", "small"] and data["models"]["qwen3"]["ttl"] == 0
    assert data["groups"]["tiny"] == {
        "swap": True,
        "exclusive": False,
        "persistent": False,
        "members": ["llama", "qwen3"],
    }
    assert import_llama_swap(text, [engine]) == configs


def test_llama_swap_import_of_a_hand_written_config(tiny_models: dict[str, Path], engine: Engine) -> None:
    text = f"""
macros:
  server: {engine.server} --port ${{PORT}}
models:
  "llama-8b":
    cmd: |
      ${{server}}
      -m {tiny_models["llama"]}
      -c 4096 -ngl 99
    aliases: [gpt-4o-mini]
    ttl: 300
    env: ["CUDA_VISIBLE_DEVICES=0"]
  "vllm-model":
    cmd: python -m vllm.entrypoints.openai.api_server --port ${{PORT}} --model x
    metadata: {{llamastudio: {{reserve: {{CUDA0: 20000000000}}}}}}
groups:
  together:
    swap: false
    members: [llama-8b, vllm-model]
"""
    llama, other = import_llama_swap(text, [engine])
    assert llama.model == str(tiny_models["llama"]) and llama.args == ["-c", "4096", "-ngl", "99"]
    assert llama.engine_id == "rig" and llama.aliases == ["gpt-4o-mini"] and llama.ttl == 300
    assert llama.env == {"CUDA_VISIBLE_DEVICES": "0"} and llama.group == "together"
    assert not llama.group_swap and llama.group_exclusive  # swap: false; exclusive: llama-swap's default
    assert other.command is not None and other.command[:3] == [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
    ]
    assert other.reserve == {"CUDA0": 20_000_000_000}
    validate(other)
    # another program's memory is not estimated: reserving nothing by accident is refused
    with pytest.raises(InvalidInput, match="reserve"):
        validate(ModelConfig("x", "", command=["srv", "--host", "0.0.0.0", "--port", "${PORT}"]))
    with pytest.raises(InvalidInput, match="cmd"):
        import_llama_swap("models:\n  x: {ttl: 3}\n", [engine])
    with pytest.raises(InvalidInput, match="YAML"):
        import_llama_swap("models: [", [engine])


def test_preset_round_trip(tiny_models: dict[str, Path], engine: Engine) -> None:
    configs = _configs(tiny_models, engine)
    text = export_preset(configs, {c.name: c.model for c in configs})
    assert "[llama]" in text and f"model = {tiny_models['llama']}" in text and "jinja = true" in text
    assert import_preset(text, set(engine.capabilities)) == configs


def test_exported_preset_runs_in_llama_server_router_mode(
    tmp_path: Path, tiny_models: dict[str, Path], engine: Engine
) -> None:
    configs = _configs(tiny_models, engine)
    preset = tmp_path / "models.ini"
    preset.write_text(export_preset(configs, {c.name: c.model for c in configs}))
    port = free_port()
    log = tmp_path / "router.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(engine.server), "--models-preset", str(preset), "--port", str(port), "--no-webui"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        ids = {m["id"] for m in httpx.get(f"{url}/models", timeout=10).json()["data"]}
        assert {"llama", "qwen3"} <= ids, log.read_text()[-2000:]
        r = httpx.post(
            f"{url}/v1/completions", json={"model": "qwen3", "prompt": "x", "max_tokens": 3}, timeout=120
        )
        assert r.status_code == 200, (r.text, log.read_text()[-2000:])
    finally:
        stop_process(proc)
