"""The scheduler's effects: start a model's supervised engine process, stop it.

A start takes the model's launch spec, picks a free port, gives the engine its environment (never
the studio's keys or tokens) and, where its kind takes one, a per-process key only the gateway
holds; it waits until the engine is ready. Failed starts back off (0, 1, 3, 7 … 60 s). A ready
engine is recorded in ``<data>/run/`` (``instances.py``) and watched: its exit while serving is
reported at once (``died``), and its health is polled (``process.watch_health``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llamastudio.config import Settings
from llamastudio.engines import keys as engine_keys
from llamastudio.engines.kinds import KINDS, LLAMA_CPP
from llamastudio.engines.kinds.base import PORT
from llamastudio.engines.load_progress import LOAD, LoadProgress
from llamastudio.engines.validate import binary_env, engine_env
from llamastudio.errors import StartFailed
from llamastudio.events import EventBus
from llamastudio.fit.measured import MemoryPlan
from llamastudio.jobs import JobManager
from llamastudio.runtime.instances import file_stem, remove_record, write_record
from llamastudio.runtime.measured import Learner, LoadLines
from llamastudio.runtime.process import EngineProcess, State, free_port, load_timeout
from llamastudio.serving.launch import Prepared

log = logging.getLogger(__name__)


@dataclass
class Failures:
    """Failed starts in a row of one model, and the last reason."""

    count: int = 0
    at: float = 0.0
    reason: str = ""

    def backoff(self) -> float:
        return 0.0 if self.count <= 1 else min(60.0, 2.0 ** (self.count - 1) - 1)


class ProcessEffects:
    """Implements the scheduler's ``Effects``; owns the process table. Called only by the
    scheduler's owner task (and ``close`` at shutdown)."""

    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        run_dir: Path,
        spec_of: Callable[[str], Prepared],
        died: Callable[[str], None],
        jobs: JobManager | None = None,
        learner: Learner | None = None,
    ) -> None:
        """``spec_of(model)``: its launch spec (raises why there is none); ``died(model)``: tell
        the scheduler a ready engine is gone; ``learner``: measures llama.cpp loads
        (``measured.py``)."""
        self.settings = settings
        self.bus = bus
        self.jobs = jobs  # each start is a ``load`` job whose progress the UI shows as a load bar
        self.learner = learner
        self.measuring: dict[str, MemoryPlan] = {}  # the memory plan each running engine started with
        self.run_dir = run_dir
        self.spec_of = spec_of
        self.died = died
        self.procs: dict[str, EngineProcess] = {}
        self.failures: dict[str, Failures] = {}
        self.started_with: dict[str, list[str]] = {}  # the launch argv each running engine got
        self._watchers: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Stop every engine (the studio is shutting down)."""
        await asyncio.gather(*(self.stop(n) for n in list(self.procs)), return_exceptions=True)
        for t in list(self._watchers):
            t.cancel()

    async def stop(self, model: str) -> None:
        proc = self.procs.get(model)
        if proc is None:
            return
        plan = self.measuring.pop(model, None)
        if plan is not None and self.learner is not None and proc.state == State.READY and proc.pid:
            visible = proc.env.get("CUDA_VISIBLE_DEVICES") if proc.env else None
            await self.learner.stopping(model, plan, proc.pid, visible)
        await proc.stop()
        remove_record(self.run_dir, model)

    async def start(self, model: str) -> None:
        """Start ``model``'s engine on a free port and wait until it is ready; raises why not."""
        fail = self.failures.setdefault(model, Failures())
        wait = fail.at + fail.backoff() - time.monotonic()
        if fail.count and wait > 0:
            raise StartFailed(
                f"{model} failed to start {fail.count}× (last: {fail.reason}); next try in {wait:.0f}s",
                retry_after=max(1, round(wait)),
            )
        prep = self.spec_of(model)
        port = free_port()
        argv = [a.replace(PORT, str(port)) for a in prep.argv]
        # engines get neither the studio's keys nor its tokens; the configuration's env still applies
        env = binary_env(Path(argv[0])) if prep.engine else engine_env()
        env.update(prep.env)  # the kind's (VLLM_CPU_KVCACHE_SPACE ...)
        lines = None
        if self.learner is not None and prep.memory is not None:
            env.update(self.learner.engine_env(prep.memory))  # the configuration's env wins
            lines = LoadLines()
        env.update(prep.config.env)
        old = self.procs.get(model)
        if old is not None and old.state not in (State.STOPPED, State.FAILED):
            await old.stop()
        kind = KINDS[prep.kind]
        # only the gateway may call it
        key = None
        if kind.takes_key(prep.engine):
            var = kind.key_env(prep.engine)
            key = (
                engine_keys.issue_env(var)
                if var
                else engine_keys.issue(prep.engine, self.run_dir, file_stem(model))
            )
        if key is not None:
            argv += key.args
            env.update(key.env)
        job = None
        if self.jobs is not None:
            params = {"model": model, "engine": prep.engine.id if prep.engine else None}
            job = self.jobs.track(LOAD, f"load {model}", params)
        steps = LoadProgress(job) if job is not None and prep.kind == LLAMA_CPP.name else None

        def on_lines(block: list[str]) -> None:  # after the load only the live log view wants them
            if self.bus.subscribers:
                for line in block:
                    self.bus.publish({"type": "log", "model": model, "line": line})
            if steps is not None and not steps.done:
                for line in block:
                    steps.feed(line)
            if lines is not None and not lines.done.is_set():
                for line in block:
                    lines.feed(line)

        proc = EngineProcess(
            model,
            argv,
            port,
            self.settings.logs_dir / f"{file_stem(model)}.log",
            env=env,
            timeout=prep.config.start_timeout or load_timeout(prep.model_bytes, base=kind.start_seconds),
            lines_hook=on_lines,
            api_key=key.key if key else None,
            fatal=kind.fatal,
            ready_path=_ready_path(prep.config.check_endpoint, kind.ready_path),
            base_url=prep.config.proxy.replace(PORT, str(port)) if prep.config.proxy else None,
            stop_argv=[a.replace(PORT, str(port)) for a in prep.config.cmd_stop or []],
        )
        self.procs[model] = proc
        self.started_with[model] = list(prep.argv)
        try:
            await proc.ensure_ready()
        except StartFailed as exc:
            fail.count, fail.at, fail.reason = fail.count + 1, time.monotonic(), proc.reason or exc.message
            self.bus.publish({"type": "model", "model": model, "state": "failed", "reason": fail.reason})
            if job is not None:
                job.fail(fail.reason)
            raise
        except asyncio.CancelledError:
            if job is not None:
                job.cancelled("start abandoned")
            raise
        finally:  # read while llama-server parsed its arguments, long before /health said ready
            if key is not None:
                key.remove()
        if job is not None:
            job.finish({"port": port, "pid": proc.pid})
        fail.count = 0
        assert proc.proc is not None
        write_record(self.run_dir, model, proc.proc.pid, argv[0], port)
        if lines is not None and self.learner is not None and prep.memory is not None:
            self.measuring[model] = prep.memory
            self.learner.loaded(model, prep.memory, lines, proc.proc.pid, env.get("CUDA_VISIBLE_DEVICES"))
        for watch in (self._watch(model, proc), proc.watch_health(self.settings.hung_after)):
            watcher = asyncio.create_task(watch)
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, model: str, proc: EngineProcess) -> None:
        assert proc.proc is not None
        await proc.proc.wait()
        # not stopped by us: it died while serving (FAILED already when a relay saw it first)
        if proc.state in (State.READY, State.FAILED):
            proc.check_alive()
            log.warning("%s: %s", model, proc.reason)
            self.bus.publish({"type": "model", "model": model, "state": "failed", "reason": proc.reason})
            remove_record(self.run_dir, model)
            self.died(model)


def _ready_path(check_endpoint: str | None, default: str) -> str:
    """A configuration's readiness path (llama-swap ``checkEndpoint``; ``none``: ready once
    started, no health watch), else its engine kind's."""
    return (
        check_endpoint
        if check_endpoint and (check_endpoint.startswith("/") or check_endpoint == "none")
        else default
    )
