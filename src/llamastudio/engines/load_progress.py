"""A model load as a job (kind ``load``): llama-server's load log lines become steps of progress.

llama-server prints no percentage while it loads, but it passes through known stages in order;
each stage seen moves the load job forward (never back), and "listening" ends it. Lines of older
and newer llama.cpp versions are both recognised (``llm_load_tensors`` / ``load_tensors``,
``main: server is listening`` / ``llama_server: listening on``).

The runtime wires it (see :class:`LoadProgress`); nothing here starts or watches a process.
"""

from __future__ import annotations

import re
from typing import Protocol

from llamastudio.jobs import JobKind, Recovery

LOAD = "load"
# loads run as many as the scheduler starts; a restart drops them (the process is gone)
LOAD_KIND = JobKind(LOAD, concurrency=None, recovery=Recovery.DROP, retain=50)

STAGES: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"load_model: loading model|llama_model_load_from_file|llama_model_loader: loaded meta"),
        "reading the model",
    ),
    (re.compile(r"\b(?:llm_)?load_tensors: "), "loading tensors"),
    (
        re.compile(r"llama_context: constructing|llama_new_context_with_model|llama_init_from_model"),
        "creating the context",
    ),
    (re.compile(r"llama_kv_cache|llama_kv_cache_init|KV buffer size"), "allocating the KV cache"),
    (re.compile(r"warming up the model"), "warming up"),
    (re.compile(r"load_model: initializing|initializing slots"), "initializing slots"),
    (re.compile(r"\bmodel loaded\b"), "model loaded"),
    (re.compile(r"server is listening|listening on http"), "listening"),
)


class Reporter(Protocol):
    """What the adapter reports to: a :class:`~llamastudio.jobs.JobHandle` fits."""

    def progress(
        self, done: float, total: float | None = None, message: str | None = None, unit: str | None = None
    ) -> None: ...

    def log(self, line: str) -> None: ...


class LoadProgress:
    """Feed it every line of the engine's output while the model loads::

        job = jobs.track(LOAD, f"load {model}", {"model": model})
        steps = LoadProgress(job)
        ... lines_hook=lambda lines: [steps.feed(line) for line in lines] ...
        await proc.ensure_ready()  → job.finish();   StartFailed → job.fail(reason)

    Lines go to the job's log until the server listens; then ``feed`` ignores them (the model's
    own log keeps them). Safe to call from the thread or task that reads the output.
    """

    def __init__(self, job: Reporter) -> None:
        self.job = job
        self.stage = -1  # index of the last stage seen
        self.done = False
        job.progress(0, len(STAGES), "starting", unit="steps")

    def feed(self, line: str) -> bool:
        """Take one output line; True when it moved the load forward."""
        if self.done:
            return False
        self.job.log(line)
        for i in range(len(STAGES) - 1, self.stage, -1):  # the furthest stage this line shows
            pattern, message = STAGES[i]
            if pattern.search(line):
                self.stage = i
                self.done = i == len(STAGES) - 1
                self.job.progress(i + 1, len(STAGES), message, unit="steps")
                return True
        return False
