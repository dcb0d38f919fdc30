"""Memory of what loads beside a model: its multimodal projector (``--mmproj``) and the draft
model of speculative decoding (``-md``).

The projector (``tools/mtmd/clip.cpp``) loads every tensor of the mmproj file into one buffer on
its backend — the first GPU llama-server uses, or the CPU with ``--no-mmproj-offload`` or no GPU —
and reserves a compute buffer for the largest image it may encode (see ``projector_compute``).

The draft model is a second ``llama_model`` + ``llama_context`` in the same process (server's
``common_speculative``): its weights on its own ``-ngld``/``-devd`` placement, and a context of
the same size as the target's with its own KV cache (``-ctkd``/``-ctvd``) and compute buffers, so
it is estimated with the same arithmetic as any model.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamastudio.errors import InvalidInput
from llamastudio.fit.flags import ServerFlags
from llamastudio.gguf import GGUFModel
from llamastudio.gguf.roles import draft_mismatch, projector_mismatch

# llama-server refuses an input longer than -ub for bidirectional (embedding, rerank) models; the
# studio raises -b/-ub to the model's training context, up to this bound
MAX_EMBED_BATCH = 8192


@dataclass(frozen=True)
class Companions:
    mmproj: GGUFModel | None = None
    draft: GGUFModel | None = None

    def __bool__(self) -> bool:
        return self.mmproj is not None or self.draft is not None

    def check(self, model: GGUFModel, n_embd: int) -> None:
        """Refuse what llama-server would refuse, before anything loads: a projector of another
        width (or no projector at all), a draft model whose vocabulary differs."""
        if self.mmproj is not None:
            shapes = {t.name: t.shape for t in self.mmproj.tensors}
            problem = projector_mismatch(self.mmproj.metadata, shapes, n_embd)
            if problem:
                raise InvalidInput(f"the projector {self.mmproj.location} does not fit this model: {problem}")
        if self.draft is not None:
            problem = draft_mismatch(model.metadata, self.draft.metadata)
            if problem:
                raise InvalidInput(f"the draft model {self.draft.location} cannot draft for it: {problem}")


def projector_weights(mmproj: GGUFModel) -> int:
    """Bytes of the projector's weight buffer: every tensor of the file."""
    return sum(t.n_bytes for t in mmproj.tensors)


def draft_flags(flags: ServerFlags, n_ctx: int) -> ServerFlags:
    """The flags the draft model's context is made with: the target's context, slots and batch
    sizes; its own layers, devices and cache types."""
    return ServerFlags(
        ctx_size=n_ctx,
        parallel=flags.parallel,
        kv_unified=flags.kv_unified,
        n_gpu_layers=flags.draft_gpu_layers,
        cache_type_k=flags.cache_type_k_draft,
        cache_type_v=flags.cache_type_v_draft,
        flash_attn=flags.flash_attn,
        batch_size=flags.batch_size,
        ubatch_size=flags.ubatch_size,
        device=flags.draft_device or flags.device,
        load_mode=flags.load_mode,
        repack=flags.repack,
        no_host=flags.no_host,
    )


# dynamic-resolution projectors reserve for a warm-up image of k² merged tokens (clip.cpp's
# set_warmup_n_tokens); every other type warms up with one image of clip.vision.image_size
_WARMUP_TOKENS = {
    **dict.fromkeys(
        ("qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger", "glm4v", "dots_ocr", "mimovl"), 46 * 46
    ),
    **dict.fromkeys(("pixtral", "lightonocr", "kimivl", "gemma4v", "minimax_m3", "youtuvl", "phi4"), 256),
    **dict.fromkeys(("hunyuanvl",), 32 * 32),
    **dict.fromkeys(("paddleocr",), 28 * 28),
}


def _int(meta: dict[str, object], key: str, default: int) -> int:
    v = meta.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else default


def projector_compute(mmproj: GGUFModel, flash_attn: bool = True) -> int:
    """The projector's compute buffer: the peak of its graph for the warm-up image (clip.cpp's
    ``warmup``), following the ViT's shape. Fitted for the ``mlp`` (LLaVA) projector on the real
    binary (CPU) over 55 shapes: 0.90–1.64× of the logged buffer, exact on ViT-L/14-336; other
    types use the same ViT terms at their warm-up size (from the source, not measured)."""
    meta = mmproj.metadata
    shapes = {t.name: t.shape for t in mmproj.tensors}
    proj = str(meta.get("clip.projector_type") or meta.get("clip.vision.projector_type") or "")
    patch = _int(meta, "clip.vision.patch_size", 14)
    merge = _int(meta, "clip.vision.projector.scale_factor", 1)
    side = _int(meta, "clip.vision.image_size", 224)
    if proj in _WARMUP_TOKENS:
        k = int(_WARMUP_TOKENS[proj] ** 0.5)
        side = k * patch * merge
    e = _int(meta, "clip.vision.embedding_length", 0)
    ff = _int(meta, "clip.vision.feed_forward_length", 4 * e)
    heads = _int(meta, "clip.vision.attention.head_count", 1)
    if not e:
        return 0  # an audio-only projector: not modelled
    patches = (side // patch) ** 2
    n = patches + (1 if "v.class_embd" in shapes else 0)
    c_in = 6 * side * side + 4 * n * 6 * e
    c_ffn = 12 * side * side + 4 * n * (ff + 4 * e)
    widths = [shapes[t][1] for t in ("mm.0.weight", "mm.2.weight") if t in shapes and len(shapes[t]) > 1]
    c_proj = 4 * patches * sum(widths) + 4 * n * e
    peak = max(c_in, c_ffn, c_proj)
    if not flash_attn:
        peak = max(peak, 4 * n * n * heads + 4 * n * 5 * e)  # f32 KQ for every head
    return peak
