"""What the estimator returns: bytes per device and category, and the context it assumed.

Kept apart from ``estimator`` so the compute-buffer model (``compute``) can use these types
without an import cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def pad(x: int, n: int) -> int:
    return -(-x // n) * n


@dataclass
class DeviceUsage:
    name: str  # llama.cpp's device name: CPU, CUDA0, ...
    label: str  # what a person calls it
    model: int = 0
    kv: int = 0
    rs: int = 0
    output: int = 0
    compute: int = 0
    mmproj: int = 0  # the multimodal projector: weights + its compute buffer
    draft: int = 0  # the draft model of speculative decoding: all of its categories
    layers: list[int] = field(default_factory=list)
    kv_swa: int = 0  # part of kv held by sliding-window layers
    model_logged: int | None = None  # the model buffers as llama.cpp logs them (host: mapped range)
    buffers: dict[str, int] = field(default_factory=dict)  # model buffer name (CPU_Mapped …) → bytes

    @property
    def total(self) -> int:
        return self.model + self.kv + self.rs + self.output + self.compute + self.mmproj + self.draft

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "model": self.model,
            "kv": self.kv,
            "kv_swa": self.kv_swa,
            "model_logged": self.model if self.model_logged is None else self.model_logged,
            "rs": self.rs,
            "output": self.output,
            "compute": self.compute,
            "mmproj": self.mmproj,
            "draft": self.draft,
            "total": self.total,
            "layers": self.layers,
            "buffers": self.buffers,
        }


@dataclass
class Context:
    n_ctx: int
    n_ctx_seq: int
    n_seq: int
    n_stream: int
    unified: bool
    n_batch: int
    n_ubatch: int
    kv_cells: int  # cells per stream of full-attention layers
    kv_cells_swa: int  # cells per stream of sliding-window layers (0 if none)
    flash_attn: bool
    # logits rows the graph reserves (llama.cpp's n_outputs_max): one per sequence; every token of
    # a micro-batch with embeddings on; n_seq·(draft max + 1) for a model verifying drafts
    n_outputs: int = 0


@dataclass
class Estimate:
    devices: list[DeviceUsage]  # GPUs in order, then the host ("CPU")
    context: Context
    n_gpu_layers: int  # effective: layers (incl. the output layer) on GPUs
    host_mapped: int  # bytes of the file mapped for host weights (mmap), for reference
    notes: list[str] = field(default_factory=list)

    def device(self, name: str) -> DeviceUsage:
        return next(d for d in self.devices if d.name == name)

    @property
    def host(self) -> DeviceUsage:
        return self.devices[-1]

    def to_json(self) -> dict[str, Any]:
        c = self.context
        return {
            "devices": [d.to_json() for d in self.devices],
            "n_ctx": c.n_ctx,
            "n_ctx_seq": c.n_ctx_seq,
            "n_seq": c.n_seq,
            "n_stream": c.n_stream,
            "kv_unified": c.unified,
            "kv_cells": c.kv_cells * c.n_stream,
            "kv_cells_swa": c.kv_cells_swa * c.n_stream,
            "n_batch": c.n_batch,
            "n_ubatch": c.n_ubatch,
            "flash_attn": c.flash_attn,
            "n_gpu_layers": self.n_gpu_layers,
            "host_mapped": self.host_mapped,
            "notes": self.notes,
        }
