"""llama-server command lines to and from ``ServerFlags``: reading a pasted or stored argv (every
spelling of this llama.cpp's ``--help``, ``catalog.py``, older ones too) and spelling a flag the
way one engine's ``--help`` knows it (``spell``)."""

from __future__ import annotations

from dataclasses import fields

from llamastudio.errors import InvalidInput
from llamastudio.fit.catalog import NARGS
from llamastudio.fit.flags import (
    CACHE_TYPES,
    DENSE_FFN_REGEX,
    GPU_LAYERS_ALL,
    GPU_LAYERS_AUTO,
    LAZY_MODES,
    LOAD_MODES,
    POOLING_TYPES,
    ServerFlags,
    validate,
)

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


# fields whose value is one word of a fixed set
_CHOICES: dict[str, tuple[str, ...]] = {
    "split_mode": ("none", "layer", "row", "tensor"),
    "load_mode": LOAD_MODES,
    "lazy_mode": LAZY_MODES,
    "pooling": POOLING_TYPES,
}


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
    if name in _CHOICES:
        if raw not in _CHOICES[name]:
            raise InvalidInput(f"{flag}: expected one of {', '.join(_CHOICES[name])}, got {raw!r}")
        return raw
    if name == "flash_attn":
        value_fa = {"1": "on", "0": "off", "true": "on", "false": "off"}.get(raw, raw)
        if value_fa not in ("on", "off", "auto"):
            raise InvalidInput(f"{flag}: expected on, off or auto, got {raw!r}")
        return value_fa
    if name == "override_tensor":
        entries = tuple(e for e in raw.split(",") if e)
        for e in entries:
            pattern, eq, buft = e.rpartition("=")
            if not eq or not pattern or not buft:
                raise InvalidInput(f"{flag}: expected <tensor name pattern>=<buffer type>, got {e!r}")
        return entries
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
