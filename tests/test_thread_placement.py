"""Where a model's compute threads run: pinned one to a CPU when they take every core, with a short
OpenMP spin (engines/kinds/threads.py ``placement``); checked in a real llama-server's threads."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import openai
import psutil
import pytest

from llamastudio.engines.kinds.threads import SPIN, links_libgomp, one_per_core, placement, usable_cpus
from tests.rig.studio import Studio


def topology(root: Path, cores: dict[int, tuple[int, int]]) -> Path:
    """A fake ``/sys/devices/system/cpu``: cpu → (package, core)."""
    for cpu, (package, core) in cores.items():
        top = root / f"cpu{cpu}" / "topology"
        top.mkdir(parents=True)
        (top / "physical_package_id").write_text(f"{package}\n")
        (top / "core_id").write_text(f"{core}\n")
    return root


def test_one_cpu_per_physical_core_whichever_way_siblings_are_numbered(tmp_path: Path) -> None:
    apart = topology(tmp_path / "apart", {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1)})  # 0,2 siblings
    assert one_per_core([0, 1, 2, 3], apart) == [0, 1]
    together = topology(tmp_path / "together", {0: (0, 0), 1: (0, 0), 2: (0, 1), 3: (0, 1)})
    assert one_per_core([0, 1, 2, 3], together) == [0, 2]
    assert one_per_core([1, 3], together) == [1, 3]  # an affinity without the first siblings
    two_sockets = topology(tmp_path / "sockets", {0: (0, 0), 1: (1, 0)})  # core ids repeat per package
    assert one_per_core([0, 1], two_sockets) == [0, 1]
    assert one_per_core([0, 1, 5], tmp_path / "none") == [0, 1, 5]  # no topology: a CPU is a core


def test_only_a_model_taking_every_core_is_pinned() -> None:
    cpus, per_core = [0, 1, 2, 3], [0, 2]
    assert placement(["-t", "4"], 4, cpus, per_core) == ["-C", "0xf", "--cpu-strict", "1"]
    assert placement([], 2, cpus, per_core) == ["-C", "0x5", "--cpu-strict", "1"]  # one per core
    # GPU-only; cores left to others (a second model would share CPUs); more threads than CPUs
    for threads in (0, 1, 3, 8):
        assert placement([], threads, cpus, per_core) == []
    for own in (["-C", "0x1"], ["--cpu-strict=0"], ["-Cr", "0-1"], ["-tb", "4"], ["--cpu-mask-batch", "3"]):
        assert placement(own, 4, cpus, per_core) == [], own  # the configuration's own placement wins
    assert placement([], 64, list(range(64)), list(range(64)))[1] == f"0x{(1 << 64) - 1:x}"


def test_openmp_is_found_in_the_binary_or_a_ggml_library_beside_it(
    tmp_path: Path, rig_bin: Callable[[str], Path]
) -> None:
    shared = tmp_path / "shared"
    (shared / "bin").mkdir(parents=True)
    (shared / "lib").mkdir()
    server = shared / "bin" / "llama-server"
    server.write_bytes(b"\x7fELF" + b"\0" * 100)
    assert not links_libgomp(server)
    (shared / "lib" / "libggml-base.so").write_bytes(b"libgomp.so.1\0")  # not the CPU backend's
    assert not links_libgomp(server)
    (shared / "lib" / "libggml-cpu-haswell.so").write_bytes(b"\0" * 10 + b"libgomp.so.1\0")
    assert links_libgomp(server)
    static = tmp_path / "llama-server"  # the name across a read boundary
    static.write_bytes(b"\0" * ((1 << 20) - 5) + b"libgomp.so.1\0")
    assert links_libgomp(static)
    real = rig_bin("llama-server")
    ldd = subprocess.run(["ldd", str(real)], capture_output=True, text=True, check=False).stdout
    assert links_libgomp(real) == ("libgomp" in ldd)


def pinned_cpus(pid: int) -> set[int]:
    """The CPUs that threads of ``pid`` pinned to a single CPU are pinned to."""
    out: set[int] = set()
    for th in psutil.Process(pid).threads():
        for line in Path(f"/proc/{pid}/task/{th.id}/status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:") and line.split()[1].isdigit():
                out.add(int(line.split()[1]))
    return out


def engine_of(studio: Studio, model: str) -> psutil.Process:
    assert studio.proc is not None
    pid = studio.status(model)["pid"]
    return next(p for p in psutil.Process(studio.proc.pid).children(recursive=True) if p.pid == pid)


def test_with_pin_threads_a_model_on_every_cpu_has_its_compute_threads_pinned_apart(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    server = rig_bin("llama-server")
    cpus = usable_cpus()
    if len(cpus) < 2 or not links_libgomp(server):
        pytest.skip(f"needs 2 CPUs ({len(cpus)} here) and an OpenMP build of llama-server")
    n = len(cpus)
    with Studio(tmp_path / "s", server, env={"LLAMASTUDIO_PIN_THREADS": "true"}) as studio:
        every = studio.configure("every", model=str(tiny_models["llama"]), args=["-c", "512", "-t", str(n)])
        mask = f"0x{sum(1 << c for c in cpus):x}"
        assert every["prepared"]["argv"][-4:] == ["-C", mask, "--cpu-strict", "1"], every["prepared"]["argv"]
        assert any("pinned to its own CPU" in r for r in every["prepared"]["reasons"])
        assert every["prepared"]["env"] == {"GOMP_SPINCOUNT": SPIN}
        with studio.api() as api:  # a CPU mask is this machine's: an export carries the model's own flags
            exported = api.get("/api/served/export", params={"format": "llama-swap"}).text
        assert f"-t {n}" in exported and "--cpu-strict" not in exported and mask not in exported
        passive = studio.configure(  # the configuration's own OpenMP wait policy is kept
            "passive",
            model=str(tiny_models["llama"]),
            args=["-c", "512", "-t", str(n)],
            env={"OMP_WAIT_POLICY": "PASSIVE"},
        )
        assert passive["prepared"]["argv"][-4:] == ["-C", mask, "--cpu-strict", "1"]
        assert passive["prepared"]["env"] == {}
        client = openai.OpenAI(base_url=f"{studio.gateway_url}/v1", api_key="x", max_retries=0)
        client.completions.create(model="every", prompt="hello", max_tokens=4)
        engine = engine_of(studio, "every")
        assert engine.environ().get("GOMP_SPINCOUNT") == SPIN
        # llama.cpp pins its compute threads as a graph starts: one per CPU of the mask
        deadline = time.monotonic() + 10
        while pinned_cpus(engine.pid) != set(cpus) and time.monotonic() < deadline:
            client.completions.create(model="every", prompt="hello", max_tokens=4)
        assert pinned_cpus(engine.pid) == set(cpus)

        # a configuration's own placement (llama.cpp's default, here) is left as it is
        own = studio.configure(
            "own", model=str(tiny_models["qwen3"]), args=["-c", "512", "-t", str(n), "--cpu-strict", "0"]
        )
        assert "-C" not in own["prepared"]["argv"]
        assert not any("pinned" in r for r in own["prepared"]["reasons"])
        for _ in range(3):
            client.completions.create(model="own", prompt="hello", max_tokens=4)
        engine = engine_of(studio, "own")
        assert "GOMP_SPINCOUNT" not in engine.environ()
        assert pinned_cpus(engine.pid) == set()
