"""Compute-buffer model: llama.cpp sizes these as ggml-alloc's peak over a worst-case graph,
which has no closed form. This is a model of that peak, calibrated against the real binary
(``bench/estimate_accuracy.py`` prints its error)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamastudio.gguf import ModelFacts
from llamastudio.hardware import Gpu

if TYPE_CHECKING:
    from llamastudio.fit.estimator import Context, DeviceUsage


def compute_bytes(
    f: ModelFacts, ctx: Context, placement: list[str], usage: dict[str, DeviceUsage], gpus: tuple[Gpu, ...]
) -> dict[str, int]:
    n_ub = ctx.n_ubatch
    n_outputs = min(n_ub, ctx.n_seq)
    logits = 4 * f.vocab_size * n_outputs
    act = 4 * n_ub * f.embedding_length * 4
    return {"CPU": logits + act}
