"""Per-device memory of a llama-server process, following llama.cpp's own arithmetic.

Exact (to the byte of llama.cpp's sizing rules) for weights, KV cache, recurrent state and the
output buffer; compute buffers are a calibrated model (see ``compute.py``). Rules and their
sources are in ../shared/reference/llama-memory.md; where each weight goes (GPU, mapped file,
pinned host buffer, CPU_REPACK) is ``weights.py``. Deviations found on the real binary are noted
where they are handled.
"""

from __future__ import annotations

import bisect

import gguf

from llamastudio.errors import InvalidInput
from llamastudio.fit.arch import attention_layers, recurrent_layers, recurrent_state_floats, swa_layers
from llamastudio.fit.companions import Companions, draft_flags, projector_compute, projector_weights
from llamastudio.fit.compute import compute_bytes
from llamastudio.fit.flags import (
    GPU_LAYERS_ALL,
    GPU_LAYERS_AUTO,
    ServerFlags,
    cache_row_bytes,
    not_modelled,
    validate,
)
from llamastudio.fit.usage import Context as Context
from llamastudio.fit.usage import DeviceUsage as DeviceUsage
from llamastudio.fit.usage import Estimate as Estimate
from llamastudio.fit.usage import pad as pad
from llamastudio.fit.weights import compile_overrides, place_weights
from llamastudio.gguf import GGUFModel, ModelFacts, facts_from_model
from llamastudio.hardware import Gpu
from llamastudio.hardware.cpu import host_features, repack_notes

HOST = "CPU"
DRAFT_MAX_DEFAULT = 3  # llama-server's --spec-draft-n-max


