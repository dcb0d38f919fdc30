"""The seed's model configuration — one flat object of llama.cpp parameters (``ctx_size``,
``n_gpu_layers``, ``temp``, ``customArgs`` …, as its UI sent it to ``PUT /api/models/{id}/config``)
— to and from the llama-server flags a studio configuration keeps in ``args``.

The key → flag table is the seed's own (its llama-swap command builder), with two fixes:
``mirostat_tau`` / ``mirostat_eta`` are llama-server's ``--mirostat-ent`` / ``--mirostat-lr`` (the
seed wrote flags llama-server never had), and a value is written as given (the seed left out some
values equal to what it took for defaults, so ``min_p: 0`` meant llama.cpp's 0.05). ``no_mmap``
and ``mlock`` become the load mode a recent llama.cpp has instead (``-lm none``, ``-lm mmap+mlock``,
see ``fit/argv.py``); a flag the engine lacks with no equivalent (``--low-vram`` …) is refused when
the configuration is saved, by the studio's usual check against the engine's ``--help``.

Read back, every flag of ``args`` the table names becomes its key; the rest stays, verbatim, in
``customArgs``, so a configuration read and written back through the seed's shape keeps every flag.
"""

from __future__ import annotations

import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llamastudio.errors import InvalidInput

# key → the flag written first, then every spelling read back
_INTS: dict[str, tuple[str, ...]] = {
    "ctx_size": ("-c", "--ctx-size"),
    "n_predict": ("-n", "--predict", "--n-predict"),
    "threads": ("-t", "--threads"),
    "threads_batch": ("-tb", "--threads-batch"),
    "n_gpu_layers": ("-ngl", "--gpu-layers", "--n-gpu-layers"),
    "batch_size": ("-b", "--batch-size"),
    "ubatch_size": ("-ub", "--ubatch-size"),
    "parallel": ("-np", "--parallel"),
    "main_gpu": ("-mg", "--main-gpu"),
    "top_k": ("--top-k",),
    "mirostat": ("--mirostat",),
    "seed": ("-s", "--seed"),
    "timeout": ("-to", "--timeout"),
}
_FLOATS: dict[str, tuple[str, ...]] = {
    "temperature": ("--temp",),  # ``temp`` is the same flag
    "top_p": ("--top-p",),
    "min_p": ("--min-p",),
    "typical_p": ("--typical", "--typical-p"),
    "tfs_z": ("--tfs",),
    "repeat_penalty": ("--repeat-penalty",),
    "presence_penalty": ("--presence-penalty",),
    "frequency_penalty": ("--frequency-penalty",),
    "mirostat_tau": ("--mirostat-ent",),
    "mirostat_eta": ("--mirostat-lr",),
    "rope_freq_base": ("--rope-freq-base",),
    "rope_freq_scale": ("--rope-freq-scale",),
    "yarn_ext_factor": ("--yarn-ext-factor",),
    "yarn_attn_factor": ("--yarn-attn-factor",),
}
_STRINGS: dict[str, tuple[str, ...]] = {
    "tensor_split": ("-ts", "--tensor-split"),
    "cache_type_k": ("-ctk", "--cache-type-k"),
    "cache_type_v": ("-ctv", "--cache-type-v"),
    "rope_scaling": ("--rope-scaling",),
    "grammar": ("--grammar",),
    "json_schema": ("-j", "--json-schema"),
    "yaml": ("--yaml",),
}
_SWITCHES: dict[str, tuple[str, ...]] = {
    "no_mmap": ("--no-mmap",),
    "mlock": ("--mlock",),
    "low_vram": ("--low-vram",),
    "logits_all": ("--logits-all",),
    "embedding": ("--embedding", "--embeddings"),
    "cont_batching": ("-cb", "--cont-batching"),
    "no_kv_offload": ("-nkvo", "--no-kv-offload"),
    "jinja": ("--jinja",),
}
_FLASH = ("-fa", "--flash-attn")
_CPU_MOE = ("--cpu-moe", "-cmoe")
_N_CPU_MOE = ("--n-cpu-moe", "-ncmoe")
_OVERRIDE = ("-ot", "--override-tensor")
_STOP = ("--stop",)
_VALUES = {s: k for k, spellings in (_INTS | _FLOATS | _STRINGS).items() for s in spellings}
_ON = {s: k for k, spellings in _SWITCHES.items() for s in spellings}

# keys the seed's UI sends that the studio decides itself: accepted, reported as not applied
MANAGED = {
    "host": "the studio binds each engine to 127.0.0.1 itself; clients use the gateway",
    "port": "the studio picks each engine's port; clients use the gateway (port 2000)",
}


def _field(flags: tuple[str, ...], what: str) -> Any:
    return Field(None, description=f"{what} (`{'`, `'.join(flags)}`)")


