"""Engine kinds (issue 14, item 1): each kind's argv, memory, readiness and fatal lines."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from llamastudio.engines.kinds import COMMAND, KINDS, LLAMA_CPP, ModelRequest, kind_named
from llamastudio.engines.kinds.threads import SPIN, links_libgomp, one_per_core, placement, usable_cpus
from llamastudio.engines.registry import Engine
from llamastudio.engines.validate import probe
from llamastudio.errors import InvalidInput, StartFailed
from llamastudio.gguf import load_model
from llamastudio.hardware.devices import Hardware
from llamastudio.runtime.process import EngineProcess, free_port

GiB = 1 << 30
CPU = Hardware((), 4, 16 * GiB, 12 * GiB)

# the seeds' fatal lines (llama.cpp, CUDA, vLLM) and lines that are not fatal
FATAL = [
    "ggml_cuda_error: out of memory",
    "CUDA error: out of memory",
    "llama_model_load: error loading model: not enough VRAM",
    "cannot allocate memory for the KV cache",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "ValueError: The model's max seq len (32768) is larger than the available KV cache memory (1.2 GiB)",
    "RuntimeError: EngineCore failed to start.",
]
HARMLESS = ["main: server is listening on http://127.0.0.1:8080", "srv  load_model: loading model 'x.gguf'"]


@pytest.mark.parametrize("line", FATAL)
def test_every_kind_knows_the_seeds_fatal_lines(line: str) -> None:
    for kind in KINDS.values():
        assert kind.fatal.search(line), (kind.name, line)


@pytest.mark.parametrize("line", HARMLESS)
def test_ordinary_lines_are_not_fatal(line: str) -> None:
    assert not any(kind.fatal.search(line) for kind in KINDS.values())


def test_llama_cpp_specific_lines() -> None:
    assert LLAMA_CPP.fatal.search("GGML_ASSERT(ctx) failed")
    assert COMMAND.fatal.search("Traceback (most recent call last):")


def test_command_kind_needs_the_port_and_a_reservation() -> None:
    ok = COMMAND.plan(
        ModelRequest("v", command=["vllm", "--port", "${PORT}"], reserve={"CUDA0": GiB}), None, CPU
    )
    assert ok.argv == ["vllm", "--port", "${PORT}"] and ok.reserve == {"CUDA0": GiB}
    with pytest.raises(InvalidInput, match="reserve"):
        COMMAND.plan(ModelRequest("v", command=["vllm", "--port", "${PORT}"]), None, CPU)
    with pytest.raises(InvalidInput, match="reserve"):  # zero is "nothing", refused the same
        COMMAND.plan(ModelRequest("v", command=["vllm", "--port", "${PORT}"], reserve={"CPU": 0}), None, CPU)
    with pytest.raises(InvalidInput, match=r"\$\{PORT\}"):
        COMMAND.plan(ModelRequest("v", command=["vllm"], reserve={"CPU": GiB}), None, CPU)
    assert not COMMAND.takes_key(None)


def test_llama_cpp_plan_uses_the_estimate_and_the_engines_flags(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    server = rig_bin("llama-server")
    check = probe(server)
    engine = Engine("rig", "rig", "external", str(server.parent), {"llama-server": str(server)})
    engine.capabilities = list(check["flags"])
    path = tiny_models["llama"]
    request = ModelRequest("m", ["-c", "512", "-t", "2"], model_path=path, header=load_model(str(path)))
    done = LLAMA_CPP.plan(request, engine, CPU)
    assert done.argv[0] == str(server) and "${PORT}" in done.argv
    assert done.argv[done.argv.index("--alias") + 1] == "m"
    assert "--cpu-strict" not in done.argv and not done.env  # thread placement: only when asked
    pinned = LLAMA_CPP.plan(replace(request, pin=True), engine, CPU)
    cpus = usable_cpus()
    expected = placement([], 2, cpus, one_per_core(cpus)) if links_libgomp(server) else []
    assert pinned.placement == expected and (pinned.env == {"GOMP_SPINCOUNT": SPIN}) == bool(expected)
    assert done.estimate is not None and done.reserve == {"CPU": done.estimate.host.total}
    assert done.threads == 2
    mine = LLAMA_CPP.plan(
        ModelRequest("m", ["-c", "512"], False, {"CPU": 5}, None, path, request.header), engine, CPU
    )
    assert mine.reserve == {"CPU": 5}  # the user's figure wins
    assert LLAMA_CPP.takes_key(engine)
    with pytest.raises(InvalidInput):
        LLAMA_CPP.plan(ModelRequest("m"), None, CPU)
    with pytest.raises(InvalidInput, match="unknown engine kind"):
        kind_named("nope")


async def test_a_fatal_line_fails_the_start_at_once(tmp_path: Path) -> None:
    """The engine prints a fatal line and hangs (as a CUDA OOM can): the start fails with that
    line well before the load timeout."""
    script = "import time; print('ggml_cuda_error: out of memory', flush=True); time.sleep(60)"
    proc = EngineProcess(
        "oom",
        [sys.executable, "-c", script],
        free_port(),
        tmp_path / "oom.log",
        timeout=30,
        fatal=LLAMA_CPP.fatal,
    )
    t0 = time.monotonic()
    with pytest.raises(StartFailed, match="ggml_cuda_error"):
        await proc.ensure_ready()
    assert time.monotonic() - t0 < 10
