"""The one vocabulary jobs speak on the event bus (and so over ``/ws``): one dataclass per event.

    job.changed   {"job": Job}                          created, state, title, error or result changed
    job.progress  {"id", "kind", "progress", "rate", "eta_s"}   throttled (a few per second per job)
    job.log       {"id", "kind", "line", "n"}           one log line; n counts from 1
    job.removed   {"id", "kind"}                        pruned (old finished jobs) or dropped

The bus carries JSON-ready dicts (``to_json``); :func:`parse_event` turns one back into its type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from llamastudio.jobs.model import Job, Progress


@dataclass(frozen=True)
class JobChanged:
    TYPE: ClassVar[str] = "job.changed"
    job: Job

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "job": self.job.model_dump(mode="json")}


@dataclass(frozen=True)
class JobProgress:
    TYPE: ClassVar[str] = "job.progress"
    id: str
    kind: str
    progress: Progress
    rate: float | None = None
    eta_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.TYPE,
            "id": self.id,
            "kind": self.kind,
            "progress": self.progress.model_dump(mode="json"),
            "rate": self.rate,
            "eta_s": self.eta_s,
        }


@dataclass(frozen=True)
class JobLog:
    TYPE: ClassVar[str] = "job.log"
    id: str
    kind: str
    line: str
    n: int

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "kind": self.kind, "line": self.line, "n": self.n}


@dataclass(frozen=True)
class JobRemoved:
    TYPE: ClassVar[str] = "job.removed"
    id: str
    kind: str

    def to_json(self) -> dict[str, Any]:
        return {"type": self.TYPE, "id": self.id, "kind": self.kind}


JobEvent = JobChanged | JobProgress | JobLog | JobRemoved
EVENT_TYPES = frozenset(t.TYPE for t in (JobChanged, JobProgress, JobLog, JobRemoved))


def parse_event(data: dict[str, Any]) -> JobEvent | None:
    """The typed event of a bus message; None for messages that are not about jobs."""
    kind = data.get("type")
    if kind == JobChanged.TYPE:
        return JobChanged(Job.model_validate(data["job"]))
    if kind == JobProgress.TYPE:
        return JobProgress(
            data["id"], data["kind"], Progress.model_validate(data["progress"]), data["rate"], data["eta_s"]
        )
    if kind == JobLog.TYPE:
        return JobLog(data["id"], data["kind"], data["line"], data["n"])
    if kind == JobRemoved.TYPE:
        return JobRemoved(data["id"], data["kind"])
    return None
