"""Measured memory for ``llamastudio estimate``: the figure a studio recorded for the same load.

The CLI's estimate is of a model file and flags, not of a configuration; the load it stands for is
keyed like the runtime's (``fit/measured.py``): the file's identity, the data directory's default
llama.cpp engine, the argv that engine would run with these flags, the devices. When the studio
has loaded exactly that, its measurement is shown beside the estimate.
"""

from __future__ import annotations

from llamastudio.config import Settings
from llamastudio.engines.command import build_command
from llamastudio.engines.registry import EngineRegistry
from llamastudio.errors import StudioError
from llamastudio.fit.estimator import Estimate
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.loadkey import engine_build
from llamastudio.fit.measured import plan_memory
from llamastudio.gguf import GGUFModel
from llamastudio.runtime.measured import MeasuredStore
from llamastudio.services.snapshots import MemoryView
from llamastudio.store import Database


def measured_estimate(
    settings: Settings, model: GGUFModel, flags: ServerFlags, est: Estimate, companions: list[GGUFModel]
) -> MemoryView | None:
    """The studio's measurement of this load (blocking: file and database reads); None when the
    data directory has none (no database, no llama.cpp engine, a remote file, never loaded)."""
    if not settings.db_path.exists():
        return None
    db = Database(settings.db_path)
    try:
        engine = EngineRegistry(db, settings.engines_dir).default()
        if engine is None:
            return None
        try:
            argv = build_command(engine, model.location, flags, "127.0.0.1", 0).argv
        except StudioError:  # the engine cannot run these flags: nothing it could have measured
            return None
        reserve = {d.name: d.total for d in est.devices if d.total}
        build = engine_build(engine.id, engine.server)
        plan = plan_memory(model, companions, build, argv, est, reserve, manual=False)
        if plan is None:
            return None
        plan.measured = MeasuredStore(db).get(plan.key)
        return MemoryView.model_validate(plan.to_json()) if plan.measured is not None else None
    finally:
        db.close()