def resolve_context(f: ModelFacts, flags: ServerFlags, gpus: tuple[Gpu, ...] = ()) -> Context:
    """n_ctx/n_ctx_seq/streams/batches as llama_context computes them (llama-context.cpp)."""
    n_ctx_train = f.context_length or 4096
    per_slot = flags.n_seq * flags.kv_unified_per_slot  # llama-server sizes -c from it when unset
    raw_ctx = flags.ctx_size or per_slot or n_ctx_train
    n_ctx = pad(raw_ctx, 256)
    n_seq = flags.n_seq
    unified = flags.unified
    if unified:
        n_ctx_seq, n_stream = n_ctx, 1
    else:
        n_ctx_seq = pad(n_ctx // n_seq, 256)
        n_ctx, n_stream = n_ctx_seq * n_seq, n_seq
    n_batch = min(raw_ctx, flags.batch_size)  # llama_context: -c before padding and splitting
    n_ubatch = min(n_batch, flags.ubatch_size)
    if flags.embedding or flags.reranking:
        n_batch = n_ubatch  # llama-server: "embeddings enabled ... setting n_batch = n_ubatch"
    n_outputs = n_seq
    if flags.embedding or flags.reranking:
        n_outputs = n_ubatch
    elif flags.draft_model:
        n_outputs = n_seq * ((flags.draft_max if flags.draft_max is not None else DRAFT_MAX_DEFAULT) + 1)
    fa = flags.flash_attn == "on" or (flags.flash_attn == "auto" and all(g.flash_attn for g in gpus))
    swa = any(swa_layers(f))
    cells_swa = 0
    if swa:
        cells_swa = (
            n_ctx_seq
            if flags.swa_full
            else pad(min(n_ctx_seq, (f.sliding_window or 0) * (n_seq if unified else 1) + n_ubatch), 256)
        )
    return Context(
        n_ctx, n_ctx_seq, n_seq, n_stream, unified, n_batch, n_ubatch, n_ctx_seq, cells_swa, fa, n_outputs
    )


def layer_devices(n_layer: int, flags: ServerFlags, gpus: tuple[Gpu, ...]) -> list[str]:
    """Device of each layer 0..n_layer (index n_layer is the output layer), as llama-model.cpp places them."""
    if not gpus:
        return [HOST] * (n_layer + 1)
    ngl = flags.n_gpu_layers
    if ngl in (GPU_LAYERS_AUTO, GPU_LAYERS_ALL) or ngl > n_layer + 1:
        ngl = n_layer + 1
    ngl = max(ngl, 0)
    i_gpu_start = max(n_layer + 1 - ngl, 0)
    act = min(ngl, n_layer + 1)
    if flags.split_mode == "none":
        fractions = [1.0 if i == flags.main_gpu else 0.0 for i in range(len(gpus))]
    elif flags.tensor_split:
        fractions = [flags.tensor_split[i] if i < len(flags.tensor_split) else 0.0 for i in range(len(gpus))]
    else:
        fractions = [float(g.free) for g in gpus]
    total = sum(fractions) or 1.0
    cum, acc = [], 0.0
    for x in fractions:
        acc += x
        cum.append(acc / total)
    out = []
    for il in range(n_layer + 1):
        if il < i_gpu_start:
            out.append(HOST)
            continue
        idx = min(bisect.bisect_right(cum, (il - i_gpu_start) / act), len(gpus) - 1)
        out.append(gpus[idx].device_name)
    return out


def model_devices(flags: ServerFlags, gpus: tuple[Gpu, ...]) -> tuple[Gpu, ...]:
    """The GPUs llama.cpp gives the model (llama_prepare_model_devices): those ``-dev`` names
    (``-dev none``: none), and with ``-sm none`` only the ``-mg`` one."""
    if flags.device:
        gpus = tuple(g for g in gpus if g.device_name in flags.device)
    if flags.split_mode == "none" and gpus:
        gpus = (gpus[min(flags.main_gpu, len(gpus) - 1)],)
    return gpus


def estimate(
    model: GGUFModel,
    flags: ServerFlags | None = None,
    gpus: tuple[Gpu, ...] = (),
    facts: ModelFacts | None = None,
    cpu: frozenset[str] | None = None,
    companions: Companions | None = None,
    *,
    n_outputs: int | None = None,
) -> Estimate:
    """Bytes per device per category for ``llama-server -m model <flags>`` on ``gpus`` (+ host).

    ``cpu``: the CPU features that decide repacking (``hardware/cpu.py``; default: this host's);
    ``companions``: the projector and draft model loaded beside it (``companions.py``);
    ``n_outputs``: logits rows the graph reserves, when not llama-server's (``fitparams.py``).
    """
    features = host_features() if cpu is None else cpu
    flags = flags or ServerFlags()
    validate(flags)
    f = facts or facts_from_model(model)
    active = model_devices(flags, gpus)
    ctx = resolve_context(f, flags, active)
    if n_outputs is not None:
        ctx.n_outputs = n_outputs
    if flags.cache_type_v not in ("f16", "f32", "bf16") and not ctx.flash_attn:
        raise InvalidInput("a quantized V cache requires flash attention, which is off for these devices")
    _check_cache_blocks(f, flags)
    n_layer = f.block_count
    placement = layer_devices(n_layer, flags, active)
    usage = {g.device_name: DeviceUsage(g.device_name, g.name) for g in gpus}
    host = DeviceUsage(HOST, "host")
    usage[HOST] = host
    for il, dev in enumerate(placement[:n_layer]):
        usage[dev].layers.append(il)
    notes: list[str] = []

    # weights: per device and buffer (weights.py); the host's logged figure is its buffers'
    # sum (the CPU_Mapped span included), the budget figure what stays resident
    weights = place_weights(
        model,
        n_layer,
        placement,
        active,
        compile_overrides(flags.tensor_overrides(), active),
        mmap=flags.mmap,
        repack=flags.repack,
        no_host=flags.no_host,
        features=features,
        lazy_mode=flags.lazy_mode,
    )
    for dev, size in weights.resident.items():
        usage[dev].model += size
    for dev, buffers in weights.buffers.items():
        usage[dev].buffers = dict(buffers)
    host.model_logged = sum(weights.buffers[HOST].values())
    if flags.load_mode == "mmap+mlock":
        host.model = host.model_logged  # the whole mapped span is locked in memory
    host_mapped = weights.host_mapped

    # KV cache and recurrent state, each on its layer's device (or the host with -nkvo)
    # bidirectional (encoder) models keep no KV cache: each input is one micro-batch
    attn = attention_layers(f) if f.arch_keys.get("causal") is not False else [False] * n_layer
    swa = swa_layers(f)
    is_mla = f.key_length_mla is not None and f.kv_lora_rank is not None
    v_dims = [f.value_length * f.n_head_kv(il) for il in range(n_layer) if attn[il]]
    v_max = max(v_dims, default=0)
    for il in range(n_layer):
        if not attn[il]:
            continue
        cells = ctx.kv_cells_swa if swa[il] else ctx.kv_cells
        k_dim = f.key_length * f.n_head_kv(il)
        v_dim = 0 if is_mla else (f.value_length * f.n_head_kv(il) if ctx.flash_attn else v_max)
        size = (_row(flags.cache_type_k, k_dim) + (_row(flags.cache_type_v, v_dim) if v_dim else 0)) * cells
        size *= ctx.n_stream
        dev = HOST if flags.no_kv_offload else placement[il]
        usage[dev].kv += size
        if swa[il]:
            usage[dev].kv_swa += size
    rec = recurrent_layers(f)
    if any(rec):
        r, s = recurrent_state_floats(f)
        for il in range(n_layer):
            if rec[il]:
                usage[placement[il]].rs += (r + s) * 4 * max(1, ctx.n_seq)

    # output logits: host memory (pinned when a GPU is used), n_vocab floats per output row
    # (+ n_embd floats per row with embeddings on: llama_context::output_reserve)
    embd_rows = f.embedding_length if flags.embedding or flags.reranking else 0
    host.output = 4 * (f.vocab_size + embd_rows) * ctx.n_seq

    for dev_usage, cb in compute_bytes(f, ctx, placement, usage, active, flags).items():
        usage[dev_usage].compute = cb

    if companions is not None:
        _add_companions(companions, flags, ctx, gpus, usage, features)

    notes += [f"not modelled: {line}" for line in not_modelled(flags)]
    if host.model:
        notes += repack_notes(features)
    ngl_eff = sum(1 for d in placement if d != HOST)
    if gpus and flags.n_gpu_layers == GPU_LAYERS_AUTO:
        notes.append("-ngl auto: estimated with every layer on the GPUs (llama.cpp's --fit may lower it)")
    devices = [usage[g.device_name] for g in gpus] + [host]
    return Estimate(devices, ctx, ngl_eff, host_mapped, notes)


def _add_companions(
    extra: Companions,
    flags: ServerFlags,
    ctx: Context,
    gpus: tuple[Gpu, ...],
    usage: dict[str, DeviceUsage],
    features: frozenset[str],
) -> None:
    if extra.mmproj is not None:
        offload = [g for g in gpus if not flags.device or g.device_name in flags.device]
        dev = offload[0].device_name if offload and flags.mmproj_offload else HOST
        usage[dev].mmproj += projector_weights(extra.mmproj) + projector_compute(extra.mmproj, ctx.flash_attn)
    if extra.draft is not None:
        draft = estimate(extra.draft, draft_flags(flags, ctx.n_ctx), gpus, cpu=features)
        for d in draft.devices:
            usage[d.name].draft += d.total


def _check_cache_blocks(f: ModelFacts, flags: ServerFlags) -> None:
    """llama_init_from_model refuses a cache type whose block size does not divide the head size."""
    for which, cache_type, head in (
        ("K", flags.cache_type_k, f.key_length),
        ("V", flags.cache_type_v, f.value_length),
    ):
        block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[cache_type.upper()]][0]
        if head and head % block:
            raise InvalidInput(
                f"{which} cache type {cache_type} with block size {block} "
                f"does not divide the head size {head}"
            )


def _row(cache_type: str, n: int) -> int:
    try:
        return cache_row_bytes(cache_type, n)
    except KeyError:
        raise InvalidInput(f"unknown cache type {cache_type!r}") from None
