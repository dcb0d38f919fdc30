"""What a transformers ``config.json`` says about the model: shape, context, dtype, quantization.

Multimodal configs nest the language model (``text_config``, ``llm_config``,
``language_config``): its fields are read there first, then at the top level. Older configs
name fields GPT-2 style (``n_layer``, ``n_head``, ``n_embd``, ``n_positions``); both spellings
are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from llamastudio.errors import InvalidInput

NESTED = ("text_config", "llm_config", "language_config")
LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
HEADS = ("num_attention_heads", "n_head")
KV_HEADS = ("num_key_value_heads", "n_head_kv", "num_kv_heads")
HIDDEN = ("hidden_size", "n_embd", "d_model")
CONTEXT = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")

_QUANT_METHODS = {
    "awq": "AWQ",
    "gptq": "GPTQ",
    "fp8": "FP8",
    "fbgemm_fp8": "FP8",
    "mxfp4": "MXFP4",
    "bitnet": "BitNet",
    "hqq": "HQQ",
    "eetq": "EETQ",
    "quanto": "Quanto",
    "exl2": "EXL2",
}
_TORCH_DTYPES = {
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
}
_NAME_QUANT = re.compile(
    r"(?:^|[-_.])(AWQ|GPTQ|FP8|NVFP4|MXFP4|INT4|INT8|W4A16|W8A8|W8A16|W4A4|[48]bit)(?=$|[-_.])", re.IGNORECASE
)


@dataclass(frozen=True)
class ArchFacts:
    """The language model's shape, as ``config.json`` states it."""

    architectures: tuple[str, ...]
    model_type: str | None
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None
    vocab_size: int | None
    ctx_train: int | None  # max_position_embeddings
    torch_dtype: str | None  # "BF16", "F16", "F32" (None: not stated, or "auto")
    quant: str | None  # "AWQ", "GPTQ", "FP8", ... from quantization_config
    tie_word_embeddings: bool
    kv_lora_rank: int | None = None  # MLA (DeepSeek V2/V3): the compressed KV cache
    qk_rope_head_dim: int | None = None

    @property
    def architecture(self) -> str:
        return self.architectures[0] if self.architectures else self.model_type or "unknown"

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"architecture": self.architecture}


def _positive(name: str, key: str, value: object) -> int:
    if type(value) is not int or value <= 0:
        raise InvalidInput(f"{name}: {key} must be a positive integer, got {value!r}")
    return value


class _Fields:
    """Lookups in the language model's section first, then the top level."""

    def __init__(self, config: Mapping[str, Any], name: str) -> None:
        self.name = name
        self.top = config
        nested = next((config[k] for k in NESTED if isinstance(config.get(k), Mapping)), None)
        self.scopes = [nested, config] if nested is not None else [config]

    def raw(self, keys: tuple[str, ...]) -> tuple[str, object] | None:
        for scope in self.scopes:
            for key in keys:
                if scope.get(key) is not None:
                    return key, scope[key]
        return None

    def value(self, keys: tuple[str, ...]) -> object:
        found = self.raw(keys)
        return None if found is None else found[1]

    def required(self, keys: tuple[str, ...]) -> int:
        found = self.raw(keys)
        if found is None:
            raise InvalidInput(f"{self.name}: no {keys[0]} — cannot tell the model's shape")
        return _positive(self.name, *found)

    def optional(self, keys: tuple[str, ...]) -> int | None:
        found = self.raw(keys)
        return None if found is None else _positive(self.name, *found)


def dtype_label(torch_dtype: object) -> str | None:
    """``"bfloat16"`` / ``"torch.bfloat16"`` → ``"BF16"``; ``"auto"`` or unknown → None."""
    if not isinstance(torch_dtype, str):
        return None
    return _TORCH_DTYPES.get(torch_dtype.removeprefix("torch."))


