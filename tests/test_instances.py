"""Instance files and orphans, with real child processes (no llama-server needed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamastudio.config import Settings
from llamastudio.engines.kinds.threads import cpu_threads
from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.hardware.devices import Gpu, Hardware
from llamastudio.hub.library import Library
from llamastudio.runtime import manager
from llamastudio.runtime.instances import cleanup_orphans, file_stem
from llamastudio.runtime.manager import Runtime, budgets_of
from llamastudio.store import Database

GiB = 1 << 30


def test_names_that_sanitise_alike_get_distinct_stable_file_names() -> None:
    """Issue 14 #9 / 18 #10: ``org/m`` and ``org_m`` shared one log and one orphan record."""
    a, b = file_stem("org/m"), file_stem("org_m")
    assert a != b and a.startswith("org_m-") and b.startswith("org_m-")
    assert file_stem("org/m") == a  # stable across runs: a hash of the exact name, not a counter
    odd = file_stem("../../etc/passwd")
    assert "/" not in odd and not odd.startswith(".")
    assert len(file_stem("x" * 256)) < 100


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        p.kill()
        p.wait()


def sleeper(procs: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    procs.append(p)
    return p


def record(run_dir: Path, stem: str, pid: int, exe: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"{stem}.json").write_text(json.dumps({"pid": pid, "exe": exe, "model": stem, "port": 1}))


def test_orphans_of_either_naming_scheme_are_killed_and_waited_for(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    run = tmp_path / "run"
    old, new, stranger = sleeper(sleepers), sleeper(sleepers), sleeper(sleepers)
    record(run, "org_m", old.pid, sys.executable)  # the scheme before the hash suffix
    record(run, file_stem("org/m"), new.pid, sys.executable)
    record(run, "reused", stranger.pid, "/usr/bin/not-this")  # the pid now runs something else
    (run / "garbage.json").write_text("{")
    killed = cleanup_orphans(run)
    assert sorted(killed) == sorted([old.pid, new.pid])
    assert old.poll() is not None and new.poll() is not None  # exited before it returned
    assert stranger.poll() is None
    assert list(run.glob("*.json")) == []


async def test_budgets_are_read_after_orphans_are_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """Issue 14: memory budgets were computed before the orphans of a crashed studio were
    killed, so the memory those orphans held was never given to the new studio's models."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    orphan = sleeper(sleepers)
    record(settings.data_dir / "run", file_stem("m"), orphan.pid, sys.executable)
    reads: list[bool] = []  # was the orphan still running when free memory was read?

    def probe(spec: str | None) -> Hardware:
        reads.append(orphan.poll() is None)
        return Hardware((), 4, 16 * GiB, (8 if reads[-1] else 12) * GiB)

    monkeypatch.setattr(manager, "resolve", probe)
    db = Database(settings.db_path)
    rt = Runtime(settings, db, library=Library(db, hub_cache=tmp_path / "hf"))
    await rt.start()
    try:
        for _ in range(50):
            await asyncio.sleep(0)
        assert reads[-1] is False
        assert rt.scheduler.budgets == budgets_of(Hardware((), 4, 16 * GiB, 12 * GiB))
        assert rt.scheduler.cores == 4
    finally:
        await rt.close()
        db.close()


def test_cpu_threads_of_a_model(tiny_models: dict[str, Path]) -> None:
    from llamastudio.gguf import load_model

    model = load_model(str(tiny_models["llama"]))
    gpu = Gpu(index=0, name="test", backend="CUDA", total=24 * GiB, free=24 * GiB)

    def threads(args: list[str], gpus: tuple[Gpu, ...] = ()) -> int:
        flags = parse_server_args(args)
        return cpu_threads(args, flags, estimate(model, flags, gpus), cores=8)

    assert threads([]) == 8  # CPU only, llama.cpp's default: the physical cores
    assert threads(["-t", "2"]) == 2
    assert threads(["--threads=3", "-tb", "6"]) == 6  # prompt processing uses -tb
    assert threads(["-t", "-1"]) == 8
    assert threads([], (gpu,)) == 0  # wholly offloaded: takes no part
    assert threads(["-ngl", "1"], (gpu,)) == 8  # partly on the CPU: competes for the cores
    assert threads(["--cpu-moe"], (gpu,)) == 8


def test_cleanup_keeps_the_studio_record_and_drops_stale_keys(tmp_path: Path) -> None:
    """Engine key files of a killed studio were left behind in run/ (0600, but never removed);
    the studio's own run/studio.json is not an engine record and must not be treated as one."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "studio.json").write_text(json.dumps({"pid": 1, "url": "http://127.0.0.1:1"}))
    (run / "m-0123456789-abc.key").write_text("secret")
    (run / "owner.key").write_text("secret")
    assert cleanup_orphans(run, wait=0) == []
    assert (run / "studio.json").exists()
    assert not list(run.glob("*.key"))


async def test_gpu_budgets_follow_free_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 14: budgets were computed once and never saw free memory change (another program
    taking VRAM, or freeing it)."""
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    free = [20 * GiB]

    def probe(spec: str | None) -> Hardware:
        gpu = Gpu(index=0, name="g", backend="CUDA", total=24 * GiB, free=free[0])
        return Hardware((gpu,), 4, 16 * GiB, 12 * GiB)

    monkeypatch.setattr(manager, "resolve", probe)
    db = Database(settings.db_path)
    rt = Runtime(settings, db, library=Library(db, hub_cache=tmp_path / "hf"))
    await rt.start()
    try:
        first = dict(rt.scheduler.budgets)
        free[0] = 8 * GiB  # another program took 12 GiB
        await rt.refresh_gpu_budgets()
        for _ in range(20):
            await asyncio.sleep(0)
        assert rt.scheduler.budgets["CUDA0"] == first["CUDA0"] - 12 * GiB
        assert rt.scheduler.budgets["CPU"] == first["CPU"]  # RAM: as measured at start
    finally:
        await rt.close()
        db.close()
