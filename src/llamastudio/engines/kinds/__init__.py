"""Engine kinds: everything the studio must know to run one kind of inference server.

A kind says how to build the argv for a model, how to tell it is ready, which log lines mean it
failed, what memory a load reserves, and whether it takes a per-process API key. Adding an engine
(vLLM, SGLang, LMDeploy) is one new module here, registered in ``KINDS``.

    kind         model                              memory
    llama.cpp    a GGUF file on a registered build  the estimator's per-device figures
    command      any OpenAI-compatible argv         the configuration's ``reserve`` (required)
    vllm         a safetensors checkpoint directory  fraction × GPU (``hfserve.py``); CPU: weights + KV
    sglang       a safetensors checkpoint directory  fraction × GPU
    lmdeploy     a safetensors checkpoint directory  weights + fraction × what is left
"""

from __future__ import annotations

from llamastudio.engines.kinds.base import EngineKind, LaunchPlan, ModelRequest, Traits
from llamastudio.engines.kinds.command import COMMAND
from llamastudio.engines.kinds.hfserve import LMDEPLOY, SGLANG, VLLM, HFServerKind
from llamastudio.engines.kinds.llamacpp import LLAMA_CPP
from llamastudio.errors import InvalidInput

KINDS: dict[str, EngineKind] = {k.name: k for k in (LLAMA_CPP, COMMAND, VLLM, SGLANG, LMDEPLOY)}
# the kinds that serve a model format, in the order a model without a pin picks its engine's family
FOR_FORMAT: dict[str, tuple[str, ...]] = {
    "gguf": (LLAMA_CPP.name,),
    "safetensors": (VLLM.name, SGLANG.name, LMDEPLOY.name),
}

__all__ = [
    "COMMAND",
    "FOR_FORMAT",
    "KINDS",
    "LLAMA_CPP",
    "LMDEPLOY",
    "SGLANG",
    "VLLM",
    "EngineKind",
    "HFServerKind",
    "LaunchPlan",
    "ModelRequest",
    "Traits",
    "kind_named",
]


def kind_named(name: str) -> EngineKind:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown engine kind {name!r}: one of {', '.join(sorted(KINDS))}") from None
