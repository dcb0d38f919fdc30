"""Learning from every load (issue 17, item 3): what llama-server allocated is recorded next to the
estimate, keyed by load, and the next placement of that key reserves the measured figure.

The closed loop runs the real studio with the rig's llama-server and the test hook
``LLAMASTUDIO_TEST_ESTIMATE_SCALE`` (``fit/measured.py``) halving every estimate: the first load
is placed on the halved figure, measured (its buffers, logged at ``-lv 4``), and from then on the
measured figure decides placement — two models that fit together on the halved estimate no longer
do, so the second start evicts the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.loadkey import memory_flags, model_identity
from llamastudio.fit.measured import (
    LOG_ROUNDING,
    SCALE_ENV,
    Logged,
    MemoryPlan,
    measure,
    parse_logged,
    plan_memory,
    relevant,
)
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model
from llamastudio.hardware.gpu_process import nvml, process_memory
from llamastudio.runtime.measured import MeasuredStore
from llamastudio.store import Database
from tests.rig.studio import Studio

MiB = 1 << 20
FIXTURES = Path(__file__).parent / "fixtures" / "logs"
SMALL = ["-c", "512", "-np", "2", "-t", "1"]
ARGV = ["/x/llama-server", "-m", "{model}", "--host", "127.0.0.1", "--port", "${PORT}", "-c", "512"]


def _plan(model: Path, *extra: str, manual: bool = False) -> MemoryPlan:
    gm = load_model(str(model))
    est = estimate(gm, parse_server_args(["-c", "512"]))
    argv = [a.replace("{model}", str(model)) for a in ARGV] + list(extra)
    reserve = {d.name: d.total for d in est.devices if d.total}
    plan = plan_memory(gm, [], "engine@1:2", argv, est, reserve, manual)
    assert plan is not None
    return plan


# -- the key -------------------------------------------------------------------------------------
def test_key_is_the_load_not_the_name_path_or_neutral_flags(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    llama = tiny_models["llama"]
    copy = tmp_path / "elsewhere" / "renamed.gguf"
    copy.parent.mkdir()
    shutil.copy(llama, copy)
    os.utime(copy, (1, 1))  # another mtime: the identity is the header's bytes and the size
    base = _plan(llama)
    assert model_identity(load_model(str(copy))) == model_identity(load_model(str(llama)))
    assert _plan(copy).key == base.key
    neutral = ("--alias", "x", "--temp", "0.7", "-t", "3", "--jinja", "-lv", "4", "--api-key-file=/k")
    assert _plan(llama, *neutral).key == base.key
    for memory in (("-ctk", "q8_0"), ("-np", "3"), ("--cache-ram", "0"), ("-ub", "256")):
        assert _plan(llama, *memory).key != base.key, memory  # an unknown flag (--cache-ram) counts too
    assert _plan(tiny_models["llama-Q8_0"]).key != base.key  # another quantization: another header


def test_companion_paths_become_identities(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    draft = tiny_models["llama-Q8_0"]
    copy = tmp_path / "draft-copy.gguf"
    shutil.copy(draft, copy)
    ids = {str(draft): "ID", str(copy): "ID"}
    a = memory_flags(["-c", "512", "-md", str(draft)], ids)
    b = memory_flags(["-c", "512", f"--model-draft={copy}"], ids)
    assert a == b and "ID" in a and str(draft) not in a


# -- figures -------------------------------------------------------------------------------------
@pytest.mark.parametrize("log", ["draft-pair.log", "mmproj-mlp.log", "embed-qwen3.log"])
def test_the_kept_lines_say_what_the_whole_log_says(log: str) -> None:
    """Only lines that matter are kept per load; they parse to the same buffers as the whole log."""
    lines = (FIXTURES / log).read_text().splitlines()
    kept = [ln for ln in lines if relevant(ln)]
    assert len(kept) < len(lines) / 2
    assert parse_logged(kept) == parse_logged(lines) is not None


def test_projector_and_draft_buffers_are_measured() -> None:
    draft = parse_logged((FIXTURES / "draft-pair.log").read_text().splitlines())
    vision = parse_logged((FIXTURES / "mmproj-mlp.log").read_text().splitlines())
    assert draft is not None and draft.figures["CPU"]["draft"] > 0
    assert vision is not None and vision.figures["CPU"]["mmproj"] > 0


def test_a_default_verbosity_log_measures_nothing() -> None:
    lines = [
        "0.00.006.461 I srv    load_model: loading model 'llama.gguf'",
        "0.00.207.258 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 512, kv_unified = 'true'",
        "0.00.212.615 I srv  llama_server: model loaded",
    ]
    assert parse_logged(lines) is None


def test_reserve_drift_and_fit(tiny_models: dict[str, Path]) -> None:
    plan = _plan(tiny_models["llama"])
    now = datetime.now(UTC)
    logged = Logged({"CPU": {"model": 100 * MiB, "kv": 10 * MiB}}, n_ctx=512, offloaded=None, fitted=False)
    m = measure(plan, "m", logged, now)
    plan.mapped_extra = m.mapped_extra = 30 * MiB  # weights of a GPU inside the mapped range
    m.process = {"CUDA0": 700 * MiB}
    m.measured["CUDA0"] = {"model": 500 * MiB, "compute": 100 * MiB}
    # the process held more than its buffers on the GPU; each logged figure's rounding is reserved
    assert m.reserve({}) == {"CPU": 80 * MiB + 2 * LOG_ROUNDING, "CUDA0": 700 * MiB}
    assert m.drift()["CPU"] == pytest.approx(sum(plan.estimated["CPU"].values()) / (110 * MiB) - 1)
    assert m.drifted()
    plan.measured = m
    assert plan.reserve() == m.reserve({}) and plan.source == "measured"
    fitted = measure(plan, "m", Logged(logged.figures, 256, None, fitted=True), now)
    assert not fitted.comparable and "fit" in (fitted.note or "")
    assert "context is 256" in (fitted.note or "")
    plan.measured = fitted  # --fit changed that load: the estimate stays the reservation
    assert plan.reserve() == plan.estimated_reserve and plan.source == "estimate"
    gpu_only = measure(plan, "m", logged, now)
    gpu_only.measured, gpu_only.process = {}, {"CUDA0": 3 * MiB}  # NVML alone: no buffers logged
    assert gpu_only.reserve({"CPU": 5, "CUDA0": 2 * MiB}) == {"CPU": 5, "CUDA0": 3 * MiB}
    own = _plan(tiny_models["llama"], manual=True)
    own.measured = m
    assert own.reserve() == own.estimated_reserve and own.source == "manual"


def test_the_test_hook_scales_estimates_only(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = _plan(tiny_models["llama"])
    monkeypatch.setenv(SCALE_ENV, "0.5")
    half = _plan(tiny_models["llama"])
    assert half.key == plain.key
    assert half.estimated_reserve["CPU"] == pytest.approx(plain.estimated_reserve["CPU"] / 2, abs=1)
    assert _plan(tiny_models["llama"], manual=True).estimated_reserve == plain.estimated_reserve


def test_records_round_trip_through_sqlite(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    db = Database(tmp_path / "s.db")
    store = MeasuredStore(db)
    plan = _plan(tiny_models["llama"])
    logged = Logged({"CPU": {"model": 33 * MiB, "compute": 5 * MiB}}, 512, None, False)
    m = measure(plan, "tiny", logged, datetime(2026, 11, 23, 12, tzinfo=UTC))
    store.save(m)
    m.loads, m.process = 2, {"CUDA0": 5}
    store.save(m)  # the same key: replaced, not added
    got = store.get(plan.key)
    assert got is not None and got.loads == 2 and got.process == {"CUDA0": 5}
    assert got.measured == m.measured and got.estimated == plan.estimated
    assert got.measured_at == datetime(2026, 11, 23, 12, tzinfo=UTC)
    assert store.get_many([plan.key, "nope"]).keys() == {plan.key}
    db.close()


def test_nvml_process_memory_on_a_real_gpu() -> None:
    """NVML's per-process reading, on this machine's driver (GPU machines only)."""
    lib = nvml()
    if lib is None:
        pytest.skip("no NVIDIA driver here: NVML's per-process memory is read only on GPU machines")
    assert process_memory(os.getpid(), lib) == {}  # this test process holds no GPU memory
    assert all(re.fullmatch(r"CUDA\d+", d) for d in process_memory(1, lib))


# -- the closed loop, on the real studio --------------------------------------------------------------
def _config(studio: Studio, name: str) -> dict[str, Any]:
    with studio.api() as c:
        r = c.get(f"/api/models/{name}/config")
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _measured(studio: Studio, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        memory: dict[str, Any] = _config(studio, name)["prepared"]["memory"]
        if memory["measured"] is not None:
            return memory
        time.sleep(0.2)
    raise AssertionError(f"{name}: no measurement after {timeout}s")


def _engine_log(studio: Studio, name: str) -> str:
    with studio.api() as c:
        return "\n".join(c.get(f"/api/models/{name}/logs", params={"tail": 2000}).json()["lines"])


def test_closed_loop_second_placement_uses_the_measured_figure(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    model = tiny_models["llama"]
    est = next(d.total for d in estimate(load_model(str(model)), parse_server_args(SMALL)).devices)
    profile = tmp_path / "room.json"  # one and a half models: two fit only on the halved estimate
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + est * 3 // 2}))
    env = {SCALE_ENV: "0.5", "LLAMASTUDIO_LOG_LEVEL": "info"}
    with Studio(tmp_path / "s", rig_bin("llama-server"), hardware=str(profile), env=env) as studio:
        for name in ("first", "second"):  # two names, one load key
            studio.configure(name, model=str(model), args=SMALL)
        before = _config(studio, "first")["prepared"]
        assert before["memory"]["source"] == "estimate" and before["memory"]["measured"] is None
        assert before["reserve"]["CPU"] == pytest.approx(est / 2, abs=1)  # the perturbed estimate
        assert "not measured yet" in before["memory"]["summary"][0]

        with studio.api() as c:
            assert c.post("/api/models/first/start").status_code == 200
        memory = _measured(studio, "first")
        assert "buffer size" in _engine_log(studio, "first")  # an unmeasured key loads at -lv 4
        got = memory["measured"]["CPU"]
        assert got == pytest.approx(est, rel=0.05)  # the estimator itself is close; the hook is not
        assert memory["drift"]["CPU"] == pytest.approx(-0.5, abs=0.03)
        summary = r"CPU: estimated [\d.]+ MiB, measured [\d.]+ MiB on \d{4}-\d\d-\d\d \(-[\d.]+ %\)"
        assert re.fullmatch(summary, memory["summary"][0]), memory["summary"]
        second = _config(studio, "second")["prepared"]
        assert second["memory"]["key"] == memory["key"]
        assert second["memory"]["source"] == "measured"
        # the next placement of this key: the measured figure (plus each logged line's rounding)
        assert got < second["reserve"]["CPU"] <= got + 7 * LOG_ROUNDING

        with studio.gateway() as gw:
            metrics = gw.get("/metrics").text
        ratio = re.search(r'llamastudio_estimate_drift_ratio\{model="first",device="CPU"\} (\S+)', metrics)
        assert ratio is not None and float(ratio.group(1)) == pytest.approx(-0.5, abs=0.03), metrics
        assert 'llamastudio_estimate_drift_total{model="first"} 1' in metrics
        assert "first: estimate drift on CPU" in studio.log()

        with studio.api() as c:
            assert c.post("/api/models/second/start").status_code == 200
        # on the halved estimates both fit (est/2 + est/2 <= 1.5 est); measured, they do not
        assert studio.status("first")["state"] == "stopped"
        assert "evicted to make room for second" in (studio.status("first")["note"] or "")
        assert studio.status("second")["memory"]["CPU"] == second["reserve"]["CPU"]
        assert "buffer size" not in _engine_log(studio, "second")  # measured key: default verbosity
        assert _measured(studio, "second")["loads"] == 2

        done = studio.cli("estimate", str(model), *[a for a in SMALL if a not in ("-t", "1")])
        assert "measured" in done.stdout and "on 20" in done.stdout, done.stdout
