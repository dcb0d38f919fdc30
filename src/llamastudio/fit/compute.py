"""Compute-buffer model.

llama.cpp sizes a compute buffer as ggml-alloc's peak over the worst-case graph (``n_ubatch``
tokens against the full KV cache). There is no closed form; this model follows the graph's shape:
the KQ masks live through the whole graph, and the peak is reached either in attention, in the FFN,
or at the output. Per-token coefficients were fitted on the real binary (CPU backend, pinned
llama.cpp) with ``bench/estimate_accuracy.py``, which prints the error of every category:

    masks      = n_kv·n_ub·2 per distinct mask with flash attention (F16), ·4 without (F32)
    attention  = 4·n_ub·(6·n_embd + n_embd_k_gqa + n_embd_v_gqa)  [+ 4·n_kv·n_ub·n_head for KQ
                 when flash attention is off]
    ffn        = 4·n_ub·(3·n_ff_active + 3·n_embd)   (n_ff_active: n_ff, or experts used·n_ff_exp
                 plus shared experts; gemma-family FFNs hold 2·n_embd more)
    recurrent  = 4·n_ub·(7.5·d_inner)
    output     = 4·n_ub·7·n_embd + 4·min(n_ub, n_seq)·n_vocab, without the masks (freed by then;
                 this build reserves logits only for the rows it can output, not for every token)

    peak = max(masks + max(attention, ffn, recurrent), output)

GPU buffers (not calibrated here: no GPU in CI) use the same graph on the device holding the
layers; a partially offloaded model also streams its largest CPU layer through the first GPU's
buffer for large batches, and the host keeps the input embeddings and masks.
"""

from __future__ import annotations

from llamastudio.fit.arch import attention_layers, recurrent_layers, swa_layers
from llamastudio.fit.usage import Context, DeviceUsage
from llamastudio.gguf import ModelFacts
from llamastudio.hardware import Gpu

HOST = "CPU"


def _ffn_active(f: ModelFacts) -> int:
    n_ff = f.feed_forward_length
    dense = max(n_ff) if isinstance(n_ff, list) else (n_ff or 0)
    if not f.expert_count:
        return dense
    n_ff_exp = int(f.arch_keys.get("expert_feed_forward_length") or 0) or dense // max(f.expert_used_count, 1)
    shared = int(f.arch_keys.get("expert_shared_count") or 0)
    shexp = int(f.arch_keys.get("expert_shared_feed_forward_length") or 0) or n_ff_exp
    moe = n_ff_exp * f.expert_used_count + shared * shexp + f.expert_count
    lead = int(f.arch_keys.get("leading_dense_block_count") or 0)
    return max(moe, dense if lead else 0)


def graph_peak(f: ModelFacts, ctx: Context) -> int:
    """Peak bytes of the worst-case graph when every layer runs on one backend."""
    n_ub = ctx.n_ubatch
    n_embd = f.embedding_length
    attn = attention_layers(f)
    swa = swa_layers(f)
    masks = 0
    mask_elt = 2 if ctx.flash_attn else 4
    if any(a and not s for a, s in zip(attn, swa, strict=False)):
        masks += ctx.kv_cells * n_ub * mask_elt
    if any(a and s for a, s in zip(attn, swa, strict=False)):
        masks += ctx.kv_cells_swa * n_ub * mask_elt

    candidates = []
    if any(attn):
        kv_dims = max(
            f.key_length * f.n_head_kv(il) + f.value_length * f.n_head_kv(il)
            for il in range(f.block_count)
            if attn[il]
        )
        attention = 4 * n_ub * (6 * n_embd + kv_dims)
        if not ctx.flash_attn:
            n_head = max(f.n_head(il) for il in range(f.block_count) if attn[il])
            attention += 4 * ctx.kv_cells * n_ub * n_head
        candidates.append(attention)
    if any(recurrent_layers(f)):
        candidates.append(int(4 * n_ub * 7.5 * (f.ssm_inner_size or 2 * n_embd)))
    ffn = _ffn_active(f)
    if ffn:
        # gemma-family FFNs (GELU, post-FFN norm) keep two more n_embd rows live
        extra = 2 * n_embd if f.architecture.startswith("gemma") else 0
        candidates.append(4 * n_ub * (3 * ffn + 3 * n_embd) + 4 * n_ub * extra)
    # the masks are freed after the last attention, before the logits are computed
    output = 4 * n_ub * 7 * n_embd + 4 * min(n_ub, ctx.n_outputs or ctx.n_seq) * f.vocab_size
    return max(masks + max(candidates), output)


def compute_bytes(
    f: ModelFacts, ctx: Context, placement: list[str], usage: dict[str, DeviceUsage], gpus: tuple[Gpu, ...]
) -> dict[str, int]:
    peak = graph_peak(f, ctx)
    gpu_names = [g.device_name for g in gpus]
    used = [name for name in gpu_names if usage[name].layers or name == placement[-1]]
    if not used:
        return {HOST: peak}
    out: dict[str, int] = dict.fromkeys(used, peak)
    host_layers = [il for il, dev in enumerate(placement[:-1]) if dev == HOST]
    if host_layers:  # CPU layers' weights pass through the first GPU's buffer for large batches
        largest = max(f.layer_bytes[il] for il in host_layers if il < len(f.layer_bytes))
        out[used[0]] += largest
    n_ub = ctx.n_ubatch
    masks = (ctx.kv_cells + ctx.kv_cells_swa) * n_ub * 4
    out[HOST] = 4 * n_ub * f.embedding_length + masks + (peak if host_layers else 0)
    return out
