"""A tiny real vision pair for the tests: a text LLM GGUF and its mmproj GGUF (LLaVA "mlp" projector).

The mmproj mirrors what ``tools/mtmd/clip.cpp`` loads for ``clip.projector_type = "mlp"`` (a CLIP
ViT, then ``mm.0`` → GELU → ``mm.2``), at toy sizes with random weights, so the real llama-server
loads it with ``--mmproj`` and encodes an image on CPU in milliseconds. Any image is resized to
``IMAGE_SIZE``² and becomes exactly ``IMAGE_TOKENS`` = (IMAGE_SIZE / PATCH_SIZE)² = 16 prompt tokens.

Measured on the rig's llama-server (b11434): a chat message's ``usage.prompt_tokens`` grows by
IMAGE_TOKENS + 1 when an image part is added (31 → 48): the text after the image is tokenized on
its own and the SPM vocab adds one token there. A second image in the same message adds exactly
IMAGE_TOKENS (48 → 64), so compare one image against two for an exact count.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from tests.rig import binaries
from tests.rig.factory import BUILDERS, Vocab, _Model

TEXT_ARCH = "llama"
TEXT_N_EMBD = 256  # BUILDERS["llama"]'s width: the projector's output must equal it
PROJECTOR_TYPE = "mlp"


@dataclass(frozen=True)
class VisionShape:
    """The ViT's hyperparameters (``clip.vision.*``); the "mlp" graph runs the first n_layer − 1 blocks."""

    image_size: int = 32
    patch_size: int = 8
    n_embd: int = 64
    n_head: int = 4
    n_ff: int = 128  # must differ from n_embd: see the ffn note in write_mmproj
    n_layer: int = 2
    projection_dim: int = 64

    @property
    def image_tokens(self) -> int:
        """Tokens one image becomes in the text model's prompt (the "mlp" projector keeps every patch)."""
        return (self.image_size // self.patch_size) ** 2


TINY = VisionShape()
IMAGE_SIZE = TINY.image_size
PATCH_SIZE = TINY.patch_size
IMAGE_TOKENS = TINY.image_tokens  # 16


def write_mmproj(path: Path, n_embd: int = TEXT_N_EMBD, shape: VisionShape = TINY, seed: int = 11) -> None:
    """An mmproj whose projection width (``mm.2.weight`` ne[1]) is ``n_embd``."""
    v = shape
    m = _Model("clip", v.n_embd, Vocab([], [], [], 0, 0, 0), seed)
    m.mat("v.patch_embd.weight", v.patch_size, v.patch_size, 3, v.n_embd)
    m.vec("v.class_embd", v.n_embd, value=None)
    m.mat("v.position_embd.weight", v.n_embd, v.image_tokens + 1)  # + the class embedding
    m.vec("v.pre_ln.weight", v.n_embd)
    m.vec("v.pre_ln.bias", v.n_embd, value=0.0)
    for i in range(v.n_layer):
        p = f"v.blk.{i}"
        for ln in ("ln1", "ln2"):
            m.vec(f"{p}.{ln}.weight", v.n_embd)
            m.vec(f"{p}.{ln}.bias", v.n_embd, value=0.0)
        for proj in ("attn_q", "attn_k", "attn_v", "attn_out"):
            m.mat(f"{p}.{proj}.weight", v.n_embd, v.n_embd)
            m.vec(f"{p}.{proj}.bias", v.n_embd, value=0.0)
        # ffn_down's ne[0] must be n_ff (≠ n_embd), else clip.cpp swaps up/down as a legacy export
        m.mat(f"{p}.ffn_up.weight", v.n_embd, v.n_ff)
        m.vec(f"{p}.ffn_up.bias", v.n_ff, value=0.0)
        m.mat(f"{p}.ffn_down.weight", v.n_ff, v.n_embd)
        m.vec(f"{p}.ffn_down.bias", v.n_embd, value=0.0)
    m.mat("mm.0.weight", v.n_embd, n_embd)
    m.vec("mm.0.bias", n_embd, value=0.0)
    m.mat("mm.2.weight", n_embd, n_embd)
    m.vec("mm.2.bias", n_embd, value=0.0)

    w = gguf.GGUFWriter(path, "clip")
    w.add_name("tiny-llava-mmproj")
    w.add_description("tiny LLaVA-style vision projector for tests")
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_bool("clip.has_text_encoder", False)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_llava_projector", True)
    w.add_string("clip.projector_type", PROJECTOR_TYPE)
    w.add_bool("clip.use_gelu", False)
    w.add_uint32("clip.vision.image_size", v.image_size)
    w.add_uint32("clip.vision.patch_size", v.patch_size)
    w.add_uint32("clip.vision.embedding_length", v.n_embd)
    w.add_uint32("clip.vision.feed_forward_length", v.n_ff)
    w.add_uint32("clip.vision.projection_dim", v.projection_dim)
    w.add_uint32("clip.vision.attention.head_count", v.n_head)
    w.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    w.add_uint32("clip.vision.block_count", v.n_layer)
    w.add_array("clip.vision.image_mean", [0.48145466, 0.4578275, 0.40821073])
    w.add_array("clip.vision.image_std", [0.26862954, 0.26130258, 0.27577711])
    m.finish(w)


def write_mismatched_mmproj(path: Path, n_embd: int = TEXT_N_EMBD // 2) -> Path:
    """An mmproj that projects to ``n_embd`` (default: half the text model's width, so it does not fit)."""
    write_mmproj(path, n_embd=n_embd)
    return path


def write_vision_pair(directory: Path, vocab: Vocab | None = None) -> tuple[Path, Path]:
    """(text model, mmproj) in ``directory``, deterministic; the vocab defaults to the source tree's."""
    if vocab is None:
        vocab = Vocab.from_gguf(binaries.source_dir() / "models" / "ggml-vocab-llama-spm.gguf")
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / "tiny-llava.gguf"
    mmproj = directory / "mmproj-tiny-llava.gguf"
    BUILDERS[TEXT_ARCH](model, vocab)
    write_mmproj(mmproj)
    return model, mmproj


def png_bytes(width: int = 48, height: int = 40) -> bytes:
    """A valid 8-bit RGB PNG with a deterministic gradient (no Pillow in the venv)."""
    x = np.arange(width, dtype=np.uint32)
    y = np.arange(height, dtype=np.uint32)[:, None]
    rgb = np.stack(
        np.broadcast_arrays((x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)), (x + y) % 256),
        axis=-1,
    ).astype(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rgb)  # filter type 0 per scanline

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
