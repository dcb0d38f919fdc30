"""Tiny real GGUF models for the tests, written with ``gguf.GGUFWriter``.

Each architecture mirrors the tensor set llama.cpp's ``load_arch_tensors`` creates for it
(``src/models/<arch>.cpp`` in the pinned source), at toy sizes, with random weights and the
SentencePiece vocabulary shipped in the source tree (``models/ggml-vocab-llama-spm.gguf``).
They load and generate (garbage) tokens in the real llama-server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from llamastudio.gguf import load_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    scores: list[float]
    types: list[int]
    bos: int
    eos: int
    unk: int

    @classmethod
    def from_gguf(cls, path: Path) -> Vocab:
        meta = load_model(str(path)).metadata
        return cls(
            meta["tokenizer.ggml.tokens"],
            meta["tokenizer.ggml.scores"],
            meta["tokenizer.ggml.token_type"],
            meta["tokenizer.ggml.bos_token_id"],
            meta["tokenizer.ggml.eos_token_id"],
            meta["tokenizer.ggml.unknown_token_id"],
        )


class _Model:
    """Collects tensors (numpy shape = reversed ggml ne) and writes them with GGUFWriter."""

    def __init__(self, arch: str, n_embd: int, vocab: Vocab, seed: int) -> None:
        self.arch = arch
        self.n_embd = n_embd
        self.vocab = vocab
        self.rng = np.random.default_rng(seed)
        self.tensors: list[tuple[str, np.ndarray]] = []

    def mat(self, name: str, *ne: int, f32: bool = False) -> None:
        data = self.rng.standard_normal(tuple(reversed(ne)), dtype=np.float32) * 0.02
        self.tensors.append((name, data if f32 else data.astype(np.float16)))

    def vec(self, name: str, *ne: int, value: float | None = 1.0) -> None:
        shape = tuple(reversed(ne))
        data = (
            np.full(shape, value, dtype=np.float32)
            if value is not None
            else self.rng.standard_normal(shape, dtype=np.float32) * 0.02
        )
        self.tensors.append((name, data))

    def embed_and_output(self, tied: bool = False) -> None:
        n_vocab = len(self.vocab.tokens)
        self.mat("token_embd.weight", self.n_embd, n_vocab)
        self.vec("output_norm.weight", self.n_embd)
        if not tied:
            self.mat("output.weight", self.n_embd, n_vocab)

    def write(
        self,
        path: Path,
        configure: Callable[[gguf.GGUFWriter], None],
        split_max_tensors: int = 0,
        chat_template: bool = True,  # False: a base model (no tokenizer.chat_template)
    ) -> None:
        w = gguf.GGUFWriter(path, self.arch, split_max_tensors=split_max_tensors)
        w.add_name(f"tiny-{self.arch}")
        w.add_basename(f"tiny-{self.arch}")
        w.add_size_label("tiny")
        w.add_license("mit")
        w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
        w.add_context_length(4096)
        w.add_embedding_length(self.n_embd)
        w.add_layer_norm_rms_eps(1e-6)
        configure(w)
        v = self.vocab
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(v.tokens)
        w.add_token_scores(v.scores)
        w.add_token_types(v.types)
        w.add_bos_token_id(v.bos)
        w.add_eos_token_id(v.eos)
        w.add_unk_token_id(v.unk)
        w.add_add_bos_token(True)
        if chat_template:
            w.add_chat_template(CHATML)
        self.finish(w)

    def finish(self, w: gguf.GGUFWriter) -> None:
        """Add the collected tensors to ``w`` (its metadata set) and write the file."""
        for name, data in self.tensors:
            w.add_tensor(name, data)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def _attention(m: _Model, i: int, n_head: int, n_head_kv: int, head_dim: int, qk_norm: bool) -> None:
    e = m.n_embd
    m.vec(f"blk.{i}.attn_norm.weight", e)
    m.mat(f"blk.{i}.attn_q.weight", e, n_head * head_dim)
    m.mat(f"blk.{i}.attn_k.weight", e, n_head_kv * head_dim)
    m.mat(f"blk.{i}.attn_v.weight", e, n_head_kv * head_dim)
    m.mat(f"blk.{i}.attn_output.weight", n_head * head_dim, e)
    if qk_norm:
        m.vec(f"blk.{i}.attn_q_norm.weight", head_dim)
        m.vec(f"blk.{i}.attn_k_norm.weight", head_dim)


def _ffn(m: _Model, i: int, n_ff: int) -> None:
    e = m.n_embd
    m.vec(f"blk.{i}.ffn_norm.weight", e)
    m.mat(f"blk.{i}.ffn_gate.weight", e, n_ff)
    m.mat(f"blk.{i}.ffn_up.weight", e, n_ff)
    m.mat(f"blk.{i}.ffn_down.weight", n_ff, e)


def _dense(arch: str, n_embd: int, n_layer: int, n_head: int, n_head_kv: int, n_ff: int, qk_norm: bool):  # type: ignore[no-untyped-def]
    def build(path: Path, vocab: Vocab, split: int = 0, chat_template: bool = True) -> None:
        m = _Model(arch, n_embd, vocab, seed=1)
        head_dim = n_embd // n_head
        m.embed_and_output()
        for i in range(n_layer):
            _attention(m, i, n_head, n_head_kv, head_dim, qk_norm)
            _ffn(m, i, n_ff)

        def cfg(w: gguf.GGUFWriter) -> None:
            w.add_block_count(n_layer)
            w.add_feed_forward_length(n_ff)
            w.add_head_count(n_head)
            w.add_head_count_kv(n_head_kv)
            w.add_rope_dimension_count(head_dim)
            w.add_rope_freq_base(10000.0)
            if qk_norm:
                w.add_key_length(head_dim)
                w.add_value_length(head_dim)

        m.write(path, cfg, split, chat_template=chat_template)

    return build


def build_gemma3(path: Path, vocab: Vocab, split: int = 0) -> None:
    """Sliding-window attention: 6 layers, llama.cpp's default pattern (5 SWA + 1 full)."""
    n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff = 128, 6, 4, 2, 32, 256
    m = _Model("gemma3", n_embd, vocab, seed=2)
    m.embed_and_output(tied=True)
    for i in range(n_layer):
        _attention(m, i, n_head, n_head_kv, head_dim, qk_norm=True)
        m.vec(f"blk.{i}.post_attention_norm.weight", n_embd)
        _ffn(m, i, n_ff)
        m.vec(f"blk.{i}.post_ffw_norm.weight", n_embd)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(128)
        w.add_rope_freq_base(1_000_000.0)

    m.write(path, cfg, split)


