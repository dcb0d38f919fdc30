"""Compute-buffer model: ggml-alloc replayed on the graph llama.cpp reserves.

llama.cpp sizes a compute buffer in ``llama_context::sched_reserve``: it builds the worst-case
graph for a prompt batch (``n_tokens = min(n_ctx, n_ubatch)`` rounded up to a multiple of
``n_seq_max``, ``n_seq_max`` sequences, ``min(n_tokens, n_outputs_max)`` output rows), then for a
generation batch (``n_seq_max`` tokens and outputs), then the prompt batch again, against the
whole KV cache (``init_full``); ggml-alloc places every tensor of each graph and the buffer keeps
the largest size it reached. There is no closed form, so this module builds the same graph
(``stacks.py``, ``graphs.py``: shapes only) and replays the allocator (``galloc.py``). The rules,
from the pinned source, that decide the size:

- **Allocator** (``ggml-alloc.c``): inputs are placed first and live until their last reader;
  nodes are placed in graph order; an op that can work in place (add, mul, scale, norms, rope,
  softmax, unary) takes its parent's memory only when it is the parent's last reader and the
  parent is neither a view nor an output; a tensor is freed after its last reader (a viewed
  tensor after the last reader of its last view); outputs (final norm, logits) are never freed;
  best-fit free blocks, 32-byte alignment, the buffer is the highest end reached.
- **Inputs** (``llama-graph.cpp``): the token ids, a raw-embeddings input (``n_embd × n_tokens``
  F32) and the mixed-batch path (its copy of that input is never freed) are all in every graph;
  positions; per attention cache: K/V row indices (I64; without flash attention the transposed V
  is stored element by element, ``n_tokens·n_embd_v_gqa`` indices) and the KQ mask
  ``n_kv × n_tokens`` (F16 with flash attention, F32 without; one more for sliding-window
  layers); a Hadamard rotation input and a rotated copy of Q, K (and V, and the attention output)
  when a cache type is quantized and the head size is a multiple of 64.
- **Attention**: Q, K, V projections (RoPE can't work in place on the reshaped view, so each is
  copied once); without flash attention ``KQ = n_kv × n_tokens × n_head`` F32 and its softmax
  (in place), then ``V·KQ`` and a contiguous copy of the output. MLA (DeepSeek-2) works on
  ``n_head × (kv_lora_rank + rope dims)`` absorbed queries, one compressed cache row per token,
  decompresses the output per head, and without flash attention copies V (a view of the K cache)
  into a contiguous ``n_kv × kv_lora_rank`` tensor per layer.
- **FFN**: up and gate projections, a fused GLU (not in place), down; MoE adds router logits,
  probabilities, top-k ids and weights, and three ``n_ff_exp × n_used × n_tokens`` expert
  products before the weighted sum.
- **Recurrent layers** (Mamba-1/2, ``mamba-base.cpp``): the state gather (``get_rows`` of every
  recurrent cell's conv state, F32), the in-projection, ``conv_x = state ++ tokens``, the conv,
  and the scan, whose result holds ``y`` and the new SSM states of every sequence
  (``d_state·d_inner·n_seqs`` floats) — the part that grows with parallel sequences.
- **Output**: the last layer keeps only the output rows (``get_rows``), then the final norm and
  ``n_vocab × n_outputs`` logits (plus in-place logit scaling/soft-capping); gpt-oss and
  Nemotron-H run every token through the last layer and keep that hidden state as an output.
- **Embeddings** (``--embedding``/``--reranking``): every token is an output row; pooling adds a
  transposed copy of the embeddings (mean) or the sequences' rows (cls/last/rank) and the
  classifier head. BERT-style encoders have no cache (the mask is ``n_tokens × n_tokens``; flash
  attention casts the batch's K and V to F16) and no LM head. Mean pooling over ``-np N`` with a
  micro-batch that is not a multiple of N makes llama.cpp abort at load: refused here too.

Stacks of their own (``stacks.build``): llama-style decoders (llama, qwen2/3, mistral, … with
Q/K norms where the architecture has them, MoE with shared experts and DeepSeek-style sigmoid
routing), gemma3 (sandwich norms, scaled input rows, sliding window), DeepSeek-2 MLA, gpt-oss,
Mamba-1/2, Granite-hybrid, BERT-style encoders — measured byte-exact against llama-server's own
allocator trace and its logs (``bench/estimate_accuracy.py``) on the rig's tiny models of each —
and gemma2 (attention soft-capping), Falcon-H1 and Nemotron-H (built from the source, not
measured: no rig model). (Byte-exact: a llama-server built with ``GGML_ALLOCATOR_DEBUG`` and
``AT_PRINTF`` enabled in ``ggml-alloc.c`` logs, at ``-lv 9``, every placement and the highest end
of each reserved graph; a change of llama.cpp is re-checked that way, tensor by tensor.) Every other
architecture is built as the llama-style decoder, which misses its particular intermediates
(linear-attention and RWKV state updates, fused QKV copies, per-layer embeddings, …).

GPU buffers (not calibrated here: no GPU in CI, so GPU compute is extrapolated) use the same graph
peak on the device holding the layers; a partially offloaded model also streams its largest CPU
layer through the first GPU's buffer for large batches, and the host keeps the input embeddings
and masks. Several devices with every layer and the output offloaded run pipeline-parallel: the
graph is split by layer device and each backend's buffer replayed on its own (``pipeline.py``,
exact against llama-server over RPC devices).
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from llamastudio.errors import InvalidInput
from llamastudio.fit.flags import ServerFlags
from llamastudio.fit.galloc import buffer_size
from llamastudio.fit.graphs import Batch, GraphAbort, Setup
from llamastudio.fit.pipeline import pipeline_parallel, split_buffers
from llamastudio.fit.stacks import build
from llamastudio.fit.usage import Context, DeviceUsage
from llamastudio.gguf import ModelFacts
from llamastudio.hardware import Gpu

HOST = "CPU"


def reserve_batches(ctx: Context) -> list[Batch]:
    """The prompt and generation batches ``sched_reserve`` builds graphs for."""
    n_seqs = max(1, ctx.n_seq)
    n_tokens = min(ctx.n_ctx, ctx.n_ubatch)
    n_outputs = min(n_tokens, ctx.n_outputs or n_seqs)
    n_tokens = -(-n_tokens // n_seqs) * n_seqs  # graph_reserve: a multiple of n_seqs
    return [Batch(n_tokens, n_seqs, n_outputs), Batch(n_seqs, n_seqs, n_seqs)]


def graph_peak(f: ModelFacts, ctx: Context, flags: ServerFlags | None = None) -> int:
    """Bytes of the compute buffer when every layer runs on one backend (the CPU's)."""
    setup = _setup(f, ctx, flags or ServerFlags())
    try:
        return max(_buffer_size(f, setup, b) for b in reserve_batches(ctx))
    except GraphAbort as exc:
        raise InvalidInput(str(exc)) from None


def _setup(f: ModelFacts, ctx: Context, flags: ServerFlags) -> Setup:
    pooling = None
    if flags.embedding or flags.reranking:  # llama_context: --pooling, else the model's, else none
        pooling = "rank" if flags.reranking else (flags.pooling or f.pooling or "none")
    return Setup(
        n_kv=ctx.kv_cells,
        n_kv_swa=ctx.kv_cells_swa,
        n_stream=ctx.n_stream,
        type_k=flags.cache_type_k,
        type_v=flags.cache_type_v,
        flash_attn=ctx.flash_attn,
        n_rs=max(1, ctx.n_seq),
        pooling=pooling,
    )


_CACHE: OrderedDict[tuple[str, Setup, Batch], int] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 512


def _graph_key(f: ModelFacts) -> str:
    """What the graph depends on: shapes and keys, not the file's sizes or quantization (the
    planner tries many layer splits and every quant of a repo has the same graph)."""
    fields = (
        f.architecture,
        f.block_count,
        f.embedding_length,
        f.head_count,
        f.head_count_kv,
        f.key_length,
        f.value_length,
        f.vocab_size,
        f.context_length,
        f.feed_forward_length,
        f.expert_count,
        f.expert_used_count,
        f.sliding_window,
        f.sliding_window_pattern,
        f.kv_lora_rank,
        f.key_length_mla,
        f.value_length_mla,
        f.ssm_conv_kernel,
        f.ssm_inner_size,
        f.ssm_state_size,
        f.ssm_time_step_rank,
        f.ssm_group_count,
        f.rope_dimension_count,
        f.pooling,
        sorted(f.non_layer_bytes),
        sorted(f.arch_keys.items(), key=lambda kv: kv[0]),
    )
    return repr(fields)


def _buffer_size(f: ModelFacts, setup: Setup, batch: Batch) -> int:
    key = (_graph_key(f), setup, batch)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    size = buffer_size(build(f, setup, batch))
    with _CACHE_LOCK:
        _CACHE[key] = size
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return size


def compute_bytes(
    f: ModelFacts,
    ctx: Context,
    placement: list[str],
    usage: dict[str, DeviceUsage],
    gpus: tuple[Gpu, ...],
    flags: ServerFlags | None = None,
) -> dict[str, int]:
    flags = flags or ServerFlags()
    if pipeline_parallel(
        gpus, placement, flags.split_mode, not flags.no_kv_offload, bool(flags.tensor_overrides())
    ):
        return _pipeline(f, ctx, placement, flags)
    peak = graph_peak(f, ctx, flags)
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


_SPLIT_CACHE: OrderedDict[tuple[str, Setup, Batch, tuple[str, ...]], dict[str, int]] = OrderedDict()


def _pipeline(f: ModelFacts, ctx: Context, placement: list[str], flags: ServerFlags) -> dict[str, int]:
    """Pipeline parallelism (``pipeline.py``): each backend's buffer from the split graph, the
    largest over the reserved batches."""
    setup = _setup(f, ctx, flags)
    out: dict[str, int] = {}
    for batch in reserve_batches(ctx):
        key = (_graph_key(f), setup, batch, tuple(placement))
        with _CACHE_LOCK:
            sizes = _SPLIT_CACHE.get(key)
        if sizes is None:
            try:
                sizes = split_buffers(build(f, setup, batch), placement)
            except GraphAbort as exc:
                raise InvalidInput(str(exc)) from None
            with _CACHE_LOCK:
                _SPLIT_CACHE[key] = sizes
                while len(_SPLIT_CACHE) > _CACHE_SIZE:
                    _SPLIT_CACHE.popitem(last=False)
        for dev, size in sizes.items():
            out[dev] = max(out.get(dev, 0), size)
    return out
