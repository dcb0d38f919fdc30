"""A repo's detail before download: every GGUF quant, or its safetensors checkpoint, each with its
size, memory and fit on the hardware, read from headers only (range requests, cached on disk)."""

from __future__ import annotations

from typing import Any

from llamastudio.errors import InvalidInput
from llamastudio.hardware import Hardware
from llamastudio.hub.checkpoints import checkpoint_table
from llamastudio.hub.client import HubClient
from llamastudio.hub.download import repo_format
from llamastudio.hub.quants import group_files
from llamastudio.hub.remote import HeaderCache, quant_table


def repo_detail(
    client: HubClient,
    repo: str,
    revision: str | None,
    hw: Hardware,
    cache: HeaderCache,
    fmt: str | None = None,
) -> dict[str, Any]:
    """``{repo, revision (the commit), format, quants: rows}``. ``fmt``: ``gguf`` or
    ``safetensors``; None: GGUF when the repo has GGUF files, else its checkpoint. Blocking."""
    sha, files = client.files(repo, revision)
    kind = repo_format(files, fmt)
    if kind == "safetensors":
        rows = checkpoint_table(client, repo, files, sha, hw, cache)
    else:
        groups = group_files(files)
        if not groups:
            also = "" if fmt else " and no safetensors checkpoint (config.json + *.safetensors)"
            raise InvalidInput(f"{repo} has no GGUF files{also}")
        rows = [row | {"format": "gguf"} for row in quant_table(client, repo, groups, sha, hw, cache)]
    return {"repo": repo, "revision": sha, "format": kind, "quants": rows}
