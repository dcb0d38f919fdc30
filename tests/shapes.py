"""Header-only models with real shapes: GGUF metadata + tensor tables, no file, no weights.

Lets the estimator and planner be tested on full-size models (Qwen3-14B, Llama-3-70B, a 30B MoE,
gpt-oss, DeepSeek-R1) exactly as they would be read from a Hub header.
"""

from __future__ import annotations

from typing import Any

import gguf

from llamastudio.gguf import GGUFModel
from llamastudio.gguf.reader import GGUFHeader, TensorInfo

Q = gguf.GGMLQuantizationType


def _tensor(name: str, shape: tuple[int, ...], qtype: Q, offset: int) -> TensorInfo:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return TensorInfo(name, shape, qtype, offset, n, n // block * size)


def synthetic(arch: str, meta: dict[str, Any], tensors: list[tuple[str, tuple[int, ...], Q]]) -> GGUFModel:
    infos, offset = [], 0
    for name, shape, qtype in tensors:
        t = _tensor(name, shape, qtype, offset)
        infos.append(t)
        offset += -(-t.n_bytes // 32) * 32
    metadata = {
        "general.architecture": arch,
        **{f"{arch}.{k}" if not k.startswith(("general.", "tokenizer.")) else k: v for k, v in meta.items()},
    }
    header = GGUFHeader(f"synthetic:{arch}", 3, "<", offset, metadata, {}, infos, 32, 0)
    return GGUFModel(location=header.name, parts=[header])


def transformer(
    arch: str,
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    head_dim: int,
    n_ff: int,
    vocab: int,
    ctx: int,
    wtype: Q = Q.Q4_K,
    n_expert: int = 0,
    n_expert_used: int = 0,
    n_ff_exp: int = 0,
    extra: dict[str, Any] | None = None,
    tied: bool = False,
) -> GGUFModel:
    """A llama-style dense or MoE transformer with the given shapes."""
    q, kv = n_head * head_dim, n_head_kv * head_dim
    tensors: list[tuple[str, tuple[int, ...], Q]] = [("token_embd.weight", (n_embd, vocab), wtype)]
    if not tied:
        tensors.append(("output.weight", (n_embd, vocab), Q.Q6_K))
    tensors.append(("output_norm.weight", (n_embd,), Q.F32))
    for i in range(n_layer):
        tensors += [
            (f"blk.{i}.attn_norm.weight", (n_embd,), Q.F32),
            (f"blk.{i}.ffn_norm.weight", (n_embd,), Q.F32),
            (f"blk.{i}.attn_q.weight", (n_embd, q), wtype),
            (f"blk.{i}.attn_k.weight", (n_embd, kv), wtype),
            (f"blk.{i}.attn_v.weight", (n_embd, kv), wtype),
            (f"blk.{i}.attn_output.weight", (q, n_embd), wtype),
        ]
        if n_expert:
            tensors += [
                (f"blk.{i}.ffn_gate_inp.weight", (n_embd, n_expert), Q.F32),
                (f"blk.{i}.ffn_gate_exps.weight", (n_embd, n_ff_exp, n_expert), wtype),
                (f"blk.{i}.ffn_up_exps.weight", (n_embd, n_ff_exp, n_expert), wtype),
                (f"blk.{i}.ffn_down_exps.weight", (n_ff_exp, n_embd, n_expert), wtype),
            ]
        else:
            tensors += [
                (f"blk.{i}.ffn_gate.weight", (n_embd, n_ff), wtype),
                (f"blk.{i}.ffn_up.weight", (n_embd, n_ff), wtype),
                (f"blk.{i}.ffn_down.weight", (n_ff, n_embd), wtype),
            ]
    meta: dict[str, Any] = {
        "block_count": n_layer,
        "embedding_length": n_embd,
        "feed_forward_length": n_ff,
        "attention.head_count": n_head,
        "attention.head_count_kv": n_head_kv,
        "attention.key_length": head_dim,
        "attention.value_length": head_dim,
        "context_length": ctx,
        "vocab_size": vocab,
    }
    if n_expert:
        meta |= {
            "expert_count": n_expert,
            "expert_used_count": n_expert_used,
            "expert_feed_forward_length": n_ff_exp,
        }
    return synthetic(arch, meta | (extra or {}), tensors)


def qwen3_14b() -> GGUFModel:
    return transformer(
        "qwen3",
        n_layer=40,
        n_embd=5120,
        n_head=40,
        n_head_kv=8,
        head_dim=128,
        n_ff=17408,
        vocab=151936,
        ctx=40960,
        wtype=Q.Q6_K,
    )


def qwen3_30b_a3b(wtype: Q = Q.Q8_0) -> GGUFModel:
    return transformer(
        "qwen3moe",
        n_layer=48,
        n_embd=2048,
        n_head=32,
        n_head_kv=4,
        head_dim=128,
        n_ff=6144,
        vocab=151936,
        ctx=262144,
        wtype=wtype,
        n_expert=128,
        n_expert_used=8,
        n_ff_exp=768,
    )


def llama3_8b(wtype: Q = Q.Q4_K) -> GGUFModel:
    return transformer(
        "llama",
        n_layer=32,
        n_embd=4096,
        n_head=32,
        n_head_kv=8,
        head_dim=128,
        n_ff=14336,
        vocab=128256,
        ctx=131072,
        wtype=wtype,
    )


def llama3_70b(wtype: Q = Q.Q4_K) -> GGUFModel:
    return transformer(
        "llama",
        n_layer=80,
        n_embd=8192,
        n_head=64,
        n_head_kv=8,
        head_dim=128,
        n_ff=28672,
        vocab=128256,
        ctx=131072,
        wtype=wtype,
    )


def gpt_oss_20b() -> GGUFModel:
    return transformer(
        "gpt-oss",
        n_layer=24,
        n_embd=2880,
        n_head=64,
        n_head_kv=8,
        head_dim=64,
        n_ff=2880,
        vocab=201088,
        ctx=131072,
        wtype=Q.MXFP4,
        n_expert=32,
        n_expert_used=4,
        n_ff_exp=2880,
        extra={"attention.sliding_window": 128},
    )


def deepseek_r1() -> GGUFModel:
    """MLA: K cache holds kv_lora_rank + rope dims (576) per token, one KV head, no V."""
    return transformer(
        "deepseek2",
        n_layer=61,
        n_embd=7168,
        n_head=128,
        n_head_kv=1,
        head_dim=576,
        n_ff=18432,
        vocab=129280,
        ctx=163840,
        wtype=Q.Q4_K,
        n_expert=256,
        n_expert_used=8,
        n_ff_exp=2048,
        extra={
            "attention.value_length": 512,
            "attention.kv_lora_rank": 512,
            "attention.key_length_mla": 192,
            "attention.value_length_mla": 128,
            "rope.dimension_count": 64,
            "leading_dense_block_count": 3,
        },
    )
