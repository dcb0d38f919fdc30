"""Builders of malformed GGUF bytes, one per class of bad input the reader must reject."""

from __future__ import annotations

import struct

import gguf

VT = gguf.GGUFValueType


def s(text: str) -> bytes:
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def kv_u32(key: str, value: int) -> bytes:
    return s(key) + struct.pack("<II", VT.UINT32, value)


def tensor(name: str, shape: tuple[int, ...], qtype: int, offset: int) -> bytes:
    return (
        s(name)
        + struct.pack("<I", len(shape))
        + b"".join(struct.pack("<Q", d) for d in shape)
        + struct.pack("<IQ", qtype, offset)
    )


def valid() -> bytes:
    """A complete, minimal GGUF: one key, one F32 tensor of 8 values, aligned data."""
    body = header(1, 2) + s("general.architecture") + struct.pack("<I", VT.STRING) + s("llama")
    body += kv_u32("llama.block_count", 1)
    body += tensor("output_norm.weight", (8,), gguf.GGMLQuantizationType.F32, 0)
    body += b"\0" * (-len(body) % 32)
    return body + b"\0" * 32


CASES: dict[str, tuple[bytes, str]] = {
    "empty file": (b"", "truncated"),
    "truncated header": (valid()[:30], "truncated"),
    "truncated tensor data": (valid()[:-8], "past the end"),
    "wrong magic": (b"GGML" + valid()[4:], "not a GGUF file"),
    "unsupported version 1": (header(0, 0, version=1), "version 1 is not supported"),
    "unsupported version 99": (header(0, 0, version=99), "version 99 is not supported"),
    "string length 2^60": (header(0, 1) + struct.pack("<Q", 1 << 60) + b"key" + b"\0" * 32, "key length"),
    "value string length 2^60": (
        header(0, 1) + s("k") + struct.pack("<IQ", VT.STRING, 1 << 60) + b"\0" * 32,
        "value of .k. length",
    ),
    "2^40 tensors": (header(1 << 40, 0), "tensor count"),
    "2^60 metadata keys": (header(0, 1 << 60), "metadata key count"),
    "array of 2^50 elements": (
        header(0, 1) + s("a") + struct.pack("<IIQ", VT.ARRAY, VT.UINT32, 1 << 50),
        "array",
    ),
    "array of 2^50 strings": (
        header(0, 1) + s("a") + struct.pack("<IIQ", VT.ARRAY, VT.STRING, 1 << 50),
        "array",
    ),
    "unknown value type": (
        header(0, 1) + s("k") + struct.pack("<I", 77) + b"\0" * 16,
        "unknown value type 77",
    ),
    "unknown array item type": (
        header(0, 1) + s("k") + struct.pack("<IIQ", VT.ARRAY, 99, 1),
        "unknown value type 99",
    ),
    "tensor offset past end": (
        header(1, 0) + tensor("t", (8,), 0, 1 << 40) + b"\0" * 64,
        "past the end of the file",
    ),
    "tensor with 5 dims": (header(1, 0) + tensor("t", (1, 1, 1, 1, 1), 0, 0) + b"\0" * 64, "5 dimensions"),
    "unknown ggml type": (header(1, 0) + tensor("t", (8,), 250, 0) + b"\0" * 64, "unknown ggml type 250"),
    "absurd tensor shape": (
        header(1, 0) + tensor("t", (1 << 40, 1 << 40), 0, 0) + b"\0" * 64,
        "absurd shape",
    ),
    "duplicate key": (header(0, 2) + kv_u32("k", 1) + kv_u32("k", 2), "duplicate metadata key"),
    "bad alignment": (header(0, 1) + kv_u32("general.alignment", 3), "power of two"),
    "nested arrays too deep": (
        header(0, 1)
        + s("a")
        + struct.pack("<IIQ", VT.ARRAY, VT.ARRAY, 1)
        + struct.pack("<IQ", VT.ARRAY, 1)
        + struct.pack("<IQ", VT.UINT8, 1)
        + b"\0",
        "nested deeper",
    ),
}
