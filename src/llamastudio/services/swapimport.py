"""Import and export of whole configs (llama-swap ``config.yaml``, ``--models-preset`` INI) as the
service runs them: parse, check, then store everything in one transaction — all or none.

A llama-swap import also stores its ``apiKeys`` and top-level keys (``serving/swapstate.py``) in
the same transaction, and checks its ``peers`` before anything is stored (they are saved right
after, through the peer registry). A watched config file (``configwatch.py``) imports with
``source="file:<path>"``: the models it defines are owned by it, and the ones it no longer
defines are removed in the same transaction. Blocking (database, files): run in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from llamastudio.errors import InvalidInput, NotFound
from llamastudio.runtime.manager import Runtime
from llamastudio.serving import peer_store, swapstate
from llamastudio.serving.configs import ModelConfig
from llamastudio.serving.interop import SwapImport, export_llama_swap, read_llama_swap
from llamastudio.serving.launch import read_header
from llamastudio.serving.peers import PeerSpec

Permit = Callable[[ModelConfig], None]


@dataclass
class Imported:
    """What an import did (the API's answer)."""

    imported: list[str]
    removed: list[str] = field(default_factory=list)  # owned by the file, no longer in it
    ignored: list[dict[str, str]] = field(default_factory=list)  # {"key", "why"}: kept, not applied
    api_keys: int | None = None  # keys now accepted by the gateway from the import (None: unchanged)
    peers: list[PeerSpec] | None = None  # the peers it defines (None: it has no `peers`)
    preload: list[str] = field(default_factory=list)  # hooks.on_startup.preload

    def to_json(self) -> dict[str, Any]:
        return {
            "imported": self.imported,
            "removed": self.removed,
            "ignored": self.ignored,
            "api_keys": self.api_keys,
            "peers": None if self.peers is None else [p.name for p in self.peers],
            "preload": self.preload,
        }


def parse(runtime: Runtime, fmt: str, text: str, env: Mapping[str, str] | None = None) -> SwapImport:
    """``env``: what ``${env.X}`` reads (None: the studio's own environment)."""
    if fmt == "llama-swap":
        return read_llama_swap(text, runtime.launcher.engines.all(), os.environ if env is None else env)
    return SwapImport(configs=runtime.launcher.parse_import(fmt, text))


def store(
    runtime: Runtime,
    fmt: str,
    text: str,
    permit: Permit,
    source: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Imported:
    """Parse ``text``, check it all, store it all (one transaction). Blocking."""
    found = parse(runtime, fmt, text, env)
    for cfg in found.configs:
        cfg.source = source
        permit(cfg)
    peers = None if found.peers is None else [peer_store.check(p) for p in found.peers]
    keys = found.api_keys
    names = {c.name for c in found.configs}
    remove = []
    if source is not None:
        remove = [c.name for c in runtime.configs.stored() if c.source == source and c.name not in names]

    def also(s: Session) -> None:
        if keys is not None:
            swapstate.write(s, swapstate.API_KEYS, keys)
        if fmt == "llama-swap":
            swapstate.merge(s, swapstate.SETTINGS, found.settings)

    runtime.configs.put_many(found.configs, remove=remove, also=also)
    if peers is not None:
        peer_store.save(runtime.db, peer_store.IMPORTED, peers)
    return Imported(
        imported=[c.name for c in found.configs],
        removed=remove,
        ignored=found.ignored,
        api_keys=None if keys is None else len(keys),
        peers=peers,
        preload=[c.name for c in found.configs if c.preload],
    )


REDACTED = "${env.LLAMASTUDIO_REDACTED_KEY}"  # a peer's apiKey in an export without the secrets


def export(runtime: Runtime, fmt: str, secrets: bool = True) -> str:
    """Stored configurations as llama-swap ``config.yaml`` (with the imported ``apiKeys``,
    ``peers`` and top-level keys) or a ``--models-preset`` INI. Without ``secrets`` (an API caller
    without the command permission: the keys may come from the owner's ``${env.X}``), ``apiKeys``
    is left out (an import without it keeps the stored ones) and each peer's ``apiKey`` is
    ``REDACTED`` (an unset ``${env.X}``: importing the file back fails instead of dropping it)."""
    if fmt != "llama-swap":
        return runtime.launcher.export_configs(fmt, runtime.hw)
    configs = runtime.configs.stored()
    if not configs:
        raise NotFound("no stored model configurations to export")
    library = runtime.library.models(with_facts=False)  # listed once for all of them
    try:
        argv = {c.name: runtime.launcher.prepare(c, runtime.hw, library).portable_argv() for c in configs}
    finally:
        read_header.cache_clear()
    peers = peer_store.load(runtime.db, peer_store.IMPORTED)
    if not secrets:
        peers = [replace(p, api_key=REDACTED) if p.api_key else p for p in peers]
    return export_llama_swap(
        configs,
        argv,
        api_keys=swapstate.api_keys(runtime.db) if secrets else None,
        peers=peers,
        settings=swapstate.settings(runtime.db),
    )


def check_format(fmt: str) -> None:
    if fmt not in ("llama-swap", "preset"):
        raise InvalidInput(f"format {fmt!r}: llama-swap or preset")
