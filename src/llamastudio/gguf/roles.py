"""What a GGUF is for, read from its header: a chat model, an embedding model, a reranker, or a
multimodal projector (``mmproj``); and what its chat template says.

llama.cpp decides the same way: ``{arch}.pooling_type`` (``LLAMA_POOLING_TYPE_*``: 1 mean, 2 cls,
3 last, 4 rank) makes a model an embedding model (rank: a reranker, whose classifier head is
``cls.*``); encoder-only architectures (BERT and kin) have no causal attention and cannot chat;
``general.architecture == "clip"`` is a projector that only works beside a text model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["chat", "embedding", "rerank", "mmproj"]
POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
# llama.cpp architectures with bidirectional attention only: never a chat model
ENCODER_ARCHS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "jina-bert-v3", "modern-bert", "neo-bert",
     "t5encoder", "eurobert"}
)  # fmt: skip
CLASSIFIER_TENSORS = ("cls.weight", "cls.output.weight")

# (family, a marker only its templates carry), first match wins
_FAMILIES: tuple[tuple[str, str], ...] = (
    ("llama3", "<|start_header_id|>"),
    ("gemma", "<start_of_turn>"),
    ("chatml", "<|im_start|>"),
    ("mistral", "[INST]"),
    ("deepseek", "<｜Assistant｜>"),
    ("glm", "[gMASK]"),
    ("phi", "<|assistant|>"),
    ("gpt-oss", "<|start|>"),
    ("granite", "<|start_of_role|>"),
    ("command-r", "<|START_OF_TURN_TOKEN|>"),
)
_TOOLS = re.compile(r"\btools\b")


@dataclass(frozen=True, slots=True)
class Purpose:
    role: Role
    pooling: str | None = None  # the model's own pooling type, when it declares one
    chat_template: bool = False
    template_family: str | None = None  # chatml, llama3, gemma, ... "other" when unrecognised
    tools: bool = False  # the template renders a ``tools`` list
    classifier: bool = False  # a classification head (``cls.*``): what a reranker scores with

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "pooling": self.pooling,
            "chat_template": self.chat_template,
            "template_family": self.template_family,
            "tools": self.tools,
            "classifier": self.classifier,
        }


def template_family(template: str) -> str:
    for family, marker in _FAMILIES:
        if marker in template:
            return family
    return "other"


def purpose(meta: dict[str, Any], tensor_names: set[str] | frozenset[str]) -> Purpose:
    """The role of a model from its metadata and tensor names (see the module docstring)."""
    arch = meta.get("general.architecture")
    template = meta.get("tokenizer.chat_template")
    has_template = isinstance(template, str) and bool(template.strip())
    text = template if isinstance(template, str) else ""
    family = template_family(text) if has_template else None
    tools = bool(has_template and _TOOLS.search(text))
    if arch == "clip":
        return Purpose("mmproj")
    raw = meta.get(f"{arch}.pooling_type")
    pooling = POOLING.get(raw) if isinstance(raw, int) and not isinstance(raw, bool) else None
    classifier = any(n in tensor_names for n in CLASSIFIER_TENSORS)
    role: Role = "chat"
    # not ``attention.causal == false`` alone: diffusion LMs (dream, llada) are bidirectional chat models
    if pooling == "rank" or (classifier and arch in ENCODER_ARCHS):
        role = "rerank"
    elif pooling not in (None, "none") or arch in ENCODER_ARCHS:
        role = "embedding"
    return Purpose(role, pooling, has_template, family, tools, classifier)


def vocab_digest(meta: dict[str, Any]) -> str | None:
    """A digest of the tokenizer (model, size, special ids, every token): two models with the same
    digest can pair for speculative decoding (llama.cpp compares type, size, BOS/EOS and tokens)."""
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        return None
    h = hashlib.sha256()
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        h.update(repr(meta.get(key)).encode())
    h.update(str(len(tokens)).encode())
    for tok in tokens:
        h.update(str(tok).encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:16]


# the tensor whose shape gives a projector's output width (llama.cpp's clip_n_mmproj_embd):
# projector type → (tensor, ggml dimension)
_PROJ_OUT: dict[str, tuple[str, int]] = {
    **dict.fromkeys(("mlp", "phi4", "pixtral", "lightonocr", "ultravox", "voxtral"), ("mm.2.weight", 1)),
    "mlp_norm": ("mm.3.bias", 0),
    **dict.fromkeys(("qwen2vl_merger", "qwen2.5vl_merger", "qwen3vl_merger"), ("mm.1.bias", 0)),
    **dict.fromkeys(("gemma3", "gemma3nv"), ("mm.input_projection.weight", 0)),
    **dict.fromkeys(("gemma4v", "gemma4a"), ("mm.input_projection.weight", 1)),
    "idefics3": ("mm.model.fc.weight", 1),
    **dict.fromkeys(("internvl", "nemotron_v2_vl"), ("mm.3.weight", 1)),
}


def projector_width(meta: dict[str, Any], tensors: dict[str, tuple[int, ...]]) -> int | None:
    """The width of the embeddings a projector produces (None: not known for its type)."""
    proj = meta.get("clip.projector_type") or meta.get("clip.vision.projector_type")
    spec = _PROJ_OUT.get(proj) if isinstance(proj, str) else None
    if spec is not None and spec[0] in tensors and len(tensors[spec[0]]) > spec[1]:
        return tensors[spec[0]][spec[1]]
    width = meta.get("clip.vision.projection_dim") or meta.get("clip.audio.projection_dim")
    return width if isinstance(width, int) and not isinstance(width, bool) else None


def projector_mismatch(meta: dict[str, Any], tensors: dict[str, tuple[int, ...]], n_embd: int) -> str | None:
    """Why a projector cannot serve a text model of width ``n_embd`` (None: it can, or its width
    is not known and llama-server will say)."""
    if meta.get("general.architecture") != "clip":
        return "it is not a multimodal projector (general.architecture is not clip)"
    width = projector_width(meta, tensors)
    if width is not None and n_embd and width != n_embd:
        return (
            f"it produces embeddings of width {width} and the text model's width is {n_embd} "
            "(an mmproj from another model's repository)"
        )
    return None


SPEC_VOCAB_MAX_SIZE_DIFFERENCE = 128  # llama.cpp common/speculative.cpp
SPEC_VOCAB_CHECK_START_TOKEN_ID = 5


def draft_mismatch(target: dict[str, Any], draft: dict[str, Any]) -> str | None:
    """Why llama.cpp would refuse ``draft`` as the draft model of ``target`` (the checks of
    ``common_speculative_are_compatible``), or None."""
    t_tokens, d_tokens = target.get("tokenizer.ggml.tokens"), draft.get("tokenizer.ggml.tokens")
    if not isinstance(t_tokens, list) or not isinstance(d_tokens, list):
        return "a model without a vocabulary"
    if target.get("tokenizer.ggml.model") != draft.get("tokenizer.ggml.model"):
        return (
            f"its tokenizer is {draft.get('tokenizer.ggml.model')!r} and the model's is "
            f"{target.get('tokenizer.ggml.model')!r}"
        )
    checks = [("tokenizer.ggml.add_bos_token", "adds BOS differently")]
    if target.get("tokenizer.ggml.add_bos_token", True):
        checks.append(("tokenizer.ggml.bos_token_id", "has another BOS token"))
    checks.append(("tokenizer.ggml.eos_token_id", "has another EOS token"))
    for key, what in checks:
        if target.get(key) != draft.get(key):
            return f"it {what} ({key}: {draft.get(key)!r} vs {target.get(key)!r})"
    if abs(len(t_tokens) - len(d_tokens)) > SPEC_VOCAB_MAX_SIZE_DIFFERENCE:
        return f"its vocabulary has {len(d_tokens)} tokens and the model's {len(t_tokens)}"
    for i in range(SPEC_VOCAB_CHECK_START_TOKEN_ID, min(len(t_tokens), len(d_tokens))):
        if t_tokens[i] != d_tokens[i]:
            return f"token {i} differs ({str(d_tokens[i])[:20]!r} vs {str(t_tokens[i])[:20]!r})"
    return None
