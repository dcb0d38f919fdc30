"""llama.cpp's model graphs, shapes only: what ``llm_graph_context`` builds for a worst-case batch.

Each ``build_*`` mirrors a builder of the pinned source (``src/llama-graph.cpp`` for the shared
pieces, ``src/models/<arch>.cpp`` for the layer stacks), in the same order of
``ggml_build_forward_expand`` calls, because ggml-alloc's reuse of memory follows graph order.
Weights and caches are external tensors: only their shapes matter.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from llamastudio.fit import ggml as G
from llamastudio.fit.ggml import Tensor
from llamastudio.gguf import ModelFacts

W = "f16"  # weight type: irrelevant to the compute buffer, weights live elsewhere


class GraphAbort(ValueError):
    """llama.cpp would fail an assertion building this graph (llama-server aborts at load)."""


@dataclass(frozen=True)
class Batch:
    """The ubatch ``graph_reserve`` builds for: tokens, sequences (streams) and output rows."""

    n_tokens: int
    n_seqs: int
    n_outputs: int


@dataclass(frozen=True)
class Setup:
    """What the graph sees of the context: the KV cache as ``init_full`` presents it (every cell
    of every stream), the recurrent-state cells, and whether embeddings are pooled."""

    n_kv: int  # cells per stream, full-attention layers
    n_kv_swa: int  # cells per stream, sliding-window layers
    n_stream: int  # KV streams (1 when unified)
    type_k: str
    type_v: str
    flash_attn: bool
    n_rs: int = 1  # recurrent-state cells (max(1, n_seq_max))
    pooling: str | None = None  # embeddings on: none, mean, cls, last, rank


class Llm:
    """The shared pieces of ``llm_graph_context``."""

    def __init__(self, f: ModelFacts, cache: Setup, batch: Batch) -> None:
        self.f = f
        self.cache = cache
        self.n_tokens = batch.n_tokens
        self.n_seqs = batch.n_seqs
        self.n_outputs = batch.n_outputs
        self.n_embd = f.embedding_length
        self.g = G.Graph()
        self.expand = self.g.expand
        self._inputs: dict[str, Tensor] = {}

    def layers(self) -> Iterator[int]:
        """The layer indices, marking where each layer's tensors (then the output's) begin."""
        for il in range(self.f.block_count):
            self.g.layer_starts.append(next(G.SERIAL))
            yield il
        self.g.layer_starts.append(next(G.SERIAL))

    # ---- inputs -------------------------------------------------------------------------------
    def inp_embd(self, tok_scale: bool = False, embd_scale: bool = False) -> Tensor:
        """build_inp_embd: token rows, raw embeddings and the mixed path are all in the graph
        (ggml_build_forward_select); the raw-embeddings input and the mixed path's copy are never
        freed (nothing reads them in a token batch)."""
        n, e = self.n_tokens, self.n_embd
        tok_embd = G.weight(W, e, self.f.vocab_size)
        tokens = G.new_input("i32", n)
        embd = G.new_input("f32", e, n)
        cur = G.get_rows(tok_embd, tokens)
        mixed_tokens = G.new_input("i32", n)
        mixed_slots = G.new_input("i64", n)
        mixed_embd = G.new_input("f32", e, n)
        mixed = G.set_rows(G.dup(mixed_embd), G.get_rows(tok_embd, mixed_tokens), mixed_slots)
        for t in (cur, embd, mixed):
            self.expand(t)
        if embd_scale:
            cur = G.scale(cur)
        if tok_scale:
            cur = G.mul(cur, G.new_input("f32", 1, n))
        self.expand(cur)
        return cur

    def inp_pos(self) -> Tensor:
        return G.new_input("i32", self.n_tokens)

    def inp_out_ids(self) -> Tensor:
        return G.new_input("i32", self.n_outputs)

    def kv_inputs(self, swa: bool = False, v_cache: bool = True) -> dict[str, Tensor | None]:
        """build_attn_inp_kv[_iswa] / build_attn_inp_k: row indices into the cache, the KQ mask
        (F16 with flash attention, F32 without; n_kv × n_tokens), Hadamard rotations for quantized
        caches whose head size is a multiple of 64."""
        c, n = self.cache, self.n_tokens
        n_stream = c.n_stream
        v_trans = not c.flash_attn
        out: dict[str, Tensor | None] = {}
        for suffix, n_kv in (("", c.n_kv), ("_swa", c.n_kv_swa)) if swa else (("", c.n_kv),):
            out["k_idxs" + suffix] = G.new_input("i64", n)
            if v_cache:
                v_rows = n * max(self._v_gqa_max(), 1) if v_trans else n
                out["v_idxs" + suffix] = G.new_input("i64", v_rows)
            mask_type = "f16" if c.flash_attn else "f32"
            out["mask" + suffix] = G.new_input(mask_type, n_kv, n // n_stream, 1, n_stream)
            out["k_rot" + suffix] = self._rot(c.type_k, self.f.key_length, max_pow2=True)
            out["v_rot" + suffix] = self._rot(c.type_v, self.f.value_length) if v_cache else None
        return out

    def _v_gqa_max(self) -> int:
        return max(
            (self.f.value_length * self.f.n_head_kv(il) for il in range(self.f.block_count)),
            default=0,
        )

    @staticmethod
    def _rot(cache_type: str, head: int, max_pow2: bool = False) -> Tensor | None:
        if cache_type in ("f16", "f32", "bf16") or not head or head % 64:
            return None
        n = 64
        while max_pow2 and head % (2 * n) == 0:
            n *= 2
        return G.new_input("f32", n, n)

    # ---- layers -------------------------------------------------------------------------------
    def norm(self, x: Tensor, rms: bool = True, bias: bool = False) -> Tensor:
        """build_norm with a weight (and a bias): the norm, then the weight multiplied in place."""
        n = G.mul(G.rms_norm(x) if rms else G.norm(x), G.weight("f32", x.ne[0]))
        return G.add(n, G.weight("f32", x.ne[0])) if bias else n

    def mm(self, x: Tensor, n_out: int, bias: bool = False) -> Tensor:
        out = G.mul_mat(G.weight(W, x.ne[0], n_out), x)
        return G.add(out, G.weight("f32", n_out)) if bias else out

    def qkv(
        self, x: Tensor, head_k: int, n_head: int, n_head_kv: int, head_v: int, bias: bool = False
    ) -> tuple[Tensor, ...]:
        n = x.ne[1]
        q = G.reshape(self.mm(x, head_k * n_head, bias), head_k, n_head, n)
        k = G.reshape(self.mm(x, head_k * n_head_kv, bias), head_k, n_head_kv, n)
        v = G.reshape(self.mm(x, head_v * n_head_kv, bias), head_v, n_head_kv, n)
        return q, k, v

    def attn_nocache(self, mask: Tensor, q: Tensor, k: Tensor, v: Tensor, bias: bool = False) -> Tensor:
        """build_attn without a cache (bidirectional encoders): K and V are this batch's rows."""
        for t in (q, k, v):
            self.expand(t)
        return self.mm(self.mha(q, k, v, mask), self.n_embd, bias)

    @staticmethod
    def hadamard(x: Tensor, rot: Tensor) -> Tensor:
        n = rot.ne[0]
        r = G.reshape(x, n, x.n_elements // n) if G.is_contiguous(x) else G.cont(x, n, x.n_elements // n)
        return G.reshape(G.mul_mat(rot, r), *x.ne)

    def attn(
        self, inp: dict[str, Tensor | None], q: Tensor, k: Tensor, v: Tensor, il: int, swa: bool = False
    ) -> Tensor:
        """build_attn (KV cache): store K and V by row index, attend over the whole cache, project."""
        s = "_swa" if swa else ""
        k_rot, v_rot = inp["k_rot" + s], inp["v_rot" + s]
        if k_rot is not None:
            q, k = self.hadamard(q, k_rot), self.hadamard(k, k_rot)
        if v_rot is not None:
            v = self.hadamard(v, v_rot)
        for t in (q, v, k):
            self.expand(t)
        c = self.cache
        n_kv = c.n_kv_swa if swa else c.n_kv
        n_head_kv = k.ne[1]
        k_cache = G.weight(c.type_k, k.ne[0] * n_head_kv, n_kv, c.n_stream)
        v_cache = G.weight(c.type_v, v.ne[0] * n_head_kv, n_kv, c.n_stream)
        self.expand(self._store(k_cache, k, inp["k_idxs" + s]))  # type: ignore[arg-type]
        self.expand(self._store_v(v_cache, v, inp["v_idxs" + s]))  # type: ignore[arg-type]
        kk = self._get(k_cache, k.ne[0], n_head_kv, n_kv)
        vv = self._get_v(v_cache, v.ne[0], n_head_kv, n_kv)
        cur = self.mha(q, kk, vv, inp["mask" + s])  # type: ignore[arg-type]
        if v_rot is not None:
            cur = self.hadamard(cur, v_rot)
        return self.mm(cur, self.n_embd)

    def _store(self, cache: Tensor, x: Tensor, idxs: Tensor) -> Tensor:
        x2 = G.view_2d(x, x.ne[0] * x.ne[1], x.ne[2], x.nb[2])
        if cache.ne[2] > 1:
            cache = G.reshape(cache, cache.ne[0], cache.ne[1] * cache.ne[2])
        return G.set_rows(cache, x2, idxs)

    def _store_v(self, cache: Tensor, v: Tensor, idxs: Tensor) -> Tensor:
        if self.cache.flash_attn:
            return self._store(cache, v, idxs)
        n_gqa = v.ne[0] * v.ne[1]
        if G.row_size(v.type, n_gqa) == v.nb[2]:
            v2 = G.reshape(v, n_gqa, v.ne[2])
        else:
            v2 = G.cont(v, n_gqa, v.ne[2])
        return G.set_rows(G.reshape(cache, 1, cache.n_elements), G.reshape(v2, 1, v2.n_elements), idxs)

    def _get(self, cache: Tensor, head: int, n_head_kv: int, n_kv: int) -> Tensor:
        t, gqa = cache.type, cache.ne[0]
        return G.view_4d(
            cache,
            (head, n_head_kv, n_kv, cache.ne[2]),
            G.row_size(t, head),
            G.row_size(t, gqa),
            G.row_size(t, gqa * cache.ne[1]),
        )

    def _get_v(self, cache: Tensor, head: int, n_head_kv: int, n_kv: int) -> Tensor:
        if self.cache.flash_attn:
            return self._get(cache, head, n_head_kv, n_kv)
        t, size, gqa = cache.type, cache.ne[1], cache.ne[0]
        return G.view_4d(
            cache,
            (n_kv, n_head_kv, head, cache.ne[2]),
            G.row_size(t, size * head),
            G.row_size(t, size),
            G.row_size(t, size * gqa),
        )

    def mha(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, v_mla: Tensor | None = None) -> Tensor:
        """build_attn_mha: flash attention, or KQ = K·Q (F32, n_kv × n_tokens × n_head), softmax,
        V·KQ; MLA decompresses the result with v_mla."""
        v_trans = v.nb[1] > v.nb[2]
        ns = k.ne[3]
        q = G.view_4d(q, (q.ne[0], q.ne[1], q.ne[2] // ns, ns), q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // ns))
        q, k, v = G.permute(q, 0, 2, 1, 3), G.permute(k, 0, 2, 1, 3), G.permute(v, 0, 2, 1, 3)
        if self.cache.flash_attn:
            if v_trans:
                v = G.transpose(v)
            if k.type == "f32":  # no cache: the batch's own K and V, cast for flash attention
                k = G.cast(k, "f16")
            if v.type == "f32":
                v = G.cast(v, "f16")
            cur = G.flash_attn_ext(q, k, v, mask, None)
            if v_mla is not None:
                cur = G.permute(cur, 0, 2, 1, 3)
                cur = G.permute(G.mul_mat(v_mla, cur), 0, 2, 1, 3)
                cur = G.cont(cur)
            cur = G.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        else:
            kq = G.mul_mat(k, q)
            if self.softcap:
                kq = G.scale(G.unary(G.scale(kq)))
            kq = G.soft_max(kq, mask)
            if not v_trans:
                v = G.cont(G.transpose(v))
            kqv = G.mul_mat(v, kq)
            if v_mla is not None:
                kqv = G.mul_mat(v_mla, kqv)
            cur = G.permute(kqv, 0, 2, 1, 3)
            cur = G.cont(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        self.expand(cur)
        return cur

    softcap = False  # gemma2-style attention logit soft-capping (scale, tanh, scale before softmax)

    def ffn(
        self, x: Tensor, n_ff: int, gated: bool = True, bias: bool = False, relu_sqr: bool = False
    ) -> Tensor:
        """build_ffn: up and gate projections, a fused GLU (not in place), the down projection;
        ungated: up, the activation in place, down."""
        up = self.mm(x, n_ff, bias)
        cur = G.glu_split(self.mm(x, n_ff), up) if gated else G.unary(up)
        if relu_sqr:
            cur = G.unary(cur)  # ggml_sqr in place
        return self.mm(cur, self.n_embd, bias)

    def moe(
        self,
        x: Tensor,
        n_expert: int,
        n_used: int,
        n_ff: int,
        norm_w: bool = True,
        w_scale: bool = False,
        gating: str = "softmax",
        probs_bias: bool = False,
        biases: bool = False,
    ) -> Tensor:
        """build_moe_ffn: router logits and probabilities, top-k selection, per-expert weights,
        up/gate/down through mul_mat_id ([n_ff, n_used, n_tokens] each), weighted sum of experts.
        ``gating``: softmax, sigmoid, or softmax_weight (softmax over the chosen experts only)."""
        e, n = x.ne[0], x.ne[1]
        logits = G.mul_mat(G.weight("f32", e, n_expert), x)
        if biases:
            logits = G.add(logits, G.weight("f32", n_expert))
        if gating == "softmax":
            probs = G.soft_max(logits)
        else:
            probs = logits if gating == "softmax_weight" else G.unary(logits)
        selection = G.add(probs, G.weight("f32", n_expert)) if probs_bias else probs
        selected = G.argsort_top_k(selection, n_used)
        weights = G.get_rows(G.reshape(probs, 1, n_expert, n), selected)
        if gating == "softmax_weight":
            weights = G.reshape(G.soft_max(G.reshape(weights, n_used, n)), 1, n_used, n)
        if norm_w:
            w2 = G.reshape(weights, n_used, n)
            total = G.clamp(G.sum_rows(w2))
            weights = G.reshape(G.div(w2, total), 1, n_used, n)
        if w_scale:
            weights = G.scale(weights)
        self.expand(weights)
        cur = G.reshape(x, e, 1, n)

        def experts_mm(n_in: int, n_out: int, src: Tensor) -> Tensor:
            out = G.mul_mat_id(G.weight(W, n_in, n_out, n_expert), src, selected)
            return G.add_id(out, G.weight("f32", n_out, n_expert), selected) if biases else out

        up = experts_mm(e, n_ff, cur)
        gate = experts_mm(e, n_ff, cur)
        experts = experts_mm(n_ff, e, G.glu_split(gate, up))
        experts = G.mul(experts, weights)
        self.expand(experts)
        views = [G.view_2d(experts, e, n, experts.nb[2]) for _ in range(n_used)]
        for t in views:
            self.expand(t)
        out = views[0]
        for t in views[1:]:
            out = G.add(out, t)
            self.expand(out)
        if n_used == 1:
            out = G.cont(out)
        return out

    def output(self, cur: Tensor, logit_ops: int = 0) -> Tensor:
        """Final norm (the embeddings output) and the LM head (the logits output): outputs are
        never freed."""
        cur = self.norm(cur)
        cur.output = True
        logits = self.mm(cur, self.f.vocab_size)
        for _ in range(logit_ops):
            logits = G.scale(logits)
        logits.output = True
        self.expand(logits)
        self.pool(cur)
        return logits

    def pool(self, embd: Tensor) -> None:
        """build_pooling (embeddings on): mean (a transposed copy times the mean matrix), cls/last
        (the rows of each sequence), rank (those rows through the classifier head)."""
        pooling = self.cache.pooling
        if pooling is None or pooling == "none":
            return
        has = self.f.non_layer_bytes
        if pooling == "mean" or (pooling == "rank" and self.f.arch_keys.get("pooling_type_cls") == 1):
            if embd.ne[1] != self.n_tokens:  # ggml_mul_mat asserts: llama-server aborts at load
                raise GraphAbort(
                    f"llama.cpp aborts reserving this graph: mean pooling over {self.n_seqs} sequences "
                    f"needs the micro-batch ({self.n_outputs}) to be a multiple of the sequence count "
                    f"(--parallel); set -ub to a multiple of {self.n_seqs}"
                )
            mean = G.new_input("f32", self.n_tokens, self.n_seqs)
            cur = G.mul_mat(G.cont(G.transpose(embd)), mean)
        else:
            cur = G.get_rows(embd, G.new_input("i32", self.n_seqs))
        if pooling == "rank":
            if "cls" in has:
                cur = G.unary(self.mm(cur, cur.ne[0]))
            if "cls.output" in has:
                cur = self.mm(cur, 1)
            if self.f.architecture in ("qwen3", "qwen3vl"):
                cur = G.soft_max(cur)
        cur.output = True
        self.expand(cur)