def build_qwen3moe(path: Path, vocab: Vocab, split: int = 0) -> None:
    n_embd, n_layer, n_head, n_head_kv, head_dim, n_expert, n_used, n_ff_exp = 128, 2, 4, 2, 32, 4, 2, 64
    m = _Model("qwen3moe", n_embd, vocab, seed=3)
    m.embed_and_output()
    for i in range(n_layer):
        _attention(m, i, n_head, n_head_kv, head_dim, qk_norm=True)
        m.vec(f"blk.{i}.ffn_norm.weight", n_embd)
        m.mat(f"blk.{i}.ffn_gate_inp.weight", n_embd, n_expert, f32=True)
        m.mat(f"blk.{i}.ffn_gate_exps.weight", n_embd, n_ff_exp, n_expert)
        m.mat(f"blk.{i}.ffn_up_exps.weight", n_embd, n_ff_exp, n_expert)
        m.mat(f"blk.{i}.ffn_down_exps.weight", n_ff_exp, n_embd, n_expert)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff_exp * n_used)
        w.add_expert_feed_forward_length(n_ff_exp)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_used)
        w.add_rope_freq_base(1_000_000.0)

    m.write(path, cfg, split)


def build_deepseek2(path: Path, vocab: Vocab, split: int = 0) -> None:
    """MLA attention (kv_lora_rank + rope dims cached, K only), one dense lead layer then MoE."""
    n_embd, n_layer, n_head = 128, 2, 4
    q_lora, kv_lora, rope, nope, v_head = 64, 32, 16, 32, 32
    n_expert, n_used, n_shared, n_ff, n_ff_exp = 4, 2, 1, 256, 64
    m = _Model("deepseek2", n_embd, vocab, seed=4)
    m.embed_and_output()
    for i in range(n_layer):
        m.vec(f"blk.{i}.attn_norm.weight", n_embd)
        m.vec(f"blk.{i}.attn_q_a_norm.weight", q_lora)
        m.vec(f"blk.{i}.attn_kv_a_norm.weight", kv_lora)
        m.mat(f"blk.{i}.attn_q_a.weight", n_embd, q_lora)
        m.mat(f"blk.{i}.attn_q_b.weight", q_lora, n_head * (nope + rope))
        m.mat(f"blk.{i}.attn_kv_a_mqa.weight", n_embd, kv_lora + rope)
        m.mat(f"blk.{i}.attn_k_b.weight", nope, kv_lora, n_head)
        m.mat(f"blk.{i}.attn_v_b.weight", kv_lora, v_head, n_head)
        m.mat(f"blk.{i}.attn_output.weight", n_head * v_head, n_embd)
        m.vec(f"blk.{i}.ffn_norm.weight", n_embd)
        if i == 0:
            m.mat(f"blk.{i}.ffn_gate.weight", n_embd, n_ff)
            m.mat(f"blk.{i}.ffn_up.weight", n_embd, n_ff)
            m.mat(f"blk.{i}.ffn_down.weight", n_ff, n_embd)
        else:
            m.mat(f"blk.{i}.ffn_gate_inp.weight", n_embd, n_expert, f32=True)
            m.mat(f"blk.{i}.ffn_gate_exps.weight", n_embd, n_ff_exp, n_expert)
            m.mat(f"blk.{i}.ffn_up_exps.weight", n_embd, n_ff_exp, n_expert)
            m.mat(f"blk.{i}.ffn_down_exps.weight", n_ff_exp, n_embd, n_expert)
            m.mat(f"blk.{i}.ffn_gate_shexp.weight", n_embd, n_ff_exp * n_shared)
            m.mat(f"blk.{i}.ffn_up_shexp.weight", n_embd, n_ff_exp * n_shared)
            m.mat(f"blk.{i}.ffn_down_shexp.weight", n_ff_exp * n_shared, n_embd)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(1)
        w.add_key_length(kv_lora + rope)
        w.add_value_length(kv_lora)
        w.add_key_length_mla(nope + rope)
        w.add_value_length_mla(v_head)
        w.add_q_lora_rank(q_lora)
        w.add_kv_lora_rank(kv_lora)
        w.add_rope_dimension_count(rope)
        w.add_rope_freq_base(10000.0)
        w.add_leading_dense_block_count(1)
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_used)
        w.add_expert_shared_count(n_shared)
        w.add_expert_feed_forward_length(n_ff_exp)
        w.add_expert_weights_scale(1.0)

    m.write(path, cfg, split)


