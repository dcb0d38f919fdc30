"""Preload (issue 14, item 6): models start with the studio, in order, if they fit."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from llamastudio.fit.argv import parse_server_args
from llamastudio.fit.estimator import estimate
from llamastudio.fit.planner import HOST_MARGIN
from llamastudio.gguf import load_model
from tests.rig.studio import Studio

SMALL = ["-c", "512", "-np", "2", "-t", "1"]


def test_models_are_preloaded_at_start_if_they_fit(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    need = {
        m: next(d.total for d in estimate(load_model(str(tiny_models[m])), parse_server_args(SMALL)).devices)
        for m in ("llama", "qwen3", "gemma3")
    }
    profile = tmp_path / "two-models.json"  # room for the first two, one byte short of the third
    profile.write_text(json.dumps({"gpus": [], "ram": HOST_MARGIN + sum(need.values()) - 1}))
    env = {"LLAMASTUDIO_PRELOAD": "by-env"}
    studio = Studio(tmp_path / "s", rig_bin("llama-server"), hardware=str(profile), env=env)
    with studio:
        studio.configure("by-env", model=str(tiny_models["llama"]), args=SMALL)
        studio.configure("by-config", model=str(tiny_models["qwen3"]), args=SMALL, preload=True, pinned=True)
        studio.configure("too-many", model=str(tiny_models["gemma3"]), args=SMALL, preload=True)
        studio.configure("lazy", model=str(tiny_models["gemma3"]), args=SMALL)
    with studio:  # started again: nothing has been requested yet
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {n: studio.status(n)["state"] for n in ("by-env", "by-config", "too-many", "lazy")}
            if states["by-env"] == states["by-config"] == "ready":
                break
            time.sleep(0.2)
        assert states == {"by-env": "ready", "by-config": "ready", "too-many": "stopped", "lazy": "stopped"}
        assert "preload too-many: skipped, it does not fit" in studio.log()
        with studio.api() as api:
            cfg = api.get("/api/models/by-config/config").json()["config"]
        assert cfg["preload"] is True
