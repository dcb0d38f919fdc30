"""Hugging Face transformers checkpoints (``config.json`` + ``*.safetensors`` shards), read from a
directory or over HTTP range requests: exact weight bytes per dtype, parameter count, and the
KV cache a token costs — what memory a model needs, before it is downloaded or loaded.

Pure: no FastAPI, nothing from the studio's upper layers.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamastudio.checkpoint.config import ArchFacts, arch_facts, dtype_label, quant_label
from llamastudio.checkpoint.remote import fetch_header, parse_json_object, read_remote
from llamastudio.checkpoint.safetensors import DTYPE_BITS, ShardHeader, parse_header, read_local
from llamastudio.errors import InvalidInput, NotFound

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SUFFIX = ".safetensors"
GGUF_MAGIC = b"GGUF"
_NUMBERED = re.compile(r"model-(\d{5})-of-(\d{5})\.safetensors")

__all__ = [
    "CONFIG",
    "DTYPE_BITS",
    "INDEX",
    "ArchFacts",
    "Checkpoint",
    "ShardHeader",
    "arch_facts",
    "choose_shards",
    "dtype_label",
    "fetch_header",
    "from_headers",
    "is_checkpoint",
    "parse_header",
    "quant_label",
    "read_checkpoint",
    "read_config",
    "read_local",
    "read_remote",
    "remote_checkpoint",
    "shard_names",
]


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's weights as its shard headers state them (exact), and its shape."""

    name: str  # the directory, or what the caller named a remote one
    arch: ArchFacts
    shards: list[str]  # paths or URLs, in order
    weight_bytes: int  # tensor data bytes, summed over every shard
    bytes_by_dtype: dict[str, int]
    params: int  # elements of every tensor (packed 4-bit formats count their packed words)
    tensors: int
    dtype: str  # the quantization's label (AWQ, FP8, ...), else the dtype holding most bytes

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """KV cache bytes one token of context costs: 2 (K and V) × layers × KV heads × head
        size × element size; for MLA (``kv_lora_rank``) the one compressed latent per layer."""
        a = self.arch
        if a.kv_lora_rank is not None:
            return a.layers * (a.kv_lora_rank + (a.qk_rope_head_dim or 0)) * dtype_bytes
        return 2 * a.layers * a.kv_heads * a.head_dim * dtype_bytes

    def facts(self) -> dict[str, Any]:
        """The library's facts for this checkpoint (``parameter_count`` and ``context_length``
        under the names the GGUF facts use too)."""
        a = self.arch
        return {
            "architecture": a.architecture,
            "params": self.params,
            "layers": a.layers,
            "kv_heads": a.kv_heads,
            "head_dim": a.head_dim,
            "ctx_train": a.ctx_train,
            "dtype": self.dtype,
            "weight_bytes": self.weight_bytes,
            "bytes_by_dtype": self.bytes_by_dtype,
            "kv_bytes_per_token": self.kv_bytes_per_token(),
            "parameter_count": self.params,
            "context_length": a.ctx_train,
        }


