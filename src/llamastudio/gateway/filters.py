"""llama-swap's request filters, applied by the gateway to a JSON body before it is relayed:
``stripParams`` (keys removed), ``setParams`` (keys set, overriding the client's) and
``useModelName`` (the ``model`` the engine receives). ``model`` itself is never stripped nor set
by the params (llama-swap's rule); a body that is not a JSON object (multipart audio, a bad body
the engine will refuse itself) is relayed unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def rewrite(body: bytes, strip: list[str], set_params: Mapping[str, Any], model: str | None) -> bytes:
    """``body`` with the filters applied (the same bytes when nothing applies)."""
    if not body:
        return body
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested past Python's limit: the engine refuses it
        return body
    if not isinstance(data, dict):
        return body
    for key in strip:
        if key != "model":
            data.pop(key, None)
    for key, value in set_params.items():
        if key != "model":
            data[key] = value
    if model:
        data["model"] = model
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