def build_mamba(path: Path, vocab: Vocab, split: int = 0) -> None:
    """Recurrent (Mamba-1): no KV cache, a fixed-size recurrent state per sequence."""
    n_embd, n_layer, d_inner, d_state, d_conv, dt_rank = 64, 2, 128, 16, 4, 4
    m = _Model("mamba", n_embd, vocab, seed=5)
    m.embed_and_output()
    for i in range(n_layer):
        m.vec(f"blk.{i}.attn_norm.weight", n_embd)
        m.mat(f"blk.{i}.ssm_in.weight", n_embd, 2 * d_inner, f32=True)
        m.mat(f"blk.{i}.ssm_conv1d.weight", d_conv, d_inner, f32=True)
        m.vec(f"blk.{i}.ssm_conv1d.bias", d_inner, value=None)
        m.mat(f"blk.{i}.ssm_x.weight", d_inner, dt_rank + 2 * d_state, f32=True)
        m.mat(f"blk.{i}.ssm_dt.weight", dt_rank, d_inner, f32=True)
        m.vec(f"blk.{i}.ssm_dt.bias", d_inner, value=None)
        m.vec(f"blk.{i}.ssm_a", d_state, d_inner, value=-1.0)
        m.vec(f"blk.{i}.ssm_d", d_inner)
        m.mat(f"blk.{i}.ssm_out.weight", d_inner, n_embd, f32=True)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(d_state)
        w.add_ssm_time_step_rank(dt_rank)

    m.write(path, cfg, split)


