"""Launch specs follow the engine a model resolves to (issue 14 bug: the spec cache ignored the
engine, so after ``PUT /api/engines/{id}/default`` the preview showed the new binary while
``start`` ran the old one — and after ``engines rm``, a deleted one)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from llamastudio.config import Settings
from llamastudio.engines.validate import add_external
from llamastudio.hardware.devices import Hardware
from llamastudio.hub.library import Library
from llamastudio.runtime.manager import Runtime
from llamastudio.services import StudioService
from llamastudio.serving.configs import ModelConfig
from llamastudio.store import Database

GiB = 1 << 30


async def test_switching_the_default_engine_changes_a_stopped_models_argv(
    tmp_path: Path, rig_bin: Callable[[str], Path], tiny_models: dict[str, Path]
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.ensure_dirs()
    db = Database(settings.db_path)
    try:
        hw = Hardware((), 2, 16 * GiB, 12 * GiB)
        rt = Runtime(settings, db, hardware=hw, library=Library(db, hub_cache=tmp_path / "hf"))
        copies = []
        for name in ("a", "b"):  # two engines: the same build in two places
            d = tmp_path / name
            d.mkdir()
            shutil.copy2(rig_bin("llama-server"), d / "llama-server")
            copies.append(add_external(rt.engines, d / "llama-server", name=name))
        first, second = copies
        rt.engines.set_default(first.id)
        rt.configs.put(ModelConfig("m", str(tiny_models["llama"]), args=["-c", "512"]))
        await rt.sync()
        assert rt.prepared["m"].argv[0] == str(first.server)

        rt.engines.set_default(second.id)
        await rt.sync()  # what start runs now ...
        assert rt.prepared["m"].argv[0] == str(second.server)
        command = await StudioService(rt).command("m")
        assert command.argv[0] == str(second.server)  # ... is what the preview shows

        rebuilt = second.server
        rebuilt.write_bytes(rebuilt.read_bytes())  # a rebuild in place: new mtime, same id
        stale = rt.prepared["m"]
        await rt.sync()
        assert rt.prepared["m"] is not stale

        rt.engines.remove(second.id)  # the engine is gone: the model falls back to the default left
        await rt.sync()
        assert rt.prepared["m"].argv[0] == str(first.server)
    finally:
        db.close()
