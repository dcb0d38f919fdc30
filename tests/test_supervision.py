"""Supervision that notices (issue 14, item 5): a hung engine is detected and restarted while
requests wait for it; explicit notes say why a model stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.rig.pids import alive
from tests.rig.studio import Studio

SMALL = ["-c", "512", "-np", "2", "-t", "1"]


def test_a_hung_engine_is_restarted_and_waiting_requests_succeed(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    env = {"LLAMASTUDIO_HUNG_AFTER": "2"}
    with Studio(tmp_path / "s", rig_bin("llama-server"), env=env) as studio:
        studio.configure("frozen", model=str(tiny_models["llama"]), args=SMALL)
        gw = studio.gateway()
        body = {"model": "frozen", "prompt": "x", "max_tokens": 3}
        assert gw.post("/v1/completions", json=body).status_code == 200
        pid = studio.status("frozen")["pid"]
        os.kill(pid, signal.SIGSTOP)  # alive, holding its port, answering nothing
        try:
            t0 = time.monotonic()
            with ThreadPoolExecutor(2) as pool:  # both wait on the frozen engine
                replies = list(
                    pool.map(
                        lambda _: httpx.post(f"{studio.gateway_url}/v1/completions", json=body, timeout=60),
                        range(2),
                    )
                )
            took = time.monotonic() - t0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        assert took < 30  # detected after ~2 s of silence, restarted, answered
        assert not alive(pid)  # the frozen engine was killed
        new = studio.status("frozen")
        assert new["state"] == "ready" and new["pid"] != pid
        assert "hung: no answer to /health" in studio.log()


def test_stop_notes_say_why(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    with Studio(tmp_path / "s", rig_bin("llama-server")) as studio:
        studio.configure("short", model=str(tiny_models["llama"]), args=SMALL, ttl=1)
        studio.configure("asked", model=str(tiny_models["qwen3"]), args=SMALL)
        gw = studio.gateway()
        for name in ("short", "asked"):
            assert (
                gw.post("/v1/completions", json={"model": name, "prompt": "x", "max_tokens": 2}).status_code
                == 200
            )
        with studio.api() as api:
            assert api.post("/api/models/asked/stop").status_code == 200
        deadline = time.monotonic() + 15
        while studio.status("short")["state"] != "stopped" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert studio.status("short")["note"] == "unloaded after 1s idle (TTL)"
        assert studio.status("asked")["note"] == "stopped on request"
