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

from llamastudio.fit.flags import ServerFlags
from llamastudio.gguf import GGUFModel

# llama-server refuses an input longer than -ub for bidirectional (embedding, rerank) models; the
# studio raises -b/-ub to the model's training context, up to this bound
MAX_EMBED_BATCH = 8192


@dataclass(frozen=True)
class Companions:
    mmproj: GGUFModel | None = None
    draft: GGUFModel | None = None

    def __bool__(self) -> bool:
        return self.mmproj is not None or self.draft is not None


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
        no_mmap=flags.no_mmap,
    )


def projector_compute(mmproj: GGUFModel, backend: str) -> int:
    """The projector's compute buffer (its graph for the largest image it takes)."""
    return 0