def quant_label(qc: object) -> str | None:
    """A label for ``quantization_config``: AWQ, GPTQ, FP8, W4A16, BNB-NF4, ... (None: none)."""
    if not isinstance(qc, Mapping):
        return None
    method = str(qc.get("quant_method") or "").lower()
    if method == "bitsandbytes":
        if qc.get("load_in_4bit"):
            return f"BNB-{str(qc.get('bnb_4bit_quant_type') or '4bit').upper()}"
        return "BNB-8bit"
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    if not method:
        return None
    return _QUANT_METHODS.get(method, method.upper())


def _compressed_tensors(qc: Mapping[str, Any]) -> str:
    """``FP8`` for float 8-bit weights, else ``W<bits>A<bits>`` (16: activations unquantized)."""
    groups = qc.get("config_groups")
    group = next(iter(groups.values()), None) if isinstance(groups, Mapping) and groups else None
    if not isinstance(group, Mapping) or not isinstance(group.get("weights"), Mapping):
        return "compressed-tensors"
    weights = group["weights"]
    acts = group.get("input_activations")
    w_bits = weights.get("num_bits")
    a_bits = acts.get("num_bits") if isinstance(acts, Mapping) else 16
    if weights.get("type") == "float" and w_bits == 8:
        return "FP8"
    if weights.get("type") == "float" and w_bits == 4:
        return "NVFP4" if a_bits == 4 else "NVFP4A16"
    return f"W{w_bits}A{a_bits}"


def arch_facts(config: Mapping[str, Any], name: str = "config.json") -> ArchFacts:
    """The facts of a parsed ``config.json``; a missing or invalid shape field is an
    :class:`InvalidInput` naming ``name`` and the field."""
    if not isinstance(config, Mapping):
        raise InvalidInput(f"{name}: expected a JSON object")
    f = _Fields(config, name)
    layers = f.required(LAYERS)
    heads = f.required(HEADS)
    kv_heads = f.optional(KV_HEADS) or heads
    hidden = f.optional(HIDDEN)
    head_dim = f.optional(("head_dim",))
    if head_dim is None:
        if hidden is None:
            raise InvalidInput(f"{name}: neither head_dim nor hidden_size — cannot tell the head size")
        head_dim = hidden // heads
    archs = config.get("architectures") or []
    if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
        raise InvalidInput(f"{name}: architectures must be a list of names, got {archs!r}")
    model_type = config.get("model_type")
    return ArchFacts(
        architectures=tuple(archs),
        model_type=model_type if isinstance(model_type, str) else None,
        layers=layers,
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden,
        vocab_size=f.optional(("vocab_size",)),
        ctx_train=f.optional(CONTEXT),
        torch_dtype=dtype_label(f.value(("torch_dtype", "dtype"))),
        quant=quant_label(f.value(("quantization_config",))),
        tie_word_embeddings=bool(f.value(("tie_word_embeddings",)) in (None, True)),
        kv_lora_rank=f.optional(("kv_lora_rank",)),
        qk_rope_head_dim=f.optional(("qk_rope_head_dim",)),
    )


def name_quant(name: str) -> str | None:
    """A quantization a repo or directory name states: ``Qwen3-8B-AWQ`` → ``AWQ``."""
    found = _NAME_QUANT.findall(name.rstrip("/").rsplit("/", 1)[-1])
    return found[-1].upper().replace("BIT", "bit") if found else None


def checkpoint_label(config: Mapping[str, Any], name: str) -> str:
    """What a checkpoint is listed under (its "quant"): the quantization its config states, else
    the one its name states, else its ``torch_dtype`` — read leniently, never raising."""
    nested = [config[k] for k in NESTED if isinstance(config.get(k), Mapping)]
    scopes = [config, *nested]
    for scope in scopes:
        label = quant_label(scope.get("quantization_config"))
        if label:
            return label
    from_name = name_quant(name)
    if from_name:
        return from_name
    for scope in scopes:
        label = dtype_label(scope.get("torch_dtype") or scope.get("dtype"))
        if label:
            return label
    return "safetensors"
