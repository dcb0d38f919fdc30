"""Where llama.cpp puts each weight, and the model buffers it logs (``load_tensors: … model buffer
size``), following ``llama_model_loader::create_tensor`` and ``llama_model_base::load_tensors``.

For each tensor, in order:

1. its layer's device (input tensors: the CPU; ``blk.N``: layer N's; the rest: the output layer's);
2. ``-ot``/``--cpu-moe``/``--n-cpu-moe``/``--n-cpu-ffn`` overrides: the first pattern that
   ``regex_search``-es the tensor name wins; ``=CPU`` sends it through the CPU's buffer list, a
   device name to that device's buffer;
3. on the CPU the buffer list is: the first GPU's pinned host buffer (``CUDA_Host``…; skipped with
   ``--no-host``), then the CPU's extra buffers (``CPU_REPACK``; skipped with ``--no-repack``), then
   the plain CPU buffer. The first that supports the tensor's op wins. A pinned host buffer
   supports everything, so with a GPU in the model's device list nothing is repacked unless
   ``--no-host``; with mmap the pinned choice turns into the mapped CPU buffer.
   CPU_REPACK takes a 2-D weight of a MUL_MAT or a 3-D weight of a MUL_MAT_ID (experts) whose
   type and row count the CPU's repack rules accept (``hardware/cpu.py``).
4. with mmap (``-lm auto|mmap|mmap+mlock``) the plain CPU tensors of each file become one
   ``CPU_Mapped`` buffer spanning the first to the last of them — tensors placed elsewhere in
   between (repacked ones included) are inside that span and stay mapped: the span is what the
   process keeps resident in page cache, the repacked copy comes on top. Without mmap each
   buffer is the sum of its tensors, each padded to the buffer's alignment.

A tied output (no ``output.weight``) uses ``token_embd`` a second time as a MUL_MAT weight on the
output layer's device; it costs a second copy only where that lands in another buffer (a GPU, or
CPU_REPACK).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field

import gguf

from llamastudio.errors import InvalidInput
from llamastudio.fit.usage import pad
from llamastudio.gguf import GGUFModel, TensorInfo
from llamastudio.hardware import Gpu
from llamastudio.hardware.cpu import repacks

HOST = "CPU"
CPU_ALIGN = 32  # TENSOR_ALIGNMENT of the CPU and CPU_REPACK buffer types
CUDA_ALIGN = 128
MATRIX_ROW_PADDING = 512  # ggml-cuda pads the last row of quantized matrices to this many values
LAZY_AUTO_MIN = 4 << 30  # -lzm auto: lazy-read only tensors larger than this
# devices whose backend offers a pinned host buffer type (ggml_backend_dev_host_buffer_type)
_HOST_BUFT = {"CUDA": "CUDA_Host", "ROCm": "ROCm_Host", "Vulkan": "Vulkan_Host", "SYCL": "SYCL_Host"}
_UNQUANTIZED = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}
_LAYER = re.compile(r"^blk\.(\d+)\.")
# llm_tensor_info ops (llama-arch.cpp) that are not a plain MUL_MAT, by tensor name
_MUL_MAT_ID = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps\.")
_GET_ROWS = re.compile(
    r"^(token_embd|position_embd|token_types|per_layer_token_embd|d2t|markov_w1|selector_predecessor|"
    r"selector_successor)\.|\.(attn_compressor_ape|indexer_compressor_ape|ffn_gate_tid2eid|"
    r"nextn\.embed_tokens|attn_rel_b|cross_attn_rel_b)\."
)
_OTHER_OP = re.compile(
    r"\.(ssm_conv1d|ple_conv1d|shortconv\.conv|ssm_a|ssm_d|attn_sinks|ffn_act|time_mix_first)\b|"
    r"^(conv1d|posnet|convnext|rope_freqs|rope_factors)|\.bias$"
)
_INPUT = ("token_embd.", "position_embd.", "token_types.", "per_layer_token_embd.")  # LLM_TENSOR_LAYER_INPUT
# per-layer embeddings that gemma4/qwen4exp read lazily (TENSOR_READ_LAZY)
_LAZY = {("gemma4", "per_layer_token_embd.weight"), ("qwen4exp", "per_layer_token_embd.weight")}


@dataclass
class Weights:
    """Model buffers per device: ``buffers[device][buffer name]`` = bytes as llama.cpp logs them;
    ``resident[device]`` = bytes the weights need in memory (host: without the mapped gaps)."""

    buffers: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    resident: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    host_mapped: int = 0  # the CPU_Mapped spans (0 without mmap)


def tensor_op(name: str) -> str:
    """The op a weight feeds: ``mul_mat``, ``mul_mat_id``, ``get_rows`` or ``other``."""
    dotted = name if name.endswith(".") else name + "."
    if _MUL_MAT_ID.search(dotted):
        return "mul_mat_id"
    if _GET_ROWS.search(dotted):
        return "get_rows"
    if _OTHER_OP.search(name):
        return "other"
    return "mul_mat"


def n_dims(shape: tuple[int, ...]) -> int:
    """ggml_n_dims: trailing dimensions of 1 do not count."""
    n = len(shape)
    while n > 1 and shape[n - 1] == 1:
        n -= 1
    return max(n, 1)


def repackable(t: TensorInfo, op: str, features: frozenset[str]) -> bool:
    """The CPU_REPACK buffer type accepts this weight (repack.cpp's supports_op + repack rules)."""
    dims = n_dims(t.shape)
    if not ((op == "mul_mat" and dims == 2) or (op == "mul_mat_id" and dims == 3)):
        return False
    return repacks(t.type_name, t.shape[1] if len(t.shape) > 1 else 1, features)


def gpu_tensor_bytes(t: TensorInfo, backend: str) -> int:
    size = t.n_bytes
    if backend in ("CUDA", "ROCm") and t.ggml_type not in _UNQUANTIZED and t.shape[0] % MATRIX_ROW_PADDING:
        block, type_size = gguf.GGML_QUANT_SIZES[t.ggml_type]
        size += type_size * (MATRIX_ROW_PADDING - t.shape[0] % MATRIX_ROW_PADDING) // block  # ggml_row_size
    return pad(size, CUDA_ALIGN)


def tensor_layer(name: str, n_layer: int) -> int | None:
    """Layer index of a tensor; None for input tensors (kept on the CPU); n_layer for output tensors."""
    m = _LAYER.match(name)
    if m:
        return min(int(m.group(1)), n_layer)
    if name.startswith(_INPUT):
        return None
    return n_layer


def compile_overrides(
    pairs: list[tuple[str, str]], gpus: tuple[Gpu, ...]
) -> list[tuple[re.Pattern[str], str]]:
    """(regex, device) for each ``pattern=buffer type``; llama.cpp refuses an unknown buffer type."""
    names = {g.device_name for g in gpus}
    out = []
    for pattern, buft in pairs:
        if buft != HOST and buft not in names:
            known = ", ".join([HOST, *sorted(names)])
            raise InvalidInput(
                f"-ot {pattern}={buft}: unknown buffer type {buft!r} (this hardware has {known})"
            )
        try:
            out.append((re.compile(pattern), buft))
        except re.error as exc:
            raise InvalidInput(f"-ot {pattern}={buft}: invalid regular expression ({exc})") from None
    return out


def place_weights(
    model: GGUFModel,
    n_layer: int,
    placement: list[str],
    gpus: tuple[Gpu, ...],
    overrides: list[tuple[re.Pattern[str], str]],
    *,
    mmap: bool,
    repack: bool,
    no_host: bool,
    features: frozenset[str],
    lazy_mode: str = "auto",
) -> Weights:
    """Bytes per device and buffer for ``model``'s tensors (see the module docstring)."""
    by_name = {g.device_name: g for g in gpus}
    host_buft = next((_HOST_BUFT[g.backend] for g in gpus if g.backend in _HOST_BUFT), None)
    if no_host:
        host_buft = None
    use_repack = repack and host_buft is None
    plain_name = "CPU_Mapped" if mmap else (host_buft or HOST)
    arch = str(model.metadata.get("general.architecture", ""))
    out = Weights()
    plain: list[TensorInfo] = []  # the plain CPU buffer's tensors (mapped range with mmap)
    lazy: list[TensorInfo] = []

    def device_of(name: str, layer: int | None) -> str:
        for regex, dev in overrides:
            if regex.search(name):
                return dev
        return HOST if layer is None else placement[layer]

    def put(t: TensorInfo, dev: str, op: str) -> str:
        if dev != HOST:
            size = gpu_tensor_bytes(t, by_name[dev].backend)
            out.buffers[dev][dev] += size
            out.resident[dev] += size
            return dev
        if use_repack and repackable(t, op, features):
            size = pad(t.n_bytes, CPU_ALIGN)
            out.buffers[HOST]["CPU_REPACK"] += size
            out.resident[HOST] += size
            return "CPU_REPACK"
        return plain_name

    for t in model.tensors:
        op = tensor_op(t.name)
        if (arch, t.name) in _LAZY and (
            lazy_mode == "on" or (lazy_mode == "auto" and t.n_bytes > LAZY_AUTO_MIN)
        ):
            lazy.append(t)  # read on demand from the mapping: its own CPU_Mapped buffer, not resident
            continue
        if put(t, device_of(t.name, tensor_layer(t.name, n_layer)), op) == plain_name:
            plain.append(t)
    names = {t.name for t in model.tensors}
    emb = next((t for t in model.tensors if t.name == "token_embd.weight"), None)
    if "output.weight" not in names and emb is not None:  # tied: token_embd again, as the output
        where = put(emb, device_of(emb.name, n_layer), "mul_mat")
        # in the buffer that already holds the input copy it is the same tensor (no second copy)
        if where == plain_name and emb not in plain:
            plain.append(emb)

    if mmap:
        out.host_mapped = _mapped_range(model, plain)
        if out.host_mapped:
            out.buffers[HOST]["CPU_Mapped"] += out.host_mapped
        out.resident[HOST] += sum(t.n_bytes for t in plain)
    else:
        size = sum(pad(t.n_bytes, CPU_ALIGN) for t in plain)
        if plain:
            out.buffers[HOST][plain_name] += size
        out.resident[HOST] += size
    if lazy:
        out.buffers[HOST]["CPU_Mapped"] += _mapped_range(model, lazy)
    return out


def _mapped_range(model: GGUFModel, tensors: list[TensorInfo]) -> int:
    """llama.cpp maps, per file, one range from the first to the last byte of its host tensors."""
    total = 0
    for part in range(len(model.parts)):
        mine = [t for t in tensors if t.part == part]
        if mine:
            total += max(t.offset + t.n_bytes for t in mine) - min(t.offset for t in mine)
    return total
