"""The studio's one exception tree.

Every error the studio raises on purpose derives from :class:`StudioError`. Each class carries
the HTTP status the API renders it with, a stable machine-readable ``code`` and the CLI exit
code. Third-party errors (httpx, OSError, SQLAlchemy, ...) are converted once, at the boundary
where they happen, with ``raise ... from exc``.

    StudioError (500, exit 1)
    ├── InvalidInput (400, exit 2)            bad arguments, bad config values
    │   ├── ScanLimit                         an added directory too large to search
    │   ├── UnsupportedMediaType (415)        a request body that is not JSON (gateway)
    │   └── GGUFError (422, exit 2)           a file or URL that is not a readable GGUF
    │       └── GGUFUnsupported (422, exit 2) a valid-looking GGUF this reader cannot handle
    ├── NotFound (404, exit 2)                a model, file, URL or route that does not exist
    ├── RemoteError (502, exit 1)             a remote server failed or misbehaved
    │   ├── RangeNotSupported (502, exit 2)   the server ignores HTTP range requests
    │   ├── HubUnreachable (502, exit 1)      the Hugging Face Hub endpoint cannot be reached
    │   │   └── HubTimeout (504, exit 1)      ... or did not answer in time
    │   ├── UpstreamFailed (502, exit 1)      an engine failed while serving a request
    │   └── AuthRequired (401, exit 2)        gated/private resource, token missing or refused
    ├── Conflict (409, exit 1)                the request clashes with current state
    ├── Unauthorized (401, exit 2)            a missing or wrong API key
    │   └── GatewayUnauthorized               ... the gateway's (code ``invalid_api_key``)
    ├── Forbidden (403, exit 2)               refused by policy (``guard.py``)
    │   ├── ForbiddenHost                     a Host header not allowed (DNS rebinding)
    │   ├── CrossSite                         a request from another web site
    │   ├── CrossOrigin                       a browser Origin the gateway's CORS list lacks
    │   ├── ClientHeaderRequired              a state-changing request with neither JSON nor
    │   │                                     the ``X-Studio-Client`` header (CSRF)
    │   └── CommandsNotAllowed                would run a command of the caller's choosing
    ├── TooLarge (413, exit 2)                a request body over ``max_body_mb``
    ├── DoesNotFit (422, exit 3)              no placement fits the hardware (planner)
    ├── StartFailed (503)                     an engine did not become ready
    ├── QueueFull (503), NoRoom (503)         too many waiting; no room freed in time
    ├── PeerUnavailable (503)                 the peer serving a model does not answer
    ├── PeerLoop (508)                        a request came back to the studio it left
    ├── TooBusy (429)                         a model at its ``max_concurrency``
    ├── DownloadCancelled (exit 130)          a download stopped on request
    ├── BuildFailed, BuildCancelled (exit 130) a source build failed or stopped on request
    ├── StudioUnreachable (exit 1)            the CLI finds no studio for its data directory
    └── StorageError (500, exit 1)            the database or the data directory failed
"""

from __future__ import annotations

from typing import Any, ClassVar


class StudioError(Exception):
    """Base of every error the studio raises deliberately."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def headers(self) -> dict[str, str]:
        """HTTP headers the error carries: ``Retry-After`` when it says when to come back (a full
        queue, a start in backoff, a busy model). Rendered by the API and the gateway alike."""
        retry = self.details.get("retry_after") if self.details else None
        return {} if retry is None else {"Retry-After": str(max(1, int(retry)))}

    def to_dict(self) -> dict[str, Any]:
        """The body of the project's one error shape (see ``api/errors.py``)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message, "source": "studio"}
        if self.details:
            body["details"] = self.details
        return body


class InvalidInput(StudioError):
    status_code = 400
    code = "invalid_input"
    exit_code = 2


class UnsupportedMediaType(InvalidInput):
    status_code = 415
    code = "unsupported_media_type"


class GGUFError(InvalidInput):
    status_code = 422
    code = "invalid_gguf"


class GGUFUnsupported(GGUFError):
    code = "unsupported_gguf"


class NotFound(StudioError):
    status_code = 404
    code = "not_found"
    exit_code = 2


