"""The data directory opened in this process, for the CLI when no studio serves it.

The CLI is a client of the studio serving its data directory (``cli/client.py``); when none runs,
its commands read and edit the data directory through the same façade, built here over a runtime
that is never started (``offline``: nothing is started, stopped or re-synced). Engine and library
commands get their repositories here too, so no command opens the database itself.
"""

from __future__ import annotations

from llamastudio.config import Settings
from llamastudio.engines.registry import EngineRegistry
from llamastudio.events import EventBus
from llamastudio.hardware.devices import Hardware
from llamastudio.hub.library import Library
from llamastudio.runtime.manager import Runtime
from llamastudio.services.studio import StudioService
from llamastudio.store import Database


def offline_service(settings: Settings, hardware: Hardware) -> StudioService:
    """The façade over the data directory, planning for ``hardware``."""
    runtime = Runtime(settings, Database(settings.db_path), EventBus(), hardware=hardware)
    return StudioService(runtime, offline=True)


def library(settings: Settings) -> Library:
    return Library(Database(settings.db_path))


def engines(settings: Settings) -> EngineRegistry:
    return EngineRegistry(Database(settings.db_path), settings.engines_dir)
