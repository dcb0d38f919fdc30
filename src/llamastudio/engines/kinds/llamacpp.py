"""llama.cpp's llama-server: a GGUF on a registered build.

The argv is built from the engine's own ``--help`` (flags it lacks are rewritten or left out,
``engines/command.py``); memory is the estimator's per-device figures for the flags it will run
with (or the planner's, with ``auto``), unless the configuration reserves its own; it takes a
per-process key with ``--api-key-file``; ready when ``/health`` says 200.
"""

from __future__ import annotations

import re

from llamastudio.engines.command import build_command
from llamastudio.engines.kinds.base import COMMON_FATAL, PORT, EngineKind, LaunchPlan, ModelRequest
from llamastudio.engines.kinds.threads import cpu_threads
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.fit.estimator import estimate
from llamastudio.fit.flags import parse_server_args
from llamastudio.fit.planner import plan
from llamastudio.hardware.devices import Hardware


class LlamaCppKind(EngineKind):
    name = "llama.cpp"
    fatal = re.compile(
        f"({COMMON_FATAL}|failed to load model|error loading model|GGML_ASSERT|"
        r"exiting due to model loading error|unable to load model)",
        re.IGNORECASE,
    )

    def plan(self, request: ModelRequest, engine: Engine | None, hw: Hardware) -> LaunchPlan:
        if engine is None or request.model_path is None or request.header is None:
            raise InvalidInput(f"{request.name}: a llama.cpp model needs an engine and a GGUF file")
        base = parse_server_args(request.args)
        reasons: list[str] = []
        warnings: list[str] = []
        if request.auto:
            # flags the user gave are kept; the planner chooses the rest
            ctx = base.ctx_size or None
            parallel = base.parallel if base.parallel > 0 else None
            p = plan(request.header, hw, ctx=ctx, parallel=parallel, base=base)
            flags, est, reasons, warnings = p.flags, p.estimate, p.reasons, p.warnings
        else:
            flags, est = base, estimate(request.header, base, hw.gpus)
        reserve = {d.name: d.total for d in est.devices if d.total}
        if request.reserve:  # the user's own figure wins
            reserve = dict(request.reserve)
        cmd = build_command(engine, str(request.model_path), flags, "127.0.0.1", 0)
        argv = list(cmd.argv)
        argv[argv.index("--port") + 1] = PORT
        if "--alias" in engine.capabilities and "--alias" not in request.args and "-a" not in request.args:
            argv += ["--alias", request.name]
        return LaunchPlan(
            argv,
            reserve,
            threads=cpu_threads(argv, flags, est, hw.cpu_cores),
            estimate=est,
            reasons=reasons,
            warnings=warnings,
            dropped=cmd.dropped,
        )

    def takes_key(self, engine: Engine | None) -> bool:
        return engine is not None and "--api-key-file" in engine.capabilities


LLAMA_CPP = LlamaCppKind()