def _mamba2_mixer(
    m: _Model, i: int, d_inner: int, d_state: int, d_conv: int, n_group: int, n_head: int
) -> None:
    """Mamba-2 mixer tensors, as llama_model_mamba2::load_arch_tensors creates them."""
    conv_dim = d_inner + 2 * n_group * d_state
    m.mat(f"blk.{i}.ssm_in.weight", m.n_embd, d_inner + conv_dim + n_head)
    m.mat(f"blk.{i}.ssm_conv1d.weight", d_conv, conv_dim, f32=True)
    m.vec(f"blk.{i}.ssm_conv1d.bias", conv_dim, value=None)
    m.vec(f"blk.{i}.ssm_dt.bias", n_head, value=None)
    m.vec(f"blk.{i}.ssm_a", 1, n_head, value=-1.0)
    m.vec(f"blk.{i}.ssm_d", 1, n_head)
    m.vec(f"blk.{i}.ssm_norm.weight", d_inner // n_group, n_group)
    m.mat(f"blk.{i}.ssm_out.weight", d_inner, m.n_embd)


def build_mamba2(path: Path, vocab: Vocab, split: int = 0) -> None:
    """Recurrent (Mamba-2): multi-head SSM with grouped B/C, a grouped RMS norm, no KV cache."""
    n_embd, n_layer, d_inner, d_state, d_conv, n_group, n_head = 128, 2, 256, 32, 4, 2, 8
    m = _Model("mamba2", n_embd, vocab, seed=6)
    m.embed_and_output()
    for i in range(n_layer):
        m.vec(f"blk.{i}.attn_norm.weight", n_embd)
        _mamba2_mixer(m, i, d_inner, d_state, d_conv, n_group, n_head)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(0)
        w.add_head_count(0)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(d_state)
        w.add_ssm_time_step_rank(n_head)
        w.add_ssm_group_count(n_group)

    m.write(path, cfg, split)


def build_granitehybrid(path: Path, vocab: Vocab, split: int = 0) -> None:
    """Hybrid attention + Mamba-2 (Granite-4.0-H style): a layer is recurrent iff its KV head count
    is 0; here layers 0, 1 and 3 are Mamba-2 mixers and layer 2 attends (GQA, RoPE); dense FFNs."""
    n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff = 128, 4, 4, 2, 32, 256
    d_inner, d_state, d_conv, n_group, n_ssm_head = 2 * n_embd, 16, 4, 1, 8
    kv_heads = [0, 0, n_head_kv, 0]
    m = _Model("granitehybrid", n_embd, vocab, seed=7)
    m.embed_and_output()
    for i in range(n_layer):
        if kv_heads[i]:
            _attention(m, i, n_head, n_head_kv, head_dim, qk_norm=False)
        else:
            m.vec(f"blk.{i}.attn_norm.weight", n_embd)
            _mamba2_mixer(m, i, d_inner, d_state, d_conv, n_group, n_ssm_head)
        _ffn(m, i, n_ff)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(kv_heads)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(10000.0)
        w.add_ssm_conv_kernel(d_conv)
        w.add_ssm_inner_size(d_inner)
        w.add_ssm_state_size(d_state)
        w.add_ssm_time_step_rank(n_ssm_head)
        w.add_ssm_group_count(n_group)
        w.add_embedding_scale(12.0)
        w.add_residual_scale(0.22)
        w.add_logit_scale(8.0)
        w.add_attention_scale(1.0 / head_dim)

    m.write(path, cfg, split)


def build_gptoss(path: Path, vocab: Vocab, split: int = 0) -> None:
    """gpt-oss: alternating sliding-window and full attention with per-head sinks, biased MoE
    (softmax over the chosen experts' logits, SwiGLU-OAI), post-attention norm."""
    n_embd, n_layer, n_head, n_head_kv, head_dim, n_expert, n_used, n_ff_exp = 128, 2, 4, 2, 32, 4, 2, 64
    m = _Model("gpt-oss", n_embd, vocab, seed=8)
    m.embed_and_output()
    for i in range(n_layer):
        _attention(m, i, n_head, n_head_kv, head_dim, qk_norm=False)
        m.vec(f"blk.{i}.attn_output.bias", n_embd, value=None)
        m.vec(f"blk.{i}.attn_sinks.weight", n_head, value=None)
        m.vec(f"blk.{i}.post_attention_norm.weight", n_embd)
        m.mat(f"blk.{i}.ffn_gate_inp.weight", n_embd, n_expert, f32=True)
        m.vec(f"blk.{i}.ffn_gate_inp.bias", n_expert, value=None)
        for name, ne in (
            ("gate", (n_embd, n_ff_exp)),
            ("up", (n_embd, n_ff_exp)),
            ("down", (n_ff_exp, n_embd)),
        ):
            m.mat(f"blk.{i}.ffn_{name}_exps.weight", *ne, n_expert)
            m.vec(f"blk.{i}.ffn_{name}_exps.bias", ne[1], n_expert, value=None)

    def cfg(w: gguf.GGUFWriter) -> None:
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff_exp)
        w.add_expert_feed_forward_length(n_ff_exp)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(150000.0)
        w.add_expert_count(n_expert)
        w.add_expert_used_count(n_used)
        w.add_sliding_window(128)

    m.write(path, cfg, split)


BUILDERS: dict[str, Callable[..., None]] = {
    "llama": _dense("llama", 256, 2, 8, 2, 512, qk_norm=False),
    "qwen3": _dense("qwen3", 128, 2, 4, 2, 256, qk_norm=True),
    "gemma3": build_gemma3,
    "qwen3moe": build_qwen3moe,
    "deepseek2": build_deepseek2,
    "mamba": build_mamba,
    "mamba2": build_mamba2,
    "granitehybrid": build_granitehybrid,
    # Llama-3-style 128-wide heads (GQA 2:1): quantized KV caches get llama.cpp's Hadamard rotation
    "llama-h128": _dense("llama", 256, 2, 2, 1, 512, qk_norm=False),
    "gpt-oss": build_gptoss,
}
ARCHS = tuple(BUILDERS)
