"""What the runtime knows about one model at one moment, as plain frozen data.

Read on the event loop that owns the scheduler (``Runtime.facts``); the service layer turns it
into the status snapshot the faces show (``services/status.py``), so no face reads the process
table or the scheduler's entries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llamastudio.runtime.messages import ModelState
from llamastudio.runtime.process import State


@dataclass(frozen=True)
class ModelFacts:
    name: str
    scheduled: ModelState | None = None  # the scheduler's snapshot; None: it does not know the model
    process: State | None = None  # the supervised process's state; None: never started
    pid: int | None = None
    port: int | None = None
    process_reason: str | None = None  # why the process failed
    engine: str | None = None  # the engine id it runs on, when prepared
    reserve: dict[str, int] = field(default_factory=dict)  # bytes per device, when prepared
    model_path: Path | None = None  # the model file it runs, when prepared (None for a command)
    error: str | None = None  # why it cannot be prepared (its configuration must be fixed)
    failures: int = 0  # failed starts in a row (backing off)
    failure_reason: str = ""
    reload_needed: bool = False  # running with another command than its configuration now gives
