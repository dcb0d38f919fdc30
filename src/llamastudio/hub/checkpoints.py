"""Safetensors (transformers) repos on the Hub: the checkpoint at a repo's root, its memory before
download, and the files a pull of it takes.

Memory comes from ``config.json`` (one GET) and each shard's header (≤ 2 range requests and
≤ 1 MiB per shard, see ``checkpoint.remote``), both cached on disk per URL — a URL names the
commit, so what it holds never changes. Which shards form the checkpoint is read from the file
list alone (``checkpoint.choose_shards``: transformers' ``model-0000i-of-0000n.safetensors``, the
names its ``model.safetensors.index.json`` uses), so no index has to be fetched.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamastudio.checkpoint import (
    CONFIG,
    Checkpoint,
    ShardHeader,
    choose_shards,
    fetch_header,
    parse_header,
    remote_checkpoint,
)
from llamastudio.checkpoint.config import checkpoint_label
from llamastudio.checkpoint.remote import fetch_bytes, parse_json_object
from llamastudio.errors import InvalidInput, NotFound, StudioError
from llamastudio.hardware import Hardware
from llamastudio.hub.client import FORMATS, HubClient
from llamastudio.hub.quants import RepoFile
from llamastudio.hub.remote import HeaderCache

GPU_SHARE = 0.9  # of each GPU's memory a safetensors engine takes by default (vLLM's utilization)
GiB = 1 << 30
MAX_SHARDS = 2000  # a remote checkpoint's shards read before download (DeepSeek V3: 163); a list
# longer than this is refused, not answered with thousands of range requests

# what a pull of a checkpoint takes besides its shards: configs, tokenizer, chat template — never
# other weight formats (*.bin, *.pt, *.gguf, onnx/), nor code (*.py)
_COMPANION = re.compile(
    r"config\.json|generation_config\.json|tokenizer(?:_config)?\.json|tokenizer\.model"
    r"|special_tokens_map\.json|added_tokens\.json|vocab\.(?:json|txt)|merges\.txt|[\w.-]+\.tiktoken"
    r"|chat_template[\w.-]*\.(?:json|jinja)|(?:video_)?preprocessor_config\.json|processor_config\.json"
    r"|model\.safetensors\.index\.json"
)


def check_format(fmt: str | None) -> str | None:
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"format {fmt!r}: choose from {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class RepoCheckpoint:
    """The checkpoint at a repo's root: its config, shards in order, and companion files."""

    config: RepoFile
    shards: list[RepoFile]
    companions: list[RepoFile]  # config.json, tokenizer, chat template, index ...

    @property
    def files(self) -> list[RepoFile]:
        return [*self.companions, *self.shards]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def find_checkpoint(files: list[RepoFile]) -> RepoCheckpoint | None:
    """The checkpoint at the repo's root (``config.json`` + complete shards), or None."""
    root = [f for f in files if "/" not in f.path]
    config = next((f for f in root if f.path == CONFIG), None)
    by_name = {f.path: f for f in root}
    shards = [by_name[n] for n in choose_shards(by_name)]
    if config is None or not shards:
        return None
    if len(shards) > MAX_SHARDS:
        raise InvalidInput(f"{len(shards):,} shards: more than the {MAX_SHARDS:,} a checkpoint is read with")
    companions = sorted((f for f in root if _COMPANION.fullmatch(f.path)), key=lambda f: f.path)
    return RepoCheckpoint(config, shards, companions)


def require_checkpoint(repo: str, files: list[RepoFile]) -> RepoCheckpoint:
    found = find_checkpoint(files)
    if found is None:
        root = {f.path for f in files if "/" not in f.path}
        if CONFIG not in root:
            why = "no config.json"
        elif any(n.endswith(".safetensors") for n in root):
            why = "an incomplete set of model-i-of-n shards"
        else:
            why = "no *.safetensors weights"
        raise InvalidInput(
            f"{repo} has no safetensors checkpoint at its root ({why}; a transformers checkpoint "
            "is config.json + *.safetensors)"
        )
    return found


