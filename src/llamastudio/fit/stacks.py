"""Layer stacks of llama.cpp's architectures (``src/models/<arch>.cpp``), shapes only.

``build(f, cache, batch)`` returns the graph ``graph_reserve`` would build: a llama-style decoder
(self-attention + dense or MoE FFN, optional Q/K norms, gemma-style sandwich norms and sliding
window), DeepSeek-2's MLA attention, Mamba-1/Mamba-2 recurrent layers, and Granite-hybrid stacks
that interleave both. Architectures without a stack of their own use the llama-style decoder.
"""

from __future__ import annotations

from llamastudio.fit import ggml as G
from llamastudio.fit.arch import attention_layers, recurrent_layers, swa_layers
from llamastudio.fit.ggml import Tensor
from llamastudio.fit.graphs import Batch, Llm, Setup, W
from llamastudio.gguf import ModelFacts

QK_NORM = {"qwen3", "qwen3moe", "gemma3", "gemma3n", "olmo2", "olmoe", "chameleon", "cohere2", "qwen3vl"}
GEMMA = {"gemma2", "gemma3", "gemma-embedding"}
MAMBA = {"mamba", "mamba2"}
HYBRID_MAMBA2 = {"granitehybrid"}


def _n_ff(f: ModelFacts, il: int) -> int:
    n_ff = f.feed_forward_length
    if isinstance(n_ff, list):
        return n_ff[il] if il < len(n_ff) else 0
    return n_ff or 0


def _key(f: ModelFacts, name: str, default: float = 0) -> float:
    value = f.arch_keys.get(name)
    return default if value is None or isinstance(value, dict) else float(value)


def _ffn_block(llm: Llm, f: ModelFacts, x: Tensor, il: int, gated: bool = True) -> Tensor:
    """Dense FFN, or MoE (+ shared experts) past the leading dense layers."""
    lead = int(_key(f, "leading_dense_block_count"))
    if not f.expert_count or il < lead:
        return llm.ffn(x, _n_ff(f, il), gated)
    n_ff_exp = int(_key(f, "expert_feed_forward_length")) or _n_ff(f, il) // max(f.expert_used_count, 1)
    gating = int(_key(f, "expert_gating_func"))
    out = llm.moe(
        x,
        f.expert_count,
        f.expert_used_count,
        n_ff_exp,
        norm_w=bool(_key(f, "expert_weights_norm", 1 if f.architecture != "deepseek2" else 0)),
        w_scale=_key(f, "expert_weights_scale", 1.0) not in (0.0, 1.0),
        gating="sigmoid" if gating == 2 else "softmax",
        probs_bias=gating == 2 and f.architecture == "deepseek2",  # V3's selection bias (exp_probs_b)
    )
    n_shared = int(_key(f, "expert_shared_count"))
    shexp = int(_key(f, "expert_shared_feed_forward_length")) or n_ff_exp * n_shared
    if n_shared or f.arch_keys.get("expert_shared_feed_forward_length"):
        out = G.add(out, llm.ffn(x, shexp))
    return out


def _last(llm: Llm, il: int, out_ids: Tensor, *xs: Tensor) -> tuple[Tensor, ...]:
    if il != llm.f.block_count - 1:
        return xs
    return tuple(G.get_rows(x, out_ids) for x in xs)


def build_decoder(llm: Llm) -> None:
    """llama.cpp / qwen3 / gemma3 / ...: norm, Q K V, [Q/K norm], RoPE, attention, residual,
    norm, FFN, residual; gemma adds post-attention and post-FFN norms and scaled input rows."""
    f = llm.f
    gemma = f.architecture in GEMMA
    qk_norm = f.architecture in QK_NORM
    attn = attention_layers(f)
    swa = swa_layers(f)
    inp_l = llm.inp_embd(tok_scale=gemma)
    pos = llm.inp_pos()
    inp = llm.kv_inputs(swa=any(swa))
    out_ids = llm.inp_out_ids()
    llm.softcap = f.architecture == "gemma2"
    for il in llm.layers():
        residual = inp_l
        cur = llm.norm(inp_l)
        if attn[il]:
            q, k, v = llm.qkv(cur, f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length)
            if qk_norm:
                q = llm.norm(q)
            q = G.rope(q, pos)
            if qk_norm:
                k = llm.norm(k)
            k = G.rope(k, pos)
            if gemma:
                q = G.scale(q)
            cur = llm.attn(inp, q, k, v, il, swa=swa[il])
        cur, residual = _last(llm, il, out_ids, cur, residual)
        if gemma:
            cur = llm.norm(cur)
        ffn_inp = G.add(cur, residual)
        cur = _ffn_block(llm, f, llm.norm(ffn_inp), il, gated=True)
        if gemma:
            cur = llm.norm(cur)
        inp_l = G.add(cur, ffn_inp)
    llm.output(inp_l, logit_ops=3 if _key(f, "final_logit_softcapping") else 0)


