"""safetensors shard headers: parsed and checked strictly, from a file or from its first bytes.

A shard is ``u64 N`` (little endian), ``N`` bytes of JSON, then the tensor data::

    {"<tensor>": {"dtype": "BF16", "shape": [4096, 4096], "data_offsets": [begin, end]}, ...,
     "__metadata__": {"format": "pt"}}

Offsets are relative to the end of the header. Everything here is checked as the format's own
loader checks it — offsets contiguous from 0 to the end of the file, each span exactly the bytes
its shape and dtype need — so the byte counts taken from a header are exact, and a corrupt or
hostile file is an :class:`InvalidInput` naming the file, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llamastudio.errors import InvalidInput, NotFound

MAX_HEADER = 100 * 1024 * 1024  # bytes of JSON the format allows (its own loader's limit)
METADATA = "__metadata__"

# bits per element of every dtype the format defines
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}


@dataclass(frozen=True, slots=True)
class Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # offsets into the data section (after the header)
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class ShardHeader:
    """One shard's tensor table. ``file_size``: the whole file's size (data included)."""

    name: str
    header_len: int
    file_size: int
    tensors: tuple[Tensor, ...]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def params(self) -> int:
        return sum(t.numel for t in self.tensors)

    @property
    def bytes_by_dtype(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for t in self.tensors:
            out[t.dtype] += t.nbytes
        return dict(out)


def header_length(name: str, first: bytes, file_size: int | None, limit: int = MAX_HEADER) -> int:
    """``N``, the JSON header's length, from the first 8 bytes; refused when it cannot be right."""
    if len(first) < 8:
        raise InvalidInput(f"{name}: only {len(first)} bytes, too short for a safetensors file")
    n = int.from_bytes(first[:8], "little")
    if n < 2:
        raise InvalidInput(f"{name}: header length {n} is too small for a safetensors header")
    if n > limit:
        raise InvalidInput(
            f"{name}: header length {n:,} bytes is over the {limit:,} byte limit "
            "(not a safetensors file, or a corrupt one)"
        )
    if file_size is not None and 8 + n > file_size:
        raise InvalidInput(
            f"{name}: header length {n:,} runs past the end of the file ({file_size:,} bytes): "
            "not a safetensors file, or a truncated one"
        )
    return n


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _count(value: object) -> bool:
    return type(value) is int and value >= 0


def _tensor(name: str, key: str, info: object) -> Tensor:
    where = f"{name}: tensor {key!r}"
    if not isinstance(info, dict):
        raise InvalidInput(f"{where}: expected an object with dtype, shape and data_offsets")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise InvalidInput(f"{where}: unknown dtype {dtype!r} (known: {', '.join(DTYPE_BITS)})")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise InvalidInput(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_count(o) for o in offsets):
        raise InvalidInput(f"{where}: data_offsets must be [begin, end], got {offsets!r}")
    begin, end = offsets
    if end < begin:
        raise InvalidInput(f"{where}: data_offsets end {end} is before begin {begin}")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise InvalidInput(
            f"{where}: data_offsets span {end - begin:,} bytes but shape {shape} of {dtype} "
            f"needs {bits / 8:,g}"
        )
    return Tensor(key, dtype, tuple(shape), begin, end)


def parse_header(name: str, data: bytes, file_size: int) -> ShardHeader:
    """The tensor table of a shard of ``file_size`` bytes whose first bytes are ``data`` (at
    least the 8-byte length and the whole JSON header)."""
    n = header_length(name, data, file_size)
    if len(data) < 8 + n:
        raise InvalidInput(f"{name}: truncated header ({len(data) - 8:,} of {n:,} bytes)")
    try:
        obj = json.loads(data[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InvalidInput(f"{name}: the safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise InvalidInput(f"{name}: the safetensors header is not a JSON object")
    metadata = obj.pop(METADATA, None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise InvalidInput(f"{name}: {METADATA} must be an object of strings")
    tensors = sorted((_tensor(name, k, v) for k, v in obj.items()), key=lambda t: (t.begin, t.end))
    expected = 0
    for t in tensors:
        if t.begin != expected:
            what = "a gap" if t.begin > expected else "an overlap"
            raise InvalidInput(
                f"{name}: tensor {t.name!r} starts at {t.begin:,}, expected {expected:,} "
                f"({what} in the data: tensors must be contiguous)"
            )
        expected = t.end
    data_size = file_size - 8 - n
    if expected > data_size:
        raise InvalidInput(
            f"{name}: tensor data runs past the end of the file (needs {expected:,} bytes after "
            f"the header, the file has {data_size:,})"
        )
    if expected < data_size:
        raise InvalidInput(f"{name}: {data_size - expected:,} bytes after the last tensor's data")
    return ShardHeader(name, n, file_size, tuple(tensors), dict(metadata))


def read_local(path: Path) -> ShardHeader:
    """The header of a shard on disk (only its first ``8 + N`` bytes are read)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            first = f.read(8)
            n = header_length(str(path), first, size)
            data = first + f.read(n)
    except FileNotFoundError as exc:
        raise NotFound(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InvalidInput(f"{path}: is a directory, not a safetensors file") from exc
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})") from exc
    return parse_header(str(path), data, size)
