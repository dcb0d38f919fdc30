"""Requests a model cannot answer, refused before it is started: chat to an embedding model or a
reranker, embeddings or reranking from a chat model, images to a model without a projector.

llama-server would answer some of these with a 501 after a load (or, for images, with an error
that names none of the fixes); the gateway knows each model's role from its file (``Traits``) and
says what to do instead, without loading anything — neighbours are never touched.
"""

from __future__ import annotations

import json
import re

from llamastudio.engines.kinds import Traits
from llamastudio.errors import InvalidInput

_V1 = ("/v1", "")
CHAT = frozenset(
    p
    for base in ("/chat/completions", "/completions", "/responses", "/messages")
    for p in (f"{v}{base}" for v in _V1)
) | {"/completion", "/infill", "/v1/messages/count_tokens"}
EMBED = frozenset({"/v1/embeddings", "/embeddings", "/embedding"})
RERANK = frozenset({"/v1/rerank", "/rerank", "/v1/reranking", "/reranking"})
# an image part in OpenAI (image_url), Responses (input_image) or Anthropic (image) content
_IMAGE = re.compile(rb'"type"\s*:\s*"(?:image_url|input_image|image)"')
_ROUTE = {"embedding": "/v1/embeddings", "rerank": "/v1/rerank"}
_A = {"chat": "a chat", "embedding": "an embedding", "rerank": "a reranking"}


def _forces_a_tool(body: bytes) -> bool:
    """``tool_choice`` required, or naming a tool (OpenAI's function, Anthropic's any/tool)."""
    if b'"tool_choice"' not in body:
        return False
    try:
        choice = json.loads(body).get("tool_choice")
    except (ValueError, AttributeError, RecursionError):
        return False
    if isinstance(choice, dict):
        return bool(choice.get("type") in ("function", "tool", "any"))
    return bool(choice == "required")


def check_purpose(name: str, path: str, traits: Traits, body: bytes) -> None:
    role = traits.role
    if role != "chat" and path in CHAT:
        raise InvalidInput(
            f"model {name!r} is {_A[role]} model: it answers {_ROUTE[role]}, not {path} "
            "(chat and completions need a chat model)",
            model=name,
            role=role,
        )
    for wanted, paths in (("embedding", EMBED), ("rerank", RERANK)):
        if path in paths and role != wanted:
            raise InvalidInput(
                f"model {name!r} is {_A[role]} model: {path} needs {_A[wanted]} model"
                + (" (or a configuration of it with --embedding)" if wanted == "embedding" else ""),
                model=name,
                role=role,
            )
    templated = role == "chat" and traits.chat_template is not None
    if templated and not traits.tools and path in CHAT and _forces_a_tool(body):
        raise InvalidInput(
            f"model {name!r} cannot be made to call a tool: its chat template does not render "
            "tools (the engine would answer in prose). Give it a tool-capable template "
            "(--chat-template-file) or use a model whose template supports tools",
            model=name,
        )
    if role == "chat" and traits.vision is False and path in CHAT and _IMAGE.search(body):
        raise InvalidInput(
            f"model {name!r} takes no images: it runs without a multimodal projector. Download the "
            "repository's mmproj file (the studio passes it as --mmproj), or set --mmproj in its flags",
            model=name,
        )