def select_checkpoint(
    repo: str, files: list[RepoFile], quant: str | None, label: Callable[[], str] | None = None
) -> list[RepoFile]:
    """The files a pull of the repo's checkpoint takes; a ``quant`` given must be its label
    (``label`` reads it from config.json, only when a quant is given)."""
    ck = require_checkpoint(repo, files)
    if quant is not None:
        have = label() if label is not None else checkpoint_label({}, repo)
        if have.lower() != quant.lower():
            raise NotFound(f"no variant {quant!r} in {repo} (its checkpoint is listed as {have})")
    return ck.files


def _cached_bytes(cache: HeaderCache, url: str, token: str | None) -> bytes:
    hit = cache.get(url)
    if hit is None:
        data = fetch_bytes(url, token)
        cache.save(url, data, len(data))
        return data
    return hit[0]


def _cached_header(cache: HeaderCache, token: str | None) -> Callable[[str], ShardHeader]:
    def read(url: str) -> ShardHeader:
        hit = cache.get(url)
        if hit is None:
            fetched = fetch_header(url, token)
            cache.save(url, fetched.data, fetched.size)
            hit = (fetched.data, fetched.size)
        return parse_header(url, *hit)

    return read


def remote_config(client: HubClient, repo: str, revision: str, cache: HeaderCache) -> dict[str, Any]:
    url = client.url(repo, CONFIG, revision)
    return parse_json_object(f"{repo}/{CONFIG}", _cached_bytes(cache, url, client.token))


def checkpoint_fit(ck: Checkpoint, hw: Hardware) -> dict[str, Any]:
    """Whether the weights fit, and how many tokens of KV cache (16-bit) the rest holds: on the
    GPUs (their memory × ``GPU_SHARE``, summed: tensor parallel), else in RAM. An engine's
    activations and graphs are not counted: a lower bound on what it needs."""
    budget = int(sum(g.total for g in hw.gpus) * GPU_SHARE) if hw.gpus else hw.ram_total
    where = f"{len(hw.gpus)} GPU(s) ({GPU_SHARE:.0%} of their memory)" if hw.gpus else "RAM"
    need = ck.weight_bytes
    if need >= budget:
        detail = f"weights need {need / GiB:.2f} GiB; {where} hold {budget / GiB:.2f} GiB"
        return {"fit": "no", "detail": detail, "max_context": 0, "args": []}
    per_token = ck.kv_bytes_per_token()
    tokens = (budget - need) // per_token if per_token else 0
    ctx = min(tokens, ck.arch.ctx_train) if ck.arch.ctx_train else tokens
    fit = "full" if hw.gpus else "cpu"
    detail = f"weights {need / GiB:.2f} GiB + KV cache for {ctx:,} tokens fit in {where}"
    return {"fit": fit, "detail": detail, "max_context": ctx, "args": []}


def memory_row(ck: Checkpoint) -> dict[str, Any]:
    return {
        "weight_bytes": ck.weight_bytes,
        "bytes_by_dtype": ck.bytes_by_dtype,
        "params": ck.params,
        "dtype": ck.dtype,
        "kv_bytes_per_token": ck.kv_bytes_per_token(),
        "architecture": ck.arch.architecture,
        "layers": ck.arch.layers,
        "kv_heads": ck.arch.kv_heads,
        "head_dim": ck.arch.head_dim,
        "ctx_train": ck.arch.ctx_train,
    }


def checkpoint_table(
    client: HubClient, repo: str, files: list[RepoFile], revision: str, hw: Hardware, cache: HeaderCache
) -> list[dict[str, Any]]:
    """One row per variant — the repo's root checkpoint — in the shape of the GGUF quant rows,
    plus its memory (exact weight bytes, parameters, KV bytes per token). A row that cannot be
    read says why (``fit: unknown``) rather than failing the table."""
    ck = require_checkpoint(repo, files)
    row: dict[str, Any] = {
        "quant": "safetensors",
        "format": "safetensors",
        "size": ck.size,
        "files": [f.path for f in ck.files],
        "mmproj": [],
    }
    try:
        config = remote_config(client, repo, revision, cache)
        row["quant"] = checkpoint_label(config, repo)
        urls = [client.url(repo, f.path, revision) for f in ck.shards]
        found = remote_checkpoint(config, urls, name=repo, read_shard=_cached_header(cache, client.token))
        row |= memory_row(found) | checkpoint_fit(found, hw)
    except StudioError as exc:
        row |= {"fit": "unknown", "detail": exc.message, "max_context": 0, "args": []}
    return [row]
