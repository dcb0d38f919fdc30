"""Engine kinds: everything the studio must know to run one kind of inference server.

A kind says how to build the argv for a model, how to tell it is ready, which log lines mean it
failed, what memory a load reserves, and whether it takes a per-process API key. Adding an engine
(vLLM, SGLang, LMDeploy) is one new module here, registered in ``KINDS``.

    kind         model                              memory
    llama.cpp    a GGUF file on a registered build  the estimator's per-device figures
    command      any OpenAI-compatible argv         the configuration's ``reserve`` (required)
"""

from __future__ import annotations

from llamastudio.engines.kinds.base import EngineKind, LaunchPlan, ModelRequest
from llamastudio.engines.kinds.command import COMMAND
from llamastudio.engines.kinds.llamacpp import LLAMA_CPP
from llamastudio.errors import InvalidInput

KINDS: dict[str, EngineKind] = {k.name: k for k in (LLAMA_CPP, COMMAND)}

__all__ = ["COMMAND", "KINDS", "LLAMA_CPP", "EngineKind", "LaunchPlan", "ModelRequest", "kind_named"]


def kind_named(name: str) -> EngineKind:
    try:
        return KINDS[name]
    except KeyError:
        raise InvalidInput(f"unknown engine kind {name!r}: one of {', '.join(sorted(KINDS))}") from None