class SeedParams(BaseModel):
    """The seed's llama.cpp parameters (``null`` or ``""``: not set). Each names a llama-server
    flag; ``customArgs`` holds every other flag, as one shell-quoted string."""

    model_config = ConfigDict(extra="forbid")

    ctx_size: int | None = _field(_INTS["ctx_size"], "Context size")
    n_predict: int | None = _field(_INTS["n_predict"], "Tokens to predict (-1: until done)")
    threads: int | None = _field(_INTS["threads"], "CPU threads")
    threads_batch: int | None = _field(_INTS["threads_batch"], "CPU threads for prompt processing")
    n_gpu_layers: int | None = _field(_INTS["n_gpu_layers"], "Layers on the GPU")
    batch_size: int | None = _field(_INTS["batch_size"], "Logical batch size")
    ubatch_size: int | None = _field(_INTS["ubatch_size"], "Physical batch size")
    parallel: int | None = _field(_INTS["parallel"], "Parallel sequences (slots)")
    main_gpu: int | None = _field(_INTS["main_gpu"], "Main GPU")
    tensor_split: str | None = _field(_STRINGS["tensor_split"], "Split across GPUs, e.g. `3,1`")
    cache_type_k: str | None = _field(_STRINGS["cache_type_k"], "K cache type")
    cache_type_v: str | None = _field(_STRINGS["cache_type_v"], "V cache type")
    flash_attn: bool | None = Field(None, description="Flash attention on (`-fa on`)")
    no_mmap: bool | None = _field(_SWITCHES["no_mmap"], "Do not memory-map the model")
    mlock: bool | None = _field(_SWITCHES["mlock"], "Lock the model in RAM")
    low_vram: bool | None = _field(_SWITCHES["low_vram"], "Low VRAM mode (old llama.cpp)")
    logits_all: bool | None = _field(_SWITCHES["logits_all"], "All logits (old llama.cpp)")
    embedding: bool | None = _field(_SWITCHES["embedding"], "Embeddings only")
    cont_batching: bool | None = _field(_SWITCHES["cont_batching"], "Continuous batching")
    no_kv_offload: bool | None = _field(_SWITCHES["no_kv_offload"], "KV cache on the host")
    jinja: bool | None = _field(_SWITCHES["jinja"], "Jinja chat templates")
    temp: float | None = Field(
        None, description="Temperature (`--temp`; `temperature` wins when both differ)"
    )
    temperature: float | None = _field(_FLOATS["temperature"], "Temperature")
    top_k: int | None = _field(_INTS["top_k"], "Top-k sampling")
    top_p: float | None = _field(_FLOATS["top_p"], "Top-p sampling")
    min_p: float | None = _field(_FLOATS["min_p"], "Min-p sampling")
    typical_p: float | None = _field(_FLOATS["typical_p"], "Locally typical sampling")
    tfs_z: float | None = _field(_FLOATS["tfs_z"], "Tail-free sampling (old llama.cpp)")
    repeat_penalty: float | None = _field(_FLOATS["repeat_penalty"], "Repeat penalty")
    presence_penalty: float | None = _field(_FLOATS["presence_penalty"], "Presence penalty")
    frequency_penalty: float | None = _field(_FLOATS["frequency_penalty"], "Frequency penalty")
    mirostat: int | None = _field(_INTS["mirostat"], "Mirostat (0, 1, 2)")
    mirostat_tau: float | None = _field(_FLOATS["mirostat_tau"], "Mirostat target entropy")
    mirostat_eta: float | None = _field(_FLOATS["mirostat_eta"], "Mirostat learning rate")
    seed: int | None = _field(_INTS["seed"], "RNG seed")
    rope_freq_base: float | None = _field(_FLOATS["rope_freq_base"], "RoPE base frequency")
    rope_freq_scale: float | None = _field(_FLOATS["rope_freq_scale"], "RoPE frequency scale")
    rope_scaling: str | None = _field(_STRINGS["rope_scaling"], "RoPE scaling: none, linear, yarn")
    yarn_ext_factor: float | None = _field(_FLOATS["yarn_ext_factor"], "YaRN extrapolation mix")
    yarn_attn_factor: float | None = _field(_FLOATS["yarn_attn_factor"], "YaRN attention scale")
    grammar: str | None = _field(_STRINGS["grammar"], "BNF grammar")
    json_schema: str | None = _field(_STRINGS["json_schema"], "JSON schema")
    yaml: str | None = _field(_STRINGS["yaml"], "YAML arguments (old llama.cpp)")
    timeout: int | None = _field(_INTS["timeout"], "Server read/write timeout, seconds")
    stop: list[str] | None = Field(None, description="Stop strings (`--stop`, one each)")
    moe_offload_pattern: str | int | None = Field(
        None,
        description="MoE experts on the CPU: `none`, `cpu` (`--cpu-moe`), a number of layers "
        "(`--n-cpu-moe N`) or `custom` (`-ot moe_offload_custom`)",
    )
    moe_offload_custom: str | None = Field(None, description="A tensor override, e.g. `.ffn_.*_exps.=CPU`")
    customArgs: str | None = Field(None, description="Every other llama-server flag, shell-quoted")


