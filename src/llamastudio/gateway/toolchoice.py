"""A ``tool_choice`` that names one tool, in the one form llama-server honours.

llama-server (b11434, ``tools/server/server-common.cpp``) reads ``tool_choice`` as a string only:
OpenAI's ``{"type": "function", "function": {"name": ...}}`` is logged as "Wrong type supplied"
and taken for ``"auto"`` — the model may answer in prose. Its ``/v1/messages`` maps Anthropic's
``{"type": "tool", "name": ...}`` to ``"required"`` over *all* the tools — the model may call
another one. The grammar it builds from ``tools`` is what forces a call, so naming a tool is
done by narrowing ``tools`` to that one (and, for OpenAI, ``tool_choice: "required"``). The model
then sees only that tool in its prompt; the call it must make is the same.

Only bodies that name a tool are rewritten (re-serialized); all others keep their bytes.
"""

from __future__ import annotations

import json
from typing import Any

from llamastudio.errors import InvalidInput

CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MESSAGES_PATHS = frozenset({"/v1/messages"})


def named_tool_choice(body: bytes, path: str) -> bytes:
    """``body`` with a named tool choice made explicit for llama-server (see the module doc);
    400 when the named tool is not among ``tools``."""
    if b"tool_choice" not in body or (path not in CHAT_PATHS and path not in MESSAGES_PATHS):
        return body
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body  # the engine answers a body it cannot parse; the gateway read its model already
    if not isinstance(data, dict) or not isinstance(data.get("tool_choice"), dict):
        return body
    choice: dict[str, Any] = data["tool_choice"]
    tools = data.get("tools")
    if path in CHAT_PATHS:
        function = choice.get("function")
        if choice.get("type") != "function" or not isinstance(function, dict):
            return body
        name = function.get("name")
        kept = [t for t in _list(tools) if isinstance(t, dict) and _function_name(t) == name]
        data["tool_choice"] = "required"
    else:
        if choice.get("type") != "tool":
            return body
        name = choice.get("name")
        kept = [t for t in _list(tools) if isinstance(t, dict) and t.get("name") == name]
    if not isinstance(name, str) or not kept:
        declared = ", ".join(repr(n) for n in _names(tools, path)) or "none"
        raise InvalidInput(
            f"tool_choice names the tool {name!r}, which `tools` does not declare ({declared})"
        )
    data["tools"] = kept
    return json.dumps(data, ensure_ascii=False).encode()


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _function_name(tool: dict[str, Any]) -> Any:
    function = tool.get("function")
    return function.get("name") if isinstance(function, dict) else None


def _names(tools: Any, path: str) -> list[str]:
    found = (
        _function_name(t) if path in CHAT_PATHS else t.get("name")
        for t in _list(tools)
        if isinstance(t, dict)
    )
    return [n for n in found if isinstance(n, str)][:20]
