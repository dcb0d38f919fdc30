"""One job system for long work — downloads, engine builds and installs, model loads: persisted
in SQLite, states queued/running/paused/done/failed/cancelled, progress and log lines published
as typed events (``job.changed``, ``job.progress``, ``job.log``, ``job.removed``), cancel, pause
and resume where the kind allows, a concurrency limit and a restart recovery per kind.

It knows nothing of what a job does: a kind's runner (or the owner of a tracked job) does the
work and reports through a :class:`JobContext` / :class:`JobHandle`.
"""

from llamastudio.jobs.events import JobChanged, JobEvent, JobLog, JobProgress, JobRemoved, parse_event
from llamastudio.jobs.manager import INTERRUPTED, JobManager
from llamastudio.jobs.model import ACTIVE, FINISHED, Job, JobDetail, JobState, Progress
from llamastudio.jobs.runner import JobContext, JobHandle, JobKind, Recovery, Runner

__all__ = [
    "ACTIVE",
    "FINISHED",
    "INTERRUPTED",
    "Job",
    "JobChanged",
    "JobContext",
    "JobDetail",
    "JobEvent",
    "JobHandle",
    "JobKind",
    "JobLog",
    "JobManager",
    "JobProgress",
    "JobRemoved",
    "JobState",
    "Progress",
    "Recovery",
    "Runner",
    "parse_event",
]