SEED_KEYS = frozenset(SeedParams.model_fields)


def _set(value: object) -> bool:
    return value is not None and value != "" and value != []


def _text(value: object) -> str:
    return str(value)


def to_args(params: SeedParams) -> list[str]:
    """The llama-server flags ``params`` stand for (InvalidInput for a MoE choice it cannot be)."""
    p = params.model_dump()
    if _set(p["temp"]) and not _set(p["temperature"]):
        p["temperature"] = p["temp"]  # one flag; as on the seed's command line, `temperature` wins
    args: list[str] = []
    for key, spellings in (_INTS | _FLOATS | _STRINGS).items():
        if _set(p[key]):
            args += [spellings[0], _text(p[key])]
    if p["flash_attn"]:
        args += ["-fa", "on"]
    args += [spellings[0] for key, spellings in _SWITCHES.items() if p[key]]
    for word in p["stop"] or []:
        if word:
            args += [_STOP[0], word]
    args += _moe_args(p["moe_offload_pattern"], p["moe_offload_custom"])
    if _set(p["customArgs"]):
        try:
            args += shlex.split(p["customArgs"])
        except ValueError as exc:
            raise InvalidInput(f"customArgs: {exc} (a shell-quoted list of flags)") from None
    return args


def _moe_args(pattern: str | int | None, custom: str | None) -> list[str]:
    if isinstance(pattern, str) and pattern.strip().isdigit():
        pattern = int(pattern)
    if _set(custom) and pattern not in (None, "", "custom"):
        raise InvalidInput(f"moe_offload_custom is used with moe_offload_pattern 'custom', not {pattern!r}")
    if pattern in (None, "", "none", 0):
        return []
    if pattern == "cpu":
        return [_CPU_MOE[0]]
    if isinstance(pattern, int) and pattern > 0:
        return [_N_CPU_MOE[0], str(pattern)]
    if pattern == "custom" or (pattern is None and _set(custom)):
        if not _set(custom):
            raise InvalidInput(
                "moe_offload_pattern 'custom' needs moe_offload_custom (e.g. .ffn_.*_exps.=CPU)"
            )
        return [_OVERRIDE[0], str(custom)]
    raise InvalidInput(
        f"moe_offload_pattern {pattern!r}: choose none, cpu, custom or a number of layers on the CPU"
    )


def _convert(key: str, raw: str) -> object:
    """``raw`` as the key's type; ValueError when it is not one."""
    if key in _INTS:
        return int(raw)
    if key in _FLOATS:
        return float(raw)
    return raw


def from_args(args: list[str]) -> dict[str, Any]:
    """Every seed key (None when ``args`` do not set it) from a llama-server argv; flags the table
    does not name, and values that are not the key's type, stay in ``customArgs``."""
    out: dict[str, Any] = dict.fromkeys(SEED_KEYS)
    rest: list[str] = []
    i = 0
    while i < len(args):
        token = args[i]
        flag, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        takes_value = flag in _VALUES or flag in _FLASH or flag in _N_CPU_MOE or flag in _OVERRIDE
        takes_value = takes_value or flag in _STOP
        if takes_value and not eq and i + 1 >= len(args):
            rest.append(token)  # a value flag at the end: nothing to read
            break
        raw = inline if eq else (args[i + 1] if takes_value else "")
        used = 1 if eq or not takes_value else 2
        if _read(flag, raw, out):
            i += used
            continue
        rest += args[i : i + used]
        i += used
    out["customArgs"] = shlex.join(rest) if rest else None
    return out


def _read(flag: str, raw: str, out: dict[str, Any]) -> bool:
    """Set the key ``flag`` stands for; False when it is not one of the table's (or repeats)."""
    if flag in _ON and out[_ON[flag]] is None:
        out[_ON[flag]] = True
        return True
    if flag in _VALUES and out[_VALUES[flag]] is None:
        key = _VALUES[flag]
        try:
            out[key] = _convert(key, raw)
        except ValueError:
            return False
        if key == "temperature":
            out["temp"] = out[key]
        return True
    if flag in _FLASH and out["flash_attn"] is None and raw in ("on", "1", "true"):
        out["flash_attn"] = True
        return True
    if flag in _STOP:
        out["stop"] = [*(out["stop"] or []), raw]
        return True
    if out["moe_offload_pattern"] is not None:
        return False
    if flag in _CPU_MOE:
        out["moe_offload_pattern"] = "cpu"
        return True
    if flag in _N_CPU_MOE and raw.isdigit():
        out["moe_offload_pattern"] = int(raw)
        return True
    if flag in _OVERRIDE:
        out["moe_offload_pattern"], out["moe_offload_custom"] = "custom", raw
        return True
    return False
