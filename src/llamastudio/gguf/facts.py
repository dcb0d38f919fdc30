"""Facts about a model derived from its GGUF header: what the estimator and the UI need.

JSON keys follow the GGUF key names without the architecture prefix and without the
``attention.`` namespace (``{arch}.attention.head_count_kv`` → ``head_count_kv``); other
namespaces are joined with ``_`` (``{arch}.rope.freq_base`` → ``rope_freq_base``,
``{arch}.ssm.state_size`` → ``ssm_state_size``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import gguf

from llamastudio.errors import GGUFError
from llamastudio.gguf.model import GGUFModel
from llamastudio.gguf.roles import purpose

_LAYER_RE = re.compile(r"^blk\.(\d+)\.")
_ARRAY_PREVIEW = 16
Arr = int | list[int]


def flat_key(key: str, arch: str) -> str:
    """``llama.attention.head_count`` → ``head_count``; ``llama.rope.freq_base`` → ``rope_freq_base``."""
    rest = key[len(arch) + 1 :]
    rest = rest.removeprefix("attention.")
    return rest.replace(".", "_")


@dataclass(slots=True)
class ModelFacts:
    architecture: str
    block_count: int
    embedding_length: int
    head_count: Arr
    head_count_kv: Arr
    key_length: int
    value_length: int
    vocab_size: int
    context_length: int | None = None
    feed_forward_length: Arr | None = None
    expert_count: int = 0
    expert_used_count: int = 0
    sliding_window: int | None = None
    sliding_window_pattern: Arr | list[bool] | None = None
    kv_lora_rank: int | None = None
    key_length_mla: int | None = None
    value_length_mla: int | None = None
    ssm_conv_kernel: int | None = None
    ssm_inner_size: int | None = None
    ssm_state_size: int | None = None
    ssm_time_step_rank: int | None = None
    ssm_group_count: int | None = None
    rope_dimension_count: int | None = None
    rope_freq_base: float | None = None
    rope_scaling_type: str | None = None
    parameter_count: int = 0
    file_size: int = 0
    tensor_count: int = 0
    split_count: int = 1
    file_type: int | None = None
    file_type_name: str | None = None
    quant_bytes: dict[str, int] = field(default_factory=dict)
    layer_bytes: list[int] = field(default_factory=list)
    non_layer_bytes: dict[str, int] = field(default_factory=dict)
    chat_template: bool = False
    template_family: str | None = None  # chatml, llama3, gemma, ... (roles.py)
    tools: bool = False  # the chat template renders tools
    role: str = "chat"  # chat | embedding | rerank | mmproj (roles.py)
    pooling: str | None = None
    classifier: bool = False  # has a classification head (cls.*): can rerank
    tokenizer_model: str | None = None
    general: dict[str, Any] = field(default_factory=dict)
    arch_keys: dict[str, Any] = field(default_factory=dict)

    def n_head_kv(self, il: int) -> int:
        return self.head_count_kv[il] if isinstance(self.head_count_kv, list) else self.head_count_kv

    def n_head(self, il: int) -> int:
        return self.head_count[il] if isinstance(self.head_count, list) else self.head_count

    def to_json(self) -> dict[str, Any]:
        """Flat JSON: every architecture key, then the derived facts (which win on a clash)."""
        out: dict[str, Any] = dict(self.arch_keys)
        data = asdict(self)
        data.pop("arch_keys")
        out.update(data)
        return out


def _int(meta: dict[str, Any], key: str, location: str, *, required: bool = False) -> int | None:
    value = meta.get(key)
    if value is None:
        if required:
            raise GGUFError(f"{location}: required key {key!r} is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise GGUFError(f"{location}: key {key!r} should be an integer, found {value!r:.60}")
    return value


def _arr(meta: dict[str, Any], key: str, location: str, default: Arr | None = None) -> Arr | None:
    value = meta.get(key, default)
    if isinstance(value, list):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise GGUFError(f"{location}: key {key!r} should hold integers")
        # llama.cpp collapses an array whose entries are all equal into a scalar
        return value[0] if value and all(v == value[0] for v in value) else value
    return value


def _summarise(value: Any) -> Any:
    if isinstance(value, list) and len(value) > _ARRAY_PREVIEW:
        return {"length": len(value), "head": value[:4]}
    if isinstance(value, str) and len(value) > 4096:
        return value[:4096] + "…"
    return value


def _general(meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if (
            key.startswith("general.")
            and not key.startswith("general.base_model.")
            and key != "general.alignment"
        ):
            out[key[len("general.") :]] = _summarise(value)
    n_base = meta.get("general.base_model.count")
    if isinstance(n_base, int) and 0 < n_base < 64:
        out["base_models"] = [
            {
                k: meta[f"general.base_model.{i}.{k}"]
                for k in ("name", "organization", "repo_url", "version")
                if f"general.base_model.{i}.{k}" in meta
            }
            for i in range(n_base)
        ]
    return out


def facts_from_model(model: GGUFModel) -> ModelFacts:
    meta = model.metadata
    loc = model.location
    arch = meta.get(gguf.Keys.General.ARCHITECTURE)
    if not isinstance(arch, str) or not arch:
        raise GGUFError(f"{loc}: general.architecture is missing")
    k = gguf.Keys.LLM
    a = gguf.Keys.Attention
    n_layer = _int(meta, k.BLOCK_COUNT.format(arch=arch), loc) or 0
    n_embd = _int(meta, k.EMBEDDING_LENGTH.format(arch=arch), loc) or 0
    n_head = _arr(meta, a.HEAD_COUNT.format(arch=arch), loc, 0)
    n_head_kv = _arr(meta, a.HEAD_COUNT_KV.format(arch=arch), loc, n_head)
    head0 = n_head if isinstance(n_head, int) else max(n_head or [0])
    head_dim = n_embd // head0 if head0 else 0
    tokens = meta.get(gguf.Keys.Tokenizer.LIST)
    vocab = _int(meta, k.VOCAB_SIZE.format(arch=arch), loc) or (
        len(tokens) if isinstance(tokens, list) else 0
    )

    tensors = model.tensors
    quant: dict[str, int] = defaultdict(int)
    layers: dict[int, int] = defaultdict(int)
    non_layer: dict[str, int] = defaultdict(int)
    for t in tensors:
        quant[t.type_name] += t.n_bytes
        m = _LAYER_RE.match(t.name)
        if m:
            layers[int(m.group(1))] += t.n_bytes
        else:
            non_layer[t.name.removesuffix(".weight").removesuffix(".bias")] += t.n_bytes
    n_blocks = max([n_layer, *(i + 1 for i in layers)])

    file_type = _int(meta, gguf.Keys.General.FILE_TYPE, loc)
    try:
        ft_name = (
            gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_") if file_type is not None else None
        )
    except ValueError:
        ft_name = f"unknown ({file_type})"

    arch_keys = {flat_key(key, arch): _summarise(v) for key, v in meta.items() if key.startswith(arch + ".")}

    def opt(name: str) -> Any:
        return arch_keys.get(name)

    swa_pattern = meta.get(a.SLIDING_WINDOW_PATTERN.format(arch=arch))
    use = purpose(meta, {t.name for t in tensors})
    return ModelFacts(
        architecture=arch,
        block_count=n_layer,
        embedding_length=n_embd,
        head_count=n_head or 0,
        head_count_kv=n_head_kv if n_head_kv is not None else 0,
        key_length=_int(meta, a.KEY_LENGTH.format(arch=arch), loc) or head_dim,
        value_length=_int(meta, a.VALUE_LENGTH.format(arch=arch), loc) or head_dim,
        vocab_size=vocab,
        context_length=_int(meta, k.CONTEXT_LENGTH.format(arch=arch), loc),
        feed_forward_length=_arr(meta, k.FEED_FORWARD_LENGTH.format(arch=arch), loc),
        expert_count=_int(meta, k.EXPERT_COUNT.format(arch=arch), loc) or 0,
        expert_used_count=_int(meta, k.EXPERT_USED_COUNT.format(arch=arch), loc) or 0,
        sliding_window=_int(meta, a.SLIDING_WINDOW.format(arch=arch), loc),
        sliding_window_pattern=swa_pattern,
        kv_lora_rank=opt("kv_lora_rank"),
        key_length_mla=opt("key_length_mla"),
        value_length_mla=opt("value_length_mla"),
        ssm_conv_kernel=opt("ssm_conv_kernel"),
        ssm_inner_size=opt("ssm_inner_size"),
        ssm_state_size=opt("ssm_state_size"),
        ssm_time_step_rank=opt("ssm_time_step_rank"),
        ssm_group_count=opt("ssm_group_count"),
        rope_dimension_count=opt("rope_dimension_count"),
        rope_freq_base=opt("rope_freq_base"),
        rope_scaling_type=opt("rope_scaling_type"),
        parameter_count=sum(t.n_elements for t in tensors),
        file_size=model.file_size,
        tensor_count=len(tensors),
        split_count=len(model.parts),
        file_type=file_type,
        file_type_name=ft_name,
        quant_bytes=dict(sorted(quant.items(), key=lambda kv: -kv[1])),
        layer_bytes=[layers.get(i, 0) for i in range(n_blocks)],
        non_layer_bytes=dict(non_layer),
        chat_template=use.chat_template,
        template_family=use.template_family,
        tools=use.tools,
        role=use.role,
        pooling=use.pooling,
        classifier=use.classifier,
        tokenizer_model=meta.get(gguf.Keys.Tokenizer.MODEL),
        general=_general(meta),
        arch_keys=arch_keys,
    )
