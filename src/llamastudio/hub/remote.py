"""Fit before download: read each quant's GGUF header through the Hub's resolve URL (range
requests, token sent), cache it per (repo, revision, file), and plan it on the hardware."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llamastudio.errors import DoesNotFit, StudioError
from llamastudio.fit.planner import plan
from llamastudio.fsutil import write_atomic
from llamastudio.gguf import GGUFModel, load_model
from llamastudio.gguf.source import ByteSource, BytesSource, HttpSource
from llamastudio.hardware import Hardware
from llamastudio.hub.client import HubClient
from llamastudio.hub.quants import QuantGroup


class HeaderCache:
    """Fetched header prefixes on disk — GGUF headers, safetensors headers, small files such as a
    checkpoint's config.json — keyed by URL (which names repo, revision and file)."""

    def __init__(self, root: Path, token: str | None) -> None:
        self.root = root
        self.token = token

    def _path(self, url: str) -> Path:
        return self.root / hashlib.sha256(url.encode()).hexdigest()

    def get(self, url: str) -> tuple[bytes, int] | None:
        """(the bytes saved for ``url``, the whole file's size), or None when not cached."""
        path = self._path(url)
        meta = path.with_suffix(".json")
        if path.exists() and meta.exists():
            return path.read_bytes(), int(json.loads(meta.read_text())["size"])
        return None

    def open(self, url: str) -> ByteSource:
        hit = self.get(url)
        if hit is not None:
            return BytesSource(url, *hit)
        return _SavingSource(url, self.token, self)

    def save(self, url: str, data: bytes, size: int) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._path(url)
        for target, payload in (
            (path, data),
            (path.with_suffix(".json"), json.dumps({"size": size}).encode()),
        ):
            write_atomic(target, payload)  # a reader never sees half a header


class _SavingSource(HttpSource):
    def __init__(self, url: str, token: str | None, cache: HeaderCache) -> None:
        super().__init__(url, token=token)
        self._cache = cache

    def close(self) -> None:
        self._cache.save(self.name, self.fetched, self.size)
        super().close()


def remote_model(
    client: HubClient, repo: str, revision: str, group: QuantGroup, cache: HeaderCache
) -> GGUFModel:
    return load_model(client.url(repo, group.first.path, revision), opener=cache.open)


def fit_summary(model: GGUFModel, hw: Hardware) -> dict[str, Any]:
    """How the model fits: fully, with experts or layers on the CPU, CPU only, or not at all."""
    try:
        p = plan(model, hw, goal="max-context")
    except DoesNotFit as exc:
        return {"fit": "no", "detail": exc.message, "max_context": 0, "args": []}
    f = p.flags
    if not hw.gpus:
        fit, detail = "cpu", "runs on the CPU"
    elif f.n_gpu_layers == 0:
        fit, detail = "cpu", "no layer fits on the GPUs: CPU only"
    elif f.n_cpu_moe:
        fit, detail = "moe-offload", f"fits with experts of {f.n_cpu_moe} layers on the CPU"
    elif f.n_gpu_layers >= 0:
        fit, detail = "partial", f"fits with {f.n_gpu_layers} layers on the GPUs"
    else:
        fit, detail = "full", "fits entirely on the GPUs"
    return {"fit": fit, "detail": detail, "max_context": p.estimate.context.n_ctx, "args": f.to_args()}


def quant_table(
    client: HubClient, repo: str, groups: list[QuantGroup], revision: str, hw: Hardware, cache: HeaderCache
) -> list[dict[str, Any]]:
    rows = []
    for g in groups:
        row: dict[str, Any] = {
            "quant": g.label,
            "size": g.size,
            "files": [f.path for f in g.files],
            "mmproj": [f.path for f in g.mmproj],
        }
        try:
            row |= fit_summary(remote_model(client, repo, revision, g, cache), hw)
        except StudioError as exc:
            row |= {"fit": "unknown", "detail": exc.message, "max_context": 0, "args": []}
        rows.append(row)
    return rows
