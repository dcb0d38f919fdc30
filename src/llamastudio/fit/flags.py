"""The llama-server flags that decide memory, parsed from and rendered to llama-server's argv.

Names and short forms are llama-server's own (``-c/--ctx-size``, ``-ngl``, ``-ctk`` …) so a user
can paste their command line. Defaults are llama-server's defaults in the pinned version (b11434).
Every other flag of that version's ``--help`` (``catalog.py``) is kept, with its values, in
``extra``; ``not_modelled`` names those of them that can change memory.

Loading (``-lm/--load-mode``, b11434's replacement for ``--no-mmap``/``--mlock``, which it no
longer has): ``auto`` and ``mmap`` map the file; ``mmap+mlock`` maps and locks it; ``none``,
``mlock`` (no map, locked buffers) and ``dio`` (direct I/O) read it into buffers. The older
spellings are parsed into the same field, and ``spell`` writes whichever the engine knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

import gguf

from llamastudio.errors import InvalidInput
from llamastudio.fit.catalog import CANONICAL, NARGS, NOT_MODELLED

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


# flag spelling → (field, kind); kind: int | str | bool-true | bool-false | special parsers
_VALUE_FLAGS: dict[str, str] = {
    "-c": "ctx_size",
    "--ctx-size": "ctx_size",
    "-np": "parallel",
    "--parallel": "parallel",
    "-ngl": "n_gpu_layers",
    "--gpu-layers": "n_gpu_layers",
    "--n-gpu-layers": "n_gpu_layers",
    "-ctk": "cache_type_k",
    "--cache-type-k": "cache_type_k",
    "-ctv": "cache_type_v",
    "--cache-type-v": "cache_type_v",
    "-fa": "flash_attn",
    "--flash-attn": "flash_attn",
    "-b": "batch_size",
    "--batch-size": "batch_size",
    "-ub": "ubatch_size",
    "--ubatch-size": "ubatch_size",
    "-ts": "tensor_split",
    "--tensor-split": "tensor_split",
    "-sm": "split_mode",
    "--split-mode": "split_mode",
    "-mg": "main_gpu",
    "--main-gpu": "main_gpu",
    "--n-cpu-moe": "n_cpu_moe",
    "-ncmoe": "n_cpu_moe",
    "-dev": "device",
    "--device": "device",
    "-mm": "mmproj",
    "--mmproj": "mmproj",
    "-md": "draft_model",
    "--model-draft": "draft_model",
    "--spec-draft-model": "draft_model",
    "-ngld": "draft_gpu_layers",
    "--gpu-layers-draft": "draft_gpu_layers",
    "--n-gpu-layers-draft": "draft_gpu_layers",
    "--spec-draft-ngl": "draft_gpu_layers",
    "-devd": "draft_device",
    "--device-draft": "draft_device",
    "--spec-draft-device": "draft_device",
    "-ctkd": "cache_type_k_draft",
    "--cache-type-k-draft": "cache_type_k_draft",
    "--spec-draft-type-k": "cache_type_k_draft",
    "-ctvd": "cache_type_v_draft",
    "--cache-type-v-draft": "cache_type_v_draft",
    "--spec-draft-type-v": "cache_type_v_draft",
    "--spec-draft-n-max": "draft_max",
    "--draft-max": "draft_max",
    "--draft-n": "draft_max",
    "--draft": "draft_max",
    "--spec-draft-n-min": "draft_min",
    "--draft-min": "draft_min",
    "--draft-n-min": "draft_min",
    "--pooling": "pooling",
    "-ot": "override_tensor",
    "--override-tensor": "override_tensor",
    "-ncffn": "n_cpu_ffn",
    "--n-cpu-ffn": "n_cpu_ffn",
    "-lm": "load_mode",
    "--load-mode": "load_mode",
    "-lzm": "lazy_mode",
    "--lazy-mode": "lazy_mode",
    "--kv-unified-per-slot": "kv_unified_per_slot",
}
# the spellings of one flag, newest first: ``build_command`` uses the first an engine lists (this
# llama.cpp still lists --draft-max, only to say it was removed)
SPELLINGS: dict[str, tuple[str, ...]] = {
    "-mm": ("-mm", "--mmproj"),
    "--no-mmproj": ("--no-mmproj", "--no-mmproj-auto"),
    "-md": ("-md", "--model-draft", "--spec-draft-model"),
    "-ngld": ("-ngld", "--spec-draft-ngl", "--gpu-layers-draft", "--n-gpu-layers-draft"),
    "-devd": ("-devd", "--spec-draft-device", "--device-draft"),
    "-ctkd": ("-ctkd", "--spec-draft-type-k", "--cache-type-k-draft"),
    "-ctvd": ("-ctvd", "--spec-draft-type-v", "--cache-type-v-draft"),
    "--spec-draft-n-max": ("--spec-draft-n-max", "--draft-max"),
    "--spec-draft-n-min": ("--spec-draft-n-min", "--draft-min"),
    "--embedding": ("--embedding", "--embeddings"),
    "--reranking": ("--reranking", "--rerank"),
    "-ot": ("-ot", "--override-tensor"),
    "-ncffn": ("-ncffn", "--n-cpu-ffn"),
    "-nr": ("-nr", "--no-repack"),
    "-lm": ("-lm", "--load-mode"),
    "-lzm": ("-lzm", "--lazy-mode"),
}
# a flag that builds before it spelled with other flags *and values* (``spell``): b11434 replaced
# --no-mmap/--mlock by -lm; --n-cpu-ffn is an -ot pattern per layer on builds without it
LEGACY_FORMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("-lm", "none"): ("--no-mmap",),
    ("-lm", "mlock"): ("--no-mmap", "--mlock"),
    ("-lm", "mmap+mlock"): ("--mlock",),
    ("-lm", "mmap"): (),  # the default before -lm
    ("-lm", "dio"): ("--direct-io",),
}
_BOOL_FLAGS: dict[str, tuple[str, bool]] = {
    "-kvu": ("kv_unified", True),
    "--kv-unified": ("kv_unified", True),
    "-no-kvu": ("kv_unified", False),
    "--no-kv-unified": ("kv_unified", False),
    "--cpu-moe": ("cpu_moe", True),
    "-cmoe": ("cpu_moe", True),
    "-nkvo": ("no_kv_offload", True),
    "--no-kv-offload": ("no_kv_offload", True),
    "-kvo": ("no_kv_offload", False),
    "--kv-offload": ("no_kv_offload", False),
    "--swa-full": ("swa_full", True),
    "--repack": ("repack", True),
    "-nr": ("repack", False),
    "--no-repack": ("repack", False),
    "--no-host": ("no_host", True),
    "--no-mmproj": ("mmproj_auto", False),
    "--no-mmproj-auto": ("mmproj_auto", False),
    "--mmproj-auto": ("mmproj_auto", True),
    "--no-mmproj-offload": ("mmproj_offload", False),
    "--mmproj-offload": ("mmproj_offload", True),
    "--embedding": ("embedding", True),
    "--embeddings": ("embedding", True),
    "--rerank": ("reranking", True),
    "--reranking": ("reranking", True),
}
_INT_FIELDS = {f.name for f in fields(ServerFlags) if f.type == "int"}


def _convert(name: str, flag: str, raw: str) -> object:
    try:
        if name in ("n_gpu_layers", "draft_gpu_layers"):
            return {"auto": GPU_LAYERS_AUTO, "all": GPU_LAYERS_ALL}.get(raw) or int(raw)
        if name in _INT_FIELDS:
            value = int(raw)
            if name in ("batch_size", "ubatch_size") and value < 1:
                raise ValueError
            if name in ("ctx_size", "n_cpu_moe", "n_cpu_ffn", "kv_unified_per_slot") and value < 0:
                raise ValueError
            return value
        if name in ("draft_max", "draft_min"):
            value = int(raw)
            if value < 0:
                raise ValueError
            return value
        if name == "tensor_split":
            parts = tuple(float(x) for x in raw.replace("/", ",").split(","))
            if any(x < 0 for x in parts) or not any(parts):
                raise ValueError
            return parts
    except ValueError:
        raise InvalidInput(f"{flag}: invalid value {raw!r}") from None
    if name in ("device", "draft_device"):
        # "none": no GPU at all (kept as such: an empty tuple means every device)
        return tuple(d.strip() for d in raw.split(",") if d.strip())
    if name == "flash_attn":
        value_fa = {"1": "on", "0": "off", "true": "on", "false": "off"}.get(raw, raw)
        if value_fa not in ("on", "off", "auto"):
            raise InvalidInput(f"{flag}: expected on, off or auto, got {raw!r}")
        return value_fa
    if name == "split_mode":
        if raw not in ("none", "layer", "row", "tensor"):
            raise InvalidInput(f"{flag}: expected none, layer, row or tensor, got {raw!r}")
        return raw
    if name == "load_mode":
        if raw not in LOAD_MODES:
            raise InvalidInput(f"{flag}: expected one of {', '.join(LOAD_MODES)}, got {raw!r}")
        return raw
    if name == "lazy_mode":
        if raw not in LAZY_MODES:
            raise InvalidInput(f"{flag}: expected one of {', '.join(LAZY_MODES)}, got {raw!r}")
        return raw
    if name == "override_tensor":
        entries = tuple(e for e in raw.split(",") if e)
        for e in entries:
            pattern, eq, buft = e.rpartition("=")
            if not eq or not pattern or not buft:
                raise InvalidInput(f"{flag}: expected <tensor name pattern>=<buffer type>, got {e!r}")
        return entries
    if name == "pooling":
        if raw not in POOLING_TYPES:
            raise InvalidInput(f"{flag}: expected one of {', '.join(POOLING_TYPES)}, got {raw!r}")
        return raw
    if name in ("mmproj", "draft_model"):
        if not raw or "\0" in raw:
            raise InvalidInput(f"{flag}: a path or library id is required")
        return raw
    if name in ("cache_type_k", "cache_type_v", "cache_type_k_draft", "cache_type_v_draft"):
        if raw not in CACHE_TYPES:
            raise InvalidInput(f"{flag}: unknown cache type {raw!r} (one of {', '.join(CACHE_TYPES)})")
        return raw
    return raw


def parse_server_args(argv: list[str], *, keep_unknown: bool = True) -> ServerFlags:
    """Parse a llama-server argv (``--flag value`` or ``--flag=value``) into ServerFlags.

    Flags the estimator does not model stay in ``extra`` with their values, in order: a flag of
    the pinned llama-server's ``--help`` takes as many values as it lists; any other token is kept
    as it is with ``keep_unknown`` and refused without it (``estimate``/``plan`` only take flags
    of that version)."""
    values: dict[str, object] = {}
    extra: list[str] = []
    overrides: list[str] = []
    no_mmap: bool | None = None
    mlock = False
    it = iter(argv)
    for token in it:
        flag, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if flag in ("--no-mmap", "--mmap"):  # builds before -lm
            no_mmap = flag == "--no-mmap"
        elif flag == "--mlock":
            mlock = True
        elif flag in ("-dio", "--direct-io"):
            values["load_mode"] = "dio"
        elif flag in _BOOL_FLAGS:
            name, on = _BOOL_FLAGS[flag]
            values[name] = on
        elif flag in _VALUE_FLAGS:
            raw = inline if eq else next(it, None)
            if raw is None:
                raise InvalidInput(f"{flag}: missing value")
            name = _VALUE_FLAGS[flag]
            converted = _convert(name, flag, raw)
            if name == "override_tensor":
                overrides += converted  # type: ignore[arg-type]  # repeated -ot add up
            else:
                values[name] = converted
        elif flag in NARGS:
            extra.append(token)
            for _ in range(0 if eq else NARGS[flag]):
                raw = next(it, None)
                if raw is None:
                    raise InvalidInput(f"{flag}: missing value")
                extra.append(raw)
        elif keep_unknown or not _is_flag(token):
            extra.append(token)
        else:
            raise InvalidInput(
                f"unknown flag {token!r}: not among llama-server's flags (b11434 --help)", flag=token
            )
    if (no_mmap is not None or mlock) and "load_mode" not in values:
        values["load_mode"] = {(True, False): "none", (True, True): "mlock", (False, True): "mmap+mlock"}.get(
            (bool(no_mmap), mlock), "mmap"
        )
    if overrides:
        values["override_tensor"] = tuple(overrides)
    flags = ServerFlags(**values, extra=tuple(extra))  # type: ignore[arg-type]
    validate(flags)
    return flags


def _is_flag(token: str) -> bool:
    return token.startswith("-") and len(token) > 1 and not token[1:2].isdigit() and token[1:2] != "."


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


def spell(flag: str, values: list[str], caps: set[str]) -> list[str] | None:
    """The argv for ``flag values`` on an engine whose ``--help`` lists ``caps``: the newest
    spelling it has (``SPELLINGS``), else an older form with the same effect (``LEGACY_FORMS``),
    else None."""
    spelling = next((f for f in SPELLINGS.get(flag, (flag,)) if f in caps), None)
    if spelling is not None:
        return [spelling, *values]
    legacy = LEGACY_FORMS.get((flag, values[0] if values else ""))
    if legacy is not None and all(f in caps for f in legacy):
        return list(legacy)
    if flag == "-ncffn" and ("-ot" in caps or "--override-tensor" in caps):
        layers = "|".join(str(i) for i in range(int(values[0])))
        return ["-ot" if "-ot" in caps else "--override-tensor", rf"blk\.({layers}){DENSE_FFN_REGEX}=CPU"]
    return None


def validate(flags: ServerFlags) -> None:
    """Combinations llama.cpp itself refuses."""
    if flags.cache_type_v not in ("f16", "f32", "bf16") and flags.flash_attn == "off":
        raise InvalidInput("a quantized V cache (-ctv) requires flash attention (-fa on or auto)")


def cache_row_bytes(cache_type: str, n: int) -> int:
    """Bytes of a row of ``n`` values in a KV cache of ``cache_type`` (block-quantized)."""
    qtype = gguf.GGMLQuantizationType[cache_type.upper()]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return n // block * size
