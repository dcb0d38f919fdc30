"""The service layer: the one façade the faces (API routes, CLI commands, the gateway) call, and
the typed snapshots it returns. Nothing above this package touches the runtime or the store."""

from llamastudio.services.studio import StudioService

__all__ = ["StudioService"]
