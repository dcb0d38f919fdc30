"""The llama-server flags that decide memory (``ServerFlags``), rendered to llama-server's argv;
``argv.py`` reads them from a command line and spells them for an engine's ``--help``.

Names and short forms are llama-server's own (``-c/--ctx-size``, ``-ngl``, ``-ctk`` …) so a user
can paste their command line. Defaults are llama-server's defaults in the pinned version (b11434).
Every other flag of that version's ``--help`` (``catalog.py``) is kept, with its values, in
``extra``; ``not_modelled`` names those of them that can change memory.

Loading (``-lm/--load-mode``, b11434's replacement for ``--no-mmap``/``--mlock``, which it no
longer has): ``auto`` and ``mmap`` map the file; ``mmap+mlock`` maps and locks it; ``none``,
``mlock`` (no map, locked buffers) and ``dio`` (direct I/O) read it into buffers. The older
spellings are parsed into the same field, and ``argv.spell`` writes whichever the engine knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import gguf

from llamastudio.errors import InvalidInput
from llamastudio.fit.catalog import CANONICAL, NOT_MODELLED

FlashAttn = Literal["on", "off", "auto"]
SplitMode = Literal["none", "layer", "row", "tensor"]
GPU_LAYERS_AUTO = -1
GPU_LAYERS_ALL = -2
POOLING_TYPES = ("none", "mean", "cls", "last", "rank")
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")
LAZY_MODES = ("auto", "on", "off")
EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"  # common.h LLM_FFN_EXPS_REGEX
DENSE_FFN_REGEX = r"\.ffn_(up|down|gate)\."  # common.h LLM_FFN_DENSE_REGEX


@dataclass(frozen=True, slots=True)
class ServerFlags:
    ctx_size: int = 0  # 0 = the model's training context
    parallel: int = -1  # -1 = auto: 4 slots with unified KV
    kv_unified: bool | None = None  # None = llama-server's default (true only with auto parallel)
    n_gpu_layers: int = GPU_LAYERS_AUTO
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: FlashAttn = "auto"
    batch_size: int = 2048
    ubatch_size: int = 512
    tensor_split: tuple[float, ...] = ()
    split_mode: SplitMode = "layer"
    main_gpu: int = 0
    n_cpu_moe: int = 0
    cpu_moe: bool = False
    n_cpu_ffn: int = 0  # -ncffn: the dense FFN weights of the first N layers stay on the CPU
    override_tensor: tuple[str, ...] = ()  # -ot "pattern=buffer type" entries, in order
    no_kv_offload: bool = False
    swa_full: bool = False
    kv_unified_per_slot: int = 0  # with -c unset: n_ctx = slots · this
    load_mode: str = "auto"
    lazy_mode: str = "auto"
    repack: bool = True  # -nr/--no-repack: no CPU_REPACK buffer
    no_host: bool = False  # --no-host: no pinned host buffer for CPU weights (lets repack happen)
    device: tuple[str, ...] = ()  # -dev: restrict to these devices (CUDA0,CUDA1); () = all
    # a vision model's projector: a path or library id (serving resolves it); auto = the model's
    # companion mmproj file; offload = on the first GPU (else the host)
    mmproj: str | None = None
    mmproj_auto: bool = True
    mmproj_offload: bool = True
    # speculative decoding: the draft model (a path or library id) and where it runs
    draft_model: str | None = None
    draft_gpu_layers: int = GPU_LAYERS_AUTO
    draft_device: tuple[str, ...] = ()
    cache_type_k_draft: str = "f16"
    cache_type_v_draft: str = "f16"
    draft_max: int | None = None
    draft_min: int | None = None
    # embedding / reranking models (set by the studio from the model's purpose, or by hand)
    embedding: bool = False
    reranking: bool = False
    pooling: str | None = None
    extra: tuple[str, ...] = field(default=())  # flags we pass through untouched

    @property
    def n_seq(self) -> int:
        return 4 if self.parallel < 0 else max(1, self.parallel)

    @property
    def unified(self) -> bool:
        if self.kv_unified is not None:
            return self.kv_unified
        return self.parallel < 0

    @property
    def mmap(self) -> bool:
        return self.load_mode in ("auto", "mmap", "mmap+mlock")

    @property
    def no_mmap(self) -> bool:
        return not self.mmap

    @property
    def mlock(self) -> bool:
        return self.load_mode in ("mlock", "mmap+mlock")

    def tensor_overrides(self) -> list[tuple[str, str]]:
        """(pattern, buffer type) in the order llama.cpp tries them: -ot entries, then --cpu-moe,
        --n-cpu-moe and --n-cpu-ffn (llama.cpp keeps command-line order; the studio renders this
        one, so what it estimates is what it runs)."""
        out = [tuple(e.rsplit("=", 1)) for e in self.override_tensor]
        if self.cpu_moe:
            out.append((EXPS_REGEX, "CPU"))
        out += [(rf"blk\.{i}{EXPS_REGEX}", "CPU") for i in range(self.n_cpu_moe)]
        out += [(rf"blk\.{i}{DENSE_FFN_REGEX}", "CPU") for i in range(self.n_cpu_ffn)]
        return out  # type: ignore[return-value]

    def with_(self, **changes: object) -> ServerFlags:
        return replace(self, **changes)  # type: ignore[arg-type]

    def to_pairs(self) -> list[tuple[str, list[str]]]:
        """(flag, values) for every flag that differs from llama-server's default, extras excluded."""
        d = ServerFlags()
        out: list[tuple[str, list[str]]] = []
        if self.ctx_size != d.ctx_size:
            out.append(("-c", [str(self.ctx_size)]))
        if self.parallel != d.parallel:
            out.append(("-np", [str(self.parallel)]))
        if self.kv_unified is not None and self.kv_unified != (self.parallel < 0):
            out.append(("-kvu" if self.kv_unified else "-no-kvu", []))
        if self.n_gpu_layers != d.n_gpu_layers:
            ngl = self.n_gpu_layers
            out.append(("-ngl", ["all" if ngl == GPU_LAYERS_ALL else str(ngl)]))
        for flag, name in (
            ("-ctk", "cache_type_k"),
            ("-ctv", "cache_type_v"),
            ("-fa", "flash_attn"),
            ("-sm", "split_mode"),
        ):
            if getattr(self, name) != getattr(d, name):
                out.append((flag, [str(getattr(self, name))]))
        for flag, name in (("-b", "batch_size"), ("-ub", "ubatch_size"), ("-mg", "main_gpu")):
            if getattr(self, name) != getattr(d, name):
                out.append((flag, [str(getattr(self, name))]))
        if self.tensor_split:
            out.append(("-ts", [",".join(f"{x:g}" for x in self.tensor_split)]))
        if self.override_tensor:
            out.append(("-ot", [",".join(self.override_tensor)]))
        if self.cpu_moe:
            out.append(("--cpu-moe", []))
        elif self.n_cpu_moe:
            out.append(("--n-cpu-moe", [str(self.n_cpu_moe)]))
        if self.n_cpu_ffn:
            out.append(("-ncffn", [str(self.n_cpu_ffn)]))
        if self.device:
            out.append(("-dev", [",".join(self.device)]))
        for flag, name in (("-nkvo", "no_kv_offload"), ("--swa-full", "swa_full"), ("--no-host", "no_host")):
            if getattr(self, name):
                out.append((flag, []))
        if not self.repack:
            out.append(("-nr", []))
        if self.kv_unified_per_slot:
            out.append(("--kv-unified-per-slot", [str(self.kv_unified_per_slot)]))
        if self.load_mode != d.load_mode:
            out.append(("-lm", [self.load_mode]))
        if self.lazy_mode != d.lazy_mode:
            out.append(("-lzm", [self.lazy_mode]))
        if self.mmproj:
            out.append(("-mm", [self.mmproj]))
        elif not self.mmproj_auto:
            out.append(("--no-mmproj", []))
        if not self.mmproj_offload:
            out.append(("--no-mmproj-offload", []))
        if self.draft_model:
            out.append(("-md", [self.draft_model]))
            if self.draft_gpu_layers != d.draft_gpu_layers:
                ngl = self.draft_gpu_layers
                out.append(("-ngld", ["all" if ngl == GPU_LAYERS_ALL else str(ngl)]))
            if self.draft_device:
                out.append(("-devd", [",".join(self.draft_device)]))
            for flag, name in (("-ctkd", "cache_type_k_draft"), ("-ctvd", "cache_type_v_draft")):
                if getattr(self, name) != getattr(d, name):
                    out.append((flag, [str(getattr(self, name))]))
            for flag, name in (("--spec-draft-n-max", "draft_max"), ("--spec-draft-n-min", "draft_min")):
                if getattr(self, name) is not None:
                    out.append((flag, [str(getattr(self, name))]))
        if self.embedding:
            out.append(("--embedding", []))
        if self.reranking:
            out.append(("--reranking", []))
        if self.pooling:
            out.append(("--pooling", [self.pooling]))
        return out

    def to_args(self) -> list[str]:
        """The argv fragment for llama-server: only flags that differ from its defaults."""
        return [x for flag, values in self.to_pairs() for x in (flag, *values)] + list(self.extra)


