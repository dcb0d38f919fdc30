"""Per-architecture rules llama.cpp hard-codes (sliding-window patterns, recurrent layers, state sizes).

Each entry mirrors a call in the pinned llama.cpp source (``src/models/<arch>.cpp``); an
architecture missing here gets no sliding window and no recurrent state, as in llama.cpp.
"""

from __future__ import annotations

from llamastudio.gguf import ModelFacts

# arch → (default pattern, dense_first), from load_swa_pattern(ml, N[, dense_first])
SWA_PATTERNS: dict[str, tuple[int, bool]] = {
    "afmoe": (4, False),
    "cohere2": (4, False),
    "cohere2moe": (4, True),
    "exaone-moe": (4, False),
    "exaone4": (4, False),
    "gemma-embedding": (6, False),
    "gemma2": (2, False),
    "gemma3": (6, False),
    "gemma3n": (5, False),
    "laguna": (4, True),
    "llama4": (4, False),
    "mellum": (4, False),
    "modern-bert": (3, True),
    "muse-glimmer": (4, False),
    "olmo2": (4, False),
    "gpt-oss": (2, False),
    "openai-moe": (2, False),
    "plamo3": (8, False),
    "smallthinker": (4, True),
}
PURE_RECURRENT = {"mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7"}
# hybrids whose recurrent layers are those with no KV heads (per-layer head_count_kv == 0)
HYBRID_BY_KV_HEADS = {
    "jamba",
    "granitehybrid",
    "lfm2",
    "lfm2moe",
    "plamo2",
    "kimi-linear",
    "kimi-k3",
    "bailingmoe3",
    "glm5-next",
}
# nemotron-h: a layer is a Mamba-2 mixer when it has neither KV heads nor an FFN (else attention or MLP)
HYBRID_BY_KV_HEADS_AND_FFN = {"nemotron_h", "nemotron_h_moe"}
# hybrids with an attention layer every `full_attention_interval` layers (default per arch), unless
# `attention.recurrent_layers` lists them
HYBRID_BY_INTERVAL = {"qwen3next": 4, "qwen35": 4, "qwen35moe": 4, "minimax-01": 8}


def swa_layers(f: ModelFacts) -> list[bool]:
    n = f.block_count
    if not f.sliding_window or f.architecture not in SWA_PATTERNS:
        return [False] * n
    pattern = f.sliding_window_pattern
    if isinstance(pattern, list):
        return [bool(x) for x in pattern[:n]] + [False] * max(0, n - len(pattern))
    n_pattern, dense_first = SWA_PATTERNS[f.architecture]
    if isinstance(pattern, int) and not isinstance(pattern, bool):
        n_pattern = pattern
    if dense_first:
        return [n_pattern == 0 or il % n_pattern != 0 for il in range(n)]
    return [n_pattern == 0 or il % n_pattern < n_pattern - 1 for il in range(n)]


def recurrent_layers(f: ModelFacts) -> list[bool]:
    n = f.block_count
    if f.architecture in PURE_RECURRENT or f.architecture == "falcon-h1":
        return [True] * n
    if f.architecture in HYBRID_BY_KV_HEADS:
        return [f.n_head_kv(il) == 0 for il in range(n)]
    if f.architecture in HYBRID_BY_KV_HEADS_AND_FFN:
        n_ff = f.feed_forward_length
        ffn = [n_ff[il] if isinstance(n_ff, list) and il < len(n_ff) else n_ff or 0 for il in range(n)]
        return [f.n_head_kv(il) == 0 and not ffn[il] for il in range(n)]
    if f.architecture in HYBRID_BY_INTERVAL:
        listed = f.arch_keys.get("recurrent_layers")
        if isinstance(listed, list):  # (arrays longer than the facts' preview are summarised)
            return [bool(x) for x in listed[:n]] + [False] * max(0, n - len(listed))
        interval = int(f.arch_keys.get("full_attention_interval") or HYBRID_BY_INTERVAL[f.architecture])
        return [(il + 1) % interval != 0 for il in range(n)]
    return [False] * n


def attention_layers(f: ModelFacts) -> list[bool]:
    """Layers with a KV cache: not recurrent-only, with KV heads, not MTP/shared-KV layers."""
    rec = recurrent_layers(f)
    n_kv_layers = f.block_count - int(f.arch_keys.get("nextn_predict_layers") or 0)
    shared = int(f.arch_keys.get("shared_kv_layers") or 0)
    n_kv_layers = min(n_kv_layers, f.block_count - shared) if shared else n_kv_layers
    out = []
    for il in range(f.block_count):
        has_kv = f.n_head_kv(il) > 0 and il < n_kv_layers
        out.append(has_kv and (not rec[il] or f.architecture == "falcon-h1"))
    return out


def recurrent_state_floats(f: ModelFacts) -> tuple[int, int]:
    """(n_embd_r, n_embd_s): conv/shift state and SSM/WKV state, in F32 values per sequence."""
    wkv = f.arch_keys.get("wkv_head_size")
    if wkv:
        shift = int(f.arch_keys.get("token_shift_count") or 2)
        return shift * f.embedding_length, f.embedding_length * int(wkv)
    l_cache = f.arch_keys.get("shortconv_l_cache")
    if l_cache:
        return f.embedding_length * (int(l_cache) - 1), 0
    d_conv = f.ssm_conv_kernel or 0
    d_inner = f.ssm_inner_size or 0
    d_state = f.ssm_state_size or 0
    n_group = f.ssm_group_count or 0
    n_conv = (d_conv - 1 if d_conv > 0 else 0) * (d_inner + 2 * n_group * d_state)
    return n_conv, d_state * d_inner
