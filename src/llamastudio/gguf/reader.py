"""GGUF header parser: metadata and tensor table, never tensor data.

Works on any :class:`ByteSource`. Every length and count read from the file is checked against
the bytes that remain before anything is allocated, so a hostile or corrupt file (a string of
2^60 bytes, 2^40 tensors, an array of 2^50 elements) fails fast with a :class:`GGUFError` in
bounded memory and time. Key names, value types and quant block sizes come from the ``gguf``
package.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import gguf
import numpy as np

from llamastudio.errors import GGUFError, GGUFUnsupported
from llamastudio.gguf.source import ByteSource

GGML_MAX_DIMS = 4
MAX_ARRAY_DEPTH = 2
VT = gguf.GGUFValueType
_SCALAR_FORMATS: dict[VT, str] = {
    VT.UINT8: "B",
    VT.INT8: "b",
    VT.UINT16: "H",
    VT.INT16: "h",
    VT.UINT32: "I",
    VT.INT32: "i",
    VT.FLOAT32: "f",
    VT.BOOL: "?",
    VT.UINT64: "Q",
    VT.INT64: "q",
    VT.FLOAT64: "d",
}
_NP_TYPES: dict[VT, str] = {
    VT.UINT8: "u1",
    VT.INT8: "i1",
    VT.UINT16: "u2",
    VT.INT16: "i2",
    VT.UINT32: "u4",
    VT.INT32: "i4",
    VT.FLOAT32: "f4",
    VT.BOOL: "?",
    VT.UINT64: "u8",
    VT.INT64: "i8",
    VT.FLOAT64: "f8",
}
# Smallest encoding of one value of each kind: used to reject counts the file cannot hold.
_MIN_SIZE: dict[VT, int] = {t: struct.calcsize(f) for t, f in _SCALAR_FORMATS.items()}
_MIN_SIZE[VT.STRING] = 8
_MIN_SIZE[VT.ARRAY] = 12
_MIN_TENSOR_INFO = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset
_MIN_KV = 8 + 4 + 1


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: ne[0] first
    ggml_type: gguf.GGMLQuantizationType
    offset: int  # relative to the data section of its file
    n_elements: int
    n_bytes: int
    part: int = 0  # index of the split file holding it

    @property
    def type_name(self) -> str:
        return self.ggml_type.name


@dataclass(slots=True)
class GGUFHeader:
    """Everything before the tensor data of one GGUF file."""

    name: str
    version: int
    byte_order: str  # "<" or ">"
    file_size: int
    metadata: dict[str, Any]
    value_types: dict[str, VT]
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = gguf.GGUF_DEFAULT_ALIGNMENT
    data_offset: int = 0


class _Cursor:
    def __init__(self, src: ByteSource, order: str) -> None:
        self.src = src
        self.pos = 0
        self.order = order

    @property
    def remaining(self) -> int:
        return self.src.size - self.pos if self.src.size >= 0 else 1 << 62

    def take(self, n: int) -> bytes:
        data = self.src.read(self.pos, n)
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(self.order + fmt, self.take(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int(self.unpack("I"))

    def u64(self) -> int:
        return int(self.unpack("Q"))

    def check_count(self, count: int, min_each: int, what: str) -> None:
        if count < 0 or count * min_each > self.remaining:
            raise GGUFError(
                f"{self.src.name}: {what} count {count} at offset {self.pos} cannot fit in the "
                f"{max(self.remaining, 0)} bytes left in the file (truncated or corrupt)"
            )

    def string(self, what: str = "string") -> str:
        n = self.u64()
        self.check_count(n, 1, f"{what} length")
        return self.take(n).decode("utf-8", errors="replace")


def _value_type(cur: _Cursor, raw: int, key: str) -> VT:
    try:
        return VT(raw)
    except ValueError:
        raise GGUFError(f"{cur.src.name}: unknown value type {raw} for key {key!r}") from None


def _read_value(cur: _Cursor, vtype: VT, key: str, depth: int = 0) -> Any:
    if vtype == VT.STRING:
        return cur.string(f"value of {key!r}")
    if vtype != VT.ARRAY:
        value = cur.unpack(_SCALAR_FORMATS[vtype])
        return bool(value) if vtype == VT.BOOL else value
    if depth >= MAX_ARRAY_DEPTH:
        raise GGUFError(f"{cur.src.name}: arrays nested deeper than {MAX_ARRAY_DEPTH} in {key!r}")
    item_type = _value_type(cur, cur.u32(), key)
    count = cur.u64()
    cur.check_count(count, _MIN_SIZE[item_type], f"array {key!r} element")
    if item_type in _NP_TYPES:
        dtype = np.dtype(cur.order + _NP_TYPES[item_type])
        data = np.frombuffer(cur.take(count * dtype.itemsize), dtype=dtype)
        return data.tolist()
    return [_read_value(cur, item_type, key, depth + 1) for _ in range(count)]


def _tensor_bytes(
    src: str, name: str, shape: tuple[int, ...], qtype: gguf.GGMLQuantizationType
) -> tuple[int, int]:
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for dim in shape:
        n *= dim
    if n >= 1 << 62:
        raise GGUFError(f"{src}: tensor {name!r} has an absurd shape {list(shape)}")
    if shape and shape[0] % block:
        raise GGUFError(
            f"{src}: tensor {name!r} row of {shape[0]} is not a multiple of {qtype.name}'s block {block}"
        )
    return n, n // block * type_size


def _read_tensor(cur: _Cursor, part: int) -> TensorInfo:
    name = cur.string("tensor name")
    n_dims = cur.u32()
    if not 1 <= n_dims <= GGML_MAX_DIMS:
        raise GGUFError(
            f"{cur.src.name}: tensor {name!r} has {n_dims} dimensions (1..{GGML_MAX_DIMS} allowed)"
        )
    shape = tuple(cur.u64() for _ in range(n_dims))
    raw_type = cur.u32()
    try:
        qtype = gguf.GGMLQuantizationType(raw_type)
        gguf.GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise GGUFUnsupported(f"{cur.src.name}: tensor {name!r} has unknown ggml type {raw_type}") from None
    offset = cur.u64()
    n_elements, n_bytes = _tensor_bytes(cur.src.name, name, shape, qtype)
    return TensorInfo(name, shape, qtype, offset, n_elements, n_bytes, part)


def read_header(src: ByteSource, part: int = 0) -> GGUFHeader:
    """Parse magic, version, metadata and tensor table of ``src``."""
    magic = src.read(0, 4)
    if magic != b"GGUF":
        # never echo the bytes: the file may be any readable file (a secret), and this message
        # reaches /v1/models and the library listing
        raise GGUFError(f"{src.name}: not a GGUF file (it does not start with the GGUF magic)")
    raw_version = src.read(4, 4)
    order = "<"
    version = struct.unpack("<I", raw_version)[0]
    if version & 0xFFFF == 0 and version != 0:  # a big-endian file read as little-endian
        order, version = ">", struct.unpack(">I", raw_version)[0]
    if version not in (2, 3):
        raise GGUFUnsupported(f"{src.name}: GGUF version {version} is not supported (2 and 3 are)")
    cur = _Cursor(src, order)
    cur.pos = 8
    n_tensors = cur.u64()
    n_kv = cur.u64()
    cur.check_count(n_kv, _MIN_KV, "metadata key")
    cur.check_count(n_tensors, _MIN_TENSOR_INFO, "tensor")

    metadata: dict[str, Any] = {}
    types: dict[str, VT] = {}
    for _ in range(n_kv):
        key = cur.string("key")
        vtype = _value_type(cur, cur.u32(), key)
        if key in metadata:
            raise GGUFError(f"{src.name}: duplicate metadata key {key!r}")
        metadata[key] = _read_value(cur, vtype, key)
        types[key] = vtype

    header = GGUFHeader(src.name, version, order, src.size, metadata, types)
    alignment = metadata.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise GGUFError(f"{src.name}: general.alignment {alignment!r} is not a power of two")
    header.alignment = alignment

    seen: set[str] = set()
    for _ in range(n_tensors):
        info = _read_tensor(cur, part)
        if info.name in seen:
            raise GGUFError(f"{src.name}: duplicate tensor {info.name!r}")
        seen.add(info.name)
        header.tensors.append(info)

    header.data_offset = -(-cur.pos // alignment) * alignment
    _check_offsets(header)
    return header


def _check_offsets(header: GGUFHeader) -> None:
    if header.file_size < 0:
        return
    data_size = header.file_size - header.data_offset
    for t in header.tensors:
        if t.offset % header.alignment:
            raise GGUFError(
                f"{header.name}: tensor {t.name!r} offset {t.offset} is not aligned to {header.alignment}"
            )
        if t.offset + t.n_bytes > data_size:
            raise GGUFError(
                f"{header.name}: tensor {t.name!r} data ends at {header.data_offset + t.offset + t.n_bytes}, "
                f"past the end of the file ({header.file_size} bytes)"
            )
