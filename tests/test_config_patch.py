"""Partial config updates and reload (issue 14, item 8).

Regression: saving a config from the UI wiped ``env``, ``group``, ``max_queue`` and ``reserve``
(PUT rebuilt every omitted field from its default); the UI now PATCHes only its fields."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.rig.studio import Studio

SMALL = ["-c", "512", "-np", "2", "-t", "1"]


def test_patch_keeps_other_fields_and_reload_applies_a_change(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    with Studio(tmp_path / "s", rig_bin("llama-server")) as studio:
        full = {
            "model": str(tiny_models["llama"]),
            "args": SMALL,
            "env": {"LLAMA_ARG_N_PREDICT": "8"},
            "group": "g1",
            "max_queue": 7,
            "reserve": {"CPU": 512 << 20},
        }
        studio.configure("m", **full)
        with studio.api() as api:
            # what the UI's editor sends: its own fields only
            saved = api.patch("/api/models/m/config", json={"args": [*SMALL, "--temp", "0.5"], "ttl": 120})
            assert saved.status_code == 200, saved.text
            cfg = saved.json()["config"]
            assert cfg["env"] == full["env"] and cfg["group"] == "g1" and cfg["max_queue"] == 7
            assert cfg["reserve"] == full["reserve"] and cfg["ttl"] == 120 and "--temp" in cfg["args"]
            assert saved.json()["reload_needed"] is False  # not running: nothing to reload

            assert (
                studio.gateway()
                .post("/v1/completions", json={"model": "m", "prompt": "x", "max_tokens": 2})
                .status_code
                == 200
            )
            pid = studio.status("m")["pid"]
            changed = api.patch("/api/models/m/config", json={"args": [*SMALL, "--temp", "0.7"]})
            assert changed.json()["reload_needed"] is True
            assert studio.status("m")["pid"] == pid  # still the old engine, until reloaded
            reloaded = api.post("/api/models/m/reload")
            assert reloaded.status_code == 200 and reloaded.json()["state"] == "ready"
            assert reloaded.json()["pid"] != pid
            assert api.get("/api/models/m/config").json()["config"]["group"] == "g1"

            # null for a field that has no null: refused, nothing changed
            bad = api.patch("/api/models/m/config", json={"args": None})
            assert bad.status_code == 400 and "args" in bad.json()["error"]["message"]
            unknown = api.patch("/api/models/m/config", json={"argz": []})
            assert unknown.status_code == 422
            # PUT still replaces the whole configuration (documented)
            put = api.put("/api/models/m/config", json={"model": str(tiny_models["llama"]), "args": SMALL})
            assert put.json()["config"]["group"] is None and put.json()["config"]["env"] == {}