def build_gptoss(llm: Llm) -> None:
    """gpt-oss (openai-moe.cpp): alternating sliding-window/full attention with sinks, a
    post-attention norm before a biased MoE whose weights are a softmax over the chosen experts;
    every token goes through the last layer (the output rows are taken after the stack, whose
    output is itself a graph output: the MTP hidden state)."""
    f = llm.f
    swa = swa_layers(f)
    inp_l = llm.inp_embd()
    pos = llm.inp_pos()
    inp = llm.kv_inputs(swa=any(swa))
    out_ids = llm.inp_out_ids()
    n_ff_exp = int(_key(f, "expert_feed_forward_length")) or _n_ff(f, 0)
    for il in llm.layers():
        cur = llm.norm(inp_l)
        q, k, v = llm.qkv(cur, f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length)
        cur = llm.attn(inp, G.rope(q, pos), G.rope(k, pos), v, il, swa=swa[il])
        ffn_inp = G.add(cur, inp_l)
        cur = llm.moe(
            llm.norm(ffn_inp),
            f.expert_count,
            f.expert_used_count,
            n_ff_exp,
            norm_w=False,
            w_scale=_key(f, "expert_weights_scale", 1.0) not in (0.0, 1.0),
            gating="softmax_weight",
            biases=True,
        )
        inp_l = G.add(cur, ffn_inp)
    inp_l.output = True
    llm.output(G.get_rows(inp_l, out_ids))


def build_deepseek2(llm: Llm) -> None:
    """MLA with weight absorption: Q is (kv_lora_rank + rope dims) per head after absorbing
    W_k_b; the cache holds one compressed row per token; attention output is decompressed per
    head with W_v_b. Without flash attention, V (a view of the K cache) is transposed into a
    contiguous n_kv × kv_lora_rank copy per layer."""
    f = llm.f
    n_head = f.n_head(0)
    kv_lora = f.kv_lora_rank or 0
    head_k = f.key_length_mla or f.key_length
    rope_dims = f.rope_dimension_count or 0
    nope = head_k - rope_dims
    v_head = f.value_length_mla or f.value_length
    q_lora = int(_key(f, "q_lora_rank"))
    inp_l = llm.inp_embd()
    pos = llm.inp_pos()
    inp = llm.kv_inputs(v_cache=False)
    out_ids = llm.inp_out_ids()
    n = llm.n_tokens
    for il in llm.layers():
        residual = inp_l
        cur = llm.norm(inp_l)
        q = llm.mm(llm.norm(llm.mm(cur, q_lora)), n_head * head_k) if q_lora else llm.mm(cur, n_head * head_k)
        q = G.reshape(q, head_k, n_head, n)
        kv_pe = llm.mm(cur, kv_lora + rope_dims)
        row = kv_pe.nb[1]
        kv_cmpr = G.view_2d(kv_pe, kv_lora, n, row)
        k_pe = G.rope(G.view_3d(kv_pe, rope_dims, 1, n, row, row), pos)
        kv_cmpr = llm.norm(kv_cmpr)
        q_nope = G.permute(G.view_3d(q, nope, n_head, n, q.nb[1], q.nb[2]), 0, 2, 1, 3)
        q_pe = G.rope(G.view_3d(q, rope_dims, n_head, n, q.nb[1], q.nb[2]), pos)
        absorbed = G.mul_mat(G.weight(W, nope, kv_lora, n_head), q_nope)
        q_cur = G.concat(G.permute(absorbed, 0, 2, 1, 3), q_pe, 0)
        k_cur = G.concat(G.reshape(kv_cmpr, kv_lora, 1, n), k_pe, 0)
        cur = _attn_mla(llm, inp, q_cur, k_cur, kv_cmpr, G.weight(W, kv_lora, v_head, n_head))
        cur, residual = _last(llm, il, out_ids, cur, residual)
        ffn_inp = G.add(cur, residual)
        cur = _ffn_block(llm, f, llm.norm(ffn_inp), il)
        inp_l = G.add(cur, ffn_inp)
    llm.output(inp_l)