def not_modelled(flags: ServerFlags) -> list[str]:
    """``flag: what it changes`` for each flag of ``extra`` that can change memory but is not
    modelled, and for modelled flags whose model is partial."""
    out: dict[str, str] = {}
    for token in flags.extra:
        flag = token.partition("=")[0] if token.startswith("--") else token
        canonical = CANONICAL.get(flag)
        if canonical in NOT_MODELLED:
            out.setdefault(flag, NOT_MODELLED[canonical])
    if flags.split_mode == "row":
        out["-sm row"] = "each matrix's rows are spread over the GPUs by -ts; estimated as whole layers"
    if flags.split_mode == "tensor":
        out["-sm tensor"] = "tensor parallelism over a meta device; estimated as whole layers"
    return [f"{flag}: {why}" for flag, why in out.items()]


def validate(flags: ServerFlags) -> None:
    """Combinations llama.cpp itself refuses."""
    if flags.cache_type_v not in ("f16", "f32", "bf16") and flags.flash_attn == "off":
        raise InvalidInput("a quantized V cache (-ctv) requires flash attention (-fa on or auto)")


def cache_row_bytes(cache_type: str, n: int) -> int:
    """Bytes of a row of ``n`` values in a KV cache of ``cache_type`` (block-quantized)."""
    qtype = gguf.GGMLQuantizationType[cache_type.upper()]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return n // block * size
