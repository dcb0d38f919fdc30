"""Adding Ollama's and LM Studio's models to the studio, in place (``hub/foreign.py`` finds them).

Each model found becomes a stored configuration under its store's name (``ollama/qwen3:8b``,
``lmstudio/<publisher>/<file>``) whose model is the file itself — an Ollama blob, an LM Studio
GGUF — never copied; an LM Studio directory is also added to the library (its projectors are
found there). All are stored in one transaction, or none (``ModelConfigs.put_many``); a manifest
that cannot be used is listed in ``skipped`` with the reason, and a store with none usable is a 400.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from pydantic import Field

from llamastudio.errors import InvalidInput
from llamastudio.hub import foreign
from llamastudio.services.snapshots import Snapshot
from llamastudio.services.studio import Permit, StudioService, allow_all
from llamastudio.serving.configs import ModelConfig


class ForeignEntry(Snapshot):
    name: str
    path: str = Field(description="The file served in place (never copied).")
    args: list[str] = Field(description="llama-server flags taken from the store's parameters.")
    notes: list[str] = Field(description="What llama-server cannot take from the store, and why.")


class Skipped(Snapshot):
    what: str
    why: str


class ForeignResult(Snapshot):
    source: str
    root: str
    models: list[ForeignEntry]
    skipped: list[Skipped]
    added: bool = Field(description="False for a preview (nothing stored).")


def _result(found: foreign.Found, source: str, added: bool) -> ForeignResult:
    return ForeignResult(
        source=source,
        root=found.root,
        models=[ForeignEntry(name=m.name, path=m.path, args=m.args, notes=m.notes) for m in found.models],
        skipped=[Skipped(what=w, why=y) for w, y in found.skipped],
        added=added,
    )


async def preview(source: str, root: Path | None) -> ForeignResult:
    """What ``add_foreign`` would add (nothing is stored)."""
    return _result(await asyncio.to_thread(foreign.discover, source, root), source, False)


async def add_foreign(
    service: StudioService, source: str, root: Path | None = None, permit: Permit = allow_all
) -> ForeignResult:
    """Discover the store and store a configuration for each usable model (all or none)."""
    runtime = service.runtime

    def work() -> foreign.Found:
        found = foreign.discover(source, root)
        if not found.models:
            why = "; ".join(f"{w}: {y}" for w, y in found.skipped[:5])
            raise InvalidInput(f"{found.root}: no usable {source} GGUF model" + (f" ({why})" if why else ""))
        configs = [
            ModelConfig(name=m.name, model=m.path, args=m.args, auto=True, configured=True)
            for m in found.models
        ]
        for cfg in configs:
            permit(cfg)
        runtime.configs.put_many(configs)
        if source == foreign.LMSTUDIO:  # only once the configurations are stored (all or none)
            runtime.library.add(Path(found.root))  # in place: the directory is remembered, not copied
        return found

    found = await asyncio.to_thread(work)
    await service.refresh()
    return _result(found, source, True)
