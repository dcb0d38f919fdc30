"""The engine-kind interface (see the package docstring)."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from llamastudio.checkpoint import Checkpoint
from llamastudio.engines.registry import Engine
from llamastudio.fit.usage import Estimate
from llamastudio.gguf import GGUFModel
from llamastudio.hardware.devices import Hardware

PORT = "${PORT}"  # where the studio puts an instance's port in an argv

# Lines that end a start, whatever the engine (the seeds' list): out-of-memory in its many
# spellings, CUDA failures, a KV cache too small for the context, vLLM's engine core.
COMMON_FATAL = (
    r"out of memory|OutOfMemoryError|not enough (?:V?RAM|memory)|Cannot allocate|"
    r"failed to allocate|ggml_cuda_error|CUDA error|cudaMalloc failed|"
    r"larger than the available KV cache memory|EngineCore failed to start"
)


@dataclass(frozen=True)
class ModelRequest:
    """What serving asks of a kind, as plain data (serving's types live above engines)."""

    name: str
    args: list[str] = field(default_factory=list)
    auto: bool = False
    reserve: dict[str, int] | None = None
    command: list[str] | None = None
    model_path: Path | None = None  # a GGUF file, or a checkpoint's directory
    header: GGUFModel | None = None  # the GGUF's header, for kinds that read it
    checkpoint: Checkpoint | None = None  # a safetensors checkpoint's facts (vLLM, SGLang, LMDeploy)
    env: dict[str, str] = field(default_factory=dict)  # the configuration's engine environment
    pin: bool = False  # pin compute threads that take every core (settings.pin_threads)
    # llama.cpp companions, found and read by serving: the projector (an explicit --mmproj, else the
    # model's mmproj file unless --no-mmproj) and the draft model (-md)
    mmproj: GGUFModel | None = None
    draft: GGUFModel | None = None
    proxy: str | None = None  # a command's fixed URL (llama-swap ``proxy``): then ${PORT} is optional


@dataclass
class Traits:
    """What a model does, for the gateway and the faces: its role, and what its chat needs."""

    role: str = "chat"  # chat | embedding | rerank
    vision: bool | None = None  # takes images (a projector is loaded); None: not known
    chat_template: bool | None = None  # None: not known (engines that do not say)
    template_family: str | None = None
    tools: bool = False  # its chat template renders tool definitions
    draft: str | None = None  # the draft model's file, with speculative decoding


@dataclass
class LaunchPlan:
    argv: list[str]  # with ${PORT}
    reserve: dict[str, int]  # bytes per device the load takes
    threads: int = 0  # CPU threads it computes with (0: none or not known)
    estimate: Estimate | None = None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # flags the engine lacks, left out
    env: dict[str, str] = field(default_factory=dict)  # set in the engine's environment
    traits: Traits = field(default_factory=Traits)
    placement: list[str] = field(default_factory=list)  # in argv: its threads on this machine's CPUs


class EngineKind(ABC):
    name: ClassVar[str]
    fatal: ClassVar[re.Pattern[str]]  # a line matching it while starting fails the start
    ready_path: ClassVar[str] = "/health"  # 200 here = ready
    needs_engine: ClassVar[bool] = True  # runs a registered engine (else its own argv)
    start_seconds: ClassVar[float] = 60.0  # a start's time limit before the model's size is added

    @abstractmethod
    def plan(self, request: ModelRequest, engine: Engine | None, hw: Hardware) -> LaunchPlan:
        """The argv and the memory for a model; raises InvalidInput when it cannot run."""

    formats: ClassVar[tuple[str, ...]] = ("gguf",)  # the model formats it serves

    def takes_key(self, engine: Engine | None) -> bool:
        """Whether the studio can give it a per-process API key (``engines/keys.py``)."""
        return False

    def key_env(self, engine: Engine | None) -> str | None:
        """The environment variable it reads its key from (None: ``--api-key-file``)."""
        return None


def flag_value(args: list[str], names: tuple[str, ...]) -> str | None:
    """The last value given to any of ``names`` (``--flag v`` or ``--flag=v``)."""
    value: str | None = None
    it = iter(args)
    for token in it:
        flag, eq, inline = token.partition("=")
        if flag in names:
            value = inline if eq else next(it, None)
    return value