def from_headers(name: str, arch: ArchFacts, headers: Sequence[ShardHeader]) -> Checkpoint:
    """One checkpoint from its shards' headers; a tensor in two shards is refused."""
    seen: dict[str, str] = {}
    by_dtype: Counter[str] = Counter()
    for h in headers:
        for t in h.tensors:
            if t.name in seen:
                raise InvalidInput(f"{name}: tensor {t.name!r} is in both {seen[t.name]} and {h.name}")
            seen[t.name] = h.name
        by_dtype.update(h.bytes_by_dtype)
    weight_bytes = sum(h.data_bytes for h in headers)
    dominant = max(by_dtype.items(), key=lambda kv: kv[1])[0] if by_dtype else "?"
    return Checkpoint(
        name=name,
        arch=arch,
        shards=[h.name for h in headers],
        weight_bytes=weight_bytes,
        bytes_by_dtype=dict(by_dtype.most_common()),
        params=sum(h.params for h in headers),
        tensors=len(seen),
        dtype=arch.quant or dominant,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from exc
    return parse_json_object(str(path), data)


def read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG
    if not path.is_file():
        raise InvalidInput(f"{directory}: no config.json — not a transformers checkpoint")
    return _read_json(path)


def _index_shards(directory: Path) -> tuple[list[str], dict[str, list[str]]] | None:
    """(shard names, tensors per shard) from ``model.safetensors.index.json``, or None."""
    path = directory / INDEX
    if not path.is_file():
        return None
    weight_map = _read_json(path).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InvalidInput(f"{path}: no weight_map (tensor → shard file)")
    per_shard: dict[str, list[str]] = {}
    for tensor, shard in weight_map.items():
        parts = shard.split("/") if isinstance(shard, str) else []
        if not parts or not shard.endswith(SUFFIX) or any(p in ("", ".", "..") for p in parts):
            raise InvalidInput(f"{path}: tensor {tensor!r} maps to {shard!r}, not a shard file beside it")
        per_shard.setdefault(shard, []).append(tensor)
    return sorted(per_shard), per_shard


def choose_shards(names: Iterable[str]) -> list[str]:
    """Which of a directory's ``*.safetensors`` files form the checkpoint when no index says:
    transformers' ``model-0000i-of-0000n`` set (none when incomplete), else ``model.safetensors``,
    else all of them, sorted. A ``consolidated.safetensors`` beside transformers' files holds the
    same weights in another layout (Mistral's), not more of them."""
    every = sorted(n for n in names if n.endswith(SUFFIX))
    numbered = {n: m.group(1, 2) for n in every if (m := _NUMBERED.fullmatch(n))}
    if numbered:
        totals = {int(total) for _, total in numbered.values()}
        parts = {int(part) for part, _ in numbered.values()}
        complete = len(totals) == 1 and parts == set(range(1, totals.pop() + 1))
        return sorted(numbered) if complete else []
    return ["model.safetensors"] if "model.safetensors" in every else every


def shard_names(directory: Path) -> list[str]:
    """The shard files of a checkpoint directory: those its index names, else
    :func:`choose_shards` of its ``*.safetensors`` files."""
    indexed = _index_shards(directory)
    if indexed is not None:
        return indexed[0]
    return choose_shards(p.name for p in directory.glob(f"*{SUFFIX}") if p.is_file())


def is_checkpoint(directory: Path) -> bool:
    """Cheaply: a ``config.json`` and every shard present (the index read, no shard header)."""
    try:
        if not (directory / CONFIG).is_file():
            return False
        names = shard_names(directory)
    except InvalidInput:
        return (directory / INDEX).is_file()  # a broken index: listed, and its facts say why
    return bool(names) and all((directory / n).is_file() for n in names)


def _refuse_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            gguf = f.read(4) == GGUF_MAGIC
    except OSError:
        gguf = False
    if gguf or path.suffix == ".gguf":
        raise InvalidInput(f"{path} is a GGUF file, not a transformers checkpoint directory")


def read_checkpoint(directory: Path) -> Checkpoint:
    """A checkpoint directory: ``config.json`` and the header of every shard (the index's shards
    when ``model.safetensors.index.json`` is there — each must exist and hold the tensors the
    index puts in it)."""
    if directory.is_file():
        _refuse_gguf(directory)
        raise InvalidInput(f"{directory} is a file: give the checkpoint's directory (with config.json)")
    if not directory.is_dir():
        raise NotFound(f"{directory}: no such directory")
    arch = arch_facts(read_config(directory), str(directory / CONFIG))
    indexed = _index_shards(directory)
    names = indexed[0] if indexed else shard_names(directory)
    if not names:
        some = any(directory.glob(f"*{SUFFIX}"))
        what = "an incomplete set of model-i-of-n shards" if some else "no *.safetensors weights"
        raise InvalidInput(f"{directory}: config.json but {what}")
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise InvalidInput(f"{directory}: {INDEX} names shards that are missing: {', '.join(missing)}")
    headers = [read_local(directory / n) for n in names]
    if indexed:
        for h, n in zip(headers, names, strict=True):
            have = {t.name for t in h.tensors}
            absent = [t for t in indexed[1][n] if t not in have]
            if absent:
                raise InvalidInput(
                    f"{h.name}: {INDEX} puts {len(absent)} tensor(s) in it that it lacks (e.g. {absent[0]!r})"
                )
    return from_headers(str(directory), arch, headers)


def remote_checkpoint(
    config: Mapping[str, Any],
    shard_urls: Sequence[str],
    token: str | None = None,
    *,
    name: str = "",
    read_shard: Callable[[str], ShardHeader] | None = None,
) -> Checkpoint:
    """A remote checkpoint from its parsed ``config.json`` and its shards' URLs; each header is
    read with ``read_shard`` (default :func:`read_remote`: ≤ 2 range requests, ≤ 1 MiB)."""
    if not shard_urls:
        raise InvalidInput(f"{name or 'checkpoint'}: no *.safetensors shards")
    reader = read_shard or (lambda url: read_remote(url, token))
    arch = arch_facts(config, f"{name or 'remote'} config.json")
    return from_headers(name or shard_urls[0], arch, [reader(u) for u in shard_urls])
