"""Model loads are jobs (issue 14, item 2): each start is a ``load`` job whose progress follows
llama-server's load lines; a failed start fails its job with the reason."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from tests.rig.studio import Studio

SMALL = ["-c", "512", "-np", "1", "-t", "1"]


def test_a_load_is_a_job_with_progress_and_a_failed_one_says_why(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    env = {"LLAMASTUDIO_ALLOW_COMMANDS": "1"}
    with Studio(tmp_path / "s", rig_bin("llama-server"), env=env) as studio:
        studio.configure("m", model=str(tiny_models["llama"]), args=SMALL)
        # an engine that fails to load (a command engine, so any failure can be staged)
        fails = "print('error loading model: simulated', flush=True); raise SystemExit(1)"
        studio.configure("bad", command=[sys.executable, "-c", fails, "${PORT}"], reserve={"CPU": 1 << 20})
        with studio.api() as api:
            assert api.post("/api/models/m/start").status_code == 200
            api.post("/api/models/bad/start")
            jobs = api.get("/api/jobs", params={"kind": "load"}).json()
        by_model = {j["params"]["model"]: j for j in jobs}
        ok = by_model["m"]
        assert ok["state"] == "done" and ok["kind"] == "load"
        assert ok["progress"]["done"] >= 3  # stages seen: reading, tensors, context, … listening
        assert ok["result"]["pid"] == studio.status("m")["pid"]
        bad = by_model["bad"]
        assert bad["state"] == "failed" and "error loading model: simulated" in bad["error"]
