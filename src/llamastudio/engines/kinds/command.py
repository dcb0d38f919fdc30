"""Any OpenAI-compatible server, run as the user's own argv with ``${PORT}``.

The studio cannot estimate another program's memory, so the configuration's ``reserve`` is what
the scheduler places it by — required and non-zero (reserving nothing by accident would put it
next to models it does not fit beside). Readiness is ``/health`` (vLLM, SGLang, LMDeploy and
llama-server all answer it); the fatal patterns are the common ones.
"""

from __future__ import annotations

import re

from llamastudio.engines.kinds.base import COMMON_FATAL, PORT, EngineKind, LaunchPlan, ModelRequest
from llamastudio.engines.registry import Engine
from llamastudio.errors import InvalidInput
from llamastudio.hardware.devices import Hardware


class CommandKind(EngineKind):
    name = "command"
    fatal = re.compile(f"({COMMON_FATAL}|Traceback \\(most recent call last\\))", re.IGNORECASE)
    needs_engine = False

    def plan(self, request: ModelRequest, engine: Engine | None, hw: Hardware) -> LaunchPlan:
        return LaunchPlan(list(request.command or []), self.check(request))

    def check(self, request: ModelRequest) -> dict[str, int]:
        """Refuse a command that cannot run as configured; returns its reservation."""
        argv = list(request.command or [])
        if not argv:
            raise InvalidInput("command must not be empty")
        if not request.proxy and not any(PORT in a for a in argv):
            raise InvalidInput(f"command must contain {PORT} where the studio puts the instance's port")
        reserve = {d: n for d, n in (request.reserve or {}).items() if n}
        if not reserve:
            raise InvalidInput(
                'a command config needs `reserve` (bytes per device, e.g. {"CPU": 2147483648}): the '
                "studio cannot estimate another program's memory, and reserving nothing would let it "
                "be placed next to models it does not fit beside (llama-swap imports: "
                "metadata.llamastudio.reserve)"
            )
        return reserve


COMMAND = CommandKind()