def _attn_mla(
    llm: Llm, inp: dict[str, Tensor | None], q: Tensor, k: Tensor, v_cur: Tensor, v_mla: Tensor
) -> Tensor:
    """build_attn with a K-only cache (llm_graph_input_attn_k): V is a view of the K rows."""
    for t in (q, v_cur, k):
        llm.expand(t)
    c = llm.cache
    k_cache = G.weight(c.type_k, k.ne[0], c.n_kv, c.n_stream)
    llm.expand(llm._store(k_cache, k, inp["k_idxs"]))  # type: ignore[arg-type]
    kk = llm._get(k_cache, k.ne[0], 1, c.n_kv)
    vv = G.view_4d(kk, (v_cur.ne[0], *kk.ne[1:]), kk.nb[1], kk.nb[2], kk.nb[3])  # type: ignore[arg-type]
    cur = llm.mha(q, kk, vv, inp["mask"], v_mla)  # type: ignore[arg-type]
    return llm.mm(cur, llm.n_embd)


def _rs_inputs(llm: Llm) -> dict[str, Tensor]:
    """build_rs_inp: the state-copy indices (one per recurrent cell)."""
    s_copy = G.new_input("i32", llm.cache.n_rs)
    return {
        "s_copy": s_copy,
        "main": G.view_1d(s_copy, llm.n_seqs),
        "tail": G.view_1d(s_copy, llm.cache.n_rs - 1),
    }


def _rs(llm: Llm, inp: dict[str, Tensor], s: Tensor, size: int, scan: object = None) -> Tensor:
    """build_rs: gather the states of the batch's cells (a copy, F32) and clear/copy the rest;
    a custom getter (the SSM scan) reads the cache directly and gathers only the extra cells."""
    n_rs, n_seqs = llm.cache.n_rs, llm.n_seqs
    states = G.reshape(s, size, s.ne[1])
    llm.expand(G.scale_inplace(G.view_1d(states, size)))
    copy = inp["tail"] if scan else inp["s_copy"]
    states_all = G.get_rows(states, copy)
    out = (
        scan(states, inp["main"]) if callable(scan) else G.view_2d(states_all, size, n_seqs, states_all.nb[1])
    )
    llm.expand(out)
    extra = G.view_2d(states_all, size, n_rs - n_seqs, states_all.nb[1])
    llm.expand(G.cpy(extra, G.view_2d(s, size, n_rs - n_seqs, s.nb[1])))
    return out


