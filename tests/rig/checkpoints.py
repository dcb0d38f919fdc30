"""Tiny transformers checkpoints for the tests: ``config.json`` + several ``*.safetensors`` shards
in mixed dtypes, with the numbers a reader must find computed independently here.

F32/F16/I32 shards are written with the ``safetensors`` package's numpy API (the real writer);
numpy has no bfloat16 or float8, so BF16/F8 shards are built by hand exactly as the format says
(``u64`` header length, JSON header padded with spaces to 8 bytes, contiguous data). Writers for
broken files (bad length, non-JSON, offsets past the end, unknown dtype) sit beside them.
"""

from __future__ import annotations

import json
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

BITS = {"F64": 64, "F32": 32, "F16": 16, "BF16": 16, "I64": 64, "I32": 32, "I16": 16, "I8": 8,
        "U8": 8, "BOOL": 8, "F8_E4M3": 8, "F8_E5M2": 8}  # fmt: skip
NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
         "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}  # fmt: skip

Spec = tuple[str, str, tuple[int, ...]]  # tensor name, dtype, shape

CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
}


def layer(i: int, dtype: str, norm: str = "F32") -> list[Spec]:
    p = f"model.layers.{i}"
    return [
        (f"{p}.self_attn.q_proj.weight", dtype, (64, 64)),
        (f"{p}.self_attn.k_proj.weight", dtype, (32, 64)),
        (f"{p}.self_attn.v_proj.weight", dtype, (32, 64)),
        (f"{p}.self_attn.o_proj.weight", dtype, (64, 64)),
        (f"{p}.mlp.gate_proj.weight", dtype, (128, 64)),
        (f"{p}.mlp.up_proj.weight", dtype, (128, 64)),
        (f"{p}.mlp.down_proj.weight", dtype, (64, 128)),
        (f"{p}.input_layernorm.weight", norm, (64,)),
        (f"{p}.post_attention_layernorm.weight", norm, (64,)),
    ]


# three shards, three writers' worth of dtypes: F16 + F32 (numpy API), BF16 + F32 + I32 (by hand),
# F8_E4M3 + F32 scales + F16 head (by hand)
SHARDS: list[list[Spec]] = [
    [("model.embed_tokens.weight", "F16", (128, 64)), *layer(0, "F16")],
    [*layer(1, "BF16"), ("model.layers.1.counts", "I32", (7,)), ("model.norm.weight", "F32", (64,))],
    [("lm_head.weight", "F8_E4M3", (128, 64)), ("lm_head.weight_scale", "F32", (1,)),
     ("model.rotary.inv_freq", "F16", (16,))],
]  # fmt: skip


def nbytes(spec: Spec) -> int:
    return math.prod(spec[2]) * BITS[spec[1]] // 8


@dataclass
class Expected:
    """What a reader must report, computed from the specs (not from any header)."""

    weight_bytes: int
    params: int
    bytes_by_dtype: dict[str, int]
    tensors: int
    shards: list[Path] = field(default_factory=list)


def expected(shards: list[list[Spec]]) -> Expected:
    by_dtype: Counter[str] = Counter()
    for spec in (s for shard in shards for s in shard):
        by_dtype[spec[1]] += nbytes(spec)
    specs = [s for shard in shards for s in shard]
    return Expected(
        weight_bytes=sum(nbytes(s) for s in specs),
        params=sum(math.prod(s[2]) for s in specs),
        bytes_by_dtype=dict(by_dtype),
        tensors=len(specs),
    )


def header_bytes(header: dict[str, Any], pad_to: int = 8) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % pad_to)
    return struct.pack("<Q", len(raw)) + raw


def write_raw(path: Path, specs: list[Spec], metadata: dict[str, str] | None = None, seed: int = 0) -> Path:
    """A shard built by hand: any dtype, random data bytes, contiguous offsets in spec order."""
    rng = np.random.default_rng(seed)
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, dtype, shape in specs:
        size = nbytes((name, dtype, shape))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    path.write_bytes(header_bytes(header) + rng.bytes(offset))
    return path


def write_numpy(path: Path, specs: list[Spec], seed: int = 0) -> Path:
    """A shard written by the ``safetensors`` package from numpy arrays (numpy dtypes only)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray[Any, Any]] = {
        name: rng.standard_normal(shape).astype(NUMPY[dtype]) for name, dtype, shape in specs
    }
    save_file(arrays, str(path), metadata={"format": "pt"})
    return path


def write_checkpoint(
    directory: Path,
    shards: list[list[Spec]] | None = None,
    config: dict[str, Any] | None = None,
    *,
    index: bool = True,
    metadata: dict[str, str] | None = None,
) -> Expected:
    """``config.json``, tokenizer files and ``model-0000i-of-0000n.safetensors`` shards (plus
    ``model.safetensors.index.json`` with ``index``); shards whose dtypes numpy has are written
    with the safetensors package, the others by hand."""
    shards = SHARDS if shards is None else shards
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(CONFIG if config is None else config))
    (directory / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"}}')
    (directory / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (directory / "generation_config.json").write_text('{"do_sample": false}')
    out = expected(shards)
    weight_map: dict[str, str] = {}
    for i, specs in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors" if len(shards) > 1 else "model.safetensors"
        path = directory / name
        if metadata is None and all(dtype in NUMPY for _, dtype, _ in specs):
            write_numpy(path, specs, seed=i)
        else:
            write_raw(path, specs, metadata, seed=i)
        out.shards.append(path)
        weight_map |= {s[0]: name for s in specs}
    if index and len(shards) > 1:
        total = {"total_size": out.weight_bytes}
        (directory / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": total, "weight_map": weight_map})
        )
    return out


# -- broken shards ----------------------------------------------------------------------------
def write_bad_length(path: Path) -> Path:
    """A header length far past the end of the file."""
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    return path


def write_not_json(path: Path) -> Path:
    path.write_bytes(header_bytes({}).replace(b"{}", b"{x"))
    return path


def write_past_eof(path: Path) -> Path:
    """Offsets that need 4096 bytes of data where the file holds 16."""
    header = {"w": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}
    path.write_bytes(header_bytes(header) + bytes(16))
    return path


def write_unknown_dtype(path: Path) -> Path:
    header = {"w": {"dtype": "Q4_K", "shape": [4], "data_offsets": [0, 4]}}
    path.write_bytes(header_bytes(header) + bytes(4))
    return path


def write_big_header(path: Path, header_size: int) -> Path:
    """A valid one-tensor shard whose JSON header is about ``header_size`` bytes (metadata pad)."""
    specs: list[Spec] = [("w", "F32", (4,))]
    base = len(header_bytes({"__metadata__": {"pad": ""}, "w": {}}))
    return write_raw(path, specs, {"pad": "x" * max(0, header_size - base - 64)})