class RemoteError(StudioError):
    status_code = 502
    code = "remote_error"


class RangeNotSupported(RemoteError):
    code = "range_not_supported"
    exit_code = 2


class HubUnreachable(RemoteError):
    code = "hub_unreachable"


class HubTimeout(HubUnreachable):
    status_code = 504
    code = "hub_timeout"


class AuthRequired(RemoteError):
    status_code = 401
    code = "auth_required"
    exit_code = 2


class Conflict(StudioError):
    status_code = 409
    code = "conflict"


class Unauthorized(StudioError):
    status_code = 401
    code = "unauthorized"
    exit_code = 2


class Forbidden(StudioError):
    status_code = 403
    code = "forbidden"
    exit_code = 2


class ForbiddenHost(Forbidden):
    code = "forbidden_host"


class CrossSite(Forbidden):
    code = "cross_site"


class CrossOrigin(Forbidden):
    code = "cross_origin"


class ClientHeaderRequired(Forbidden):
    code = "csrf_header_required"


class CommandsNotAllowed(Forbidden):
    code = "commands_not_allowed"


class TooLarge(StudioError):
    status_code = 413
    code = "too_large"
    exit_code = 2


class GatewayUnauthorized(Unauthorized):
    """The gateway's key is missing or wrong."""

    code = "invalid_api_key"


class UpstreamFailed(RemoteError):
    """An engine failed while serving a request (connection refused or reset, died mid-stream)."""

    code = "upstream_failed"


class ScanLimit(InvalidInput):
    """An added directory too large to search."""


class DoesNotFit(StudioError):
    """No placement of the model fits the hardware (the planner says why)."""

    status_code = 422
    code = "does_not_fit"
    exit_code = 3


class StartFailed(StudioError):
    """A model's engine did not become ready (exit, fatal line, timeout, backoff)."""

    status_code = 503
    code = "model_failed_to_start"


class QueueFull(StudioError):
    """Too many requests already wait for a model to load."""

    status_code = 503
    code = "queue_full"


class NoRoom(StudioError):
    """No memory (or CPU) was freed for a model within the wait bound."""

    status_code = 503
    code = "no_room"


class PeerUnavailable(StudioError):
    """Every peer that serves the model does not answer its health check (the message names it)."""

    status_code = 503
    code = "peer_unavailable"


class PeerLoop(StudioError):
    """A request relayed to a peer reached the studio it came from (a peer URL naming itself)."""

    status_code = 508
    code = "peer_loop"


class TooBusy(StudioError):
    """A model is at its ``max_concurrency``."""

    status_code = 429
    code = "too_many_requests"


class DownloadCancelled(StudioError):
    """A download stopped on request (cancel or pause)."""

    code = "download_cancelled"
    exit_code = 130


class StudioUnreachable(StudioError):
    """No studio answers for this data directory (CLI)."""


class BuildFailed(StudioError):
    """A source build did not produce a working llama-server."""

    code = "build_failed"


class BuildCancelled(StudioError):
    """A build stopped on request."""

    code = "build_cancelled"
    exit_code = 130


class StorageError(StudioError):
    code = "storage_error"


def check_remote_status(url: str, status: int, too_short: StudioError, ranged: bool = True) -> None:
    """Raise the studio's error for a Hub answer that is not the bytes asked for (206 to a range
    request, else 200): the whole file instead of a range, access denied, missing, or
    ``too_short`` (416: the file ends before the header it should hold)."""
    if status == (206 if ranged else 200):
        return
    if ranged and status == 200:
        raise RangeNotSupported(
            f"{url}: the server ignores HTTP range requests; refusing to download the whole file "
            "just to read its header"
        )
    if status in (401, 403):
        raise AuthRequired(
            f"{url}: access denied (HTTP {status}). The repository may be gated or private: "
            "accept its terms on the Hub and set HF_TOKEN to a token with access."
        )
    if status == 404:
        raise NotFound(f"{url}: not found (HTTP 404)")
    if ranged and status == 416:
        raise too_short
    raise RemoteError(f"{url}: HTTP {status}")