def _mamba_layer(llm: Llm, inp: dict[str, Tensor], cur: Tensor, mamba2: bool) -> Tensor:
    """build_mamba_layer / build_mamba2_layer: in-projection, causal conv over (state ++ tokens),
    selective scan whose result holds y and the new states, gated output, out-projection."""
    f = llm.f
    d_conv = f.ssm_conv_kernel or 4
    d_inner = f.ssm_inner_size or 2 * llm.n_embd
    d_state = f.ssm_state_size or 16
    n_group = (f.ssm_group_count or 1) if mamba2 else 0
    dt_rank = f.ssm_time_step_rank or 1
    n_head = dt_rank if mamba2 else d_inner
    head_dim = d_inner // n_head
    n_seqs = llm.n_seqs
    n_st = llm.n_tokens // n_seqs
    conv_dim = d_inner + 2 * n_group * d_state
    n_r = (d_conv - 1) * conv_dim
    n_s = d_state * d_inner
    r_all = G.weight("f32", n_r, llm.cache.n_rs)
    s_all = G.weight("f32", n_s, llm.cache.n_rs)
    conv = G.reshape(_rs(llm, inp, r_all, n_r), d_conv - 1, conv_dim, n_seqs)
    if mamba2:
        d_in_proj = d_inner + conv_dim + n_head
        zx = G.reshape(llm.mm(cur, d_in_proj), d_in_proj, n_st, n_seqs)
    else:
        zx = llm.mm(G.reshape(cur, llm.n_embd, n_st, n_seqs), 2 * d_inner)
    xbc = G.view_3d(zx, conv_dim, n_st, n_seqs, zx.nb[1], zx.nb[2])
    if mamba2:
        z = G.view_4d(zx, (head_dim, n_head, n_st, n_seqs), head_dim * zx.nb[0], zx.nb[1], zx.nb[2])
    else:
        z = G.view_3d(zx, d_inner, n_st, n_seqs, zx.nb[1], zx.nb[2])
    conv_x = G.concat(conv, G.transpose(xbc), 0)
    last = G.view_3d(conv_x, d_conv - 1, conv_dim, n_seqs, conv_x.nb[1], conv_x.nb[2])
    llm.expand(G.cpy(last, G.view_2d(r_all, n_r, n_seqs, r_all.nb[1])))
    x = G.unary(G.add(G.ssm_conv(conv_x, G.weight("f32", d_conv, conv_dim)), G.weight("f32", conv_dim)))
    if mamba2:
        dt = G.add(G.cont(G.view_3d(zx, n_head, n_st, n_seqs, zx.nb[1], zx.nb[2])), G.weight("f32", n_head))
        y_in = G.view_4d(x, (head_dim, n_head, n_st, n_seqs), head_dim * x.nb[0], x.nb[1], x.nb[2])
        b = G.view_4d(x, (d_state, n_group, n_st, n_seqs), d_state * x.nb[0], x.nb[1], x.nb[2])
        a = G.weight("f32", 1, n_head)
        skip = y_in
    else:
        x_db = llm.mm(x, dt_rank + 2 * d_state)
        b = G.view_4d(x_db, (d_state, 1, n_st, n_seqs), d_state * x_db.nb[0], x_db.nb[1], x_db.nb[2])
        dt = G.add(
            llm.mm(G.cont(G.view_3d(x_db, dt_rank, n_st, n_seqs, x_db.nb[1], x_db.nb[2])), d_inner),
            G.weight("f32", d_inner),
        )
        skip = x
        y_in = G.reshape(x, 1, d_inner, n_st, n_seqs)
        a = G.weight("f32", d_state, d_inner)

    def scan(states: Tensor, ids: Tensor) -> Tensor:
        ssm = G.reshape(states, d_state, head_dim, n_head, states.ne[1])
        return G.ssm_scan(ssm, y_in, dt, a, b, b, ids)

    y_ssm = _rs(llm, inp, s_all, n_s, scan)
    state_view = G.view_1d(y_ssm, n_s * n_seqs)
    llm.expand(G.cpy(state_view, G.view_1d(s_all, n_s * n_seqs)))
    if mamba2:
        y = G.view_4d(y_ssm, y_in.ne, y_in.nb[1], y_in.nb[2], y_in.nb[3])  # type: ignore[arg-type]
    else:
        y = G.view_3d(y_ssm, d_inner, n_st, n_seqs, x.nb[1], x.nb[2])
    y = G.add(y, G.mul(skip, G.weight("f32", 1, n_head)))
    y = G.glu_split(G.cont(z), y)
    if mamba2:
        y = llm.norm(G.reshape(y, d_inner // n_group, n_group, n_st, n_seqs))
    return llm.mm(G.reshape(y, d_inner, llm.n_tokens), llm.n_embd)


def build_mamba(llm: Llm) -> None:
    f = llm.f
    inp_l = llm.inp_embd()
    rs = _rs_inputs(llm)
    out_ids = llm.inp_out_ids()
    for il in llm.layers():
        cur = _mamba_layer(llm, rs, llm.norm(inp_l), f.architecture == "mamba2")
        cur, inp_l = _last(llm, il, out_ids, cur, inp_l)
        inp_l = G.add(cur, inp_l)
    llm.output(inp_l)


def build_hybrid(llm: Llm) -> None:
    """Granite-hybrid: Mamba-2 layers where the KV head count is 0, attention elsewhere; the
    residual, the FFN output and the logits are scaled."""
    f = llm.f
    rec = recurrent_layers(f)
    inp_l = llm.inp_embd(embd_scale=bool(_key(f, "embedding_scale")))
    rs = _rs_inputs(llm)
    inp = llm.kv_inputs()
    out_ids = llm.inp_out_ids()
    pos = llm.inp_pos()
    res_scale = bool(_key(f, "residual_scale"))
    for il in llm.layers():
        residual = inp_l
        cur = llm.norm(inp_l)
        if rec[il]:
            cur = _mamba_layer(llm, rs, cur, mamba2=True)
        else:
            q, k, v = llm.qkv(cur, f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length)
            cur = llm.attn(inp, G.rope(q, pos), G.rope(k, pos), v, il)
        cur, residual = _last(llm, il, out_ids, cur, residual)
        if res_scale:
            cur = G.scale(cur)
        ffn_inp = G.add(cur, residual)
        cur = _ffn_block(llm, f, llm.norm(ffn_inp), il)
        if res_scale:
            cur = G.scale(cur)
        inp_l = G.add(cur, ffn_inp)
    llm.output(inp_l, logit_ops=1 if _key(f, "logit_scale") else 0)


def build_encoder(llm: Llm) -> None:
    """BERT-style bidirectional encoders (bert.cpp): embeddings (+ token type, + learned positions),
    LayerNorms with biases, attention without a cache (the mask is n_tokens × n_tokens; flash
    attention casts the batch's K and V to F16), a GELU FFN, no LM head: the last norm is the
    embeddings output, then pooling."""
    f = llm.f
    has = f.non_layer_bytes
    pos = llm.inp_pos()
    cur = llm.inp_embd()
    if "token_types" in has:
        cur = G.add(cur, G.view_1d(G.weight("f32", llm.n_embd, 2), llm.n_embd))
    if "position_embd" in has:
        cur = G.add(G.get_rows(G.weight(W, llm.n_embd, f.context_length or 512), pos), cur)
    inp_l = llm.norm(cur, rms=False, bias=True)
    n = llm.n_tokens
    mask = G.new_input("f16" if llm.cache.flash_attn else "f32", n, n, 1, 1)
    out_ids = llm.inp_out_ids()
    rope = f.architecture != "bert"
    gated = f.architecture not in ("bert", "jina-bert-v3", "nomic-bert-moe")
    for il in llm.layers():
        q, k, v = llm.qkv(inp_l, f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length, bias=True)
        if rope:
            q, k = G.rope(q, pos), G.rope(k, pos)
        cur = llm.attn_nocache(mask, q, k, v, bias=True)
        cur, inp_l = _last(llm, il, out_ids, cur, inp_l)
        ffn_inp = llm.norm(G.add(cur, inp_l), rms=False, bias=True)
        cur = llm.ffn(ffn_inp, _n_ff(f, il), gated=gated, bias=True)
        inp_l = llm.norm(G.add(cur, ffn_inp), rms=False, bias=True)
    inp_l.output = True
    llm.expand(inp_l)
    llm.pool(inp_l)


def build_falcon_h1(llm: Llm) -> None:
    """Falcon-H1 (not measured here): attention and a Mamba-2 mixer side by side in every layer,
    their outputs summed, then the FFN."""
    f = llm.f
    inp_l = llm.inp_embd()
    pos = llm.inp_pos()
    rs = _rs_inputs(llm)
    inp = llm.kv_inputs()
    out_ids = llm.inp_out_ids()
    for il in llm.layers():
        q, k, v = llm.qkv(llm.norm(inp_l), f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length)
        attn_out = llm.attn(inp, G.rope(q, pos), G.rope(k, pos), v, il)
        cur = G.add(attn_out, _mamba_layer(llm, rs, llm.norm(inp_l), mamba2=True))
        residual = G.add(cur, inp_l)
        cur, residual = _last(llm, il, out_ids, cur, residual)
        inp_l = G.add(_ffn_block(llm, f, llm.norm(residual), il), residual)
    llm.output(inp_l)


def build_nemotron_h(llm: Llm) -> None:
    """Nemotron-H (not measured here): each layer is a Mamba-2 mixer, attention, or a ReLU² MLP;
    every token reaches the final norm (the MTP hidden state, an output), then the output rows."""
    f = llm.f
    rec = recurrent_layers(f)
    inp_l = llm.inp_embd()
    rs = _rs_inputs(llm)
    inp = llm.kv_inputs()
    out_ids = llm.inp_out_ids()
    for il in llm.layers():
        cur = llm.norm(inp_l)
        if rec[il]:
            cur = _mamba_layer(llm, rs, cur, mamba2=True)
        elif not _n_ff(f, il):
            q, k, v = llm.qkv(cur, f.key_length, f.n_head(il), f.n_head_kv(il), f.value_length)
            cur = llm.attn(inp, q, k, v, il)
        elif f.expert_count:
            cur = _ffn_block(llm, f, cur, il)
        else:
            cur = llm.ffn(cur, _n_ff(f, il), gated=False, relu_sqr=True)
        inp_l = G.add(cur, inp_l)
    hidden = llm.norm(inp_l)
    hidden.output = True
    cur = G.get_rows(hidden, out_ids)
    cur.output = True
    logits = llm.mm(cur, f.vocab_size)
    logits.output = True
    llm.expand(logits)
    llm.pool(cur)


def build(f: ModelFacts, cache: Setup, batch: Batch) -> G.Graph:
    llm = Llm(f, cache, batch)
    arch = f.architecture
    if f.arch_keys.get("causal") is False:
        build_encoder(llm)
    elif arch in MAMBA:
        build_mamba(llm)
    elif arch in HYBRID_MAMBA2 and any(recurrent_layers(f)):
        build_hybrid(llm)
    elif arch == "falcon-h1":
        build_falcon_h1(llm)
    elif arch in ("nemotron_h", "nemotron_h_moe"):
        build_nemotron_h(llm)
    elif f.kv_lora_rank and f.key_length_mla:
        build_deepseek2(llm)
    elif arch in ("gpt-oss", "openai-moe"):
        build_gptoss(llm)
    else:
        build_decoder(llm)
    return llm.g
